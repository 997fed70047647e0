// SPDX-License-Identifier: GPL-2.0

//! Task management and resets: the control queue, TMFs and what the error
//! handler makes of their answers, and the device reset behind a host reset,
//! freeze and restore (`virtscsi_tmf()`, `virtscsi_device_reset()`,
//! `virtscsi_abort()` and the freeze/restore of `virtio_scsi.c`).

use super::*;

/// Control queue counters, under its lock.
#[derive(Clone, Copy, Default)]
pub(super) struct CtrlStats {
    /// Task management functions sent.
    pub(super) tmf_sent: u64,
    /// ... that the device answered with FUNCTION COMPLETE or SUCCEEDED.
    pub(super) tmf_ok: u64,
    /// ... that the device answered otherwise (or could not be sent).
    pub(super) tmf_failed: u64,
    /// ... that the device did not answer within `tmf_timeout`.
    pub(super) tmf_timed_out: u64,
    /// TMFs that succeeded while the device still held their command
    /// (reported to the error handler as failed).
    pub(super) tmf_still_held: u64,
    /// Command timeouts seen by `eh_timed_out`.
    pub(super) cmd_timeouts: u64,
    /// ... of which polling the request queue completed the command.
    pub(super) cmd_timeouts_reaped: u64,
    /// ... that got another timeout period (`timeout_policy` wait, or
    /// stall while younger than `stall_limit`), as C always does.
    pub(super) cmd_timeouts_waited: u64,
    /// ... that went to error handling (abort and escalation).
    pub(super) cmd_timeouts_escalated: u64,
    /// Device resets and re-initialisations: the error handler's host
    /// resets and those the device asked for (DEVICE_NEEDS_RESET).
    pub(super) host_resets: u64,
    /// Commands on the request queues when the device was reset: those it
    /// had answered complete as usual, the others with DID_RESET, so the
    /// midlayer retries them.
    pub(super) reset_cmds: u64,
    /// Configuration change notifications from the device.
    pub(super) config_changes: u64,
    /// ... that came with DEVICE_NEEDS_RESET set (C ignores both).
    pub(super) needs_reset: u64,
}

/// How a task management function ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TmfOutcome {
    /// FUNCTION COMPLETE or FUNCTION SUCCEEDED.
    Complete,
    /// Rejected, failed, not sent, or taken back by a device reset.
    Failed,
    /// No answer within `tmf_timeout`.
    TimedOut,
}

/// The control queue: task management functions.
pub(super) type CtrlQueue = Queue<ExchangeRequest<TMF_REQ_SIZE, TMF_RESP_SIZE>, CtrlStats>;

/// The memory of one task management function.
pub(super) type TmfSlot = ExchangeSlot<TMF_REQ_SIZE, TMF_RESP_SIZE>;

/// TMF memory kept for when allocating fails (C keeps a mempool of 64
/// commands, TMFs among them; the error handler sends one TMF at a time,
/// an `SG_SCSI_RESET` ioctl perhaps one more).
pub(super) const TMF_RESERVE: usize = 2;

impl VirtioScsi {
    /// Takes back the control requests the device answered and wakes their
    /// waiters (`virtscsi_complete_free()` for the control queue).
    pub(super) fn ctrl_done(&self) {
        loop {
            let done = {
                let mut guard = self.ctrl_vq.lock();
                guard.get_buf()
            };
            match done {
                Some((req, len)) => {
                    // The device answers control requests again.
                    self.tmf_unanswered.store(false, Ordering::Release);
                    req.complete(len)
                }
                None => return,
            }
        }
    }

