// SPDX-License-Identifier: GPL-2.0

//! The virtio-scsi wire protocol: configuration, request and response
//! headers, LUN encoding, response codes, and the validation of everything
//! the device says.
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

impl Config {
    /// Every field with its name in the specification, in layout order.
    pub(crate) fn fields(&self) -> [(&'static str, u32); 10] {
        [
            ("num_queues", self.num_queues),
            ("seg_max", self.seg_max),
            ("max_sectors", self.max_sectors),
            ("cmd_per_lun", self.cmd_per_lun),
            ("event_info_size", self.event_info_size),
            ("sense_size", self.sense_size),
            ("cdb_size", self.cdb_size),
            ("max_channel", u32::from(self.max_channel)),
            ("max_target", u32::from(self.max_target)),
            ("max_lun", self.max_lun),
        ]
    }

    /// The fields whose value differs in `new`, as (name, value here,
    /// value in `new`), in layout order.
    pub(crate) fn changes(&self, new: &Config) -> impl Iterator<Item = (&'static str, u32, u32)> {
        let (old, new) = (self.fields(), new.fields());
        (0..old.len())
            .map(move |i| (old[i].0, old[i].1, new[i].1))
            .filter(|(_, a, b)| a != b)
    }
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

// Wire fields are written little-endian, as virtio 1.x devices (the
// VERSION_1 feature) want. A legacy device on a big-endian guest would want
// native order, which C handles with cpu_to_virtio32(); no big-endian
// architecture builds Rust in 6.12, so refuse to build there rather than
// be silently wrong.
#[cfg(target_endian = "big")]
compile_error!("virtio_scsi_rs writes little-endian wire fields: add legacy byte order first");

// The layout is fixed by the virtio specification (36 bytes).
const _: () = assert!(core::mem::size_of::<Config>() == 36);
const _: () = assert!(config_offset::MAX_CHANNEL == 28);
const _: () = assert!(config_offset::MAX_TARGET == 30);
const _: () = assert!(config_offset::MAX_LUN == 32);

/// Request header size without T10 PI (`struct virtio_scsi_cmd_req`).
pub(crate) const CMD_REQ_SIZE: usize = 51;
/// Request header size with T10 PI (`struct virtio_scsi_cmd_req_pi`).
pub(crate) const CMD_REQ_PI_SIZE: usize = 59;
/// Response header size (`struct virtio_scsi_cmd_resp`).
pub(crate) const CMD_RESP_SIZE: usize = 108;
/// Bytes of the response header before the sense data.
pub(crate) const CMD_RESP_FIXED: usize = 12;

/// Task attributes (`VIRTIO_SCSI_S_SIMPLE` and friends).
pub(crate) const TASK_ATTR_SIMPLE: u8 = 0;

/// Response codes (`VIRTIO_SCSI_S_*`).
pub(crate) mod response {
    /// Success (also `FUNCTION COMPLETE` for TMFs).
    pub(crate) const OK: u8 = 0;
    /// The buffers were too small for the data.
    pub(crate) const OVERRUN: u8 = 1;
    /// The command was aborted.
    pub(crate) const ABORTED: u8 = 2;
    /// No such target.
    pub(crate) const BAD_TARGET: u8 = 3;
    /// The command was cleared by a reset.
    pub(crate) const RESET: u8 = 4;
    /// The device is busy.
    pub(crate) const BUSY: u8 = 5;
    /// A transport error; retry may succeed on another path.
    pub(crate) const TRANSPORT_FAILURE: u8 = 6;
    /// The target failed; do not retry elsewhere.
    pub(crate) const TARGET_FAILURE: u8 = 7;
    /// The nexus failed (reservation conflict).
    pub(crate) const NEXUS_FAILURE: u8 = 8;
    /// Any other failure.
    pub(crate) const FAILURE: u8 = 9;
    /// TMF succeeded.
    pub(crate) const FUNCTION_SUCCEEDED: u8 = 10;
    /// TMF rejected.
    pub(crate) const FUNCTION_REJECTED: u8 = 11;
    /// The LUN does not exist.
    pub(crate) const INCORRECT_LUN: u8 = 12;
}

/// SCSI host bytes (Linux `enum scsi_host_status`). Only the names: the
/// driver maps each to the kernel's value with a `match` (`host_byte()`),
/// and the SCSI abstraction takes the values from the kernel's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostByte {
    /// `DID_OK`.
    Ok,
    /// `DID_NO_CONNECT`.
    NoConnect,
    /// `DID_BUS_BUSY`.
    BusBusy,
    /// `DID_BAD_TARGET`.
    BadTarget,
    /// `DID_ABORT`.
    Abort,
    /// `DID_ERROR`.
    Error,
    /// `DID_RESET`.
    Reset,
    /// `DID_TRANSPORT_DISRUPTED`.
    TransportDisrupted,
}

/// SAM status `RESERVATION CONFLICT`.
pub(crate) const SAM_STAT_RESERVATION_CONFLICT: u8 = 0x18;
/// SAM status `CHECK CONDITION`.
pub(crate) const SAM_STAT_CHECK_CONDITION: u8 = 0x02;
/// Operation code of `INQUIRY` (SPC).
pub(crate) const INQUIRY: u8 = 0x12;

/// The outcome of a command as the midlayer wants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The host byte.
    pub(crate) host: HostByte,
    /// The SAM status byte.
    pub(crate) status: u8,
    /// The response code was not one the specification defines for
    /// commands (worth a warning).
    pub(crate) unknown_response: bool,
}

/// Maps a command's `response` and `status` to the midlayer's host byte and
/// status (the C driver's `virtscsi_complete_cmd()` switch).
///
/// Differences from C: `INCORRECT_LUN` means the LUN is gone, as QEMU sends
/// for a passthrough host's `DID_NO_CONNECT`, so it maps back to
/// `DID_NO_CONNECT` instead of "unknown response" and `DID_ERROR`.
pub(crate) fn map_response(response: u8, status: u8) -> Outcome {
    let mut unknown_response = false;
    let mut status = status;
    let host = match response {
        response::OK => HostByte::Ok,
        response::OVERRUN => HostByte::Error,
        response::ABORTED => HostByte::Abort,
        response::BAD_TARGET => HostByte::BadTarget,
        response::RESET => HostByte::Reset,
        response::BUSY => HostByte::BusBusy,
        response::TRANSPORT_FAILURE => HostByte::TransportDisrupted,
        // Linux 6.12 has no DID_TARGET_FAILURE any more; C uses BAD_TARGET.
        response::TARGET_FAILURE => HostByte::BadTarget,
        response::NEXUS_FAILURE => {
            status = SAM_STAT_RESERVATION_CONFLICT;
            HostByte::Ok
        }
        response::INCORRECT_LUN => HostByte::NoConnect,
        response::FAILURE => HostByte::Error,
        _ => {
            unknown_response = true;
            HostByte::Error
        }
    };
    Outcome {
        host,
        status,
        unknown_response,
    }
}

/// Encodes a target and a Linux LUN as a virtio-scsi LUN field
/// (single-level, flat address method): `1, target, 0x40 | lun >> 8,
/// lun & 0xff, 0, 0, 0, 0`.
///
/// Linux numbers LUNs by their SAM encoding, so LUN 300 reported in the
/// flat space is 0x412c (16684); both that and a plain 300 encode the same.
/// Returns `None` for what the format cannot address (target > 255,
/// LUN > 0x7fff).
pub(crate) fn encode_lun(target: u32, lun: u64) -> Option<[u8; 8]> {
    if target > 255 || lun > 0x7fff {
        return None;
    }
    Some([
        1,
        target as u8,
        0x40 | ((lun >> 8) as u8 & 0x3f),
        lun as u8,
        0,
        0,
        0,
        0,
    ])
}

/// Decodes a LUN field from the device into (target, Linux LUN). Accepts
/// the peripheral (`0x00`, LUN < 256) and flat (`0x40`) address methods
/// and keeps the method bits, as Linux does; `None` for anything else.
pub(crate) fn decode_lun(lun: &[u8; 8]) -> Option<(u32, u64)> {
    if lun[0] != 1 || lun[4..] != [0, 0, 0, 0] {
        return None;
    }
    let method = lun[2] & 0xc0;
    if method != 0x40 && method != 0 {
        return None;
    }
    let value = (u64::from(lun[2]) << 8) | u64::from(lun[3]);
    Some((u32::from(lun[1]), value))
}

