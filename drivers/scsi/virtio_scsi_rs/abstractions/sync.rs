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

use crate::bindings;

/// A spinlock that disables local interrupts while held
/// (`spin_lock_irqsave()`).
///
/// Create one with [`new_spinlock_irq!`].
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
        unsafe { bindings::vscsi_spin_lock_irqsave(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, flags: &Self::GuardState) {
        // SAFETY: The caller owns the lock, and `flags` comes from the
        // `lock` call that acquired it.
        unsafe { bindings::vscsi_spin_unlock_irqrestore(ptr, *flags) }
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
