// SPDX-License-Identifier: GPL-2.0

//! The queue maps of a blk-mq tag set (`struct blk_mq_queue_map`), as a
//! driver's `map_queues` callback fills them in.
//!
//! C header: [`include/linux/blk-mq.h`](srctree/include/linux/blk-mq.h)
//!
//! Transport-neutral: a transport that knows which CPUs serve which of its
//! hardware queues (the interrupt affinity of its vectors, for instance)
//! writes a [`QueueMap`] through [`QueueMap::as_raw`] in its own module.

use crate::abstractions::bindings;
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::prelude::*;

/// The blk-mq queue types (`enum hctx_type`).
///
/// # Examples
///
/// ```ignore
/// if let Some(mut poll) = maps.get(HctxType::Poll) {
///     poll.set_queues(nr_poll, first_poll)?;
///     poll.spread();
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum HctxType {
    /// `HCTX_TYPE_DEFAULT`: all I/O not sent elsewhere.
    Default = bindings::hctx_type_HCTX_TYPE_DEFAULT,
    /// `HCTX_TYPE_READ`: reads, if the driver separates them.
    Read = bindings::hctx_type_HCTX_TYPE_READ,
    /// `HCTX_TYPE_POLL`: polled I/O.
    Poll = bindings::hctx_type_HCTX_TYPE_POLL,
}

/// The number of queue maps a tag set has room for (`HCTX_MAX_TYPES`).
const MAX_MAPS: usize = bindings::hctx_type_HCTX_MAX_TYPES as usize;

/// The queue maps of a tag set during its `map_queues` callback.
///
/// It points to the maps alone, not to the structure that holds the tag
/// set (a SCSI host, for instance): that structure's other fields are read
/// by other threads meanwhile.
///
/// # Invariants
///
/// For `'a`, each non-null entry of `maps` points to a distinct queue map
/// (`struct blk_mq_queue_map`, with its CPU table allocated) of a tag set
/// that blk-mq is mapping (`blk_mq_update_queue_map()`: at allocation, or
/// with the queues frozen), which nothing else reads or writes meanwhile;
/// the tag set has `nr_hw_queues` hardware queues.
///
/// # Examples
///
/// A driver's `map_queues` gives each queue type its hardware queues, then
/// fills the CPU table by interrupt affinity or evenly:
///
/// ```ignore
/// fn map_queues(vscsi: &Self, maps: &mut QueueMaps<'_>) {
///     let mut offset = 0;
///     for (ty, nr) in [HctxType::Default, HctxType::Read, HctxType::Poll]
///         .into_iter()
///         .zip(vscsi.io_queues)
///     {
///         if let Some(mut map) = maps.get(ty) {
///             if map.set_queues(nr, offset).is_ok() {
///                 map.spread();
///             }
///         }
///         offset += nr;
///     }
/// }
/// ```
pub(crate) struct QueueMaps<'a> {
    maps: [*mut bindings::blk_mq_queue_map; MAX_MAPS],
    nr_hw_queues: u32,
    _p: PhantomData<&'a mut bindings::blk_mq_queue_map>,
}

impl QueueMaps<'_> {
    /// # Safety
    ///
    /// `set` must be a live tag set that blk-mq is mapping, in a
    /// `map_queues` call that lasts for `'a`.
    pub(crate) unsafe fn from_tag_set<'a>(set: *mut bindings::blk_mq_tag_set) -> QueueMaps<'a> {
        // SAFETY: The tag set is live (caller contract); the fields are read
        // through the raw pointer, without a reference to the set.
        let (nr_maps, nr_hw_queues) = unsafe { ((*set).nr_maps as usize, (*set).nr_hw_queues) };
        let mut maps = [core::ptr::null_mut(); MAX_MAPS];
        for (i, map) in maps.iter_mut().enumerate().take(nr_maps) {
            // SAFETY: In bounds of the set's `map` array (`MAX_MAPS`
            // entries); a raw projection, no reference is created.
            *map = unsafe { core::ptr::addr_of_mut!((*set).map[i]) };
        }
        // INVARIANT: blk-mq allocated the first `nr_maps` maps of the tag
        // set and, during `map_queues`, leaves them to the driver (caller
        // contract).
        QueueMaps {
            maps,
            nr_hw_queues,
            _p: PhantomData,
        }
    }

    /// Returns the map of queue type `ty`, `None` if the tag set has none
    /// (`nr_maps`).
    pub(crate) fn get(&mut self, ty: HctxType) -> Option<QueueMap<'_>> {
        let map = NonNull::new(*self.maps.get(ty as usize)?)?;
        // INVARIANT: `map` is a queue map that is ours for `'a` (type
        // invariant), and the `&mut self` borrow keeps other uses of it out
        // for as long as the returned value lives.
        Some(QueueMap {
            map,
            nr_hw_queues: self.nr_hw_queues,
            _p: PhantomData,
        })
    }
}

