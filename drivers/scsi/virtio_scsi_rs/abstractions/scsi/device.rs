// SPDX-License-Identifier: GPL-2.0

//! SCSI devices (`struct scsi_device`), as template callbacks see them.
//!
//! C header: [`include/scsi/scsi_device.h`](srctree/include/scsi/scsi_device.h)

use crate::abstractions::bindings;
use kernel::prelude::*;
use kernel::types::Opaque;

/// A SCSI device (`struct scsi_device`), as passed to template callbacks.
///
/// # Invariants
///
/// `self.0` is a valid `scsi_device` for the lifetime of the reference.
///
/// # Examples
///
/// In `change_queue_depth`, and naming a device in messages:
///
/// ```ignore
/// fn change_queue_depth(sdev: &ScsiDevice, depth: i32) -> i32 {
///     sdev.change_queue_depth(depth.min(sdev.host_cmd_per_lun()))
/// }
///
/// fn eh_device_reset(host: EhHost<'_, Self>, cmd: &EhCommand) -> EhResult {
///     let (_channel, id, lun) = cmd.device().address();
///     dev_info!(cmd.device(), "device reset\n");
///     host.data().tmf(Tmf::LogicalUnitReset, id, lun, 0)
/// }
/// ```
#[repr(transparent)]
pub(crate) struct ScsiDevice(Opaque<bindings::scsi_device>);

// SAFETY: `struct scsi_device` embeds its `sdev_gendev`, valid for as long
// as the device is (type invariant). Messages on it name the device as
// `H:C:T:L`.
unsafe impl crate::abstractions::device::AsRawDevice for ScsiDevice {
    fn as_raw_device(&self) -> *mut bindings::device {
        // SAFETY: The device is valid (type invariant).
        unsafe { core::ptr::addr_of_mut!((*self.0.get()).sdev_gendev) }
    }
}

impl ScsiDevice {
    /// # Safety
    ///
    /// `ptr` must be valid for `'a`.
    pub(super) unsafe fn from_raw<'a>(ptr: *mut bindings::scsi_device) -> &'a Self {
        // INVARIANT: The caller guarantees that `ptr` is valid for `'a`.
        // SAFETY: `ScsiDevice` is transparent over `scsi_device`; the caller
        // guarantees validity.
        unsafe { &*ptr.cast::<Self>() }
    }

    pub(super) fn raw(&self) -> *mut bindings::scsi_device {
        self.0.get()
    }

    /// Returns the host's `cmd_per_lun`.
    pub(crate) fn host_cmd_per_lun(&self) -> i32 {
        // SAFETY: A device's host outlives it.
        i32::from(unsafe { (*(*self.raw()).host).cmd_per_lun })
    }

    /// Returns the device's channel, target id and LUN.
    pub(crate) fn address(&self) -> (u32, u32, u64) {
        // SAFETY: The device is valid (type invariant); these never change.
        unsafe {
            let d = self.raw();
            ((*d).channel, (*d).id, (*d).lun)
        }
    }

    /// Sets the queue depth (`scsi_change_queue_depth()`); returns the new
    /// depth.
    pub(crate) fn change_queue_depth(&self, depth: i32) -> i32 {
        // SAFETY: The device is valid (type invariant).
        unsafe { bindings::scsi_change_queue_depth(self.raw(), depth) }
    }
}

