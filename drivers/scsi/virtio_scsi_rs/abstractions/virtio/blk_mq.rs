// SPDX-License-Identifier: GPL-2.0

//! Mapping CPUs to a block driver's hardware queues by the interrupt
//! affinity of the virtqueues behind them.
//!
//! C header: [`include/linux/blk-mq-virtio.h`](srctree/include/linux/blk-mq-virtio.h)

use super::*;
use crate::abstractions::bindings;
use crate::abstractions::blk_mq::QueueMap;

/// Maps each CPU to the queue of `map` whose virtqueue's interrupt is
/// affine to it: the map's queues are served by the virtqueues of `dev`
/// from index `first_vq` on, one each (`blk_mq_virtio_map_queues()`). When
/// the transport reports no affinity (no per-queue vectors, or virtio-mmio)
/// the CPUs are spread evenly, as by [`QueueMap::spread`]. A map without
/// hardware queues ([`QueueMap::queues`] is `None`) is left as it is.
///
/// # Examples
///
/// ```ignore
/// if let Some(mut map) = maps.get(HctxType::Default) {
///     if map.set_queues(nr, 0).is_ok() {
///         virtio::map_queues(&mut map, &dev, VQ_BASE); // request queues from virtqueue 2
///     }
/// }
/// ```
pub(crate) fn map_queues(map: &mut QueueMap<'_>, dev: &Device, first_vq: u32) {
    if map.queues().is_none() {
        return;
    }
    let Ok(first_vq) = i32::try_from(first_vq) else {
        map.spread();
        return;
    };
    // SAFETY: The map is ours while mutably borrowed, with its CPU table,
    // and its queues are hardware queues of the tag set (checked above);
    // the function writes only CPU table entries, naming those queues. The
    // device is valid while borrowed (`Device` invariant). Not covered: the
    // transport looks up virtqueues `first_vq..first_vq + nr_queues`
    // unchecked (virtio-pci), so they must exist; a known gap, kept from
    // before (Documentation/soundness-scsi.md, `QueueMaps`).
    unsafe { bindings::blk_mq_virtio_map_queues(map.as_raw(), dev.as_raw(), first_vq) };
}
