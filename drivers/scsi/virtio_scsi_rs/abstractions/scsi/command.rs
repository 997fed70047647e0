// SPDX-License-Identifier: GPL-2.0

//! SCSI commands (`struct scsi_cmnd`) as the driver owns them between
//! `queuecommand` and completion, with their private area.
//!
//! C header: [`include/scsi/scsi_cmnd.h`](srctree/include/scsi/scsi_cmnd.h)

use super::*;
use crate::abstractions::bindings;
use crate::abstractions::scatterlist::{Brand, Lend, ScatterList};
use core::marker::PhantomData;
use core::mem::size_of;
use core::ops::Range;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::prelude::*;

/// The size of the midlayer's sense buffer (`SCSI_SENSE_BUFFERSIZE` of
/// `include/scsi/scsi_device.h`, generated): it sizes the slice
/// [`Command::private_and_sense`] makes of the buffer, so it must be the
/// midlayer's own figure, never a copy.
const SENSE_BUFFERSIZE: usize = bindings::SCSI_SENSE_BUFFERSIZE as usize;

/// Host byte values (`enum scsi_host_status`) the abstraction exposes.
///
/// # Examples
///
/// Failing a command the driver will not send:
///
/// ```ignore
/// fn fail_cmd(mut cmd: Command<VirtioScsi>, host: HostByte) -> Result<(), QueueError<VirtioScsi>> {
///     cmd.set_result(host, 0);
///     cmd.done();
///     Ok(())
/// }
///
/// if cmd.data_direction() == DataDirection::Bidirectional {
///     return fail_cmd(cmd, HostByte::Error);
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum HostByte {
    /// `DID_OK`.
    Ok = bindings::scsi_host_status_DID_OK as u8,
    /// `DID_NO_CONNECT`.
    NoConnect = bindings::scsi_host_status_DID_NO_CONNECT as u8,
    /// `DID_BUS_BUSY`.
    BusBusy = bindings::scsi_host_status_DID_BUS_BUSY as u8,
    /// `DID_BAD_TARGET`.
    BadTarget = bindings::scsi_host_status_DID_BAD_TARGET as u8,
    /// `DID_ABORT`.
    Abort = bindings::scsi_host_status_DID_ABORT as u8,
    /// `DID_ERROR`.
    Error = bindings::scsi_host_status_DID_ERROR as u8,
    /// `DID_RESET`.
    Reset = bindings::scsi_host_status_DID_RESET as u8,
    /// `DID_TIME_OUT`: the midlayer hands the command to its error handler.
    TimeOut = bindings::scsi_host_status_DID_TIME_OUT as u8,
    /// `DID_TRANSPORT_DISRUPTED`.
    TransportDisrupted = bindings::scsi_host_status_DID_TRANSPORT_DISRUPTED as u8,
}

/// The direction of a command's data (`enum dma_data_direction`).
///
/// # Examples
///
/// Protection information travels with the data, in its direction:
///
/// ```ignore
/// let (pi_out, pi_in) = match cmd.data_direction() {
///     DataDirection::ToDevice => (cmd.prot_bytes(), 0),
///     DataDirection::FromDevice => (0, cmd.prot_bytes()),
///     _ => (0, 0),
/// };
/// ```
///
/// The discriminants are the kernel's values, so that reading a command's
/// direction is a load and a range check, not a table lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum DataDirection {
    /// No data.
    None = bindings::dma_data_direction_DMA_NONE,
    /// Data from the initiator to the device (a write).
    ToDevice = bindings::dma_data_direction_DMA_TO_DEVICE,
    /// Data from the device to the initiator (a read).
    FromDevice = bindings::dma_data_direction_DMA_FROM_DEVICE,
    /// Both ways.
    Bidirectional = bindings::dma_data_direction_DMA_BIDIRECTIONAL,
}

/// `scsi_cmd_to_rq()`: the request a command is the driver payload of.
///
/// # Safety
///
/// `sc` must be a command the midlayer allocated (right behind its request).
pub(super) unsafe fn cmd_to_rq(sc: *mut bindings::scsi_cmnd) -> *mut bindings::request {
    // SAFETY: The caller guarantees the request lies right before `sc`.
    unsafe { sc.cast::<u8>().sub(size_of::<bindings::request>()) }.cast()
}

