#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""A guest profile of the 4k random-read path, C driver and Rust driver in the same guest.

One vCPU under TCG, null-co, fio libaio QD32 in the background, `perf record -a -e cpu-clock`
for a fixed time per driver, then `perf report` by symbol and by module. The initramfs must contain
perf: `VSCSI_EXTRA_TOOLS=/usr/bin/perf scripts/mkinitramfs.sh OUT virtio_scsi.ko virtio_scsi_rs.ko`.
Reports go under --out (`make profile`: build/profile/); profiles worth keeping are copied to
tests/bench-results/<date>/profile/.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness.guest import DRIVERS, Guest, load_both_unbound, poll_loop  # noqa: E402
from harness.topology import Controller, Disk, Topology  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--icount", action="store_true",
                    help="run the guest under -icount shift=0: its clock counts instructions, so"
                         " cpu-clock samples fall per instruction, not per host time")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    os.environ["VSCSI_ACCEL"] = "tcg"
    topo = Topology([Controller(num_queues=1, disks=[Disk(backend="null", size=4 << 30)])])
    qemu_args = ["-icount", "shift=0,sleep=off"] if a.icount else []
    g = Guest(a.kernel, a.initrd, os.path.join(a.out, "logs"), topo, smp=1, mem="2G", append="scsi_mod.scan=manual",
              qemu_args=qemu_args)
    g.start()
    try:
        dev = load_both_unbound(g)
        for d in ("c", "rust"):
            name = DRIVERS[d][0]
            g.sh(f"echo {dev} > /sys/bus/virtio/drivers/{name}/bind")
            g.sh("echo '0 0 0' > $(ls -d /sys/class/scsi_host/host* | tail -1)/scan")
            g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
            g.sh("echo none > /sys/block/sda/queue/scheduler")
            g.sh(f"fio --name=p --filename=/dev/sda --direct=1 --ioengine=libaio --rw=randread --bs=4k"
                 f" --iodepth=32 --time_based --runtime={a.seconds + 6} > /tmp/fio.log 2>&1 &")
            g.sh("sleep 3")
            g.sh(f"perf record -q -a -e cpu-clock -F 999 -o /tmp/{d}.data -- sleep {a.seconds} 2>&1 | tail -2",
                 timeout=a.seconds * 10 + 60)
            g.sh(poll_loop("! pidof fio >/dev/null", 100), timeout=160)
            for sort in ("sym", "dso"):
                rep = g.sh(f"perf report -q -i /tmp/{d}.data --sort {sort} --stdio --percent-limit 0.5 2>/dev/null",
                           timeout=600)
                with open(os.path.join(a.out, f"{d}-by-{sort}.txt"), "w") as f:
                    f.write(rep)
                print(f"== {d}: by {sort}\n{rep}", flush=True)
            g.sh(f"echo {dev} > /sys/bus/virtio/drivers/{name}/unbind")
    finally:
        g.stop()


if __name__ == "__main__":
    main()
