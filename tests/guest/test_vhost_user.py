# SPDX-License-Identifier: GPL-2.0
"""Both drivers behind a second device: our vhost-user-scsi back end (tools/vhost-user-scsi), in
each behaviour profile of the real devices it imitates.

- qemu: used length = bytes written, as QEMU's virtio-scsi;
- vhost-scsi: used length 0 for every command, TMF and event, as Linux 6.12's vhost-scsi;
- minimal: one request queue of 16 entries, no HOTPLUG, no CHANGE, no indirect descriptors;
- bidi-pi: T10_PI (and INOUT, where the front end passes it) negotiated.

Each case checks the scan (which LUNs, of which type and size), data integrity on a disk under
fio, a CD-ROM read back byte-exact, a task management function, and the event queue: hot-add,
hot-remove and capacity change where the profile offers HOTPLUG and CHANGE; where it does not,
that no event arrives and that a rescan finds what changed.
"""

import hashlib
import os
import re
import time

import pytest

from harness.plugin import expect_c_failure, report
from harness.topology import Topology, VhostUserController

# The tests of this module share guests of the same configuration (tests/harness/plugin.py); the
# back ends are reset between them.
pytestmark = pytest.mark.shared_guests

PROFILES = ["qemu", "vhost-scsi", "minimal", "bidi-pi"]

FIO = "fio --output-format=terse --terse-version=3 --ioengine=libaio --direct=1 --name=v"

MiB = 1 << 20


def topology(profile, cd_path):
    luns = ["0:0:96", "0:1:64", "1:0:32", f"2:0:0:cdrom={cd_path}", "3:5:16:null"]
    return Topology([VhostUserController(profile=profile, luns=luns)])


def devices(g):
    """{(target, lun): (type, size in bytes)} of the SCSI devices on the guest's host."""
    out = g.sh(
        "for d in /sys/bus/scsi/devices/*:*:*:*; do"
        "  n=${d##*/}; t=$(cat $d/type); s=0;"
        "  for b in $d/block/*; do [ -e $b/size ] && s=$(cat $b/size); done;"
        "  echo $n $t $s;"
        " done"
    )
    found = {}
    for line in out.split("\n"):
        if line.strip():
            name, kind, sectors = line.split()
            _, _, target, lun = name.split(":")
            found[(int(target), int(lun))] = (int(kind), int(sectors) * 512)
    return found


def block_of(g, target, lun):
    """The block device of target:lun. The SCSI device shows in sysfs before sd (or sr) has
    probed it, asynchronously, so a LUN just found may not have its block device yet: wait."""
    d = f"/sys/bus/scsi/devices/*:0:{target}:{lun}/block"
    g.wait_for(f"b=$(ls {d} 2>/dev/null) && [ -b /dev/$b ]", what=f"the block device of LUN {target}:{lun}")
    return g.sh(f"ls {d}").strip()


def host_of(g):
    return g.sh("ls /sys/class/scsi_host").split()[0]


def wait_devices(g, expected, what, timeout=30):
    g.wait_for(
        f"[ $(ls -d /sys/bus/scsi/devices/*:*:*:* 2>/dev/null | wc -l) -eq {expected} ]",
        timeout=timeout,
        what=what,
    )


@pytest.fixture(scope="module")
def cdrom(tmp_path_factory):
    """A CD-ROM image of random bytes, one for the module, so that both drivers' cases of a
    profile ask for the same guest."""
    cd = tmp_path_factory.mktemp("cdrom") / "cd.iso"
    cd.write_bytes(os.urandom(4 * MiB))
    return cd