/// Size of the CDB field the midlayer keeps for every command (`cmnd` of
/// `struct scsi_cmnd`), which is also the field of the request header.
pub(crate) const CDB_FIELD_SIZE: usize = CDB_SIZE as usize;

/// Writes the fields shared by both request header formats (LUN, tag,
/// SIMPLE task attribute, priority and CRN 0) and the CDB field `cdb`,
/// whole, at `cdb_off`. Returns `None` if `hdr` is short.
///
/// The field goes as it is, not cut to the command's length and
/// zero-padded: the midlayer clears it before each command is built
/// (`scsi_prepare_cmd()`, `scsi_initialize_rq()` for passthrough,
/// `scsi_eh_prep_cmnd()` for the error handler's own), so the bytes past
/// the command are zero already, as the C driver sends them.
#[inline(always)]
fn write_req_common(
    hdr: &mut [u8],
    lun: &[u8; 8],
    tag: u64,
    cdb_off: usize,
    cdb: &[u8; CDB_FIELD_SIZE],
) -> Option<()> {
    hdr.get_mut(cdb_off..cdb_off + CDB_FIELD_SIZE)?
        .copy_from_slice(cdb);
    hdr[0..8].copy_from_slice(lun);
    hdr[8..16].copy_from_slice(&tag.to_le_bytes());
    hdr[16] = TASK_ATTR_SIMPLE;
    hdr[17] = 0; // prio
    hdr[18] = 0; // crn
    Some(())
}

/// Writes a command request header (without PI) into `buf`, which must be
/// at least [`CMD_REQ_SIZE`] bytes, with the CDB field `cdb` (see
/// [`write_req_common`]). Returns the header length, or `None` if `buf` is
/// short.
#[inline(always)]
pub(crate) fn write_cmd_req(
    buf: &mut [u8],
    lun: &[u8; 8],
    tag: u64,
    cdb: &[u8; CDB_FIELD_SIZE],
) -> Option<usize> {
    let hdr = buf.get_mut(..CMD_REQ_SIZE)?;
    write_req_common(hdr, lun, tag, 19, cdb)?;
    Some(CMD_REQ_SIZE)
}

/// Writes a command request header with T10 PI fields into `buf` (at least
/// [`CMD_REQ_PI_SIZE`] bytes): the fields of [`write_cmd_req`] with
/// `pi_bytesout` and `pi_bytesin` between `crn` and the CDB, as the Linux
/// UAPI header, QEMU and vhost-scsi lay them out. Returns the header length.
#[inline(always)]
pub(crate) fn write_cmd_req_pi(
    buf: &mut [u8],
    lun: &[u8; 8],
    tag: u64,
    pi_bytesout: u32,
    pi_bytesin: u32,
    cdb: &[u8; CDB_FIELD_SIZE],
) -> Option<usize> {
    let hdr = buf.get_mut(..CMD_REQ_PI_SIZE)?;
    write_req_common(hdr, lun, tag, 27, cdb)?;
    hdr[19..23].copy_from_slice(&pi_bytesout.to_le_bytes());
    hdr[23..27].copy_from_slice(&pi_bytesin.to_le_bytes());
    Some(CMD_REQ_PI_SIZE)
}

/// A command response header as the device wrote it, already validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CmdResp {
    /// Valid sense bytes, at most the negotiated sense size and what the
    /// device actually wrote.
    pub(crate) sense_len: usize,
    /// Residual byte count, at most the data length.
    pub(crate) resid: u32,
    /// SAM status.
    pub(crate) status: u8,
    /// `VIRTIO_SCSI_S_*` response.
    pub(crate) response: u8,
    /// The device claimed more sense or residual than possible (worth a
    /// warning; the values above are clamped).
    pub(crate) clamped: bool,
}

/// Response code the driver stores in a response header before the device
/// gets it. No device sends it (the codes end at 12), so a header the device
/// never wrote reads as an unknown response, an error; never as the previous
/// command's answer or as success.
pub(crate) const RESPONSE_UNWRITTEN: u8 = 0xff;

/// Prepares the fixed part of a command's response header (at least
/// [`CMD_RESP_FIXED`] bytes of `buf`) before the command goes to the device:
/// no sense, no residual, and [`RESPONSE_UNWRITTEN`].
#[inline(always)]
pub(crate) fn clear_cmd_resp(buf: &mut [u8]) {
    if let Some(hdr) = buf.get_mut(..CMD_RESP_FIXED) {
        hdr[..8].copy_from_slice(&[0; 8]);
        hdr[8..].copy_from_slice(&[0, 0, 0, RESPONSE_UNWRITTEN]);
    }
}

/// Returns the SAM status of a response that needs no parsing: `OK`, no
/// sense, no residual, what nearly every command gets; [`parse_cmd_resp`]
/// would give the same status, no sense, no residual, nothing clamped, and
/// [`map_response`] `DID_OK` with the status as it is. `None` for any other
/// response, or when `buf` (the response area) cannot hold the header.
#[inline(always)]
pub(crate) fn cmd_resp_plain_ok(buf: &[u8]) -> Option<u8> {
    let hdr = buf.get(..CMD_RESP_FIXED)?;
    // `sense_len` and `resid` together, then `status_qualifier`, `status`
    // and `response`: two loads (whole arrays, which the compiler does not
    // split into bytes) and one test.
    let counts = u64::from_le_bytes(hdr[..8].try_into().ok()?);
    let tail = u32::from_le_bytes(hdr[8..].try_into().ok()?);
    const _: () = assert!(response::OK == 0);
    (counts | u64::from(tail & 0xff00_0000) == 0).then_some(hdr[10])
}

/// Parses a response header from `buf` (the response area of the command,
/// prepared by [`clear_cmd_resp`]), given how many bytes the device says it
/// wrote to the device-writable buffers (`used_len`, header first) and the
/// command's data length.
///
/// A used length below the fixed header means the device does not report
/// it: Linux's vhost-scsi completes every buffer with 0, and legacy devices
/// are allowed to. The header is read anyway, as C does, and the sense
/// bounded only by the buffer; [`clear_cmd_resp`] makes a header the device
/// did not write an error. A used length at or above the header bounds the
/// sense the device can have written.
///
/// Returns `None` only when `buf` cannot hold the header.
pub(crate) fn parse_cmd_resp(buf: &[u8], used_len: u32, bufflen: u32) -> Option<CmdResp> {
    let hdr = buf.get(..CMD_RESP_FIXED)?;
    let used = used_len as usize;
    let sense_len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let resid = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let status = hdr[10];
    let response = hdr[11];
    let mut sense_room = (buf.len() - CMD_RESP_FIXED).min(SENSE_SIZE as usize);
    if used >= CMD_RESP_FIXED {
        sense_room = sense_room.min(used - CMD_RESP_FIXED);
    }
    let sense = (sense_len as usize).min(sense_room);
    let resid_c = resid.min(bufflen);
    Some(CmdResp {
        sense_len: sense,
        resid: resid_c,
        status,
        response,
        clamped: sense != sense_len as usize || resid_c != resid,
    })
}

/// Host limits derived from the device configuration, with the reasons for
/// every value that had to be corrected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostLimits {
    /// Request queues to use.
    pub(crate) num_queues: u32,
    /// Segments per command.
    pub(crate) sg_tablesize: u16,
    /// Protection information segments per command; 0 leaves the
    /// midlayer's default (65535 with DIX, `scsi_init_limits()`).
    pub(crate) sg_prot_tablesize: u16,
    /// Descriptors the largest command these limits let through takes on
    /// a request ring: 1 with indirect descriptors (the table), otherwise
    /// the two headers, `sg_tablesize` data segments and, with protection
    /// information, `sg_prot_tablesize` protection segments. A ring smaller
    /// than this refuses such a command for as long as it exists.
    pub(crate) ring_need: u32,
    /// Sectors per command.
    pub(crate) max_sectors: u32,
    /// Default per-LUN queue depth (at most `can_queue` and 32767).
    pub(crate) cmd_per_lun: u32,
    /// Commands in flight per queue (at most `i32::MAX`).
    pub(crate) can_queue: u32,
    /// `max_id`: highest target + 1.
    pub(crate) max_id: u32,
    /// `max_lun`: highest LUN + 1 plus the flat-space offset.
    pub(crate) max_lun: u64,
    /// Event buffer size.
    pub(crate) event_info_size: u32,
    /// Bit set of [`Clamp`] values: which fields were corrected.
    pub(crate) clamped: u32,
}

