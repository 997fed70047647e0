# SPDX-License-Identifier: GPL-2.0
"""The KTAP parser reads KUnit's output, parameterised cases included, and sees failures."""

from harness import ktap

PASSING = """\
KTAP version 1
1..1
    KTAP version 1
    # Subtest: virtio_scsi_rs_protocol
    # module: virtio_scsi_rs_kunit
    1..1
        KTAP version 1
        # Subtest: protocol
        ok 1 config_offsets_match_the_specification
        ok 2 lun_encoding_is_flat_space
    # protocol: pass:2 fail:0 skip:0 total:2
    ok 1 protocol
# Totals: pass:2 fail:0 skip:0 total:2
ok 1 virtio_scsi_rs_protocol
"""


def test_parameterised_suite():
    (suite,) = ktap.parse(PASSING)
    assert (suite.name, suite.ok) == ("virtio_scsi_rs_protocol", True)
    leaves = dict(ktap.flatten([suite]))
    assert list(leaves) == [
        "virtio_scsi_rs_protocol.protocol.config_offsets_match_the_specification",
        "virtio_scsi_rs_protocol.protocol.lun_encoding_is_flat_space",
    ]
    assert all(r.ok for r in leaves.values())


def test_failure_and_skip_and_printk_prefixes():
    text = "\n".join(
        f"[   12.{i:06d}] {line}"
        for i, line in enumerate(
            PASSING.replace("ok 2 lun_encoding_is_flat_space", "not ok 2 lun_encoding_is_flat_space")
            .replace("    ok 1 protocol", "    not ok 1 protocol")
            .replace("ok 1 virtio_scsi_rs_protocol", "not ok 1 virtio_scsi_rs_protocol")
            .replace("ok 1 config_offsets_match_the_specification", "ok 1 config_offsets_match_the_specification # SKIP no")
            .splitlines()
        )
    )
    (suite,) = ktap.parse(text)
    assert not suite.ok
    leaves = dict(ktap.flatten([suite]))
    assert leaves["virtio_scsi_rs_protocol.protocol.config_offsets_match_the_specification"].skipped
    assert not leaves["virtio_scsi_rs_protocol.protocol.lun_encoding_is_flat_space"].ok
