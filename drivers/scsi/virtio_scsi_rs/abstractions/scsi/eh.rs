// SPDX-License-Identifier: GPL-2.0

//! Error handling: what an error handler returns and the commands it is
//! given (`eh_*` callbacks of `struct scsi_host_template`).
//!
//! C headers: [`include/scsi/scsi_eh.h`](srctree/include/scsi/scsi_eh.h),
//! [`include/scsi/scsi_host.h`](srctree/include/scsi/scsi_host.h)

use super::*;
use crate::abstractions::bindings;
use core::sync::atomic::Ordering;
use kernel::types::Opaque;

/// The outcome of an error handler (`SUCCESS`, `FAILED` of
/// `enum scsi_disposition` in `scsi/scsi.h`).
///
/// # Examples
///
/// ```ignore
/// fn eh_abort(host: EhHost<'_, Self>, cmd: &EhCommand) -> EhResult {
///     // Without a tag ABORT TASK cannot name the command: let the midlayer
///     // escalate to a reset.
///     let Some(tag) = cmd.unique_tag() else {
///         return EhResult::Failed;
///     };
///     let (_channel, id, lun) = cmd.device().address();
///     host.data().tmf(Tmf::AbortTask, id, lun, u64::from(tag))
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EhResult {
    /// The function completed; the midlayer stops escalating.
    Success,
    /// The function failed or timed out; the midlayer escalates.
    Failed,
}

impl EhResult {
    pub(super) fn to_c(self) -> i32 {
        // The `eh_*_handler` ops return the `enum scsi_disposition` as an
        // `int`.
        let disposition = match self {
            EhResult::Success => bindings::scsi_disposition_SUCCESS,
            EhResult::Failed => bindings::scsi_disposition_FAILED,
        };
        disposition as i32
    }
}

/// What to do with a command whose timer expired (`enum scsi_timeout_action`).
///
/// # Examples
///
/// Poll the command's queue first (a lost interrupt), then wait or escalate:
///
/// ```ignore
/// fn eh_timed_out(host: EhHost<'_, Self>, cmd: &EhCommand) -> TimeoutAction {
///     let vscsi = host.data();
///     if let Some(hwq) = cmd.unique_tag().map(|tag| (tag >> 16) as usize) {
///         if let Some(vq) = vscsi.req_vqs.get(hwq) {
///             vscsi.reap(vq, vscsi.is_poll_queue(hwq));
///         }
///     }
///     if cmd.is_complete() {
///         TimeoutAction::Done
///     } else if cmd.age_ms() < stall_limit_ms() {
///         TimeoutAction::ResetTimer
///     } else {
///         TimeoutAction::NotHandled
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeoutAction {
    /// The driver completed it (`SCSI_EH_DONE`).
    Done,
    /// Let the midlayer abort it (`SCSI_EH_NOT_HANDLED`).
    NotHandled,
    /// Give it another timeout period (`SCSI_EH_RESET_TIMER`).
    ResetTimer,
}

/// A command in the hands of the error handler (`eh_*` callbacks), or one
/// visited by [`HostRef::for_each_busy`]: it can be inspected, not
/// completed.
///
/// # Invariants
///
/// `self.0` is a valid `scsi_cmnd` of a live device for the lifetime of the
/// reference.
///
/// # Examples
///
/// A command the error handler holds can be inspected, never completed:
///
/// ```ignore
/// host.for_each_busy(|cmd: &EhCommand| {
///     let (_channel, id, lun) = cmd.device().address();
///     if cmd.in_device() && id == target {
///         dev_warn!(
///             cmd.device(),
///             "command outstanding for {} ms (timeout {} ms)\n",
///             cmd.age_ms(),
///             cmd.timeout_ms()
///         );
///     }
///     true // keep iterating
/// });
/// ```
#[repr(transparent)]
pub(crate) struct EhCommand(Opaque<bindings::scsi_cmnd>);

