// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers over the C APIs that the 6.12 `kernel` crate lacks.
//!
//! Every `unsafe` block of the module lives below this module, each with a
//! `// SAFETY:` comment, each type with its `# Invariants`. The driver on top
//! uses only what these modules export. They are written to be proposable as
//! `rust/kernel/{virtio,scsi,...}.rs`.
//!
//! The C bindings are private to this module: the compiler, not review,
//! keeps them out of the driver.
//!
//! `abstractions/hwrng.rs` (hw_random) is not declared here: its one user,
//! the virtio-rng sample (`samples/virtio_rng_rs/`), builds these files into
//! its own crate and declares it there.

#[path = "bindings.rs"]
mod bindings;

pub(crate) mod blk_mq;
pub(crate) mod cpu;
pub(crate) mod device;
pub(crate) mod params;
pub(crate) mod scatterlist;
pub(crate) mod scsi;
pub(crate) mod seq_file;
pub(crate) mod sync;
pub(crate) mod virtio;
