// SPDX-License-Identifier: GPL-2.0

//! Virtio drivers and devices.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h).

mod blk_mq;
mod buffer;
mod device;
mod driver;
mod exchange;
mod lent;
mod virtqueue;

// Shared between the files of this module only.
use device::Binding;
use virtqueue::{QueueSet, SetReset};

pub(crate) use blk_mq::map_queues;
pub(crate) use buffer::DeviceBuf;
pub(crate) use device::{Device, DeviceRef, RING_F_INDIRECT_DESC};
pub(crate) use driver::{virtio_device_table, DeviceId, Driver, DriverDevice, Registration};
pub(crate) use exchange::{Exchange, ExchangeRequest, ExchangeSlot, WaitError};
pub(crate) use lent::{Layout, Lent, LentSgs};
pub(crate) use virtqueue::{Queue, QueueInfo, RawQueue, Request, SgList};
// Returned by the API, not named by this driver.
#[allow(unused_imports)]
pub(crate) use {device::BoundDevice, virtqueue::QueueGuard};
