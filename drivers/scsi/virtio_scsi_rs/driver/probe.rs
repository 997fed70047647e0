// SPDX-License-Identifier: GPL-2.0

//! The device's setup and teardown: probe, scan, freeze and restore,
//! remove, configuration changes and the queue callbacks
//! (`virtscsi_probe()`, `virtscsi_init()`, `virtscsi_remove()`,
//! `virtscsi_freeze()`, `virtscsi_restore()` of `virtio_scsi.c`).

use super::*;

/// The virtqueues in device order: control, event, then the request
/// queues (interrupt-driven ones first, then polled ones).
pub(super) fn queue_infos(io_queues: [u32; 3]) -> Result<KVec<QueueInfo>> {
    let queue = |name, callback| QueueInfo { name, callback };
    let num_queues = io_queues.iter().sum::<u32>();
    let mut infos = KVec::with_capacity(num_queues as usize + VQ_BASE as usize, GFP_KERNEL)?;
    infos.push(queue(c_str!("control"), true), GFP_KERNEL)?;
    infos.push(queue(c_str!("event"), true), GFP_KERNEL)?;
    for i in 0..num_queues {
        let info = if i < io_queues[0] + io_queues[1] {
            queue(c_str!("request"), true)
        } else {
            queue(c_str!("request_poll"), false)
        };
        infos.push(info, GFP_KERNEL)?;
    }
    Ok(infos)
}

/// The smallest request ring among the virtqueues of one `find_vqs`
/// (control and event first, then the request queues, polled ones
/// included): its index among the request queues, and its size.
pub(super) fn smallest_request_ring(raw: &[virtio::RawQueue]) -> Option<(usize, u32)> {
    protocol::smallest_ring(
        raw.iter()
            .skip(VQ_BASE as usize)
            .map(virtio::RawQueue::vring_size),
    )
}

