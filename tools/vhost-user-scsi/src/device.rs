// SPDX-License-Identifier: GPL-2.0
//! The virtio-scsi device: its queues, their wire formats (from
//! `virtio-bindings`), and the behaviour profiles of the devices it imitates.
//!
//! Queue 0 is the control queue, 1 the event queue, 2.. the request queues.
//! Worker thread 0 serves the control and event queues and the control
//! socket's wake-ups; each request queue has a thread of its own.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_bindings::virtio_scsi::*;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT, Reader, Writer};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::fault::{Answer, Fault, Plan};
use crate::scsi::{Io, Targets};

/// Guest memory as the daemon hands it over.
pub type Mem = GuestMemoryAtomic<GuestMemoryMmap>;
type Chain = DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap>>;

/// A handle on guest memory a descriptor chain can hold: the daemon's load
/// guard, or a plain reference in tests.
pub trait MemRef: std::ops::Deref<Target = GuestMemoryMmap> + Clone {}
impl<T: std::ops::Deref<Target = GuestMemoryMmap> + Clone> MemRef for T {}

/// `VHOST_USER_F_PROTOCOL_FEATURES`.
const VHOST_USER_F_PROTOCOL_FEATURES: u32 = 30;

/// Request header size without T10 PI (`struct virtio_scsi_cmd_req`).
pub const CMD_REQ_SIZE: usize = size_of::<virtio_scsi_cmd_req>();
/// Request header size with T10 PI (`struct virtio_scsi_cmd_req_pi`).
pub const CMD_REQ_PI_SIZE: usize = size_of::<virtio_scsi_cmd_req_pi>();
/// Response size (`struct virtio_scsi_cmd_resp`), sense area included.
pub const CMD_RESP_SIZE: usize = size_of::<virtio_scsi_cmd_resp>();
/// Event size (`struct virtio_scsi_event`).
pub const EVENT_SIZE: usize = size_of::<virtio_scsi_event>();

/// Which real device the back end behaves like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// QEMU's userspace virtio-scsi: used length = bytes written.
    Qemu,
    /// Linux 6.12 vhost-scsi: used length 0 for every command, TMF and event.
    VhostScsi,
    /// The least a device may offer: one request queue, no HOTPLUG, no
    /// CHANGE, no indirect descriptors (QEMU's side sets queue size 16).
    Minimal,
    /// INOUT and T10_PI offered.
    BidiPi,
}

impl Profile {
    /// Parses a profile name.
    pub fn parse(s: &str) -> Option<Profile> {
        Some(match s {
            "qemu" => Profile::Qemu,
            "vhost-scsi" => Profile::VhostScsi,
            "minimal" => Profile::Minimal,
            "bidi-pi" => Profile::BidiPi,
            _ => return None,
        })
    }

    /// The virtio features this profile offers.
    pub fn features(self) -> u64 {
        let bit = |b: u32| 1u64 << b;
        let mut f = bit(VIRTIO_F_VERSION_1)
            | bit(VIRTIO_RING_F_EVENT_IDX)
            | bit(VHOST_USER_F_PROTOCOL_FEATURES);
        if self != Profile::Minimal {
            f |= bit(VIRTIO_RING_F_INDIRECT_DESC)
                | bit(VIRTIO_SCSI_F_HOTPLUG)
                | bit(VIRTIO_SCSI_F_CHANGE);
        }
        if self == Profile::BidiPi {
            f |= bit(VIRTIO_SCSI_F_INOUT) | bit(VIRTIO_SCSI_F_T10_PI);
        }
        f
    }

    /// The used length to report for a buffer the device wrote `written`
    /// bytes into.
    fn used_len(self, written: usize) -> u32 {
        match self {
            Profile::VhostScsi => 0,
            _ => written as u32,
        }
    }
}

/// Counters, printed by the control socket's `stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Commands answered.
    pub commands: AtomicU64,
    /// TMFs answered.
    pub tmfs: AtomicU64,
    /// Events delivered.
    pub events: AtomicU64,
    /// Events dropped for want of a buffer.
    pub events_dropped: AtomicU64,
    /// Requests that could not be parsed.
    pub malformed: AtomicU64,
    /// Commands whose CDB field was not zero past the command
    /// ([`crate::scsi::cdb_tail_clear`]).
    pub cdb_tail: AtomicU64,
    /// Blocks whose protection information a write checked.
    pub pi_checked: AtomicU64,
    /// Writes refused for protection information that failed a check.
    pub pi_errors: AtomicU64,
}

/// How many used-ring entries [`Fault::UsedIdxJump`] skips.
const USED_IDX_JUMP: u16 = 4;

/// How a request goes back to the driver: the used length to report, and
/// the fault, if any, in the way it goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Give {
    /// The used length.
    pub used: u32,
    /// A fault of [`Fault::RING`], or [`Fault::TmfNeverAnswer`].
    pub how: Option<Fault>,
    /// The target the request named (for [`Fault::AnswerAfterAbort`]).
    pub target: u8,
}

impl Give {
    fn plain(used: u32) -> Give {
        Give {
            used,
            how: None,
            target: 0,
        }
    }
}

/// A request the device keeps instead of giving it back.
struct Held {
    vring: VringRwLock,
    queue: u32,
    head: u16,
    used: u32,
    /// Given back after the next TMF to this target; never if `None`.
    until_tmf_to: Option<u8>,
}

/// Events waiting for the event queue, and whether one was lost.
#[derive(Debug, Default)]
struct EventState {
    pending: VecDeque<[u8; EVENT_SIZE]>,
    missed: bool,
    /// NO_EVENT answers still to send, one in each buffer as soon as the
    /// driver posts it (a storm: `storm N`, see [`Device::deliver_events`]);
    /// queued events go first, each waiting for a buffer, never dropped.
    storm: u64,
}

