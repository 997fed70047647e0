// SPDX-License-Identifier: GPL-2.0

//! The event queue: hot-plug, hot-unplug and parameter change events
//! (`virtscsi_kick_event_all()`, `virtscsi_handle_event()` and
//! `virtscsi_rescan_hotunplug()` of `virtio_scsi.c`).

use super::*;

/// Event buffers kept posted (`VIRTIO_SCSI_EVENT_LEN` in C).
pub(super) const EVENT_BUFS: usize = 8;

/// Event queue state, under its lock.
#[derive(Default)]
pub(super) struct EventState {
    /// Events are being stopped (remove): take no more, post no more.
    pub(super) stop: bool,
    /// Events were lost to a device reset: rescan as for EVENTS_MISSED.
    pub(super) resync: bool,
    /// Buffers kept while the queue is detached (freeze to restore).
    pub(super) spare: KVec<KBox<DeviceBuf>>,
    pub(super) stats: EventStats,
}

/// Event queue counters.
#[derive(Clone, Copy, Default)]
pub(super) struct EventStats {
    /// Buffers on the ring.
    pub(super) posted: u32,
    /// Events received.
    pub(super) received: u64,
    /// Events that carried EVENTS_MISSED.
    pub(super) missed: u64,
    /// Events not understood.
    pub(super) unsupported: u64,
}

/// The event queue: buffers the device fills with hot-plug and parameter
/// change events.
pub(super) type EventQueue = Queue<KBox<DeviceBuf>, EventState>;

/// Allocation length of the events-missed sweep's INQUIRY when the midlayer
/// kept no standard INQUIRY data for a device (C's 36); otherwise the sweep
/// asks for as many bytes as it kept.
const INQUIRY_LEN: u8 = 36;
/// The sweep's buffer: room for any allocation length (C's 256 bytes).
const INQUIRY_BUF_LEN: usize = 256;
/// Timeout of the events-missed INQUIRY: the disk driver's `SD_TIMEOUT`
/// (`drivers/scsi/sd.h`), as the C driver passes it.
const SD_TIMEOUT_MS: u32 = 30_000;
/// Retries of the events-missed INQUIRY: the disk driver's
/// `SD_MAX_RETRIES`, as in C.
const SD_MAX_RETRIES: i32 = 5;

impl VirtioScsi {
    /// Gives an event buffer (back) to the device unless events are
    /// stopping; while the queue is detached (a reset) the buffer is kept
    /// for the restore. A buffer that cannot be posted is freed, never
    /// leaked.
    pub(super) fn post_event_buf(&self, buf: KBox<DeviceBuf>, kick: bool) {
        let mut guard = self.event_vq.lock();
        // A buffer the work held across a reset, whose restore refilled
        // the ring meanwhile, is one too many: freed.
        if guard.data().stop || guard.data().stats.posted as usize >= EVENT_BUFS {
            return;
        }
        match guard.add(buf) {
            Ok(()) => guard.data().stats.posted += 1,
            Err((buf, e)) if e == ENODEV => {
                // Within the room reserved for it, no allocation; if a push
                // fails, the buffer is freed and a refill allocates anew.
                let _ = guard.data().spare.push(buf, GFP_ATOMIC);
            }
            // Only a broken device refuses a buffer it returned.
            Err(_) => {}
        }
        if kick {
            guard.kick_prepare();
        }
    }

    /// Fills the event ring up to [`EVENT_BUFS`]: buffers kept over a reset
    /// first, then new ones. Kicks the device if `kick`.
    pub(super) fn refill_events(&self, kick: bool) -> Result {
        // The spare list keeps its reserved room for the next reset (if
        // this allocation fails, later pushes allocate, atomically).
        let room = KVec::with_capacity(EVENT_BUFS, GFP_KERNEL).unwrap_or_default();
        let spare = core::mem::replace(&mut self.event_vq.lock().data().spare, room);
        for buf in spare {
            self.post_event_buf(buf, false);
        }
        let posted = self.event_vq.lock().data().stats.posted as usize;
        for _ in posted..EVENT_BUFS {
            let buf = KBox::new(DeviceBuf::new(self.event_buf_len)?, GFP_KERNEL)?;
            self.post_event_buf(buf, false);
        }
        if kick {
            self.event_vq.lock().kick_prepare();
        }
        Ok(())
    }