/// Bytes at the front of every command's private area that the abstraction
/// keeps for itself (a [`CmdState`], then the [`HdrSgs`]); the driver's
/// `T::CMD_SIZE` bytes follow, 8-byte aligned like the area itself.
pub(super) const CMD_STATE_SIZE: usize = HDR_SGS_OFF + size_of::<HdrSgs>();

/// Offset of the [`HdrSgs`] in the private area, after the [`CmdState`].
const HDR_SGS_OFF: usize = 8;

/// The abstraction's state of a command, at the front of its private area.
///
/// `in_device` is set when the command goes on a device queue and cleared
/// when the queue gives it back (the device answered, or was reset). While
/// it is set the device may still write the command's response and data:
/// the command must not be issued again, nor its private area handed out.
#[repr(C)]
pub(super) struct CmdState {
    pub(super) in_device: AtomicBool,
}

const _: () = assert!(size_of::<CmdState>() <= HDR_SGS_OFF);
const _: () = assert!(HDR_SGS_OFF % core::mem::align_of::<HdrSgs>() == 0);
const _: () = assert!(CMD_STATE_SIZE % 8 == 0);

/// The scatterlists of a command's request and response headers, kept in
/// its private area from one submission to the next.
///
/// Both headers lie at fixed places of the private area, which stays where
/// it is for as long as the command is allocated, so their single-entry
/// scatterlists come out the same every time: they are built (by
/// `sg_init_one()`) the first time a command is submitted with given header
/// ranges and reused after, sparing two calls per submission. `key` says
/// for which ranges they were built; 0 (the area as `init_cmd_priv` zeroed
/// it) matches no valid ranges, whose ends are never 0.
///
/// Only the abstraction touches them, while it owns the command (in
/// [`CommandRequest`]'s [`Lend::bufs`]); a transport only reads them while
/// the command is lent (a virtqueue copies what they describe into its
/// descriptors).
#[repr(C)]
struct HdrSgs {
    key: u64,
    sg: [bindings::scatterlist; 2],
}

impl HdrSgs {
    /// The key for the header ranges `out` and `in_`, both checked by
    /// [`Command::into_request`] to end within the private area (and so
    /// within `u16`).
    fn key(out: &Range<usize>, in_: &Range<usize>) -> u64 {
        (out.start as u64)
            | ((out.end as u64) << 16)
            | ((in_.start as u64) << 32)
            | ((in_.end as u64) << 48)
    }
}

/// The command's [`HdrSgs`].
///
/// # Safety
///
/// As for [`cmd_area`].
unsafe fn cmd_hdr_sgs(sc: *mut bindings::scsi_cmnd) -> *mut HdrSgs {
    // SAFETY: The area is `CMD_STATE_SIZE` bytes at least (caller
    // contract), which hold the `HdrSgs` at `HDR_SGS_OFF`, suitably aligned
    // (asserted above; the area is 8-byte aligned).
    unsafe { cmd_area(sc).add(HDR_SGS_OFF) }.cast()
}

/// `scsi_cmd_priv()`: the area behind a command, as the template sized it.
///
/// # Safety
///
/// `sc` must be a command the midlayer allocated for a host of a
/// [`Template`] (whose `cmd_size` holds the state and `T::CMD_SIZE`).
pub(super) unsafe fn cmd_area(sc: *mut bindings::scsi_cmnd) -> *mut u8 {
    // SAFETY: The caller guarantees the private area follows the command.
    unsafe { sc.add(1) }.cast()
}

/// The command's [`CmdState`].
///
/// # Safety
///
/// As for [`cmd_area`]; the area must have been initialised by
/// `init_cmd_priv` (it is, before the midlayer uses a command), and the
/// command must stay allocated for `'a`.
pub(super) unsafe fn cmd_state<'a>(sc: *mut bindings::scsi_cmnd) -> &'a CmdState {
    // SAFETY: The state lies at the front of the area, which is 8-byte
    // aligned (it follows `struct scsi_cmnd`, whose size is a multiple of
    // its 8-byte alignment), zeroed by `init_cmd_priv` (a valid `CmdState`)
    // and only accessed atomically.
    unsafe { &*cmd_area(sc).cast::<CmdState>() }
}

