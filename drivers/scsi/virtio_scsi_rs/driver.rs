// SPDX-License-Identifier: GPL-2.0

//! The virtio-scsi driver logic, in safe Rust.
//!
//! C counterpart: [`drivers/scsi/virtio_scsi.c`](srctree/drivers/scsi/virtio_scsi.c).
//! Function names follow the C driver where the concept matches. This file
//! holds the data path and the host template; the device's setup and
//! teardown are in `driver/probe.rs`, task management and resets in
//! `driver/eh.rs`, events in `driver/events.rs`, the module parameters'
//! meaning in `driver/params.rs`.

mod eh;
mod events;
mod params;
mod probe;

use eh::*;
use events::*;
use params::TimeoutPolicy;
use probe::*;

use crate::abstractions::blk_mq::{HctxType, QueueMaps};
use crate::abstractions::cpu;
use crate::abstractions::device::{dev_err, dev_info, dev_warn};
use crate::abstractions::scatterlist::{Direction, ScatterList};
use crate::abstractions::scsi::{
    self, Command, CommandBufs, CommandRequest, DataDirection, EhCommand, EhHost, EhResult,
    HeldDevice, HostByte, HostRef, HostTemplate, HostWork, QueueError, ScsiDevice, SeqFile,
    TimeoutAction,
};
use crate::abstractions::sync;
use crate::abstractions::virtio::{
    self, virtio_device_table, DeviceBuf, DeviceId, Exchange, ExchangeRequest, ExchangeSlot,
    Layout, Lent, LentSgs, Queue, QueueInfo, WaitError,
};
use crate::protocol::{
    self, config_offset, feature, Clamp, Config, EventAction, HostLimits, Tmf, TMF_REQ_SIZE,
    TMF_RESP_SIZE,
};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::c_str;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::Mutex;

virtio_device_table!(ID_TABLE, [DeviceId::new(protocol::VIRTIO_ID_SCSI)]);

/// Feature bits offered to the device (`features[]` in C). T10 PI needs the
/// block layer's integrity support.
#[cfg(CONFIG_BLK_DEV_INTEGRITY)]
static FEATURES: [u32; 3] = [feature::HOTPLUG, feature::CHANGE, feature::T10_PI];
#[cfg(not(CONFIG_BLK_DEV_INTEGRITY))]
static FEATURES: [u32; 2] = [feature::HOTPLUG, feature::CHANGE];

/// The SCSI host template, filled in at module load.
pub(crate) static TEMPLATE: scsi::Template<VirtioScsi> = scsi::Template::new(&crate::THIS_MODULE);

/// Request queues whose oldest command debugfs shows (one per possible
/// CPU at most; later ones show 0).
const MAX_SHOWN_QUEUES: usize = 256;

/// Index of the first request queue (`VIRTIO_SCSI_VQ_BASE`).
const VQ_BASE: u32 = 2;

/// Per-command private area: the request header at 0, the response header
/// at [`RESP_OFF`] (`struct virtio_scsi_cmd` in C).
const REQ_OFF: usize = 0;
const RESP_OFF: usize = 64;
const CMD_SIZE: usize = RESP_OFF + protocol::CMD_RESP_SIZE;
const _: () = assert!(REQ_OFF + protocol::CMD_REQ_PI_SIZE <= RESP_OFF);

/// Per-queue counters, kept under the queue's lock (no atomics on the I/O
/// path) and shown in debugfs.
#[derive(Clone, Copy, Default)]
struct VqStats {
    /// Commands added to the ring.
    submitted: u64,
    /// Commands taken back from the ring.
    completed: u64,
    /// Device notifications.
    kicks: u64,
    /// Completion interrupts.
    interrupts: u64,
    /// Commands completed by polling.
    polled: u64,
}

/// A request virtqueue: SCSI commands go in and come back.
type ReqQueue = Queue<Lent<CommandRequest<VirtioScsi>, VirtioScsi>, VqStats>;