@pytest.mark.parametrize("profile", PROFILES)
def test_profile(make_guest, driver, profile, cdrom, request):
    if profile == "minimal":
        expect_c_failure(
            request,
            driver,
            "sg_tablesize is seg_max whatever the ring: without indirect descriptors a 1 MiB read"
            " needs more descriptors than the 16-entry ring has, virtqueue_add() WARNs and the"
            " command is requeued forever",
        )
    cd_data = cdrom.read_bytes()
    g = make_guest(topology(profile, cdrom))
    g.load_driver(driver)
    wait_devices(g, 5, "5 SCSI devices")
    # sd and sr probe asynchronously: a LUN's size shows with its block device.
    g.wait_for("[ $(ls -d /sys/bus/scsi/devices/*:*:*:*/block/* 2>/dev/null | wc -l) -eq 5 ]",
               what="the block devices of the 5 LUNs")

    # The scan: every LUN, its type and capacity; the CD-ROM's 2048-byte blocks.
    assert devices(g) == {
        (0, 0): (0, 96 * MiB),
        (0, 1): (0, 64 * MiB),
        (1, 0): (0, 32 * MiB),
        (2, 0): (5, 4 * MiB),
        (3, 5): (0, 16 * MiB),
    }
    features = g.sh(
        "for d in /sys/bus/virtio/devices/*; do [ $(cat $d/device) = 0x0008 ] && cat $d/features; done"
    ).strip()
    t10_pi = features[3] == "1"
    assert t10_pi == (profile == "bidi-pi"), features

    # Data: random writes of 4 KiB to 256 KiB read back verified, on two disks at once.
    sda, sdb = block_of(g, 0, 0), block_of(g, 1, 0)
    g.sh(
        f"{FIO} --filename=/dev/{sda} --rw=randwrite --bsrange=4k-256k --iodepth=16 --size=16m"
        f" --verify=crc32c --do_verify=1 --verify_fatal=1 --norandommap --serialize_overlap=1 &"
        f" {FIO} --filename=/dev/{sdb} --rw=randwrite --bs=4k --iodepth=8 --size=4m"
        f" --verify=crc32c --do_verify=1 --verify_fatal=1 --norandommap --serialize_overlap=1; r=$?; wait $! && exit $r",
        timeout=600,
    )
    sr = block_of(g, 2, 0)
    out = g.sh(f"dd if=/dev/{sr} bs=2048 iflag=direct 2>/dev/null | sha256sum")
    assert out.split()[0] == hashlib.sha256(cd_data).hexdigest()
    # A LOGICAL UNIT RESET through the control queue.
    g.sh(f"sg_reset --device /dev/{sda}")
    g.sh(f"dd if=/dev/{sda} of=/dev/null bs=4k count=4 iflag=direct 2>/dev/null")

    # The event queue.
    host = host_of(g)
    hotplug = profile != "minimal"
    g.backend("add 1 1 48")
    if hotplug:
        wait_devices(g, 6, "the hot-added LUN 1:1")
    else:
        # No HOTPLUG, so no event: the LUN is found by a scan.
        g.sh(f"echo '0 1 -' > /sys/class/scsi_host/{host}/scan")
    # sd probes the new LUN asynchronously: its size shows with its block device.
    block_of(g, 1, 1)
    assert devices(g)[(1, 1)] == (0, 48 * MiB)
    g.backend("remove 1 1")
    if hotplug:
        wait_devices(g, 5, "the hot-removed LUN 1:1 gone")
    else:
        assert (1, 1) in devices(g)
        g.sh(f"echo 1 > /sys/bus/scsi/devices/{host.removeprefix('host')}:0:1:1/delete")
    assert (1, 1) not in devices(g)
    sdc = block_of(g, 0, 1)
    g.backend("resize 0 1 80")
    if hotplug:
        g.wait_for(f"[ $(cat /sys/block/{sdc}/size) -eq {80 * MiB // 512} ]", what="the new capacity")
    else:
        g.sh(f"echo 1 > /sys/block/{sdc}/device/rescan")
        g.sh(f"sg_turs /dev/{sdc} >/dev/null 2>&1; echo 1 > /sys/block/{sdc}/device/rescan")
        assert int(g.sh(f"cat /sys/block/{sdc}/size")) == 80 * MiB // 512
    # 1 MiB in one request: more segments than a 16-entry ring holds without indirect descriptors.
    g.sh(f"dd if=/dev/{sdc} of=/dev/null bs=1M skip=79 count=1 iflag=direct 2>/dev/null", timeout=60)
    stats = g.backend("stats")
    # Nothing the back end could not parse, and every CDB zero past its
    # length (the Rust driver sends the midlayer's CDB field whole).
    assert " malformed 0 cdb_tail 0 " in stats, stats


# --- the fault matrix --------------------------------------------------------------------------

COMMAND_FAULTS = [
    "used-len-over",
    "used-len-short",
    "unknown-response",
    "garbage-status",
    "sense-over-96",
    "sense-over-buffer",
    "resid-over",
]
TMF_FAULTS = ["tmf-rejected", "tmf-unknown"]
# Events a device may send that name nothing, or nothing that exists: an unknown type, target 255
# LUN 16383, and LUN fields with a bad first byte, a bad address method, a non-zero tail.
ODD_EVENTS = [
    "event 99 0 0 0",
    "event 1 255 16383 1",
    "eventraw 1 0200400000000000 1",
    "eventraw 1 0100c00000000000 1",
    "eventraw 1 0100400000000001 1",
]


def two_luns_with_a_pattern(g, driver):
    """Loads the driver on a guest of LUNs 0:0 and 0:1, writes the same 1 MiB of random bytes at
    the start of both; returns their block devices and the pattern's sha256."""
    g.load_driver(driver)
    wait_devices(g, 2, "2 SCSI devices")
    bad, good = block_of(g, 0, 0), block_of(g, 0, 1)
    g.sh(
        f"dd if=/dev/urandom of=/tmp/pat bs=64k count=16 2>/dev/null && for d in {bad} {good}; do"
        f" dd if=/tmp/pat of=/dev/$d bs=64k oflag=direct 2>/dev/null || exit 1; done"
    )
    return bad, good, g.sh("sha256sum < /tmp/pat").split()[0]


def abort_at_first_timeout(g, driver):
    """The Rust driver's timeout_policy=abort: error handling at a command's first timeout (the
    default waits until the command is stall_limit old)."""
    if driver == "rust":
        g.sh("echo abort > /sys/module/virtio_scsi_rs/parameters/timeout_policy")