/// One queue map of a tag set (`struct blk_mq_queue_map`), from
/// [`QueueMaps::get`].
///
/// # Invariants
///
/// For `'a`, `map` is a queue map (with its CPU table allocated) that
/// nothing else reads or writes, of a tag set with `nr_hw_queues` hardware
/// queues.
///
/// # Examples
///
/// ```ignore
/// let mut map = maps.get(HctxType::Default).ok_or(EINVAL)?;
/// map.set_queues(2, 0)?; // hardware queues 0 and 1; EINVAL beyond nr_hw_queues
/// virtio::map_queues(&mut map, &req_vqs[0]); // or map.spread()
/// ```
pub(crate) struct QueueMap<'a> {
    map: NonNull<bindings::blk_mq_queue_map>,
    nr_hw_queues: u32,
    _p: PhantomData<&'a mut bindings::blk_mq_queue_map>,
}

impl QueueMap<'_> {
    /// Gives the map the `nr_queues` hardware queues from `offset` on
    /// (`nr_queues`, `queue_offset`); `EINVAL` if they are not all
    /// hardware queues of the tag set.
    pub(crate) fn set_queues(&mut self, nr_queues: u32, offset: u32) -> Result {
        match offset.checked_add(nr_queues) {
            Some(end) if end <= self.nr_hw_queues => {}
            _ => return Err(EINVAL),
        }
        // SAFETY: The map is ours (type invariant), and `&mut self` keeps
        // other uses of it out.
        unsafe {
            (*self.map.as_ptr()).nr_queues = nr_queues;
            (*self.map.as_ptr()).queue_offset = offset;
        }
        Ok(())
    }

    /// Returns the number of hardware queues of the map (`nr_queues`) if
    /// there is at least one and all are hardware queues of the tag set
    /// (which [`QueueMap::set_queues`] ensures; a map not set in this call
    /// may hold an earlier tag set size's), `None` otherwise.
    pub(crate) fn queues(&self) -> Option<u32> {
        // SAFETY: The map is ours (type invariant).
        let (nr, offset) = unsafe {
            let map = self.map.as_ptr();
            ((*map).nr_queues, (*map).queue_offset)
        };
        let end = offset.checked_add(nr)?;
        (nr != 0 && end <= self.nr_hw_queues).then_some(nr)
    }

    /// Maps the CPUs evenly to the map's queues (`blk_mq_map_queues()`); a
    /// map for which [`QueueMap::queues`] is `None` is left as it is.
    pub(crate) fn spread(&mut self) {
        if self.queues().is_none() {
            return;
        }
        // SAFETY: The map is ours, with its CPU table (type invariant), and
        // its queues are hardware queues of the tag set (checked above):
        // the CPU table gets only those.
        unsafe { bindings::blk_mq_map_queues(self.map.as_ptr()) };
    }

    /// Returns the map, for a transport's mapping function. Writing it is
    /// allowed while `self` is mutably borrowed, if its queues are hardware
    /// queues of the tag set ([`QueueMap::queues`] is `Some`) and stay so,
    /// and its CPU table entries name only those.
    pub(crate) fn as_raw(&mut self) -> *mut bindings::blk_mq_queue_map {
        self.map.as_ptr()
    }
}
