// SPDX-License-Identifier: GPL-2.0

//! An interrupt-disabling spinlock.
//!
//! C header: [`include/linux/spinlock.h`](srctree/include/linux/spinlock.h).
//!
//! The 6.12 [`kernel::sync::SpinLock`] takes `spin_lock()` without disabling
//! interrupts, so it cannot protect state that a hard-IRQ handler (a
//! virtqueue callback) also takes. [`SpinLockIrq`] uses
//! `spin_lock_irqsave()`/`spin_unlock_irqrestore()` and keeps the saved flags
//! in the guard.

use crate::abstractions::bindings;
use kernel::prelude::*;
use kernel::types::Opaque;

/// A spinlock that disables local interrupts while held
/// (`spin_lock_irqsave()`).
///
/// Create one with [`new_spinlock_irq!`].
///
/// # Examples
///
/// State shared with a hard-IRQ handler, in a pinned structure:
///
/// ```ignore
/// use crate::abstractions::sync::{new_spinlock_irq, SpinLockIrq};
///
/// #[pin_data]
/// struct QueueState {
///     #[pin]
///     lock: SpinLockIrq<u64>,
/// }
///
/// let state = KBox::pin_init(pin_init!(QueueState { lock <- new_spinlock_irq!(0) }), GFP_KERNEL)?;
/// // In process context or in the interrupt handler alike:
/// *state.lock.lock() += 1;
/// ```
pub(crate) type SpinLockIrq<T> = kernel::sync::lock::Lock<T, SpinLockIrqBackend>;

/// A guard of a [`SpinLockIrq`].
pub(crate) type SpinLockIrqGuard<'a, T> = kernel::sync::lock::Guard<'a, T, SpinLockIrqBackend>;

/// A kernel `spinlock_t` backend that saves and disables interrupts.
pub(crate) struct SpinLockIrqBackend;

// SAFETY: The underlying `spinlock_t` ensures mutual exclusion, and the saved
// interrupt state travels in the guard from `lock` to `unlock`. `relock`
// uses the default implementation, which calls `lock` again.
unsafe impl kernel::sync::lock::Backend for SpinLockIrqBackend {
    type State = bindings::spinlock_t;
    type GuardState = kernel::ffi::c_ulong;

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const kernel::ffi::c_char,
        key: *mut bindings::lock_class_key,
    ) {
        // SAFETY: The caller guarantees that `ptr` is valid for writes and
        // that `name` and `key` stay valid for reads indefinitely.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: The caller guarantees that `ptr` points to an initialised
        // spinlock.
        unsafe { irqsave::lock(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, flags: &Self::GuardState) {
        // SAFETY: The caller owns the lock, and `flags` comes from the
        // `lock` call that acquired it.
        unsafe { irqsave::unlock(ptr, *flags) }
    }
}

/// `spin_lock_irqsave()` and `spin_unlock_irqrestore()` as direct calls: on
/// SMP kernels without PREEMPT_RT and without inlined lock functions these
/// macros expand to `_raw_spin_lock_irqsave(&lock->rlock)` (and the unlock
/// counterpart), `rlock` being the first member of `spinlock_t` with or
/// without lockdep. Calling them directly saves the C wrapper's call on every
/// I/O.
#[cfg(all(
    CONFIG_SMP,
    not(CONFIG_PREEMPT_RT),
    not(CONFIG_INLINE_SPIN_LOCK_IRQSAVE),
    not(CONFIG_INLINE_SPIN_UNLOCK_IRQRESTORE)
))]
mod irqsave {
    use crate::abstractions::bindings;

    /// # Safety
    ///
    /// `ptr` points to an initialised spinlock.
    pub(super) unsafe fn lock(ptr: *mut bindings::spinlock_t) -> kernel::ffi::c_ulong {
        // SAFETY: The caller guarantees `ptr`; its `rlock` is at offset 0.
        unsafe { bindings::_raw_spin_lock_irqsave(ptr.cast()) }
    }

    /// # Safety
    ///
    /// The caller holds the lock, taken by [`lock`] which returned `flags`.
    pub(super) unsafe fn unlock(ptr: *mut bindings::spinlock_t, flags: kernel::ffi::c_ulong) {
        // SAFETY: As guaranteed by the caller; `rlock` is at offset 0.
        unsafe { bindings::_raw_spin_unlock_irqrestore(ptr.cast(), flags) }
    }
}