/// The driver's `T::CMD_SIZE` bytes of a command, after the state.
///
/// # Safety
///
/// As for [`cmd_area`].
pub(super) unsafe fn cmd_priv(sc: *mut bindings::scsi_cmnd) -> *mut u8 {
    // SAFETY: The template made the area `CMD_STATE_SIZE + T::CMD_SIZE`
    // bytes long at least (caller contract).
    unsafe { cmd_area(sc).add(CMD_STATE_SIZE) }
}

/// A command handed to the driver by [`HostTemplate::queuecommand`].
///
/// The driver owns it until it calls [`Command::done`] (or hands it to a
/// device queue, which gives it back). Dropping it completes it with
/// `DID_ERROR`, so a command is never lost.
///
/// # Invariants
///
/// `sc` is a command that the midlayer gave to `queuecommand` and that has
/// not been completed; its `cmd_size` private area belongs to this value.
///
/// # Examples
///
/// In `queuecommand`: the request header goes into the private area, then the
/// command goes to a virtqueue as a [`CommandRequest`]; completion takes it
/// back:
///
/// ```ignore
/// fn queuecommand(vscsi: &Self, mut cmd: Command<Self>) -> Result<(), QueueError<Self>> {
///     let tag = cmd.unique_tag();
///     let hwq = (tag >> 16) as usize;
///     // Encoded by `slave_alloc` (`SlaveAllocDevice::set_word`).
///     let lun = cmd.device_word().to_le_bytes();
///     let is_last = cmd.is_last();
///     let (cdb, private) = cmd.cdb_and_private();
///     let req = protocol::write_cmd_req(&mut private[..64], &lun, u64::from(tag), cdb);
///     let Some(req_len) = req else {
///         cmd.set_result(HostByte::Error, 0);
///         cmd.done();
///         return Ok(());
///     };
///     let req = match cmd.into_request(0..req_len, 64..64 + protocol::CMD_RESP_SIZE) {
///         Ok(req) => req,
///         // Dropping the command would complete it with `DID_ERROR` too.
///         Err((cmd, _e)) => return Err(QueueError::HostBusy(cmd)),
///     };
///     // ... `req` goes on `vscsi.req_vqs[hwq]`, kicked if `is_last`.
///     Ok(())
/// }
///
/// fn complete_cmd(mut cmd: Command<VirtioScsi>, used_len: u32) {
///     let bufflen = cmd.bufflen();
///     let (private, sense) = cmd.private_and_sense();
///     match protocol::parse_cmd_resp(&private[64..], used_len, bufflen) {
///         Some(r) => {
///             let src = 64 + protocol::CMD_RESP_FIXED;
///             sense[..r.sense_len].copy_from_slice(&private[src..src + r.sense_len]);
///             cmd.set_result(HostByte::Ok, r.status);
///             cmd.set_resid(r.resid);
///         }
///         None => cmd.set_result(HostByte::Error, 0),
///     }
///     cmd.done();
/// }
/// ```
pub(crate) struct Command<T: HostTemplate> {
    sc: NonNull<bindings::scsi_cmnd>,
    _p: PhantomData<T>,
}

// SAFETY: A command may be completed from any context and CPU.
unsafe impl<T: HostTemplate> Send for Command<T> {}

impl<T: HostTemplate> Command<T> {
    pub(super) fn raw(&self) -> *mut bindings::scsi_cmnd {
        self.sc.as_ptr()
    }

