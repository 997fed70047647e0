#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Guest instructions per I/O, per function, C driver and Rust driver in the same guest.

One vCPU under TCG with `-icount shift=0,sleep=off` and the insn_count plugin
(tests/plugins/insn_count.c): after a warm-up, the plugin's counters are zeroed, fio runs a
fixed number of I/Os on null-co, and the counts of every executed guest instruction are taken.
Symbolised with the guest's /proc/kallsyms (the kernel and both modules), they give each
function's instructions per I/O, exactly for the code the I/O path runs (what the host's timing
moves, interrupts and timer ticks per I/O, moves from run to run; the module's own code per
command does not). Reports go under --out (`make insn-profile`: build/insn-profile/):
`summary.txt` (totals, each module's functions, the functions where the drivers differ most) and
the raw counts (`<driver>.counts`, `kallsyms`), from which `--annotate` prints a function's
instructions with their counts.
"""

import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MODULES = {"c": "virtio_scsi", "rust": "virtio_scsi_rs"}


class Symbols:
    """Text symbols of a /proc/kallsyms dump: the function an address lies in."""

    def __init__(self, kallsyms):
        syms = []
        for line in kallsyms.splitlines():
            p = line.split()
            if len(p) < 3 or p[1] not in "tTwW":
                continue
            syms.append((int(p[0], 16), p[2], p[3].strip("[]") if len(p) > 3 else "vmlinux"))
        syms.sort()
        self.syms = syms
        self.addrs = [s[0] for s in syms]
        self.cache = {}

    def lookup(self, addr):
        """(function, module, offset); user space (below every symbol) is ("[user]", "user", 0)."""
        r = self.cache.get(addr)
        if r is None:
            i = bisect.bisect_right(self.addrs, addr) - 1
            if i < 0:
                r = ("[user]", "user", 0)
            else:
                r = (self.syms[i][1], self.syms[i][2], addr - self.syms[i][0])
            self.cache[addr] = r
        return r


def parse_counts(text, symbols):
    """Per-function and per-address counts of a plugin snapshot."""
    per_fn = collections.Counter()
    per_addr = collections.Counter()
    for line in text.splitlines():
        p = line.split()
        if not p:
            continue
        c = int(p[0])
        for h in p[1:]:
            fn, mod, off = symbols.lookup(int(h, 16))
            per_fn[(fn, mod)] += c
            per_addr[(fn, off)] += c
    return per_fn, per_addr


def summary(per_fn, ios, per_addr=None, top=40):
    """The report: totals, modules, each driver's module functions (with their calls per I/O,
    from `per_addr`: the interrupt handler's are the interrupts), the largest differences."""
    lines = []
    drivers = list(per_fn)
    for d in drivers:
        tot = sum(per_fn[d].values())
        by_mod = collections.Counter()
        for (_, mod), c in per_fn[d].items():
            by_mod[mod] += c
        lines.append(f"== {d}: {tot / ios:,.1f} instructions per I/O")
        for mod, c in by_mod.most_common(6):
            lines.append(f"   {mod:24s} {c / ios:10.1f}")
        own = [(fn, c) for (fn, mod), c in per_fn[d].items() if mod == MODULES.get(d)]
        if own:
            lines.append(f"   {MODULES[d]} functions (instructions, calls per I/O):")
            for fn, c in sorted(own, key=lambda x: -x[1]):
                calls = (per_addr or {}).get(d, {}).get((fn, 0), 0)
                lines.append(f"     {c / ios:8.1f} {calls / ios:6.3f}  {fn}")
    if len(drivers) == 2:
        a, b = (per_fn[d] for d in drivers)
        lines.append(f"== the {top} functions where {drivers[0]} and {drivers[1]} differ most, per I/O")
        lines.append(f"{'function':56s} {'module':16s} {drivers[0]:>9s} {drivers[1]:>9s} {'diff':>9s}")
        for k in sorted(set(a) | set(b), key=lambda k: -abs(a[k] - b[k]))[:top]:
            lines.append(f"{k[0][:56]:56s} {k[1][:16]:16s} {a[k] / ios:9.1f} {b[k] / ios:9.1f}"
                         f" {(b[k] - a[k]) / ios:9.1f}")
    return "\n".join(lines) + "\n"


def annotate(out, driver, ko, func, ios):
    """A function of a module, disassembled, each instruction with its count per I/O."""
    symbols = Symbols(open(os.path.join(out, "kallsyms")).read())
    _, per_addr = parse_counts(open(os.path.join(out, f"{driver}.counts")).read(), symbols)
    nm = subprocess.run(["llvm-nm", ko], capture_output=True, text=True, check=True).stdout
    names = [p[2] for p in (line.split() for line in nm.splitlines()) if len(p) == 3 and func in p[2]]
    if not names:
        sys.exit(f"no symbol of {ko} contains {func!r}")
    for name in names:
        dis = subprocess.run(["llvm-objdump", "-d", "--no-show-raw-insn", f"--disassemble-symbols={name}", ko],
                             capture_output=True, text=True, check=True).stdout
        start = None
        for line in dis.splitlines():
            m = re.match(r"^([0-9a-f]+) <", line)
            if m:
                start = int(m.group(1), 16)
                print(line)
                continue
            m = re.match(r"^\s*([0-9a-f]+):\s*(.*)", line)
            if m and start is not None:
                off = int(m.group(1), 16) - start
                print(f"{per_addr.get((name, off), 0) / ios:8.2f} {off:6x}: {m.group(2)}")


def run(a):
    from harness.guest import DRIVERS, Guest, load_both_unbound
    from harness.topology import Controller, Disk, Topology

    os.makedirs(a.out, exist_ok=True)
    req = os.path.join(os.path.abspath(a.out), "snapshot")
    os.environ["VSCSI_ACCEL"] = "tcg"
    topo = Topology([Controller(num_queues=1, disks=[Disk(backend="null", size=4 << 30)])])
    qemu_args = ["-icount", "shift=0,sleep=off", "-plugin", f"{os.path.abspath(a.plugin)},req={req}"]
    g = Guest(a.kernel, a.initrd, os.path.join(a.out, "logs"), topo, smp=1, mem="2G",
              append="scsi_mod.scan=manual", qemu_args=qemu_args)

    def snapshot():
        open(req, "w").close()
        deadline = time.time() + 120
        while os.path.exists(req):
            if time.time() > deadline:
                raise RuntimeError("the plugin took no snapshot (is it loaded?)")
            time.sleep(0.05)
        with open(req + ".out") as f:
            return f.read()

    fio = ("fio --name=p --filename=/dev/sda --direct=1 --ioengine=libaio {args} --number_ios={n}"
           " --size=4g --output-format=terse >/dev/null")
    counts = {}
    g.start()
    try:
        dev = load_both_unbound(g)
        for d in a.drivers.split(","):
            name = DRIVERS[d][0]
            g.sh(f"echo {dev} > /sys/bus/virtio/drivers/{name}/bind")
            g.sh("echo '0 0 0' > $(ls -d /sys/class/scsi_host/host* | tail -1)/scan")
            g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
            g.sh("echo none > /sys/block/sda/queue/scheduler")
            g.sh(fio.format(args=a.fio, n=max(a.ios // 5, 1000)), timeout=3600)
            snapshot()
            g.sh(fio.format(args=a.fio, n=a.ios), timeout=3600)
            counts[d] = snapshot()
            with open(os.path.join(a.out, f"{d}.counts"), "w") as f:
                f.write(counts[d])
            g.sh(f"echo {dev} > /sys/bus/virtio/drivers/{name}/unbind")
        kallsyms = g.sh("cat /proc/kallsyms", timeout=600)
    finally:
        g.stop()
    with open(os.path.join(a.out, "kallsyms"), "w") as f:
        f.write(kallsyms)
    symbols = Symbols(kallsyms)
    parsed = {d: parse_counts(text, symbols) for d, text in counts.items()}
    per_fn = {d: p[0] for d, p in parsed.items()}
    per_addr = {d: p[1] for d, p in parsed.items()}
    text = f"fio {a.fio}, {a.ios} I/Os per driver, null-co, 1 vCPU, icount\n" + summary(per_fn, a.ios, per_addr)
    with open(os.path.join(a.out, "summary.txt"), "w") as f:
        f.write(text)
    print(text)
    print(f"results in {a.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel")
    ap.add_argument("--initrd")
    ap.add_argument("--plugin", help="the built insn_count plugin")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ios", type=int, default=100000, help="I/Os counted per driver")
    ap.add_argument("--fio", default="--rw=randread --bs=4k --iodepth=32", help="fio's workload arguments")
    ap.add_argument("--drivers", default="c,rust")
    ap.add_argument("--annotate", nargs=3, metavar=("DRIVER", "KO", "FUNCTION"),
                    help="print a function of an earlier run's module (a symbol containing FUNCTION) with its"
                         " counts per I/O, and run nothing")
    a = ap.parse_args()
    if a.annotate:
        annotate(a.out, a.annotate[0], a.annotate[1], a.annotate[2], a.ios)
        return
    if not (a.kernel and a.initrd and a.plugin):
        ap.error("--kernel, --initrd and --plugin are needed to run")
    run(a)


if __name__ == "__main__":
    main()