    /// Sends a task management function and waits for the answer, at most
    /// `tmf_timeout` seconds (`virtscsi_tmf()`); then polls the request
    /// queues.
    pub(super) fn tmf(&self, tmf: Tmf, target: u32, lun: u64, tag: u64) -> EhResult {
        let timeout_ms = params::tmf_timeout_ms();
        let outcome = self.send_tmf(tmf, target, lun, tag, timeout_ms);
        if let Some(empty) = self.tmf_reserve.lock().iter_mut().find(|s| s.is_none()) {
            *empty = TmfSlot::new_noio().ok();
        }
        {
            let mut guard = self.ctrl_vq.lock();
            let stats = guard.data();
            match outcome {
                TmfOutcome::Complete => stats.tmf_ok += 1,
                TmfOutcome::Failed => stats.tmf_failed += 1,
                TmfOutcome::TimedOut => stats.tmf_timed_out += 1,
            }
        }
        if outcome == TmfOutcome::TimedOut {
            dev_warn!(
                &self.vdev,
                "{} to {}:{} not answered in {} ms\n",
                tmf.name(),
                target,
                lun,
                timeout_ms
            );
        }
        self.poll_requests();
        if outcome == TmfOutcome::Complete {
            EhResult::Success
        } else {
            EhResult::Failed
        }
    }

    /// A TMF that succeeded while the device still holds the command it
    /// was for has not done its work: the specification has the device
    /// give back every command a TMF ends before it answers the TMF (which
    /// `tmf()` then reaps). Finishing or retrying the command would let the
    /// device write into a command that was handed out again, so the error
    /// handler escalates instead, up to the host reset, whose device reset
    /// takes every command back. (C, which waits forever, never gets here.)
    pub(super) fn unless_still_held(
        &self,
        result: EhResult,
        tmf: Tmf,
        cmd: &EhCommand,
    ) -> EhResult {
        if result != EhResult::Success || !cmd.in_device() {
            return result;
        }
        self.still_held(tmf)
    }

    /// Counts a TMF that succeeded without the device giving back what it
    /// ended, warns once, and fails the handler.
    pub(super) fn still_held(&self, tmf: Tmf) -> EhResult {
        self.ctrl_vq.lock().data().tmf_still_held += 1;
        if !self.warned_still_held.swap(true, Ordering::Relaxed) {
            dev_warn!(
                &self.vdev,
                "{} succeeded but the device still holds a command it ended: escalating\n",
                tmf.name()
            );
        }
        EhResult::Failed
    }

    /// As [`Self::unless_still_held`], for every command a LUN or target
    /// reset ends (those `select` accepts by target id and LUN), not only
    /// the handler's: the midlayer finishes them all after a successful
    /// reset. A device may give them back just after its answer (another
    /// queue, another thread): they get up to 100 ms, reaped every 10 ms.
    pub(super) fn unless_any_held(
        &self,
        host: EhHost<'_, Self>,
        result: EhResult,
        tmf: Tmf,
        select: impl Fn(u32, u64) -> bool,
    ) -> EhResult {
        if result != EhResult::Success {
            return result;
        }
        let any_held = || {
            let mut found = false;
            host.for_each_busy(|cmd| {
                let (_, id, lun) = cmd.device().address();
                found = cmd.in_device() && select(id, lun);
                !found
            });
            found
        };
        for _ in 0..10 {
            if !any_held() {
                return result;
            }
            sync::msleep(10);
            self.poll_requests();
        }
        if any_held() {
            return self.still_held(tmf);
        }
        result
    }

    pub(super) fn send_tmf(
        &self,
        tmf: Tmf,
        target: u32,
        lun: u64,
        tag: u64,
        timeout_ms: u32,
    ) -> TmfOutcome {
        // A device that left a TMF unanswered for `tmf_timeout` answers no
        // other in time either: fail at once, so that the error handler
        // reaches the host reset (which takes the TMF back) in seconds, not
        // in `tmf_timeout` per timed-out command and reset step.
        if self.tmf_unanswered.load(Ordering::Acquire) {
            return TmfOutcome::Failed;
        }
        let Some(wire_lun) = protocol::encode_lun(target, lun) else {
            return TmfOutcome::Failed;
        };
        let mut req = [0u8; TMF_REQ_SIZE];
        protocol::write_tmf_req(&mut req, tmf, &wire_lun, tag);
        // No allocation that could wait for writeback to the disks under
        // recovery; if none is possible, the reserve (C: a mempool).
        let slot = match TmfSlot::new_noio() {
            Ok(slot) => slot,
            Err(_) => match self.tmf_reserve.lock().iter_mut().find_map(Option::take) {
                Some(slot) => slot,
                None => return TmfOutcome::Failed,
            },
        };
        let (exchange, request) = Exchange::new(slot, req, protocol::TMF_RESP_INIT);
        let mut guard = self.ctrl_vq.lock();
        if guard.add(request).is_err() {
            return TmfOutcome::Failed;
        }
        guard.data().tmf_sent += 1;
        guard.kick_prepare();
        drop(guard);
        match exchange.wait(timeout_ms) {
            Err(WaitError::TimedOut) => {
                self.tmf_unanswered.store(true, Ordering::Release);
                TmfOutcome::TimedOut
            }
            Err(WaitError::Cancelled) => TmfOutcome::Failed,
            Ok((resp, _)) if protocol::tmf_succeeded(&resp) => TmfOutcome::Complete,
            Ok(_) => TmfOutcome::Failed,
        }
    }

