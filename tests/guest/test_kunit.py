# SPDX-License-Identifier: GPL-2.0
"""The KUnit suite of the protocol layer runs in the guest kernel and passes every case."""

import os
import re

import pytest

from harness import ktap
from harness.topology import Topology

PROTOCOL_RS = os.path.join(os.path.dirname(__file__), "..", "..", "drivers", "scsi", "virtio_scsi_rs", "protocol.rs")


def declared_cases():
    """The case names listed in protocol.rs's `cases!(...)`."""
    src = open(PROTOCOL_RS).read()
    body = re.search(r"cases!\(\s*([^)]*)\)", src, re.S)[1]
    return [name.strip() for name in body.split(",") if name.strip()]


@pytest.mark.shared_guests("no-controller")
def test_protocol_suite(make_guest):
    g = make_guest(Topology(controllers=[]), smp=1)
    g.sh("insmod /lib/modules/virtio_scsi_rs_kunit.ko")
    results = g.sh("cat /sys/kernel/debug/kunit/virtio_scsi_rs_protocol/results")
    (suite,) = ktap.parse(results)
    leaves = dict(ktap.flatten([suite]))
    names = [path.rsplit(".", 1)[1] for path in leaves]
    assert names == declared_cases(), results
    failed = [p for p, r in leaves.items() if not r.ok or r.skipped]
    assert not failed, results
    assert suite.ok, results
    g.sh("rmmod virtio_scsi_rs_kunit")