/// The descriptor layout of a command request (`__virtscsi_add_cmd()`):
/// the request header, then protection information and data for a write;
/// the response header, then protection information and data for a read.
/// Each header is a descriptor of its own (QEMU 7.2 assumes the payload
/// starts after the first descriptor of each direction), and protection
/// information goes in front of the data it protects (`pi_bytesout`,
/// `pi_bytesin` of the T10 PI request header).
impl Layout<CommandRequest<VirtioScsi>> for VirtioScsi {
    #[inline(always)]
    fn sgs<'b>(bufs: CommandBufs<'b>, sgs: &mut LentSgs<'_, 'b>) {
        // One arm per direction, each pushing in its final order: the
        // compiler then knows every list's slot and count on each path.
        sgs.push(bufs.out_hdr, Direction::ToDevice);
        match bufs.direction {
            DataDirection::ToDevice => {
                push_payload(sgs, bufs.data, bufs.prot, Direction::ToDevice);
                sgs.push(bufs.in_hdr, Direction::FromDevice);
            }
            DataDirection::FromDevice => {
                sgs.push(bufs.in_hdr, Direction::FromDevice);
                push_payload(sgs, bufs.data, bufs.prot, Direction::FromDevice);
            }
            _ => sgs.push(bufs.in_hdr, Direction::FromDevice),
        }
    }
}

/// The payload of a command request (data, protection information in
/// front), behind the header of its direction.
#[inline(always)]
fn push_payload<'b>(
    sgs: &mut LentSgs<'_, 'b>,
    data: Option<ScatterList<'b>>,
    prot: Option<ScatterList<'b>>,
    dir: Direction,
) {
    if let Some(data) = data {
        if let Some(prot) = prot {
            sgs.push(prot, dir);
        }
        sgs.push(data, dir);
    }
}

/// Per-adapter state (`struct virtio_scsi` in C), stored in the host's
/// private data.
pub(crate) struct VirtioScsi {
    /// Request queues, indexed by blk-mq hardware queue: interrupt-driven
    /// ones first, then polled ones.
    req_vqs: KVec<Pin<KBox<ReqQueue>>>,
    /// Hardware queues per map type (default, read, poll), as in C.
    io_queues: [u32; 3],
    vdev: virtio::DeviceRef,
    /// Task management.
    ctrl_vq: Pin<KBox<CtrlQueue>>,
    /// Hot-plug and parameter change events.
    event_vq: Pin<KBox<EventQueue>>,
    sg_tablesize: u32,
    /// Descriptors the largest command takes on a request ring
    /// ([`HostLimits::ring_need`]): a ring smaller than this, after a
    /// reset, fails the restore.
    ring_need: u32,
    /// T10 PI was negotiated: requests carry the PI header.
    t10_pi: bool,
    /// HOTPLUG or CHANGE was negotiated: event buffers are kept posted.
    events: bool,
    /// Size of one event buffer.
    event_buf_len: u32,
    /// Resets under way (the error handler's host reset, or one the device
    /// asked for): commands that find their queue detached are requeued
    /// rather than failed (elsewhere, a detached queue means a failed
    /// restore, or suspend, when only the power management requests of
    /// quiesced devices can arrive).
    resetting: AtomicU32,
    /// Serialises device resets, so that the error handler's host reset
    /// waits for one the device asked for rather than failing to get the
    /// device lock and falling back to a reset without re-initialisation
    /// (queues detached). Holds the configuration as the driver last saw
    /// it (its own CDB and sense sizes in place of the device's defaults).
    reset_lock: Pin<KBox<Mutex<Config>>>,
    /// The device announced a configuration change; the work handles it.
    config_event: AtomicBool,
    /// Messages about DEVICE_NEEDS_RESET: a device that sets it again after
    /// every reset is reset every time, and logged once per 5 s.
    needs_reset_msgs: params::Ratelimit,
    /// A device response could not be trusted; warned once.
    warned_bad_resp: AtomicBool,
    /// A TMF succeeded while the device still held its command; warned once.
    warned_still_held: AtomicBool,
    /// The device broke a request queue's ring; warned once.
    warned_broken_ring: AtomicBool,
    /// The device holds a TMF it did not answer in time: further TMFs
    /// fail at once, until it answers a control request or is reset.
    tmf_unanswered: AtomicBool,
    /// TMF memory for when allocating fails, refilled after each TMF.
    tmf_reserve: Pin<KBox<Mutex<[Option<TmfSlot>; TMF_RESERVE]>>>,
}

