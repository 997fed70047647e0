# SPDX-License-Identifier: GPL-2.0
"""Error handling: task management through sg_reset under I/O, a host reset that resets and
re-initialises the device, suspend and resume, and command timeouts on a slow back end. QEMU's own
trace shows what reached the device, for either driver: the control queue (virtio_scsi_tmf_req/resp)
which task management functions and how it answered, the device status (virtio_set_status) each
reset and re-initialisation.

Where the C driver lacks the behaviour, its run is an expected failure with the reason (strict).
"""

import re
import time

import pytest

from harness.guest import poll_loop
from harness.plugin import expect_c_failure, report
from harness.topology import Controller, Disk, Topology

GiB = 1 << 30

TMF_NAMES = {0: "ABORT TASK", 4: "I_T NEXUS RESET", 5: "LOGICAL UNIT RESET"}


# QEMU trace events of the tests that count TMFs and device initialisations (Guest.trace_lines).
TRACE = ("virtio_set_status", "virtio_scsi_tmf_*")


def reinits(g):
    """How many times the device was set DRIVER_OK again after Linux first did, from QEMU's trace
    (read after the guest stopped). Linux's virtio core starts with ACKNOWLEDGE alone (status 1);
    the firmware, which probes the controller before, never writes that value."""
    statuses = [int(m.group(1)) for line in g.trace_lines()
                if (m := re.search(r"virtio_set_status vdev \S+ val (\d+)", line))]
    if 1 not in statuses:
        return -1
    edges, prev = 0, 0
    for val in statuses[statuses.index(1):]:
        edges += bool(val & 4 and not prev & 4)
        prev = val
    return edges - 1


def tmfs(g):
    """[(subtype, response)] of every TMF the device answered, from QEMU's trace (read after the
    guest stopped, so the file is complete)."""
    reqs = {}
    done = []
    for line in g.trace_lines():
        m = re.search(r"virtio_scsi_tmf_req lun=\d+ tag=(0x[0-9a-f]+) subtype=(\d+)", line)
        if m:
            reqs.setdefault(m.group(1), []).append(int(m.group(2)))
            continue
        m = re.search(r"virtio_scsi_tmf_resp lun=\d+ tag=(0x[0-9a-f]+) response=(\d+)", line)
        if m and reqs.get(m.group(1)):
            done.append((reqs[m.group(1)].pop(0), int(m.group(2))))
    return done


FIO_VERIFY = ("fio --name=v --filename=/dev/sda --direct=1 --ioengine=libaio --rw=randwrite --bs=4k"
              " --iodepth=16 --size=32m --verify=crc32c --verify_fatal=1 --verify_backlog=256 --time_based")


def ios_done(g, dev="sda"):
    return int(g.sh(f"awk '$3==\"{dev}\" {{print $4 + $8}}' /proc/diskstats").strip())


def verify_under_io(g, action, resume_within=30):
    """Runs `action(g)` while fio writes and verifies /dev/sda; checks that I/O continues after it
    (100 more I/Os within `resume_within` seconds: more than fio keeps in flight, few enough for
    a debug guest under a full run's load, which has done 60 I/Os a second here, and for the gap
    between two rounds) and that every fio round (5 s each) ends without an error or a verify
    failure. Returns what `action` returned."""
    g.start_fio_rounds("v", FIO_VERIFY)
    g.wait_for("[ $(awk '$3==\"sda\" {print $8}' /proc/diskstats) -gt 500 ]", what="fio writing")
    result = action(g)
    before = ios_done(g)
    g.wait_for(f"[ $(awk '$3==\"sda\" {{print $4 + $8}}' /proc/diskstats) -gt {before + 100} ]",
               timeout=resume_within, what="I/O to continue", diagnose=g.io_state("sda", log="/tmp/v.log"))
    assert not g.sh("ls /tmp/v.rc 2>/dev/null || true").strip(), g.sh("cat /tmp/v.rc /tmp/v.log")
    g.stop_fio_rounds("v", "sda")
    return result


