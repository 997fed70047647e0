// SPDX-License-Identifier: GPL-2.0

//! Virtqueues (`struct virtqueue`): creating them, adding requests, reaping
//! answers, notifying the device, and resetting the device under them.
//!
//! C header: [`include/linux/virtio.h`](srctree/include/linux/virtio.h)

use super::Binding;
use crate::abstractions::bindings;
use crate::abstractions::sync::{
    new_spinlock_irq, synchronize_rcu, Completion, RcuReadGuard, SpinLockIrq, SpinLockIrqGuard,
};
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;

/// A virtqueue to create with [`DriverDevice::find_vqs`](super::DriverDevice::find_vqs).
///
/// # Examples
///
/// Control and event queues with interrupts, then request queues, the polled
/// ones last:
///
/// ```ignore
/// let mut infos = KVec::new();
/// infos.push(QueueInfo { name: c_str!("control"), callback: true }, GFP_KERNEL)?;
/// infos.push(QueueInfo { name: c_str!("event"), callback: true }, GFP_KERNEL)?;
/// infos.push(QueueInfo { name: c_str!("request"), callback: true }, GFP_KERNEL)?;
/// infos.push(QueueInfo { name: c_str!("request_poll"), callback: false }, GFP_KERNEL)?;
/// let raw = dev.find_vqs(&infos, 2)?;
/// ```
pub(crate) struct QueueInfo {
    /// The queue's name (shown in `/proc/interrupts`).
    pub(crate) name: &'static CStr,
    /// Whether the queue raises interrupts ([`Driver::vq_done`](super::Driver::vq_done)); polled
    /// queues do not.
    pub(crate) callback: bool,
}

/// The virtqueues of one device, shared by its [`Queue`]s.
///
/// # Invariants
///
/// `vdev` is a device whose virtqueues were created by `find_vqs` and not
/// yet deleted; it stays bound until this set's drop has deleted them (the
/// set is counted in `binding`, whose remove, or failed probe, waits for
/// that: [`Binding::wait_sets_deleted`]). The device has `nvqs` virtqueues,
/// all named, so their indices on the device (`virtqueue::index`) are
/// `0..nvqs`. `reset` resets that device.
#[pin_data(PinnedDrop)]
pub(super) struct QueueSet {
    pub(super) vdev: *mut bindings::virtio_device,
    pub(super) binding: Arc<Binding>,
    pub(super) nvqs: u32,
    pub(super) reset: Arc<SetReset>,
}

// SAFETY: The set holds a pointer to the device, used to reset it and to
// delete its queues, which the virtio core allows from any thread, and
// references to thread-safe types (`Binding`: mutexes; `SetReset`: atomics
// and a completion).
unsafe impl Send for QueueSet {}
// SAFETY: See `Send`; nothing is reached through `&QueueSet` but its fields.
unsafe impl Sync for QueueSet {}

/// The reset of the device under one [`QueueSet`], shared by the set and,
/// until the set's drop begins, by its binding ([`Binding::reset_device`]),
/// which can so reset the device the same way from another thread.
///
/// # Invariants
///
/// `vdev` is the device of the set this was made for, valid while that set
/// exists. This value is only referenced by that set and, until the set's
/// drop begins, by the set's binding (which takes its reference out first
/// thing in that drop): it is never reached once the set is gone. `reset_done` is signalled (for all waiters) once the reset that
/// `reset` claims is done. Once `stopping` is set, no [`Kick`] is prepared
/// on the set's queues.
#[pin_data]
pub(super) struct SetReset {
    pub(super) vdev: *mut bindings::virtio_device,
    pub(super) reset: AtomicBool,
    pub(super) stopping: AtomicBool,
    #[pin]
    pub(super) reset_done: Completion,
}

// SAFETY: A pointer to the device, which the virtio core lets any thread
// reset; the flags are atomic, the completion thread-safe.
unsafe impl Send for SetReset {}
// SAFETY: See `Send`.
unsafe impl Sync for SetReset {}

impl SetReset {
    /// # Safety
    ///
    /// `vdev` must be a device whose virtqueues are being created for a
    /// [`QueueSet`] that takes this value, and stay valid while that set
    /// exists; only that set and its binding (until the set's drop begins)
    /// may reference the value.
    pub(super) unsafe fn new(vdev: *mut bindings::virtio_device) -> impl PinInit<Self> {
        // INVARIANT: The caller guarantees the device's validity and who
        // references the value.
        pin_init!(Self {
            vdev,
            reset: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            reset_done <- Completion::new(),
        })
    }