/// A SCSI device being set up, as passed to [`HostTemplate::slave_alloc`](super::HostTemplate::slave_alloc):
/// a [`ScsiDevice`] whose scan flags may still be set.
///
/// Only `slave_alloc` gets one, so only it can change what the midlayer
/// reads without synchronisation once the device is scanned:
///
/// ```compile_fail
/// fn change_queue_depth(sdev: &ScsiDevice, depth: i32) -> i32 {
///     sdev.add_bflags(BLIST_TRY_VPD_PAGES); // No such method on `ScsiDevice`.
///     sdev.change_queue_depth(depth)
/// }
/// ```
///
/// # Invariants
///
/// `self.0` is a device that `scsi_alloc_sdev()` is setting up, for the
/// lifetime of the reference. The scanning thread, which holds the host's
/// `scan_mutex` and runs `slave_alloc`, has not sent the device a command
/// yet, and nothing reads `sdev_bflags` before `slave_alloc` returns: the
/// scan reads it afterwards in the same thread, and the other readers
/// (sense handling of the device's commands, sd, sysfs) come later still.
///
/// # Examples
///
/// Blacklist flags can only be set before the device is scanned:
///
/// ```ignore
/// fn slave_alloc(sdev: &scsi::SlaveAllocDevice) -> Result {
///     sdev.add_bflags(scsi::BLIST_TRY_VPD_PAGES);
///     Ok(())
/// }
/// ```
#[repr(transparent)]
pub(crate) struct SlaveAllocDevice(ScsiDevice);

impl SlaveAllocDevice {
    /// # Safety
    ///
    /// `ptr` must be a device that `scsi_alloc_sdev()` passes to
    /// `slave_alloc`, and `'a` must end when `slave_alloc` returns.
    pub(super) unsafe fn from_raw<'a>(ptr: *mut bindings::scsi_device) -> &'a Self {
        // INVARIANT: The caller guarantees it.
        // SAFETY: `SlaveAllocDevice` is transparent over `ScsiDevice`, itself
        // transparent over `scsi_device`; the caller guarantees validity.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// Stores a word of the driver's in the device, for
    /// [`Command::device_word`](super::Command::device_word) to read on
    /// every command: `hostdata`, which the midlayer leaves to the host
    /// driver (`scsi_alloc_sdev()` sets it from its caller, usually to
    /// NULL, before `slave_alloc`), used as a value, never as a pointer.
    pub(crate) fn set_word(&self, word: u64) {
        // A pointer holds the whole word.
        const _: () = assert!(core::mem::size_of::<usize>() >= core::mem::size_of::<u64>());
        // SAFETY: By the type invariant nobody else accesses the device
        // while `self` lives (the type is not `Sync`); the device gets no
        // command before `slave_alloc` returns.
        unsafe { (*self.0.raw()).hostdata = word as usize as *mut kernel::ffi::c_void };
    }

    /// Adds blacklist flags (`BLIST_*`) to the device (`sdev_bflags`).
    pub(crate) fn add_bflags(&self, flags: u64) {
        // SAFETY: By the type invariant nobody else accesses the flags
        // while `self` lives. No other thread can call this meanwhile: the
        // type is not `Sync` (`Opaque`), so the reference stays in the
        // thread running `slave_alloc`.
        unsafe { (*self.0.raw()).sdev_bflags |= flags };
    }
}

impl core::ops::Deref for SlaveAllocDevice {
    type Target = ScsiDevice;

    fn deref(&self) -> &ScsiDevice {
        &self.0
    }
}

/// `BLIST_TRY_VPD_PAGES`: read VPD pages even from SPC-2 devices.
pub(crate) const BLIST_TRY_VPD_PAGES: u64 = 1 << 28;

/// A SCSI device its holder keeps a reference to, in process context outside
/// the error handler: what the midlayer's device operations that sleep, or
/// that need the device to stay while they run (sending a command, a
/// rescan, removal), require. Given by [`HostRef::with_device`] and
/// [`HostRef::for_each_device`] only, so the error handler (which gets an
/// `EhHost` and `EhCommand`s, review finding 18) and interrupt handlers cannot
/// reach them.
///
/// # Invariants
///
/// `self.0` is valid, and referenced by the code that lent it, for the
/// lifetime of the reference; the borrower runs in process context and may
/// sleep.
///
/// [`HostRef::with_device`]: super::HostRef::with_device
/// [`HostRef::for_each_device`]: super::HostRef::for_each_device
///
/// # Examples
///
/// In the host's work, after lost events: ask every device whether it is still
/// there:
///
/// ```ignore
/// let mut buf = KVec::from_elem(0u8, 256, GFP_KERNEL)?;
/// host.for_each_device(|sdev| {
///     // As many bytes as the midlayer kept at scan, or 36.
///     let len = match sdev.inquiry_len() {
///         0 => 36,
///         n => n,
///     };
///     let cdb = [protocol::INQUIRY, 0, 0, 0, len, 0];
///     let inq = &mut buf[..usize::from(len)];
///     inq.fill(0);
///     let gone = match sdev.execute_in(&cdb, inq, SD_TIMEOUT_MS, SD_MAX_RETRIES) {
///         Ok(0) => protocol::inquiry_says_gone(inq),
///         Ok(result) => (result >> 16) & 0xff == HostByte::BadTarget as i32,
///         Err(_) => false,
///     };
///     if gone {
///         sdev.remove();
///     }
/// });
/// // A capacity change event:
/// host.with_device(0, target, lun, HeldDevice::rescan);
/// ```
#[repr(transparent)]
pub(crate) struct HeldDevice(ScsiDevice);

impl core::ops::Deref for HeldDevice {
    type Target = ScsiDevice;

