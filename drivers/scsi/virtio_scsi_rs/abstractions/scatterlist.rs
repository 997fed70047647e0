// SPDX-License-Identifier: GPL-2.0

//! Scatterlists (`struct scatterlist`) that an owner lends to a device, and
//! the contract of lending them.
//!
//! C header: [`include/linux/scatterlist.h`](srctree/include/linux/scatterlist.h)
//!
//! Neutral between the subsystems that own buffers and the transports that
//! carry them: an owner (a SCSI command, for instance) implements [`Lend`],
//! a transport (a virtqueue) takes the owner's [`ScatterList`]s in the order
//! its driver decides and keeps the owner's token until the device is done.
//! Neither side names the other.

use crate::abstractions::bindings;
use core::marker::PhantomData;
use core::ptr::NonNull;

/// What a device does with a buffer lent to it.
///
/// # Examples
///
/// A read's data is lent device-writable, its request header device-readable:
///
/// ```ignore
/// sgs.push(bufs.out_hdr, Direction::ToDevice);
/// sgs.push(bufs.in_hdr, Direction::FromDevice);
/// sgs.push(data, Direction::FromDevice);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The device reads the buffer (`DMA_TO_DEVICE`).
    ToDevice,
    /// The device writes the buffer (`DMA_FROM_DEVICE`).
    FromDevice,
}

/// The brand of one lending: the lifetime that ties the [`ScatterList`]s of
/// one [`Lend::bufs`] call to the transport that asked for them.
///
/// `'b` is invariant, so a list of another lending (another brand) is not a
/// `ScatterList<'b>`; and only [`Brand::new`], which is `unsafe`, makes one.
///
/// # Examples
///
/// Made by a transport for one hand-over, and given to the owner, whose lists
/// then carry it:
///
/// ```ignore
/// // SAFETY: A fresh brand for this add only; the lists are used before the
/// // owner becomes a token and not after.
/// let brand = unsafe { Brand::new() };
/// let bufs = owner.bufs(brand);
/// ```
pub(crate) struct Brand<'b>(PhantomData<fn(&'b ()) -> &'b ()>);

impl Brand<'_> {
    /// Makes the brand of a lending.
    ///
    /// # Safety
    ///
    /// The brand must be given to one [`Lend::bufs`] call, and its lifetime
    /// must be one no other brand has: that of a borrow made for this
    /// lending, which the code receiving the lists cannot name (a generic
    /// lifetime parameter, for instance).
    #[inline(always)]
    pub(crate) unsafe fn new() -> Self {
        Self(PhantomData)
    }
}

/// An end-marked scatterlist that a [`Lend`] owner lends, branded with its
/// lending.
///
/// # Invariants
///
/// `sg` is a valid, end-marked scatterlist whose entries describe memory
/// owned by the owner whose [`Lend::bufs`] made this value with brand
/// `'b`; the list and the memory stay valid, and the CPU does not access the
/// memory, while that owner's token is outstanding (the [`Lend`] contract).
/// If `device_writes` is false, the memory must not be written by a device
/// (a device only reads it).
///
/// # Examples
///
/// What a SCSI command lends (`CommandBufs`, in the SCSI abstraction):
/// its two header lists, and its data list if it has data:
///
/// ```ignore
/// if let Some(data) = bufs.data {
///     sgs.push(data, Direction::FromDevice); // refused if lent device-readable
/// }
/// ```
#[derive(Clone, Copy)]
pub(crate) struct ScatterList<'b> {
    sg: NonNull<bindings::scatterlist>,
    device_writes: bool,
    _brand: PhantomData<fn(&'b ()) -> &'b ()>,
}

impl<'b> ScatterList<'b> {
    /// Wraps a scatterlist that an owner lends.
    ///
    /// # Safety
    ///
    /// `sg` must satisfy the type invariants for the owner whose
    /// [`Lend::bufs`] returns the value, with the brand `'b` that call got;
    /// `device_writes` says whether a device may write its memory.
    #[inline(always)]
    pub(crate) unsafe fn new(sg: NonNull<bindings::scatterlist>, device_writes: bool) -> Self {
        // INVARIANT: The caller guarantees them.
        Self {
            sg,
            device_writes,
            _brand: PhantomData,
        }
    }

    /// Returns whether the list may be lent for `dir`: a device may read
    /// any lent list, and write only those the owner lets it write.
    #[inline(always)]
    pub(crate) fn allows(&self, dir: Direction) -> bool {
        dir == Direction::ToDevice || self.device_writes
    }

    /// Returns the list, for a transport to hand to a device.
    #[inline(always)]
    pub(crate) fn as_raw(&self) -> *mut bindings::scatterlist {
        self.sg.as_ptr()
    }
}

/// An owner of buffers that lends them to a device: it gives them as
/// [`ScatterList`]s, becomes a token while the device has them, and is
/// rebuilt from the token when the device gives them back (in the manner of
/// the kernel's `ForeignOwnable`).
///
/// # Safety
///
/// Implementers guarantee that every [`ScatterList`] in what
/// [`Lend::bufs`] returns satisfies its invariants for `self`: the lists and
/// the memory they describe belong to `self`, and stay valid, unmoved and
/// unaccessed by the CPU (other than the transport reading the lists) from
/// [`Lend::into_token`] until the value [`Lend::from_token`] rebuilds is
/// used again; memory of a list marked device-writable may be written by a
/// device meanwhile. And that [`Lend::from_token`] rebuilds the value that
/// [`Lend::into_token`] gave up.
pub(crate) unsafe trait Lend: Sized {
    /// The owner's lists, as one lending sees them.
    type Bufs<'b>
    where
        Self: 'b;

    /// Returns the lists to lend, branded with `brand`.
    fn bufs<'b>(&'b mut self, brand: Brand<'b>) -> Self::Bufs<'b>;

    /// Gives up ownership for as long as the device has the buffers.
    fn into_token(self) -> NonNull<kernel::ffi::c_void>;

    /// Takes ownership back.
    ///
    /// # Safety
    ///
    /// `token` must come from [`Lend::into_token`] of the same type and be
    /// used once.
    unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self;
}
