// SPDX-License-Identifier: GPL-2.0

//! The virtio-scsi driver logic, in safe Rust.
//!
//! C counterpart: [`drivers/scsi/virtio_scsi.c`](srctree/drivers/scsi/virtio_scsi.c).
//! Function names follow the C driver where the concept matches.

use crate::abstractions::device::{dev_err, dev_info, dev_warn};
use crate::abstractions::params;
use crate::abstractions::scsi::{
    self, Command, CommandRequest, HctxType, HostByte, HostTemplate, QueueError, QueueMaps,
    ScsiDevice, SeqFile,
};
use crate::abstractions::virtio::{
    self, virtio_device_table, DeviceId, Queue, QueueInfo, RawQueue,
};
use crate::protocol::{self, config_offset, feature, Clamp, Config, HostLimits};
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::c_str;
use kernel::prelude::*;

virtio_device_table!(ID_TABLE, [DeviceId::new(protocol::VIRTIO_ID_SCSI)]);

/// Feature bits offered to the device (`features[]` in C). T10 PI needs the
/// block layer's integrity support.
#[cfg(CONFIG_BLK_DEV_INTEGRITY)]
static FEATURES: [u32; 3] = [feature::HOTPLUG, feature::CHANGE, feature::T10_PI];
#[cfg(not(CONFIG_BLK_DEV_INTEGRITY))]
static FEATURES: [u32; 2] = [feature::HOTPLUG, feature::CHANGE];

/// The SCSI host template, filled in at module load.
pub(crate) static TEMPLATE: scsi::Template<VirtioScsi> = scsi::Template::new();

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
type ReqQueue = Queue<CommandRequest<VirtioScsi>, VqStats>;

/// Commands reaped under the queue lock before they are completed outside
/// it.
const REAP_BATCH: usize = 32;

/// Per-adapter state (`struct virtio_scsi` in C), stored in the host's
/// private data.
pub(crate) struct VirtioScsi {
    /// Request queues, indexed by blk-mq hardware queue: interrupt-driven
    /// ones first, then polled ones.
    req_vqs: KVec<Pin<KBox<ReqQueue>>>,
    /// Hardware queues per map type (default, read, poll), as in C.
    io_queues: [u32; 3],
    vdev: virtio::DeviceRef,
    /// Control and event queues; task management and events use them.
    _ctrl_vq: RawQueue,
    _event_vq: RawQueue,
    sg_tablesize: u32,
    /// T10 PI was negotiated: requests carry the PI header.
    t10_pi: bool,
    /// A device response could not be trusted; warned once.
    warned_bad_resp: AtomicBool,
}