    fn deref(&self) -> &ScsiDevice {
        &self.0
    }
}

impl HeldDevice {
    /// # Safety
    ///
    /// `ptr` must satisfy the type invariant for `'a`.
    pub(super) unsafe fn from_raw<'a>(ptr: *mut bindings::scsi_device) -> &'a Self {
        // INVARIANT: The caller guarantees it.
        // SAFETY: `HeldDevice` is transparent over `ScsiDevice`, itself
        // transparent over `scsi_device`; the caller guarantees validity.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// Sends a data-in command and waits for it (`scsi_execute_cmd()`):
    /// returns the SCSI result (0: good; host byte in bits 16-23) or an
    /// error if it could not be sent (`EINVAL`: `cdb` shorter than its
    /// opcode's group says, `COMMAND_SIZE()`). May sleep.
    pub(crate) fn execute_in(
        &self,
        cdb: &[u8],
        buf: &mut [u8],
        timeout_ms: u32,
        retries: i32,
    ) -> Result<i32> {
        let len = u32::try_from(buf.len())?;
        // SAFETY: Pure conversion.
        let timeout = unsafe { bindings::__msecs_to_jiffies(timeout_ms) };
        let timeout = i32::try_from(timeout).unwrap_or(i32::MAX);
        let cdb_len = u32::try_from(cdb.len())?;
        // SAFETY: The device is valid and referenced (type invariant); `cdb`
        // (`cdb_len` bytes, of which the helper lets the midlayer read no
        // more) and `buf` are valid for the whole (synchronous) call; the
        // midlayer bounces `buf` if it cannot be mapped directly.
        let ret = unsafe {
            bindings::vscsi_scsi_execute_in(
                self.0.raw(),
                cdb.as_ptr(),
                cdb_len,
                buf.as_mut_ptr().cast(),
                len,
                timeout,
                retries,
            )
        };
        if ret < 0 {
            Err(Error::from_errno(ret))
        } else {
            Ok(ret)
        }
    }

    /// Returns how many bytes of standard INQUIRY data the midlayer kept
    /// when it scanned the device (`inquiry_len`), 0 before it has.
    pub(crate) fn inquiry_len(&self) -> u8 {
        // SAFETY: The device is valid and referenced (type invariant). A
        // scan of the device may write the byte meanwhile: read once, as
        // `READ_ONCE()` would, it is the old or the new value.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*self.0.raw()).inquiry_len)) }
    }

    /// Revalidates the device: capacity, mode pages (`scsi_rescan_device()`).
    /// May sleep.
    pub(crate) fn rescan(&self) {
        // SAFETY: The device is valid and referenced (type invariant).
        unsafe { bindings::scsi_rescan_device(self.0.raw()) };
    }

    /// Removes the device (`scsi_remove_device()`). May sleep.
    pub(crate) fn remove(&self) {
        // SAFETY: The device is valid and referenced (type invariant).
        unsafe { bindings::scsi_remove_device(self.0.raw()) };
    }
}