/// Config fields that [`host_limits`] may correct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Clamp {
    /// `num_queues` was 0.
    NumQueuesZero = 1 << 0,
    /// `num_queues` exceeded the CPUs.
    NumQueuesCpus = 1 << 1,
    /// `seg_max` was 0.
    SegMaxZero = 1 << 2,
    /// `seg_max` exceeded what a command can use.
    SegMaxLarge = 1 << 3,
    /// `max_sectors` was 0.
    MaxSectorsZero = 1 << 4,
    /// `max_sectors` was below one page.
    MaxSectorsSmall = 1 << 5,
    /// `cmd_per_lun` was 0.
    CmdPerLunZero = 1 << 6,
    /// `cmd_per_lun` exceeded `can_queue` or 32767.
    CmdPerLunLarge = 1 << 7,
    /// `max_target` exceeded 255.
    MaxTargetLarge = 1 << 8,
    /// `max_lun` exceeded 16383.
    MaxLunLarge = 1 << 9,
    /// `event_info_size` was below 16 or absurdly large.
    EventInfoSize = 1 << 10,
    /// `max_channel` was not 0.
    MaxChannel = 1 << 11,
}

impl Clamp {
    /// All values, in bit order.
    pub(crate) const ALL: [Clamp; 12] = [
        Clamp::NumQueuesZero,
        Clamp::NumQueuesCpus,
        Clamp::SegMaxZero,
        Clamp::SegMaxLarge,
        Clamp::MaxSectorsZero,
        Clamp::MaxSectorsSmall,
        Clamp::CmdPerLunZero,
        Clamp::CmdPerLunLarge,
        Clamp::MaxTargetLarge,
        Clamp::MaxLunLarge,
        Clamp::EventInfoSize,
        Clamp::MaxChannel,
    ];

    /// A human-readable description for the warning.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Clamp::NumQueuesZero => "num_queues is 0, using 1",
            Clamp::NumQueuesCpus => "num_queues exceeds the CPU count, using one per CPU",
            Clamp::SegMaxZero => "seg_max is 0, using 1",
            Clamp::SegMaxLarge => "seg_max exceeds what fits in a request, clamped",
            Clamp::MaxSectorsZero => "max_sectors is 0, using 65535",
            Clamp::MaxSectorsSmall => "max_sectors is below 8, using 8",
            Clamp::CmdPerLunZero => "cmd_per_lun is 0, using 1",
            Clamp::CmdPerLunLarge => "cmd_per_lun exceeds the queue size or 32767, clamped",
            Clamp::MaxTargetLarge => "max_target exceeds 255, using 255",
            Clamp::MaxLunLarge => "max_lun exceeds 16383, using 16383",
            Clamp::EventInfoSize => "event_info_size out of range, using 16..4096",
            Clamp::MaxChannel => "max_channel is not 0, using only channel 0",
        }
    }
}

/// Largest event buffer the driver allocates.
pub(crate) const EVENT_INFO_SIZE_MAX: u32 = 4096;
/// Size of `struct virtio_scsi_event`.
pub(crate) const EVENT_SIZE: u32 = 16;

/// The largest `short` (`cmd_per_lun` in `struct Scsi_Host`).
const SHORT_MAX: u32 = i16::MAX as u32;
/// The largest `int` (`can_queue` in `struct Scsi_Host`).
const INT_MAX: u32 = i32::MAX as u32;

/// Descriptors a command takes besides its data and protection
/// information: the request header and the response header, one each.
pub(crate) const CMD_HDR_DESCS: u32 = 2;

/// Returns the smallest of the request rings' sizes with its index (the
/// first of equal ones), `None` without rings. Each virtqueue has a size of
/// its own (virtio-pci's `queue_size` is per queue), and a command must fit
/// in whichever ring its hardware queue uses.
pub(crate) fn smallest_ring(sizes: impl IntoIterator<Item = u32>) -> Option<(usize, u32)> {
    sizes.into_iter().enumerate().min_by_key(|&(_, size)| size)
}

/// Derives host limits from the device configuration, the CPU count, the
/// size of the smallest request ring ([`smallest_ring`]), whether indirect
/// descriptors are available and whether commands carry protection
/// information (T10 PI negotiated and advertised to the midlayer). Every
/// field is bounded, by what the device and the rings can take and by the
/// range of the midlayer's field it goes into; each correction of a
/// configuration field sets a bit in `clamped`. A ring too small for any
/// command gives a [`HostLimits::ring_need`] above its size.
pub(crate) fn host_limits(
    cfg: &Config,
    nr_cpu_ids: u32,
    ring_size: u32,
    indirect: bool,
    pi: bool,
) -> HostLimits {
    let mut clamped = 0u32;
    let mut clamp = |c: Clamp| clamped |= c as u32;

    let mut num_queues = cfg.num_queues;
    if num_queues == 0 {
        clamp(Clamp::NumQueuesZero);
        num_queues = 1;
    }
    if num_queues > nr_cpu_ids.max(1) {
        clamp(Clamp::NumQueuesCpus);
        num_queues = nr_cpu_ids.max(1);
    }

    // A command uses two header descriptors plus its data segments and,
    // with protection information, its protection segments. Without
    // indirect descriptors all of them must fit in the smallest ring at
    // once, so data and protection information share what the headers
    // leave: the data at most half of it, since the midlayer wants
    // `sg_prot_tablesize >= sg_tablesize` (BUG_ON in `scsi_init_limits()`).
    // A ring without room for one segment of each still gets one, and a
    // `ring_need` beyond its size.
    let room = ring_size.saturating_sub(CMD_HDR_DESCS);
    let seg_cap = match (indirect, pi) {
        (true, _) => u32::from(u16::MAX),
        (false, false) => room,
        (false, true) => room / 2,
    }
    .clamp(1, u32::from(u16::MAX));
    let mut seg_max = cfg.seg_max;
    if seg_max == 0 {
        clamp(Clamp::SegMaxZero);
        seg_max = 1;
    }
    if seg_max > seg_cap {
        clamp(Clamp::SegMaxLarge);
        seg_max = seg_cap;
    }

    // With indirect descriptors, or without protection information, the
    // midlayer's default, as in C.
    let sg_prot_tablesize = if indirect || !pi {
        0
    } else {
        room.saturating_sub(seg_max)
            .max(seg_max)
            .min(u32::from(u16::MAX))
    };
    let ring_need = if indirect {
        1
    } else {
        CMD_HDR_DESCS + seg_max + sg_prot_tablesize
    };

    let mut max_sectors = cfg.max_sectors;
    if max_sectors == 0 {
        clamp(Clamp::MaxSectorsZero);
        max_sectors = 0xffff;
    } else if max_sectors < 8 {
        clamp(Clamp::MaxSectorsSmall);
        max_sectors = 8;
    }

    // Without indirect descriptors a command takes at least three slots.
    let ring = ring_size.max(1);
    let can_queue = if indirect { ring } else { (ring / 3).max(1) };
    // The midlayer's `can_queue` is an `int`.
    let can_queue = can_queue.min(INT_MAX);

    // The midlayer's `cmd_per_lun` is a `short`: a split ring of 32768 with
    // indirect descriptors would take it one beyond.
    let cmd_per_lun_max = can_queue.min(SHORT_MAX);
    let mut cmd_per_lun = cfg.cmd_per_lun;
    if cmd_per_lun == 0 {
        clamp(Clamp::CmdPerLunZero);
        cmd_per_lun = 1;
    }
    if cmd_per_lun > cmd_per_lun_max {
        clamp(Clamp::CmdPerLunLarge);
        cmd_per_lun = cmd_per_lun_max;
    }

    let mut max_target = u32::from(cfg.max_target);
    if max_target > 255 {
        clamp(Clamp::MaxTargetLarge);
        max_target = 255;
    }
    let mut max_lun = cfg.max_lun;
    if max_lun > 0x3fff {
        clamp(Clamp::MaxLunLarge);
        max_lun = 0x3fff;
    }
    if cfg.max_channel != 0 {
        clamp(Clamp::MaxChannel);
    }
    let mut event_info_size = cfg.event_info_size;
    if !(EVENT_SIZE..=EVENT_INFO_SIZE_MAX).contains(&event_info_size) {
        clamp(Clamp::EventInfoSize);
        event_info_size = event_info_size.clamp(EVENT_SIZE, EVENT_INFO_SIZE_MAX);
    }

    HostLimits {
        num_queues,
        sg_tablesize: seg_max as u16,
        sg_prot_tablesize: sg_prot_tablesize as u16,
        ring_need,
        max_sectors,
        cmd_per_lun,
        can_queue,
        max_id: max_target + 1,
        // LUNs above 255 are reported in the flat format and appear as
        // 16640..32767 (0x4000 + LUN), as in the C driver.
        max_lun: u64::from(max_lun) + 1 + 0x4000,
        event_info_size,
        clamped,
    }
}
/// Event types (`VIRTIO_SCSI_T_*` of `struct virtio_scsi_event`).
pub(crate) mod event {
    /// No event (only meaningful with [`EVENTS_MISSED`]).
    pub(crate) const NO_EVENT: u32 = 0;
    /// A transport reset: a device appeared, disappeared or was reset.
    pub(crate) const TRANSPORT_RESET: u32 = 1;
    /// An asynchronous notification.
    pub(crate) const ASYNC_NOTIFY: u32 = 2;
    /// A parameter of a device changed (reason = ASC/ASCQ).
    pub(crate) const PARAM_CHANGE: u32 = 3;
    /// Flag: the device dropped events for lack of buffers.
    pub(crate) const EVENTS_MISSED: u32 = 0x8000_0000;
    /// TRANSPORT_RESET reason: hard reset.
    pub(crate) const RESET_HARD: u32 = 0;
    /// TRANSPORT_RESET reason: a device appeared.
    pub(crate) const RESET_RESCAN: u32 = 1;
    /// TRANSPORT_RESET reason: a device disappeared.
    pub(crate) const RESET_REMOVED: u32 = 2;
}