/// Elsewhere, through the C wrappers in `vscsi_helpers.c`.
#[cfg(not(all(
    CONFIG_SMP,
    not(CONFIG_PREEMPT_RT),
    not(CONFIG_INLINE_SPIN_LOCK_IRQSAVE),
    not(CONFIG_INLINE_SPIN_UNLOCK_IRQRESTORE)
)))]
mod irqsave {
    use crate::abstractions::bindings;

    /// # Safety
    ///
    /// `ptr` points to an initialised spinlock.
    pub(super) unsafe fn lock(ptr: *mut bindings::spinlock_t) -> kernel::ffi::c_ulong {
        // SAFETY: The caller guarantees `ptr`.
        unsafe { bindings::vscsi_spin_lock_irqsave(ptr) }
    }

    /// # Safety
    ///
    /// The caller holds the lock, taken by [`lock`] which returned `flags`.
    pub(super) unsafe fn unlock(ptr: *mut bindings::spinlock_t, flags: kernel::ffi::c_ulong) {
        // SAFETY: As guaranteed by the caller.
        unsafe { bindings::vscsi_spin_unlock_irqrestore(ptr, flags) }
    }
}

/// Creates a [`SpinLockIrq`] initialiser with a lock class of its own.
macro_rules! new_spinlock_irq {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::abstractions::sync::SpinLockIrq::new(
            $inner,
            ::kernel::optional_name!($($name)?),
            ::kernel::static_lock_class!(),
        )
    };
}
pub(crate) use new_spinlock_irq;

/// A completion (`struct completion`): one side signals once, the other
/// waits for it with a time limit.
///
/// C header: [`include/linux/completion.h`](srctree/include/linux/completion.h).
///
/// # Invariants
///
/// `inner` was initialised by `init_completion()` and never moves.
///
/// # Examples
///
/// Signalled once from a virtqueue callback, waited for with a time limit:
///
/// ```ignore
/// use crate::abstractions::sync::Completion;
///
/// #[pin_data]
/// struct Inner {
///     #[pin]
///     completion: Completion,
/// }
///
/// let inner = Arc::pin_init(pin_init!(Inner { completion <- Completion::new() }), GFP_KERNEL)?;
/// // The callback, in hard-IRQ context:
/// inner.completion.complete();
/// // The waiter, in process context:
/// if !inner.completion.wait_timeout_ms(30_000) {
///     return Err(ETIMEDOUT);
/// }
/// ```
#[pin_data]
pub(crate) struct Completion {
    #[pin]
    inner: Opaque<bindings::completion>,
}

// SAFETY: A completion is signalled and waited for from any thread; its
// state is protected by its own wait-queue lock.
unsafe impl Send for Completion {}
// SAFETY: See `Send`; all operations take `&self`.
unsafe impl Sync for Completion {}

impl Completion {
    /// Creates a completion that has not been signalled.
    pub(crate) fn new() -> impl PinInit<Self> {
        // INVARIANT: `init_completion()` initialises the pinned slot.
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes and pinned.
            inner <- Opaque::ffi_init(|slot| unsafe { bindings::vscsi_init_completion(slot) }),
        })
    }

    /// Signals the completion, waking one waiter (`complete()`). Callable
    /// from interrupt context.
    pub(crate) fn complete(&self) {
        // SAFETY: By the type invariant the completion is initialised.
        unsafe { bindings::complete(self.inner.get()) };
    }

    /// Signals the completion for good, waking every waiter, present and
    /// future (`complete_all()`). Callable from interrupt context.
    pub(crate) fn complete_all(&self) {
        // SAFETY: By the type invariant the completion is initialised.
        unsafe { bindings::complete_all(self.inner.get()) };
    }

    /// Sleeps until the completion is signalled (`wait_for_completion()`).
    pub(crate) fn wait(&self) {
        // SAFETY: By the type invariant the completion is initialised; the
        // caller is in process context (it may sleep).
        unsafe { bindings::wait_for_completion(self.inner.get()) };
    }

    /// Sleeps until the completion is signalled or the task gets a fatal
    /// signal (`wait_for_completion_killable()`), which returns
    /// `ERESTARTSYS`.
    // The virtio-rng sample's reads (samples/virtio_rng_rs/); the driver
    // has no wait a user may want to kill.
    #[allow(dead_code)]
    pub(crate) fn wait_killable(&self) -> Result {
        // SAFETY: By the type invariant the completion is initialised; the
        // caller is in process context (it may sleep).
        kernel::error::to_result(unsafe {
            bindings::wait_for_completion_killable(self.inner.get())
        })
    }

    /// Sleeps until the completion is signalled or `ms` milliseconds have
    /// passed (`wait_for_completion_timeout()`); `true` if signalled.
    pub(crate) fn wait_timeout_ms(&self, ms: u32) -> bool {
        // SAFETY: Pure conversion.
        let jiffies = unsafe { bindings::__msecs_to_jiffies(ms) };
        // SAFETY: By the type invariant the completion is initialised; the
        // caller is in process context (it may sleep).
        unsafe { bindings::wait_for_completion_timeout(self.inner.get(), jiffies) != 0 }
    }
}