def short_tmf_timeout(g, driver, seconds=10):
    """The Rust driver's tmf_timeout (30 s by default) made `seconds`: a TMF the device keeps fails
    that much sooner, the same escalation follows (C waits for a TMF forever)."""
    if driver == "rust":
        g.sh(f"echo {seconds} > /sys/module/virtio_scsi_rs/parameters/tmf_timeout")


def read_sha(g, dev, timeout=300):
    """(dd's exit status, sha256 of what it read) for 1 MiB from the start of /dev/`dev`."""
    _, out = g.run(
        f"dd if=/dev/{dev} bs=64k count=16 iflag=direct 2>/dev/null | sha256sum; echo rc=${{PIPESTATUS[0]}}",
        timeout=timeout,
        check=False,
    )
    lines = out.split()
    return int(lines[-1].removeprefix("rc=")), lines[0]


def test_fault_matrix(make_guest, driver, request):
    """Each named fault, on one LUN, while its neighbour is healthy: a command either ends with
    the device's data or fails, never succeeds with data the device did not send; the neighbour
    never notices; a TMF answered wrongly fails the TMF, not the guest; odd events, a flood of
    1000 and EVENTS_MISSED on every event leave the host as it was; rmmod works at the end. What
    each driver did is reported."""
    expect_c_failure(
        request,
        driver,
        "WARN_ON(sense_len > VIRTIO_SCSI_SENSE_SIZE): a device value raises a kernel WARN; and an"
        " event LUN field is not validated (bytes 0 and 4-7 ignored), so 01 00 40 00 00 00 00 01"
        " adds a phantom 0:0:0:16384 that is LUN 0 again",
    )
    g = make_guest(Topology([VhostUserController(luns=["0:0:32", "0:1:32"])]), scan="all")
    bad, good, want = two_luns_with_a_pattern(g, driver)
    problems = []
    for fault in COMMAND_FAULTS:
        # The next 4 commands to LUN 0:0 carry the fault: enough for the midlayer's retries to
        # meet it more than once, few enough that the read ends either way.
        g.backend(f"fault {fault} 0 0 4")
        rc, sha = read_sha(g, bad)
        g.backend("fault clear")
        state = g.sh(f"cat /sys/block/{bad}/device/state").strip()
        outcome = "read the device's data" if rc == 0 and sha == want else f"dd rc {rc}, device {state}"
        if rc == 0 and sha != want:
            problems.append(f"{fault}: the read succeeded with data the device did not send")
        # The midlayer may have given up on the LUN (offline after failed error recovery), as
        # for a real device: the administrator's way back.
        g.sh(f"echo running > /sys/block/{bad}/device/state")
        if read_sha(g, bad) != (0, want):
            problems.append(f"{fault}: LUN 0:0 did not read back once the fault was gone")
        if read_sha(g, good) != (0, want):
            problems.append(f"{fault}: the healthy neighbour did not read back")
        report(f"{driver}: {fault}: {outcome}")
    for fault in TMF_FAULTS:
        g.backend(f"fault {fault} all")
        rc, _ = g.run(f"sg_reset --device /dev/{bad}", timeout=300, check=False)
        g.backend("fault clear")
        state = g.sh(f"cat /sys/block/{bad}/device/state").strip()
        report(f"{driver}: {fault}: sg_reset --device rc {rc}, device {state}")
        g.sh(f"echo running > /sys/block/{bad}/device/state")
        if read_sha(g, bad) != (0, want):
            problems.append(f"{fault}: LUN 0:0 did not read back after the failed reset")
    # The sweep after EVENTS_MISSED asks each LUN for as many INQUIRY bytes as the midlayer
    # kept at scan (the back end sends 74), as C does; the commands are read from the SCSI
    # dispatch trace event.
    trace = "/sys/kernel/debug/tracing"
    enable = f"{trace}/events/scsi/scsi_dispatch_cmd_start/enable"
    assert g.run(f"[ -e {enable} ]", check=False)[0] == 0, "the guest kernel has no SCSI trace events (CONFIG_TRACING)"
    g.sh(f"echo > {trace}/trace && echo 1 > {enable}")
    g.backend("fault events-missed-always")
    g.backend("add 0 2 16")
    wait_devices(g, 3, "LUN 0:2, announced with EVENTS_MISSED", timeout=120)
    g.backend("fault clear")
    g.sh(f"echo 0 > {enable}")
    dispatched = g.sh(f"cat {trace}/trace")
    for lun in (0, 1):
        kept = int(g.sh(f"wc -c < /sys/bus/scsi/devices/*:0:0:{lun}/inquiry"))
        inquiries = re.findall(rf" id=0 lun={lun} .* raw=12 00 00 00 ([0-9a-f]{{2}}) 00\)", dispatched)
        asked = {int(n, 16) for n in inquiries}
        if kept != 74:
            problems.append(f"LUN 0:{lun}: the midlayer kept {kept} bytes of INQUIRY data, not the back end's 74")
        if asked != {kept}:
            problems.append(f"events-missed sweep: LUN 0:{lun} asked for {sorted(asked)} INQUIRY bytes, not {kept}")
    g.backend("flood 1000 0 0")
    g.backend("remove 0 2")
    wait_devices(g, 2, "LUN 0:2 gone after a flood of 1000 events", timeout=120)
    for event in ODD_EVENTS:
        g.backend(event)
    # Events are handled in order: once LUN 0:3 is there, so is whatever the odd ones did.
    g.backend("add 0 3 16")
    g.wait_for("[ -e /sys/bus/scsi/devices/*:0:0:3 ]", what="LUN 0:3")
    found = sorted(devices(g))
    if found != [(0, 0), (0, 1), (0, 3)]:
        problems.append(f"odd events: devices {found}, not 0:0, 0:1 and 0:3")
    stats = g.backend("stats")
    report(f"{driver}: odd events, EVENTS_MISSED on every event, a flood of 1000: {stats}")
    for dev in (bad, good):
        if read_sha(g, dev) != (0, want):
            problems.append(f"events: /dev/{dev} did not read back")
    assert not problems, problems
    name = "virtio_scsi_rs" if driver == "rust" else "virtio_scsi"
    g.sh(f"rmmod {name}", timeout=120)


