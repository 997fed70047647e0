# SPDX-License-Identifier: GPL-2.0
"""A QEMU guest driven by the host: boot, run commands, QMP, kernel report checks."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from . import splat
from .topology import Topology

QEMU = os.environ.get("VSCSI_QEMU", "qemu-system-x86_64")

# Our vhost-user-scsi back end (tools/vhost-user-scsi), built by `make check`.
VHOST_USER_SCSI = os.environ.get(
    "VSCSI_VHOST_USER_SCSI",
    os.path.join(os.path.dirname(__file__), "..", "..", "tools", "target", "release", "vhost-user-scsi"),
)

# Every feature TCG can emulate but 5-level paging. With LA57, 3 of 51 boots of one parallel run
# failed the same way before init: an interrupt taken inside identify_cpu() (start_kernel), and
# KASAN reporting a wild-memory-access in handle_edge_irq() at a 5-level direct-map address. While
# identify_cpu() re-reads the CPU's feature bits, the LA57 bit the kernel's address checks depend
# on reads as clear; on a loaded host a timer interrupt lands in that window now and then.
CPU = "max,la57=off"
# A command still running this many seconds after an unexpected kernel report is given up on
# (see Guest._watched); the console is looked at every REPORT_POLL seconds meanwhile.
STUCK_AFTER_REPORT = 20
REPORT_POLL = 2

# Module file and driver name of each driver under test.
DRIVERS = {
    "rust": ("virtio_scsi_rs", "/lib/modules/virtio_scsi_rs.ko"),
    "c": ("virtio_scsi", "/lib/modules/virtio_scsi.ko"),
}


def poll_loop(condition, timeout, on_timeout="exit 1"):
    """A guest script that checks the shell `condition` until it holds, and runs `on_timeout`
    after `timeout` seconds of guest time. Between two checks it naps with the command server's
    `nap_after` (scripts/guest/serve): no process, and three times as long as the check took
    (0.1 to 1 s), because a check that starts programs costs its guest about 0.1 s of a vCPU
    each under TCG, which a poll at a fixed 50 ms took from the very work it waited for."""
    return (f"read -r up _ < /proc/uptime; end=$(( ${{up%.*}} + {int(timeout)} ));"
            f" until t=${{EPOCHREALTIME/./}}; {condition}; do"
            f" read -r up _ < /proc/uptime; [ ${{up%.*}} -ge $end ] && {{ {on_timeout}; }}; nap_after $t; done")


def load_both_unbound(g, params=""):
    """Loads both drivers (with module parameters `params`) and unbinds the virtio-scsi device
    from the one that took it, so that a benchmark can bind each in turn; returns the device's
    name on the virtio bus."""
    for d in ("c", "rust"):
        g.sh(f"insmod {DRIVERS[d][1]} {params}".rstrip())
    dev = None
    for name, _ in DRIVERS.values():
        found = g.sh(f"cd /sys/bus/virtio/drivers/{name} && ls -d virtio* 2>/dev/null || true").split()
        if found:
            dev = found[0]
            g.sh(f"echo {dev} > /sys/bus/virtio/drivers/{name}/unbind")
    if not dev:
        raise GuestError("no virtio-scsi device bound")
    return dev


class GuestError(Exception):
    """The guest died, timed out or answered something unexpected."""


class StuckAfterReport(Exception):
    def __init__(self, report):
        super().__init__(report.line)
        self.report = report


class CommandFailed(AssertionError):
    def __init__(self, script, rc, output):
        super().__init__(f"guest command exited {rc}: {script.strip()}\n--- output ---\n{output}")
        self.rc = rc
        self.output = output


class BootFailure(GuestError):
    """The guest did not come up: QEMU or the kernel failed before init was ready, before any
    test step ran (no test module is loaded at that point)."""


class BootReport(BootFailure):
    """The guest kernel printed a report while booting, before any test step ran."""

    def __init__(self, reports, log):
        body = "\n\n".join(str(r) for r in reports)
        super().__init__(f"kernel report(s) while booting, before the test did anything (log: {log}):\n{body}")
        self.reports = reports


# QMP commands that leave QEMU's state as it was; any other command makes the guest unfit to be
# shared with a later test (its topology is no longer what the next test asked for).
_READ_ONLY_QMP = ("qmp_capabilities", "query-")


class KernelReport(AssertionError):
    """The guest kernel printed a WARN, BUG, Oops, KASAN, lockdep, hung-task or leak report."""

    def __init__(self, reports, log):
        body = "\n\n".join(str(r) for r in reports)
        super().__init__(f"{len(reports)} kernel report(s) in the guest (log: {log}):\n{body}")
        self.reports = reports


def accel():
    """KVM only where it can run a standard guest: /dev/kvm alone is not enough (a PVM host
    exposes /dev/kvm without vmx/svm and such guests never boot); otherwise multi-threaded TCG."""
    forced = os.environ.get("VSCSI_ACCEL")
    if forced:
        return forced
    try:
        with open("/proc/cpuinfo") as f:
            flags = re.search(r"^flags\s*:(.*)$", f.read(), re.M)
    except OSError:
        flags = None
    if os.access("/dev/kvm", os.R_OK | os.W_OK) and flags and re.search(r"\b(vmx|svm)\b", flags.group(1)):
        return "kvm"
    return "tcg,thread=multi"


class _LineSocket:
    """Line-oriented reads with deadlines over a connected stream socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError from None
        if not chunk:
            raise EOFError
        self.buf += chunk

    def readline(self, deadline):
        while b"\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace").rstrip("\r")

    def readexact(self, n, deadline):
        """Exactly `n` bytes."""
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, data):
        self.sock.sendall(data)


