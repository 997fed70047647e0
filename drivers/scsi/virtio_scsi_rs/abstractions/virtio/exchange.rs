// SPDX-License-Identifier: GPL-2.0

//! Request/response exchanges with the device that a task waits for.
//!
//! C header: [`include/linux/completion.h`](srctree/include/linux/completion.h)

use super::*;
use crate::abstractions::bindings;
use crate::abstractions::sync::Completion;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::alloc::Flags;
use kernel::prelude::*;
use kernel::sync::{Arc, UniqueArc};

/// The device-visible part of an [`Exchange`]: request then response, on
/// lines of their own.
#[repr(C, align(128))]
struct ExchangeBufs<const REQ: usize, const RESP: usize> {
    req: [u8; REQ],
    resp: core::cell::UnsafeCell<[u8; RESP]>,
}

#[pin_data]
struct ExchangeInner<const REQ: usize, const RESP: usize> {
    bufs: ExchangeBufs<REQ, RESP>,
    /// Bytes the device wrote; valid once `done` is set.
    used_len: core::sync::atomic::AtomicU32,
    /// The device gave the buffers back.
    done: AtomicBool,
    #[pin]
    completion: Completion,
}

/// A request and its response on a control-type queue, with a waiter (a
/// task management function, for instance).
///
/// The buffers are reference counted: the in-flight [`ExchangeRequest`]
/// holds one reference, so a waiter that gives up on a device that never
/// answers frees nothing the device may still write; the memory goes when
/// the device returns the buffers or the queue is torn down.
///
/// # Invariants
///
/// At most one [`ExchangeRequest`] refers to the same buffers, ever: both
/// halves are made together by [`Exchange::new`], and neither can be
/// cloned.
///
/// # Examples
///
/// A task management function on a control queue, waited for at most 30 s:
///
/// ```ignore
/// use crate::abstractions::virtio::{Exchange, ExchangeRequest, ExchangeSlot, Queue, WaitError};
///
/// type CtrlQueue = Queue<ExchangeRequest<TMF_REQ_SIZE, TMF_RESP_SIZE>>;
///
/// fn send_tmf(ctrl_vq: &CtrlQueue, req: [u8; TMF_REQ_SIZE]) -> Result<[u8; TMF_RESP_SIZE]> {
///     let slot = ExchangeSlot::new_noio()?;
///     let (exchange, request) = Exchange::new(slot, req, protocol::TMF_RESP_INIT);
///     let mut guard = ctrl_vq.lock();
///     guard.add(request).map_err(|(_request, e)| e)?;
///     guard.kick_prepare();
///     // Unlocks, then notifies the device.
///     drop(guard);
///     match exchange.wait(30_000) {
///         Ok((resp, _used_len)) => Ok(resp),
///         // The request half stays on the queue: the device may still write
///         // the response, which lives until the device gives it back.
///         Err(WaitError::TimedOut) => Err(ETIMEDOUT),
///         // Taken back unanswered (the device was reset).
///         Err(WaitError::Cancelled) => Err(EIO),
///     }
/// }
///
/// // The control queue's callback wakes the waiters.
/// fn ctrl_done(ctrl_vq: &CtrlQueue) {
///     loop {
///         let done = ctrl_vq.lock().get_buf();
///         match done {
///             Some((request, used_len)) => request.complete(used_len),
///             None => return,
///         }
///     }
/// }
/// ```
pub(crate) struct Exchange<const REQ: usize, const RESP: usize>(Arc<ExchangeInner<REQ, RESP>>);

/// The queued half of an [`Exchange`]: the only one for its buffers (see
/// the invariants of [`Exchange`]).
///
/// # Examples
///
/// Completed by the queue's callback when the device gives it back, or dropped
/// unanswered when a reset takes it back:
///
/// ```ignore
/// ctrl_vq.detach(|request, used| match used {
///     Some(used_len) => request.complete(used_len),
///     // The waiter sees `WaitError::Cancelled`.
///     None => drop(request),
/// });
/// ```
pub(crate) struct ExchangeRequest<const REQ: usize, const RESP: usize>(
    Arc<ExchangeInner<REQ, RESP>>,
);

/// The memory of one [`Exchange`], allocated ahead of time: a caller that
/// must not fail to allocate when it needs an exchange (an error handler
/// under memory pressure) keeps some in reserve.
///
/// # Examples
///
/// Memory allocated ahead, as a reserve for when allocating fails under memory
/// pressure:
///
/// ```ignore
/// type TmfSlot = ExchangeSlot<TMF_REQ_SIZE, TMF_RESP_SIZE>;
///
/// let mut reserve = [Some(TmfSlot::new(GFP_KERNEL)?), Some(TmfSlot::new(GFP_KERNEL)?)];
/// // In the error handler: no allocation that waits for writeback.
/// let slot = match TmfSlot::new_noio() {
///     Ok(slot) => slot,
///     Err(_) => reserve.iter_mut().find_map(Option::take).ok_or(ENOMEM)?,
/// };
/// let (exchange, request) = Exchange::new(slot, req, protocol::TMF_RESP_INIT);
/// ```
pub(crate) struct ExchangeSlot<const REQ: usize, const RESP: usize>(
    UniqueArc<core::mem::MaybeUninit<ExchangeInner<REQ, RESP>>>,
);

impl<const REQ: usize, const RESP: usize> ExchangeSlot<REQ, RESP> {
    /// Allocates the memory of one exchange with `flags`.
    pub(crate) fn new(flags: Flags) -> Result<Self> {
        Ok(Self(UniqueArc::new_uninit(flags)?))
    }