/// What the driver does for one event (the `virtscsi_handle_*()` functions
/// of the C driver, with the spec's LUN-0 rule and RESET_HARD added).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventAction {
    /// Nothing to do.
    None,
    /// Scan a whole target, adding new LUNs (`scsi_scan_target()`).
    ScanTarget { target: u32 },
    /// Add one device (`scsi_add_device()`).
    AddDevice { target: u32, lun: u64 },
    /// Remove one device; if `then_scan_target`, scan its target afterwards
    /// (LUN 0 gone: the spec asks for a rescan of the target).
    RemoveDevice {
        target: u32,
        lun: u64,
        then_scan_target: bool,
    },
    /// Revalidate one device (`scsi_rescan_device()`): capacity, mode.
    RescanDevice { target: u32, lun: u64 },
    /// The event was not understood; the value is its type and reason.
    Unsupported { event: u32, reason: u32 },
}

/// A decoded event: what to do, and whether events were lost before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// [`event::EVENTS_MISSED`] was set: sweep all devices, then scan.
    pub(crate) missed: bool,
    /// The action for the event itself.
    pub(crate) action: EventAction,
}

/// Decodes an event buffer the device filled. The used length is not
/// trusted either way: vhost-scsi reports 0 for events it wrote, and the
/// driver zeroes each buffer before posting it, so one the device did not
/// write reads as "no event". Returns `None` when `buf` is shorter than an
/// event.
pub(crate) fn parse_event(buf: &[u8]) -> Option<Event> {
    let raw = buf.get(..EVENT_SIZE as usize)?;
    let kind = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let mut lun = [0u8; 8];
    lun.copy_from_slice(&raw[4..12]);
    let reason = u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]);
    let missed = kind & event::EVENTS_MISSED != 0;
    let kind = kind & !event::EVENTS_MISSED;
    let unsupported = EventAction::Unsupported {
        event: kind,
        reason,
    };
    let action = match kind {
        event::NO_EVENT => EventAction::None,
        event::TRANSPORT_RESET | event::PARAM_CHANGE => match decode_lun(&lun) {
            None => unsupported,
            Some((target, lun)) => match (kind, reason) {
                (event::TRANSPORT_RESET, event::RESET_RESCAN) if lun == 0 => {
                    EventAction::ScanTarget { target }
                }
                (event::TRANSPORT_RESET, event::RESET_RESCAN) => {
                    EventAction::AddDevice { target, lun }
                }
                (event::TRANSPORT_RESET, event::RESET_REMOVED) => EventAction::RemoveDevice {
                    target,
                    lun,
                    then_scan_target: lun == 0,
                },
                // The device was reset: revalidate it (C ignores this).
                (event::TRANSPORT_RESET, event::RESET_HARD) => {
                    EventAction::RescanDevice { target, lun }
                }
                (event::PARAM_CHANGE, _) => param_change(target, lun, reason),
                _ => unsupported,
            },
        },
        _ => unsupported,
    };
    Some(Event { missed, action })
}

/// PARAM_CHANGE: the reason carries the ASC in bits 0-7 and the ASCQ in
/// bits 8-15 of the unit attention the device also reports.
fn param_change(target: u32, lun: u64, reason: u32) -> EventAction {
    let asc = reason & 0xff;
    let ascq = (reason >> 8) & 0xff;
    match (asc, ascq) {
        // Mode parameters changed, log parameters changed, capacity changed.
        (0x2a, 0x00) | (0x2a, 0x01) | (0x2a, 0x09) => EventAction::RescanDevice { target, lun },
        // REPORTED LUNS DATA HAS CHANGED: the LUN set of the target moved.
        (0x3f, 0x0e) => EventAction::ScanTarget { target },
        _ => EventAction::None,
    }
}

/// Size of a TMF request (`struct virtio_scsi_ctrl_tmf_req`).
pub(crate) const TMF_REQ_SIZE: usize = 24;
/// Size of a TMF response (`struct virtio_scsi_ctrl_tmf_resp`).
pub(crate) const TMF_RESP_SIZE: usize = 1;
/// Control request type: task management (`VIRTIO_SCSI_T_TMF`).
pub(crate) const T_TMF: u32 = 0;

/// Task management functions (`VIRTIO_SCSI_T_TMF_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Tmf {
    /// ABORT TASK: one command, by tag.
    AbortTask = 0,
    /// I_T NEXUS RESET: every LU of the target.
    ItNexusReset = 4,
    /// LOGICAL UNIT RESET.
    LogicalUnitReset = 5,
}

impl Tmf {
    /// Name for log messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tmf::AbortTask => "ABORT TASK",
            Tmf::ItNexusReset => "I_T NEXUS RESET",
            Tmf::LogicalUnitReset => "LOGICAL UNIT RESET",
        }
    }
}

/// Writes a TMF request: type, subtype, LUN, tag (`virtscsi_tmf()` and its
/// callers in C).
pub(crate) fn write_tmf_req(buf: &mut [u8; TMF_REQ_SIZE], tmf: Tmf, lun: &[u8; 8], tag: u64) {
    buf[0..4].copy_from_slice(&T_TMF.to_le_bytes());
    buf[4..8].copy_from_slice(&(tmf as u32).to_le_bytes());
    buf[8..16].copy_from_slice(lun);
    buf[16..24].copy_from_slice(&tag.to_le_bytes());
}

/// Response byte a TMF response buffer holds until the device writes it.
pub(crate) const TMF_RESP_INIT: [u8; TMF_RESP_SIZE] = [RESPONSE_UNWRITTEN];