    /// Resets the device once: no notification reaches it afterwards, it
    /// stops using buffers and raising interrupts, and callbacks that were
    /// running have finished. A caller that finds the reset claimed by
    /// another waits until it is done, so none goes on to take buffers
    /// back from a device still running. Sleeps.
    pub(super) fn reset_device(&self) {
        if self.reset.swap(true, Ordering::AcqRel) {
            self.reset_done.wait();
            return;
        }
        // No new `Kick`, then wait for those prepared before: the device
        // must not be notified once reset (`virtio_reset_device()`), some
        // devices wedge.
        self.stopping.store(true, Ordering::Relaxed);
        synchronize_rcu();
        // SAFETY: The device is valid: this value is reached through its
        // set, or through the binding before the set's drop begins (type
        // invariant). No notification is in progress (above).
        unsafe { bindings::virtio_reset_device(self.vdev) };
        // The reset itself does not wait for running callbacks on every
        // transport (virtio-mmio's does not).
        // SAFETY: As above.
        unsafe { bindings::vscsi_virtio_synchronize_cbs(self.vdev) };
        self.reset_done.complete_all();
    }
}

#[pinned_drop]
impl PinnedDrop for QueueSet {
    fn drop(self: Pin<&mut Self>) {
        // The binding's remove no longer reaches this set (it resets
        // through it under the lock only); one doing so now is waited for.
        let live = {
            let mut sets = self.binding.sets.lock();
            match &sets.live {
                Some(live) if Arc::ptr_eq(live, &self.reset) => sets.live.take(),
                _ => None,
            }
        };
        drop(live);
        // After the reset no `Kick` is running or can be prepared.
        self.reset.reset_device();
        // SAFETY: By the type invariant the queues exist; no `Queue` or
        // `RawQueue` is left to use them (each holds a reference to `self`),
        // and no `Kick` either (`reset_device`).
        unsafe { bindings::vscsi_virtio_del_vqs(self.vdev) };
        // Only now may the binding end (and the device go), or a new set be
        // made: the transport is done with the old one.
        let mut sets = self.binding.sets.lock();
        sets.count = sets.count.saturating_sub(1);
    }
}

/// A virtqueue returned by [`DriverDevice::find_vqs`](super::DriverDevice::find_vqs), not yet wrapped in a
/// [`Queue`].
///
/// # Examples
///
/// Each becomes a [`Queue`] at probe, or is given to an existing, detached one
/// at restore:
///
/// ```ignore
/// let mut raw = dev.find_vqs(&infos, 2)?.into_iter();
/// // Probe:
/// let ctrl_vq = KBox::pin_init(Queue::new(raw.next().ok_or(EINVAL)?, CtrlStats::default()), GFP_KERNEL)?;
/// // Restore, after `Queue::detach`:
/// event_vq.attach(raw.next().ok_or(EINVAL)?)?;
/// ```
///
/// # Invariants
///
/// `vq` is a virtqueue of the device of `set`, created by the `find_vqs` call
/// that created `set`; it is deleted only when `set` is dropped.
pub(crate) struct RawQueue {
    pub(super) vq: NonNull<bindings::virtqueue>,
    pub(super) set: Arc<QueueSet>,
}

impl RawQueue {
    /// Returns the number of descriptors in the ring
    /// (`virtqueue_get_vring_size()`). Each virtqueue of a device may have
    /// a size of its own.
    pub(crate) fn vring_size(&self) -> u32 {
        // SAFETY: `vq` lives as long as `set` (type invariant), which `self`
        // holds; the size is set when the virtqueue is created and only read.
        unsafe { bindings::virtqueue_get_vring_size(self.vq.as_ptr()) }
    }
}

// SAFETY: A `RawQueue` only carries the pointer until it becomes a `Queue`;
// the one operation it offers on the virtqueue reads its ring size, fixed
// when the virtqueue was created, from any thread.
unsafe impl Send for RawQueue {}
// SAFETY: See `Send`.
unsafe impl Sync for RawQueue {}

