# SPDX-License-Identifier: GPL-2.0
"""Multiqueue: CPU to queue mapping from the interrupt affinity, poll queues, few or no vectors."""

import re

import pytest

from harness.guest import DRIVERS
from harness.topology import Controller, Disk, Topology

# The tests of this module share guests of the same configuration (tests/harness/plugin.py).
pytestmark = pytest.mark.shared_guests

VERIFY = "--verify=crc32c --do_verify=1 --verify_fatal=1 --direct=1 --filename=/dev/sda --name=v"


def boot(make_guest, smp, num_queues, props=None, **kw):
    topo = Topology([Controller(num_queues=num_queues, props=props or {}, disks=[Disk(backend="file", size=64 << 20)])])
    return make_guest(topo, smp=smp, **kw)


def load(g, driver, params=""):
    g.load_driver(driver, params)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")


def hctx_cpus(g):
    """{hctx index: set of CPUs} from /sys/block/sda/mq."""
    out = g.sh("for d in /sys/block/sda/mq/*; do echo $(basename $d) $(cat $d/cpu_list); done")
    maps = {}
    for line in out.strip().splitlines():
        idx, cpus = line.split(" ", 1)
        maps[int(idx)] = {int(c) for c in cpus.replace(",", " ").split()}
    return maps


def request_irqs(g):
    """{request queue index: interrupts so far} from /proc/interrupts (polled queues have none).
    Each interrupt-driven request queue has its own vector, so its count shows where I/O
    completed, whichever driver is loaded."""
    out = g.sh("grep -E 'virtio[0-9]+-request' /proc/interrupts || true")
    counts = {}
    for i, line in enumerate(out.strip().splitlines()):
        fields = line.split(":", 1)[1].split()
        counts[i] = sum(int(f) for f in fields if f.isdigit())
    return counts


def rust_counters(g):
    """{queue: {counter: value}} from the request-queue lines of the Rust driver's debugfs file
    (the control and event lines follow them)."""
    out = g.sh("cat /sys/kernel/debug/virtio_scsi_rs/host*/queues")
    counters = {}
    for line in out.strip().splitlines():
        f = line.split()
        if not f[0].isdigit():
            continue
        counters[int(f[0])] = {"type": f[1], **{f[i]: int(f[i + 1]) for i in range(2, len(f), 2)}}
    return counters


@pytest.mark.parametrize("smp, num_queues", [(2, 1), (2, 2), (4, 4)])
def test_io_lands_on_the_mapped_queue(make_guest, driver, smp, num_queues):
    g = boot(make_guest, smp, num_queues)
    load(g, driver)
    maps = hctx_cpus(g)
    assert len(maps) == num_queues
    assert set().union(*maps.values()) == set(range(smp)), maps
    # Interrupt-driven queues follow the managed affinity of their vectors:
    # hctx i's CPUs are the affinity of the i-th request interrupt.
    irqs = g.sh("grep -E 'virtio[0-9]+-request' /proc/interrupts | cut -d: -f1").split()
    assert len(irqs) == num_queues, irqs
    for i, irq in enumerate(irqs):
        aff = g.sh(f"cat /proc/irq/{irq}/smp_affinity_list").strip()
        cpus = set()
        for part in aff.split(","):
            a, _, b = part.partition("-")
            cpus |= set(range(int(a), int(b or a) + 1))
        assert maps[i] == cpus, (i, maps, aff)
    for hctx, cpus in maps.items():
        cpu = min(cpus)
        before = request_irqs(g)
        rust_before = rust_counters(g) if driver == "rust" else None
        g.sh(f"taskset -c {cpu} fio --ioengine=psync --rw=randwrite --bs=4k --size=4m --offset={hctx * 8}m {VERIFY}",
             timeout=600)
        after = request_irqs(g)
        delta = {h: after[h] - before[h] for h in after}
        # 1024 writes and 1024 verify reads at queue depth 1 from that CPU:
        # about one interrupt each, all on the mapped queue's vector.
        assert delta[hctx] >= 1024, (hctx, cpu, delta)
        assert all(d < 64 for h, d in delta.items() if h != hctx), (hctx, cpu, delta)
        if driver == "rust":
            rc = rust_counters(g)
            sub = {q: rc[q]["submitted"] - rust_before[q]["submitted"] for q in rc}
            assert sub[hctx] >= 2048 and all(d < 64 for q, d in sub.items() if q != hctx), sub
            assert rc[hctx]["interrupts"] > rust_before[hctx]["interrupts"]
    if driver == "rust":
        rc = rust_counters(g)
        assert all(c["submitted"] == c["completed"] for c in rc.values()), rc


@pytest.mark.parametrize("wanted, got", [(1, 1), (5, 1)])
def test_poll_queues(make_guest, driver, wanted, got):
    """io_uring --hipri completes through the poll queue; asking for too many is clamped."""
    g = boot(make_guest, 2, 2)
    load(g, driver, f"virtscsi_poll_queues={wanted}")
    assert len(hctx_cpus(g)) == 2
    assert g.sh("cat /sys/block/sda/queue/io_poll").strip() == "1"
    # Polled queues have no interrupt: one request vector only.
    assert len(request_irqs(g)) == 2 - got
    before = request_irqs(g)
    g.sh(f"fio --ioengine=io_uring --hipri --rw=randwrite --bs=4k --iodepth=8 --size=8m {VERIFY}", timeout=600)
    after = request_irqs(g)
    # 4096 I/Os completed without (m)any interrupts: they went to the poll queue.
    assert after[0] - before[0] < 64, (before, after)
    if driver == "rust":
        rc = rust_counters(g)
        assert rc[1]["type"] == "poll" and rc[0]["type"] == "default", rc
        assert rc[1]["polled"] == rc[1]["completed"] >= 4096, rc
        assert rc[1]["interrupts"] == 0, rc
        log = g.sh("dmesg")
        assert ("using 1 poll queues" in log) == (wanted > got), log
        assert "1/0/1 default/read/poll queues" in log
    assert g.sh(f"cat /sys/module/{DRIVERS[driver][0]}/parameters/virtscsi_poll_queues").strip() == str(wanted)


@pytest.mark.parametrize("vectors", [2, 0], ids=["vectors_2", "msix_off"])
def test_few_or_no_vectors(make_guest, driver, vectors):
    """With shared vectors or legacy INTx the driver still moves verified data."""
    g = boot(make_guest, 2, 2, props={"vectors": vectors})
    load(g, driver)
    g.sh(f"fio --ioengine=libaio --rw=randwrite --bs=4k --iodepth=16 --numjobs=2 --size=8m --offset_increment=16m {VERIFY}",
         timeout=600)
    ints = g.sh("grep virtio /proc/interrupts || true")
    if vectors == 0:
        assert not re.search(r"PCI-MSI|PCI-MSIX", ints) or "virtio0-" not in ints, ints