/// Whether a TMF response (its buffer started as [`TMF_RESP_INIT`]) means
/// the function completed: `OK` (FUNCTION COMPLETE) or `FUNCTION_SUCCEEDED`.
/// The used length is not consulted (vhost-scsi reports 0); a response the
/// device never wrote is a failure.
pub(crate) fn tmf_succeeded(resp: &[u8]) -> bool {
    matches!(
        resp.first(),
        Some(&response::OK) | Some(&response::FUNCTION_SUCCEEDED)
    )
}

/// Whether INQUIRY data from an events-missed sweep says the LUN is gone:
/// the peripheral qualifier is not 0 (`virtscsi_rescan_hotunplug()`).
pub(crate) fn inquiry_says_gone(inq: &[u8]) -> bool {
    inq.first().map_or(true, |b| b >> 5 != 0)
}

/// Self-tests of this module, shared by two runners: `cargo test` on the host
/// (`tools/vscsi-protocol`) and the KUnit suite `virtio_scsi_rs_protocol` in
/// the kernel (`kunit/`). Each case returns the first failed check.
#[cfg(any(test, vscsi_kunit))]
pub(crate) mod selftest {
    use super::*;

    /// A failed check: its line in this file and its expression.
    #[derive(Debug)]
    pub(crate) struct Failure {
        /// Line of the check.
        pub(crate) line: u32,
        /// The expression that was false.
        pub(crate) expr: &'static str,
    }

    /// Result of a case.
    pub(crate) type CaseResult = Result<(), Failure>;

    macro_rules! check {
        ($cond:expr) => {
            if !$cond {
                return Err(Failure {
                    line: line!(),
                    expr: stringify!($cond),
                });
            }
        };
    }

    macro_rules! cases {
        ($($name:ident),+ $(,)?) => {
            /// Every case, by name. A `static`, so that the table is one
            /// object at one address (the KUnit runner steps through it by
            /// pointer); every use of a `const` may be a copy of its own.
            pub(crate) static CASES: &[(&str, fn() -> CaseResult)] = &[$((stringify!($name), $name)),+];

            #[cfg(test)]
            mod host {
                $(
                    #[test]
                    fn $name() {
                        if let Err(f) = super::$name() {
                            panic!("protocol.rs:{}: check failed: {}", f.line, f.expr);
                        }
                    }
                )+
            }
        };
    }

    cases!(
        config_offsets_match_the_specification,
        feature_bits_match_the_specification,
        qemu_defaults_match_the_c_driver,
        zero_values_are_clamped_and_reported,
        absurd_values_are_bounded,
        seg_max_with_indirect_fits_u16,
        queue_limits_fit_the_midlayer_fields,
        the_smallest_request_ring_bounds_a_command,
        rings_without_room_for_a_command_are_refused,
        protection_information_shares_the_ring,
        every_field_at_zero_and_at_its_maximum,
        config_changes_name_each_changed_field,
        every_clamp_has_a_distinct_bit_and_text,
        lun_encoding_is_flat_space,
        lun_decoding_gives_linux_lun_numbers,
        request_header_layout,
        request_header_with_pi_layout,
        response_parsing_clamps_sense_and_resid,
        plain_ok_responses_need_no_parsing,
        response_parsing_without_used_len,
        response_mapping,
        events_decode_to_actions,
        events_missed_and_short_buffers,
        param_change_reasons,
        tmf_request_layout_and_results,
    );

    fn config_offsets_match_the_specification() -> CaseResult {
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
        check!(offsets == [0, 4, 8, 12, 16, 20, 24, 28, 30, 32]);
        check!(core::mem::size_of::<Config>() == 36);
        Ok(())
    }

    fn feature_bits_match_the_specification() -> CaseResult {
        check!(
            [
                feature::INOUT,
                feature::HOTPLUG,
                feature::CHANGE,
                feature::T10_PI
            ] == [0, 1, 2, 3]
        );
        Ok(())
    }

    fn qemu_config() -> Config {
        Config {
            num_queues: 2,
            seg_max: 254,
            max_sectors: 0xffff,
            cmd_per_lun: 128,
            event_info_size: 16,
            sense_size: 96,
            cdb_size: 32,
            max_channel: 0,
            max_target: 255,
            max_lun: 16383,
        }
    }

    fn qemu_defaults_match_the_c_driver() -> CaseResult {
        let l = host_limits(&qemu_config(), 2, 256, true, false);
        check!(l.clamped == 0);
        check!(l.num_queues == 2 && l.sg_tablesize == 254 && l.max_sectors == 0xffff);
        check!(l.cmd_per_lun == 128 && l.can_queue == 256);
        check!(l.max_id == 256 && l.max_lun == 32768 && l.event_info_size == 16);
        Ok(())
    }

    fn zero_values_are_clamped_and_reported() -> CaseResult {
        let cfg = Config {
            num_queues: 0,
            seg_max: 0,
            max_sectors: 0,
            cmd_per_lun: 0,
            event_info_size: 0,
            ..qemu_config()
        };
        let l = host_limits(&cfg, 4, 256, true, false);
        check!(l.num_queues == 1 && l.sg_tablesize == 1);
        check!(l.max_sectors == 0xffff && l.cmd_per_lun == 1);
        check!(l.event_info_size == 16);
        for c in [
            Clamp::NumQueuesZero,
            Clamp::SegMaxZero,
            Clamp::MaxSectorsZero,
            Clamp::CmdPerLunZero,
            Clamp::EventInfoSize,
        ] {
            check!(l.clamped & c as u32 != 0);
        }
        Ok(())
    }

    fn absurd_values_are_bounded() -> CaseResult {
        let cfg = Config {
            num_queues: u32::MAX,
            seg_max: u32::MAX,
            max_sectors: 3,
            cmd_per_lun: u32::MAX,
            event_info_size: u32::MAX,
            max_channel: 7,
            max_target: u16::MAX,
            max_lun: u32::MAX,
            ..qemu_config()
        };
        let l = host_limits(&cfg, 8, 1024, false, false);
        check!(l.num_queues == 8);
        check!(l.sg_tablesize == 1022);
        check!(l.max_sectors == 8);
        check!(l.can_queue == 341 && l.cmd_per_lun == 341);
        check!(l.max_id == 256 && l.max_lun == 0x3fff + 1 + 0x4000);
        check!(l.event_info_size == EVENT_INFO_SIZE_MAX);
        let all = Clamp::ALL.iter().fold(0, |a, c| a | *c as u32);
        let zero = Clamp::NumQueuesZero as u32
            | Clamp::SegMaxZero as u32
            | Clamp::MaxSectorsZero as u32
            | Clamp::CmdPerLunZero as u32;
        check!(l.clamped == all & !zero);
        Ok(())
    }

    fn seg_max_with_indirect_fits_u16() -> CaseResult {
        let cfg = Config {
            seg_max: 1 << 20,
            ..qemu_config()
        };
        check!(host_limits(&cfg, 1, 256, true, false).sg_tablesize == u16::MAX);
        check!(host_limits(&cfg, 1, 4, false, false).sg_tablesize == 2);
        check!(host_limits(&cfg, 1, 1, false, false).sg_tablesize == 1);
        Ok(())
    }

    /// `can_queue` and `cmd_per_lun` go into an `int` and a `short` of
    /// `struct Scsi_Host`: a ring of 32768 (the largest split ring) with
    /// indirect descriptors must not turn either into a failed probe.
    fn queue_limits_fit_the_midlayer_fields() -> CaseResult {
        let cfg = Config {
            cmd_per_lun: 32768,
            ..qemu_config()
        };
        let l = host_limits(&cfg, 2, 32768, true, false);
        check!(l.can_queue == 32768 && l.cmd_per_lun == 32767);
        check!(l.clamped == Clamp::CmdPerLunLarge as u32);
        check!(i16::try_from(l.cmd_per_lun).is_ok() && i32::try_from(l.can_queue).is_ok());
        // Below the limit nothing changes.
        let cfg = Config {
            cmd_per_lun: 32767,
            ..qemu_config()
        };
        let l = host_limits(&cfg, 2, 32768, true, false);
        check!(l.cmd_per_lun == 32767 && l.clamped == 0);
        // A ring size no virtio transport offers still fits.
        let l = host_limits(&qemu_config(), 2, u32::MAX, true, false);
        check!(l.can_queue == i32::MAX as u32 && l.cmd_per_lun == 128 && l.clamped == 0);
        let l = host_limits(&qemu_config(), 2, u32::MAX, false, false);
        check!(l.can_queue == u32::MAX / 3 && l.clamped == 0);
        Ok(())
    }