/// Buffers that a request hands to the device, and the ownership token that
/// comes back with them.
///
/// # Safety
///
/// Implementers guarantee that the memory the scatterlists pushed by
/// [`Request::sgs`] describe stays valid, and is not accessed by the CPU,
/// from [`Request::into_token`] until the value is rebuilt by
/// [`Request::from_token`]; and that `from_token` only accepts what
/// `into_token` returned.
///
/// # Examples
///
/// A buffer of its own that the device writes
/// ([`DeviceBuf`](super::DeviceBuf)'s implementation, in the abstractions):
///
/// ```ignore
/// // SAFETY: The allocation is owned through the token while the device has
/// // it, and `from_token` only takes tokens of `into_token`.
/// unsafe impl Request for KBox<DeviceBuf> {
///     fn sgs(&mut self, sgs: &mut SgList) {
///         // Zeroed whenever it goes to the device: a device need not report
///         // how much it wrote.
///         self.lines.fill(Line([0; 128]));
///         let ptr = self.lines.as_ptr().cast::<u8>();
///         // SAFETY: `ptr..ptr + len` is kmalloc memory owned by this request.
///         unsafe { sgs.push_buf(ptr, self.len, true) };
///     }
///
///     fn into_token(self) -> NonNull<kernel::ffi::c_void> {
///         // SAFETY: `KBox::into_raw` is never null.
///         unsafe { NonNull::new_unchecked(KBox::into_raw(self).cast()) }
///     }
///
///     unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self {
///         // SAFETY: `token` came from `into_token` (caller contract).
///         unsafe { KBox::from_raw(token.as_ptr().cast()) }
///     }
/// }
/// ```
pub(crate) unsafe trait Request: Sized {
    /// Pushes the device-readable, then the device-writable scatterlists.
    /// A push that does not fit refuses the whole request:
    /// [`QueueGuard::add`] gives it back with `EINVAL`, never a part of it
    /// to the device.
    fn sgs(&mut self, sgs: &mut SgList);

    /// Gives up ownership for as long as the device has the buffers.
    fn into_token(self) -> NonNull<kernel::ffi::c_void>;

    /// Takes ownership back.
    ///
    /// # Safety
    ///
    /// `token` must come from [`Request::into_token`] of the same type and
    /// be used once.
    unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self;
}

/// The scatterlists of one request: up to six lists, device-readable first,
/// of which up to two may be single-entry lists built here (headers).
///
/// # Invariants
///
/// Either `out` is [`SgList::REFUSED`] (the request is refused), or
/// `out + ins <= 6`, `lists[..out + ins]` are written, the `out`
/// device-readable ones first, and `nlocal <= 2`.
///
/// # Examples
///
/// Filled by a [`Request`]'s `sgs`, device-readable lists first: a request
/// header, then a response buffer for the device to write (a request that
/// lends other memory, a command's data, pushes it through
/// [`LentSgs`](super::LentSgs) instead):
///
/// ```ignore
/// fn sgs(&mut self, sgs: &mut SgList) {
///     // SAFETY: Both buffers lie in memory this request owns.
///     unsafe {
///         sgs.push_buf(self.req.as_ptr(), REQ_LEN, false);
///         sgs.push_buf(self.resp.as_mut_ptr(), RESP_LEN, true);
///     }
/// }
/// ```
pub(crate) struct SgList {
    /// `lists[..out + ins]` are set unless the request is refused (left
    /// uninitialised beyond: no clearing per request).
    lists: NonNull<SgSlots>,
    /// [`SgList::REFUSED`] once a push did not fit: the request is
    /// refused.
    out: u32,
    ins: u32,
    /// Initialised by `sg_init_one()` when pushed (`local[..nlocal]`).
    local: NonNull<SgLocal>,
    nlocal: usize,
}

/// Storage for an [`SgList`]'s list pointers, in [`QueueGuard::add`]'s
/// frame. Kept apart from the counts, as the virtio core gets a pointer to
/// it: the compiler then keeps the counts in registers, and folds them on
/// every path of a request's `sgs`.
type SgSlots = [core::mem::MaybeUninit<*mut bindings::scatterlist>; 6];
/// Storage for an [`SgList`]'s single-entry lists, in [`QueueGuard::add`]'s
/// frame.
type SgLocal = [core::mem::MaybeUninit<bindings::scatterlist>; 2];

impl SgList {
    /// A count of device-readable lists no request has: pushing stops, and
    /// [`QueueGuard::add`] refuses the request (the same test as for an
    /// empty one).
    const REFUSED: u32 = 64;

    /// Refuses the request.
    pub(super) fn refuse(&mut self) {
        // INVARIANT: A refused list.
        self.out = Self::REFUSED;
    }

    /// An empty list on `lists` and `local`, which must stay valid and
    /// otherwise unused while the list is (only [`QueueGuard::add`] makes
    /// one, on storage of its frame, and no `SgList` can be moved out of
    /// the `&mut` a request gets: there is no other value to put back).
    fn new(lists: &mut SgSlots, local: &mut SgLocal) -> Self {
        // INVARIANT: Empty: no list written, none counted.
        Self {
            lists: NonNull::from(lists),
            out: 0,
            ins: 0,
            local: NonNull::from(local),
            nlocal: 0,
        }
    }

