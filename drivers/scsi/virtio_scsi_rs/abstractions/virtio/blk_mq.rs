// SPDX-License-Identifier: GPL-2.0

//! Mapping CPUs to a block driver's hardware queues by the interrupt
//! affinity of the virtqueues behind them.
//!
//! C header: [`include/linux/blk-mq-virtio.h`](srctree/include/linux/blk-mq-virtio.h)

use super::{Queue, Request};
use crate::abstractions::bindings;
use crate::abstractions::blk_mq::QueueMap;

/// Maps each CPU to the queue of `map` whose virtqueue's interrupt is
/// affine to it: the map's queues are served by consecutive virtqueues of
/// one device, the first of them `first`'s (`blk_mq_virtio_map_queues()`).
/// When the transport reports no affinity (no per-queue vectors, or
/// virtio-mmio) the CPUs are spread evenly, as by [`QueueMap::spread`]; so
/// they are when `first` is detached or the device has fewer virtqueues
/// from `first`'s on than the map has queues. A map without hardware
/// queues ([`QueueMap::queues`] is `None`) is left as it is.
///
/// # Examples
///
/// ```ignore
/// if let Some(mut map) = maps.get(HctxType::Default) {
///     if map.set_queues(nr, 0).is_ok() {
///         match req_vqs.first() {
///             Some(vq) => virtio::map_queues(&mut map, vq), // the request queues
///             None => map.spread(),
///         }
///     }
/// }
/// ```
pub(crate) fn map_queues<R: Request, D>(map: &mut QueueMap<'_>, first: &Queue<R, D>) {
    let Some(nr) = map.queues() else {
        return;
    };
    // Held to the end: the device's virtqueues are not deleted meanwhile.
    let Some((set, index)) = first.set_and_index() else {
        map.spread();
        return;
    };
    // The map's queues must all have a virtqueue: the transport does not check.
    let first_vq = match index.checked_add(nr) {
        Some(end) if end <= set.nvqs => i32::try_from(index).ok(),
        _ => None,
    };
    let Some(first_vq) = first_vq else {
        map.spread();
        return;
    };
    // SAFETY: The map is ours while mutably borrowed, with its CPU table,
    // and its queues are hardware queues of the tag set (checked above);
    // the function writes only CPU table entries, naming those queues. The
    // device is valid and its virtqueues, numbered `0..set.nvqs`, exist
    // while `set` is held (`QueueSet` invariant); the transport looks up
    // those of indices `first_vq..first_vq + nr`, all below `set.nvqs`
    // (checked above).
    unsafe { bindings::blk_mq_virtio_map_queues(map.as_raw(), set.vdev, first_vq) };
}