    /// Every request ring has a size of its own: without indirect
    /// descriptors the limits come from the smallest, and the largest
    /// command then fits each ring; the first ring's size would let through
    /// commands a smaller later ring can never take.
    fn the_smallest_request_ring_bounds_a_command() -> CaseResult {
        let rings = [256, 256, 64, 128, 64];
        check!(smallest_ring(rings) == Some((2, 64)));
        check!(smallest_ring([128]) == Some((0, 128)));
        check!(smallest_ring([]).is_none());
        let (_, ring) = smallest_ring(rings).unwrap_or_default();
        let l = host_limits(&qemu_config(), 2, ring, false, false);
        check!(l.sg_tablesize == 62 && l.ring_need == 64);
        check!(rings.iter().all(|&r| l.ring_need <= r));
        let first = host_limits(&qemu_config(), 2, rings[0], false, false);
        check!(first.ring_need > ring);
        // With indirect descriptors a command takes one slot, whatever the
        // ring: QEMU's default, C's limits.
        let l = host_limits(&qemu_config(), 2, ring, true, false);
        check!(l.sg_tablesize == 254 && l.sg_prot_tablesize == 0 && l.ring_need == 1);
        Ok(())
    }

    /// Without indirect descriptors a command with data takes the two
    /// headers and a data segment (and a protection segment with PI): a
    /// smaller ring can never take one, so its limits say it does not fit.
    fn rings_without_room_for_a_command_are_refused() -> CaseResult {
        let cfg = qemu_config();
        for ring in 0..3 {
            check!(host_limits(&cfg, 1, ring, false, false).ring_need > ring);
        }
        let l = host_limits(&cfg, 1, 3, false, false);
        check!(l.sg_tablesize == 1 && l.ring_need == 3);
        for ring in 0..4 {
            check!(host_limits(&cfg, 1, ring, false, true).ring_need > ring);
        }
        let l = host_limits(&cfg, 1, 4, false, true);
        check!(l.sg_tablesize == 1 && l.sg_prot_tablesize == 1 && l.ring_need == 4);
        // With indirect descriptors any ring takes a command.
        check!(host_limits(&cfg, 1, 1, true, false).ring_need == 1);
        check!(host_limits(&cfg, 1, 1, true, true).ring_need == 1);
        Ok(())
    }

    /// With T10 PI and without indirect descriptors, protection segments go
    /// on the ring beside the data: both caps together fit the ring, and the
    /// protection cap is never below the data cap (the midlayer's BUG_ON).
    /// Without PI, or with indirect descriptors, the protection cap is the
    /// midlayer's default, as in C.
    fn protection_information_shares_the_ring() -> CaseResult {
        let l = host_limits(&qemu_config(), 2, 256, false, true);
        check!(l.sg_tablesize == 127 && l.sg_prot_tablesize == 127 && l.ring_need == 256);
        check!(l.clamped & Clamp::SegMaxLarge as u32 != 0);
        let small = Config {
            seg_max: 8,
            ..qemu_config()
        };
        let l = host_limits(&small, 1, 256, false, true);
        check!(l.sg_tablesize == 8 && l.sg_prot_tablesize == 246 && l.ring_need == 256);
        for ring in 4..=300 {
            for seg_max in [1, 2, ring / 2, ring, u32::MAX] {
                let cfg = Config {
                    seg_max,
                    ..qemu_config()
                };
                let l = host_limits(&cfg, 1, ring, false, true);
                let (sg, prot) = (u32::from(l.sg_tablesize), u32::from(l.sg_prot_tablesize));
                check!(sg >= 1 && prot >= sg);
                check!(CMD_HDR_DESCS + sg + prot <= ring && l.ring_need <= ring);
            }
        }
        check!(host_limits(&qemu_config(), 1, 256, false, false).sg_prot_tablesize == 0);
        let l = host_limits(&qemu_config(), 1, 256, true, true);
        check!(l.sg_tablesize == 254 && l.sg_prot_tablesize == 0 && l.ring_need == 1);
        Ok(())
    }

    /// Each configuration field alone at 0 and at its type's maximum, on a
    /// small and a large ring, with and without indirect descriptors: every
    /// limit stays in the range the midlayer and the rings can take.
    fn every_field_at_zero_and_at_its_maximum() -> CaseResult {
        type Set = fn(&mut Config, bool);
        let fields: [Set; 10] = [
            |c, max| c.num_queues = if max { u32::MAX } else { 0 },
            |c, max| c.seg_max = if max { u32::MAX } else { 0 },
            |c, max| c.max_sectors = if max { u32::MAX } else { 0 },
            |c, max| c.cmd_per_lun = if max { u32::MAX } else { 0 },
            |c, max| c.event_info_size = if max { u32::MAX } else { 0 },
            |c, max| c.sense_size = if max { u32::MAX } else { 0 },
            |c, max| c.cdb_size = if max { u32::MAX } else { 0 },
            |c, max| c.max_channel = if max { u16::MAX } else { 0 },
            |c, max| c.max_target = if max { u16::MAX } else { 0 },
            |c, max| c.max_lun = if max { u32::MAX } else { 0 },
        ];
        for set in fields {
            for max in [false, true] {
                for (cpus, ring, indirect, pi) in [
                    (1, 16, false, false),
                    (1, 16, false, true),
                    (4, 1024, true, false),
                    (4, 1024, true, true),
                    (2, 1, false, false),
                    (2, 3, false, true),
                    (2, 4, false, true),
                    (2, 32768, true, false),
                ] {
                    let mut cfg = qemu_config();
                    set(&mut cfg, max);
                    let l = host_limits(&cfg, cpus, ring, indirect, pi);
                    check!((1..=cpus).contains(&l.num_queues));
                    check!(l.sg_tablesize >= 1);
                    // The largest command fits the ring, unless the ring
                    // is one that no command with data fits (probe then
                    // refuses it).
                    let (sg, prot) = (u32::from(l.sg_tablesize), u32::from(l.sg_prot_tablesize));
                    check!(indirect || l.ring_need == CMD_HDR_DESCS + sg + prot);
                    check!((l.ring_need <= ring) == (indirect || ring >= 3 + u32::from(pi)));
                    check!(!pi || indirect || prot >= sg);
                    check!(l.max_sectors >= 8);
                    check!((1..=ring).contains(&l.can_queue));
                    check!((1..=l.can_queue).contains(&l.cmd_per_lun));
                    check!(i32::try_from(l.can_queue).is_ok());
                    check!(i16::try_from(l.cmd_per_lun).is_ok());
                    check!((1..=256).contains(&l.max_id));
                    check!(l.max_lun <= 0x4000 + 0x3fff + 1);
                    check!((EVENT_SIZE..=EVENT_INFO_SIZE_MAX).contains(&l.event_info_size));
                }
            }
        }
        Ok(())
    }

    fn config_changes_name_each_changed_field() -> CaseResult {
        let old = qemu_config();
        check!(old.changes(&old).next().is_none());
        let mut new = old;
        new.num_queues += 1;
        new.max_target = u16::MAX;
        new.max_lun = 0;
        let mut seen = old.changes(&new);
        check!(seen.next() == Some(("num_queues", old.num_queues, old.num_queues + 1)));
        check!(seen.next() == Some(("max_target", u32::from(old.max_target), 65535)));
        check!(seen.next() == Some(("max_lun", old.max_lun, 0)));
        check!(seen.next().is_none());
        // The names are the specification's, in layout order.
        let names = old.fields().map(|(name, _)| name);
        check!(names[0] == "num_queues" && names[6] == "cdb_size" && names[9] == "max_lun");
        Ok(())
    }