    /// Adds a single-entry list for `len` bytes at `buf`; a third one (two
    /// fit), or one that [`SgList::push_list`] refuses, refuses the request.
    ///
    /// # Safety
    ///
    /// `buf..buf + len` must be directly mapped kernel memory that the
    /// request owns (see [`Request`]).
    pub(crate) unsafe fn push_buf(&mut self, buf: *const u8, len: u32, device_writes: bool) {
        if self.nlocal >= 2 {
            self.refuse();
            return;
        }
        // SAFETY: `local` is valid storage of `QueueGuard::add`'s frame,
        // reached only through this list (`SgList::new`); `nlocal < 2`.
        let sg = unsafe {
            self.local
                .as_ptr()
                .cast::<bindings::scatterlist>()
                .add(self.nlocal)
        };
        // SAFETY: `sg` points to writable memory for one scatterlist, which
        // `sg_init_one()` initialises whole; the caller guarantees `buf`.
        unsafe { bindings::sg_init_one(sg, buf.cast(), len) };
        // INVARIANT: `nlocal` was below 2.
        self.nlocal += 1;
        // SAFETY: `sg` lives in `self.local`, storage on the stack of
        // `QueueGuard::add`, which outlives the list's use.
        unsafe { self.push_list(sg, device_writes) }
    }

    /// Adds a terminated scatterlist. More than six lists, or a
    /// device-readable one after a device-writable one, refuse the request.
    ///
    /// # Safety
    ///
    /// `sg` must be a valid, end-marked scatterlist whose entries describe
    /// memory the request owns (see [`Request`]), and it must stay valid
    /// until [`QueueGuard::add`] returns.
    pub(super) unsafe fn push_list(&mut self, sg: *mut bindings::scatterlist, device_writes: bool) {
        // Refused here rather than in `try_push_list`: with the refusal
        // inside it, `queuecommand` ran 115 instructions per command
        // instead of 112 (`make insn-profile`, `--annotate`, 2026-12-03).
        // SAFETY: As guaranteed by the caller.
        if unsafe { self.try_push_list(sg, device_writes) }.is_err() {
            self.refuse();
        }
    }

    /// Adds `sg` as [`SgList::push_list`] does, but returns `EINVAL` for a
    /// list that does not fit without refusing the request: the caller
    /// must refuse it.
    ///
    /// # Safety
    ///
    /// As for [`SgList::push_list`].
    unsafe fn try_push_list(
        &mut self,
        sg: *mut bindings::scatterlist,
        device_writes: bool,
    ) -> Result {
        let used = (self.out + self.ins) as usize;
        if used >= 6 || (!device_writes && self.ins != 0) {
            // Full (or refused), or a device-readable list after a
            // device-writable one.
            return Err(EINVAL);
        }
        // SAFETY: `lists` is valid storage of `QueueGuard::add`'s frame,
        // reached only through this list (`SgList::new`); `used < 6`.
        unsafe {
            self.lists
                .as_ptr()
                .cast::<*mut bindings::scatterlist>()
                .add(used)
                .write(sg)
        };
        // INVARIANT: `lists[used]` is written; `used < 6`, and a
        // device-readable list comes before every device-writable one.
        if device_writes {
            self.ins += 1;
        } else {
            self.out += 1;
        }
        Ok(())
    }
}

/// A virtqueue of a [`Queue`], and the set that keeps it alive.
///
/// # Invariants
///
/// `vq` is a virtqueue of the device of `set`, created by the `find_vqs` call
/// that created `set`; it is deleted only when `set` is dropped.
struct Attached {
    vq: NonNull<bindings::virtqueue>,
    set: Arc<QueueSet>,
    /// `set.reset`, held here too so that preparing a kick reads
    /// `stopping` through one pointer, as before the reset state had an
    /// allocation of its own.
    reset: Arc<SetReset>,
}

// SAFETY: `Attached` is only reached under its queue's lock; the set may be
// dropped on any thread (in process context, see `QueueSet::drop`).
unsafe impl Send for Attached {}

/// What a [`Queue`]'s lock protects.
struct QueueInner<D> {
    /// The virtqueue; `None` between [`Queue::detach`] and [`Queue::attach`].
    attached: Option<Attached>,
    data: D,
}