impl VirtioScsi {
    /// Completes one command from its response (`virtscsi_complete_cmd()`).
    ///
    /// Inlined into the reaping loop, the hot path (a reset also calls it,
    /// which would otherwise make it an out-of-line call per command).
    #[inline(always)]
    fn complete_cmd(&self, mut cmd: Command<Self>, used_len: u32) {
        // The common answer (OK, no sense, no residual) needs no parsing.
        // The residual stays as the midlayer set it before handing the
        // command over, 0 (`scsi_queue_rq()`, `scsi_eh_prep_cmnd()`), as
        // in C.
        if let Some(status) = protocol::cmd_resp_plain_ok(&cmd.private_and_sense().0[RESP_OFF..]) {
            cmd.set_result(HostByte::Ok, status);
            cmd.done();
            return;
        }
        let bufflen = cmd.bufflen();
        let (private, sense) = cmd.private_and_sense();
        let resp = protocol::parse_cmd_resp(&private[RESP_OFF..], used_len, bufflen);
        if let Some(r) = &resp {
            if r.sense_len != 0 {
                let src = RESP_OFF + protocol::CMD_RESP_FIXED;
                sense[..r.sense_len].copy_from_slice(&private[src..src + r.sense_len]);
            }
        }
        match resp {
            None => {
                self.warn_bad_response();
                cmd.set_result(HostByte::Error, 0);
            }
            Some(r) => {
                let outcome = protocol::map_response(r.response, r.status);
                if outcome.unknown_response || r.clamped {
                    self.warn_bad_response();
                }
                cmd.set_result(host_byte(outcome.host), outcome.status);
                cmd.set_resid(r.resid);
            }
        }
        cmd.done();
    }

    /// The rest of `queuecommand`, for a request header with T10 PI fields
    /// (`PI`) or without: one copy per format, each knowing its header's
    /// length (and so the header lists' key) at compile time.
    #[inline(always)]
    fn submit<const PI: bool>(
        &self,
        vq: &ReqQueue,
        mut cmd: Command<Self>,
        direction: DataDirection,
        lun: &[u8; 8],
        tag: u64,
    ) -> Result<(), QueueError<Self>> {
        let (pi_out, pi_in) = match direction {
            DataDirection::ToDevice if PI => (cmd.prot_bytes(), 0),
            DataDirection::FromDevice if PI => (0, cmd.prot_bytes()),
            _ => (0, 0),
        };
        // The CDB field goes whole (`protocol::write_cmd_req`): past the
        // command's length the midlayer left it zero.
        let (cdb, private) = cmd.cdb_and_private();
        // A header the device does not write must not read as an answer
        // (the used length cannot tell: vhost-scsi reports 0).
        protocol::clear_cmd_resp(&mut private[RESP_OFF..]);
        let hdr = &mut private[REQ_OFF..];
        let req_len = if PI {
            protocol::write_cmd_req_pi(hdr, lun, tag, pi_out, pi_in, cdb)
        } else {
            protocol::write_cmd_req(hdr, lun, tag, cdb)
        };
        let Some(req_len) = req_len else {
            return fail_cmd(cmd, HostByte::Error);
        };
        let kick = cmd.is_last();
        let resp = RESP_OFF..RESP_OFF + protocol::CMD_RESP_SIZE;
        let req = match cmd.into_request(REQ_OFF..REQ_OFF + req_len, resp) {
            Ok(req) => Lent::new(req),
            Err((cmd, _)) => return fail_cmd(cmd, HostByte::Error),
        };
        let mut guard = vq.lock();
        match guard.add_kick_prepare(req, kick) {
            Ok(kicked) => {
                let stats = guard.data();
                stats.submitted += 1;
                if kicked {
                    stats.kicks += 1;
                }
                // Unlocks, then notifies the device if a kick was prepared.
                guard.unlock();
                Ok(())
            }
            Err((req, e)) => {
                drop(guard);
                self.add_failed(vq, req.into_inner().into_command(), e, tag)
            }
        }
    }