    fn every_clamp_has_a_distinct_bit_and_text() -> CaseResult {
        let mut seen = 0u32;
        for c in Clamp::ALL {
            check!(seen & c as u32 == 0);
            seen |= c as u32;
            check!(!c.describe().is_empty());
        }
        Ok(())
    }

    fn lun_encoding_is_flat_space() -> CaseResult {
        check!(encode_lun(3, 0) == Some([1, 3, 0x40, 0, 0, 0, 0, 0]));
        check!(encode_lun(255, 0x3fff) == Some([1, 255, 0x7f, 0xff, 0, 0, 0, 0]));
        check!(encode_lun(1, 300) == Some([1, 1, 0x41, 0x2c, 0, 0, 0, 0]));
        // Linux's number for flat-space LUN 300 encodes the same.
        check!(encode_lun(1, 0x412c) == encode_lun(1, 300));
        check!(encode_lun(0, 0x7fff) == Some([1, 0, 0x7f, 0xff, 0, 0, 0, 0]));
        check!(encode_lun(256, 0).is_none());
        check!(encode_lun(0, 0x8000).is_none());
        Ok(())
    }

    fn lun_decoding_gives_linux_lun_numbers() -> CaseResult {
        // QEMU's events: peripheral method below 256, flat above.
        check!(decode_lun(&[1, 2, 0, 5, 0, 0, 0, 0]) == Some((2, 5)));
        check!(decode_lun(&[1, 7, 0x41, 0x2c, 0, 0, 0, 0]) == Some((7, 0x412c)));
        // Decoding then encoding gives the same field back for flat LUNs.
        for (t, l) in [(0, 0x4000), (255, 0x7fff), (9, 0x4100)] {
            let field = encode_lun(t, l);
            check!(field.is_some_and(|f| decode_lun(&f) == Some((t, l))));
        }
        check!(decode_lun(&[0, 2, 0, 5, 0, 0, 0, 0]).is_none());
        check!(decode_lun(&[1, 2, 0x80, 5, 0, 0, 0, 0]).is_none());
        check!(decode_lun(&[1, 2, 0x40, 5, 0, 0, 0, 1]).is_none());
        Ok(())
    }

    /// A CDB field holding `cdb`, zeros after it (as the midlayer keeps it).
    fn cdb_field(cdb: &[u8]) -> [u8; CDB_FIELD_SIZE] {
        let mut f = [0; CDB_FIELD_SIZE];
        f[..cdb.len()].copy_from_slice(cdb);
        f
    }

    fn request_header_layout() -> CaseResult {
        let mut buf = [0xaau8; 64];
        let lun = [1, 2, 0x40, 5, 0, 0, 0, 0];
        let cdb = [0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0];
        let f = cdb_field(&cdb);
        check!(write_cmd_req(&mut buf, &lun, 0x0102_0304_0506_0708, &f) == Some(51));
        check!(buf[0..8] == lun);
        check!(buf[8..16] == [8, 7, 6, 5, 4, 3, 2, 1]);
        check!(buf[16..19] == [0, 0, 0]);
        check!(buf[19..29] == cdb);
        check!(buf[29..51].iter().all(|&b| b == 0));
        check!(buf[51..].iter().all(|&b| b == 0xaa));
        check!(write_cmd_req(&mut buf[..50], &lun, 0, &f).is_none());
        // The field goes whole, every byte in its place.
        let f: [u8; CDB_FIELD_SIZE] = core::array::from_fn(|i| i as u8 + 1);
        check!(write_cmd_req(&mut buf, &lun, 0, &f) == Some(51));
        check!(buf[19..51] == f);
        check!(buf[51..].iter().all(|&b| b == 0xaa));
        Ok(())
    }

    fn request_header_with_pi_layout() -> CaseResult {
        let mut buf = [0xaau8; 64];
        let lun = [1, 2, 0x40, 5, 0, 0, 0, 0];
        let cdb = [0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0];
        let f = cdb_field(&cdb);
        let n = write_cmd_req_pi(&mut buf, &lun, 7, 0x0102_0304, 0, &f);
        check!(n == Some(59));
        check!(buf[0..8] == lun);
        check!(buf[8..16] == [7, 0, 0, 0, 0, 0, 0, 0]);
        check!(buf[16..19] == [0, 0, 0]);
        check!(buf[19..23] == [4, 3, 2, 1]);
        check!(buf[23..27] == [0, 0, 0, 0]);
        check!(buf[27..37] == cdb);
        check!(buf[37..59].iter().all(|&b| b == 0));
        check!(buf[59..].iter().all(|&b| b == 0xaa));
        check!(write_cmd_req_pi(&mut buf[..58], &lun, 0, 0, 0, &f).is_none());
        // Fits in the driver's request area in front of the response.
        check!(CMD_REQ_PI_SIZE <= 64);
        Ok(())
    }

    fn resp(sense_len: u32, resid: u32, status: u8, response: u8) -> [u8; CMD_RESP_SIZE] {
        let mut b = [0u8; CMD_RESP_SIZE];
        b[0..4].copy_from_slice(&sense_len.to_le_bytes());
        b[4..8].copy_from_slice(&resid.to_le_bytes());
        b[10] = status;
        b[11] = response;
        b
    }

    fn response_parsing_clamps_sense_and_resid() -> CaseResult {
        let r = parse_cmd_resp(&resp(18, 512, 2, 0), 108, 4096);
        check!(
            r == Some(CmdResp {
                sense_len: 18,
                resid: 512,
                status: 2,
                response: 0,
                clamped: false
            })
        );
        let r = parse_cmd_resp(&resp(1000, 9999, 0, 0), 108, 4096);
        check!(r.is_some_and(|r| r.sense_len == 96 && r.resid == 4096 && r.clamped));
        // Sense beyond what the device wrote is not trusted.
        let r = parse_cmd_resp(&resp(18, 0, 2, 0), 20, 0);
        check!(r.is_some_and(|r| r.sense_len == 8 && r.clamped));
        check!(parse_cmd_resp(&[0u8; 4], 108, 0).is_none());
        Ok(())
    }

    fn plain_ok_responses_need_no_parsing() -> CaseResult {
        check!(cmd_resp_plain_ok(&resp(0, 0, 0, response::OK)) == Some(0));
        check!(cmd_resp_plain_ok(&resp(0, 0, SAM_STAT_CHECK_CONDITION, response::OK)) == Some(2));
        // Sense, a residual, another response: parsed, as is a short buffer.
        check!(cmd_resp_plain_ok(&resp(1, 0, 0, response::OK)).is_none());
        check!(cmd_resp_plain_ok(&resp(0, 1 << 24, 0, response::OK)).is_none());
        check!(cmd_resp_plain_ok(&resp(0, 0, 0, response::BAD_TARGET)).is_none());
        check!(cmd_resp_plain_ok(&resp(0, 0, 0, RESPONSE_UNWRITTEN)).is_none());
        check!(cmd_resp_plain_ok(&resp(0, 0, 0, response::OK)[..CMD_RESP_FIXED - 1]).is_none());
        // What it says is what parsing and mapping say.
        for status in [0, SAM_STAT_CHECK_CONDITION, SAM_STAT_RESERVATION_CONFLICT] {
            let b = resp(0, 0, status, response::OK);
            let r = parse_cmd_resp(&b, CMD_RESP_SIZE as u32, 4096);
            let o = map_response(response::OK, status);
            check!(r.map(|r| (r.sense_len, r.resid, r.clamped)) == Some((0, 0, false)));
            check!((o.host, o.status, o.unknown_response) == (HostByte::Ok, status, false));
            check!(cmd_resp_plain_ok(&b) == Some(status));
        }
        Ok(())
    }