    /// Takes every virtqueue away from the device, which is reset first
    /// (`virtscsi_remove_vqs()` in C's freeze). Commands the device
    /// completed are completed as usual; those it had not are completed
    /// with DID_RESET for the midlayer to retry; unanswered TMFs end at
    /// once; event buffers are kept for the restore.
    pub(super) fn detach_queues(&self) {
        let mut filled = false;
        // The buffers come back under the event queue's lock, so they are
        // collected here and moved to the spare list after. Without room
        // for them they are freed, and the restore allocates new ones.
        let mut kept = KVec::with_capacity(EVENT_BUFS, GFP_KERNEL).unwrap_or_default();
        self.event_vq.detach(|buf, used| {
            // Completed but not handled: an event is lost.
            filled |= used.is_some();
            // Within the capacity reserved above: no allocation.
            let _ = kept.push(buf, GFP_ATOMIC);
        });
        {
            let mut guard = self.event_vq.lock();
            let state = guard.data();
            state.stats.posted = 0;
            state.resync |= filled;
            if state.spare.is_empty() {
                state.spare = kept;
            } else {
                for buf in kept {
                    let _ = state.spare.push(buf, GFP_ATOMIC);
                }
            }
        }
        self.ctrl_vq.detach(|req, used| match used {
            Some(len) => req.complete(len),
            None => drop(req),
        });
        // Every TMF is back: the next one is sent again.
        self.tmf_unanswered.store(false, Ordering::Release);
        for vq in self.req_vqs.iter() {
            let mut n = 0u64;
            vq.detach(|req, used| {
                let mut cmd = req.into_inner().into_command();
                n += 1;
                match used {
                    Some(len) => self.complete_cmd(cmd, len),
                    None => {
                        cmd.set_result(HostByte::Reset, 0);
                        cmd.done();
                    }
                }
            });
            vq.lock().data().completed += n;
            self.ctrl_vq.lock().data().reset_cmds += n;
        }
    }

    /// Creates the virtqueues again, sets DRIVER_OK (before any queue can
    /// take a request and notify), gives them to their queues and refills
    /// the event ring (`virtscsi_restore()`).
    pub(super) fn attach_queues(&self, dev: &virtio::DriverDevice<'_, Self>) -> Result {
        let infos = queue_infos(self.io_queues)?;
        let raw = dev.find_vqs(&infos, VQ_BASE)?;
        // The host's limits are those of probe (`sg_tablesize` cannot
        // change after `scsi_add_host()`): a request ring the device shrank
        // below the largest command would refuse that command for good.
        // Fail the restore before any queue is attached (the virtqueues are
        // deleted with `raw`), as for any other failed restore.
        if let Some((i, ring)) = smallest_request_ring(&raw) {
            if ring < self.ring_need {
                dev_err!(
                    dev,
                    "request queue {} has a ring of {} descriptors after the reset, a command needs {}: not re-initialised\n",
                    i,
                    ring,
                    self.ring_need
                );
                return Err(EINVAL);
            }
        }
        let mut raw = raw.into_iter();
        // The reset put the device's defaults back (C's `virtscsi_init()`
        // writes them on restore too).
        dev.cwrite32(config_offset::CDB_SIZE, protocol::CDB_SIZE)?;
        dev.cwrite32(config_offset::SENSE_SIZE, protocol::SENSE_SIZE)?;
        dev.ready();
        self.ctrl_vq.attach(raw.next().ok_or(EINVAL)?)?;
        self.event_vq.attach(raw.next().ok_or(EINVAL)?)?;
        for vq in self.req_vqs.iter() {
            vq.attach(raw.next().ok_or(EINVAL)?)?;
        }
        if self.events {
            if let Err(e) = self.refill_events(true) {
                // Best effort: the queues work; fewer buffers mean events
                // may be missed, which the device then reports.
                dev_warn!(dev, "event buffers not refilled after reset ({:?})\n", e);
            }
        }
        Ok(())
    }
}

