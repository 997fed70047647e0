// SPDX-License-Identifier: GPL-2.0

//! The virtio-scsi wire protocol: device configuration layout and constants.
//!
//! C header: [`include/uapi/linux/virtio_scsi.h`](srctree/include/uapi/linux/virtio_scsi.h).
//!
//! Pure code without kernel dependencies: it is compiled into the module and,
//! unchanged, into the host crate `tools/vscsi-protocol`, where `cargo test`
//! checks it.

/// The virtio device id of a SCSI host (`VIRTIO_ID_SCSI`).
pub(crate) const VIRTIO_ID_SCSI: u32 = 8;

/// Feature bits (`VIRTIO_SCSI_F_*`).
pub(crate) mod feature {
    /// A request may carry both data-out and data-in buffers.
    pub(crate) const INOUT: u32 = 0;
    /// The device reports LUN and target hot-plug and hot-unplug events.
    pub(crate) const HOTPLUG: u32 = 1;
    /// The device reports parameter changes (`PARAM_CHANGE` events).
    pub(crate) const CHANGE: u32 = 2;
    /// Requests carry T10 protection information fields.
    pub(crate) const T10_PI: u32 = 3;
}

/// Default CDB size (`VIRTIO_SCSI_CDB_DEFAULT_SIZE`).
pub(crate) const CDB_SIZE: u32 = 32;
/// Default sense size (`VIRTIO_SCSI_SENSE_DEFAULT_SIZE`).
pub(crate) const SENSE_SIZE: u32 = 96;

/// Device configuration space (`struct virtio_scsi_config`).
///
/// Fields are little-endian on the wire (native for legacy devices); the
/// virtio core converts them on access, so this type only describes offsets.
#[repr(C, packed)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    /// Number of request queues.
    pub(crate) num_queues: u32,
    /// Maximum number of segments in a command.
    pub(crate) seg_max: u32,
    /// Maximum transfer size hint, in 512-byte sectors.
    pub(crate) max_sectors: u32,
    /// Maximum number of linked commands per LUN.
    pub(crate) cmd_per_lun: u32,
    /// Maximum number of bytes the device writes to an event buffer.
    pub(crate) event_info_size: u32,
    /// Sense buffer size (driver-writable).
    pub(crate) sense_size: u32,
    /// CDB size (driver-writable).
    pub(crate) cdb_size: u32,
    /// Highest channel number.
    pub(crate) max_channel: u16,
    /// Highest target number.
    pub(crate) max_target: u16,
    /// Highest LUN number.
    pub(crate) max_lun: u32,
}

/// Byte offsets of the [`Config`] fields, for config-space accessors.
pub(crate) mod config_offset {
    use super::Config;
    use core::mem::offset_of;

    /// Offset of [`Config::num_queues`].
    pub(crate) const NUM_QUEUES: usize = offset_of!(Config, num_queues);
    /// Offset of [`Config::seg_max`].
    pub(crate) const SEG_MAX: usize = offset_of!(Config, seg_max);
    /// Offset of [`Config::max_sectors`].
    pub(crate) const MAX_SECTORS: usize = offset_of!(Config, max_sectors);
    /// Offset of [`Config::cmd_per_lun`].
    pub(crate) const CMD_PER_LUN: usize = offset_of!(Config, cmd_per_lun);
    /// Offset of [`Config::event_info_size`].
    pub(crate) const EVENT_INFO_SIZE: usize = offset_of!(Config, event_info_size);
    /// Offset of [`Config::sense_size`].
    pub(crate) const SENSE_SIZE: usize = offset_of!(Config, sense_size);
    /// Offset of [`Config::cdb_size`].
    pub(crate) const CDB_SIZE: usize = offset_of!(Config, cdb_size);
    /// Offset of [`Config::max_channel`].
    pub(crate) const MAX_CHANNEL: usize = offset_of!(Config, max_channel);
    /// Offset of [`Config::max_target`].
    pub(crate) const MAX_TARGET: usize = offset_of!(Config, max_target);
    /// Offset of [`Config::max_lun`].
    pub(crate) const MAX_LUN: usize = offset_of!(Config, max_lun);
}

// The layout is fixed by the virtio specification (36 bytes).
const _: () = assert!(core::mem::size_of::<Config>() == 36);
const _: () = assert!(config_offset::MAX_CHANNEL == 28);
const _: () = assert!(config_offset::MAX_TARGET == 30);
const _: () = assert!(config_offset::MAX_LUN == 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_offsets_match_the_specification() {
        let offsets = [
            config_offset::NUM_QUEUES,
            config_offset::SEG_MAX,
            config_offset::MAX_SECTORS,
            config_offset::CMD_PER_LUN,
            config_offset::EVENT_INFO_SIZE,
            config_offset::SENSE_SIZE,
            config_offset::CDB_SIZE,
            config_offset::MAX_CHANNEL,
            config_offset::MAX_TARGET,
            config_offset::MAX_LUN,
        ];
        assert_eq!(offsets, [0, 4, 8, 12, 16, 20, 24, 28, 30, 32]);
    }

    #[test]
    fn feature_bits_match_the_specification() {
        assert_eq!(
            [
                feature::INOUT,
                feature::HOTPLUG,
                feature::CHANGE,
                feature::T10_PI
            ],
            [0, 1, 2, 3]
        );
    }
}