    fn response_parsing_without_used_len() -> CaseResult {
        // vhost-scsi: used length 0, header written; the sense is bounded by
        // the buffer and the 96 bytes of the format only.
        for used in [0, 1, 11] {
            let r = parse_cmd_resp(&resp(18, 512, 2, 0), used, 4096);
            check!(r.is_some_and(|r| r.sense_len == 18 && r.resid == 512 && r.status == 2));
            let r = parse_cmd_resp(&resp(200, 0, 2, 0), used, 0);
            check!(r.is_some_and(|r| r.sense_len == 96 && r.clamped));
        }
        // A prepared header the device never wrote is an unknown response
        // (an error), whatever the buffer held before.
        let mut b = resp(18, 512, 0, 0);
        clear_cmd_resp(&mut b);
        let r = parse_cmd_resp(&b, 0, 4096);
        check!(r.is_some_and(|r| r.sense_len == 0 && r.resid == 0 && r.status == 0));
        check!(r.is_some_and(|r| map_response(r.response, r.status).unknown_response));
        check!(r.is_some_and(|r| map_response(r.response, r.status).host == HostByte::Error));
        Ok(())
    }

    fn response_mapping() -> CaseResult {
        let host = |r| map_response(r, 0).host;
        check!(host(response::OK) == HostByte::Ok);
        check!(host(response::OVERRUN) == HostByte::Error);
        check!(host(response::ABORTED) == HostByte::Abort);
        check!(host(response::BAD_TARGET) == HostByte::BadTarget);
        check!(host(response::RESET) == HostByte::Reset);
        check!(host(response::BUSY) == HostByte::BusBusy);
        check!(host(response::TRANSPORT_FAILURE) == HostByte::TransportDisrupted);
        check!(host(response::TARGET_FAILURE) == HostByte::BadTarget);
        check!(host(response::FAILURE) == HostByte::Error);
        check!(
            map_response(response::INCORRECT_LUN, 0)
                == Outcome {
                    host: HostByte::NoConnect,
                    status: 0,
                    unknown_response: false
                }
        );
        check!(
            map_response(response::NEXUS_FAILURE, 0)
                == Outcome {
                    host: HostByte::Ok,
                    status: SAM_STAT_RESERVATION_CONFLICT,
                    unknown_response: false
                }
        );
        check!(
            map_response(response::OK, SAM_STAT_CHECK_CONDITION).status == SAM_STAT_CHECK_CONDITION
        );
        for r in [
            response::FUNCTION_SUCCEEDED,
            response::FUNCTION_REJECTED,
            13,
            255,
        ] {
            check!(
                map_response(r, 0)
                    == Outcome {
                        host: HostByte::Error,
                        status: 0,
                        unknown_response: true
                    }
            );
        }
        Ok(())
    }

    fn ev(kind: u32, lun: [u8; 8], reason: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&kind.to_le_bytes());
        b[4..12].copy_from_slice(&lun);
        b[12..16].copy_from_slice(&reason.to_le_bytes());
        b
    }

    fn action(b: &[u8; 16]) -> Option<EventAction> {
        parse_event(b).map(|e| e.action)
    }

    fn events_decode_to_actions() -> CaseResult {
        use event::*;
        // Target 3, LUN 0 (as QEMU encodes it for LUN < 256).
        let t3l0 = [1, 3, 0, 0, 0, 0, 0, 0];
        let t3l5 = [1, 3, 0, 5, 0, 0, 0, 0];
        // LUN 300 in the flat format: Linux LUN 0x412c.
        let t7l300 = [1, 7, 0x41, 0x2c, 0, 0, 0, 0];
        check!(
            action(&ev(TRANSPORT_RESET, t3l0, RESET_RESCAN))
                == Some(EventAction::ScanTarget { target: 3 })
        );
        check!(
            action(&ev(TRANSPORT_RESET, t3l5, RESET_RESCAN))
                == Some(EventAction::AddDevice { target: 3, lun: 5 })
        );
        check!(
            action(&ev(TRANSPORT_RESET, t7l300, RESET_REMOVED))
                == Some(EventAction::RemoveDevice {
                    target: 7,
                    lun: 0x412c,
                    then_scan_target: false
                })
        );
        check!(
            action(&ev(TRANSPORT_RESET, t3l0, RESET_REMOVED))
                == Some(EventAction::RemoveDevice {
                    target: 3,
                    lun: 0,
                    then_scan_target: true
                })
        );
        check!(
            action(&ev(TRANSPORT_RESET, t3l5, RESET_HARD))
                == Some(EventAction::RescanDevice { target: 3, lun: 5 })
        );
        check!(
            action(&ev(TRANSPORT_RESET, t3l5, 7))
                == Some(EventAction::Unsupported {
                    event: TRANSPORT_RESET,
                    reason: 7
                })
        );
        check!(
            action(&ev(ASYNC_NOTIFY, t3l5, 16))
                == Some(EventAction::Unsupported {
                    event: ASYNC_NOTIFY,
                    reason: 16
                })
        );
        // A LUN field the format does not allow is not acted on.
        check!(matches!(
            action(&ev(TRANSPORT_RESET, [2, 3, 0, 0, 0, 0, 0, 0], RESET_RESCAN)),
            Some(EventAction::Unsupported { .. })
        ));
        check!(action(&ev(NO_EVENT, [0; 8], 0)) == Some(EventAction::None));
        Ok(())
    }

    fn events_missed_and_short_buffers() -> CaseResult {
        use event::*;
        let e = parse_event(&ev(NO_EVENT | EVENTS_MISSED, [0; 8], 0));
        check!(
            e == Some(Event {
                missed: true,
                action: EventAction::None
            })
        );
        let e = parse_event(&ev(
            TRANSPORT_RESET | EVENTS_MISSED,
            [1, 0, 0, 2, 0, 0, 0, 0],
            RESET_RESCAN,
        ));
        check!(
            e.is_some_and(|e| e.missed && e.action == EventAction::AddDevice { target: 0, lun: 2 })
        );
        // A zeroed buffer the device gave back unwritten is no event; a
        // short buffer is nothing.
        check!(parse_event(&[0u8; 16]).is_some_and(|e| !e.missed && e.action == EventAction::None));
        check!(parse_event(&[0u8; 15]).is_none());
        Ok(())
    }

    fn param_change_reasons() -> CaseResult {
        let lun = [1, 2, 0, 1, 0, 0, 0, 0];
        let change = |asc: u32, ascq: u32| action(&ev(event::PARAM_CHANGE, lun, asc | ascq << 8));
        for ascq in [0, 1, 9] {
            check!(change(0x2a, ascq) == Some(EventAction::RescanDevice { target: 2, lun: 1 }));
        }
        check!(change(0x3f, 0x0e) == Some(EventAction::ScanTarget { target: 2 }));
        check!(change(0x2a, 0x02) == Some(EventAction::None));
        check!(change(0x29, 0x00) == Some(EventAction::None));
        Ok(())
    }

    fn tmf_request_layout_and_results() -> CaseResult {
        let mut b = [0xffu8; TMF_REQ_SIZE];
        let lun = encode_lun(4, 9).unwrap_or([0; 8]);
        write_tmf_req(&mut b, Tmf::AbortTask, &lun, 0x0001_0023);
        check!(b[0..4] == [0, 0, 0, 0]);
        check!(b[4..8] == [0, 0, 0, 0]);
        check!(b[8..16] == [1, 4, 0x40, 9, 0, 0, 0, 0]);
        check!(b[16..24] == [0x23, 0, 1, 0, 0, 0, 0, 0]);
        write_tmf_req(&mut b, Tmf::LogicalUnitReset, &lun, 0);
        check!(b[4..8] == [5, 0, 0, 0]);
        write_tmf_req(&mut b, Tmf::ItNexusReset, &lun, 0);
        check!(b[4..8] == [4, 0, 0, 0]);
        check!(tmf_succeeded(&[response::OK]));
        check!(tmf_succeeded(&[response::FUNCTION_SUCCEEDED]));
        check!(!tmf_succeeded(&[response::FUNCTION_REJECTED]));
        check!(!tmf_succeeded(&[response::BAD_TARGET]));
        check!(!tmf_succeeded(&TMF_RESP_INIT));
        check!(inquiry_says_gone(&[0x7f, 0]));
        check!(inquiry_says_gone(&[0x20]));
        check!(!inquiry_says_gone(&[0x00, 0x80]));
        check!(!inquiry_says_gone(&[0x05]));
        check!(inquiry_says_gone(&[]));
        Ok(())
    }
}