    /// Takes the next event the device filled, unless events are stopping.
    /// The used length is not returned: it cannot be trusted (vhost-scsi
    /// reports 0); `DeviceBuf` zeroes itself whenever it is posted, so one
    /// the device did not write reads as no event.
    pub(super) fn next_event(&self) -> Option<KBox<DeviceBuf>> {
        let mut guard = self.event_vq.lock();
        if guard.data().stop {
            return None;
        }
        let (buf, _) = guard.get_buf()?;
        let stats = &mut guard.data().stats;
        stats.posted -= 1;
        stats.received += 1;
        Some(buf)
    }

    /// Stops event handling: no event is taken or posted after this.
    pub(super) fn stop_events(&self) {
        self.event_vq.lock().data().stop = true;
    }
}

/// Handles one event (`virtscsi_handle_event()`), in process context.
pub(super) fn handle_event(host: HostRef<'_, VirtioScsi>, ev: protocol::Event) {
    let vscsi = host.data();
    if ev.missed {
        vscsi.event_vq.lock().data().stats.missed += 1;
        rescan_hotunplug(host);
        host.scan();
    }
    match ev.action {
        EventAction::None => {}
        EventAction::ScanTarget { target } => host.scan_target(0, target),
        EventAction::AddDevice { target, lun } => {
            if let Err(e) = host.add_device(0, target, lun) {
                dev_info!(
                    &vscsi.vdev,
                    "adding 0:{}:{} failed ({:?})\n",
                    target,
                    lun,
                    e
                );
            }
        }
        EventAction::RemoveDevice {
            target,
            lun,
            then_scan_target,
        } => {
            host.with_device(0, target, lun, HeldDevice::remove);
            if then_scan_target {
                host.scan_target(0, target);
            }
        }
        EventAction::RescanDevice { target, lun } => {
            host.with_device(0, target, lun, HeldDevice::rescan);
        }
        EventAction::Unsupported { event, reason } => {
            let first = {
                let mut guard = vscsi.event_vq.lock();
                let stats = &mut guard.data().stats;
                stats.unsupported += 1;
                stats.unsupported == 1
            };
            if first {
                dev_warn!(
                    &vscsi.vdev,
                    "unsupported event {:#x} reason {:#x} ignored (warned once)\n",
                    event,
                    reason
                );
            }
        }
    }
}

/// After lost events, asks every device whether it is still there and
/// removes those that are not (`virtscsi_rescan_hotunplug()`).
pub(super) fn rescan_hotunplug(host: HostRef<'_, VirtioScsi>) {
    let Ok(mut buf) = KVec::from_elem(0u8, INQUIRY_BUF_LEN, GFP_KERNEL) else {
        // Without a buffer the sweep is skipped; the host scan still runs
        // and the event buffer is still re-posted.
        return;
    };
    host.for_each_device(|sdev| {
        let len = match sdev.inquiry_len() {
            0 => INQUIRY_LEN,
            n => n,
        };
        let cdb = [protocol::INQUIRY, 0, 0, 0, len, 0];
        let inq = &mut buf[..usize::from(len)];
        inq.fill(0);
        let gone = match sdev.execute_in(&cdb, inq, SD_TIMEOUT_MS, SD_MAX_RETRIES) {
            Ok(0) => protocol::inquiry_says_gone(inq),
            // All LUNs of a target unplugged: QEMU answers BAD_TARGET.
            Ok(result) => (result >> 16) & 0xff == HostByte::BadTarget as i32,
            Err(_) => false,
        };
        if gone {
            sdev.remove();
        }
    });
}
