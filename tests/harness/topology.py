# SPDX-License-Identifier: GPL-2.0
"""Describes the virtio-scsi topology a test asks for, and turns it into QEMU arguments."""

import os
from dataclasses import dataclass, field

GiB = 1 << 30


@dataclass
class Disk:
    """One SCSI device on a controller.

    backend: "null" (null-co), "file" (raw file, O_DIRECT, native AIO), "qcow2"
    (a qcow2 file at `path`, O_DIRECT, native AIO: an overlay on a disk image
    a test must not change), "cd" (scsi-cd on a read-only file) or "iscsi"
    (QEMU's libiscsi driver; `blockdev` gives portal, target, lun and
    initiator-name, see harness/iscsi.py). For "file" without `path`, a
    sparse image of `size` bytes is created in the guest's work directory.

    device: the QEMU SCSI device, if not the backend's own (scsi-hd, scsi-cd; scsi-block for
    "iscsi"): scsi-block or scsi-generic pass the LUN through.
    """

    backend: str = "null"
    size: int = GiB
    target: int = 0
    lun: int = 0
    path: str | None = None
    read_zeroes: bool = True
    props: dict = field(default_factory=dict)
    id: str | None = None
    blockdev: dict = field(default_factory=dict)
    device: str | None = None


@dataclass
class Controller:
    """One virtio-scsi-pci controller and its disks."""

    id: str = "vs0"
    num_queues: int | None = None
    virtqueue_size: int | None = None
    iothread: bool = False
    disks: list = field(default_factory=list)
    props: dict = field(default_factory=dict)
    root_port: bool = False


@dataclass
class VhostUserController:
    """One vhost-user-scsi-pci controller served by our back end (tools/vhost-user-scsi) in a
    process of its own, started by the guest before QEMU.

    profile: the back end's behaviour profile (qemu, vhost-scsi, minimal, bidi-pi); QEMU's side of
    the profile (queue count and size, HOTPLUG, CHANGE, T10_PI) follows from it unless `props` say
    otherwise. luns: the back end's LUN specs, "T:L:MiB[:disk|disk+pi|cdrom|null|file=PATH]".
    """

    id: str = "vu0"
    profile: str = "qemu"
    num_queues: int | None = None
    luns: list = field(default_factory=lambda: ["0:0:64"])
    props: dict = field(default_factory=dict)
    backend_args: list = field(default_factory=list)

    def queues(self):
        return self.num_queues or (1 if self.profile == "minimal" else 2)

    def device_props(self):
        props = {"id": self.id, "chardev": f"{self.id}-chr", "num_queues": self.queues()}
        if self.profile == "minimal":
            props.update({"virtqueue_size": 16, "hotplug": False, "param_change": False})
        if self.profile == "bidi-pi":
            props["t10_pi"] = True
        props.update(self.props)
        return props

    def backend_cmdline(self, binary, sockdir):
        cmd = [binary, "--socket", self.socket(sockdir), "--control", self.control(sockdir)]
        cmd += ["--profile", self.profile, "--queues", str(self.queues())]
        for spec in self.luns:
            cmd += ["--lun", spec]
        return cmd + list(self.backend_args)

    def socket(self, sockdir):
        return os.path.join(sockdir, f"{self.id}.sock")

    def control(self, sockdir):
        return os.path.join(sockdir, f"{self.id}.ctl")

    def targets(self):
        return {int(spec.split(":")[0]) for spec in self.luns}


@dataclass
class Rng:
    """One virtio-rng-pci device (an entropy source, virtio device id 4), for the virtio-rng
    sample's tests. props: the device's properties, e.g. QEMU's rate limit (`max-bytes` per
    `period` milliseconds)."""

    id: str = "rng0"
    props: dict = field(default_factory=dict)


