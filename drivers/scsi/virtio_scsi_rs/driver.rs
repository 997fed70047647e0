// SPDX-License-Identifier: GPL-2.0

//! The virtio-scsi driver logic, in safe Rust.
//!
//! C counterpart: [`drivers/scsi/virtio_scsi.c`](srctree/drivers/scsi/virtio_scsi.c).

use crate::abstractions::device::{dev_err, dev_info, dev_warn};
use crate::abstractions::virtio::{self, virtio_device_table, DeviceId};
use crate::protocol::{self, config_offset, feature};
use kernel::c_str;
use kernel::prelude::*;

virtio_device_table!(ID_TABLE, [DeviceId::new(protocol::VIRTIO_ID_SCSI)]);

/// Feature bits offered to the device (`features[]` in C).
static FEATURES: [u32; 2] = [feature::HOTPLUG, feature::CHANGE];

/// Per-device state (`struct virtio_scsi` in C).
pub(crate) struct VirtioScsi {
    num_queues: u32,
}

#[vtable]
impl virtio::Driver for VirtioScsi {
    type Data = KBox<VirtioScsi>;

    const NAME: &'static CStr = c_str!("virtio_scsi_rs");
    const ID_TABLE: &'static [DeviceId] = &ID_TABLE;
    const FEATURES: &'static [u32] = &FEATURES;

    fn probe(dev: &virtio::Device) -> Result<Self::Data> {
        if !dev.has_config_access() {
            dev_err!(dev, "probe failure: config access disabled\n");
            return Err(EINVAL);
        }
        let mut num_queues = dev.cread32(config_offset::NUM_QUEUES)?;
        if num_queues == 0 {
            dev_warn!(dev, "device reports num_queues=0, using 1\n");
            num_queues = 1;
        }
        let max_target = dev.cread16(config_offset::MAX_TARGET)?;
        dev_info!(
            dev,
            "num_queues={} max_target={} hotplug={} change={}\n",
            num_queues,
            max_target,
            dev.has_feature(feature::HOTPLUG),
            dev.has_feature(feature::CHANGE)
        );
        Ok(KBox::new(VirtioScsi { num_queues }, GFP_KERNEL)?)
    }

    fn remove(dev: &virtio::Device, data: Self::Data) {
        dev.reset();
        dev_info!(dev, "removed ({} request queues)\n", data.num_queues);
    }
}