# Events a storm must have handed the guest while its programs still ran: a few seconds of it.
STORM_EVENTS = 20000


def test_event_storm(make_guest, driver):
    """A device that hands every event buffer back, with NO_EVENT, as soon as it is posted, for as
    long as it likes: the guest keeps running its programs on its one vCPU, an event queued
    meanwhile (a hot-add) is still handled, the new disk reads, and once the storm ends every
    event buffer is posted again. C queues a work item per event, which yields between events;
    the Rust driver's work handles at most its 8 buffers per run and then runs again behind what
    else is queued. Its earlier work, which looped until the ring was empty, passed this test too:
    under TCG the back end does not keep the ring full for long (a device on a faster host could),
    so the test guards what a storm must leave working, not the bound itself."""
    g = make_guest(Topology([VhostUserController(luns=["0:0:32", "0:1:32"])]), scan="all")
    g.load_driver(driver)
    wait_devices(g, 2, "2 SCSI devices")

    def events():
        return int(re.search(r"\bevents (\d+)", g.backend("stats")).group(1))

    before = events()
    g.backend("storm 1000000000")
    try:
        # Each command is a process the guest starts while the storm goes on: a guest whose
        # vCPU the event work kept would not answer (the command's timeout fails the test).
        deadline = time.monotonic() + 180
        while events() - before < STORM_EVENTS:
            assert time.monotonic() < deadline, f"{events() - before} events in 180 s: no storm"
            g.sh("true", timeout=30)
        g.backend("add 0 2 16")
        g.wait_for("[ -e /sys/bus/scsi/devices/*:0:0:2 ]", timeout=60, what="LUN 0:2, hot-added during the storm")
        disk = block_of(g, 0, 2)
        g.sh(f"dd if=/dev/{disk} of=/dev/null bs=4k count=16 iflag=direct", timeout=60)
        during = events() - before
    finally:
        g.backend("storm 0")
    assert during >= STORM_EVENTS
    # The hot-add went out as its own event (the storm makes it wait for a buffer), not as a loss
    # that an EVENTS_MISSED rescan would have covered.
    dropped = int(re.search(r"\bevents_dropped (\d+)", g.backend("stats")).group(1))
    assert dropped == 0, f"{dropped} events dropped during the storm"
    report(f"{driver}: {during} NO_EVENT events of a storm handled, LUN 0:2 added and read meanwhile")
    if driver == "rust":
        # The storm's last buffers come back to a work that posts them again: all 8 on the ring.
        g.wait_for(
            "grep -q '^event posted 8 ' /sys/kernel/debug/virtio_scsi_rs/host*/queues",
            what="all 8 event buffers posted after the storm",
        )


