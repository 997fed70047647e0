// SPDX-License-Identifier: GPL-2.0

//! Hardware random number generators (`struct hwrng`).
//!
//! C header: [`include/linux/hw_random.h`](srctree/include/linux/hw_random.h)
//!
//! A driver registers its generator with the hw_random core, which reads
//! from the current one for `/dev/hwrng` and for the `hwrng` thread that
//! feeds the kernel's entropy pool. Only the virtio-rng sample
//! (`samples/virtio_rng_rs/`) builds this file.

use crate::abstractions::bindings;
use core::ptr::addr_of_mut;
use kernel::error::to_result;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;
use kernel::types::Opaque;

/// What a hardware random number generator does (the `read` operation of
/// `struct hwrng`).
pub(crate) trait Operations: Send + Sync {
    /// Fills the start of `buf` with random bytes and returns how many it
    /// wrote (`read`).
    ///
    /// With `wait`, the caller may sleep until the device has data;
    /// without, it takes what is at hand, possibly nothing. Called in
    /// process context, for one reader at a time. A read that waits for the
    /// device must also end when the device goes away: dropping the
    /// [`Registration`] waits until no read runs.
    fn read(&self, buf: &mut [u8], wait: bool) -> Result<usize>;
}

/// A generator registered with the hw_random core (`hwrng_register()`).
///
/// Dropping it unregisters it (`hwrng_unregister()`), which returns once no
/// read runs and none can start: the core holds a reference on the
/// generator for each read and unregistering waits for the last one. The
/// name and the operations are dropped only after that, so no callback
/// outlives them. As with every registration, the module must not leak it
/// (`core::mem::forget`) and then unload: the core would keep calling into
/// the module's code.
///
/// # Examples
///
/// A generator registered for as long as `reg` lives (the virtio-rng sample
/// registers one per device, in its `scan`, and drops it in `remove`):
///
/// ```ignore
/// struct Fixed;
///
/// impl hwrng::Operations for Fixed {
///     fn read(&self, buf: &mut [u8], _wait: bool) -> Result<usize> {
///         // Not random at all: a real driver copies what its device gave.
///         buf.fill(4);
///         Ok(buf.len())
///     }
/// }
///
/// let name = CString::try_from_fmt(fmt!("fixed"))?;
/// let reg = KBox::pin_init(
///     hwrng::Registration::new(name, Arc::new(Fixed, GFP_KERNEL)?),
///     GFP_KERNEL,
/// )?;
/// // `/dev/hwrng` reads `Fixed` while it is the current generator.
/// drop(reg); // Unregistered; no read runs any more.
/// ```
///
/// # Invariants
///
/// `rng` is registered from the end of a successful [`Registration::new`]
/// until drop, with `name` as its name, [`Registration::read_callback`] as
/// its `read` and `priv` pointing to this registration.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: Operations> {
    #[pin]
    rng: Opaque<bindings::hwrng>,
    name: CString,
    data: Arc<T>,
}

// SAFETY: The core calls `read` on any thread, with `&T` only, and `T` is
// `Send + Sync`; unregistering (drop) may happen on any thread.
unsafe impl<T: Operations> Send for Registration<T> {}
// SAFETY: A shared `Registration` gives no access to anything (no `&self`
// methods); see `Send`.
unsafe impl<T: Operations> Sync for Registration<T> {}

impl<T: Operations> Registration<T> {
    /// Registers a generator named `name` that reads through `data`.
    ///
    /// Fails with `EEXIST` if a generator of that name is registered. The
    /// core may read from it before this returns: the first generator
    /// becomes the current one, and the `hwrng` thread starts reading it.
    pub(crate) fn new(name: CString, data: Arc<T>) -> impl PinInit<Self, Error> {
        let init = move |slot: *mut Self| -> Result {
            // SAFETY: `slot` is valid for writes (`pin_init_from_closure`);
            // the fields are written before the core can see them.
            unsafe {
                addr_of_mut!((*slot).name).write(name);
                addr_of_mut!((*slot).data).write(data);
            }
            // SAFETY: As above; `rng` is a field of `*slot`.
            let rng = Opaque::raw_get(unsafe { core::ptr::addr_of!((*slot).rng) });
            // All zero (reference count 0, no list) is a generator the core
            // has not seen; it initialises its own fields in
            // `hwrng_register()`.
            // SAFETY: `rng` is valid for writes; the name lives in `*slot`
            // next to it, as long as the registration.
            unsafe {
                core::ptr::write_bytes(rng, 0, 1);
                (*rng).name = (*slot).name.as_char_ptr();
                (*rng).read = Some(Self::read_callback);
                (*rng).priv_ = slot as kernel::ffi::c_ulong;
            }
            // INVARIANT: Registered with the name, callback and `priv` set
            // above; the slot is pinned, so they stay where the core saw them
            // until `drop` unregisters the generator.
            // SAFETY: `rng` is initialised as `hwrng_register()` requires.
            let ret = to_result(unsafe { bindings::hwrng_register(rng) });
            if ret.is_err() {
                // SAFETY: Not registered, so nothing else refers to the two
                // fields written above; on error the slot must be left
                // without live values.
                unsafe {
                    core::ptr::drop_in_place(addr_of_mut!((*slot).name));
                    core::ptr::drop_in_place(addr_of_mut!((*slot).data));
                }
            }
            ret
        };
        // SAFETY: The closure initialises every field on success and drops
        // what it wrote on failure; it does not move the slot.
        unsafe { kernel::init::pin_init_from_closure(init) }
    }

    /// # Safety
    ///
    /// Only called by the hw_random core, for a generator registered by
    /// [`Registration::new`] and not yet unregistered, with `buf` valid for
    /// writes of `max` bytes and used by nothing else during the call.
    unsafe extern "C" fn read_callback(
        rng: *mut bindings::hwrng,
        buf: *mut kernel::ffi::c_void,
        max: usize,
        wait: bool,
    ) -> kernel::ffi::c_int {
        // SAFETY: The core passes our generator; `priv` was set before it
        // was registered and never changes.
        let this = unsafe { (*rng).priv_ } as *const Self;
        // SAFETY: `priv` points to the registration (type invariant), which
        // is alive: its drop unregisters the generator first, and that waits
        // for this read to return.
        let data = unsafe { &*core::ptr::addr_of!((*this).data) };
        let buf = buf.cast::<u8>();
        // The core's buffers are kmalloc memory that may never have been
        // written: zeroed, they are plain bytes to lend out.
        // SAFETY: The caller guarantees `max` writable bytes at `buf`, used
        // by nothing else until the callback returns.
        let buf = unsafe {
            core::ptr::write_bytes(buf, 0, max);
            core::slice::from_raw_parts_mut(buf, max)
        };
        match data.read(buf, wait) {
            // The core asks for a few dozen bytes: `max` fits an `int`.
            Ok(n) => kernel::ffi::c_int::try_from(n.min(max)).unwrap_or(0),
            Err(e) => e.to_errno(),
        }
    }
}

#[pinned_drop]
impl<T: Operations> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Registered (type invariant). `hwrng_unregister()` returns
        // once no read of it runs or can start, so nothing uses the name or
        // the operations, dropped after this.
        unsafe { bindings::hwrng_unregister(self.rng.get()) };
    }
}