/// An RCU read-side critical section (`rcu_read_lock()` to
/// `rcu_read_unlock()`), ended when the guard is dropped.
///
/// C header: [`include/linux/rcupdate.h`](srctree/include/linux/rcupdate.h).
///
/// # Invariants
///
/// The current task is inside the read-side section that `new` entered; the
/// guard is not `Send`, so it ends on the CPU/task that began it.
///
/// # Examples
///
/// Keeping a virtqueue from being deleted while it is notified outside the
/// queue's lock; the deleting side waits with [`synchronize_rcu`]:
///
/// ```ignore
/// let rcu = RcuReadGuard::new();
/// // ... take `vq` under the queue's lock, unlock ...
/// // SAFETY: `vq` is not deleted before the read-side section ends.
/// unsafe { bindings::virtqueue_notify(vq) };
/// drop(rcu);
///
/// // The side that deletes the virtqueues:
/// synchronize_rcu();
/// ```
pub(crate) struct RcuReadGuard(core::marker::PhantomData<*mut ()>);

impl RcuReadGuard {
    /// Enters a read-side critical section (`rcu_read_lock()`).
    pub(crate) fn new() -> Self {
        rcu::read_lock();
        // INVARIANT: The section was just entered.
        Self(core::marker::PhantomData)
    }
}

impl Drop for RcuReadGuard {
    fn drop(&mut self) {
        // By the type invariant this task is in the section `new` entered.
        rcu::read_unlock();
    }
}

/// `rcu_read_lock()` and `rcu_read_unlock()` inline: with non-preemptible
/// RCU, no preempt count and no lockdep they are `preempt_disable()` and
/// `preempt_enable()`, which are then compiler barriers: the section is the
/// code between them, which must not sleep (nothing schedules it out). This
/// saves two C calls per device notification.
#[cfg(not(any(
    CONFIG_PREEMPT_RCU,
    CONFIG_PREEMPT_COUNT,
    CONFIG_DEBUG_LOCK_ALLOC,
    CONFIG_PROVE_RCU
)))]
mod rcu {
    use core::sync::atomic::{compiler_fence, Ordering};

    pub(super) fn read_lock() {
        compiler_fence(Ordering::SeqCst);
    }

    pub(super) fn read_unlock() {
        compiler_fence(Ordering::SeqCst);
    }
}

/// Elsewhere, through the C wrappers in `vscsi_helpers.c`.
#[cfg(any(
    CONFIG_PREEMPT_RCU,
    CONFIG_PREEMPT_COUNT,
    CONFIG_DEBUG_LOCK_ALLOC,
    CONFIG_PROVE_RCU
))]
mod rcu {
    use crate::abstractions::bindings;

    pub(super) fn read_lock() {
        // SAFETY: Always callable; `RcuReadGuard` pairs it with an unlock.
        unsafe { bindings::vscsi_rcu_read_lock() };
    }

    pub(super) fn read_unlock() {
        // SAFETY: Called by `RcuReadGuard::drop`, in the section its `new`
        // entered.
        unsafe { bindings::vscsi_rcu_read_unlock() };
    }
}

/// Waits until every RCU read-side critical section that began before the
/// call has ended (`synchronize_rcu()`). Sleeps.
pub(crate) fn synchronize_rcu() {
    // SAFETY: Callable from process context, which the caller is in (the
    // function may sleep, as documented).
    unsafe { bindings::synchronize_rcu() };
}

/// Sleeps for at least `ms` milliseconds (`msleep()`). Process context only.
pub(crate) fn msleep(ms: u32) {
    // SAFETY: A plain sleep; the caller is in process context (a sleep in
    // atomic context is reported by debug kernels, it is not unsound).
    unsafe { bindings::msleep(ms) };
}