/// The device, shared by the daemon's worker threads.
pub struct Device {
    profile: Profile,
    req_queues: usize,
    queue_size: usize,
    mem: Mutex<Mem>,
    event_idx: AtomicBool,
    acked: AtomicU64,
    /// The devices behind the controller.
    pub targets: Arc<Targets>,
    events: Mutex<EventState>,
    /// Wakes worker thread 0 to deliver queued events.
    wake: (EventConsumer, EventNotifier),
    /// Counters.
    pub stats: Stats,
    /// The faults to commit.
    pub plan: Mutex<Plan>,
    /// Requests kept back by a fault, until their queue stops (a device
    /// reset) or a TMF releases them.
    held: Mutex<Vec<Held>>,
    /// Targets that TMFs named since the control queue was last drained.
    tmf_targets: Mutex<Vec<u8>>,
}

/// The listener id of [`Device::wake`] on worker thread 0.
fn wake_id(num_queues: usize) -> u64 {
    num_queues as u64 + 1
}

impl Device {
    /// A device of `req_queues` request queues of at most `queue_size`.
    pub fn new(
        profile: Profile,
        req_queues: usize,
        queue_size: usize,
        mem: Mem,
        targets: Arc<Targets>,
    ) -> io::Result<Device> {
        Ok(Device {
            profile,
            req_queues,
            queue_size,
            mem: Mutex::new(mem),
            event_idx: AtomicBool::new(false),
            acked: AtomicU64::new(0),
            targets,
            events: Mutex::new(EventState::default()),
            wake: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
            stats: Stats::default(),
            plan: Mutex::new(Plan::default()),
            held: Mutex::new(Vec::new()),
            tmf_targets: Mutex::new(Vec::new()),
        })
    }

    /// The fd and listener id worker thread 0 must watch.
    pub fn wake_listener(&self) -> (std::os::fd::RawFd, u64) {
        use std::os::fd::AsRawFd;
        (self.wake.0.as_raw_fd(), wake_id(self.num_queues_total()))
    }

    fn num_queues_total(&self) -> usize {
        2 + self.req_queues
    }

    fn t10_pi(&self) -> bool {
        self.acked.load(Ordering::Relaxed) & (1 << VIRTIO_SCSI_F_T10_PI) != 0
    }

    /// Queues an event (`kind`, target, LUN, reason) and wakes the event
    /// queue's thread to deliver it.
    pub fn queue_event(&self, kind: u32, target: u8, lun: u16, reason: u32) -> io::Result<()> {
        self.queue_raw_event(kind, wire_lun(target, lun), reason)
    }

    /// Queues a hot-add event (TRANSPORT_RESET, RESCAN) for a LUN.
    pub fn rescan_event(&self, target: u8, lun: u16) -> io::Result<()> {
        self.queue_event(
            VIRTIO_SCSI_T_TRANSPORT_RESET,
            target,
            lun,
            VIRTIO_SCSI_EVT_RESET_RESCAN,
        )
    }

    /// Queues an event with a LUN field as given, however malformed.
    pub fn queue_raw_event(&self, kind: u32, lun: [u8; 8], reason: u32) -> io::Result<()> {
        let mut ev = [0u8; EVENT_SIZE];
        ev[offset_of!(virtio_scsi_event, event)..][..4].copy_from_slice(&kind.to_le_bytes());
        ev[offset_of!(virtio_scsi_event, lun)..][..8].copy_from_slice(&lun);
        ev[offset_of!(virtio_scsi_event, reason)..][..4].copy_from_slice(&reason.to_le_bytes());
        self.events.lock().unwrap().pending.push_back(ev);
        self.wake.1.notify()
    }

    /// Hands each event buffer back as soon as the driver posts it, with
    /// NO_EVENT, `n` times in all (0: stop); queued events go first.
    pub fn storm(&self, n: u64) -> io::Result<()> {
        self.events.lock().unwrap().storm = n;
        self.wake.1.notify()
    }

    /// Runs `f` over every available chain of `vring` (queue `queue`),
    /// giving each back as `f` says, then signals the driver.
    fn drain(
        &self,
        vring: &VringRwLock,
        queue: u32,
        mut f: impl FnMut(&Device, Chain) -> Give,
    ) -> io::Result<()> {
        let mem = self.mem.lock().unwrap().memory();
        loop {
            if self.event_idx.load(Ordering::Relaxed) {
                vring.disable_notification().map_err(io::Error::other)?;
            }
            let chains: Vec<Chain> = vring
                .get_mut()
                .get_queue_mut()
                .iter(mem.clone())
                .map_err(io::Error::other)?
                .collect();
            for chain in chains {
                let head = chain.head_index();
                let give = f(self, chain);
                self.give_back(vring, queue, head, give)?;
            }
            self.signal(vring)?;
            if !self.event_idx.load(Ordering::Relaxed)
                || !vring.enable_notification().map_err(io::Error::other)?
            {
                return Ok(());
            }
        }
    }

    /// Puts a request in the used ring, or keeps it, as `give` says.
    fn give_back(&self, vring: &VringRwLock, queue: u32, head: u16, give: Give) -> io::Result<()> {
        let hold = |until_tmf_to| {
            self.held.lock().unwrap().push(Held {
                vring: vring.clone(),
                queue,
                head,
                used: give.used,
                until_tmf_to,
            });
            Ok(())
        };
        let add = |head| vring.add_used(head, give.used).map_err(io::Error::other);
        match give.how {
            Some(Fault::NeverAnswer | Fault::TmfNeverAnswer) => hold(None),
            Some(Fault::AnswerAfterAbort) => hold(Some(give.target)),
            Some(Fault::DuplicateUsed) => add(head).and_then(|()| add(head)),
            Some(Fault::UsedIdxJump) => {
                {
                    let mut state = vring.get_mut();
                    let q = state.get_queue_mut();
                    let next = q.next_used().wrapping_add(USED_IDX_JUMP);
                    q.set_next_used(next);
                }
                add(head)
            }
            _ => add(head),
        }
    }