    /// Returns the CDB field (`cmnd`, 32 bytes) and the private area,
    /// together (they do not overlap). The field is zero past the CDB: the
    /// midlayer clears it before it builds each command.
    pub(crate) fn cdb_and_private(&mut self) -> (&[u8; 32], &mut [u8]) {
        // SAFETY: The `T::CMD_SIZE` bytes behind an owned command belong to
        // it and, while we own it, to us alone; the CDB lies inside the
        // command, not in that area.
        let private = unsafe { core::slice::from_raw_parts_mut(cmd_priv(self.raw()), T::CMD_SIZE) };
        let sc = self.raw();
        // SAFETY: The command is valid and owned (type invariant), so
        // nobody writes its CDB while we borrow it. Only that field is
        // referenced, through a raw projection: other fields (`state`)
        // change concurrently. `cmnd` lies inside the command, disjoint from
        // the private area behind it.
        let cmnd = unsafe { &*core::ptr::addr_of!((*sc).cmnd) };
        (cmnd, private)
    }

    /// Returns the direction of the data transfer.
    pub(crate) fn data_direction(&self) -> DataDirection {
        // SAFETY: The command is valid and owned (type invariant).
        let raw = unsafe { (*self.raw()).sc_data_direction };
        // The kernel's four values are 0 to 3, the discriminants: the two
        // low bits pick one without a range check (a value the kernel does
        // not define, which the midlayer never stores, still reads as one
        // of the four), so that the compiler sees one value where callers
        // test the direction several times.
        const _: () = assert!(bindings::dma_data_direction_DMA_NONE == 3);
        match raw & 3 {
            bindings::dma_data_direction_DMA_TO_DEVICE => DataDirection::ToDevice,
            bindings::dma_data_direction_DMA_FROM_DEVICE => DataDirection::FromDevice,
            bindings::dma_data_direction_DMA_BIDIRECTIONAL => DataDirection::Bidirectional,
            _ => DataDirection::None,
        }
    }

    /// Returns the word the driver stored in the command's device when it
    /// was set up ([`SlaveAllocDevice::set_word`]), or 0 if it stored none.
    pub(crate) fn device_word(&self) -> u64 {
        // SAFETY: The command is valid and owned; its device outlives it.
        // `hostdata` is only written in `slave_alloc` (by
        // `SlaveAllocDevice::set_word`) or before it (`scsi_alloc_sdev()`),
        // before the device gets its first command; it is read as a plain
        // value, never dereferenced.
        unsafe { (*(*self.raw()).device).hostdata as usize as u64 }
    }

    /// Returns the blk-mq unique tag (`blk_mq_unique_tag()`): the hardware
    /// queue in the upper 16 bits, the tag in the lower.
    ///
    /// Read in place, as the exported `blk_mq_unique_tag()` does, to spare
    /// a call per command.
    #[inline(always)]
    pub(crate) fn unique_tag(&self) -> u32 {
        // SAFETY: The command is owned (type invariant), so it and the
        // request it was allocated behind are valid; an owned command's
        // request has been started on a hardware context, which stays
        // valid while the request is in flight.
        unsafe {
            let rq = cmd_to_rq(self.raw());
            let queue_num = (*(*rq).mq_hctx).queue_num;
            (queue_num << bindings::BLK_MQ_UNIQUE_TAG_BITS)
                | ((*rq).tag as u32 & bindings::BLK_MQ_UNIQUE_TAG_MASK)
        }
    }

    /// Returns whether this is the last command of a batch (`SCMD_LAST`):
    /// the device should be notified.
    pub(crate) fn is_last(&self) -> bool {
        // SAFETY: The command is valid and owned (type invariant).
        let flags = unsafe { (*self.raw()).flags };
        flags & bindings::SCMD_LAST as i32 != 0
    }

    /// Returns the number of data segments (`scsi_sg_count()`).
    pub(crate) fn sg_count(&self) -> u32 {
        // SAFETY: The command is valid and owned (type invariant).
        unsafe { (*self.raw()).sdb.table.nents }
    }

    /// Returns the data length in bytes (`scsi_bufflen()`).
    pub(crate) fn bufflen(&self) -> u32 {
        // SAFETY: The command is valid and owned (type invariant).
        unsafe { (*self.raw()).sdb.length }
    }

