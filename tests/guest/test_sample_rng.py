# SPDX-License-Identifier: GPL-2.0
"""The virtio-rng sample (samples/virtio_rng_rs/) against the C driver it follows (virtio_rng):
each binds a virtio-rng-pci device, registers it with hw_random, serves /dev/hwrng, unbinds and
binds again, and unloads while a reader waits for the device."""

import pytest

from harness.guest import poll_loop
from harness.topology import Rng, Topology

# Driver name, module file and the prefix of the names it registers with hw_random.
RNG_DRIVERS = {
    "rust": ("virtio_rng_rs", "/lib/modules/virtio_rng_rs.ko", "virtio_rng_rs."),
    "c": ("virtio_rng", "/lib/modules/virtio-rng.ko", "virtio_rng."),
}
HWRNG = "/sys/class/misc/hw_random"
# QEMU gives out 16 KiB per second of guest time: 64 KiB read in about 4 s, and a reader that
# keeps reading waits for the device most of each second, which the rmmod step needs.
TOPOLOGY = Topology(controllers=[], rngs=[Rng(props={"max-bytes": 16384, "period": 1000})])


def current_rng(g):
    return g.sh(f"cat {HWRNG}/rng_current").strip()


def distinct_lines(g, source):
    """How many distinct 16-byte lines the bytes from `source` (a shell command) have."""
    return int(g.sh(f"{source} | od -An -v -tx1 | sort -u | wc -l"))


@pytest.mark.shared_guests
def test_sample_rng(make_guest, driver):
    """Binds, reads 64 KiB of random bytes through /dev/hwrng, names its generator in
    rng_current, unbinds (no generator left: reads fail) and binds again, and is unloaded while a
    reader waits for the device: the read ends with an error, the module goes."""
    name, path, prefix = RNG_DRIVERS[driver]
    g = make_guest(TOPOLOGY)
    drv = f"/sys/bus/virtio/drivers/{name}"
    g.sh(f"insmod {path}")
    devs = g.sh(f"cd {drv} && ls -d virtio*").split()
    assert len(devs) == 1, devs
    dev = devs[0]
    assert g.sh(f"cat /sys/bus/virtio/devices/{dev}/device").strip() == "0x0004"
    # Registered in the driver's probe (scan), so before the device shows as bound.
    current = current_rng(g)
    assert current.startswith(prefix), current
    assert g.sh(f"cat {HWRNG}/rng_available").split() == [current, "none"]

    # 64 KiB in 4 KiB reads: 4096 lines of 16 bytes, no two alike (so not zeros, not a buffer
    # handed out twice).
    assert g.sh("dd if=/dev/hwrng of=/tmp/r bs=4096 count=16 2>/dev/null && wc -c < /tmp/r").strip() == "65536"
    assert distinct_lines(g, "cat /tmp/r") == 4096

    g.sh(f"echo {dev} > {drv}/unbind")
    assert current_rng(g) == "none"
    rc, out = g.run("dd if=/dev/hwrng of=/dev/null bs=64 count=1", check=False)
    assert rc != 0 and "No such device" in out, out
    g.sh(f"echo {dev} > {drv}/bind")
    g.wait_for(f"[ -e {drv}/{dev} ]", what="rebind")
    current = current_rng(g)
    assert current.startswith(prefix), current
    assert distinct_lines(g, "dd if=/dev/hwrng bs=4096 count=1 2>/dev/null") == 256

    # A reader that keeps reading; once it waits for the device (state D: the drivers' killable
    # wait), the module is removed. Its read must end, with an error: the generator is gone.
    g.sh(
        "( dd if=/dev/hwrng of=/dev/null bs=4096 count=1000000 2>/tmp/reader.err & echo $! > /tmp/reader.pid;"
        " wait $!; echo $? > /tmp/reader.rc ) >/dev/null 2>&1 &"
    )
    g.wait_for("[ -s /tmp/reader.pid ]", what="the reader")
    pid = g.sh("cat /tmp/reader.pid").strip()
    rc, out = g.run(
        poll_loop(f"read -r _ _ state _ < /proc/{pid}/stat && [ \"$state\" = D ]", 30,
                  on_timeout="echo 'the reader never waited'; exit 1") + "\n"
        f"echo wchan $(cat /proc/{pid}/wchan)\n"
        f"rmmod {name}",
        check=False,
    )
    assert rc == 0, out
    g.wait_for(f"[ ! -e /proc/{pid} ] && [ -s /tmp/reader.rc ]", timeout=20, what="the reader to end")
    status, err = g.sh("cat /tmp/reader.rc /tmp/reader.err").split("\n", 1)
    assert status != "0", err
    assert "No such device" in err, err
    assert current_rng(g) == "none"
    g.sh(f"[ ! -e /sys/module/{name} ] && [ ! -e /sys/bus/virtio/devices/{dev}/driver ]")