    /// Gives back the requests held until a TMF to a target that a TMF has
    /// just named: after the TMF's own answer, as no device should.
    fn release_after_tmf(&self) -> io::Result<()> {
        let targets = std::mem::take(&mut *self.tmf_targets.lock().unwrap());
        if targets.is_empty() {
            return Ok(());
        }
        let released: Vec<Held> = {
            let mut held = self.held.lock().unwrap();
            let (go, stay) = held
                .drain(..)
                .partition(|h| h.until_tmf_to.is_some_and(|t| targets.contains(&t)));
            *held = stay;
            go
        };
        for h in released {
            eprintln!(
                "vhost-user-scsi: answering head {} of queue {} after the TMF",
                h.head, h.queue
            );
            h.vring.add_used(h.head, h.used).map_err(io::Error::other)?;
            self.signal(&h.vring)?;
        }
        Ok(())
    }

    /// Forgets what the control socket set up: faults, pending events and
    /// counters.
    pub fn reset_state(&self) {
        *self.plan.lock().unwrap() = Plan::default();
        *self.events.lock().unwrap() = EventState::default();
        let s = &self.stats;
        for c in [
            &s.commands,
            &s.tmfs,
            &s.events,
            &s.events_dropped,
            &s.malformed,
            &s.cdb_tail,
            &s.pi_checked,
            &s.pi_errors,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// How many requests a fault keeps back.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    fn signal(&self, vring: &VringRwLock) -> io::Result<()> {
        if !self.event_idx.load(Ordering::Relaxed)
            || vring.needs_notification().map_err(io::Error::other)?
        {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    /// The driver-readable and the device-writable parts of a chain, or
    /// `None` (counted as malformed) if its descriptors are out of memory.
    fn split<'a, M: MemRef>(
        &self,
        chain: &'a DescriptorChain<M>,
    ) -> Option<(Reader<'a>, Writer<'a>)> {
        let mem = chain.memory();
        match (
            Reader::new(mem, chain.clone()),
            Writer::new(mem, chain.clone()),
        ) {
            (Ok(r), Ok(w)) => Some((r, w)),
            _ => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// One command: returns how it goes back.
    fn command<M: MemRef>(&self, chain: DescriptorChain<M>) -> Give {
        let Some((mut reader, mut writer)) = self.split(&chain) else {
            return Give::plain(0);
        };
        let pi = self.t10_pi();
        let req_size = if pi { CMD_REQ_PI_SIZE } else { CMD_REQ_SIZE };
        let mut req = [0u8; CMD_REQ_PI_SIZE];
        if writer.available_bytes() < CMD_RESP_SIZE {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return Give::plain(0);
        }
        let Ok(mut data_in) = writer.split_at(CMD_RESP_SIZE) else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return Give::plain(0);
        };
        let mut resp = Response::default();
        if reader.read_exact(&mut req[..req_size]).is_err() {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            resp.response = VIRTIO_SCSI_S_FAILURE as u8;
            return Give::plain(self.finish(&mut writer, &resp, 0));
        }
        let lun_off = offset_of!(virtio_scsi_cmd_req, lun);
        let mut lun = [0u8; 8];
        lun.copy_from_slice(&req[lun_off..lun_off + 8]);
        let (cdb_off, pi_out, pi_in) = if pi {
            let o = offset_of!(virtio_scsi_cmd_req_pi, pi_bytesout);
            let i = offset_of!(virtio_scsi_cmd_req_pi, pi_bytesin);
            (
                offset_of!(virtio_scsi_cmd_req_pi, cdb),
                le32(&req[o..]) as usize,
                le32(&req[i..]) as usize,
            )
        } else {
            (offset_of!(virtio_scsi_cmd_req, cdb), 0, 0)
        };
        let cdb = &req[cdb_off..cdb_off + VIRTIO_SCSI_CDB_SIZE as usize];
        if !crate::scsi::cdb_tail_clear(cdb)
            && self.stats.cdb_tail.fetch_add(1, Ordering::Relaxed) == 0
        {
            eprintln!("vhost-user-scsi: a CDB field not zero past the command: {cdb:02x?}");
        }
        // Protection information precedes the data in each direction
        // (virtio 5.6.6.1). A LUN formatted with it takes and gives tuples;
        // for the others it is skipped (out) or zeroed (in).
        let mut prot_out = vec![0u8; pi_out.min(reader.available_bytes())];
        let _ = reader.read_exact(&mut prot_out);
        let mut out = vec![0u8; reader.available_bytes()];
        let _ = reader.read_exact(&mut out);
        let pi_in = pi_in.min(data_in.available_bytes());
        let room = data_in.available_bytes() - pi_in;
        let Some((target, lun)) = decode_lun(&lun) else {
            resp.response = VIRTIO_SCSI_S_BAD_TARGET as u8;
            return Give::plain(self.finish(&mut writer, &resp, 0));
        };
        if !self.targets.target_exists(target) {
            resp.response = VIRTIO_SCSI_S_BAD_TARGET as u8;
            return Give::plain(self.finish(&mut writer, &resp, 0));
        }
        let fault = self.plan.lock().unwrap().for_command(target, lun);
        let io = Io {
            pi_out: &prot_out,
            data_out: &out,
            pi_in,
            alloc: room,
        };
        let r = self.targets.execute_io(target, lun, cdb, io);
        let mut prot_in = r.pi.clone();
        if fault == Some(Fault::PiCorrupt) {
            if let Some(guard) = prot_in.first_mut() {
                *guard ^= 0xff;
            }
        }
        prot_in.resize(pi_in, 0);
        let _ = data_in.write_all(&prot_in);
        let written = data_in.write(&r.data).unwrap_or(0);
        self.stats
            .pi_checked
            .fetch_add(r.pi_checked, Ordering::Relaxed);
        if r.pi_error() {
            self.stats.pi_errors.fetch_add(1, Ordering::Relaxed);
        }
        let resid = if !r.data.is_empty() || out.is_empty() {
            room - written
        } else {
            out.len() - r.consumed.min(out.len())
        };
        let mut answer = Answer {
            sense_len: r.sense.len().min(VIRTIO_SCSI_SENSE_SIZE as usize) as u32,
            resid: resid as u32,
            status: r.status,
            response: VIRTIO_SCSI_S_OK as u8,
            used: self.profile.used_len(CMD_RESP_SIZE + pi_in + written),
        };
        if let Some(f) = fault {
            let writable = CMD_RESP_SIZE + pi_in + room;
            f.apply(&mut answer, writable, room.max(out.len()));
            eprintln!(
                "vhost-user-scsi: fault {f} on {target}:{lun} opcode {:#04x}",
                cdb[0]
            );
        }
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        self.write_resp(&mut writer, &answer, &r.sense);
        Give {
            used: answer.used,
            how: fault.filter(|f| Fault::RING.contains(f)),
            target,
        }
    }

    /// Writes a command response; returns the used length.
    fn finish(&self, writer: &mut Writer<'_>, resp: &Response, data: usize) -> u32 {
        let answer = Answer {
            sense_len: resp.sense.len() as u32,
            resid: resp.resid,
            status: resp.status,
            response: resp.response,
            used: self.profile.used_len(CMD_RESP_SIZE + data),
        };
        self.write_resp(writer, &answer, &resp.sense);
        answer.used
    }

    fn write_resp(&self, writer: &mut Writer<'_>, answer: &Answer, sense: &[u8]) {
        if writer.write_all(&encode_resp(answer, sense)).is_err() {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One control request: returns how it goes back.
    fn control<M: MemRef>(&self, chain: DescriptorChain<M>) -> Give {
        let Some((mut reader, mut writer)) = self.split(&chain) else {
            return Give::plain(0);
        };
        let mut req = [0u8; size_of::<virtio_scsi_ctrl_tmf_req>()];
        let n = reader.read(&mut req).unwrap_or(0);
        let kind = if n >= 4 { le32(&req) } else { u32::MAX };
        match kind {
            VIRTIO_SCSI_T_TMF if n == req.len() => {
                let sub = le32(&req[offset_of!(virtio_scsi_ctrl_tmf_req, subtype)..]);
                let lun_off = offset_of!(virtio_scsi_ctrl_tmf_req, lun);
                let mut lun = [0u8; 8];
                lun.copy_from_slice(&req[lun_off..lun_off + 8]);
                let mut response = match decode_lun(&lun) {
                    Some((t, _)) if self.targets.target_exists(t) => match sub {
                        VIRTIO_SCSI_T_TMF_ABORT_TASK
                        | VIRTIO_SCSI_T_TMF_ABORT_TASK_SET
                        | VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET
                        | VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET
                        | VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET
                        // Commands complete as they arrive: nothing is
                        // ever left to abort or to find.
                        | VIRTIO_SCSI_T_TMF_QUERY_TASK
                        | VIRTIO_SCSI_T_TMF_QUERY_TASK_SET => VIRTIO_SCSI_S_OK,
                        _ => VIRTIO_SCSI_S_FUNCTION_REJECTED,
                    },
                    _ => VIRTIO_SCSI_S_BAD_TARGET,
                };
                let fault =
                    decode_lun(&lun).and_then(|(t, l)| self.plan.lock().unwrap().for_tmf(t, l));
                match fault {
                    Some(Fault::TmfRejected) => response = VIRTIO_SCSI_S_FUNCTION_REJECTED,
                    Some(Fault::TmfNeverAnswer) => {}
                    Some(_) => response = 0x7e,
                    None => {}
                }
                if let Some(f) = fault {
                    eprintln!("vhost-user-scsi: fault {f} on TMF {sub}");
                }
                if fault == Some(Fault::TmfNeverAnswer) {
                    return Give {
                        used: 0,
                        how: fault,
                        target: lun[1],
                    };
                }
                let _ = writer.write_all(&[response as u8]);
                self.stats.tmfs.fetch_add(1, Ordering::Relaxed);
                if let Some((t, _)) = decode_lun(&lun) {
                    self.tmf_targets.lock().unwrap().push(t);
                }
                Give::plain(
                    self.profile
                        .used_len(size_of::<virtio_scsi_ctrl_tmf_resp>()),
                )
            }
            VIRTIO_SCSI_T_AN_QUERY | VIRTIO_SCSI_T_AN_SUBSCRIBE
                if n >= size_of::<virtio_scsi_ctrl_an_req>() =>
            {
                // No asynchronous notification is supported: none reported.
                let mut resp = [0u8; size_of::<virtio_scsi_ctrl_an_resp>()];
                resp[offset_of!(virtio_scsi_ctrl_an_resp, response)] = VIRTIO_SCSI_S_OK as u8;
                let _ = writer.write_all(&resp);
                Give::plain(self.profile.used_len(resp.len()))
            }
            _ => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                Give::plain(0)
            }
        }
    }

    /// Writes `ev` into an event buffer and gives it back.
    fn give_event(
        &self,
        vring: &VringRwLock,
        chain: Chain,
        ev: &[u8; EVENT_SIZE],
    ) -> io::Result<()> {
        let head = chain.head_index();
        let written =
            Writer::new(chain.memory(), chain.clone()).is_ok_and(|mut w| w.write_all(ev).is_ok());
        let used = if written {
            self.profile.used_len(EVENT_SIZE)
        } else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            0
        };
        vring.add_used(head, used).map_err(io::Error::other)?;
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Delivers queued events while the driver has buffers posted; with
    /// none, an event is dropped and the next one carries EVENTS_MISSED.
    /// A kick of the event queue after a loss sends a bare EVENTS_MISSED.
    ///
    /// In a storm the device then watches the ring instead of waiting for
    /// kicks, so that each buffer comes back as soon as the driver posts
    /// it, as from a device on a CPU of its own: the thread wakes itself
    /// for the next pass, through its event loop, which serves the control
    /// queue and the daemon's exit in between. A stopped ring (a device
    /// reset) pauses the storm until the driver kicks the queue again.
    fn deliver_events(&self, vring: &VringRwLock, kicked: bool) -> io::Result<()> {
        self.deliver_once(vring, kicked)?;
        if self.events.lock().unwrap().storm > 0 && vring.get_ref().get_queue().ready() {
            std::thread::yield_now();
            self.wake.1.notify()?;
        }
        Ok(())
    }

    fn deliver_once(&self, vring: &VringRwLock, kicked: bool) -> io::Result<()> {
        let mem = self.mem.lock().unwrap().memory();
        let mut st = self.events.lock().unwrap();
        if kicked && st.missed && st.pending.is_empty() {
            let mut ev = [0u8; EVENT_SIZE];
            ev[..4].copy_from_slice(&VIRTIO_SCSI_T_NO_EVENT.to_le_bytes());
            st.pending.push_back(ev);
        }
        let mut delivered = false;
        while let Some(mut ev) = st.pending.pop_front() {
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else {
                if st.storm > 0 {
                    // The storm takes every buffer as soon as it is posted:
                    // the event waits for the next one instead of being lost.
                    st.pending.push_front(ev);
                    break;
                }
                st.missed = true;
                self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if std::mem::take(&mut st.missed) || self.plan.lock().unwrap().events_missed_always() {
                let kind = le32(&ev) | VIRTIO_SCSI_T_EVENTS_MISSED;
                ev[..4].copy_from_slice(&kind.to_le_bytes());
            }
            self.give_event(vring, chain, &ev)?;
            delivered = true;
        }
        while st.storm > 0 && st.pending.is_empty() {
            let Some(chain) = vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(mem.clone())
            else {
                break;
            };
            let mut ev = [0u8; EVENT_SIZE];
            ev[..4].copy_from_slice(&VIRTIO_SCSI_T_NO_EVENT.to_le_bytes());
            self.give_event(vring, chain, &ev)?;
            st.storm -= 1;
            delivered = true;
        }
        if delivered {
            self.signal(vring)?;
        }
        // With EVENT_IDX the driver kicks only when told to (avail_event):
        // ask for a kick at its next buffer, so that a loss is reported as
        // soon as there is a buffer to report it in. Buffers that arrived
        // before the request do it now.
        if self.event_idx.load(Ordering::Relaxed)
            && vring.enable_notification().map_err(io::Error::other)?
            && st.missed
        {
            drop(st);
            return self.deliver_once(vring, true);
        }
        Ok(())
    }
}

/// A command response before encoding.
#[derive(Debug, Default)]
struct Response {
    sense: Vec<u8>,
    resid: u32,
    status: u8,
    response: u8,
}

/// Encodes a command response: the fields as given (a fault may have made
/// them lie), the sense area holding at most 96 bytes of `sense`.
fn encode_resp(a: &Answer, sense: &[u8]) -> [u8; CMD_RESP_SIZE] {
    let mut b = [0u8; CMD_RESP_SIZE];
    let so = offset_of!(virtio_scsi_cmd_resp, sense_len);
    b[so..so + 4].copy_from_slice(&a.sense_len.to_le_bytes());
    let ro = offset_of!(virtio_scsi_cmd_resp, resid);
    b[ro..ro + 4].copy_from_slice(&a.resid.to_le_bytes());
    b[offset_of!(virtio_scsi_cmd_resp, status)] = a.status;
    b[offset_of!(virtio_scsi_cmd_resp, response)] = a.response;
    let s = offset_of!(virtio_scsi_cmd_resp, sense);
    let n = sense.len().min(VIRTIO_SCSI_SENSE_SIZE as usize);
    b[s..s + n].copy_from_slice(&sense[..n]);
    b
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes a virtio-scsi LUN field: `1, target, LUN (flat or peripheral)`.
pub fn decode_lun(lun: &[u8; 8]) -> Option<(u8, u16)> {
    if lun[0] != 1 || lun[4..] != [0; 4] {
        return None;
    }
    let l = match lun[2] >> 6 {
        0 if lun[2] == 0 => u16::from(lun[3]),
        1 => (u16::from(lun[2] & 0x3f) << 8) | u16::from(lun[3]),
        _ => return None,
    };
    Some((lun[1], l))
}

/// Encodes a target and LUN for an event as REPORT LUNS does (peripheral
/// below 256, flat space above): Linux names a LUN by that encoding, and
/// QEMU keeps the two the same for that reason.
pub fn wire_lun(target: u8, lun: u16) -> [u8; 8] {
    let b2 = if lun < 256 {
        0
    } else {
        0x40 | (lun >> 8) as u8
    };
    [1, target, b2, lun as u8, 0, 0, 0, 0]
}

impl VhostUserBackend for Device {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        self.num_queues_total()
    }

    fn max_queue_size(&self) -> usize {
        self.queue_size
    }

    fn features(&self) -> u64 {
        self.profile.features()
    }

    fn acked_features(&self, features: u64) {
        self.acked.store(features, Ordering::Relaxed);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // A stopped ring is re-initialised before it is used again (a
        // device reset): what was kept on it is gone with it.
        self.held.lock().unwrap().retain(|h| h.queue != queue_index);
        Ok(())
    }

    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        *self.mem.lock().unwrap() = mem;
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        let mut v = vec![0b11u64];
        v.extend((0..self.req_queues).map(|i| 1u64 << (2 + i)));
        v
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!("unexpected events {evset:?}")));
        }
        match (thread_id, device_event) {
            (0, 0) => {
                self.drain(&vrings[0], 0, Device::control)?;
                self.release_after_tmf()
            }
            (0, 1) => self.deliver_events(&vrings[1], true),
            (0, id) if u64::from(id) == wake_id(self.num_queues_total()) => {
                let _ = self.wake.0.consume();
                self.deliver_events(&vrings[1], false)
            }
            (t, 0) if t >= 1 => self.drain(&vrings[0], t as u32 + 1, Device::command),
            _ => Err(io::Error::other(format!(
                "event {device_event} on thread {thread_id}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Scope;
    use crate::scsi::{Kind, Lun, Store};
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const REQ: u64 = 0x10000;
    const RESP: u64 = 0x11000;
    const DATA: u64 = 0x12000;

    fn device(profile: Profile, mem: &GuestMemoryMmap) -> Device {
        let targets = Arc::new(Targets::default());
        let lun = Lun::new(
            Kind::Disk,
            Store::ram(1 << 20).unwrap(),
            1 << 20,
            "t".into(),
        );
        targets.insert(0, 0, lun);
        let block: Vec<u8> = (0..512u32).map(|i| (i * 7) as u8).collect();
        let write = [0x2a, 0, 0, 0, 0, 3, 0, 0, 1, 0];
        assert_eq!(targets.execute(0, 0, &write, &block, 0).status, 0);
        Device::new(profile, 1, 16, GuestMemoryAtomic::new(mem.clone()), targets).unwrap()
    }

    /// A READ(10) of LBA 3 as the driver lays it out: header, response,
    /// `data` bytes of data-in.
    fn read_chain(mem: &GuestMemoryMmap, resp_len: u32, data: u32) -> Vec<RawDescriptor> {
        let mut req = [0u8; CMD_REQ_SIZE];
        let lo = offset_of!(virtio_scsi_cmd_req, lun);
        req[lo..lo + 8].copy_from_slice(&[1, 0, 0x40, 0, 0, 0, 0, 0]);
        let co = offset_of!(virtio_scsi_cmd_req, cdb);
        req[co..co + 10].copy_from_slice(&[0x28, 0, 0, 0, 0, 3, 0, 0, 1, 0]);
        mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        let w = VRING_DESC_F_WRITE as u16;
        let mut d = vec![
            RawDescriptor::from(SplitDescriptor::new(REQ, CMD_REQ_SIZE as u32, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(RESP, resp_len, w, 0)),
        ];
        if data > 0 {
            d.push(RawDescriptor::from(SplitDescriptor::new(DATA, data, w, 0)));
        }
        d
    }

    fn resp(mem: &GuestMemoryMmap) -> [u8; CMD_RESP_SIZE] {
        let mut b = [0u8; CMD_RESP_SIZE];
        mem.read_slice(&mut b, GuestAddress(RESP)).unwrap();
        b
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap()
    }

    #[test]
    fn a_read_through_a_mock_queue() {
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, 16);
        for (profile, used) in [(Profile::Qemu, 108 + 512), (Profile::VhostScsi, 0)] {
            let dev = device(profile, &mem);
            let chain = vq.build_desc_chain(&read_chain(&mem, 108, 512)).unwrap();
            assert_eq!(dev.command(chain), Give::plain(used), "{profile:?}");
            assert_eq!(dev.stats.cdb_tail.load(Ordering::Relaxed), 0);
            let r = resp(&mem);
            assert_eq!((r[10], r[11]), (0, 0));
            assert_eq!(&r[0..8], &[0; 8]);
            let mut data = [0u8; 512];
            mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
            assert!(data
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i as u32 * 7) as u8));
        }
    }

    #[test]
    fn short_or_odd_chains() {
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, 16);
        let dev = device(Profile::Qemu, &mem);
        // No room for the response: nothing written, counted.
        let chain = vq.build_desc_chain(&read_chain(&mem, 100, 0)).unwrap();
        assert_eq!(dev.command(chain).used, 0);
        assert_eq!(dev.stats.malformed.load(Ordering::Relaxed), 1);
        // Less data-in room than the READ wants: what fits, and the residual.
        let chain = vq.build_desc_chain(&read_chain(&mem, 108, 256)).unwrap();
        assert_eq!(dev.command(chain).used, 108 + 256);
        assert_eq!(le32(&resp(&mem)[4..]), 0);
        // A target that does not exist.
        let mut d = read_chain(&mem, 108, 512);
        mem.write_slice(&[1, 9, 0x40, 0], GuestAddress(REQ))
            .unwrap();
        d.truncate(3);
        let chain = vq.build_desc_chain(&d).unwrap();
        dev.command(chain);
        assert_eq!(resp(&mem)[11], VIRTIO_SCSI_S_BAD_TARGET as u8);
    }

    #[test]
    fn faults_reach_the_wire() {
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, 16);
        let dev = device(Profile::Qemu, &mem);
        let run = |f: Fault| {
            dev.plan.lock().unwrap().set(f, Scope::Lun(0, 0), Some(1));
            let chain = vq.build_desc_chain(&read_chain(&mem, 108, 512)).unwrap();
            (dev.command(chain).used, resp(&mem))
        };
        assert_eq!(run(Fault::UsedLenOver).0, 108 + 512 + 4096);
        assert_eq!(run(Fault::UsedLenShort).0, 5);
        assert_eq!(run(Fault::UnknownResponse).1[11], 0x7e);
        assert_eq!(run(Fault::GarbageStatus).1[10], 0xfe);
        assert_eq!(le32(&run(Fault::SenseOver96).1[0..]), 200);
        assert_eq!(le32(&run(Fault::SenseOverBuffer).1[0..]), u32::MAX);
        assert_eq!(le32(&run(Fault::ResidOver).1[4..]), 512 + 4096);
        // Each fault was counted once, and the plan is spent.
        let (used, r) = run(Fault::TmfRejected);
        assert_eq!((used, r[11], le32(&r[4..])), (108 + 512, 0, 0));
        assert_eq!(dev.plan.lock().unwrap().committed, 7);
    }

    /// A ring the device drives, laid out in `mem` by a mock queue.
    fn ring(mem: &GuestMemoryMmap, vq: &MockSplitQueue<GuestMemoryMmap>) -> VringRwLock {
        let v = VringRwLock::new(GuestMemoryAtomic::new(mem.clone()), 16).unwrap();
        v.set_queue_size(16);
        v.set_queue_info(vq.desc_table_addr().0, vq.avail_addr().0, vq.used_addr().0)
            .unwrap();
        v.set_queue_ready(true);
        v
    }

    #[test]
    fn ring_faults_reach_the_used_ring() {
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, 16);
        let dev = device(Profile::Qemu, &mem);
        let vring = ring(&mem, &vq);
        let idx = || vq.used().idx().load();
        let entry = |i: u16| {
            let e = vq.used().ring().ref_at(usize::from(i)).unwrap().load();
            (e.id(), e.len())
        };
        let give = |how| Give {
            used: 620,
            how,
            target: 0,
        };
        dev.give_back(&vring, 2, 3, give(None)).unwrap();
        assert_eq!((idx(), entry(0)), (1, (3, 620)));
        // The same head twice.
        dev.give_back(&vring, 2, 4, give(Some(Fault::DuplicateUsed)))
            .unwrap();
        assert_eq!((idx(), entry(1), entry(2)), (3, (4, 620), (4, 620)));
        // Four entries nobody wrote, then the head.
        dev.give_back(&vring, 2, 5, give(Some(Fault::UsedIdxJump)))
            .unwrap();
        assert_eq!((idx(), entry(7)), (3 + 4 + 1, (5, 620)));
        assert_eq!(entry(3), (0, 0));
        // Kept: nothing in the used ring.
        dev.give_back(&vring, 2, 6, give(Some(Fault::NeverAnswer)))
            .unwrap();
        dev.give_back(&vring, 2, 7, give(Some(Fault::AnswerAfterAbort)))
            .unwrap();
        assert_eq!((idx(), dev.held()), (8, 2));
        // A TMF to another target releases nothing; one to target 0
        // releases what waited for it, never the command kept for good.
        dev.tmf_targets.lock().unwrap().push(1);
        dev.release_after_tmf().unwrap();
        assert_eq!((idx(), dev.held()), (8, 2));
        dev.tmf_targets.lock().unwrap().push(0);
        dev.release_after_tmf().unwrap();
        assert_eq!((idx(), entry(8), dev.held()), (9, (7, 620), 1));
        // Stopping another queue keeps it; stopping its own drops it.
        dev.stop_vring(3).unwrap();
        assert_eq!(dev.held(), 1);
        dev.stop_vring(2).unwrap();
        assert_eq!(dev.held(), 0);
    }

    const PROT: u64 = 0x13000;

    /// A command with T10_PI as the driver lays it out: the PI header,
    /// then PI out and data out (at PROT and DATA) if `out` has data, the
    /// response, then PI in and data in (at PROT and DATA) of the lengths
    /// of `pi_in` and `data_in`.
    fn pi_chain(
        mem: &GuestMemoryMmap,
        lun: u16,
        cdb: &[u8],
        out: (&[u8], &[u8]),
        pi_in: u32,
        data_in: u32,
    ) -> Vec<RawDescriptor> {
        let mut req = [0u8; CMD_REQ_PI_SIZE];
        let lo = offset_of!(virtio_scsi_cmd_req_pi, lun);
        req[lo..lo + 8].copy_from_slice(&wire_lun(0, lun));
        let po = offset_of!(virtio_scsi_cmd_req_pi, pi_bytesout);
        req[po..po + 4].copy_from_slice(&(out.0.len() as u32).to_le_bytes());
        let pi = offset_of!(virtio_scsi_cmd_req_pi, pi_bytesin);
        req[pi..pi + 4].copy_from_slice(&pi_in.to_le_bytes());
        let co = offset_of!(virtio_scsi_cmd_req_pi, cdb);
        req[co..co + cdb.len()].copy_from_slice(cdb);
        mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        let desc = |addr, len: usize, flags: u32| {
            RawDescriptor::from(SplitDescriptor::new(addr, len as u32, flags as u16, 0))
        };
        let mut d = vec![desc(REQ, CMD_REQ_PI_SIZE, 0)];
        if !out.1.is_empty() {
            mem.write_slice(out.0, GuestAddress(PROT)).unwrap();
            mem.write_slice(out.1, GuestAddress(DATA)).unwrap();
            d.push(desc(PROT, out.0.len(), 0));
            d.push(desc(DATA, out.1.len(), 0));
        }
        d.push(desc(RESP, CMD_RESP_SIZE, VRING_DESC_F_WRITE));
        if data_in > 0 {
            // What the device does not write reads as 0xee.
            mem.write_slice(&[0xee; 0x2000], GuestAddress(PROT))
                .unwrap();
            d.push(desc(PROT, pi_in as usize, VRING_DESC_F_WRITE));
            d.push(desc(DATA, data_in as usize, VRING_DESC_F_WRITE));
        }
        d
    }

    #[test]
    fn pi_through_a_mock_queue() {
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, 16);
        let dev = device(Profile::BidiPi, &mem);
        dev.acked_features(Profile::BidiPi.features());
        let lun = Lun::new(
            Kind::Disk,
            Store::ram(1 << 20).unwrap(),
            1 << 20,
            "p".into(),
        );
        dev.targets.insert(0, 1, lun.with_pi());
        let tuples = |data: &[u8]| -> Vec<u8> {
            (5..7u32)
                .zip(data.chunks_exact(512))
                .flat_map(|(l, b)| crate::pi::tuple(crate::pi::crc_t10dif(b), 0, l))
                .collect()
        };
        let data: Vec<u8> = (0..1024u32).map(|i| (i * 5 + 1) as u8).collect();
        let prot = tuples(&data);
        let write = [0x2a, 0x20, 0, 0, 0, 5, 0, 0, 2, 0];
        let read = [0x28, 0x20, 0, 0, 0, 5, 0, 0, 2, 0];
        let run = |lun, cdb: &[u8], out: (&[u8], &[u8]), pi_in, data_in| {
            let d = pi_chain(&mem, lun, cdb, out, pi_in, data_in);
            let used = dev.command(vq.build_desc_chain(&d).unwrap()).used;
            (used, resp(&mem))
        };
        let stat = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (used, r) = run(1, &write, (&prot, &data), 0, 0);
        assert_eq!((used, r[10], r[11], le32(&r[4..])), (108, 0, 0, 0));
        assert_eq!(stat(&dev.stats.pi_checked), 2);
        // The tuples come back ahead of the data; used counts them both.
        let (used, r) = run(1, &read, (&[], &[]), 16, 1024);
        assert_eq!((used, r[10], le32(&r[4..])), (108 + 16 + 1024, 0, 0));
        let mut back = vec![0u8; 16 + 1024];
        mem.read_slice(&mut back[..16], GuestAddress(PROT)).unwrap();
        mem.read_slice(&mut back[16..], GuestAddress(DATA)).unwrap();
        assert_eq!((&back[..16], &back[16..]), (&prot[..], &data[..]));
        // A bad reference tag: CHECK CONDITION, nothing consumed.
        let other = [0xaa; 1024];
        let mut bad = tuples(&other);
        bad[15] ^= 1;
        let (used, r) = run(1, &write, (&bad, &other), 0, 0);
        assert_eq!((used, r[10], le32(&r[4..])), (108, 2, 1024));
        assert_eq!((r[12 + 2], r[12 + 12], r[12 + 13]), (0x0b, 0x10, 0x03));
        assert_eq!(stat(&dev.stats.pi_errors), 1);
        let (_, r) = run(1, &read, (&[], &[]), 16, 1024);
        mem.read_slice(&mut back[16..], GuestAddress(DATA)).unwrap();
        assert_eq!((r[10], &back[16..]), (0, &data[..]));
        // pi-corrupt: the first guard tag inverted, the data intact.
        dev.plan
            .lock()
            .unwrap()
            .set(Fault::PiCorrupt, Scope::Lun(0, 1), Some(1));
        let (_, r) = run(1, &read, (&[], &[]), 16, 1024);
        mem.read_slice(&mut back[..16], GuestAddress(PROT)).unwrap();
        mem.read_slice(&mut back[16..], GuestAddress(DATA)).unwrap();
        assert_eq!(
            (r[10], back[0], &back[1..16]),
            (0, prot[0] ^ 0xff, &prot[1..])
        );
        assert_eq!(&back[16..], &data[..]);
        // A LUN without PI: the tuples in are zeros, as ever.
        let (used, _) = run(0, &[0x28, 0x20, 0, 0, 0, 3, 0, 0, 1, 0], (&[], &[]), 8, 512);
        mem.read_slice(&mut back[..8], GuestAddress(PROT)).unwrap();
        assert_eq!((used, &back[..8]), (108 + 8 + 512, &[0u8; 8][..]));
        assert_eq!(stat(&dev.stats.pi_errors), 1);
        dev.reset_state();
        assert_eq!(stat(&dev.stats.pi_checked), 0);
    }