impl VirtioScsi {
    /// Whether `vq`, found detached, is (or was meanwhile) re-attached by a
    /// reset rather than gone. A reset counts itself in `resetting` before
    /// it detaches and after it attaches again, so a queue seen detached
    /// while nothing counts was re-attached since (the count is read
    /// first, then the queue, then the count again, against a second reset
    /// starting in between).
    pub(super) fn reset_under_way(&self, vq: &ReqQueue) -> bool {
        self.resetting.load(Ordering::Acquire) != 0
            || vq.lock().is_attached()
            || self.resetting.load(Ordering::Acquire) != 0
    }

    /// Resets the device and initialises it again (freeze, then restore),
    /// one reset at a time. Commands that slip past the midlayer meanwhile
    /// wait (requeued) while the queues are detached; whatever the outcome,
    /// they stop waiting after it. Fails with `EAGAIN` where
    /// [`virtio::Device::reset_and_restore`] does (remove, bind or system
    /// sleep under way, or no `CONFIG_PM_SLEEP`).
    pub(super) fn reset_device(&self) -> Result {
        let _serial = self.reset_lock.lock();
        self.resetting.fetch_add(1, Ordering::AcqRel);
        let ret = match self.vdev.access() {
            Some(dev) => dev.reset_and_restore(),
            None => Err(ENODEV),
        };
        self.resetting.fetch_sub(1, Ordering::AcqRel);
        if ret.is_ok() {
            self.ctrl_vq.lock().data().host_resets += 1;
        }
        ret
    }

    /// A configuration change the device announced (`config_changed`, which
    /// C lacks), in process context. DEVICE_NEEDS_RESET: the device stopped
    /// and waits for a reset (QEMU, for one, then ignores its queues), so
    /// the commands it holds would only end through timeouts and the error
    /// handler; reset it now instead. Otherwise the changed fields are
    /// logged: the limits the host was registered with stay until the
    /// driver is bound again.
    pub(super) fn config_change(&self) {
        let Some(dev) = self.vdev.access() else {
            return;
        };
        let needs_reset = dev.needs_reset();
        drop(dev);
        {
            let mut guard = self.ctrl_vq.lock();
            let stats = guard.data();
            stats.config_changes += 1;
            stats.needs_reset += u64::from(needs_reset);
        }
        if needs_reset {
            // A device may set it again after every reset: it is reset
            // every time (the debugfs counters count them all), and the
            // log gets one report of a reset per 5 s.
            let log = self.needs_reset_msgs.allow();
            if log {
                dev_warn!(&self.vdev, "device needs reset: resetting it\n");
            }
            match self.reset_device() {
                Ok(()) if log => dev_info!(&self.vdev, "device reset and re-initialised\n"),
                Ok(()) => {}
                // Rare, and it leaves the device to error handling: always
                // reported.
                Err(e) => dev_err!(
                    &self.vdev,
                    "device needs reset but cannot be reset now ({:?}): left to error handling\n",
                    e
                ),
            }
            return;
        }
        let Some(Ok(mut cfg)) = self.vdev.access().map(|dev| read_config(&dev)) else {
            return;
        };
        let mut seen = self.reset_lock.lock();
        // The device may report its defaults for the sizes the driver sets.
        cfg.cdb_size = seen.cdb_size;
        cfg.sense_size = seen.sense_size;
        for (name, old, new) in seen.changes(&cfg) {
            dev_info!(
                &self.vdev,
                "config change: {} {} -> {} (applies when the driver is bound again)\n",
                name,
                old,
                new
            );
        }
        *seen = cfg;
    }
}