impl EhCommand {
    /// # Safety
    ///
    /// `sc` must be a valid command, of a live device, for `'a`.
    pub(super) unsafe fn from_raw<'a>(sc: *mut bindings::scsi_cmnd) -> &'a Self {
        // INVARIANT: The caller guarantees it.
        // SAFETY: Transparent wrapper; the caller guarantees validity.
        unsafe { &*sc.cast::<Self>() }
    }

    /// Returns the command's device.
    pub(crate) fn device(&self) -> &ScsiDevice {
        // SAFETY: A command's device outlives it (type invariant).
        unsafe { ScsiDevice::from_raw((*self.0.get()).device) }
    }

    /// Returns whether the command was completed (`SCMD_STATE_COMPLETE`),
    /// for instance by polling its queue in `eh_timed_out`.
    pub(crate) fn is_complete(&self) -> bool {
        // SAFETY: The command is valid (type invariant). `state` is only
        // changed with atomic bit operations; a volatile read is the
        // kernel's `READ_ONCE()`, and a stale value only means the midlayer
        // aborts a command that just completed, which it tolerates.
        let state = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*self.0.get()).state)) };
        state & (1 << bindings::SCMD_STATE_COMPLETE) != 0
    }

    /// Returns the blk-mq unique tag (`blk_mq_unique_tag()`): the hardware
    /// queue in the upper 16 bits, the tag in the lower.
    ///
    /// `None` for a command that blk-mq did not allocate, which has neither:
    /// the one the `SG_SCSI_RESET` ioctl hands to the reset handlers
    /// (`scsi_ioctl_reset()` allocates it with `kzalloc()`, so its request
    /// has no hardware queue context).
    pub(crate) fn unique_tag(&self) -> Option<u32> {
        // SAFETY: The command is valid (type invariant) and lies right behind
        // its request, which blk-mq or `scsi_ioctl_reset()` allocated with it.
        let rq = unsafe { cmd_to_rq(self.0.get()) };
        // SAFETY: The request is valid as long as the command. blk-mq sets
        // `mq_hctx` when it allocates the request and clears it when it frees
        // it; the ioctl's request keeps the null of its `kzalloc()`.
        if unsafe { (*rq).mq_hctx }.is_null() {
            return None;
        }
        // SAFETY: A request with a hardware queue context, which
        // `blk_mq_unique_tag()` reads.
        Some(unsafe { bindings::blk_mq_unique_tag(rq) })
    }

    /// Returns how long ago the command was first issued, in milliseconds
    /// (`jiffies - jiffies_at_alloc`: retries keep the first issue time).
    pub(crate) fn age_ms(&self) -> u32 {
        // SAFETY: The command is valid for the reference's lifetime; the
        // helper reads one field and `jiffies`.
        unsafe { bindings::vscsi_scmd_age_ms(self.0.get()) }
    }

    /// Returns the command's timeout (its request's), in milliseconds; 0
    /// for a command without a blk-mq request.
    pub(crate) fn timeout_ms(&self) -> u32 {
        // SAFETY: A midlayer command lies right behind its request.
        let rq = unsafe { cmd_to_rq(self.0.get()) };
        // SAFETY: The request is valid with its command; `timeout` is set
        // before the command is issued and not written while it times out.
        let timeout = unsafe { (*rq).timeout };
        // SAFETY: Plain conversion.
        unsafe { bindings::jiffies_to_msecs(timeout as kernel::ffi::c_ulong) }
    }

    /// Returns whether a device queue still holds the command (it went on
    /// one and has not come back). The error handler must not finish or
    /// retry such a command: the device may still write into it.
    pub(crate) fn in_device(&self) -> bool {
        // SAFETY: The error handlers only get commands of hosts of a
        // `Template`, whose private area starts with an initialised state
        // (`init_cmd_priv`; the `SG_SCSI_RESET` ioctl's command is zeroed
        // by `scsi_ioctl_reset()`, which reads as "not in a device"); the
        // command is valid for the reference's lifetime.
        unsafe { cmd_state(self.0.get()) }
            .in_device
            .load(Ordering::Acquire)
    }
}