/// A virtqueue with its lock (`virtqueue` plus the C driver's `vq_lock`).
/// Requests of type `R` go in and come back out; `D` is driver state kept
/// under the same lock (counters, for instance).
///
/// A queue can give up its virtqueue ([`Queue::detach`], which resets the
/// device) and take a new one from a later [`DriverDevice::find_vqs`](super::DriverDevice::find_vqs)
/// ([`Queue::attach`]): that is how a driver resets and re-initialises a
/// device under a live upper layer. While detached, adding fails with
/// `ENODEV` and reaping finds nothing. Dropping the queue detaches it,
/// dropping the requests the device did not complete.
///
/// # Invariants
///
/// Every buffer on the attached virtqueue was added as an `R` by
/// [`QueueGuard::add`].
///
/// # Examples
///
/// A request queue with per-queue counters under its lock: submit, then reap
/// from the interrupt callback:
///
/// ```ignore
/// use crate::abstractions::scsi::CommandRequest;
/// use crate::abstractions::virtio::Queue;
///
/// type ReqQueue = Queue<CommandRequest<VirtioScsi>, VqStats>;
///
/// let vq: Pin<KBox<ReqQueue>> = KBox::pin_init(Queue::new(raw, VqStats::default()), GFP_KERNEL)?;
///
/// // Submit; dropping the guard unlocks, then notifies the device.
/// let mut guard = vq.lock();
/// match guard.add(req) {
///     Ok(()) => {
///         guard.data().submitted += 1;
///         guard.kick_prepare();
///         drop(guard);
///     }
///     // A full ring (`ENOSPC`), or detached (`ENODEV`): the request comes back.
///     Err((req, _e)) => return Err(QueueError::HostBusy(req.into_command())),
/// }
///
/// // Reap, in the interrupt callback.
/// let mut guard = vq.lock();
/// let mut used = guard.used();
/// loop {
///     used.disable_cb();
///     for (req, used_len) in &mut used {
///         complete_cmd(req.into_command(), used_len);
///     }
///     if used.enable_cb() {
///         break;
///     }
/// }
/// ```
#[pin_data(PinnedDrop)]
pub(crate) struct Queue<R: Request, D = ()> {
    #[pin]
    lock: SpinLockIrq<QueueInner<D>>,
    _p: PhantomData<R>,
}

// SAFETY: The virtqueue is only used under `lock`, except for notifications
// (`Kick`), which the virtio core allows concurrently; requests in flight
// are owned by the queue and are `Send`.
unsafe impl<R: Request + Send, D: Send> Send for Queue<R, D> {}
// SAFETY: See `Send`; `D` is only reached under the lock.
unsafe impl<R: Request + Send, D: Send> Sync for Queue<R, D> {}

impl<R: Request, D> Queue<R, D> {
    /// Wraps a queue from [`DriverDevice::find_vqs`](super::DriverDevice::find_vqs), with `data` under its lock.
    pub(crate) fn new(raw: RawQueue, data: D) -> impl PinInit<Self> {
        // INVARIANT: `raw` came from `find_vqs` with its set; no buffer has
        // been added yet.
        pin_init!(Self {
            lock <- new_spinlock_irq!(QueueInner {
                attached: Some(Attached {
                    vq: raw.vq,
                    reset: raw.set.reset.clone(),
                    set: raw.set,
                }),
                data,
            }),
            _p: PhantomData,
        })
    }