def test_random_faults_under_fio(make_guest, driver, request):
    """A seeded mix of the command faults on one LUN (set VSCSI_FAULT_SEED to replay one) while
    fio writes and verifies there and on a healthy neighbour: the neighbour verifies clean; on
    the faulty LUN a command fails or carries the device's data, so fio finds I/O errors at
    worst, never a block that verifies wrong; at least 200 faults are committed.

    How many commands reach the faulty LUN is not fixed: the error handler's test commands draw
    faults too, and a series of them can end in the midlayer setting the device offline ("not
    ready after error recovery": with C, which has no target or host reset, after a few dozen
    faults), after which fio's commands fail in the guest. (One CI run of the Rust case
    committed only 122 faults in its single round.) The faulty LUN is therefore
    written and verified in rounds (at most ``ROUNDS``) until the faults are committed, and a
    device found offline is set running again between rounds, as an administrator would."""
    expect_c_failure(
        request, driver, "WARN_ON(sense_len > VIRTIO_SCSI_SENSE_SIZE) on every response with a long sense_len"
    )
    seed = int(os.environ.get("VSCSI_FAULT_SEED", "0")) or int.from_bytes(os.urandom(4), "little")
    report(f"{request.node.nodeid}: fault seed {seed} (replay with VSCSI_FAULT_SEED={seed})")
    g = make_guest(Topology([VhostUserController(luns=["0:0:32", "0:1:32"])]), smp=2)
    g.load_driver(driver)
    wait_devices(g, 2, "2 SCSI devices")
    bad, good = block_of(g, 0, 0), block_of(g, 0, 1)
    g.backend(f"fault random {seed} 10 0 0")
    # --serialize_overlap: with --norandommap two writes of one block can be in flight at once,
    # and a failed first one that the midlayer retries may land after the second: the device
    # then holds the older data, as any disk may (concurrent writes of one block are unordered),
    # and fio's verify reads that as corruption (CI run of 8e48b47: numberio 1874, wanted 1877).
    fio = (
        f"{FIO} --rw=randwrite --bs=4k --iodepth=8 --size=8m --verify=crc32c --do_verify=1"
        " --verify_fatal=1 --norandommap --serialize_overlap=1 --output-format=normal"
    )
    bad_fio = f"{fio} --filename=/dev/{bad} --continue_on_error=io"
    _, out = g.run(
        f"{bad_fio} > /tmp/bad.out 2>&1 & {fio} --filename=/dev/{good} > /tmp/good.out 2>&1;"
        " good=$?; wait $!; bad=$?; cat /tmp/good.out /tmp/bad.out; echo good=$good bad=$bad",
        timeout=900,
        check=False,
    )
    assert "good=0" in out, out
    outs, rounds = [out], []

    def faults():
        return int(g.backend("stats").split(" faults ")[1].split()[0])

    state = f"/sys/block/{bad}/device/state"
    for _ in range(ROUNDS - 1):
        rounds.append((faults(), g.sh(f"cat {state}").strip()))
        if rounds[-1][0] >= 200:
            break
        _, out = g.run(f"echo running > {state}; {bad_fio} 2>&1; echo bad=$?", timeout=900, check=False)
        outs.append(out)
    g.backend("fault clear")
    stats = g.backend("stats")
    log = g.sh("dmesg | grep -E 'offline|host reset|timing out' | tail -n 5 || true")
    report(
        f"{driver}: random faults (seed {seed}): {stats}; after each round (faults, device state):"
        f" {rounds}; fio exit status: {[o.split()[-1] for o in outs]}; {log.splitlines()}"
    )
    for out in outs:
        assert not re.search(r"verify failed|bad magic|bad header|verify: ", out), out
    total = int(stats.split(" faults ")[1].split()[0])
    assert total >= 200, (stats, rounds)
    # The error handler's commands (its TEST UNIT READY after an abort) too. C copies only the
    # command's length into a private area the midlayer does not clear for the error handler's
    # reuse of a command, so its TEST UNIT READYs carry the aborted command's bytes past their
    # six (harmless: no device reads past a CDB's length); the Rust driver sends the midlayer's
    # field, zero past the CDB.
    if driver == "rust":
        assert " cdb_tail 0 " in stats, stats


# Rounds of fio on the faulty LUN that may be needed to commit 200 faults.
ROUNDS = 4


# Faults in how the device gives requests back rather than in what it answers. Each is committed
# once, on LUN 0:0.
RING_FAULTS = ["never-answer", "answer-after-abort", "duplicate-used", "used-idx-jump"]


