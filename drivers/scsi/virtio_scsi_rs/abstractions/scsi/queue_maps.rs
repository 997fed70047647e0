// SPDX-License-Identifier: GPL-2.0

//! The blk-mq queue maps of a host's tag set, as `map_queues` sees them.
//!
//! C header: [`include/linux/blk-mq.h`](srctree/include/linux/blk-mq.h)

use crate::abstractions::bindings;
use crate::abstractions::virtio::{self};
use core::marker::PhantomData;

/// The blk-mq queue types (`enum hctx_type`).
///
/// # Examples
///
/// ```ignore
/// for (ty, nr) in [HctxType::Default, HctxType::Read, HctxType::Poll]
///     .into_iter()
///     .zip(vscsi.io_queues)
/// {
///     // ...
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
pub(super) const MAX_MAPS: usize = bindings::hctx_type_HCTX_MAX_TYPES as usize;

/// The queue maps of a host's tag set, handed to
/// [`HostTemplate::map_queues`](super::HostTemplate::map_queues).
///
/// It points to the maps alone, not to the host: the host's data (which
/// `map_queues` also gets) and fields other threads read lie in the same
/// allocation.
///
/// # Invariants
///
/// For `'a`, each non-null entry of `maps` points to a distinct queue map
/// (`struct blk_mq_queue_map`, with its CPU table allocated) of a tag set
/// that blk-mq is mapping (`blk_mq_update_queue_map()`: at allocation, or
/// with the queues frozen), which nothing else reads or writes meanwhile.
///
/// # Examples
///
/// Interrupt-driven queues follow the managed affinity of their vectors (after
/// the two of the control and event queues); polled ones are spread evenly:
///
/// ```ignore
/// fn map_queues(vscsi: &Self, maps: &mut QueueMaps<'_>) {
///     let dev = vscsi.vdev.access();
///     let mut offset = 0;
///     for (ty, nr) in [HctxType::Default, HctxType::Read, HctxType::Poll]
///         .into_iter()
///         .zip(vscsi.io_queues)
///     {
///         let virtio = match &dev {
///             Some(dev) if ty != HctxType::Poll => Some((&**dev, 2)),
///             _ => None,
///         };
///         maps.map(ty, nr, offset, virtio);
///         offset += nr;
///     }
/// }
/// ```
pub(crate) struct QueueMaps<'a> {
    maps: [*mut bindings::blk_mq_queue_map; MAX_MAPS],
    _p: PhantomData<&'a mut bindings::blk_mq_queue_map>,
}

impl QueueMaps<'_> {
    /// # Safety
    ///
    /// `shost` must be a live host whose tag set blk-mq is mapping, in a
    /// `map_queues` call that lasts for `'a`.
    pub(super) unsafe fn from_host<'a>(shost: *mut bindings::Scsi_Host) -> QueueMaps<'a> {
        // SAFETY: The host is live (caller contract); the field is read
        // through the raw pointer, without a reference to the host.
        let nr_maps = unsafe { (*shost).tag_set.nr_maps } as usize;
        let mut maps = [core::ptr::null_mut(); MAX_MAPS];
        for (i, map) in maps.iter_mut().enumerate().take(nr_maps) {
            // SAFETY: In bounds of the host's `map` array (`MAX_MAPS`
            // entries); a raw projection, no reference is created.
            *map = unsafe { core::ptr::addr_of_mut!((*shost).tag_set.map[i]) };
        }
        // INVARIANT: blk-mq allocated the first `nr_maps` maps of the tag
        // set and, during `map_queues`, leaves them to the driver (caller
        // contract).
        QueueMaps {
            maps,
            _p: PhantomData,
        }
    }

    /// Gives `ty` the `nr_queues` hardware queues starting at `offset` and
    /// maps CPUs to them: by the managed affinity of the virtio device's
    /// interrupt vectors from `first_vec` on (`blk_mq_virtio_map_queues()`),
    /// or spread evenly when `virtio` is `None` (`blk_mq_map_queues()`).
    /// Types the host has no map for (`nr_maps`) are ignored.
    pub(crate) fn map(
        &mut self,
        ty: HctxType,
        nr_queues: u32,
        offset: u32,
        virtio: Option<(&virtio::Device, u32)>,
    ) {
        let map = match self.maps.get(ty as usize) {
            Some(&map) if !map.is_null() => map,
            _ => return,
        };
        // SAFETY: `map` is a queue map that is ours for `'a` (type
        // invariant), and `&mut self` keeps other uses of it out.
        unsafe {
            (*map).nr_queues = nr_queues;
            (*map).queue_offset = offset;
        }
        if nr_queues == 0 {
            return;
        }
        match virtio {
            // SAFETY: As above, and the device is valid while borrowed.
            Some((dev, first)) => unsafe {
                bindings::blk_mq_virtio_map_queues(map, dev.as_raw(), first as i32)
            },
            // SAFETY: As above.
            None => unsafe { bindings::blk_mq_map_queues(map) },
        }
    }
}