    /// What becomes of a command its request queue refused.
    #[cold]
    fn add_failed(
        &self,
        vq: &ReqQueue,
        cmd: Command<Self>,
        e: Error,
        tag: u64,
    ) -> Result<(), QueueError<Self>> {
        if e == EIO && !self.ctrl_vq.lock().is_broken() {
            // The device broke this ring alone (a head given back twice, a
            // used index beyond what was made available): its commands
            // never complete. The error handler's host reset sets up new
            // rings; hand it the command.
            if !self.warned_broken_ring.swap(true, Ordering::Relaxed) {
                dev_err!(
                    &self.vdev,
                    "request queue {} broken by the device: error handling resets it\n",
                    tag >> 16
                );
            }
            return fail_cmd(cmd, HostByte::TimeOut);
        }
        // Broken device, or queues gone after a failed restore: nothing
        // would ever complete the command. Between freeze and restore, and
        // with a full ring, it waits.
        if e == EIO || (e == ENODEV && !self.reset_under_way(vq)) {
            fail_cmd(cmd, HostByte::BadTarget)
        } else {
            Err(QueueError::HostBusy(cmd))
        }
    }

    fn warn_bad_response(&self) {
        if !self.warned_bad_resp.swap(true, Ordering::Relaxed) {
            pr_warn!("device sent an invalid or out-of-range response; values clamped\n");
        }
    }

    /// Reaps a request queue (`virtscsi_vq_done()` for interrupts,
    /// `virtscsi_mq_poll()` for polling) and returns how many commands
    /// completed.
    ///
    /// As in C, commands complete under the queue lock, all that the ring
    /// holds in one lock hold (one batch per poll call). With interrupts,
    /// callbacks stay off until the ring is empty and `enable_cb` confirms
    /// nothing arrived meanwhile.
    fn reap(&self, vq: &ReqQueue, polled: bool) -> u32 {
        self.reap_counted(vq, polled, false)
    }

    /// [`Self::reap`] for a completion interrupt, which it counts.
    fn reap_interrupt(&self, vq: &ReqQueue) -> u32 {
        self.reap_counted(vq, false, true)
    }

    #[inline(always)]
    fn reap_counted(&self, vq: &ReqQueue, polled: bool, interrupt: bool) -> u32 {
        let mut guard = vq.lock();
        let mut n = 0u32;
        if interrupt {
            guard.data().interrupts += 1;
        }
        {
            let mut used = guard.used();
            loop {
                if !polled {
                    used.disable_cb();
                }
                for (req, len) in &mut used {
                    self.complete_cmd(req.into_inner().into_command(), len);
                    n += 1;
                }
                if polled || used.enable_cb() {
                    break;
                }
            }
        }
        let stats = guard.data();
        stats.completed += u64::from(n);
        if polled {
            stats.polled += u64::from(n);
        }
        n
    }

    /// Notifies the device of what was queued on `vq` (`virtscsi_kick_vq()`).
    fn kick_vq(vq: &ReqQueue) {
        let mut guard = vq.lock();
        if guard.kick_prepare() {
            guard.data().kicks += 1;
        }
    }

