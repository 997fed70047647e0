# SPDX-License-Identifier: GPL-2.0
"""The distro guest: Debian bookworm with systemd and dracut on the project's kernel, its root
disk on a virtio-scsi controller, booted as a cloud test VM is (direct kernel boot, the image's
dracut initramfs, root=UUID). See scripts/distro/ and Documentation/testing.rst."""

import os
import subprocess
import threading
import time

from . import splat
from .guest import Guest, GuestError, KernelReport
from .topology import Disk

# What systemd needs to reach multi-user.target on a KASAN kernel under TCG, with margin.
BOOT_TIMEOUT = 900


class DistroImage:
    """The image scripts/distro/mkimage.sh assembled (its OUTDIR)."""

    def __init__(self, path):
        self.path = path
        self.disk = os.path.join(path, "disk.raw")
        self.kernel = os.path.join(path, "vmlinuz")
        self.uuid = self._read("root-uuid")
        self.release = self._read("kernel-release")
        self.part_offset = int(self._read("part-offset"))
        self.part_size = int(self._read("part-size"))

    def _read(self, name):
        with open(os.path.join(self.path, name)) as f:
            return f.read().strip()

    def initrd(self, driver):
        """The dracut initramfs that puts the root disk on `driver`: "rust" is the installed state
        (`make install`), "c" the administrator's way back (modprobe.d file removed, initramfs
        rebuilt)."""
        return os.path.join(self.path, f"initramfs-{driver}.img")

    def append(self):
        """The kernel command line of a cloud VM's boot entry, and `fsck.mode=skip`: the boot-time
        `e2fsck -a` of a clean ext4 only reads its superblock (7 s of the initramfs under TCG, a
        program start being 0.1 s or more), and after a crash the kernel's mount replays the
        journal itself ("recovery complete"). The tests check the filesystem with `e2fsck -fn`
        on the host after the guest powered off, which reads all of it."""
        return f"root=UUID={self.uuid} ro fsck.mode=skip"

    def overlay(self, path):
        """A qcow2 overlay on the image at `path`: the guest writes there, the image stays as
        built. Returns the root disk for a topology (target 0, serial "root")."""
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", self.disk, "-F", "raw", path], check=True
        )
        return Disk(backend="qcow2", path=path, target=0, props={"serial": "root"})

    def fsck(self, overlay, workdir):
        """`e2fsck -fn` of the root filesystem as the overlay has it (the guest is off): returns
        (exit status, output). The partition is read straight out of the overlay (a raw node with
        the partition's offset and size over the qcow2), not the whole disk converted first."""
        part = os.path.join(workdir, "fsck-root.ext4")
        opts = f"driver=raw,offset={self.part_offset},size={self.part_size},file.driver=qcow2,file.file.filename={overlay}"
        try:
            subprocess.run(["qemu-img", "convert", "--image-opts", opts, "-O", "raw", part], check=True)
            r = subprocess.run(["e2fsck", "-fn", part], capture_output=True, text=True)
            return r.returncode, r.stdout + r.stderr
        finally:
            if os.path.exists(part):
                os.unlink(part)


class DistroGuest(Guest):
    """A Guest whose init is systemd: the command server is a unit (vscsi-serve.service) that
    starts with multi-user.target, and the guest may reboot, crash and reboot, and power off by
    itself. Kernel reports are still found: on the console across reboots (`wait_ready`), and in
    the kernel log of the current boot (`check_reports`)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.no_reboot = False
        self.boot_reports_fail = False
        self.boots = []  # seconds from QEMU's start (or the reboot's request) to @@READY

    def start(self, boot_timeout=BOOT_TIMEOUT):
        self.reserve_cpus()  # a wait for the host's cores is not boot time
        t0 = time.monotonic()
        Guest.start(self, boot_timeout=boot_timeout)
        self.boots.append(time.monotonic() - t0)
        return self

    def wait_ready(self, what, timeout=BOOT_TIMEOUT):
        """Waits for the command server of the next boot (after a reboot or a crash): the ctl
        chardev stays connected while the guest reboots, and serve prints @@READY again. The
        console since the last look (the shutdown or the crash, and the new boot) is checked
        for kernel reports the test did not declare."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while not self._ctl_readline(deadline, what).startswith("@@READY"):
            pass
        self.boots.append(time.monotonic() - t0)
        reports = self._unexpected(splat.find_reports(self._new_console_text()))
        if reports:
            raise KernelReport(reports, self.console)

    def reboot(self):
        """`systemctl reboot`, then the next boot's command server."""
        self.run("systemctl --no-block reboot")
        self.wait_ready("reboot")

    def trigger(self, script):
        """Runs `script` detached and returns at once: for a command the guest does not come back
        from (a crash)."""
        self.run(f"setsid -f bash -c {_quote(script)} < /dev/null > /dev/null 2>&1")

    def poweroff(self, timeout=300):
        """`systemctl poweroff` through the command server; QEMU must exit by itself, status 0."""
        self.ctl.send(b"@@POWEROFF\n")
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GuestError(f"the guest did not power off in {timeout} s (console: {self.console})") from None
        self.dead = True
        if rc != 0:
            raise GuestError(f"QEMU exited with status {rc} after the guest's poweroff (log: {self.logdir})")

    def suspend_to_idle(self, timeout=300):
        """Suspends the guest to idle (`echo freeze > /sys/power/state`: every device's suspend
        callback, the driver's freeze with the root disk on it) and wakes it through the command
        port: ttyS1 is made a wakeup source, and the host sends empty lines on it (which serve
        ignores) once the guest has suspended its consoles, until the command returns. QEMU's RTC
        cannot wake a guest from suspend to idle (`rtcwake -m freeze` sleeps for good), and QMP's
        system_wakeup wakes only a guest in S3. Returns the number of suspends so far."""
        self.sh("echo enabled > /sys/class/tty/ttyS1/power/wakeup")
        start = os.path.getsize(self.console)
        done = threading.Event()

        def wake():
            while not done.wait(2):
                with open(self.console, "rb") as f:
                    f.seek(start)
                    if b"Suspending console(s)" in f.read():
                        break
            while not done.wait(3):
                self.ctl.send(b"\n")

        waker = threading.Thread(target=wake, daemon=True)
        waker.start()
        try:
            self.sh("echo freeze > /sys/power/state", timeout=timeout)
        finally:
            done.set()
            waker.join()
        return int(self.sh("cat /sys/power/suspend_stats/success"))

    def journal_reports(self):
        """Unexpected kernel reports in the journal's kernel messages of this boot."""
        return self._unexpected(splat.find_reports(self.sh("journalctl -k -b -o cat --no-pager", timeout=300)))


def _quote(s):
    return "'" + s.replace("'", "'\\''") + "'"