@dataclass
class Topology:
    controllers: list = field(default_factory=lambda: [Controller()])
    extra_args: list = field(default_factory=list)
    rngs: list = field(default_factory=list)

    def vhost_user(self):
        """The vhost-user-scsi controllers (each needs a back end and shared guest memory)."""
        return [c for c in self.controllers if isinstance(c, VhostUserController)]

    def qemu_args(self, workdir, sockdir=None):
        args = []
        port = 0
        for c in self.controllers:
            if isinstance(c, VhostUserController):
                args += ["-chardev", f"socket,id={c.id}-chr,path={c.socket(sockdir)}"]
                args += ["-device", "vhost-user-scsi-pci," + _join(c.device_props())]
                continue
            props = {"id": c.id}
            if c.num_queues is not None:
                props["num_queues"] = c.num_queues
            if c.virtqueue_size is not None:
                props["virtqueue_size"] = c.virtqueue_size
            if c.iothread:
                args += ["-object", f"iothread,id={c.id}-io"]
                props["iothread"] = f"{c.id}-io"
            if c.root_port:
                rp = f"{c.id}-rp"
                args += ["-device", f"pcie-root-port,id={rp},chassis={port + 1},slot={port + 1}"]
                props["bus"] = rp
                port += 1
            props.update(c.props)
            args += ["-device", "virtio-scsi-pci," + _join(props)]
            for n, d in enumerate(c.disks):
                args += _disk_args(c, n, d, workdir)
        for r in self.rngs:
            args += ["-device", "virtio-rng-pci," + _join({"id": r.id, **r.props})]
        return args + list(self.extra_args)

    def images(self, workdir):
        """[(path, size)] of the disk images `qemu_args(workdir)` creates (file disks without a
        path of their own)."""
        return [
            (os.path.join(workdir, f"{c.id}-n{n}.img"), d.size)
            for c in self.controllers
            if isinstance(c, Controller)
            for n, d in enumerate(c.disks)
            if d.backend == "file" and d.path is None
        ]

    def targets(self):
        """The target ids that have at least one disk."""
        found = set()
        for c in self.controllers:
            found |= c.targets() if isinstance(c, VhostUserController) else {d.target for d in c.disks}
        return found


def _join(props):
    return ",".join(f"{k}={_fmt(v)}" for k, v in props.items())


def _fmt(v):
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


def _disk_args(ctrl, n, d, workdir):
    node = f"{ctrl.id}-n{n}"
    dev_id = d.id or f"{ctrl.id}-d{n}"
    if d.backend == "null":
        blockdev = {"node-name": node, "driver": "null-co", "size": d.size, "read-zeroes": d.read_zeroes}
        devtype = "scsi-hd"
    elif d.backend == "qcow2":
        blockdev = {"node-name": node, "driver": "qcow2", "file.driver": "file", "file.filename": d.path}
        blockdev.update({"file.aio": "native", "file.cache.direct": True})
        devtype = "scsi-hd"
    elif d.backend in ("file", "cd"):
        path = d.path
        if path is None:
            path = os.path.join(workdir, f"{node}.img")
            with open(path, "wb") as f:
                f.truncate(d.size)
        blockdev = {"node-name": node, "driver": "file", "filename": path}
        if d.backend == "file":
            blockdev.update({"aio": "native", "cache.direct": True})
            devtype = "scsi-hd"
        else:
            blockdev["read-only"] = True
            devtype = "scsi-cd"
    elif d.backend == "iscsi":
        blockdev = {"node-name": node, "driver": "iscsi"}
        devtype = "scsi-block"
    else:
        raise ValueError(f"unknown disk backend {d.backend!r}")
    blockdev.update(d.blockdev)
    devtype = d.device or devtype
    dev = {"drive": node, "bus": f"{ctrl.id}.0", "channel": 0, "scsi-id": d.target, "lun": d.lun, "id": dev_id}
    dev.update(d.props)
    return ["-blockdev", _join(blockdev), "-device", f"{devtype}," + _join(dev)]
