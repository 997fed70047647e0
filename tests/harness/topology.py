# SPDX-License-Identifier: GPL-2.0
"""Describes the virtio-scsi topology a test asks for, and turns it into QEMU arguments."""

import os
from dataclasses import dataclass, field

GiB = 1 << 30


@dataclass
class Disk:
    """One SCSI device on a controller.

    backend: "null" (null-co), "file" (raw file, O_DIRECT, native AIO) or "cd"
    (scsi-cd on a read-only file). For "file" without `path`, a sparse image
    of `size` bytes is created in the guest's work directory.
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
class Topology:
    controllers: list = field(default_factory=lambda: [Controller()])
    extra_args: list = field(default_factory=list)

    def qemu_args(self, workdir):
        args = []
        port = 0
        for c in self.controllers:
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
        return args + list(self.extra_args)

    def images(self, workdir):
        """[(path, size)] of the disk images `qemu_args(workdir)` creates (file disks without a
        path of their own)."""
        return [
            (os.path.join(workdir, f"{c.id}-n{n}.img"), d.size)
            for c in self.controllers
            for n, d in enumerate(c.disks)
            if d.backend == "file" and d.path is None
        ]

    def targets(self):
        """The target ids that have at least one disk."""
        return {d.target for c in self.controllers for d in c.disks}


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
    else:
        raise ValueError(f"unknown disk backend {d.backend!r}")
    blockdev.update(d.blockdev)
    dev = {"drive": node, "bus": f"{ctrl.id}.0", "channel": 0, "scsi-id": d.target, "lun": d.lun, "id": dev_id}
    dev.update(d.props)
    return ["-blockdev", _join(blockdev), "-device", f"{devtype}," + _join(dev)]