def test_lost_and_broken_answers(make_guest, driver, request):
    """A command the device never gives back, one it gives back only after the ABORT TASK meant
    for it, a head put in the used ring twice, a used index that jumps past what was made
    available, and a TMF never given back (tmf_timeout 10 s): every read of 1 MiB still ends
    within 30 s (ten command timeouts), with the device's data or with an error, never with data
    the device did not send; the LUN reads back once the fault is
    gone and its neighbour throughout; rmmod works and the device is left holding nothing.
    VSCSI_RING_FAULTS=a,b runs only those faults (tmf-never-answer among them), to record what a
    driver does with each when an earlier one stops it."""
    expect_c_failure(
        request,
        driver,
        "eh_timed_out always resets the timer (and TMFs wait forever): a command the device never"
        " gives back, or gives back only after an ABORT TASK, or that a broken ring hides, waits"
        " forever",
    )
    g = make_guest(Topology([VhostUserController(luns=["0:0:32", "0:1:32"])]))
    bad, good, want = two_luns_with_a_pattern(g, driver)
    # A command timeout of 3 s (sd's default is 30 s), and (Rust) error handling at the first
    # timeout rather than after the stall limit (test_eh.py covers that): each fault is handled
    # in seconds.
    g.sh(f"echo 3 > /sys/block/{bad}/device/timeout")
    abort_at_first_timeout(g, driver)
    short_tmf_timeout(g, driver)
    problems = []
    chosen = os.environ.get("VSCSI_RING_FAULTS", ",".join(RING_FAULTS + ["tmf-never-answer"])).split(",")
    for fault in [f for f in RING_FAULTS if f in chosen]:
        before = g.rust_control_counters(driver)
        g.backend(f"fault {fault} 0 0 1")
        start = time.monotonic()
        rc, sha = read_sha(g, bad, timeout=30)
        took = time.monotonic() - start
        g.backend("fault clear")
        state = g.sh(f"cat /sys/block/{bad}/device/state").strip()
        if rc == 0 and sha != want:
            problems.append(f"{fault}: the read succeeded with data the device did not send")
        g.sh(f"echo running > /sys/block/{bad}/device/state")
        if read_sha(g, bad, timeout=30) != (0, want):
            problems.append(f"{fault}: LUN 0:0 did not read back once the fault was gone")
        if read_sha(g, good, timeout=30) != (0, want):
            problems.append(f"{fault}: the healthy neighbour did not read back")
        after = g.rust_control_counters(driver)
        delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        outcome = "read the device's data" if rc == 0 and sha == want else f"dd rc {rc}, device {state}"
        report(f"{driver}: {fault}: {outcome} in {took:.0f} s; error handling {delta}")
    if "tmf-never-answer" in chosen:
        # A TMF never given back: the reset gives up after its timeout and escalates; the TMF's
        # buffer stays the device's until the device is reset.
        g.backend("fault tmf-never-answer all 1")
        start = time.monotonic()
        rc, _ = g.run(f"sg_reset --device /dev/{bad}", timeout=90, check=False)
        took = time.monotonic() - start
        report(f"{driver}: tmf-never-answer: sg_reset --device rc {rc} in {took:.0f} s; {g.backend('stats')}")
        g.sh(f"echo running > /sys/block/{bad}/device/state")
        for dev in (bad, good):
            if read_sha(g, dev, timeout=30) != (0, want):
                problems.append(f"tmf-never-answer: /dev/{dev} did not read back")
    assert not problems, problems
    name = "virtio_scsi_rs" if driver == "rust" else "virtio_scsi"
    g.sh(f"rmmod {name}", timeout=120)
    # The device was reset at removal: it holds no request any more.
    stats = g.backend("stats")
    assert " held 0" in stats, stats


def test_t10_pi_end_to_end(make_guest, driver):
    """A LUN formatted with T10 PI type 1 behind the bidi-pi profile (T10_PI negotiated): sd
    registers the T10-DIF-TYPE1-CRC integrity profile; on writes the block layer generates a tuple
    per block and the device checks each (guard CRC and reference tag), which it can only pass if
    the driver put the tuples where the device looks for them; on reads the device returns its
    tuples and the block layer verifies them; fio verifies the data. A guard tag the device
    corrupts on one read fails that read, the data being right, and the same read then passes.
    The LUN next to it has no PI and no integrity profile."""
    g = make_guest(Topology([VhostUserController(profile="bidi-pi", luns=["0:0:32:disk+pi", "0:1:32"])]))
    g.load_driver(driver)
    wait_devices(g, 2, "2 SCSI devices")
    sd, plain = block_of(g, 0, 0), block_of(g, 0, 1)
    fmt, ptype, plain_fmt = g.sh(
        f"cat /sys/block/{sd}/integrity/format /sys/block/{sd}/device/scsi_disk/*/protection_type"
        f" /sys/block/{plain}/integrity/format").split()
    assert (fmt, ptype, plain_fmt) == ("T10-DIF-TYPE1-CRC", "1", "none")
    rc, out = g.run(
        f"{FIO} --filename=/dev/{sd} --rw=randwrite --bs=4k --iodepth=8 --size=8m --verify=crc32c"
        " --do_verify=1 --verify_fatal=1",
        timeout=600,
        check=False,
    )
    stats = g.backend("stats")
    checked = int(stats.split(" pi_checked ")[1].split()[0])
    errors = int(stats.split(" pi_errors ")[1].split()[0])
    g.backend("fault pi-corrupt 0 0 1")
    bad, _ = g.run(f"dd if=/dev/{sd} of=/dev/null bs=4k count=1 iflag=direct", check=False)
    again, _ = g.run(f"dd if=/dev/{sd} of=/dev/null bs=4k count=1 iflag=direct", check=False)
    report(f"{driver}: T10 PI type 1: fio rc {rc}; device checked {checked} tuples, {errors} refused;"
           f" read with a corrupt guard tag rc {bad}, then rc {again}")
    assert rc == 0, out
    # 8 MiB written in 512-byte blocks, each with its tuple checked.
    assert checked >= 16384 and errors == 0, stats
    assert bad != 0 and again == 0


def held(g):
    """How many requests the back end keeps back (never answered) right now."""
    return int(g.backend("stats").split(" held ")[1].split()[0])


