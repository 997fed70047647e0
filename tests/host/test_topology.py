# SPDX-License-Identifier: GPL-2.0
"""Topologies and guest options turn into the QEMU arguments the reference documents."""

import os
import types

from harness import guest
from harness.topology import Controller, Disk, Rng, Topology, VhostUserController


def args_of(topo, tmp_path):
    return topo.qemu_args(str(tmp_path))


def test_default_is_one_controller_without_disks(tmp_path):
    assert args_of(Topology(), tmp_path) == ["-device", "virtio-scsi-pci,id=vs0"]


def test_disks_and_controller_properties(tmp_path):
    topo = Topology(
        [
            Controller(
                num_queues=4,
                virtqueue_size=1024,
                iothread=True,
                disks=[Disk(), Disk(backend="file", size=1 << 20, target=1, lun=2), Disk(backend="cd", path="/x.iso", target=2)],
            )
        ]
    )
    a = args_of(topo, tmp_path)
    assert a[:4] == ["-object", "iothread,id=vs0-io", "-device", "virtio-scsi-pci,id=vs0,num_queues=4,virtqueue_size=1024,iothread=vs0-io"]
    assert "node-name=vs0-n0,driver=null-co,size=1073741824,read-zeroes=on" in a
    assert "scsi-hd,drive=vs0-n0,bus=vs0.0,channel=0,scsi-id=0,lun=0,id=vs0-d0" in a
    img = os.path.join(str(tmp_path), "vs0-n1.img")
    assert f"node-name=vs0-n1,driver=file,filename={img},aio=native,cache.direct=on" in a
    assert os.path.getsize(img) == 1 << 20
    assert "scsi-hd,drive=vs0-n1,bus=vs0.0,channel=0,scsi-id=1,lun=2,id=vs0-d1" in a
    assert "node-name=vs0-n2,driver=file,filename=/x.iso,read-only=on" in a
    assert "scsi-cd,drive=vs0-n2,bus=vs0.0,channel=0,scsi-id=2,lun=0,id=vs0-d2" in a


def test_rng_devices(tmp_path):
    topo = Topology(controllers=[], rngs=[Rng(), Rng(id="r1", props={"max-bytes": 1024, "period": 1000})])
    assert args_of(topo, tmp_path) == [
        "-device", "virtio-rng-pci,id=rng0", "-device", "virtio-rng-pci,id=r1,max-bytes=1024,period=1000",
    ]


def test_root_port_for_hot_unpluggable_controllers(tmp_path):
    a = args_of(Topology([Controller(id="c1", root_port=True)]), tmp_path)
    assert a == ["-device", "pcie-root-port,id=c1-rp,chassis=1,slot=1", "-device", "virtio-scsi-pci,id=c1,bus=c1-rp"]


def test_vhost_user_controllers_and_their_back_ends(tmp_path):
    topo = Topology([Controller(disks=[Disk(target=4)]), VhostUserController(id="vu1", profile="minimal", luns=["3:5:16:null"])])
    a = topo.qemu_args(str(tmp_path), "/s")
    assert a[-4:] == [
        "-chardev",
        "socket,id=vu1-chr,path=/s/vu1.sock",
        "-device",
        "vhost-user-scsi-pci,id=vu1,chardev=vu1-chr,num_queues=1,virtqueue_size=16,hotplug=off,param_change=off",
    ]
    assert topo.targets() == {3, 4}
    assert topo.images(str(tmp_path)) == []
    assert topo.vhost_user()[0].backend_cmdline("/b", "/s") == [
        "/b", "--socket", "/s/vu1.sock", "--control", "/s/vu1.ctl", "--profile", "minimal", "--queues", "1", "--lun", "3:5:16:null",
    ]
    pi = VhostUserController(profile="bidi-pi", num_queues=3)
    assert pi.device_props() == {"id": "vu0", "chardev": "vu0-chr", "num_queues": 3, "t10_pi": True}
    # Guest RAM is shared memory only when a back end needs to map it.
    g = guest.Guest("k", "i", str(tmp_path), topo, mem="512M")
    cmd = g.qemu_cmdline("/c", "/q", "/s")
    assert cmd[cmd.index("-object") + 1] == "memory-backend-memfd,id=mem,size=512M,share=on"
    assert "node,memdev=mem" in cmd
    assert "-numa" not in guest.Guest("k", "i", str(tmp_path), Topology()).qemu_cmdline("/c", "/q", "/s")