    /// Locks the queue for adding and reaping buffers.
    pub(crate) fn lock(&self) -> QueueGuard<'_, R, D> {
        QueueGuard {
            guard: self.lock.lock(),
            kick: None,
            _p: PhantomData,
        }
    }

    /// Returns the set of the attached virtqueue and that virtqueue's index
    /// on the device (`virtqueue::index`), `None` while detached. While the
    /// set is held, the device's virtqueues are not deleted.
    pub(super) fn set_and_index(&self) -> Option<(Arc<QueueSet>, u32)> {
        let inner = self.lock.lock();
        let a = inner.attached.as_ref()?;
        // SAFETY: `a.vq` is a live virtqueue of `a.set` (`Attached`
        // invariant), kept so by the lock; its index is written once, when
        // it is created.
        let index = unsafe { (*a.vq.as_ptr()).index };
        Some((a.set.clone(), index))
    }

    /// Gives up the virtqueue: resets the device (once for all the queues
    /// of one `find_vqs`), then hands every request still on the ring to
    /// `f`, under the lock: with `Some(len)` for those the device completed
    /// (and the driver has not reaped yet), `None` for those it never
    /// finished. A no-op on a detached queue.
    ///
    /// Sleeps: the reset waits for running callbacks, and the last queue of
    /// a set to be detached deletes the device's virtqueues (after the RCU
    /// grace period that pending [`Kick`]s hold off).
    pub(crate) fn detach(&self, mut f: impl FnMut(R, Option<u32>)) {
        let Some(set) = self.lock.lock().attached.as_ref().map(|a| a.set.clone()) else {
            return;
        };
        // Outside the lock: resetting sleeps. Requests added meanwhile go
        // to a stopped device and are handed back below.
        set.reset.reset_device();
        let attached = {
            let mut guard = self.lock();
            // Answered ones first. (The set taken above is still attached:
            // a new one needs `find_vqs`, which refuses while this set's
            // virtqueues exist, and the clone keeps them.)
            while let Some((req, len)) = guard.get_buf() {
                f(req, Some(len));
            }
            let attached = guard.guard.attached.take();
            if let Some(a) = &attached {
                loop {
                    // SAFETY: `a.vq` is live (we hold its set) and the
                    // device is reset, so detaching the unused buffers is
                    // allowed; the queue's lock is held.
                    let token = unsafe { bindings::virtqueue_detach_unused_buf(a.vq.as_ptr()) };
                    let Some(token) = NonNull::new(token) else {
                        break;
                    };
                    // SAFETY: Every buffer on the queue was added as an `R`
                    // (type invariant); each token comes back once.
                    f(unsafe { R::from_token(token) }, None);
                }
            }
            attached
        };
        // Dropped without the lock: the last reference deletes the queues.
        drop(attached);
        drop(set);
    }

    /// Takes a virtqueue from a new [`DriverDevice::find_vqs`](super::DriverDevice::find_vqs) call, after
    /// [`Queue::detach`]. Fails with `EBUSY`, dropping `raw`, if the queue
    /// is attached.
    pub(crate) fn attach(&self, raw: RawQueue) -> Result {
        let mut guard = self.lock.lock();
        if guard.attached.is_some() {
            drop(guard);
            drop(raw);
            return Err(EBUSY);
        }
        // INVARIANT: A fresh virtqueue carries no buffer.
        guard.attached = Some(Attached {
            vq: raw.vq,
            reset: raw.set.reset.clone(),
            set: raw.set,
        });
        Ok(())
    }
}

#[pinned_drop]
impl<R: Request, D> PinnedDrop for Queue<R, D> {
    fn drop(self: Pin<&mut Self>) {
        self.detach(|req, _| drop(req));
    }
}

/// A locked [`Queue`].
///
/// # Examples
///
/// Counters kept under the queue's lock, updated with the ring in one lock
/// hold:
///
/// ```ignore
/// let mut guard = vq.lock();
/// guard.data().interrupts += 1;
/// let mut n = 0;
/// while let Some((req, used_len)) = guard.get_buf() {
///     complete_cmd(req.into_command(), used_len);
///     n += 1;
/// }
/// guard.data().completed += n;
/// ```
pub(crate) struct QueueGuard<'a, R: Request, D> {
    guard: SpinLockIrqGuard<'a, QueueInner<D>>,
    /// The notification [`QueueGuard::kick_prepare`] prepared. Fields drop
    /// in order: the lock is released first, then the device is notified,
    /// with none of the caller's code in between. No method may hand out
    /// `guard` itself (to wait on a condition variable, say): releasing the
    /// lock while a kick is pending would let the caller sleep in its
    /// read-side section.
    kick: Option<Kick<'a>>,
    _p: PhantomData<R>,
}

impl<'a, R: Request, D> QueueGuard<'a, R, D> {
    /// The virtqueue, if attached: live while the lock is held (the set is
    /// only dropped after being taken out under the lock).
    fn vq(&self) -> Option<*mut bindings::virtqueue> {
        self.guard.attached.as_ref().map(|a| a.vq.as_ptr())
    }

    /// Returns whether the queue has a virtqueue (it is not between
    /// [`Queue::detach`] and [`Queue::attach`]).
    pub(crate) fn is_attached(&self) -> bool {
        self.guard.attached.is_some()
    }

    /// Returns the driver state kept under the queue's lock.
    pub(crate) fn data(&mut self) -> &mut D {
        &mut self.guard.data
    }

    /// Releases the lock, then sends the notification prepared, if any:
    /// what dropping the guard does, inlined into a hot path.
    #[inline(always)]
    pub(crate) fn unlock(self) {
        let Self { guard, kick, _p } = self;
        drop(guard);
        drop(kick);
    }

    /// Hands `req` to the device (`virtqueue_add_sgs()`). On failure the
    /// request comes back with the error: `ENOSPC` when the ring is full,
    /// `EIO` when the device is broken, `ENODEV` while the queue is
    /// detached, `EINVAL` when its lists are none or do not fit.
    ///
    /// Called with interrupts off, so descriptor tables are allocated with
    /// `GFP_ATOMIC`.
    #[inline(always)]
    pub(crate) fn add(&mut self, req: R) -> Result<(), (R, Error)> {
        let Some(vq) = self.vq() else {
            return Err((req, ENODEV));
        };
        // SAFETY: The queue is attached and locked, so `vq` is live.
        unsafe { Self::add_on(vq, req) }
    }