    /// Allocates the memory of one exchange without starting I/O to free
    /// memory (`memalloc_noio_save()`, as `GFP_NOIO`): for an error handler
    /// whose disks may be the ones reclaim would write to.
    pub(crate) fn new_noio() -> Result<Self> {
        // SAFETY: Plain calls; the flags saved are restored below, on the
        // same task.
        let saved = unsafe { bindings::vscsi_memalloc_noio_save() };
        let slot = Self::new(GFP_KERNEL);
        // SAFETY: As above.
        unsafe { bindings::vscsi_memalloc_noio_restore(saved) };
        slot
    }
}

// SAFETY: `resp` is only written by the device while an `ExchangeRequest`
// owns the buffers and only read after `done` is set, which happens after the
// device returned them.
unsafe impl<const REQ: usize, const RESP: usize> Sync for ExchangeInner<REQ, RESP> {}
// SAFETY: See `Sync`; the data is plain bytes and atomics.
unsafe impl<const REQ: usize, const RESP: usize> Send for ExchangeInner<REQ, RESP> {}

/// Why [`Exchange::wait`] returned without an answer.
///
/// # Examples
///
/// ```ignore
/// match exchange.wait(timeout_ms) {
///     Ok((resp, _used_len)) if protocol::tmf_succeeded(&resp) => TmfOutcome::Complete,
///     Ok(_) | Err(WaitError::Cancelled) => TmfOutcome::Failed,
///     Err(WaitError::TimedOut) => TmfOutcome::TimedOut,
/// }
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitError {
    /// The device did not answer in time.
    TimedOut,
    /// The request was taken back unanswered (a reset), or never queued.
    Cancelled,
}

impl<const REQ: usize, const RESP: usize> Exchange<REQ, RESP> {
    /// Builds, in `slot`, an exchange carrying `req`, its response buffer
    /// holding `resp` until the device writes it (a value no device answer
    /// has, so that an answer the device did not write is recognised).
    /// Returns the waiting half and the one half to add to a queue
    /// ([`QueueGuard::add`]).
    pub(crate) fn new(
        slot: ExchangeSlot<REQ, RESP>,
        req: [u8; REQ],
        resp: [u8; RESP],
    ) -> (Self, ExchangeRequest<REQ, RESP>) {
        let init = pin_init!(ExchangeInner {
            bufs: ExchangeBufs {
                req,
                resp: core::cell::UnsafeCell::new(resp),
            },
            used_len: core::sync::atomic::AtomicU32::new(0),
            done: AtomicBool::new(false),
            completion <- Completion::new(),
        });
        let inner: Arc<_> = match slot.0.write_pin_init(init) {
            Ok(inner) => inner.into(),
            Err(never) => match never {},
        };
        // INVARIANT: The only request for these buffers is made here.
        (Self(inner.clone()), ExchangeRequest(inner))
    }

    /// Waits up to `ms` milliseconds for the device's answer; returns the
    /// response and the number of bytes the device wrote.
    pub(crate) fn wait(&self, ms: u32) -> Result<([u8; RESP], u32), WaitError> {
        if !self.0.completion.wait_timeout_ms(ms) {
            return Err(WaitError::TimedOut);
        }
        if !self.0.done.load(Ordering::Acquire) {
            return Err(WaitError::Cancelled);
        }
        // SAFETY: `done` is set after the device returned the buffers, so
        // nothing writes `resp` any more.
        let resp = unsafe { *self.0.bufs.resp.get() };
        Ok((resp, self.0.used_len.load(Ordering::Relaxed)))
    }
}

impl<const REQ: usize, const RESP: usize> ExchangeRequest<REQ, RESP> {
    /// Records that the device returned the buffers with `used_len` bytes
    /// written, and wakes the waiter (the drop does). Callable from
    /// interrupt context.
    pub(crate) fn complete(self, used_len: u32) {
        self.0.used_len.store(used_len, Ordering::Relaxed);
        self.0.done.store(true, Ordering::Release);
    }
}

impl<const REQ: usize, const RESP: usize> Drop for ExchangeRequest<REQ, RESP> {
    /// Wakes the waiter, whether or not the device answered: a request
    /// taken back from a reset device ends the wait at once.
    fn drop(&mut self) {
        self.0.completion.complete();
    }
}

// SAFETY: The buffers live in the `Arc` allocation, kept alive by the
// reference the token carries; the CPU writes `req` only before the first
// `add` and reads `resp` only after `complete` (see `Exchange::wait`).
unsafe impl<const REQ: usize, const RESP: usize> Request for ExchangeRequest<REQ, RESP> {
    fn sgs(&mut self, sgs: &mut SgList) {
        let bufs = &self.0.bufs;
        // SAFETY: Both buffers are in the `Arc` allocation this request
        // holds a reference to.
        unsafe { sgs.push_buf(bufs.req.as_ptr(), REQ as u32, false) };
        // SAFETY: As above.
        unsafe { sgs.push_buf(bufs.resp.get().cast::<u8>(), RESP as u32, true) };
    }

    fn into_token(self) -> NonNull<kernel::ffi::c_void> {
        // Not dropped: the reference travels with the token.
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this.0` is read once and `this` is never dropped, so the
        // reference moves into the token.
        let ptr = Arc::into_raw(unsafe { core::ptr::read(&this.0) });
        // SAFETY: `Arc::into_raw` never returns null.
        unsafe { NonNull::new_unchecked(ptr.cast_mut().cast()) }
    }

    unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self {
        // SAFETY: The caller passes a token from `into_token`, once.
        Self(unsafe { Arc::from_raw(token.as_ptr().cast::<ExchangeInner<REQ, RESP>>()) })
    }
}