    /// Returns the protection information scatterlist, if any travels with
    /// the data (`scsi_prot_sglist()` when `scsi_prot_sg_count()` is not 0).
    fn prot_sgl(&self) -> Option<*mut bindings::scatterlist> {
        // SAFETY: The command is valid and owned (type invariant).
        let prot = unsafe { (*self.raw()).prot_sdb };
        if prot.is_null() {
            return None;
        }
        // SAFETY: A non-null `prot_sdb` is valid while the command is.
        let (sgl, nents) = unsafe { ((*prot).table.sgl, (*prot).table.nents) };
        (nents != 0 && !sgl.is_null()).then_some(sgl)
    }

    /// Returns the number of protection information bytes that travel with
    /// the data (0 without PI), as `pi_bytesout`/`pi_bytesin` want them.
    pub(crate) fn prot_bytes(&self) -> u32 {
        if self.prot_sgl().is_none() {
            return 0;
        }
        // SAFETY: The command is valid and owned; the helper only reads it,
        // its request and its disk's integrity profile.
        unsafe { bindings::vscsi_scsi_prot_bytes(self.raw()) }
    }

    /// Returns the private area and the sense buffer together (separate
    /// allocations, so they do not overlap).
    pub(crate) fn private_and_sense(&mut self) -> (&mut [u8], &mut [u8]) {
        // SAFETY: The template's `cmd_size` (`T::CMD_SIZE`) bytes right
        // behind the command belong to it and, while it is owned, to us.
        let private = unsafe { core::slice::from_raw_parts_mut(cmd_priv(self.raw()), T::CMD_SIZE) };
        // SAFETY: The midlayer allocates `SCSI_SENSE_BUFFERSIZE` bytes of
        // sense buffer for every command, apart from the private area; it is
        // ours while we own the command.
        let sense = unsafe {
            core::slice::from_raw_parts_mut((*self.raw()).sense_buffer, SENSE_BUFFERSIZE)
        };
        (private, sense)
    }

    /// Sets the result (`result`): host byte and SAM status byte.
    pub(crate) fn set_result(&mut self, host: HostByte, status: u8) {
        // SAFETY: The command is valid and owned (type invariant).
        unsafe { (*self.raw()).result = (i32::from(host as u8) << 16) | i32::from(status) };
    }

    /// Sets the residual byte count (`scsi_set_resid()`).
    pub(crate) fn set_resid(&mut self, resid: u32) {
        // SAFETY: The command is valid and owned (type invariant).
        unsafe { (*self.raw()).resid_len = resid };
    }

    /// Completes the command (`scsi_done()`).
    pub(crate) fn done(self) {
        let sc = self.raw();
        core::mem::forget(self);
        // SAFETY: The command was owned and is completed exactly once.
        unsafe { bindings::scsi_done(sc) };
    }

    /// Turns the command into a request to lend to a device: its buffers
    /// are the `out_hdr` and `in_hdr` byte ranges of its private area (a
    /// request header and a response header, say), its data and its
    /// protection information ([`CommandBufs`]); the transport's driver
    /// puts them in the order its protocol wants. Commands with data both
    /// ways are refused (`EINVAL`), as are overlapping ranges or ranges
    /// outside the area.
    #[inline(always)]
    pub(crate) fn into_request(
        self,
        out_hdr: Range<usize>,
        in_hdr: Range<usize>,
    ) -> Result<CommandRequest<T>, (Self, Error)> {
        let cmd_size = T::CMD_SIZE;
        let direction = self.data_direction();
        // Ranges within `u16` (a constant test) make `HdrSgs::key` exact.
        let ok = cmd_size <= usize::from(u16::MAX)
            && out_hdr.start < out_hdr.end
            && out_hdr.end <= cmd_size
            && in_hdr.start < in_hdr.end
            && in_hdr.end <= cmd_size
            && (out_hdr.end <= in_hdr.start || in_hdr.end <= out_hdr.start)
            && direction != DataDirection::Bidirectional;
        if !ok {
            return Err((self, EINVAL));
        }
        // Read once, here, for `bufs`: the lists do not change while the
        // command is owned.
        // SAFETY: The command is owned, so its scatterlist is valid.
        let (data, nents) = unsafe { ((*self.raw()).sdb.table.sgl, (*self.raw()).sdb.table.nents) };
        let data = NonNull::new(data).filter(|_| nents != 0);
        let prot = data.and(self.prot_sgl()).and_then(NonNull::new);
        Ok(CommandRequest {
            cmd: self,
            out_hdr,
            in_hdr,
            direction,
            data,
            prot,
        })
    }

