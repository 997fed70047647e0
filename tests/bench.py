#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""`make bench`: the Rust driver against the C driver (and virtio-blk on the same back end).

One guest per configuration; inside it the virtio-scsi device is switched between the C and the
Rust driver by sysfs unbind/bind, alternating the order every repetition, so that each repetition
gives one paired sample per row. Two measures:

  (a) wall clock under TCG: IOPS, bandwidth or latency per row, and the paired ratio Rust/C with a
      95 % confidence interval: the geometric mean of the per-repetition ratios, with a t interval
      computed on their logarithms (ratios are multiplicative; one disturbed repetition must not
      dominate an arithmetic mean);
  (b) deterministic: guest instructions per I/O under `-icount shift=0,sleep=off` with one vCPU,
      from the guest's busy time (total minus idle and iowait in /proc/stat) over a fixed number
      of I/Os (1 ns of guest time is one instruction).

Every ratio is oriented so that > 1 means the Rust driver is better. Results: results.json,
results.md, chart.png and commands.txt under --out/<timestamp>/ (`make bench`: build/bench/). Runs worth
keeping are copied to tests/bench-results/<date>/ and described in Documentation/benchmarks.rst.
"""

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness.guest import DRIVERS, Guest, load_both_unbound  # noqa: E402
from harness.topology import Controller, Disk, Topology, VhostUserController  # noqa: E402

# Two-sided 95 % quantiles of Student's t by degrees of freedom, as tables print them (3 decimals);
# beyond the table, t95() uses the Cornish-Fisher expansion about the normal quantile (within 1e-5
# of the exact quantiles from 10 degrees of freedom on, 2e-7 from 21 on).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
       20: 2.086}
Z975 = 1.959963984540054

ROWS = [
    # id, description, fio arguments, measure
    ("randread_qd1", "4k random read, QD1 (p50/p99 latency)", "--rw=randread --bs=4k --iodepth=1", "lat"),
    ("randread_qd32_1j", "4k random read, QD32, 1 job", "--rw=randread --bs=4k --iodepth=32", "iops"),
    ("randread_qd32_2j", "4k random read, QD32, 2 jobs", "--rw=randread --bs=4k --iodepth=32 --numjobs=2", "iops"),
    ("randwrite_qd32", "4k random write, QD32", "--rw=randwrite --bs=4k --iodepth=32", "iops"),
    ("seqread_128k", "128k sequential read, QD8", "--rw=read --bs=128k --iodepth=8", "bw"),
]
POLL_ROW = ("hipri_qd32", "4k random read, io_uring hipri, poll queue, QD32",
            "--rw=randread --bs=4k --iodepth=32 --ioengine=io_uring --hipri", "iops")
BACKENDS = ("null", "file")
# The disk's queue limits recorded at each driver's first bind (they decide the request shape).
QUEUE_LIMITS = ("max_sectors_kb", "max_hw_sectors_kb", "max_segments", "max_segment_size", "nr_requests")
# Where fio's jobs run: a single job on vCPU 0, two jobs one per vCPU. Left to the guest's
# scheduler, a single job lands on either vCPU from run to run, and behind a single request queue
# that decides whether its completions interrupt the other vCPU or its own: 47k against 21k IOPS
# on the vhost-user back end (2026-12-02, Documentation/benchmarks.rst), which made that row's
# paired ratios scatter from 0.57 to 2.33.
PIN_ONE = "--cpus_allowed=0"
PIN_SPLIT = "--cpus_allowed=0-1 --cpus_allowed_policy=split"
# The multiqueue part: one job per vCPU (2 vCPUs) on null-co, with 1 and then 2 request queues.
MQ_ROW = ("randread_qd32_2j", "4k random read, QD32, 2 jobs (1 per vCPU)",
          "--rw=randread --bs=4k --iodepth=32 --numjobs=2", "iops")
# Rows run on the vhost-user-scsi back end (tools/vhost-user-scsi), with 1 and 2 request queues.
VHOST_USER_ROWS = ("randread_qd32_1j", "randread_qd32_2j", "randwrite_qd32")
# Rows of the icount part (--icount-rows): id, description, fio arguments, divisor of
# --icount-ios (a QD1 I/O takes about 1.6 times as long to run as a QD32 one, each waiting for the
# device: half as many keep the run short). The QD1 row scatters by several percent from run to
# run: whether fio sleeps before each completion arrives depends on the host's timing, and a
# context switch more or less per I/O is hundreds of instructions.
DRIVER_NAMES = {"c": "C", "rust": "Rust", "blk": "virtio-blk"}
ICOUNT_ROWS = {
    "randread_qd32": ("randread_qd32", "4k random read, QD32", "--rw=randread --bs=4k --iodepth=32", 1),
    "randwrite_qd32": ("randwrite_qd32", "4k random write, QD32", "--rw=randwrite --bs=4k --iodepth=32", 1),
    "randread_qd1": ("randread_qd1", "4k random read, QD1", "--rw=randread --bs=4k --iodepth=1", 2),
}
# Result row ids; the QD32 read row keeps the id it has had since the first icount results.
ICOUNT_IDS = {"randread_qd32": "instructions_per_io", "randwrite_qd32": "instructions_per_io_randwrite_qd32",
              "randread_qd1": "instructions_per_io_randread_qd1"}


def t95(df):
    """The two-sided 95 % quantile of Student's t with `df` (a whole number, 1 or more) degrees of
    freedom."""
    if df < 1:
        raise ValueError(f"no t quantile for {df} degrees of freedom")
    if df in T95:
        return T95[df]
    z = Z975
    g = [(z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96, (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160]
    return z + sum(gk / df ** (k + 1) for k, gk in enumerate(g))


def sd_of_logs(ratios):
    """The sample standard deviation of the logarithms of `ratios` (0 for fewer than two)."""
    logs = [math.log(x) for x in ratios]
    return statistics.stdev(logs) if len(logs) > 1 else 0.0


def ci(ratios):
    """Geometric mean of `ratios` and its 95 % t interval (on the logarithms)."""
    n = len(ratios)
    m = statistics.fmean(math.log(x) for x in ratios)
    if n < 2:
        return math.exp(m), math.exp(m), math.exp(m)
    h = t95(n - 1) * sd_of_logs(ratios) / math.sqrt(n)
    return math.exp(m), math.exp(m - h), math.exp(m + h)


def reps_for(sd_log, half=math.log(1.03)):
    """The repetitions a row whose paired log ratios have standard deviation `sd_log` needs for a
    95 % interval of half-width `half` (default ±3 %: a row at 1.00 meets a lower bound of 0.97
    only with that): the smallest n with t(n - 1) * sd / sqrt(n) <= half."""
    n = 2
    while t95(n - 1) * sd_log / math.sqrt(n) > half:
        n += 1
    return n


def bar_probability(rows, true_ratio, steps=2000):
    """The probability that every one of `rows` (with the standard deviations and repetitions they
    had) meets issue 16's bar, point >= 1.00 and lower bound >= 0.97, if the true ratio of each
    were `true_ratio`. Per row: the log ratios normal with the row's standard deviation; the mean
    must clear 0 and the lower bound needs mean >= ln 0.97 + t * s / sqrt(n), where the sample
    standard deviation s is itself random (s^2 (n - 1) / sd^2 is chi-squared with n - 1 degrees of
    freedom, independent of the mean), so the chance is integrated over s. The rows are taken as
    independent (they are not quite: rows share boots and the host's moods)."""
    nd = statistics.NormalDist()
    p = 1.0
    for r in rows:
        n, sd = r["n"], r["sd_log"]
        if n < 2:
            continue
        if sd == 0:
            # Every repetition gave the same ratio: the interval is the point.
            p *= 1.0 if true_ratio >= 1.0 else 0.0
            continue
        k = n - 1
        t = t95(k)
        top = k + 12 * math.sqrt(2 * k)
        row_p = 0.0
        for i in range(steps):
            q = (i + 0.5) * top / steps
            dens = math.exp((k / 2 - 1) * math.log(q) - q / 2 - (k / 2) * math.log(2) - math.lgamma(k / 2))
            s = sd * math.sqrt(q / k)
            need = max(0.0, math.log(0.97) + t * s / math.sqrt(n))
            row_p += dens * (1.0 - nd.cdf((need - math.log(true_ratio)) * math.sqrt(n) / sd)) * top / steps
        p *= row_p
    return p


def resummarise(bench, path):
    """Recomputes every row's ratio and interval from the samples in an earlier results.json; the
    run's own description (its meta: command line, queue limits, multiqueue scaling) is kept."""
    with open(path) as f:
        old = json.load(f)
    bench.meta = dict(old["meta"], resummarised_by=sys.argv)
    bench.limits = old["meta"].get("queue_limits", {})
    bench.scaling = old["meta"].get("mq_scaling", [])
    for row in old["rows"]:
        s = row["samples"]
        if row["measure"] in ("iops", "bw", "lat"):
            # Fields summarise() does not compute (a back end's own cost) stay.
            row.update(bench.summarise(row["id"], row["description"], row["backend"], row["measure"], s))
            bench.rows.append(row)
            continue
        c, r = s["c"], s["rust"]
        m, lo, hi = ci([a / b for a, b in zip(c, r)])
        row.update({"ratio": m, "ci_low": lo, "ci_high": hi, "n": len(c)})
        bench.rows.append(row)


class Bench:
    def __init__(self, args):
        self.args = args
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = os.path.join(args.out, stamp)
        os.makedirs(self.out, exist_ok=True)
        self.commands = []
        self.rows = []
        self.limits = {}  # driver -> the disk's queue limits, read at its first bind
        self.scaling = []  # multiqueue scaling: per driver, IOPS with 2 request queues over 1
        self.meta = None  # an earlier run's description (--resummarise)

    def guest(self, name, topo, smp=2, append="", qemu_args=(), accel=None):
        logdir = os.path.join(self.out, "logs", name)
        os.makedirs(logdir, exist_ok=True)
        if accel:
            os.environ["VSCSI_ACCEL"] = accel
        else:
            os.environ.pop("VSCSI_ACCEL", None)
        g = Guest(self.args.kernel, self.args.initrd, logdir, topo, smp=smp, mem="2G", append=append,
                  qemu_args=qemu_args)
        g.start()
        self.commands.append(f"# guest {name}\n" + open(os.path.join(logdir, "qemu.cmdline")).read())
        return g

    # --- driver switching ------------------------------------------------------------------------

    def setup(self, g, params="", blk=True):
        """Loads all drivers; the SCSI device starts unbound."""
        self.scsi_dev = load_both_unbound(g, params)
        if blk:
            g.sh("insmod /lib/modules/virtio_blk.ko")
            g.wait_for("[ -b /dev/vda ]", what="/dev/vda")

    def bind(self, g, driver):
        name = DRIVERS[driver][0]
        g.sh(f"echo {self.scsi_dev} > /sys/bus/virtio/drivers/{name}/bind")
        g.sh("echo '0 0 0' > $(ls -d /sys/class/scsi_host/host* | tail -1)/scan")
        g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
        g.sh("echo none > /sys/block/sda/queue/scheduler")
        if driver not in self.limits:
            q = "/sys/block/sda/queue"
            vals = g.sh(f"cat {' '.join(f'{q}/{k}' for k in QUEUE_LIMITS)}").split()
            self.limits[driver] = dict(zip(QUEUE_LIMITS, vals))

    def unbind(self, g, driver):
        g.sh(f"echo {self.scsi_dev} > /sys/bus/virtio/drivers/{DRIVERS[driver][0]}/unbind")

    # --- fio -------------------------------------------------------------------------------------

    def fio(self, g, dev, fio_args, measure):
        a = self.args
        engine = "" if "--ioengine" in fio_args else "--ioengine=libaio"
        pin = PIN_SPLIT if "--numjobs=2" in fio_args else PIN_ONE
        cmd = (f"fio --name=b --filename={dev} --direct=1 {engine} {fio_args} {pin} --time_based"
               f" --runtime={a.runtime} --ramp_time={a.ramp} --group_reporting --percentile_list=50:99"
               " --output-format=json")
        stat = f"cat /sys/block/{os.path.basename(dev)}/stat"
        out = g.sh(f"{stat}; {cmd}; {stat}", timeout=a.runtime * 10 + 120)
        lines = out.strip().splitlines()
        before, after = lines[0].split(), lines[-1].split()
        body = "\n".join(lines[1:-1])  # fio may print a warning before its JSON
        job = json.loads(body[body.index("{"):])["jobs"][0]
        write = job["write"]["io_bytes"] > job["read"]["io_bytes"]
        io = job["write"] if write else job["read"]
        # The requests the block layer sent the device over the run (ramp included): their mean
        # size and the bios merged into them, from the disk's stat (reads: fields 0-2, writes 4-6).
        base = 4 if write else 0
        reqs, merges, sectors = (int(after[base + i]) - int(before[base + i]) for i in range(3))
        shape = {"kb_per_req": sectors / 2 / reqs if reqs else 0.0, "merges_per_req": merges / reqs if reqs else 0.0}
        if measure == "iops":
            return {"iops": io["iops"], **shape}
        if measure == "bw":
            return {"mb_s": io["bw_bytes"] / 1e6, **shape}
        pct = io["clat_ns"]["percentile"]
        return {"p50_us": pct["50.000000"] / 1e3, "p99_us": pct["99.000000"] / 1e3, **shape}

    # --- configurations --------------------------------------------------------------------------

    def run_backend(self, backend, rows, params="", smp=2, num_queues=2, tag="", label=None):
        size = 4 << 30
        disk = Disk(backend=backend, size=size, read_zeroes=True)
        topo = Topology([Controller(num_queues=num_queues, disks=[disk])],
                        extra_args=self.blk_args(backend, size, num_queues))
        g = self.guest(f"{backend}{tag}", topo, smp=smp, append="scsi_mod.scan=manual")
        samples = {r[0]: {"c": [], "rust": [], "blk": []} for r in rows}

        def blk(rep):
            if rep % self.args.blk_every:
                return
            for rid, _, fio_args, measure in rows:
                if "--hipri" in fio_args:
                    continue  # virtio-blk has no poll queues here
                samples[rid]["blk"].append(self.fio(g, "/dev/vda", fio_args, measure))

        try:
            self.setup(g, params)
            self.alternate(g, rows, f"{backend}{tag}", lambda d, row: samples[row[0]][d].append(
                self.fio(g, "/dev/sda", row[2], row[3])), after_rep=blk)
        finally:
            g.stop()
        for rid, desc, fio_args, measure in rows:
            self.rows.append(self.summarise(f"{rid}{tag}", desc, label or backend, measure, samples[rid]))

    def run_mq(self):
        """Multiqueue scaling: MQ_ROW (one fio job per vCPU, 2 vCPUs) on null-co with 1 and then 2
        request queues, Rust against C in each guest; then, per driver, the median IOPS with 2
        queues over that with 1 (the two configurations are different boots, so unpaired). With
        one queue both vCPUs submit to it under its lock; with two each has its own."""
        medians = {}
        for nq in (1, 2):
            self.run_backend("null", [MQ_ROW], num_queues=nq, tag=f"_mq{nq}q",
                             label=f"null, {nq} queue{'s' if nq > 1 else ''}")
            medians[nq] = self.rows[-1]
        for d in ("c", "rust", "blk"):
            one, two = medians[1][f"{d}_iops"], medians[2][f"{d}_iops"]
            if one and two:
                self.scaling.append({"driver": d, "iops_1q": one, "iops_2q": two, "scaling": two / one})

    def run_vhost_user(self, num_queues):
        """ROWS of VHOST_USER_ROWS on our vhost-user-scsi back end (one null LUN, `num_queues`
        request queues), Rust against C (no virtio-blk there); and the back end's own cost: its CPU
        time per I/O and its share of one core, from /proc/<pid>/stat around each fio run, which
        tells whether the device limits the figures (a back end thread near 100 % would)."""
        rows = [r for r in ROWS if r[0] in VHOST_USER_ROWS]
        tag = f"_vu{num_queues}q"
        topo = Topology([VhostUserController(num_queues=num_queues, luns=["0:0:4096:null"])])
        g = self.guest(f"vhost-user{tag}", topo, smp=2, append="scsi_mod.scan=manual")
        pid = g.backends["vu0"].pid
        tick = os.sysconf("SC_CLK_TCK")

        def cpu_s():
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

        samples = {r[0]: {"c": [], "rust": [], "blk": []} for r in rows}
        cost = {r[0]: [] for r in rows}

        def record(d, row):
            c0, w0 = cpu_s(), time.monotonic()
            res = self.fio(g, "/dev/sda", row[2], row[3])
            c1, w1 = cpu_s(), time.monotonic()
            samples[row[0]][d].append(res)
            ios = res["iops"] * (self.args.runtime + self.args.ramp)
            cost[row[0]].append(((c1 - c0) / ios * 1e6, (c1 - c0) / (w1 - w0)))

        try:
            self.setup(g, blk=False)
            self.alternate(g, rows, f"vhost-user{tag}", record)
        finally:
            g.stop()
        for rid, desc, fio_args, measure in rows:
            row = self.summarise(f"{rid}{tag}", desc, f"vhost-user {num_queues}q", measure, samples[rid])
            row["backend_us_per_io"] = statistics.median(c[0] for c in cost[rid])
            row["backend_core_share"] = statistics.median(c[1] for c in cost[rid])
            self.rows.append(row)

    def alternate(self, g, rows, name, record, after_rep=None):
        """A warm-up pass per driver (not recorded), then `reps` repetitions, each driver in turn
        (the order alternating): `record(driver, row)` runs one row with that driver bound."""
        for d in ("c", "rust"):
            self.bind(g, d)
            self.fio(g, "/dev/sda", rows[0][2], rows[0][3])
            self.unbind(g, d)
        for rep in range(self.args.reps):
            order = ("c", "rust") if rep % 2 == 0 else ("rust", "c")
            for d in order:
                self.bind(g, d)
                for row in rows:
                    record(d, row)
                self.unbind(g, d)
            if after_rep:
                after_rep(rep)
            print(f"  {name}: repetition {rep + 1}/{self.args.reps} done", flush=True)

    def blk_args(self, backend, size, num_queues):
        if backend == "null":
            node = f"node-name=blk0,driver=null-co,size={size},read-zeroes=on"
        else:
            path = os.path.join(self.out, "blk0.img")
            with open(path, "wb") as f:
                f.truncate(size)
            node = f"node-name=blk0,driver=file,filename={path},aio=native,cache.direct=on"
        return ["-blockdev", node, "-device", f"virtio-blk-pci,drive=blk0,num-queues={num_queues}"]

    def summarise(self, rid, desc, backend, measure, s):
        keys = {"iops": ["iops"], "bw": ["mb_s"], "lat": ["p50_us", "p99_us"]}[measure]
        row = {"id": rid, "description": desc, "backend": backend, "measure": measure, "samples": s}
        key = keys[0]
        c = [x[key] for x in s["c"]]
        r = [x[key] for x in s["rust"]]
        if measure == "lat":
            ratios = [ci_ / ri for ci_, ri in zip(c, r)]  # lower latency is better
        else:
            ratios = [ri / ci_ for ci_, ri in zip(c, r)]
        m, lo, hi = ci(ratios)
        row.update({"ratio": m, "ci_low": lo, "ci_high": hi, "n": len(ratios), "sd_log": sd_of_logs(ratios)})
        for d in ("c", "rust", "blk"):
            for k in keys + ["kb_per_req", "merges_per_req"]:
                vals = [x[k] for x in s[d] if k in x]
                row[f"{d}_{k}"] = statistics.median(vals) if vals else None
        return row

    def run_icount(self):
        """Guest instructions per I/O on null-co, one vCPU, icount: one row per entry of
        --icount-rows, every row run with each driver in each round (C and Rust in the same
        boot, the order alternating)."""
        a = self.args
        rows = [ICOUNT_ROWS[r] for r in a.icount_rows.split(",")]
        topo = Topology([Controller(num_queues=1, disks=[Disk(backend="null", size=4 << 30)])],
                        extra_args=self.blk_args("null", 4 << 30, 1))
        g = self.guest("icount", topo, smp=1, append="scsi_mod.scan=manual",
                       qemu_args=["-icount", "shift=0,sleep=off"], accel="tcg")
        per_io = {row[0]: {"c": [], "rust": []} for row in rows}
        try:
            self.setup(g)
            # Busy time = guest clock elapsed minus idle. Under icount the guest clock counts
            # instructions; the idle figure in /proc/stat is exact with NO_HZ (it is measured, not
            # sampled at ticks) and only rounded to 10 ms, while the busy fields are tick samples
            # (a few percent of noise at this length), so they are not used.
            probe = "echo $EPOCHREALTIME $(awk '/^cpu / {print $5+$6}' /proc/stat)"
            for rep in range(a.icount_reps + 1):
                order = ("c", "rust") if rep % 2 == 0 else ("rust", "c")
                for d in order:
                    self.bind(g, d)
                    for rid, _, fio_args, ios_div in rows:
                        ios = a.icount_ios // ios_div
                        fio = (f"fio --name=b --filename=/dev/sda --direct=1 --ioengine=libaio {fio_args}"
                               f" --number_ios={ios} --size=4g --output-format=terse >/dev/null")
                        out = g.sh(f"{probe}; {fio}; {probe}", timeout=3600)
                        (t0, i0), (t1, i1) = (line.split() for line in out.strip().splitlines())
                        busy_ns = (float(t1) - float(t0)) * 1e9 - (int(i1) - int(i0)) * 1e7  # USER_HZ 100
                        if rep > 0:  # the first round warms up
                            per_io[rid][d].append(busy_ns / ios)
                    self.unbind(g, d)
                print(f"  icount: round {rep + 1}/{a.icount_reps + 1} done", flush=True)
        finally:
            g.stop()
        for rid, desc, _, _ in rows:
            s = per_io[rid]
            ratios = [c / r for c, r in zip(s["c"], s["rust"])]
            m, lo, hi = ci(ratios)
            self.rows.append({"id": ICOUNT_IDS[rid], "backend": "null", "measure": "instructions",
                              "description": f"guest instructions per {desc}, icount, 1 vCPU",
                              "samples": s, "ratio": m, "ci_low": lo, "ci_high": hi, "n": len(ratios),
                              "c_instructions": statistics.median(s["c"]),
                              "rust_instructions": statistics.median(s["rust"]), "blk_instructions": None})

    def run_scan(self):
        """Time from bind to 256 LUNs (one target) visible."""
        disks = [Disk(backend="null", size=1 << 20, target=0, lun=i) for i in range(256)]
        g = self.guest("scan256", Topology([Controller(num_queues=2, disks=disks)]))
        times = {"c": [], "rust": []}
        try:
            self.setup(g, blk=False)
            for rep in range(self.args.scan_reps):
                order = ("c", "rust") if rep % 2 == 0 else ("rust", "c")
                for d in order:
                    name = DRIVERS[d][0]
                    out = g.sh(f"s=$(cut -d' ' -f1 /proc/uptime); echo {self.scsi_dev} > /sys/bus/virtio/drivers/{name}/bind;"
                               " until [ $(ls /sys/class/scsi_device | wc -l) -ge 256 ]; do usleep 10000; done;"
                               " e=$(cut -d' ' -f1 /proc/uptime); echo $s $e", timeout=1200)
                    s, e = map(float, out.split())
                    times[d].append(e - s)
                    self.unbind(g, d)
        finally:
            g.stop()
        ratios = [c / r for c, r in zip(times["c"], times["rust"])]
        m, lo, hi = ci(ratios)
        self.rows.append({"id": "scan_256_luns", "backend": "null", "measure": "seconds",
                          "description": "bind and scan of 256 LUNs (guest seconds)", "samples": times,
                          "ratio": m, "ci_low": lo, "ci_high": hi, "n": len(ratios),
                          "c_seconds": statistics.median(times["c"]), "rust_seconds": statistics.median(times["rust"]),
                          "blk_seconds": None})

    # --- output ----------------------------------------------------------------------------------

    def write(self):
        meta = self.meta or {
            "kernel": self.args.kernel, "reps": self.args.reps, "runtime_s": self.args.runtime,
            "queue_limits": self.limits, "mq_scaling": self.scaling, "ramp_s": self.args.ramp,
            "icount_ios": self.args.icount_ios, "argv": sys.argv,
            "fio_pinning": {"one job": PIN_ONE, "two jobs": PIN_SPLIT}, "blk_every": self.args.blk_every,
            "ratio": "> 1 means the Rust driver is better (IOPS, MB/s: Rust/C; latency, instructions, "
                     "seconds: C/Rust); CI: 95 % t interval over paired repetitions"}
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump({"meta": meta, "rows": self.rows}, f, indent=2)
        with open(os.path.join(self.out, "commands.txt"), "w") as f:
            f.write("$ " + " ".join(sys.argv) + "\n\n" + "\n".join(self.commands))
        lines = ["| row | back end | C | Rust | virtio-blk | Rust vs C (95 % CI) | n |", "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['description']} | {r['backend']} | {fmt(r, 'c')} | {fmt(r, 'rust')} | {fmt(r, 'blk')} |"
                         f" {r['ratio']:.3f} ({r['ci_low']:.3f}–{r['ci_high']:.3f}) | {r['n']} |")
        wall = [r for r in self.rows if r["measure"] in ("iops", "bw", "lat")]
        if wall:
            good = [r for r in wall if r["ratio"] >= 1.0 and r["ci_low"] >= 0.97]
            lines += ["", f"Wall-clock rows with a point estimate of at least 1.00 and a lower bound of at least 0.97:"
                          f" {len(good)} of {len(wall)}."]
            sds = sorted(r["sd_log"] for r in wall if r["n"] > 1)
            if sds:
                mid = statistics.median(sds)
                lines += ["", f"Resolution: the standard deviation of a row's paired log ratios is {mid:.3f} (median"
                              f" of the rows; {sds[0]:.3f}–{sds[-1]:.3f}); an interval of ±3 %, which a row at 1.00"
                              f" needs for a lower bound of 0.97, takes {reps_for(mid)} repetitions at the median"
                              f" and {reps_for(sds[-1])} at the widest. At this scatter and these repetitions,"
                              f" the probability that every row meets the bar if the Rust driver were 2 % faster"
                              f" in each is {bar_probability(wall, 1.02):.1e}; 5 % faster, {bar_probability(wall, 1.05):.1e}."]
        if self.scaling:
            lines += ["", "Multiqueue scaling (" + MQ_ROW[1] + ", null-co): median IOPS with 2 request queues over 1:",
                      "", "| driver | 1 queue | 2 queues | 2 / 1 |", "|---|---|---|---|"]
            for x in self.scaling:
                lines.append(f"| {DRIVER_NAMES[x['driver']]} | {x['iops_1q']:,.0f} | {x['iops_2q']:,.0f} |"
                             f" {x['scaling']:.3f} |")
        shaped = [r for r in self.rows if r.get("c_kb_per_req") is not None]
        if shaped:
            lines += ["", "Requests sent to the device (medians; kB per request, bios merged per request):", "",
                      "| row | back end | C | Rust | virtio-blk |", "|---|---|---|---|---|"]
            for r in shaped:
                cells = []
                for d in ("c", "rust", "blk"):
                    kb = r.get(f"{d}_kb_per_req")
                    cells.append("–" if kb is None else f"{kb:.1f} kB, {r[f'{d}_merges_per_req']:.2f}")
                lines.append(f"| {r['description']} | {r['backend']} | " + " | ".join(cells) + " |")
        if self.limits:
            lines += ["", "Queue limits of the disk at bind: "
                      + "; ".join(f"{DRIVER_NAMES[d]}: " + ", ".join(f"{k} {v}" for k, v in lim.items())
                                  for d, lim in sorted(self.limits.items()))]
        costs = [r for r in self.rows if "backend_us_per_io" in r]
        if costs:
            lines += ["", "The vhost-user-scsi back end's own cost (median over both drivers' runs):", "",
                      "| row | back end | CPU per I/O | share of one core |", "|---|---|---|---|"]
            for r in costs:
                lines.append(f"| {r['description']} | {r['backend']} | {r['backend_us_per_io']:.1f} µs |"
                             f" {100 * r['backend_core_share']:.0f} % |")
        table = "\n".join(lines) + "\n"
        with open(os.path.join(self.out, "results.md"), "w") as f:
            f.write("# virtio-scsi-rs benchmark\n\nRatios > 1: the Rust driver is better. " + meta["ratio"] + ".\n\n" + table)
        self.chart()
        print(table)
        print(f"results in {self.out}")

    def chart(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = [f"{r['id']} ({r['backend']})" for r in self.rows]
        ratios = [r["ratio"] for r in self.rows]
        err = [[r["ratio"] - r["ci_low"] for r in self.rows], [r["ci_high"] - r["ratio"] for r in self.rows]]
        fig, ax = plt.subplots(figsize=(10, 0.45 * len(labels) + 1.5))
        ax.barh(labels, ratios, xerr=err, color=["tab:green" if x >= 1 else "tab:orange" for x in ratios])
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xlabel("Rust vs C (> 1: Rust better), 95 % CI")
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(os.path.join(self.out, "chart.png"), dpi=120)


def fmt(row, d):
    m = row["measure"]
    if m == "lat":
        p50, p99 = row.get(f"{d}_p50_us"), row.get(f"{d}_p99_us")
        return "–" if p50 is None else f"{p50:.0f}/{p99:.0f} µs"
    key = {"iops": "iops", "bw": "mb_s", "instructions": "instructions", "seconds": "seconds"}[m]
    v = row.get(f"{d}_{key}")
    if v is None:
        return "–"
    unit = {"iops": " IOPS", "mb_s": " MB/s", "instructions": " instr", "seconds": " s"}[key]
    return f"{v:,.0f}{unit}" if key != "seconds" else f"{v:.2f}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=16)
    ap.add_argument("--blk-every", type=int, default=2,
                    help="run the virtio-blk reference every this many repetitions (it is not paired)")
    ap.add_argument("--runtime", type=int, default=3, help="seconds per fio run")
    ap.add_argument("--ramp", type=int, default=1, help="fio warm-up seconds per run")
    ap.add_argument("--icount-ios", type=int, default=300000)
    ap.add_argument("--icount-reps", type=int, default=5)
    ap.add_argument("--icount-rows", default=",".join(ICOUNT_ROWS),
                    help=f"comma-separated rows of the icount part, of: {', '.join(ICOUNT_ROWS)}")
    ap.add_argument("--scan-reps", type=int, default=3)
    ap.add_argument("--only", default="null,file,poll,mq,vhost-user,icount,scan", help="comma-separated parts to run")
    ap.add_argument("--resummarise", metavar="RESULTS_JSON",
                    help="recompute the tables of an earlier run from its samples, run nothing")
    a = ap.parse_args()
    b = Bench(a)
    if a.resummarise:
        resummarise(b, a.resummarise)
        b.write()
        return

    parts = a.only.split(",")
    t0 = time.time()
    for backend in BACKENDS:
        if backend in parts:
            print(f"== {backend}: {len(ROWS)} rows x {a.reps} repetitions", flush=True)
            b.run_backend(backend, ROWS)
            b.write()
    if "poll" in parts:
        print("== poll queues", flush=True)
        b.run_backend("null", [POLL_ROW], params="virtscsi_poll_queues=1", tag="_poll")
        b.write()
    if "mq" in parts:
        print("== multiqueue scaling", flush=True)
        b.run_mq()
        b.write()
    if "vhost-user" in parts:
        for num_queues in (1, 2):
            print(f"== vhost-user-scsi, {num_queues} request queue(s)", flush=True)
            b.run_vhost_user(num_queues)
            b.write()
    if "icount" in parts:
        print("== icount", flush=True)
        b.run_icount()
        b.write()
    if "scan" in parts:
        print("== scan", flush=True)
        b.run_scan()
    b.write()
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