class Guest:
    """One QEMU guest. Use `start()`, then `run()`, `qmp()`, `check_reports()`, `stop()`."""

    # A harness/cpus.py CpuGate that `start` takes the guest's vCPU slots from and `stop` gives
    # them back to (set by the pytest plugin on xdist workers; None: no limit).
    cpu_gate = None

    def __init__(
        self, kernel, initrd, logdir, topology=None, smp=2, mem="1G", append="", qemu_args=(), interactive=False,
        trace=(),
    ):
        self.kernel = kernel
        self.initrd = initrd
        self.logdir = logdir
        self.topology = topology or Topology()
        self.smp = smp
        self.mem = mem
        self.append = append
        self.extra = list(qemu_args)
        # QEMU trace events (patterns) to write to trace.log in the guest's log directory: a boot
        # that is tried again starts with an empty one (the harness clears the directory), and
        # the failed boot's copy keeps its own.
        self.trace = tuple(trace)
        self.trace_path = os.path.join(logdir, "trace.log")
        # Interactive: the console is this process's terminal (for `make run`).
        self.interactive = interactive
        self.proc = None
        self.ctl = None
        self.qmp_sock = None
        self.qmp_events = []
        self.expected = []  # regexes of reports a test provokes on purpose
        self.console = os.path.join(logdir, "console.log")
        self.transcript = os.path.join(logdir, "commands.log")
        self._seq = 0
        self._console_pos = 0
        self._sockdir = None
        self.dead = False
        # QEMU's state was changed over QMP (device_add, block_resize, ...).
        self.mutated = False
        # Back-end processes of vhost-user controllers: {controller id: Popen}.
        self.backends = {}
        # Targets to scan after a driver loads, when the guest boots with scsi_mod.scan=manual on
        # the harness's behalf (see `load_driver`); None: the midlayer scans every target itself.
        self.scan_targets = None
        self._lease = None
        # QEMU exits when the guest reboots (-no-reboot): a test guest never reboots on purpose,
        # and a panic (panic=-1) then ends it. A guest that reboots (the distro guest) clears it.
        self.no_reboot = True
        self.boot_reports_fail = True
        self._cpu_slots = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def qemu_cmdline(self, ctl_path, qmp_path, sockdir=None):
        append = " ".join(
            [
                "console=ttyS0,115200",
                "panic=-1",
                "loglevel=8",
                "log_buf_len=4M",
                "hung_task_timeout_secs=60",
                "kmemleak=on",
                self.append,
            ]
        )
        return (
            [QEMU, "-M", "q35", "-accel", accel(), "-cpu", CPU, "-smp", str(self.smp), "-m", self.mem]
            + self._shared_memory_args()
            + ["-nodefaults", "-display", "none"]
            + (["-no-reboot"] if self.no_reboot else [])
            + ["-kernel", self.kernel, "-initrd", self.initrd, "-append", " ".join(append.split())]
            # Interactive, a multiplexed stdio: Ctrl-A X ends QEMU.
            + ["-chardev", "stdio,id=con,mux=on,signal=off" if self.interactive else f"file,id=con,path={self.console}"]
            + ["-serial", "chardev:con"]
            + ["-chardev", f"socket,id=ctl,path={ctl_path}", "-serial", "chardev:ctl"]
            + ["-chardev", f"socket,id=qmp,path={qmp_path}", "-mon", "chardev=qmp,mode=control"]
            + self.topology.qemu_args(self.logdir, sockdir)
            + self._trace_args()
            + self.extra
        )

    def _trace_args(self):
        args = [a for event in self.trace for a in ("-trace", f"enable={event}")]
        if args:
            args[-1] += f",file={self.trace_path}"  # QEMU keeps the last -trace option's file= only
        return args

    def trace_lines(self):
        """The lines of this guest's QEMU trace (`trace`); whole once QEMU has exited."""
        try:
            with open(self.trace_path, errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def _shared_memory_args(self):
        # A vhost-user back end maps guest RAM: it must be shared memory.
        if not self.topology.vhost_user():
            return []
        return ["-object", f"memory-backend-memfd,id=mem,size={self.mem},share=on", "-numa", "node,memdev=mem"]

    def _start_backends(self, sockdir, timeout=30):
        for c in self.topology.vhost_user():
            log = open(os.path.join(self.logdir, f"vhost-user-{c.id}.log"), "w")
            cmd = c.backend_cmdline(VHOST_USER_SCSI, sockdir)
            log.write(" ".join(cmd) + "\n")
            log.flush()
            self.backends[c.id] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            deadline = time.monotonic() + timeout
            while not (os.path.exists(c.socket(sockdir)) and os.path.exists(c.control(sockdir))):
                if self.backends[c.id].poll() is not None or time.monotonic() > deadline:
                    raise GuestError(f"vhost-user-scsi back end {c.id} did not start (see {self.logdir})")
                time.sleep(0.02)

    def _stop_backends(self, timeout=10):
        # Each back end exits once QEMU has gone; one that does not is killed.
        for proc in self.backends.values():
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.backends = {}

    def backend(self, command, controller="vu0", timeout=30):
        """Sends one command to a vhost-user back end's control socket; returns its answer (an
        error answer raises). What a command changes, `reset` (see `Guest.reset`) undoes."""
        c = next(c for c in self.topology.vhost_user() if c.id == controller)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(c.control(self._sockdir))
            s.sendall(command.encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        answer = answer.decode().strip()
        if not answer.startswith("ok"):
            raise AssertionError(f"back end {controller}: {command!r} -> {answer!r}")
        return answer

    def cpu_slots(self):
        """The host threads the guest keeps busy: its vCPUs and its vhost-user back ends."""
        return self.smp + len(self.topology.vhost_user())

    def reserve_cpus(self):
        """Waits for the guest's vCPU slots (see `cpu_gate`); `start` does it if not done."""
        if self.cpu_gate is not None and not self._cpu_slots:
            self._cpu_slots = self.cpu_gate.acquire(self.cpu_slots(), self.logdir)

    def start(self, boot_timeout=180):
        os.makedirs(self.logdir, exist_ok=True)
        self.reserve_cpus()
        # Unix socket paths are limited to 108 bytes: keep them short.
        self._sockdir = tempfile.mkdtemp(prefix="vscsi-")
        ctl_path = os.path.join(self._sockdir, "ctl")
        qmp_path = os.path.join(self._sockdir, "qmp")
        listeners = []
        for path in (ctl_path, qmp_path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            s.listen(1)
            s.settimeout(30)
            listeners.append(s)
        cmd = self.qemu_cmdline(ctl_path, qmp_path, self._sockdir)
        self._start_backends(self._sockdir)
        with open(os.path.join(self.logdir, "qemu.cmdline"), "w") as f:
            f.write(" ".join(cmd) + "\n")
        self.qemu_log = open(os.path.join(self.logdir, "qemu.log"), "w")
        if self.interactive:
            self.proc = subprocess.Popen(cmd, stderr=self.qemu_log)
        else:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.qemu_log, stderr=subprocess.STDOUT)
        try:
            conns = []
            for s in listeners:
                try:
                    c, _ = s.accept()
                except socket.timeout:
                    raise GuestError(f"QEMU did not connect (see {self.logdir}/qemu.log)") from None
                conns.append(c)
        finally:
            for s in listeners:
                s.close()
        self.ctl = _LineSocket(conns[0])
        self.qmp_sock = _LineSocket(conns[1])
        deadline = time.monotonic() + 30
        greeting = json.loads(self.qmp_sock.readline(deadline))
        assert "QMP" in greeting, greeting
        self.qmp("qmp_capabilities")
        deadline = time.monotonic() + boot_timeout
        try:
            while True:
                line = self._ctl_readline(deadline, "boot")
                if line.startswith("@@READY"):
                    break
        except GuestError as e:
            raise BootFailure(f"{e} (QEMU log: {self.logdir}/qemu.log)") from None
        # Reports printed while booting belong to the kernel and the emulator, not to the test,
        # which has not started; the caller decides whether to boot again. Where the drivers
        # under test bind during the boot (the distro guest), they are the test's: the kernel
        # log of the boot is checked with the test's.
        if self.boot_reports_fail:
            boot = splat.find_reports(self._new_console_text())
            if boot:
                raise BootReport(boot, self.console)
        return self

    def stop(self, timeout=60):
        """Powers the guest off (or kills it if it does not answer)."""
        if self.proc is None:
            self._stop_backends(timeout=0)
            self._release_cpus()
            return
        try:
            if self.proc.poll() is None and self.ctl and not self.dead:
                if self._peek_report() is not None:
                    # A guest with a report is often wedged (a queue that never drains holds up
                    # the disks' shutdown): its test fails anyway, the console keeps what the
                    # shutdown printed.
                    timeout = min(timeout, STUCK_AFTER_REPORT)
                try:
                    self.ctl.send(b"@@POWEROFF\n")
                    self.proc.wait(timeout=timeout)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._stop_backends()
            self.qemu_log.close()
            if self._sockdir:
                shutil.rmtree(self._sockdir, ignore_errors=True)
            self._release_cpus()

    def _release_cpus(self):
        if self._cpu_slots:
            self.cpu_gate.release(self._cpu_slots)
            self._cpu_slots = 0

    def alive(self):
        return not self.dead and self.proc is not None and self.proc.poll() is None

    # --- sharing one guest between tests ---------------------------------------------------------

    def attach(self, logdir):
        """Starts a test's lease of this (shared) guest: its commands and its slice of the console
        go to `logdir`, so that every test keeps its own logs."""
        os.makedirs(logdir, exist_ok=True)
        try:
            start = os.path.getsize(self.console)
        except OSError:
            start = 0
        self._lease = (logdir, start)
        self.transcript = os.path.join(logdir, "commands.log")
        self.expected = []
        self.scan_targets = None
        with open(os.path.join(logdir, "guest.txt"), "w") as f:
            f.write(f"shared guest, console from byte {start} of {self.console}\n")
        shutil.copy(os.path.join(self.logdir, "qemu.cmdline"), logdir)

    def detach(self):
        """Ends the lease: copies the console written during it into the test's log directory."""
        if not self._lease:
            return
        logdir, start = self._lease
        self._lease = None
        try:
            with open(self.console, "rb") as src, open(os.path.join(logdir, "console.log"), "wb") as dst:
                src.seek(start)
                shutil.copyfileobj(src, dst)
        except OSError:
            pass

    def reset(self, timeout=120):
        """Brings a guest back to its state after boot, for the next test: every process the tests
        started is killed, every virtio-scsi and virtio-rng driver unloaded (so every SCSI host is
        gone), /tmp emptied, the disk images the topology created are zeroed, and vhost-user back
        ends are reset (their LUNs as first set up, fresh, no fault, no pending event). Returns
        None, or why the guest cannot be reused."""
        if not self.alive():
            return "the guest is not running"
        if self.mutated:
            return "QEMU's state was changed over QMP"
        rc, out = self.run(
            # Every process but init, this script and init's reader of the command port.
            "read -r reader < /run/serve-reader\n"
            "for p in /proc/[0-9]*; do\n"
            "  pid=${p#/proc/}\n"
            "  [ $pid = 1 ] || [ $pid = $BASHPID ] || [ $pid = \"$reader\" ] || kill -9 $pid 2>/dev/null\n"
            "done\n"
            "umount -a -t ext4,iso9660 2>/dev/null\n"
            + poll_loop(
                "{ left=; for m in virtio_scsi_rs_kunit virtio_scsi_rs virtio_scsi virtio_rng_rs virtio_rng; do"
                " [ -e /sys/module/$m ] && { rmmod $m 2>/dev/null || left=\"$left $m\"; }; done; [ -z \"$left\" ]; }",
                60,
                on_timeout='echo "still loaded:$left"; exit 1',
            )
            + "\n"
            "[ -z \"$(ls /sys/class/scsi_host)\" ] || { echo 'SCSI hosts left:' $(ls /sys/class/scsi_host); exit 1; }\n"
            "cd / && rm -rf /tmp/* /mnt/* && echo 3 > /proc/sys/vm/drop_caches",
            timeout=timeout,
            check=False,
        )
        if rc != 0:
            return f"reset failed ({rc}): {out.strip()}"
        for path, size in self.topology.images(self.logdir):
            with open(path, "r+b") as f:
                f.truncate(0)
                f.truncate(size)
        for c in self.topology.vhost_user():
            try:
                self.backend("reset", c.id)
            except AssertionError as e:
                return f"the back end could not be reset: {e}"
        self.mutated = False
        return None

    def shell(self):
        """Hands the console to an interactive shell and waits until the guest powers off."""
        self.ctl.send(b"@@SHELL\n")
        self.proc.wait()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._stop_backends()
        self.dead = True

    # --- commands --------------------------------------------------------------------------------

    def _ctl_readline(self, deadline, what):
        return self._ctl(lambda: self.ctl.readline(deadline), what)

    def _ctl(self, read, what):
        try:
            return read()
        except TimeoutError:
            self.dead = True
            raise GuestError(f"guest timed out during {what} (console: {self.console})") from None
        except EOFError:
            self.dead = True
            raise GuestError(f"guest went away during {what} (console: {self.console})") from None
        except StuckAfterReport as e:
            self.dead = True
            raise GuestError(
                f"guest stuck during {what} for {STUCK_AFTER_REPORT} s after a kernel report:"
                f" {e.report.line} (console: {self.console})"
            ) from None

    def _watched(self, read, deadline):
        """`read(deadline)`, but a command that has not ended STUCK_AFTER_REPORT seconds after an
        unexpected kernel report appeared on the console raises StuckAfterReport: the report
        fails the test anyway, and waiting out the command's whole timeout (a requeue loop, a
        lost completion) would only cost the run minutes."""
        seen = None
        while True:
            step = min(deadline, time.monotonic() + REPORT_POLL)
            try:
                return read(step)
            except TimeoutError:
                if step >= deadline:
                    raise
            if seen is None:
                report = self._peek_report()
                if report is not None:
                    seen = (time.monotonic(), report)
            elif time.monotonic() - seen[0] >= STUCK_AFTER_REPORT:
                raise StuckAfterReport(seen[1])

    def _peek_report(self):
        """The first unexpected kernel report printed since the last collection, if any; the
        console is left for `collect_reports` to judge."""
        try:
            with open(self.console, errors="replace") as f:
                f.seek(self._console_pos)
                text = f.read()
        except FileNotFoundError:
            return None
        return next(iter(self._unexpected(splat.find_reports(text))), None)

    def _unexpected(self, reports):
        """The reports no `expect_report` regex matches."""
        return [r for r in reports if not any(e.search(r.line) or e.search(r.context) for e in self.expected)]

    def run(self, script, timeout=120, check=True):
        """Runs a shell script in the guest; returns (exit status, output). With `check`, a
        non-zero exit status raises CommandFailed."""
        if self.dead:
            raise GuestError("guest is dead")
        self._seq += 1
        seq = self._seq
        payload = script.encode()
        t0 = time.monotonic()
        self.ctl.send(f"{seq} {len(payload)}\n".encode() + payload)
        deadline = t0 + timeout
        what = f"command {script.strip()[:60]!r}"
        line = lambda: self._ctl(lambda: self._watched(self.ctl.readline, deadline), what)  # noqa: E731
        while not (m := re.fullmatch(rf"@@BEGIN {seq} (\d+)", line())):
            pass
        n = int(m.group(1))
        output = self._ctl(lambda: self._watched(lambda d: self.ctl.readexact(n, d), deadline), what)
        output = output.decode(errors="replace")
        m = re.fullmatch(rf"@@END {seq} (\d+)", line())
        if not m:
            self.dead = True
            raise GuestError(f"guest answered out of step during {what} (console: {self.console})")
        rc = int(m.group(1))
        with open(self.transcript, "a") as f:
            f.write(f"$ {script.strip()}\n{output}[exit {rc}, {time.monotonic() - t0:.2f}s]\n\n")
        if check and rc != 0:
            raise CommandFailed(script, rc, output)
        return rc, output

    def sh(self, script, **kw):
        """Runs a script that must succeed; returns its output."""
        return self.run(script, **kw)[1]

    def wait_disks(self, n, timeout=30, what=None):
        """Waits until the guest has `n` SCSI disks, each with its block device: sd probes a disk
        asynchronously, so its scsi_disk shows before its block device (and size) does."""
        self.wait_for(f"[ $(ls /sys/class/scsi_disk | wc -l) -eq {n} ] &&"
                      f" [ $(ls -d /sys/class/scsi_disk/*/device/block/* 2>/dev/null | wc -l) -eq {n} ]",
                      timeout=timeout, what=what or f"{n} SCSI disks")

    def wait_for(self, condition, timeout=30, what=None, diagnose=None):
        """Polls a shell condition in the guest until it holds; fails after `timeout` seconds of
        guest time. On a timeout the output of the `diagnose` script, if given, joins the error
        (the guest's state when the wait gave up)."""
        rc, out = self.run(poll_loop(condition, timeout), timeout=timeout + 60, check=False)
        if rc != 0:
            state = ""
            if diagnose:
                try:
                    state = "\n" + self.run(f"( {diagnose} ) 2>&1", timeout=60, check=False)[1]
                except GuestError as e:  # the timeout stays the error; the diagnosis is extra
                    state = f"\n(no diagnosis: {e})"
            raise AssertionError(f"timed out after {timeout}s waiting for: {what or condition}{state}")

    def start_fio_rounds(self, tag, job, seconds=5):
        """Starts `job` (a fio command line, time-based without a runtime) in the background, in
        rounds of `seconds` until `stop_fio_rounds(tag)`. Each round ends by itself and must exit
        0 (a verify job checks its data at its end); the first that does not ends the loop, its
        log kept in /tmp/<tag>.log. No signal stops fio: fio 3.33 does unsafe work in its
        SIGINT handler, and a signalled fio once did not exit (Documentation/testing.rst)."""
        self.sh(f"rm -f /tmp/{tag}.stop /tmp/{tag}.rc; (n=0; rc=0; while [ ! -e /tmp/{tag}.stop ]; do"
                f" n=$((n + 1)); {job} --runtime={seconds} > /tmp/{tag}.log 2>&1 || {{ rc=$?; break; }}; done;"
                f" echo $rc $n > /tmp/{tag}.rc) &")

    def end_fio_rounds(self, tag, dev, timeout=60):
        """Ends a `start_fio_rounds` loop after its current round, or finds it ended by a round
        that failed; returns (the last round's exit status, the number of rounds). The last
        round's log is /tmp/<tag>.log."""
        self.sh(f"touch /tmp/{tag}.stop")
        self.wait_for(f"[ -e /tmp/{tag}.rc ]", timeout=timeout, what=f"fio rounds '{tag}' to end",
                      diagnose=self.io_state(dev, log=f"/tmp/{tag}.log"))
        rc, rounds = (int(w) for w in self.sh(f"cat /tmp/{tag}.rc").split())
        return rc, rounds

    def stop_fio_rounds(self, tag, dev, timeout=60):
        """`end_fio_rounds`, requiring every round to have exited 0. Returns the number of
        rounds."""
        rc, rounds = self.end_fio_rounds(tag, dev, timeout)
        assert rc == 0, f"fio round {rounds} of '{tag}' exited {rc}:\n" + self.sh(f"cat /tmp/{tag}.log")
        return rounds

    @staticmethod
    def io_state(dev, log=None):
        """A `diagnose` script for a wait on I/O: the fio processes and where they sleep, the
        in-flight counts of the disk `dev` (a name or a glob), blk-mq's state of its queues, the
        Rust driver's queue counters, and the tail of a log file."""
        tail = f"echo '== {log}'; tail -n 30 {log};" if log else ""
        return (f"{tail} for p in $(pidof fio); do echo \"== fio $p $(cut -d' ' -f3 /proc/$p/stat)"
                f" $(cat /proc/$p/wchan)\"; cat /proc/$p/stack; done;"
                f" for b in /sys/block/{dev}; do d=${{b##*/}};"
                f" echo \"== $d state $(cat $b/device/state) inflight $(cat $b/inflight)\";"
                f" (cd /sys/kernel/debug/block/$d && grep -H . state hctx*/state hctx*/dispatch hctx*/busy"
                f" hctx*/ctx_map hctx*/tags_bitmap hctx*/dispatched 2>/dev/null); done;"
                f" cat /sys/kernel/debug/virtio_scsi_rs/host*/queues 2>/dev/null; true")

    # --- drivers ---------------------------------------------------------------------------------

    def load_driver(self, driver, params=""):
        """insmods the driver (exactly one virtio-scsi driver is ever loaded) and waits until it is
        bound to every virtio-scsi device of the guest."""
        name, path = DRIVERS[driver]
        self.sh(f"insmod {path} {params}")
        n = self.count_scsi_controllers()
        self.wait_for(f"[ $(ls -d /sys/bus/virtio/drivers/{name}/virtio* 2>/dev/null | wc -l) -ge {n} ]",
                      what=f"{name} bound to {n} device(s)")
        self.scan_present_targets()
        return name

    def scan_present_targets(self):
        """With `scan_targets` set (the guest booted with scsi_mod.scan=manual for a test that does
        not check the scan itself), asks every SCSI host to scan those targets, all their LUNs:
        what the midlayer's own scan would find, without probing the absent target ids."""
        if self.scan_targets is None:
            return
        targets = " ".join(str(t) for t in sorted(self.scan_targets))
        if targets:
            self.sh(f"for h in /sys/class/scsi_host/host*; do for t in {targets}; do echo \"0 $t -\" > $h/scan; done; done")

    def rust_control_counters(self, driver):
        """The Rust driver's control-queue counters from debugfs ({} for the C driver)."""
        if driver != "rust":
            return {}
        out = self.sh("cat /sys/kernel/debug/virtio_scsi_rs/host*/queues")
        line = next(line for line in out.splitlines() if line.startswith("control "))
        words = line.split()[1:]
        return {k: int(v) for k, v in zip(words[::2], words[1::2])}

    def count_scsi_controllers(self):
        out = self.sh("cat /sys/bus/virtio/devices/*/device 2>/dev/null || true")
        return sum(1 for line in out.split() if int(line, 16) == 8)

    # --- QMP -------------------------------------------------------------------------------------

    def qmp(self, command, timeout=30, **arguments):
        self.mutated |= not command.startswith(_READ_ONLY_QMP)
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.qmp_sock.send((json.dumps(msg) + "\n").encode())
        return self._qmp_reply(command, time.monotonic() + timeout)

    def qmp_burst(self, commands, timeout=60):
        """Sends every (command, arguments) pair before reading any reply, so QEMU handles them
        back to back (one burst); returns the replies in order. Any error fails."""
        self.mutated |= any(not command.startswith(_READ_ONLY_QMP) for command, _ in commands)
        for command, arguments in commands:
            self.qmp_sock.send((json.dumps({"execute": command, "arguments": arguments}) + "\n").encode())
        deadline = time.monotonic() + timeout
        return [self._qmp_reply(command, deadline) for command, _ in commands]

    def _qmp_reply(self, command, deadline):
        """The next reply (events on the way are kept in `qmp_events`); an error reply raises."""
        while True:
            reply = json.loads(self.qmp_sock.readline(deadline))
            if "event" in reply:
                self.qmp_events.append(reply)
                continue
            if "error" in reply:
                raise GuestError(f"QMP {command} failed: {reply['error']}")
            return reply.get("return")

    # --- kernel reports --------------------------------------------------------------------------

    def expect_report(self, regex):
        """Declares that the test provokes a report whose line matches `regex` on purpose."""
        self.expected.append(re.compile(regex))

    def _new_console_text(self):
        try:
            with open(self.console, errors="replace") as f:
                f.seek(self._console_pos)
                text = f.read()
                self._console_pos = f.tell()
        except FileNotFoundError:
            text = ""
        return text

    def collect_reports(self, leaks=True):
        """Returns the unexpected kernel reports since the last call. A live guest is asked for a
        kmemleak scan (with `leaks`; without, kmemleak forgets what is allocated, unscanned) and
        its kernel log; a dead one is judged from its console log."""
        text = ""
        if not self.dead and self.proc and self.proc.poll() is None:
            scan = "echo scan > $k; cat $k; " if leaks else ""
            try:
                _, text = self.run(
                    "k=/sys/kernel/debug/kmemleak\n"
                    f"if [ -w $k ]; then {scan}echo clear > $k; fi\n"
                    "dmesg -c",
                    timeout=300,
                    check=False,
                )
                self._new_console_text()  # the same messages, already in `text`
            except GuestError:
                text = ""
        if not text:
            text = self._new_console_text()
        reports = splat.find_reports(text)
        return self._unexpected(reports)

    def check_reports(self, leaks=True):
        reports = self.collect_reports(leaks)
        if reports:
            raise KernelReport(reports, self.console)