def wait_held(g, n=1, timeout=30):
    """Waits until the back end keeps `n` requests back."""
    deadline = time.monotonic() + timeout
    while held(g) < n:
        assert time.monotonic() < deadline, f"the back end never kept {n} request(s)"
        time.sleep(0.2)


@pytest.mark.parametrize("driver", ["rust"])
def test_unbind_while_a_command_and_its_abort_are_stuck(make_guest, driver):
    """A command the device never gives back, the ABORT TASK for it kept too, and an unbind
    meanwhile (rmmod is refused while the disk is open): remove holds the device lock and waits
    for the command, so the error handler's host reset cannot re-initialise the device; it resets
    it and takes every queue back instead. By the time the command ends the device holds nothing
    (the reset took it back: it was not just given up on), the unbind and then rmmod finish, and
    no report. Rust only: C's ABORT TASK waits forever, which test_lost_and_broken_answers
    records."""
    g = make_guest(Topology([VhostUserController(luns=["0:0:32", "0:1:32"])]))
    bad, _, _ = two_luns_with_a_pattern(g, driver)
    g.sh(f"echo 3 > /sys/block/{bad}/device/timeout")
    abort_at_first_timeout(g, driver)
    short_tmf_timeout(g, driver)
    g.backend("fault never-answer 0 0 1")
    g.sh(f"(dd if=/dev/{bad} of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null; echo $? > /tmp/dd.rc) &")
    wait_held(g)
    # The next TMF (the read's ABORT TASK, after its 3 s timeout) is kept as well.
    g.backend("fault tmf-never-answer all 1")
    wait_held(g, 2)
    g.sh("(cd /sys/bus/virtio/drivers/virtio_scsi_rs && echo virtio* > unbind; echo $? > /tmp/unbind.rc) &")
    # The abort's bound (tmf_timeout, 10 s), then the escalation: the device and target resets fail at once (the
    # control queue holds an unanswered TMF), the host reset finds the device lock taken.
    g.wait_for("[ -e /tmp/dd.rc ]", timeout=90, what="the stuck read to end")
    kept = held(g)
    g.wait_for("[ -e /tmp/unbind.rc ]", timeout=60, what="the unbind to finish")
    rc_dd, rc_unbind = g.sh("cat /tmp/dd.rc /tmp/unbind.rc").split()
    log = g.sh("dmesg | grep 'host reset' || true")
    report(f"{driver}: unbind with a command and its abort stuck: dd rc {rc_dd}, unbind rc {rc_unbind};"
           f" device held {kept} request(s) when the read ended; {log.strip()!r}")
    assert kept == 0, "the read ended while the device still held it"
    assert rc_unbind == "0", log
    g.sh("rmmod virtio_scsi_rs", timeout=60)
    assert "reset, not re-initialised" in log, log
    assert held(g) == 0


# Every slab and page allocation of the tasks marked with /proc/<pid>/make-it-fail fails (the
# kernel's fault injection, CONFIG_FAILSLAB and CONFIG_FAIL_PAGE_ALLOC); verbose=1 logs one line a
# forced failure (rate-limited), which the test counts.
ARM_FAILURES = (
    "for f in /sys/kernel/debug/failslab /sys/kernel/debug/fail_page_alloc; do"
    "  echo Y > $f/task-filter; echo 100 > $f/probability; echo 1 > $f/interval;"
    "  echo -1 > $f/times; echo 1 > $f/verbose;"
    "  [ ! -e $f/ignore-gfp-wait ] || echo N > $f/ignore-gfp-wait;"
    "  [ ! -e $f/ignore-gfp-highmem ] || echo N > $f/ignore-gfp-highmem;"
    "  echo 0 > $f/min-order 2>/dev/null;"
    " done"
)
DISARM_FAILURES = (
    "for f in /sys/kernel/debug/failslab /sys/kernel/debug/fail_page_alloc; do echo 0 > $f/probability; done"
)