    /// [`QueueGuard::add`], then, if `kick` and it succeeded,
    /// [`QueueGuard::kick_prepare`], with the virtqueue looked up once.
    /// Returns whether a notification was prepared.
    #[inline(always)]
    pub(crate) fn add_kick_prepare(&mut self, req: R, kick: bool) -> Result<bool, (R, Error)> {
        let Some(attached) = self.guard.attached.as_ref() else {
            return Err((req, ENODEV));
        };
        // SAFETY: The queue is attached and locked, so `vq` is live.
        unsafe { Self::add_on(attached.vq.as_ptr(), req) }?;
        Ok(kick && Self::kick_prepare_on(attached, &mut self.kick))
    }

    /// The body of [`QueueGuard::add`].
    ///
    /// # Safety
    ///
    /// `vq` is the virtqueue attached to this guard's queue.
    #[inline(always)]
    unsafe fn add_on(vq: *mut bindings::virtqueue, mut req: R) -> Result<(), (R, Error)> {
        let mut lists: SgSlots = [core::mem::MaybeUninit::uninit(); 6];
        let mut local: SgLocal = [core::mem::MaybeUninit::uninit(); 2];
        let mut sgs = SgList::new(&mut lists, &mut local);
        req.sgs(&mut sgs);
        // None, or more than fit: refused.
        let (out, ins) = (sgs.out, sgs.ins);
        let n = out + ins;
        if n == 0 || n as usize > lists.len() {
            return Err((req, EINVAL));
        }
        let token = req.into_token();
        // `sgs.lists` holds `out + ins` valid, terminated scatterlists (the
        // `SgList` push contracts), alive until the call returns; the core
        // reads no more entries than that.
        // SAFETY: The queue is attached and locked, so `vq` is live (the
        // caller's contract: it is the attached virtqueue of the locked
        // queue); the buffers stay valid until the token comes back
        // (`Request` contract).
        let ret = unsafe {
            bindings::virtqueue_add_sgs(
                vq,
                lists.as_mut_ptr().cast::<*mut bindings::scatterlist>(),
                out,
                ins,
                token.as_ptr(),
                bindings::GFP_ATOMIC,
            )
        };
        // Tested here rather than by `to_result()`, which is not inlined.
        if ret == 0 {
            return Ok(());
        }
        // SAFETY: The device did not take the token, so it is ours.
        Err((unsafe { R::from_token(token) }, Error::from_errno(ret)))
    }

    /// Prepares a notification of the device if it needs one for what was
    /// added (`virtqueue_kick_prepare()`): it is sent when the guard is
    /// dropped, right after the lock is released. Returns whether one was
    /// prepared by this call.
    #[inline(always)]
    pub(crate) fn kick_prepare(&mut self) -> bool {
        match self.guard.attached.as_ref() {
            Some(attached) => Self::kick_prepare_on(attached, &mut self.kick),
            None => false,
        }
    }

    /// The body of [`QueueGuard::kick_prepare`], for the attached
    /// virtqueue of this guard's queue (which the reference, borrowed from
    /// the guard, can only be) and the guard's `kick`.
    #[inline(always)]
    fn kick_prepare_on(attached: &Attached, kick: &mut Option<Kick<'a>>) -> bool {
        let vq = attached.vq.as_ptr();
        // SAFETY: The queue is attached and locked.
        if !unsafe { bindings::virtqueue_kick_prepare(vq) } || kick.is_some() {
            // Nothing new for the device, or one notification pending
            // already, which covers this.
            return false;
        }
        // The read-side section begins before `stopping` is read: a reset
        // that set it either waits for this section or is seen here.
        let rcu = RcuReadGuard::new();
        if attached.reset.stopping.load(Ordering::Relaxed) {
            return false;
        }
        // INVARIANT: `vq` is attached now; while the lock is held the
        // queue's reference to the set keeps it. The read-side section
        // begins before the lock is dropped, so the reset that ends
        // notifications (`SetReset::reset_device`, which sets `stopping`
        // and waits for a grace period before the set can be dropped and
        // its virtqueues deleted) waits for it.
        *kick = Some(Kick {
            vq: attached.vq,
            _rcu: rcu,
            _p: PhantomData,
        });
        true
    }

    /// Takes back the next request the device completed, with the number
    /// of bytes it wrote (`virtqueue_get_buf()`): the first item of
    /// [`QueueGuard::used`].
    pub(crate) fn get_buf(&mut self) -> Option<(R, u32)> {
        self.used().next()
    }