/// Reads the whole configuration space.
pub(super) fn read_config(dev: &virtio::Device) -> Result<Config> {
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
    fn probe(dev: &virtio::DriverDevice<'_, Self>) -> Result<Self::Data> {
        if !dev.has_config_access() {
            dev_err!(dev, "probe failure: config access disabled\n");
            return Err(EINVAL);
        }
        let cfg = read_config(dev)?;
        let indirect = dev.has_feature(virtio::RING_F_INDIRECT_DESC);
        let t10_pi = cfg!(CONFIG_BLK_DEV_INTEGRITY) && dev.has_feature(feature::T10_PI);
        // The queue count comes first; the ring sizes are known after.
        let early = protocol::host_limits(&cfg, cpu::nr_cpu_ids(), 3, indirect, t10_pi);
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

        let infos = queue_infos(io_queues)?;
        let raw = dev.find_vqs(&infos, VQ_BASE)?;
        // Each request ring has a size of its own, and blk-mq may send a
        // command to any of them: the limits come from the smallest. A ring
        // that cannot take even the smallest command with data would
        // refuse it for good (requeued forever, its timer stopped).
        let (ring_index, ring) = smallest_request_ring(&raw).ok_or(EINVAL)?;
        let limits = protocol::host_limits(&cfg, cpu::nr_cpu_ids(), ring, indirect, t10_pi);
        if ring < limits.ring_need {
            dev_err!(
                dev,
                "probe failure: request queue {} has a ring of {} descriptors, a command needs {} without indirect descriptors\n",
                ring_index,
                ring,
                limits.ring_need
            );
            return Err(EINVAL);
        }
        warn_clamps(dev, &limits, 0);
        let mut raw = raw.into_iter();
        let ctrl_vq = KBox::pin_init(
            Queue::new(raw.next().ok_or(EINVAL)?, CtrlStats::default()),
            GFP_KERNEL,
        )?;
        let events = EventState {
            spare: KVec::with_capacity(EVENT_BUFS, GFP_KERNEL)?,
            ..Default::default()
        };
        let event_vq = KBox::pin_init(Queue::new(raw.next().ok_or(EINVAL)?, events), GFP_KERNEL)?;
        let mut req_vqs = KVec::with_capacity(num_queues as usize, GFP_KERNEL)?;
        for r in raw {
            let vq = KBox::pin_init(Queue::new(r, VqStats::default()), GFP_KERNEL)?;
            req_vqs.push(vq, GFP_KERNEL)?;
        }

        dev.cwrite32(config_offset::CDB_SIZE, protocol::CDB_SIZE)?;
        dev.cwrite32(config_offset::SENSE_SIZE, protocol::SENSE_SIZE)?;
        let tmf_reserve = [
            Some(TmfSlot::new(GFP_KERNEL)?),
            Some(TmfSlot::new(GFP_KERNEL)?),
        ];
        let seen = Config {
            cdb_size: protocol::CDB_SIZE,
            sense_size: protocol::SENSE_SIZE,
            ..cfg
        };

        let vscsi = VirtioScsi {
            req_vqs,
            io_queues,
            vdev: dev.get(),
            t10_pi,
            events: dev.has_feature(feature::HOTPLUG) || dev.has_feature(feature::CHANGE),
            event_buf_len: limits.event_info_size,
            resetting: AtomicU32::new(0),
            reset_lock: KBox::pin_init(new_mutex!(seen), GFP_KERNEL)?,
            config_event: AtomicBool::new(false),
            needs_reset_msgs: super::params::Ratelimit::new(5000),
            ctrl_vq,
            event_vq,
            sg_tablesize: u32::from(limits.sg_tablesize),
            ring_need: limits.ring_need,
            warned_bad_resp: AtomicBool::new(false),
            warned_still_held: AtomicBool::new(false),
            warned_broken_ring: AtomicBool::new(false),
            tmf_unanswered: AtomicBool::new(false),
            tmf_reserve: KBox::pin_init(new_mutex!(tmf_reserve), GFP_KERNEL)?,
        };
        // Event buffers go on the ring now and are announced in `scan`,
        // after DRIVER_OK; with HOTPLUG or CHANGE (C: HOTPLUG only). An
        // allocation failure fails the probe; nothing is leaked.
        if vscsi.events {
            vscsi.refill_events(false)?;
        }
        let mut host = scsi::HostBuilder::alloc(&TEMPLATE, vscsi)?;
        host.set_limits(&scsi::Limits {
            can_queue: limits.can_queue,
            cmd_per_lun: limits.cmd_per_lun,
            sg_tablesize: limits.sg_tablesize,
            sg_prot_tablesize: limits.sg_prot_tablesize,
            max_sectors: limits.max_sectors,
            max_id: limits.max_id,
            max_lun: limits.max_lun,
            max_channel: 0,
            max_cmd_len: protocol::CDB_SIZE as u16,
            nr_hw_queues: num_queues,
            nr_maps: if num_poll > 0 { 3 } else { 1 },
        })?;
        if t10_pi {
            host.set_t10_pi();
        }
        let host = host.add(dev)?;
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
        host.data().event_vq.lock().kick_prepare();
        host.scan();
    }

    /// `virtscsi_freeze()`, for suspend and for the host reset: every
    /// queue gives up its virtqueue after the device is reset (events are
    /// no longer taken).
    fn freeze(_dev: &virtio::Device, host: &scsi::Host<VirtioScsi>) -> Result {
        host.data().detach_queues();
        Ok(())
    }

    /// `virtscsi_restore()`: new virtqueues, DRIVER_OK, the event ring
    /// refilled; if events were lost, the work rescans.
    fn restore(dev: &virtio::DriverDevice<'_, Self>, host: &scsi::Host<VirtioScsi>) -> Result {
        let vscsi = host.data();
        vscsi.attach_queues(dev)?;
        if vscsi.event_vq.lock().data().resync {
            host.queue_work(HostWork::Events);
        }
        Ok(())
    }

    /// `virtscsi_remove()`: stop events (no event is handled once this
    /// starts), remove the host (waits for in-flight commands). The virtio
    /// abstraction then resets the device and frees the host, whose queues
    /// delete the virtqueues.
    fn remove(_dev: &virtio::Device, host: &scsi::Host<VirtioScsi>) {
        host.data().stop_events();
        // Disables the work (waiting for a running instance) first.
        host.remove();
    }

    /// The device changed its configuration or status (C has no
    /// `config_changed`): handled by the work, in process context.
    fn config_changed(_dev: &virtio::Device, host: &scsi::Host<VirtioScsi>) {
        host.data().config_event.store(true, Ordering::Release);
        host.queue_work(HostWork::Recovery);
    }

    /// `virtscsi_req_done()` and friends, in hard-IRQ context.
    fn vq_done(host: &scsi::Host<VirtioScsi>, index: u32) {
        let vscsi = host.data();
        // Request queues first: nearly every interrupt is theirs.
        if let Some(i) = index.checked_sub(VQ_BASE) {
            if let Some(vq) = vscsi.req_vqs.get(i as usize) {
                vscsi.reap_interrupt(vq);
            }
        } else if index == 0 {
            vscsi.ctrl_done();
        } else {
            host.queue_work(HostWork::Events);
        }
    }
}