@pytest.mark.parametrize("driver", ["rust"])
def test_task_management_while_allocations_fail(make_guest, driver):
    """Task management when memory cannot be had (finding 4 of the 6ee1b24 review): every
    allocation of the host's error handler thread fails. A read the device keeps until a TMF to
    its target, whose ABORT TASK the device rejects: the abort fails, the error handler thread
    sends a LUN reset, which must reach the device and succeed without allocating (the Rust
    driver's per-host TMF reserve, C's mempool), and the read's retry must read the data back.
    The forced failures in the thread's path (the midlayer's and the queue's own allocations,
    which fall back) show that the injection was live. Rust only: C's eh_timed_out resets the
    timer of a command the device keeps, forever, so its error handler thread never starts."""
    g = make_guest(Topology([VhostUserController(luns=["0:0:32", "0:1:32"])]))
    bad, good, want = two_luns_with_a_pattern(g, driver)
    g.sh(f"echo 3 > /sys/block/{bad}/device/timeout")
    abort_at_first_timeout(g, driver)
    host = host_of(g)
    eh = g.sh(f"for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = scsi_eh_{host[4:]} ] && echo ${{p#/proc/}}; done; true").split()
    assert len(eh) == 1, f"no single error handler thread for {host}: {eh}"
    g.sh(ARM_FAILURES)
    g.sh(f"echo 1 > /proc/{eh[0]}/make-it-fail; dmesg -c > /dev/null")
    tmfs_before = int(g.backend("stats").split(" tmfs ")[1].split()[0])
    try:
        g.backend("fault answer-after-abort 0 0 1")
        g.sh(f"(dd if=/dev/{bad} bs=64k count=16 iflag=direct 2>/dev/null | sha256sum > /tmp/dd.sha;"
             f" echo ${{PIPESTATUS[0]}} > /tmp/dd.rc) &")
        wait_held(g)
        # The back end commits one fault at a time: this one replaces answer-after-abort.
        g.backend("fault tmf-rejected all 1")
        g.wait_for("[ -e /tmp/dd.rc ]", timeout=120, what="the read to end")
        rc, sha = int(g.sh("cat /tmp/dd.rc")), g.sh("cat /tmp/dd.sha").split()[0]
    finally:
        g.sh(f"echo 0 > /proc/{eh[0]}/make-it-fail; {DISARM_FAILURES}")
        g.backend("fault clear")
    log = g.sh("dmesg")
    forced = log.count("FAULT_INJECTION: forcing a failure")
    tmfs = int(g.backend("stats").split(" tmfs ")[1].split()[0]) - tmfs_before
    state = g.sh(f"cat /sys/block/{bad}/device/state").strip()
    resets = [line for line in log.splitlines() if re.search(r"(?i)reset|abort", line)]
    report(f"{driver}: allocations failing in {host}'s error handler: dd rc {rc}, {tmfs} TMF(s) answered,"
           f" {forced} forced failure(s) logged, device {state}; {resets[-3:]}")
    assert forced >= 1, "no allocation of the error handler failed: the injection was not live"
    assert tmfs >= 2, "the LUN reset never reached the device (only the rejected abort did)"
    assert (rc, sha) == (0, want), f"the read did not read the data back (dd rc {rc})"
    assert state == "running", state
    assert read_sha(g, good) == (0, want)


@pytest.mark.parametrize("driver", ["rust"])
def test_host_reset_while_a_cpu_goes_offline(make_guest, driver):
    """A host reset while a CPU goes offline (review finding 19). A read issued on CPU 1 is kept
    by the device; CPU 1 is taken offline, and blk-mq holds the CPU hotplug lock while it waits
    for that read, which only the error handler can end: its ABORT TASK and resets are rejected,
    so it resets the host, and the reset re-creates the virtqueues. Were that to wait for the
    hotplug lock (as pci_alloc_irq_vectors_affinity() does by default), neither would ever finish.
    The read ends (retried after the reset, data intact), CPU 1 goes offline and comes back, and
    the device holds nothing. Rust only: C's error handler waits forever for a command the device
    keeps (test_lost_and_broken_answers) and has no host reset."""
    g = make_guest(Topology([VhostUserController(luns=["0:0:32", "0:1:32"])]), smp=2)
    bad, good, want = two_luns_with_a_pattern(g, driver)
    g.sh(f"echo 3 > /sys/block/{bad}/device/timeout")
    abort_at_first_timeout(g, driver)
    before = g.rust_control_counters(driver)
    g.backend("fault never-answer 0 0 1")
    g.sh(f"(taskset -c 1 dd if=/dev/{bad} bs=64k count=16 iflag=direct 2>/dev/null | sha256sum > /tmp/dd.sha;"
         f" echo ${{PIPESTATUS[0]}} > /tmp/dd.rc) &")
    wait_held(g)
    # The back end commits one fault at a time: this one replaces never-answer.
    g.backend("fault tmf-rejected all")
    g.sh("(echo 0 > /sys/devices/system/cpu/cpu1/online; echo $? > /tmp/offline.rc) &")
    try:
        g.wait_for("[ -e /tmp/dd.rc ] && [ -e /tmp/offline.rc ]", timeout=120,
                   what="the read to end and CPU 1 to go offline")
    finally:
        g.backend("fault clear")
    kept = held(g)
    rc_dd, rc_offline = g.sh("cat /tmp/dd.rc /tmp/offline.rc").split()
    sha = g.sh("cat /tmp/dd.sha").split()[0]
    after = g.rust_control_counters(driver)
    report(f"{driver}: host reset while CPU 1 goes offline: dd rc {rc_dd}, offline rc {rc_offline},"
           f" host resets {after['host_resets'] - before['host_resets']}, device holds {kept}")
    assert (rc_dd, sha) == ("0", want), "the read did not read the data back"
    assert rc_offline == "0"
    assert after["host_resets"] > before["host_resets"], after
    assert kept == 0
    g.sh("echo 1 > /sys/devices/system/cpu/cpu1/online")
    for dev in (bad, good):
        assert g.sh(f"taskset -c 1 dd if=/dev/{dev} bs=64k count=16 iflag=direct 2>/dev/null | sha256sum").split()[0] == want