    /// Polls every request queue, completing what the device finished
    /// (`virtscsi_poll_requests()`): after a TMF, commands it completed on
    /// other queues must not wait for an interrupt.
    fn poll_requests(&self) {
        for (i, vq) in self.req_vqs.iter().enumerate() {
            self.reap(vq, self.is_poll_queue(i));
        }
    }

    /// Whether request queue `i` is a poll queue (they come last).
    fn is_poll_queue(&self, i: usize) -> bool {
        i >= (self.io_queues[0] + self.io_queues[1]) as usize
    }
}

/// Maps the protocol layer's host byte to the midlayer's.
fn host_byte(h: protocol::HostByte) -> HostByte {
    match h {
        protocol::HostByte::Ok => HostByte::Ok,
        protocol::HostByte::NoConnect => HostByte::NoConnect,
        protocol::HostByte::BusBusy => HostByte::BusBusy,
        protocol::HostByte::BadTarget => HostByte::BadTarget,
        protocol::HostByte::Abort => HostByte::Abort,
        protocol::HostByte::Error => HostByte::Error,
        protocol::HostByte::Reset => HostByte::Reset,
        protocol::HostByte::TransportDisrupted => HostByte::TransportDisrupted,
    }
}

/// Fails a command without sending it.
fn fail_cmd(mut cmd: Command<VirtioScsi>, host: HostByte) -> Result<(), QueueError<VirtioScsi>> {
    cmd.set_result(host, 0);
    cmd.done();
    Ok(())
}

#[vtable]
impl HostTemplate for VirtioScsi {
    type HostData = Self;

    const NAME: &'static CStr = c_str!("Virtio SCSI HBA");
    const PROC_NAME: &'static CStr = c_str!("virtio_scsi_rs");
    const CMD_SIZE: usize = CMD_SIZE;
    const TRACK_QUEUE_DEPTH: bool = true;
    // The host reset returns with the device re-initialised and ready (or,
    // as a fallback, when every target answered its reset).
    const SKIP_SETTLE_DELAY: bool = true;
    // `/sys/kernel/debug/virtio_scsi_rs/host<N>/queues`, read by the guest
    // tests and described in Documentation/admin-guide.rst.
    const DEBUGFS_FILE: Option<&'static CStr> = Some(c_str!("queues"));

    /// `virtscsi_queuecommand()`.
    #[inline(always)]
    fn queuecommand(vscsi: &Self, cmd: Command<Self>) -> Result<(), QueueError<Self>> {
        let tag = cmd.unique_tag();
        let Some(vq) = vscsi.req_vqs.get((tag >> 16) as usize) else {
            return fail_cmd(cmd, HostByte::Error);
        };
        // Where C has BUG_ON(), fail the command instead.
        let direction = cmd.data_direction();
        if cmd.sg_count() > vscsi.sg_tablesize || direction == DataDirection::Bidirectional {
            return fail_cmd(cmd, HostByte::Error);
        }
        // The LUN field, encoded once per device by `slave_alloc`; 0 for
        // an address the format cannot carry.
        let lun = cmd.device_word();
        if lun == 0 {
            return fail_cmd(cmd, HostByte::BadTarget);
        }
        let lun = lun.to_le_bytes();
        // The tag identifies the command to the device (for ABORT TASK):
        // the blk-mq unique tag, not a kernel address.
        let tag = u64::from(tag);
        if vscsi.t10_pi {
            vscsi.submit::<true>(vq, cmd, direction, &lun, tag)
        } else {
            vscsi.submit::<false>(vq, cmd, direction, &lun, tag)
        }
    }

    /// Nothing to prepare: `queuecommand` writes the whole request header
    /// and the fixed response header, and completion reads no sense beyond
    /// what the response header says. Providing this saves the midlayer's
    /// clearing of the private area on every command (C clears it).
    fn init_cmd_priv(_private: &mut [u8]) -> Result {
        Ok(())
    }