    /// # Safety
    ///
    /// `sc` must be a command the midlayer handed to the driver and that is
    /// not completed nor owned by another `Command`.
    pub(super) unsafe fn from_raw(sc: NonNull<bindings::scsi_cmnd>) -> Self {
        // INVARIANT: The caller guarantees the command is ours.
        Self {
            sc,
            _p: PhantomData,
        }
    }
}

impl<T: HostTemplate> Drop for Command<T> {
    fn drop(&mut self) {
        // A command that nobody completed would hang its issuer until the
        // midlayer's timeout: fail it now.
        self.set_result(HostByte::Error, 0);
        // SAFETY: The command is owned and completed exactly once, here.
        unsafe { bindings::scsi_done(self.raw()) };
    }
}

/// A [`Command`] with its header ranges, ready to be lent to a device
/// ([`Lend`]).
///
/// # Examples
///
/// Made in `queuecommand` from the header ranges of the command's private
/// area and lent to a virtio request queue (whose driver lays out the
/// buffers, `virtio::Layout`); it turns back into its command when the queue
/// gives it back:
///
/// ```ignore
/// type ReqQueue = Queue<Lent<CommandRequest<VirtioScsi>, VirtioScsi>, VqStats>;
///
/// let req = match cmd.into_request(REQ_OFF..REQ_OFF + req_len, resp) {
///     Ok(req) => Lent::new(req),
///     Err((cmd, _)) => return fail_cmd(cmd, HostByte::Error),
/// };
/// vq.lock().add(req)?;
///
/// while let Some((req, used_len)) = vq.lock().get_buf() {
///     complete_cmd(req.into_inner().into_command(), used_len);
/// }
/// ```
pub(crate) struct CommandRequest<T: HostTemplate> {
    cmd: Command<T>,
    out_hdr: Range<usize>,
    in_hdr: Range<usize>,
    /// The command's direction, data list (`None` without data) and
    /// protection information list (`None` without either), as
    /// [`Command::into_request`] read them.
    direction: DataDirection,
    data: Option<NonNull<bindings::scatterlist>>,
    prot: Option<NonNull<bindings::scatterlist>>,
}

// SAFETY: As for `Command`: the list pointers are the command's own, valid
// for as long as it is owned, on any CPU.
unsafe impl<T: HostTemplate> Send for CommandRequest<T> {}

impl<T: HostTemplate> CommandRequest<T> {
    /// Returns the command back, for completion.
    pub(crate) fn into_command(self) -> Command<T> {
        self.cmd
    }
}

/// The buffers of a [`CommandRequest`], as one lending sees them: the
/// transport's driver decides their order on the wire.
pub(crate) struct CommandBufs<'b> {
    /// The `out_hdr` range of the private area: what the driver tells the
    /// device, so device-readable only.
    pub(crate) out_hdr: ScatterList<'b>,
    /// The `in_hdr` range of the private area: the device's answer,
    /// device-writable.
    pub(crate) in_hdr: ScatterList<'b>,
    /// The data (`scsi_sglist()`), if the command has any; device-writable
    /// only for [`DataDirection::FromDevice`].
    pub(crate) data: Option<ScatterList<'b>>,
    /// The protection information (`scsi_prot_sglist()`), if any travels
    /// with the data; device-writable only for
    /// [`DataDirection::FromDevice`].
    pub(crate) prot: Option<ScatterList<'b>>,
    /// The direction of the data (never [`DataDirection::Bidirectional`]).
    pub(crate) direction: DataDirection,
}