    /// Takes back the requests the device completed, in order, with the
    /// number of bytes it wrote to each ([`QueueGuard::get_buf`] until the
    /// ring has none). The virtqueue is looked up once for the whole batch.
    #[inline(always)]
    pub(crate) fn used(&mut self) -> Used<'_, 'a, R, D> {
        Used {
            vq: self.vq(),
            _guard: self,
        }
    }

    /// Returns whether the queue is attached and broken
    /// (`virtqueue_is_broken()`): the device broke the ring, or the whole
    /// device was marked broken (a surprise removal).
    pub(crate) fn is_broken(&self) -> bool {
        // SAFETY: The queue is attached and locked.
        self.vq()
            .is_some_and(|vq| unsafe { bindings::virtqueue_is_broken(vq) })
    }
}

/// The requests a device completed on a locked [`Queue`], as
/// [`QueueGuard::used`] takes them back.
///
/// # Invariants
///
/// `vq` is the virtqueue attached to the queue whose guard is borrowed, or
/// `None` if it is detached; the borrow keeps it locked and attached.
pub(crate) struct Used<'g, 'a, R: Request, D> {
    vq: Option<*mut bindings::virtqueue>,
    _guard: &'g mut QueueGuard<'a, R, D>,
}

impl<R: Request, D> Used<'_, '_, R, D> {
    /// Disables completion callbacks (`virtqueue_disable_cb()`).
    #[inline(always)]
    pub(crate) fn disable_cb(&mut self) {
        if let Some(vq) = self.vq {
            // SAFETY: The queue is attached and locked (type invariant).
            unsafe { bindings::virtqueue_disable_cb(vq) };
        }
    }

    /// Re-enables completion callbacks; `false` means more buffers arrived
    /// meanwhile and must be reaped first (`virtqueue_enable_cb()`). `true`
    /// while the queue is detached.
    #[inline(always)]
    pub(crate) fn enable_cb(&mut self) -> bool {
        match self.vq {
            // SAFETY: The queue is attached and locked (type invariant).
            Some(vq) => unsafe { bindings::virtqueue_enable_cb(vq) },
            None => true,
        }
    }
}

impl<R: Request, D> Iterator for Used<'_, '_, R, D> {
    type Item = (R, u32);

    #[inline(always)]
    fn next(&mut self) -> Option<(R, u32)> {
        let vq = self.vq?;
        let mut len = 0u32;
        // `virtqueue_get_buf()` is this call behind a wrapper of its own,
        // one call more per command.
        // SAFETY: The queue is attached and locked (type invariant); `len`
        // is a valid out pointer; no context is asked for (null), as
        // `virtqueue_get_buf()` asks none.
        let token = unsafe { bindings::virtqueue_get_buf_ctx(vq, &mut len, core::ptr::null_mut()) };
        let token = NonNull::new(token.cast::<kernel::ffi::c_void>())?;
        // SAFETY: Every buffer on this queue was added as an `R` (the
        // queue's invariant); the ring returns each token once.
        Some((unsafe { R::from_token(token) }, len))
    }
}

/// A notification for the device, prepared under a [`Queue`]'s lock by
/// [`QueueGuard::kick_prepare`] and held by the guard, which sends it when
/// dropped, after releasing the lock (`virtqueue_notify()`). It never leaves
/// the guard, so the caller's code runs inside its RCU read-side section
/// (which must not sleep) only while holding the queue's spinlock, and none
/// runs between the unlock and the notification.
///
/// # Invariants
///
/// `vq` was attached when the kick was prepared, and the RCU read-side
/// section held since then keeps it from being deleted.
///
/// # Examples
///
/// Prepared under the lock, sent after it, for the last command of a batch
/// only:
///
/// ```ignore
/// let mut guard = vq.lock();
/// guard.add(req).map_err(|(_req, e)| e)?;
/// if cmd_is_last {
///     guard.kick_prepare();
/// }
/// drop(guard);
/// ```
struct Kick<'a> {
    vq: NonNull<bindings::virtqueue>,
    _rcu: RcuReadGuard,
    _p: PhantomData<&'a ()>,
}

impl Drop for Kick<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // The result is not needed: `false` means the virtqueue is broken
        // (`virtqueue_notify()` marks it so), and later adds then fail
        // with `EIO`, which the owner of the queue sees.
        // SAFETY: `vq` is live (type invariant); notify may run
        // concurrently with the locked operations, and no reset runs
        // meanwhile (`SetReset::reset_device` waits for the section held,
        // which `_rcu` ends after this).
        unsafe { bindings::virtqueue_notify(self.vq.as_ptr()) };
    }
}