    /// `virtscsi_commit_rqs()`.
    fn commit_rqs(vscsi: &Self, hwq: u16) {
        if let Some(vq) = vscsi.req_vqs.get(usize::from(hwq)) {
            Self::kick_vq(vq);
        }
    }

    /// `virtscsi_device_alloc()`: hosts may advertise transfer limits of
    /// passed-through targets in VPD pages, so always read them.
    ///
    /// The device's LUN field is encoded here, once, rather than for every
    /// command (a device's target and LUN never change): `queuecommand`
    /// reads it back, 0 (no valid field starts with a 0 byte) for an
    /// address the format cannot carry, whose commands fail.
    fn slave_alloc(sdev: &scsi::SlaveAllocDevice) -> Result {
        sdev.add_bflags(scsi::BLIST_TRY_VPD_PAGES);
        let (_, id, lun) = sdev.address();
        sdev.set_word(protocol::encode_lun(id, lun).map_or(0, u64::from_le_bytes));
        Ok(())
    }

    /// `virtscsi_change_queue_depth()`.
    fn change_queue_depth(sdev: &ScsiDevice, depth: i32) -> i32 {
        sdev.change_queue_depth(depth.min(sdev.host_cmd_per_lun()))
    }

    /// `virtscsi_map_queues()`: interrupt-driven queues follow the managed
    /// affinity of their vectors (after the config, control and event
    /// ones); polled queues have no interrupt and are spread by blk-mq.
    fn map_queues(vscsi: &Self, maps: &mut QueueMaps<'_>) {
        // Request queues detached (a remap during a reset, which does not
        // happen): the default spread.
        let mut offset = 0;
        for (ty, nr) in [HctxType::Default, HctxType::Read, HctxType::Poll]
            .into_iter()
            .zip(vscsi.io_queues)
        {
            // Types the host has no map for (`nr_maps`) are skipped.
            if let Some(mut map) = maps.get(ty) {
                if map.set_queues(nr, offset).is_ok() {
                    match vscsi.req_vqs.get(offset as usize) {
                        Some(vq) if ty != HctxType::Poll => virtio::map_queues(&mut map, vq),
                        _ => map.spread(),
                    }
                }
            }
            offset += nr;
        }
    }

    /// `virtscsi_mq_poll()`.
    fn mq_poll(vscsi: &Self, queue: u32) -> i32 {
        match vscsi.req_vqs.get(queue as usize) {
            Some(vq) => vscsi.reap(vq, true) as i32,
            None => 0,
        }
    }

    /// One line per request queue (with the age of its oldest command, so
    /// that a stall shows), the control queue's and the event queue's.
    fn debugfs_show(host: HostRef<'_, Self>, m: &SeqFile) {
        let vscsi = host.data();
        let mut oldest = [0u32; MAX_SHOWN_QUEUES];
        host.for_each_busy(|cmd| {
            let hwq = cmd.unique_tag().map(|tag| (tag >> 16) as usize);
            if let Some(age) = hwq.and_then(|q| oldest.get_mut(q)) {
                *age = (*age).max(cmd.age_ms());
            }
            true
        });
        for (i, vq) in vscsi.req_vqs.iter().enumerate() {
            let kind = if vscsi.is_poll_queue(i) {
                "poll"
            } else {
                "default"
            };
            // Copy out, then print without the lock held.
            let s = *vq.lock().data();
            m.print(format_args!(
                "{} {} submitted {} completed {} kicks {} interrupts {} polled {} oldest_ms {}\n",
                i,
                kind,
                s.submitted,
                s.completed,
                s.kicks,
                s.interrupts,
                s.polled,
                oldest.get(i).copied().unwrap_or(0)
            ));
        }
        let c = *vscsi.ctrl_vq.lock().data();
        m.print(format_args!(
            "control tmf_sent {} tmf_ok {} tmf_failed {} tmf_timed_out {} tmf_still_held {} cmd_timeouts {} cmd_timeouts_reaped {} cmd_timeouts_waited {} cmd_timeouts_escalated {} host_resets {} reset_cmds {} config_changes {} needs_reset {}\n",
            c.tmf_sent, c.tmf_ok, c.tmf_failed, c.tmf_timed_out, c.tmf_still_held, c.cmd_timeouts,
            c.cmd_timeouts_reaped, c.cmd_timeouts_waited, c.cmd_timeouts_escalated, c.host_resets,
            c.reset_cmds, c.config_changes, c.needs_reset
        ));
        let e = vscsi.event_vq.lock().data().stats;
        m.print(format_args!(
            "event posted {} received {} missed {} unsupported {}\n",
            e.posted, e.received, e.missed, e.unsupported
        ));
    }