def test_accel_needs_vmx_or_svm(monkeypatch):
    monkeypatch.delenv("VSCSI_ACCEL", raising=False)
    want_kvm = os.access("/dev/kvm", os.R_OK | os.W_OK) and any(
        f in open("/proc/cpuinfo").read().split() for f in ("vmx", "svm")
    )
    assert guest.accel() == ("kvm" if want_kvm else "tcg,thread=multi")
    monkeypatch.setenv("VSCSI_ACCEL", "tcg")
    assert guest.accel() == "tcg"


def test_qcow2_overlay_disk(tmp_path):
    a = args_of(Topology([Controller(disks=[Disk(backend="qcow2", path="/o.qcow2", props={"serial": "root"})])]), tmp_path)
    assert a[2:] == [
        "-blockdev",
        "node-name=vs0-n0,driver=qcow2,file.driver=file,file.filename=/o.qcow2,file.aio=native,file.cache.direct=on",
        "-device",
        "scsi-hd,drive=vs0-n0,bus=vs0.0,channel=0,scsi-id=0,lun=0,id=vs0-d0,serial=root",
    ]
    # Guests reboot only when told (the distro guest): -no-reboot otherwise.
    g = guest.Guest("k", "i", str(tmp_path))
    assert "-no-reboot" in g.qemu_cmdline("/c", "/q", "/s")
    g.no_reboot = False
    assert "-no-reboot" not in g.qemu_cmdline("/c", "/q", "/s")


def test_trace_goes_to_the_guests_log_directory(tmp_path):
    g = guest.Guest("k", "i", str(tmp_path), trace=("virtio_set_status", "virtio_scsi_tmf_*"))
    cmd = g.qemu_cmdline("/c", "/q", "/s")
    traces = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-trace"]
    # QEMU keeps the file= of the last -trace option only.
    assert traces == ["enable=virtio_set_status", f"enable=virtio_scsi_tmf_*,file={tmp_path}/trace.log"]
    assert g.trace_lines() == []
    (tmp_path / "trace.log").write_text("virtio_set_status vdev 0x1 val 1\n")
    assert g.trace_lines() == ["virtio_set_status vdev 0x1 val 1"]
    assert "-trace" not in guest.Guest("k", "i", str(tmp_path)).qemu_cmdline("/c", "/q", "/s")


def test_a_retried_boot_starts_a_trace_of_its_own(tmp_path):
    """A boot that failed before its test started is tried again: the test reads the second
    boot's trace alone, and the failed boot's copy keeps its own (a retried boot's trace once
    held both, and a host reset read as two initialisations)."""
    from harness import plugin

    class FailsOnce(guest.Guest):
        attempts = 0

        def start(self):
            FailsOnce.attempts += 1
            with open(self.trace_path, "a") as f:
                f.write(f"boot {FailsOnce.attempts}\n")
            if FailsOnce.attempts == 1:
                raise guest.BootFailure("the kernel crashed at boot")

        def stop(self, timeout=60):
            pass

    item = types.SimpleNamespace(user_properties=[], nodeid="t")
    logdir = str(tmp_path / "t")
    g = plugin._boot(item, logdir, FailsOnce, "k", "i", Topology(), trace=("virtio_set_status",))
    assert g.trace_lines() == ["boot 2"]
    assert open(os.path.join(logdir + "-boot0", "trace.log")).read() == "boot 1\n"