impl VirtioScsi {
    /// Completes one command from its response (`virtscsi_complete_cmd()`).
    fn complete_cmd(&self, mut cmd: Command<Self>, used_len: u32) {
        let bufflen = cmd.bufflen();
        let mut sense = [0u8; protocol::SENSE_SIZE as usize];
        let resp = {
            let private = cmd.private();
            let resp = protocol::parse_cmd_resp(&private[RESP_OFF..], used_len, bufflen);
            if let Some(r) = &resp {
                let src = RESP_OFF + protocol::CMD_RESP_FIXED;
                sense[..r.sense_len].copy_from_slice(&private[src..src + r.sense_len]);
            }
            resp
        };
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
                if r.sense_len != 0 {
                    cmd.sense_buffer()[..r.sense_len].copy_from_slice(&sense[..r.sense_len]);
                }
            }
        }
        cmd.done();
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
    /// Commands are taken off the ring in batches under the queue lock and
    /// completed after it is dropped, so submitters on other CPUs wait less.
    /// With interrupts, callbacks stay off until the ring is empty and
    /// `enable_cb` confirms nothing arrived meanwhile.
    fn reap(&self, vq: &ReqQueue, polled: bool) -> u32 {
        let mut total = 0;
        let mut first = true;
        loop {
            let mut batch: [Option<(Command<Self>, u32)>; REAP_BATCH] =
                [const { None }; REAP_BATCH];
            let mut n = 0;
            let more = {
                let mut guard = vq.lock();
                if !polled {
                    guard.disable_cb();
                    if first {
                        // Counted here rather than in `vq_done`: one lock
                        // round trip per interrupt, not two.
                        guard.data().interrupts += 1;
                        first = false;
                    }
                }
                while n < REAP_BATCH {
                    let Some((req, len)) = guard.get_buf() else {
                        break;
                    };
                    batch[n] = Some((req.into_command(), len));
                    n += 1;
                }
                let stats = guard.data();
                stats.completed += n as u64;
                if polled {
                    stats.polled += n as u64;
                }
                if n == REAP_BATCH {
                    true
                } else {
                    !polled && !guard.enable_cb()
                }
            };
            for (cmd, len) in batch.iter_mut().take(n).filter_map(Option::take) {
                self.complete_cmd(cmd, len);
            }
            total += n as u32;
            if !more {
                return total;
            }
        }
    }

    /// Notifies the device of what was queued on `vq` (`virtscsi_kick_vq()`).
    fn kick_vq(vq: &ReqQueue) {
        let needs_kick = {
            let mut guard = vq.lock();
            let kick = guard.kick_prepare();
            if kick {
                guard.data().kicks += 1;
            }
            kick
        };
        if needs_kick {
            vq.notify();
        }
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

    /// `virtscsi_queuecommand()`.
    fn queuecommand(vscsi: &Self, mut cmd: Command<Self>) -> Result<(), QueueError<Self>> {
        let tag = cmd.unique_tag();
        let Some(vq) = vscsi.req_vqs.get((tag >> 16) as usize) else {
            return fail_cmd(cmd, HostByte::Error);
        };
        // Where C has BUG_ON(), fail the command instead.
        if cmd.sg_count() > vscsi.sg_tablesize
            || cmd.data_direction() == scsi::DataDirection::Bidirectional
        {
            return fail_cmd(cmd, HostByte::Error);
        }
        let (id, lun) = cmd.id_lun();
        let Some(lun) = protocol::encode_lun(id, lun) else {
            return fail_cmd(cmd, HostByte::BadTarget);
        };
        let (pi_out, pi_in) = if vscsi.t10_pi {
            match cmd.data_direction() {
                scsi::DataDirection::ToDevice => (cmd.prot_bytes(), 0),
                scsi::DataDirection::FromDevice => (0, cmd.prot_bytes()),
                _ => (0, 0),
            }
        } else {
            (0, 0)
        };
        let (cdb, private) = cmd.cdb_and_private();
        // The tag identifies the command to the device (for ABORT TASK):
        // the blk-mq unique tag, not a kernel address.
        let tag = u64::from(tag);
        let hdr = &mut private[REQ_OFF..];
        let req_len = if vscsi.t10_pi {
            protocol::write_cmd_req_pi(hdr, &lun, tag, pi_out, pi_in, cdb)
        } else {
            protocol::write_cmd_req(hdr, &lun, tag, cdb)
        };
        let Some(req_len) = req_len else {
            return fail_cmd(cmd, HostByte::Error);
        };
        let kick = cmd.is_last();
        let resp = RESP_OFF..RESP_OFF + protocol::CMD_RESP_SIZE;
        let req = match cmd.into_request(REQ_OFF..REQ_OFF + req_len, resp) {
            Ok(req) => req,
            Err((cmd, _)) => return fail_cmd(cmd, HostByte::Error),
        };
        let mut guard = vq.lock();
        match guard.add(req) {
            Ok(()) => {
                let needs_kick = kick && guard.kick_prepare();
                let stats = guard.data();
                stats.submitted += 1;
                if needs_kick {
                    stats.kicks += 1;
                }
                drop(guard);
                if needs_kick {
                    vq.notify();
                }
                Ok(())
            }
            Err((req, e)) => {
                drop(guard);
                let cmd = req.into_command();
                if e == EIO {
                    // The device is broken: nothing will ever complete it.
                    fail_cmd(cmd, HostByte::BadTarget)
                } else {
                    Err(QueueError::HostBusy(cmd))
                }
            }
        }
    }

    /// `virtscsi_commit_rqs()`.
    fn commit_rqs(vscsi: &Self, hwq: u16) {
        if let Some(vq) = vscsi.req_vqs.get(usize::from(hwq)) {
            Self::kick_vq(vq);
        }
    }

    /// `virtscsi_device_alloc()`: hosts may advertise transfer limits of
    /// passed-through targets in VPD pages, so always read them.
    fn slave_alloc(sdev: &ScsiDevice) -> Result {
        sdev.add_bflags(scsi::BLIST_TRY_VPD_PAGES);
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
        let mut offset = 0;
        for (ty, nr) in [HctxType::Default, HctxType::Read, HctxType::Poll]
            .into_iter()
            .zip(vscsi.io_queues)
        {
            let virtio = (ty != HctxType::Poll).then_some((&*vscsi.vdev, VQ_BASE));
            maps.map(ty, nr, offset, virtio);
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

    fn debugfs_show(vscsi: &Self, m: &SeqFile) {
        let polled_from = vscsi.io_queues[0] + vscsi.io_queues[1];
        for (i, vq) in vscsi.req_vqs.iter().enumerate() {
            let kind = if i as u32 >= polled_from {
                "poll"
            } else {
                "default"
            };
            // Copy out, then print without the lock held.
            let s = *vq.lock().data();
            m.print(format_args!(
                "{} {} submitted {} completed {} kicks {} interrupts {} polled {}\n",
                i, kind, s.submitted, s.completed, s.kicks, s.interrupts, s.polled
            ));
        }
    }
}

/// Reads the whole configuration space.
fn read_config(dev: &virtio::Device) -> Result<Config> {
    Ok(Config {
        num_queues: dev.cread32(config_offset::NUM_QUEUES)?,
        seg_max: dev.cread32(config_offset::SEG_MAX)?,
        max_sectors: dev.cread32(config_offset::MAX_SECTORS)?,
        cmd_per_lun: dev.cread32(config_offset::CMD_PER_LUN)?,
        event_info_size: dev.cread32(config_offset::EVENT_INFO_SIZE)?,
        sense_size: dev.cread32(config_offset::SENSE_SIZE)?,
        cdb_size: dev.cread32(config_offset::CDB_SIZE)?,
        max_channel: dev.cread16(config_offset::MAX_CHANNEL)?,
        max_target: dev.cread16(config_offset::MAX_TARGET)?,
        max_lun: dev.cread32(config_offset::MAX_LUN)?,
    })
}

fn warn_clamps(dev: &virtio::Device, limits: &HostLimits, already: u32) {
    for c in Clamp::ALL {
        let bit = c as u32;
        if limits.clamped & bit != 0 && already & bit == 0 {
            dev_warn!(dev, "{}\n", c.describe());
        }
    }
}

#[vtable]
impl virtio::Driver for VirtioScsi {
    type Data = KBox<scsi::Host<VirtioScsi>>;

    const NAME: &'static CStr = c_str!("virtio_scsi_rs");
    const ID_TABLE: &'static [DeviceId] = &ID_TABLE;
    const FEATURES: &'static [u32] = &FEATURES;

    /// `virtscsi_probe()`: everything but `DRIVER_OK` and the scan, which
    /// follow in `scan`.
    fn probe(dev: &virtio::Device) -> Result<Self::Data> {
        if !dev.has_config_access() {
            dev_err!(dev, "probe failure: config access disabled\n");
            return Err(EINVAL);
        }
        let cfg = read_config(dev)?;
        let indirect = dev.has_feature(virtio::RING_F_INDIRECT_DESC);
        // The queue count comes first; the ring size is known after.
        let early = protocol::host_limits(&cfg, virtio::nr_cpu_ids(), 3, indirect);
        let num_queues = early.num_queues;
        // At least one queue keeps interrupts (`virtscsi_init()`).
        let wanted_poll = params::virtscsi_poll_queues();
        let num_poll = wanted_poll.min(num_queues - 1);
        if num_poll < wanted_poll {
            dev_warn!(
                dev,
                "virtscsi_poll_queues={} but only {} request queues: using {} poll queues\n",
                wanted_poll,
                num_queues,
                num_poll
            );
        }
        let io_queues = [num_queues - num_poll, 0, num_poll];
        dev_info!(
            dev,
            "{}/{}/{} default/read/poll queues\n",
            io_queues[0],
            io_queues[1],
            io_queues[2]
        );

        let queue = |name, callback| QueueInfo { name, callback };
        let mut infos = KVec::with_capacity(num_queues as usize + VQ_BASE as usize, GFP_KERNEL)?;
        infos.push(queue(c_str!("control"), true), GFP_KERNEL)?;
        infos.push(queue(c_str!("event"), true), GFP_KERNEL)?;
        for i in 0..num_queues {
            let info = if i < io_queues[0] {
                queue(c_str!("request"), true)
            } else {
                queue(c_str!("request_poll"), false)
            };
            infos.push(info, GFP_KERNEL)?;
        }
        let mut raw = dev.find_vqs::<Self>(&infos, VQ_BASE)?.into_iter();
        let ctrl_vq = raw.next().ok_or(EINVAL)?;
        let event_vq = raw.next().ok_or(EINVAL)?;
        let mut req_vqs = KVec::with_capacity(num_queues as usize, GFP_KERNEL)?;
        for r in raw {
            let vq = KBox::pin_init(Queue::new(r, VqStats::default()), GFP_KERNEL)?;
            req_vqs.push(vq, GFP_KERNEL)?;
        }
        let ring = req_vqs.first().ok_or(EINVAL)?.vring_size();
        let limits = protocol::host_limits(&cfg, virtio::nr_cpu_ids(), ring, indirect);
        warn_clamps(dev, &limits, 0);

        dev.cwrite32(config_offset::CDB_SIZE, protocol::CDB_SIZE)?;
        dev.cwrite32(config_offset::SENSE_SIZE, protocol::SENSE_SIZE)?;

        let t10_pi = cfg!(CONFIG_BLK_DEV_INTEGRITY) && dev.has_feature(feature::T10_PI);
        let vscsi = VirtioScsi {
            req_vqs,
            io_queues,
            vdev: dev.get(),
            t10_pi,
            _ctrl_vq: ctrl_vq,
            _event_vq: event_vq,
            sg_tablesize: u32::from(limits.sg_tablesize),
            warned_bad_resp: AtomicBool::new(false),
        };
        let mut host = scsi::Host::alloc(&TEMPLATE, vscsi)?;
        host.set_limits(&scsi::Limits {
            can_queue: limits.can_queue,
            cmd_per_lun: limits.cmd_per_lun,
            sg_tablesize: limits.sg_tablesize,
            max_sectors: limits.max_sectors,
            max_id: limits.max_id,
            max_lun: limits.max_lun,
            max_channel: 0,
            max_cmd_len: protocol::CDB_SIZE as u16,
            nr_hw_queues: num_queues,
            nr_maps: if num_poll > 0 { 3 } else { 1 },
        })?;
        if t10_pi {
            host.set_t10_pi()?;
        }
        host.add(dev)?;
        dev_info!(
            dev,
            "host{}: {} request queues, ring {}, sg {}, max_sectors {}, cmd_per_lun {}, max_target {}\n",
            host.host_no(),
            num_queues,
            ring,
            limits.sg_tablesize,
            limits.max_sectors,
            limits.cmd_per_lun,
            limits.max_id - 1
        );
        Ok(KBox::new(host, GFP_KERNEL)?)
    }

    fn scan(_dev: &virtio::Device, host: &scsi::Host<VirtioScsi>) {
        host.scan();
    }

    /// `virtscsi_remove()`: remove the host (waits for in-flight commands),
    /// then reset the device and delete the queues, then free the host.
    fn remove(_dev: &virtio::Device, mut host: Self::Data) {
        host.remove();
        drop(host);
    }

    /// `virtscsi_req_done()` and friends, in hard-IRQ context.
    fn vq_done(host: &scsi::Host<VirtioScsi>, index: u32) {
        let vscsi = host.data();
        if let Some(vq) = index
            .checked_sub(VQ_BASE)
            .and_then(|i| vscsi.req_vqs.get(i as usize))
        {
            vscsi.reap(vq, false);
        }
    }
}