    /// Events: `virtscsi_handle_event()` for the filled event buffers,
    /// each re-posted after its event is handled: at most [`EVENT_BUFS`]
    /// per run, then the work runs again (C: a work item per event). A
    /// device that hands every buffer straight back would otherwise keep
    /// the worker, and without preemption its CPU, for as long as it likes.
    ///
    /// Recovery: a configuration change (C has none), on the other work
    /// item, so that a device that needs a reset gets it even while the
    /// event work waits for that device (adding a LUN it no longer
    /// answers for).
    fn work(host: HostRef<'_, Self>, which: HostWork) -> bool {
        let vscsi = host.data();
        if which == HostWork::Recovery {
            if vscsi.config_event.swap(false, Ordering::AcqRel) {
                vscsi.config_change();
            }
            return false;
        }
        let resync = core::mem::take(&mut vscsi.event_vq.lock().data().resync);
        if resync {
            // Events were lost to a reset: as for EVENTS_MISSED.
            rescan_hotunplug(host);
            host.scan();
        }
        for _ in 0..EVENT_BUFS {
            let Some(buf) = vscsi.next_event() else {
                return false;
            };
            match protocol::parse_event(buf.bytes()) {
                Some(ev) => handle_event(host, ev),
                None => vscsi.warn_bad_response(),
            }
            vscsi.post_event_buf(buf, true);
        }
        true
    }

    /// A lost interrupt must not turn into an endless timer: poll the
    /// command's queue (which completes it if the device did), otherwise
    /// let the midlayer abort it. C always resets the timer.
    fn eh_timed_out(host: EhHost<'_, Self>, cmd: &EhCommand) -> TimeoutAction {
        let vscsi = host.data();
        // Only commands without a blk-mq request have no tag, and those (the
        // SG_SCSI_RESET ioctl's) never time out: no queue to poll then.
        if let Some(hwq) = cmd.unique_tag().map(|tag| (tag >> 16) as usize) {
            if let Some(vq) = vscsi.req_vqs.get(hwq) {
                vscsi.reap(vq, vscsi.is_poll_queue(hwq));
            }
        }
        let age = cmd.age_ms();
        let action = if cmd.is_complete() {
            TimeoutAction::Done
        } else {
            match params::timeout_policy() {
                TimeoutPolicy::Abort => TimeoutAction::NotHandled,
                TimeoutPolicy::Wait => TimeoutAction::ResetTimer,
                TimeoutPolicy::Stall if age >= params::stall_limit_ms() => {
                    TimeoutAction::NotHandled
                }
                TimeoutPolicy::Stall => TimeoutAction::ResetTimer,
            }
        };
        {
            let mut guard = vscsi.ctrl_vq.lock();
            let stats = guard.data();
            stats.cmd_timeouts += 1;
            match action {
                TimeoutAction::Done => stats.cmd_timeouts_reaped += 1,
                TimeoutAction::ResetTimer => stats.cmd_timeouts_waited += 1,
                TimeoutAction::NotHandled => stats.cmd_timeouts_escalated += 1,
            }
        }
        if action != TimeoutAction::Done && params::stall_warn_ratelimit() {
            let waiting = action == TimeoutAction::ResetTimer;
            dev_warn!(
                cmd.device(),
                "command outstanding for {} ms (timeout {} ms): {}\n",
                age,
                cmd.timeout_ms(),
                if waiting {
                    "waiting for the device"
                } else {
                    "error handling"
                }
            );
        }
        action
    }