// SAFETY: The headers lie in the command's private area and the data and
// protection information in its scatterlists, all owned by the command
// until it is completed, and the command is neither completed nor touched
// by the driver while it is a token (it is forgotten, and only
// `from_token` rebuilds it). Data and protection information are
// device-writable only for a read (`FromDevice`), the request header
// never, the response header always; all are the command's own memory.
unsafe impl<T: HostTemplate> Lend for CommandRequest<T> {
    type Bufs<'b> = CommandBufs<'b>;

    #[inline(always)]
    fn bufs<'b>(&'b mut self, _brand: Brand<'b>) -> CommandBufs<'b> {
        let sc = self.cmd.raw();
        // SAFETY: The private area follows the command (see `private_and_sense`).
        let base = unsafe { cmd_priv(sc) };
        let (direction, data, prot) = (self.direction, self.data, self.prot);
        let reads = direction == DataDirection::FromDevice;
        // SAFETY: The command is owned, so its area is ours.
        let hdr = unsafe { cmd_hdr_sgs(sc) };
        let key = HdrSgs::key(&self.out_hdr, &self.in_hdr);
        // SAFETY: The `HdrSgs` of an owned command is ours to read and
        // write: no device holds the command (a lent one is a token, not a
        // `CommandRequest`), and the driver reaches only the area behind it.
        if unsafe { (*hdr).key } != key {
            // The ranges were checked against the private area in
            // `into_request`, which is directly mapped memory the command
            // owns, and stays at this address while the command is
            // allocated: the lists stay right for later submissions.
            // SAFETY: As above; `sg_init_one()` initialises each list whole
            // (a single end-marked entry).
            unsafe {
                let sg = core::ptr::addr_of_mut!((*hdr).sg).cast::<bindings::scatterlist>();
                bindings::sg_init_one(
                    sg,
                    base.add(self.out_hdr.start).cast(),
                    (self.out_hdr.end - self.out_hdr.start) as u32,
                );
                bindings::sg_init_one(
                    sg.add(1),
                    base.add(self.in_hdr.start).cast(),
                    (self.in_hdr.end - self.in_hdr.start) as u32,
                );
                (*hdr).key = key;
            }
        }
        // SAFETY: As above.
        let hdr_sg = unsafe { core::ptr::addr_of_mut!((*hdr).sg).cast::<bindings::scatterlist>() };
        // The header lists are built for these ranges (above), in the
        // command's area, and stay there while the command is allocated;
        // the data and protection lists are the midlayer's, end-marked,
        // owned by the command and unchanged until it completes. All
        // describe memory the command owns; a device writes the response
        // header, and data and protection information only for a read.
        // SAFETY: As above; the two header lists lie in the area (not
        // null), one after the other.
        unsafe {
            CommandBufs {
                out_hdr: ScatterList::new(NonNull::new_unchecked(hdr_sg), false),
                in_hdr: ScatterList::new(NonNull::new_unchecked(hdr_sg.add(1)), true),
                data: data.map(|sg| ScatterList::new(sg, reads)),
                prot: prot.map(|sg| ScatterList::new(sg, reads)),
                direction,
            }
        }
    }

    #[inline(always)]
    fn into_token(self) -> NonNull<kernel::ffi::c_void> {
        let sc = self.cmd.sc;
        // SAFETY: The command is owned, so allocated and initialised.
        unsafe { cmd_state(sc.as_ptr()) }
            .in_device
            .store(true, Ordering::Release);
        core::mem::forget(self.cmd);
        sc.cast()
    }

    #[inline(always)]
    unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self {
        // SAFETY: The token is a command turned into it by `into_token`
        // (caller contract), still allocated: the device held it.
        unsafe { cmd_state(token.as_ptr().cast()) }
            .in_device
            .store(false, Ordering::Release);
        // The header ranges and lists are not needed after the device is
        // done; keep empty ones.
        // INVARIANT: The token is a command owned by the request that was
        // turned into it (caller contract).
        Self {
            cmd: Command {
                sc: token.cast(),
                _p: PhantomData,
            },
            out_hdr: 0..0,
            in_hdr: 0..0,
            direction: DataDirection::None,
            data: None,
            prot: None,
        }
    }
}