@pytest.mark.parametrize("kind,flag,subtype",
                         [("device", "-d", 5), ("target", "-t", 4), ("host", "-H", None)])
def test_sg_reset_under_io(make_guest, driver, request, kind, flag, subtype):
    """sg_reset on a disk with fio verifying on it: the reset succeeds, I/O continues, and the data
    verifies. Device and target resets: the device was asked for the matching TMF and answered it.
    Host reset: the device was reset and initialised again (DRIVER_OK set once more), no TMF."""
    if kind != "device":
        expect_c_failure(request, driver, f"has no {kind} reset handler; the ioctl escalates and fails")
    topo = Topology([Controller(num_queues=2, disks=[Disk(backend="file", size=64 << 20)])])
    g = make_guest(topo, smp=2, trace=TRACE)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    rc, out = verify_under_io(g, lambda g: g.run(f"sg_reset {flag} /dev/sda", check=False))
    counters = g.rust_control_counters(driver)
    g.stop()
    answered = tmfs(g)
    again = reinits(g)
    report(f"{driver}: sg_reset {flag}: rc {rc}; TMFs answered: "
           + ", ".join(f"{TMF_NAMES.get(s, s)}={r}" for s, r in answered)
           + f"; device re-initialised {again} time(s)"
           + (f"; host_resets {counters['host_resets']},"
              f" commands taken back at the reset {counters['reset_cmds']}" if counters else ""))
    assert rc == 0, out
    if subtype is None:
        assert again == 1, again
        assert counters.get("host_resets", 1) == 1, counters
    else:
        assert any(s == subtype and r == 0 for s, r in answered), answered
        assert again == 0, again


def test_sg_reset_device_idle(make_guest, driver):
    """sg_reset --device (SG_SCSI_RESET_DEVICE) on an idle disk: the ioctl hands the device reset
    handler a command that blk-mq did not allocate (scsi_ioctl_reset() kzallocs it; its request has
    no hardware queue and no tag, review finding 16). The reset succeeds, the device answered a
    LOGICAL UNIT RESET, and the kernel reports nothing (the harness fails a test on any report)."""
    topo = Topology([Controller(num_queues=2, disks=[Disk(backend="file", size=64 << 20)])])
    g = make_guest(topo, smp=2, trace=TRACE)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    rc, out = g.run("sg_reset --device /dev/sda", check=False)
    g.sh("dd if=/dev/sda of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null")
    counters = g.rust_control_counters(driver)
    g.stop()
    answered = tmfs(g)
    report(f"{driver}: sg_reset --device on an idle disk: rc {rc}; TMFs answered: "
           + ", ".join(f"{TMF_NAMES.get(s, s)}={r}" for s, r in answered)
           + (f"; tmf_ok {counters['tmf_ok']}, tmf_failed {counters['tmf_failed']}"
              if counters else ""))
    assert rc == 0, out
    assert answered == [(5, 0)], answered


def test_suspend_resume_under_io(make_guest, driver):
    """Suspend to idle and resume (`pm_test=devices`: every device is suspended and resumed, the
    machine itself stays up) while fio writes and verifies: the driver's freeze resets the device,
    its restore initialises it again, I/O continues and the data verifies."""
    topo = Topology([Controller(num_queues=2, disks=[Disk(backend="file", size=64 << 20)])])
    g = make_guest(topo, smp=2, trace=TRACE)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    g.sh("echo devices > /sys/power/pm_test && echo 1 > /sys/module/suspend/parameters/pm_test_delay")
    rc, out = verify_under_io(
        g, lambda g: g.run("echo freeze > /sys/power/state", check=False, timeout=120))
    g.stop()
    again = reinits(g)
    report(f"{driver}: suspend/resume under fio: rc {rc}; device re-initialised {again} time(s)")
    assert rc == 0, out
    assert again == 1, again


