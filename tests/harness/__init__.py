# SPDX-License-Identifier: GPL-2.0
"""Host-side harness for virtio-scsi-rs guest tests: QEMU, QMP, guest commands, report checks."""
