// SPDX-License-Identifier: GPL-2.0

//! The module's protocol layer (`drivers/scsi/virtio_scsi_rs/protocol.rs`),
//! compiled unchanged for the host so that `cargo test` runs its unit tests.

#![no_std]

#[cfg(test)]
extern crate std;

#[allow(dead_code)]
#[path = "../../../drivers/scsi/virtio_scsi_rs/protocol.rs"]
mod protocol;