# The virtio-scsi controller's legacy I/O BAR (resource0): its device-specific configuration
# starts at 24 with MSI-X enabled; cdb_size is at 24 in it. QEMU's virtio-scsi takes a cdb_size
# of 256 or more as a guest error: it sets DEVICE_NEEDS_RESET, announces a configuration change and
# serves none of its queues until it is reset (virtio_error()).
BREAK_DEVICE = (
    "pci=$(readlink -f /sys/class/scsi_host/host*/device/../..);"
    " [ -d $pci/msi_irqs ] || { echo no MSI-X; exit 1; };"
    " printf '\\000\\001\\000\\000' | dd of=$pci/resource0 bs=4 seek=12 count=1 conv=notrunc 2>&1"
)


# Resets the storm of test_device_needs_reset asks for, back to back.
STORM = 5
DEBUGFS_QUEUES = "/sys/kernel/debug/virtio_scsi_rs/host*/queues"
# The host_resets counter of the control line of DEBUGFS_QUEUES, from standard input.
HOST_RESETS = "sed -n 's/^control .* host_resets \\([0-9]*\\).*/\\1/p'"


def test_device_needs_reset(make_guest, driver, request):
    """The device sets DEVICE_NEEDS_RESET under fio (QEMU does when the guest writes a bad value
    to its configuration space; it then ignores its queues): the driver resets it at once, from
    its configuration change notification, rather than after command timeouts and the error
    handler's escalation: no command times out (the command timeout is 30 s), I/O resumes within
    15 s and verifies. Then a storm: the test breaks the device again as soon as each reset is
    done, STORM times back to back; each reset is done, and the log reports them at most once
    per 5 s."""
    expect_c_failure(request, driver, "has no config_changed: the device waits for a reset that never comes,"
                     " and eh_timed_out resets the timer forever")
    topo = Topology([Controller(disks=[Disk(backend="file", size=64 << 20)],
                                props={"disable-legacy": "off"})])
    g = make_guest(topo, trace=TRACE)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    out = verify_under_io(g, lambda g: g.sh(BREAK_DEVICE), resume_within=15)
    counters = g.rust_control_counters(driver)
    log = g.sh("dmesg | grep -i 'needs reset\\|re-initialised' || true")
    # As a device that needs a reset again as soon as it has had one: STORM resets back to back. Each
    # is done (the counters and QEMU's trace count them), the log reports at most one per 5 s.
    msg = "device needs reset: resetting it"
    storm = g.sh(
        f"m0=$(dmesg | grep -c '{msg}'); n0=$(cat {DEBUGFS_QUEUES} | {HOST_RESETS}); read t0 _ < /proc/uptime\n"
        f"for i in $(seq {STORM}); do\n"
        f"  {{ {BREAK_DEVICE}; }} >/dev/null 2>&1 || exit 1\n"
        f"  {poll_loop(f'[ $(cat {DEBUGFS_QUEUES} | {HOST_RESETS}) -ge $((n0 + i)) ]', 30)} || exit 1\n"
        f"done\n"
        f"read t1 _ < /proc/uptime; echo $(( $(dmesg | grep -c '{msg}') - m0 )) $t0 $t1",
        timeout=300,
    )
    messages, t0, t1 = storm.strip().split("\n")[-1].split()
    messages, t0, t1 = int(messages), float(t0), float(t1)
    g.sh("dd if=/dev/sda of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null", timeout=60)
    after = g.rust_control_counters(driver)
    g.stop()
    again = reinits(g)
    report(f"{driver}: DEVICE_NEEDS_RESET under fio: device re-initialised {again} time(s); {counters};"
           f" a storm of {STORM} in {t1 - t0:.1f} s logged {messages} time(s)")
    assert "1+0 records out" in out, out
    assert counters["needs_reset"] == 1 and counters["host_resets"] == 1, counters
    assert counters["tmf_sent"] == 0 and counters["cmd_timeouts"] == 0, counters
    assert msg in log, log
    assert again == 1 + STORM, again
    assert after["needs_reset"] == 1 + STORM and after["host_resets"] == 1 + STORM, after
    assert after["tmf_sent"] == 0 and after["cmd_timeouts"] == 0, after
    assert messages <= 1 + int((t1 - t0) // 5), f"{messages} reports of {STORM} resets in {t1 - t0:.1f} s"


# LUNs the scan test hot-plugs in one burst: as many as the event ring has buffers, so that each
# is an event of its own, which the event work adds synchronously (scsi_add_device(); a rescan
# after EVENTS_MISSED would scan asynchronously, outside the work).
SCAN_LUNS = 8
# Bursts the scan test tries at most until one shows what it is for: the guest breaks the device as
# soon as the burst's first LUN shows, which is nearly always while the work waits for one of the
# next LUN's commands, but may fall between two commands (none to take back), or the LUNs may all
# be counted before the break is (the count follows it).
SCAN_ROUNDS = 3


@pytest.mark.parametrize("driver", ["rust"])
def test_needs_reset_during_scan(make_guest, driver):
    """The device stops (DEVICE_NEEDS_RESET, serving no queue) while the event work is adding
    LUNs: its reset must not wait for that work, which waits for the device. SCAN_LUNS disks are
    hot-plugged in one burst, the device is broken as soon as the first of them shows (the work
    is then adding the next, and waits for a command the device no longer serves), and all of
    them are there within 60 s and read, with no command timed out and no task management: the
    reset came from the configuration change. With one work item for both, the reset waited
    behind the stalled command, for stall_limit (180 s) and the error handler's host reset. A
    burst whose break found no command outstanding, or all its LUNs added, shows nothing of that:
    another burst follows, up to SCAN_ROUNDS, and one of them must show it. The C driver has no
    config_changed at all (test_device_needs_reset[c])."""
    topo = Topology([Controller(disks=[Disk(backend="file", size=64 << 20)], props={"disable-legacy": "off"})])
    g = make_guest(topo, scan="all", trace=TRACE)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    count = "$(ls -d /sys/bus/scsi/devices/*:*:*:* 2>/dev/null | wc -l)"
    host = g.sh("basename $(readlink -f /sys/block/sda/device) | cut -d: -f1").strip()
    rounds = []

    def shown(seen, delta):
        return seen < SCAN_LUNS and delta["reset_cmds"] >= 1

    for r in range(SCAN_ROUNDS):
        ids = [10 + r * SCAN_LUNS + i for i in range(SCAN_LUNS)]
        for t in ids:
            g.qmp("blockdev-add", **{"node-name": f"sc{t}", "driver": "null-co", "size": 64 << 20,
                                     "read-zeroes": True})
        before = g.rust_control_counters(driver)
        # The work adds a LUN in a fraction of a second: a guest command started after the first
        # one shows would come too late. A shell loop (builtins only) watches for it and breaks
        # the device at once; it records how many SCSI devices there were then.
        first = f"/sys/bus/scsi/devices/{host}:0:{ids[0]}:0"
        g.sh(f"rm -f /tmp/brk; ( until [ -e {first} ]; do :; done; {BREAK_DEVICE} >/dev/null 2>&1;"
             f" echo {count} > /tmp/brk ) > /dev/null 2>&1 &")
        g.qmp_burst([("device_add", {"driver": "scsi-hd", "id": f"hd-sc{t}", "bus": "vs0.0", "scsi-id": t,
                                     "lun": 0, "drive": f"sc{t}"}) for t in ids])
        g.wait_for("[ -s /tmp/brk ]", timeout=60, what="the first hot-plugged LUN, and the device broken")
        # LUNs of this burst there when the device was broken.
        seen = int(g.sh("cat /tmp/brk")) - (1 + r * SCAN_LUNS)
        total = 1 + (r + 1) * SCAN_LUNS
        g.wait_for(f"[ {count} -eq {total} ]", timeout=60, what=f"all {SCAN_LUNS} hot-plugged LUNs",
                   diagnose="ls /sys/bus/scsi/devices; dmesg | tail -30")
        disks = " ".join(f"/sys/bus/scsi/devices/{host}:0:{t}:0/block/*" for t in ids)
        g.wait_for(f"[ $(ls -d {disks} 2>/dev/null | wc -l) -eq {SCAN_LUNS} ]", timeout=60, what="their disks")
        g.sh(f"for d in {disks}; do dd if=/dev/${{d##*/}} of=/dev/null bs=4k count=4 iflag=direct 2>/dev/null"
             " || exit 1; done", timeout=120)
        after = g.rust_control_counters(driver)
        delta = {k: after[k] - before[k] for k in after}
        rounds.append((seen, delta))
        assert delta["needs_reset"] >= 1 and delta["host_resets"] >= 1, delta
        if shown(seen, delta):
            break
    counters = g.rust_control_counters(driver)
    g.stop()
    again = reinits(g)
    report(f"{driver}: device broken while adding LUNs, {len(rounds)} burst(s) of {SCAN_LUNS}: "
           + "; ".join(f"{seen} added, {d['host_resets']} reset(s) took back {d['reset_cmds']} command(s)"
                       for seen, d in rounds)
           + f"; re-initialised {again} time(s); {counters}")
    assert again == counters["host_resets"], (again, counters)
    assert counters["tmf_sent"] == 0 and counters["cmd_timeouts"] == 0, counters
    # The last burst showed it: the device was broken while the event work was still adding LUNs
    # (`seen` counts the LUNs after the break, an upper bound) and a command was outstanding, on
    # a device that no longer served it, when the reset came.
    assert shown(*rounds[-1]), rounds


# Clears Bus Master Enable in the PCI command register (config offset 4) of the controller of the
# disk $d. QEMU then stops serving the device's queues (virtio_write_config() disables the device
# and clears DRIVER_OK) until the driver resets it: a device that stops answering altogether.
BUS_MASTER_OFF = r"""
pci=$(readlink -f /sys/block/$d/device/../../../..)
read -r cmd < <(od -An -tu2 -j4 -N2 $pci/config)
cmd=$(( cmd & ~4 ))
printf "\\$(printf %o $(( cmd & 255 )))\\$(printf %o $(( cmd >> 8 )))" |
	dd of=$pci/config bs=1 seek=4 count=2 conv=notrunc 2>/dev/null
od -An -tu2 -j4 -N2 $pci/config
"""


# Guest seconds the bus-mastering test gives the stopped disk's I/O to resume.
RESUME_BOUND = 45


@pytest.mark.cost(150)
def test_bus_mastering_stopped_under_io(make_guest, driver, request):
    """Bus mastering of one controller turned off under fio (review finding 5): QEMU serves none
    of that device's queues from then on, a device that stopped answering. By default the Rust
    driver waits as C does until the oldest command is stall_limit old (10 s here, disk timeout
    3 s), then error handling (its ABORT TASK unanswered for tmf_timeout, 10 s here) escalates
    to a device reset; I/O resumes within the stall limit plus
    the bounded escalation and verifies. fio on a disk of another controller runs on throughout,
    with both drivers. C resets its commands' timers forever: its disk hangs."""
    expect_c_failure(request, driver, "eh_timed_out resets the timer forever: I/O to a device that stopped"
                     " serving its queues never ends")
    # The disks are told apart by their size: 64 MiB behind vs0 (stopped), 48 MiB behind vs1.
    topo = Topology([Controller(id="vs0", disks=[Disk(backend="file", size=64 << 20)]),
                     Controller(id="vs1", disks=[Disk(backend="file", size=48 << 20)])])
    g = make_guest(topo, smp=2)
    g.load_driver(driver, "stall_limit=10 tmf_timeout=10" if driver == "rust" else "")
    g.wait_disks(2, timeout=60)
    by_size = {int(g.sh(f"cat /sys/block/{d}/size")) * 512: d
               for d in g.sh("ls -d /sys/block/sd* | xargs -n1 basename").split()}
    stopped, neighbour = by_size[64 << 20], by_size[48 << 20]
    g.sh(f"echo 3 > /sys/block/{stopped}/device/timeout")
    for d, tag in ((stopped, "stopped"), (neighbour, "neighbour")):
        g.start_fio_rounds(tag, FIO_VERIFY.replace("/dev/sda", f"/dev/{d}"))
    for d in (stopped, neighbour):
        g.wait_for(f"[ $(awk '$3==\"{d}\" {{print $8}}' /proc/diskstats) -gt 500 ]", what=f"fio writing {d}")
    out = g.sh(f"d={stopped}\n{BUS_MASTER_OFF}")
    assert int(out.split()[-1]) & 4 == 0, f"Bus Master Enable still set: {out}"
    t0 = time.monotonic()
    # The neighbour goes on meanwhile.
    before = ios_done(g, neighbour)
    g.wait_for(f"[ $(awk '$3==\"{neighbour}\" {{print $4 + $8}}' /proc/diskstats) -gt {before + 500} ]",
               timeout=30, what="I/O to the other controller's disk to continue")
    # The stopped disk resumes: stall_limit (10 s) + ABORT TASK's bound (tmf_timeout, 10 s), the
    # LUN and target resets failing at once (the control queue holds the unanswered abort), the
    # device reset: about 25 s of guest time. C never resumes; 45 s leaves the Rust driver a
    # margin without making the expected C failure wait longer than it must.
    before = ios_done(g, stopped)
    rc, _ = g.run(poll_loop(f"[ $(awk '$3==\"{stopped}\" {{print $4 + $8}}' /proc/diskstats) -gt {before + 500} ]",
                            RESUME_BOUND), timeout=RESUME_BOUND + 60, check=False)
    took = time.monotonic() - t0
    counters = g.rust_control_counters(driver)
    report(f"{driver}: bus mastering off under fio: I/O " + (f"resumed after {took:.0f} s" if rc == 0 else
           f"still stopped after {took:.0f} s") + (f"; {counters}" if counters else ""))
    if rc != 0:
        # C: the disk is hung for good and the guest with it; power it off the hard way.
        g.kill()
        raise AssertionError(f"I/O to {stopped} did not resume within {RESUME_BOUND} s of bus mastering off")
    for d, tag in ((stopped, "stopped"), (neighbour, "neighbour")):
        g.stop_fio_rounds(tag, d)
    assert counters["host_resets"] >= 1, counters
    assert "bus mastering was off: turning it on again" in g.sh("dmesg")


POLICY_PARAMS = {"default": "", "abort": "timeout_policy=abort", "stall": "stall_limit=5"}


@pytest.mark.cost(60)
@pytest.mark.parametrize("driver, policy", [("rust", "default"), ("c", "default"), ("rust", "abort"),
                                            ("rust", "stall")])
def test_slow_command(make_guest, driver, policy):
    """A back end slower than the disk's timeout (null-co latency 4 s, 8 s for stall; timeout 2 s),
    and what each timeout policy makes of it; the guest stays responsive meanwhile.
    default: the command waits, as in C (the Rust driver resets its timer while it is younger than
    stall_limit, 180 s): it completes with the device's data in about 4 s and no TMF is sent; the
    Rust driver says once that it is waiting.
    abort (timeout_policy=abort): the timed-out command is aborted (ABORT TASK reaches the device
    and is answered), then retried (with the policy set to wait from then on) or failed.
    stall (stall_limit=5): the timer is reset at the first timeouts (2 and 4 s old), error handling
    starts at the third (6 s old): ABORT TASK."""
    latency = 8 if policy == "stall" else 4
    slow = Disk(backend="null", size=GiB, target=1, blockdev={"latency-ns": latency * 1_000_000_000})
    topo = Topology([Controller(num_queues=2, disks=[Disk(backend="null", size=GiB), slow])])
    g = make_guest(topo, smp=2, trace=TRACE)
    g.load_driver(driver, POLICY_PARAMS[policy])
    g.wait_disks(2, timeout=60)
    sd = g.sh("ls /sys/class/scsi_host/*/device/target*:0:1/*:0:1:0/block").strip()
    fast = g.sh("ls /sys/class/scsi_host/*/device/target*:0:0/*:0:0:0/block").strip()
    # The slow disk's partition scan (one read, `latency` seconds) holds the disk's open mutex: an
    # open waits for it to end, so that the timed read below starts at once.
    g.wait_for(f"dd if=/dev/{sd} of=/dev/null count=0 2>/dev/null", timeout=60, what="the slow disk to open")
    g.sh(f"echo 2 > /sys/block/{sd}/device/timeout")
    g.sh(f"(s=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/{sd} of=/dev/null bs=4k count=1 skip=7 iflag=direct"
         f" > /tmp/dd.log 2>&1; echo $? $s $(cut -d' ' -f1 /proc/uptime) > /tmp/dd.rc) &")
    # Responsive meanwhile: the shell answers while the command times out and error handling runs
    # (I/O to the host's other disks waits while the midlayer's error handler owns the host).
    for _ in range(6):
        g.run("cat /proc/uptime", timeout=10)
        g.sh("nap 0.5")
    if policy != "default":
        # Once error handling has started, the retries wait for the device: the read then ends
        # in seconds instead of escalating at each of sd's five retries.
        escalated = ("[ $(grep -ho 'cmd_timeouts_escalated [0-9]*'"
                     " /sys/kernel/debug/virtio_scsi_rs/host*/queues | cut -d' ' -f2) -ge 1 ]")
        g.wait_for(escalated, timeout=60, what="error handling to start")
        at_escalation = g.rust_control_counters(driver)
        g.sh("echo wait > /sys/module/virtio_scsi_rs/parameters/timeout_policy")
    g.wait_for("[ -e /tmp/dd.rc ]", timeout=180, what="the slow read to complete, be retried or fail")
    rc, start, end = g.sh("cat /tmp/dd.rc").split()
    tmo = g.sh(f"cat /sys/block/{sd}/device/iotmo_cnt").strip()
    counters = g.rust_control_counters(driver)
    log = g.sh("dmesg | grep 'command outstanding' || true")
    # Afterwards both disks serve I/O again.
    g.sh(f"dd if=/dev/{fast} of=/dev/null bs=4k count=4 iflag=direct 2>/dev/null")
    g.sh(f"echo 30 > /sys/block/{sd}/device/timeout && dd if=/dev/{sd} of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null")
    g.stop()
    answered = tmfs(g)
    took = float(end) - float(start)
    report(f"{driver} ({policy}): slow command: dd rc {rc} after {took:.1f} s, timeouts {int(tmo, 0)},"
           f" TMFs answered: " + ", ".join(f"{TMF_NAMES.get(s, s)}={r}" for s, r in answered)
           + (f"; timeouts waited {counters['cmd_timeouts_waited']},"
              f" escalated {counters['cmd_timeouts_escalated']}" if counters else ""))
    if policy == "default":
        assert rc == "0" and took < 10, (rc, took)
        assert answered == [], answered
        if driver == "rust":
            assert counters["cmd_timeouts_waited"] >= 1 and counters["cmd_timeouts_escalated"] == 0
            assert "waiting for the device" in log, log
    else:
        assert any(s == 0 for s, _ in answered), answered
        assert counters["cmd_timeouts_escalated"] >= 1, counters
        # Until error handling started: stall waited first, abort did not.
        if policy == "stall":
            assert at_escalation["cmd_timeouts_waited"] >= 1, at_escalation
        else:
            assert at_escalation["cmd_timeouts_waited"] == 0, at_escalation