    /// `virtscsi_abort()`: ABORT TASK for the command's tag.
    fn eh_abort(host: EhHost<'_, Self>, cmd: &EhCommand) -> EhResult {
        let (_, id, lun) = cmd.device().address();
        // Without a tag ABORT TASK cannot name the command; only the
        // SG_SCSI_RESET ioctl's has none, and it is never aborted. Failing
        // lets the midlayer escalate to a reset, which needs no tag.
        let Some(tag) = cmd.unique_tag().map(u64::from) else {
            return EhResult::Failed;
        };
        dev_info!(cmd.device(), "abort\n");
        let result = host.data().tmf(Tmf::AbortTask, id, lun, tag);
        host.data().unless_still_held(result, Tmf::AbortTask, cmd)
    }

    /// `virtscsi_device_reset()`: LOGICAL UNIT RESET.
    fn eh_device_reset(host: EhHost<'_, Self>, cmd: &EhCommand) -> EhResult {
        let (_, id, lun) = cmd.device().address();
        dev_info!(cmd.device(), "device reset\n");
        let result = host.data().tmf(Tmf::LogicalUnitReset, id, lun, 0);
        // The handler's command is among those the walk checks.
        host.data()
            .unless_any_held(host, result, Tmf::LogicalUnitReset, |i, l| {
                i == id && l == lun
            })
    }

    /// I_T NEXUS RESET of the command's target (C has no target reset).
    fn eh_target_reset(host: EhHost<'_, Self>, cmd: &EhCommand) -> EhResult {
        let (_, id, lun) = cmd.device().address();
        let result = host.data().tmf(Tmf::ItNexusReset, id, lun, 0);
        // The handler's command is among those the walk checks.
        host.data()
            .unless_any_held(host, result, Tmf::ItNexusReset, |i, _| i == id)
    }

    /// Host reset: the virtio device is reset and initialised again, as
    /// for suspend and resume (C has no host reset). Commands the device
    /// held are retried; I/O resumes when the midlayer restarts the queues.
    ///
    /// Where that cannot be done because the device lock is taken (remove
    /// waiting in `scsi_remove_host()` for these very commands, bind, a
    /// system sleep callback), the device is reset and every queue taken
    /// back without re-initialising it: a success never leaves a command
    /// in the device, which task management alone cannot promise (a target
    /// already being removed is not even found). The queues stay detached:
    /// new commands fail, until a system resume restores the device or the
    /// driver is bound again.
    fn eh_host_reset(host: EhHost<'_, Self>, _cmd: &EhCommand) -> EhResult {
        let vscsi = host.data();
        match vscsi.reset_device() {
            Ok(()) => {
                dev_info!(&vscsi.vdev, "host reset: device reset and re-initialised\n");
                EhResult::Success
            }
            Err(e) if e == EAGAIN => {
                {
                    let _serial = vscsi.reset_lock.lock();
                    vscsi.detach_queues();
                }
                vscsi.ctrl_vq.lock().data().host_resets += 1;
                dev_warn!(
                    &vscsi.vdev,
                    "host reset: device busy (remove, bind or sleep): reset, not re-initialised\n"
                );
                EhResult::Success
            }
            Err(e) => {
                // The freeze reset the device and took every request back;
                // only the restore failed.
                dev_err!(&vscsi.vdev, "host reset failed ({:?})\n", e);
                EhResult::Failed
            }
        }
    }
}
