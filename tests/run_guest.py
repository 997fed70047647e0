#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""`make run`: boot a guest with a few disks on a driver, show lsscsi and a short fio run, and
give a shell on the console when started from a terminal. `make run DISTRO=1` (--distro): boot the
distro guest with its root disk on the driver, to a login prompt on the console."""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness.distro import DistroGuest, DistroImage  # noqa: E402
from harness.guest import Guest, poll_loop  # noqa: E402
from harness.topology import Controller, Disk, Topology  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kernel")
    ap.add_argument("--initrd")
    ap.add_argument("--distro", metavar="DIR", help="the distro guest's image (scripts/distro/mkimage.sh)")
    ap.add_argument("--driver", choices=["rust", "c"], default="rust")
    ap.add_argument("--smp", type=int, default=2)
    args = ap.parse_args()

    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if args.distro:
        return distro(args, interactive)
    if not (args.kernel and args.initrd):
        ap.error("--kernel and --initrd are required without --distro")
    topo = Topology(
        [
            Controller(
                num_queues=args.smp,
                disks=[
                    Disk(backend="null", size=4 << 30, target=0),
                    Disk(backend="null", size=4 << 30, target=1),
                    Disk(backend="file", size=256 << 20, target=2),
                ],
            )
        ]
    )
    logdir = os.path.join(ROOT, "build", "run")
    os.makedirs(logdir, exist_ok=True)
    g = Guest(args.kernel, args.initrd, logdir, topo, smp=args.smp, interactive=interactive)
    print(f"booting {args.kernel} ({'interactive' if interactive else 'batch'}; logs in {logdir})", flush=True)
    g.start()
    try:
        name = g.load_driver(args.driver)
        print(f"\n== driver: {name}")
        # The Rust driver registers its SCSI host in issue 3; until then no disk appears.
        rc, _ = g.run(poll_loop("[ -b /dev/sda ]", 5), check=False)
        print("== lsscsi")
        print(g.sh("lsscsi"), end="", flush=True)
        if rc == 0:
            print("== fio: 4k random read, QD16, 5 s on /dev/sda")
            out = g.sh(
                "fio --name=run --filename=/dev/sda --rw=randread --bs=4k --iodepth=16 --ioengine=libaio "
                "--direct=1 --runtime=5 --time_based --group_reporting | grep -E 'IOPS|lat \\(usec\\): min|err'",
                timeout=120,
            )
            print(out, end="")
        else:
            print(f"(no SCSI disk appeared under {name})")
        if interactive:
            print("\n== shell on the guest console; 'exit' powers the guest off\n", flush=True)
            g.shell()
    finally:
        end(g)


def end(g):
    """Powers the guest off (if it still runs) and prints its kernel reports."""
    g.stop()
    g.dead = True
    reports = g.collect_reports()
    if reports:
        print(f"\n{len(reports)} kernel report(s) in {g.console}:")
        for r in reports:
            print(r)
        sys.exit(1)


def distro(args, interactive):
    """The distro guest on a fresh overlay of its image (the image itself stays as built), with a
    second, empty disk; to a login prompt on the console from a terminal."""
    image = DistroImage(args.distro)
    logdir = os.path.join(ROOT, "build", "run-distro")
    os.makedirs(logdir, exist_ok=True)
    overlay = os.path.join(logdir, "root.qcow2")
    if os.path.exists(overlay):
        os.unlink(overlay)
    topo = Topology([Controller(disks=[image.overlay(overlay), Disk(backend="file", size=1 << 30, target=1)])])
    g = DistroGuest(image.kernel, image.initrd(args.driver), logdir, topo, smp=args.smp,
                    append=f"{image.append()} loglevel=4", interactive=interactive)
    print(f"booting the distro guest, root on {args.driver} ({'interactive' if interactive else 'batch'};"
          f" logs in {logdir})", flush=True)
    if interactive:
        print("log in as root (no password); 'poweroff' ends the guest, or Ctrl-A X\n", flush=True)
    g.start()
    try:
        if interactive:
            g.proc.wait()
            return
        print(g.sh("echo root: $(findmnt -no SOURCE,UUID /); lsscsi; echo system: $(systemctl is-system-running --wait);"
                   " systemd-analyze time --no-pager;"
                   " for d in /sys/bus/virtio/devices/*; do [ -e $d/driver ] && echo ${d##*/} $(basename $(readlink $d/driver)); done",
                   timeout=600), end="")
        g.poweroff()
    finally:
        end(g)


if __name__ == "__main__":
    main()