    #[test]
    fn lun_field_round_trip() {
        assert_eq!(decode_lun(&wire_lun(3, 300)), Some((3, 300)));
        assert_eq!(wire_lun(3, 5), [1, 3, 0, 5, 0, 0, 0, 0]);
        assert_eq!(wire_lun(3, 300), [1, 3, 0x41, 0x2c, 0, 0, 0, 0]);
        assert_eq!(decode_lun(&[1, 2, 0, 5, 0, 0, 0, 0]), Some((2, 5)));
        assert_eq!(decode_lun(&[0, 2, 0x40, 5, 0, 0, 0, 0]), None);
        assert_eq!(decode_lun(&[1, 2, 0x80, 5, 0, 0, 0, 0]), None);
        assert_eq!(decode_lun(&[1, 2, 0x40, 5, 0, 0, 0, 1]), None);
    }

    #[test]
    fn response_layout() {
        let sense = crate::scsi::fixed_sense(5, 0x20, 0);
        let a = Answer {
            sense_len: sense.len() as u32,
            resid: 0x1234,
            status: 2,
            response: 0,
            used: 0,
        };
        let b = encode_resp(&a, &sense);
        assert_eq!(&b[0..4], &[18, 0, 0, 0]);
        assert_eq!(&b[4..8], &[0x34, 0x12, 0, 0]);
        assert_eq!((b[10], b[11]), (2, 0));
        assert_eq!(b[12], 0x70);
    }
}
