// SPDX-License-Identifier: GPL-2.0

//! Buffers of another subsystem's owner on a virtqueue, in the order the
//! driver gives.
//!
//! C header: [`include/linux/virtio.h`](srctree/include/linux/virtio.h)
//!
//! The owner (a SCSI command, for instance) lends its buffers through the
//! neutral [`Lend`] contract; the device's descriptor layout is a
//! protocol rule, so the driver states it, in safe code, as a [`Layout`].

use super::*;
use crate::abstractions::scatterlist::{Brand, Direction, Lend, ScatterList};
use core::marker::PhantomData;
use core::ptr::NonNull;

/// The order in which a driver puts the lists of an owner `L` on a
/// virtqueue: device-readable lists first, then device-writable ones.
///
/// # Examples
///
/// virtio-scsi's order (`__virtscsi_add_cmd()`): each payload behind the
/// header of its direction:
///
/// ```ignore
/// impl Layout<CommandRequest<VirtioScsi>> for VirtioScsi {
///     fn sgs<'b>(bufs: CommandBufs<'b>, sgs: &mut LentSgs<'_, 'b>) {
///         sgs.push(bufs.out_hdr, Direction::ToDevice);
///         if let (DataDirection::ToDevice, Some(data)) = (bufs.direction, bufs.data) {
///             sgs.push(data, Direction::ToDevice);
///         }
///         sgs.push(bufs.in_hdr, Direction::FromDevice);
///         if let (DataDirection::FromDevice, Some(data)) = (bufs.direction, bufs.data) {
///             sgs.push(data, Direction::FromDevice);
///         }
///     }
/// }
/// ```
pub(crate) trait Layout<L: Lend> {
    /// Pushes `bufs`, the lists of one lending, onto `sgs`.
    fn sgs<'b>(bufs: L::Bufs<'b>, sgs: &mut LentSgs<'_, 'b>);
}

/// The scatterlists of one request on a virtqueue, as a [`Layout`] fills
/// them: only lists of the owner being added (of brand `'b`) go in.
///
/// # Examples
///
/// ```ignore
/// sgs.push(bufs.in_hdr, Direction::FromDevice);
/// ```
pub(crate) struct LentSgs<'s, 'b> {
    list: &'s mut SgList,
    _brand: PhantomData<fn(&'b ()) -> &'b ()>,
}

impl<'b> LentSgs<'_, 'b> {
    /// Adds `sg` for the device to access as `dir` says. A list that does
    /// not fit (more than six, a device-readable one after a
    /// device-writable one, or a device-writable one the owner only lets
    /// the device read) fails the whole request, with `EINVAL`.
    #[inline(always)]
    pub(crate) fn push(&mut self, sg: ScatterList<'b>, dir: Direction) {
        if !sg.allows(dir) {
            self.list.refuse();
            return;
        }
        // SAFETY: `sg` is a valid end-marked list of the owner being added
        // (its brand is this request's), describing memory the owner lends
        // until its token comes back, and lets the device write if `dir`
        // says so (checked above; `ScatterList` invariants, `Lend`
        // contract): what `Request` needs. It stays valid while the owner's
        // token is outstanding, so until `QueueGuard::add` returns.
        unsafe {
            self.list
                .push_list(sg.as_raw(), dir == Direction::FromDevice)
        };
    }
}

/// An owner lent to a device through a virtqueue, its lists in the order
/// `O` says: the [`Request`] a [`Queue`] of such owners carries.
///
/// # Examples
///
/// ```ignore
/// type ReqQueue = Queue<Lent<CommandRequest<VirtioScsi>, VirtioScsi>, VqStats>;
///
/// vq.lock().add(Lent::new(cmd.into_request(req_hdr, resp_hdr)?))?;
/// while let Some((req, used_len)) = vq.lock().get_buf() {
///     complete_cmd(req.into_inner().into_command(), used_len);
/// }
/// ```
pub(crate) struct Lent<L, O> {
    owner: L,
    _o: PhantomData<fn() -> O>,
}

impl<L: Lend, O: Layout<L>> Lent<L, O> {
    /// Prepares `owner` to go on a queue.
    #[inline(always)]
    pub(crate) fn new(owner: L) -> Self {
        Self {
            owner,
            _o: PhantomData,
        }
    }

    /// Returns the owner, after the device gave it back (or the queue
    /// refused it).
    #[inline(always)]
    pub(crate) fn into_inner(self) -> L {
        self.owner
    }
}

// SAFETY: The lists pushed are the owner's, of this lending only (the
// brand made here is the one `LentSgs` accepts, and `Layout::sgs` is
// generic over it, so it has no other list of that brand), with the
// directions the owner allows; they and their memory stay valid and
// unaccessed by the CPU until the token comes back (the `Lend` contract),
// which only `Lend::from_token` turns back into the owner.
unsafe impl<L: Lend, O: Layout<L>> Request for Lent<L, O> {
    #[inline(always)]
    fn sgs(&mut self, sgs: &mut SgList) {
        // SAFETY: One brand, given to the one `bufs` call below; its
        // lifetime is that of the borrow of `self.owner` made here, which
        // `O::sgs` receives as a generic parameter.
        let brand = unsafe { Brand::new() };
        let bufs = self.owner.bufs(brand);
        O::sgs(
            bufs,
            &mut LentSgs {
                list: sgs,
                _brand: PhantomData,
            },
        );
    }

    #[inline(always)]
    fn into_token(self) -> NonNull<kernel::ffi::c_void> {
        self.owner.into_token()
    }

    #[inline(always)]
    unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self {
        // SAFETY: Our tokens are the owner's (`into_token` above); the
        // caller passes one, once.
        Self::new(unsafe { L::from_token(token) })
    }
}
