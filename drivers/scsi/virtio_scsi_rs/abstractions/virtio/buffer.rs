// SPDX-License-Identifier: GPL-2.0

//! Buffers only the device writes, in memory of their own.
//!
//! C header: [`include/linux/scatterlist.h`](srctree/include/linux/scatterlist.h)

use super::*;
use core::ptr::NonNull;
use kernel::prelude::*;

/// The unit of [`DeviceBuf`] memory: a cache line and then some (the
/// largest DMA alignment an architecture asks for).
#[repr(C, align(128))]
#[derive(Clone, Copy)]
struct Line([u8; 128]);

/// A buffer only the device writes (an event buffer, for instance), in
/// memory of its own: it starts on a cache line and fills whole lines, so no
/// CPU-written state shares a line with it while the device owns it. It is
/// zeroed each time it is given to the device, so after the device gives it
/// back it holds what the device wrote and zeros elsewhere, whatever used
/// length the device reports.
///
/// # Invariants
///
/// `lines` holds at least `len` initialised bytes, which the allocation is aligned to
/// [`Line`] for (kmalloc aligns a size to its largest power-of-two divisor);
/// `len` is not 0 (a zero-length descriptor is not allowed).
///
/// # Examples
///
/// Event buffers kept posted on a virtqueue, and one taken back:
///
/// ```ignore
/// use crate::abstractions::virtio::{DeviceBuf, Queue};
///
/// fn post_event_buf(vq: &Queue<KBox<DeviceBuf>>, len: u32) -> Result {
///     let buf = KBox::new(DeviceBuf::new(len)?, GFP_KERNEL)?;
///     let mut guard = vq.lock();
///     guard.add(buf).map_err(|(_buf, e)| e)?;
///     guard.kick_prepare();
///     // Unlocks, then notifies the device.
///     drop(guard);
///     Ok(())
/// }
///
/// fn next_event(vq: &Queue<KBox<DeviceBuf>>) -> Option<KBox<DeviceBuf>> {
///     // The used length is not trusted (vhost-scsi reports 0): a buffer the
///     // device did not write reads as zeroes.
///     let (buf, _used_len) = vq.lock().get_buf()?;
///     Some(buf)
/// }
///
/// if let Some(buf) = next_event(&event_vq) {
///     let ev = protocol::parse_event(buf.bytes());
/// }
/// ```
pub(crate) struct DeviceBuf {
    lines: KVec<Line>,
    len: u32,
}

impl DeviceBuf {
    /// Allocates a zeroed buffer of `len` bytes; `EINVAL` for 0 (a
    /// zero-length descriptor is not allowed).
    pub(crate) fn new(len: u32) -> Result<Self> {
        if len == 0 {
            return Err(EINVAL);
        }
        let n = (len as usize).div_ceil(core::mem::size_of::<Line>());
        let lines = KVec::from_elem(Line([0; 128]), n, GFP_KERNEL)?;
        // INVARIANT: `n` lines hold at least `len` bytes, all initialised
        // (zero), in a `KVec<Line>`, aligned to `Line`; `len` is not 0.
        Ok(Self { lines, len })
    }

    /// Returns the buffer's bytes (what the device wrote, after it gave the
    /// buffer back).
    pub(crate) fn bytes(&self) -> &[u8] {
        let ptr = self.lines.as_ptr().cast::<u8>();
        // SAFETY: `lines` holds at least `len` initialised bytes (type
        // invariant); `Line` is plain bytes.
        unsafe { core::slice::from_raw_parts(ptr, self.len as usize) }
    }
}

// SAFETY: The device-visible memory is the `KVec`'s heap allocation, owned
// by the boxed `DeviceBuf` behind the token while the device has it; nothing
// else points into it.
unsafe impl Request for KBox<DeviceBuf> {
    fn sgs(&mut self, sgs: &mut SgList) {
        // Every time the buffer goes to the device it starts zeroed: a
        // device need not report how much it wrote (vhost-scsi says 0), so
        // what the buffer held before must never read as its answer.
        self.lines.fill(Line([0; 128]));
        let ptr = self.lines.as_ptr().cast::<u8>();
        // SAFETY: `ptr..ptr + len` is kmalloc memory owned by this request.
        unsafe { sgs.push_buf(ptr, self.len, true) };
    }

    fn into_token(self) -> NonNull<kernel::ffi::c_void> {
        // SAFETY: `KBox::into_raw` never returns null.
        unsafe { NonNull::new_unchecked(KBox::into_raw(self).cast()) }
    }

    unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self {
        // SAFETY: The caller passes a token from `into_token`, once.
        unsafe { KBox::from_raw(token.as_ptr().cast()) }
    }
}
