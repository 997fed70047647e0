// SPDX-License-Identifier: GPL-2.0

//! SCSI low-level drivers: host templates, hosts and commands.
//!
//! C headers: [`include/scsi/scsi_host.h`](srctree/include/scsi/scsi_host.h),
//! [`include/scsi/scsi_cmnd.h`](srctree/include/scsi/scsi_cmnd.h),
//! [`include/scsi/scsi_device.h`](srctree/include/scsi/scsi_device.h).
//!
//! A driver describes its host with a [`HostTemplate`] (the C
//! `struct scsi_host_template` as a `#[vtable]` trait), keeps one static
//! [`Template`] of it, allocates a [`Host`] per adapter with its private data
//! stored inline (like `shost_priv()`), and receives [`Command`]s, which it
//! must complete exactly once (dropping one completes it with `DID_ERROR`).

mod command;
mod device;
mod eh;
mod host;
mod template;

// Items shared between the files of this module.
#[allow(unused_imports)]
use {command::*, device::*, eh::*, host::*, template::*};

pub(crate) use crate::abstractions::seq_file::SeqFile;
pub(crate) use command::{Command, CommandBufs, CommandRequest, DataDirection, HostByte};
pub(crate) use device::{HeldDevice, ScsiDevice, SlaveAllocDevice, BLIST_TRY_VPD_PAGES};
pub(crate) use eh::{EhCommand, EhResult, TimeoutAction};
pub(crate) use host::{EhHost, Host, HostBuilder, HostRef, HostWork, Limits};
pub(crate) use template::{HostTemplate, QueueError, Template};
