// SPDX-License-Identifier: GPL-2.0

//! SCSI hosts (`struct Scsi_Host`): allocation with the driver's data,
//! limits, adding and removing, and the borrowed host callbacks get.
//!
//! C header: [`include/scsi/scsi_host.h`](srctree/include/scsi/scsi_host.h)

use super::*;
use crate::abstractions::bindings;
use crate::abstractions::device::AsRawDevice;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use kernel::error::to_result;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::types::Opaque;

/// Limits of a host, set on a [`HostBuilder`] before it is added (fields of `struct Scsi_Host`).
///
/// # Examples
///
/// The limits derived from the device's configuration, set before the host is
/// added:
///
/// ```ignore
/// host.set_limits(&scsi::Limits {
///     can_queue: limits.can_queue,
///     cmd_per_lun: limits.cmd_per_lun,
///     sg_tablesize: limits.sg_tablesize,
///     sg_prot_tablesize: limits.sg_prot_tablesize,
///     max_sectors: limits.max_sectors,
///     max_id: limits.max_id,
///     max_lun: limits.max_lun,
///     max_channel: 0,
///     max_cmd_len: 32,
///     nr_hw_queues: num_queues,
///     // Default, read and poll maps when there are poll queues.
///     nr_maps: if num_poll > 0 { 3 } else { 1 },
/// })?;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    /// `can_queue`: commands in flight on one hardware queue (an `int`:
    /// [`HostBuilder::set_limits`] refuses more than `i32::MAX`).
    pub(crate) can_queue: u32,
    /// `cmd_per_lun`: default queue depth of a device (a `short`:
    /// [`HostBuilder::set_limits`] refuses more than `i16::MAX`).
    pub(crate) cmd_per_lun: u32,
    /// `sg_tablesize`: segments per command.
    pub(crate) sg_tablesize: u16,
    /// `sg_prot_tablesize`: protection information segments per command,
    /// 0 for the midlayer's default (65535 once
    /// [`HostBuilder::set_t10_pi`] advertises DIX). Otherwise at least
    /// `sg_tablesize` ([`HostBuilder::set_limits`] refuses less: the
    /// midlayer's `scsi_init_limits()` has a `BUG_ON()` for it).
    pub(crate) sg_prot_tablesize: u16,
    /// `max_sectors`: 512-byte sectors per command.
    pub(crate) max_sectors: u32,
    /// `max_id`: one more than the highest target id.
    pub(crate) max_id: u32,
    /// `max_lun`: one more than the highest LUN.
    pub(crate) max_lun: u64,
    /// `max_channel`: the highest channel.
    pub(crate) max_channel: u32,
    /// `max_cmd_len`: longest CDB.
    pub(crate) max_cmd_len: u16,
    /// `nr_hw_queues`: blk-mq hardware queues.
    pub(crate) nr_hw_queues: u32,
    /// `nr_maps`: queue maps (1, or up to 3 with read and poll queues).
    pub(crate) nr_maps: u32,
}

/// The two work items of a host ([`Host::queue_work`],
/// [`HostTemplate::work`]). They run
/// independently of each other (the system workqueue runs them on
/// different workers when both are due), so what one waits for, a scan
/// blocked on a device that stopped answering say, does not hold up the
/// other, which can be what makes the device answer again.
///
/// # Examples
///
/// Hot-plug events (which scan, and may wait for the device) on one, a
/// configuration change (which may reset the device) on the other:
///
/// ```ignore
/// fn config_changed(_dev: &virtio::Device, host: &scsi::Host<VirtioScsi>) {
///     host.data().config_event.store(true, Ordering::Release);
///     host.queue_work(HostWork::Recovery);
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostWork {
    /// Work that may wait for the device: events, scans.
    Events = 0,
    /// Work that must not wait behind the other: recovering the device.
    Recovery = 1,
}

impl HostWork {
    /// Every work item, in index order.
    const ALL: [HostWork; 2] = [HostWork::Events, HostWork::Recovery];

    /// The number of work items.
    pub(super) const COUNT: usize = Self::ALL.len();

    /// The work item at index `i`, which must be below [`Self::COUNT`]
    /// (callers check it at build time).
    pub(super) const fn from_index(i: usize) -> Self {
        Self::ALL[i]
    }
}

// `ALL` lists every work item, in index order: `from_index`, `work_ptr`
// (which indexes `works` by discriminant) and the work functions installed
// per index (`Adapter::work::<N>`) rely on it. A variant added to the enum
// fails to build here until it is added to this match, to `ALL` and to
// `HostBuilder::alloc`.
const _: () = {
    match HostWork::Events {
        HostWork::Events | HostWork::Recovery => {}
    }
    assert!(HostWork::COUNT == 2);
    let mut i = 0;
    while i < HostWork::COUNT {
        assert!(HostWork::ALL[i] as usize == i);
        i += 1;
    }
};

/// What a [`Host`] keeps in `hostdata`: the driver's data first, then the
/// host's work items, indexed by [`HostWork`] (initialised once, at
/// allocation).
#[repr(C)]
pub(super) struct HostPriv<D> {
    data: D,
    pub(super) works: [Opaque<bindings::work_struct>; HostWork::COUNT],
}

/// A SCSI host being configured: allocated with its private data, not yet
/// added to the midlayer (`scsi_host_alloc()` done, `scsi_add_host()` not).
/// Limits and protection capabilities are set here, when the midlayer reads
/// none of them; [`HostBuilder::add`] turns it into a [`Host`]. Dropping it
/// drops the private data and puts the host.
///
/// # Invariants
///
/// `shost` was allocated by `scsi_host_alloc` from `template` with room for
/// a `HostPriv<T::HostData>`, whose data is initialised and pinned in its
/// `hostdata` and whose work items are initialised (not queued: the host
/// is not added); this value owns the reference from `scsi_host_alloc`, and the
/// host is not added.
///
/// # Examples
///
/// Configure, then add; a builder dropped before `add` frees the host:
///
/// ```ignore
/// let mut host = scsi::HostBuilder::alloc(&TEMPLATE, vscsi)?;
/// host.set_limits(&limits)?;
/// if t10_pi {
///     host.set_t10_pi();
/// }
/// let host: scsi::Host<VirtioScsi> = host.add(dev)?;
/// dev_info!(dev, "host{}: added\n", host.host_no());
/// ```
pub(crate) struct HostBuilder<T: HostTemplate> {
    shost: NonNull<bindings::Scsi_Host>,
    template: &'static Template<T>,
}

/// A SCSI host (`struct Scsi_Host`), added to the midlayer, with its
/// private data of type `T::HostData` stored inline; made by
/// [`HostBuilder::add`].
///
/// Dropping the host removes it from the midlayer (unless [`Host::remove`]
/// did), drops the private data and puts the host reference.
///
/// # Invariants
///
/// As for [`HostBuilder`], and the host was added to the midlayer; it stays
/// added until `removed` is set (by [`Host::remove`], once). Once
/// `work_disabled` is set, [`Host::queue_work`] no longer queues the work
/// items and `disable_work_sync()` has run or is running on each: it
/// cancels what a running instance queued meanwhile (a work that asks to
/// run again) and waits for that instance, after which nothing can queue
/// the item. `debugfs` is null or the
/// host's directory, created once.
///
/// # Examples
///
/// Kept as a virtio driver's data: scanned after `DRIVER_OK`, its work queued
/// from interrupts, removed before the data goes:
///
/// ```ignore
/// fn scan(_dev: &virtio::Device, host: &scsi::Host<VirtioScsi>) {
///     host.scan();
/// }
///
/// fn config_changed(_dev: &virtio::Device, host: &scsi::Host<VirtioScsi>) {
///     host.data().config_event.store(true, Ordering::Release);
///     host.queue_work(HostWork::Recovery); // runs `HostTemplate::work` in process context
/// }
///
/// fn remove(_dev: &virtio::Device, host: &scsi::Host<VirtioScsi>) {
///     host.remove(); // the work is disabled first
/// }
/// ```
pub(crate) struct Host<T: HostTemplate> {
    shost: NonNull<bindings::Scsi_Host>,
    /// The work item was disabled for good (`disable_work_sync()`).
    work_disabled: AtomicBool,
    /// The host was removed from the midlayer (or is being removed).
    removed: AtomicBool,
    template: &'static Template<T>,
    /// The host's debugfs directory, or null.
    debugfs: AtomicPtr<bindings::dentry>,
}

// SAFETY: The host can be configured and released from any thread; its data
// is `Send + Sync`.
unsafe impl<T: HostTemplate> Send for HostBuilder<T> {}
// SAFETY: The host can be removed and released from any thread; its data is
// `Send + Sync`.
unsafe impl<T: HostTemplate> Send for Host<T> {}
// SAFETY: Shared access only reads the private data, which is `Sync`.
unsafe impl<T: HostTemplate> Sync for Host<T> {}

/// The `HostPriv` in a host's private area.
///
/// # Safety
///
/// `shost` is a live host allocated with room for a `HostPriv<D>` in its
/// `hostdata` (as [`HostBuilder::alloc`] allocates it).
unsafe fn priv_ptr<D>(shost: NonNull<bindings::Scsi_Host>) -> *mut HostPriv<D> {
    // SAFETY: The host is live (caller contract), so projecting to its
    // trailing `hostdata` array stays within its allocation.
    unsafe { core::ptr::addr_of_mut!((*shost.as_ptr()).hostdata) }.cast()
}

/// Work item `which` in a host's `HostPriv<D>`.
///
/// # Safety
///
/// As for [`priv_ptr`].
unsafe fn work_ptr<D>(
    shost: NonNull<bindings::Scsi_Host>,
    which: HostWork,
) -> *mut bindings::work_struct {
    // SAFETY: The private area is a `HostPriv<D>` of a live host (caller
    // contract), so its `works` field is within the allocation, and so is
    // each of its `HostWork::COUNT` elements; `which as usize` is one of
    // them, as every variant's discriminant is its index in `HostWork::ALL`
    // (checked at build time beside `HostWork`).
    Opaque::raw_get(unsafe {
        core::ptr::addr_of!((*priv_ptr::<D>(shost)).works)
            .cast::<Opaque<bindings::work_struct>>()
            .add(which as usize)
    })
}

/// Drops the private data of a host that is not added (any more) and puts
/// the host.
///
/// # Safety
///
/// `shost` is a host as in the invariants of [`HostBuilder`], not added to
/// the midlayer (never, or removed), whose callbacks the midlayer and the
/// transport no longer call; the caller owns its reference and gives it up.
unsafe fn release<T: HostTemplate>(shost: NonNull<bindings::Scsi_Host>) {
    // SAFETY: The data is initialised and nothing uses it any more (the
    // function's safety requirements).
    unsafe { core::ptr::drop_in_place(Host::<T>::data_ptr(shost)) };
    // SAFETY: The caller owns the reference from `scsi_host_alloc`.
    unsafe { bindings::scsi_host_put(shost.as_ptr()) };
}

impl<T: HostTemplate> HostBuilder<T> {
    /// Allocates a host from `template` (`scsi_host_alloc()`) and
    /// initialises its private data in place with `init`.
    pub(crate) fn alloc(
        template: &'static Template<T>,
        init: impl PinInit<T::HostData, Error>,
    ) -> Result<Self> {
        // `hostdata` is aligned to `unsigned long`.
        build_assert!(align_of::<HostPriv<T::HostData>>() <= align_of::<kernel::ffi::c_ulong>());
        let sht = template.as_raw();
        let size = kernel::ffi::c_int::try_from(size_of::<HostPriv<T::HostData>>())?;
        // SAFETY: `sht` is a complete template that lives for `'static`.
        let shost = NonNull::new(unsafe { bindings::scsi_host_alloc(sht, size) }).ok_or(ENOMEM)?;
        // SAFETY: `shost` was just allocated with room for a `HostPriv`.
        let data = unsafe { Host::<T>::data_ptr(shost) };
        // SAFETY: `data` points to `size` bytes of suitably aligned memory
        // owned by the new host, which never moves.
        if let Err(e) = unsafe { init.__pinned_init(data) } {
            // SAFETY: We own the only reference; the data is not initialised.
            unsafe { bindings::scsi_host_put(shost.as_ptr()) };
            return Err(e);
        }
        // SAFETY: The work items lie in the new host's private area (a
        // `HostPriv`), which never moves; each is initialised once, here.
        unsafe {
            bindings::vscsi_init_work(
                work_ptr::<T::HostData>(shost, HostWork::Events),
                Some(Adapter::<T>::work::<0>),
            );
            bindings::vscsi_init_work(
                work_ptr::<T::HostData>(shost, HostWork::Recovery),
                Some(Adapter::<T>::work::<1>),
            );
        };
        // INVARIANT: The host is allocated from `T`'s template, its data and
        // work items are initialised, and it is not added.
        Ok(Self { shost, template })
    }

    /// Sets the host's limits. Fails with `EINVAL` for a value its field
    /// cannot hold, or a nonzero `sg_prot_tablesize` below `sg_tablesize`.
    pub(crate) fn set_limits(&mut self, l: &Limits) -> Result {
        if l.sg_prot_tablesize != 0 && l.sg_prot_tablesize < l.sg_tablesize {
            return Err(EINVAL);
        }
        let sh = self.shost.as_ptr();
        // SAFETY: The host is valid and not added (type invariant), so the
        // midlayer does not read these fields concurrently.
        unsafe {
            (*sh).can_queue = i32::try_from(l.can_queue)?;
            (*sh).cmd_per_lun = i16::try_from(l.cmd_per_lun)?;
            (*sh).sg_tablesize = l.sg_tablesize;
            (*sh).sg_prot_tablesize = l.sg_prot_tablesize;
            (*sh).max_sectors = l.max_sectors;
            (*sh).max_id = l.max_id;
            (*sh).max_lun = l.max_lun;
            (*sh).max_channel = l.max_channel;
            (*sh).max_cmd_len = l.max_cmd_len;
            (*sh).nr_hw_queues = l.nr_hw_queues;
            (*sh).nr_maps = l.nr_maps.clamp(1, bindings::hctx_type_HCTX_MAX_TYPES);
        }
        Ok(())
    }

    /// Advertises T10 protection: DIF and DIX types 1 to 3 with a CRC guard
    /// (`scsi_host_set_prot()`, `scsi_host_set_guard()`).
    pub(crate) fn set_t10_pi(&mut self) {
        let caps = bindings::scsi_host_prot_capabilities_SHOST_DIF_TYPE1_PROTECTION
            | bindings::scsi_host_prot_capabilities_SHOST_DIF_TYPE2_PROTECTION
            | bindings::scsi_host_prot_capabilities_SHOST_DIF_TYPE3_PROTECTION
            | bindings::scsi_host_prot_capabilities_SHOST_DIX_TYPE1_PROTECTION
            | bindings::scsi_host_prot_capabilities_SHOST_DIX_TYPE2_PROTECTION
            | bindings::scsi_host_prot_capabilities_SHOST_DIX_TYPE3_PROTECTION;
        let sh = self.shost.as_ptr();
        // SAFETY: The host is valid and not added (type invariant), so the
        // midlayer does not read these fields concurrently.
        unsafe {
            (*sh).prot_capabilities = caps;
            (*sh).prot_guard_type = bindings::scsi_host_guard_type_SHOST_DIX_GUARD_CRC as u8;
        }
    }

    /// Adds the host to the midlayer under `parent` (`scsi_add_host()`). On
    /// failure the host is released (its data dropped).
    pub(crate) fn add(self, parent: &impl AsRawDevice) -> Result<Host<T>> {
        // SAFETY: The host is valid (type invariant); `parent` is a live
        // device (`AsRawDevice` contract) that outlives the host's
        // registration, which ends in `Host::remove` or its drop.
        to_result(unsafe {
            bindings::vscsi_scsi_add_host(self.shost.as_ptr(), parent.as_raw_device())
        })?;
        let this = core::mem::ManuallyDrop::new(self);
        // INVARIANT: The host is added; the builder's reference moves to it.
        let mut host = Host {
            shost: this.shost,
            work_disabled: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            template: this.template,
            debugfs: AtomicPtr::new(core::ptr::null_mut()),
        };
        host.create_debugfs();
        Ok(host)
    }
}

impl<T: HostTemplate> Drop for HostBuilder<T> {
    fn drop(&mut self) {
        // SAFETY: The host was never added (type invariant), so neither the
        // midlayer nor its work item use the data; we own the reference.
        unsafe { release::<T>(self.shost) };
    }
}

impl<T: HostTemplate> Host<T> {
    /// The driver's data in a host's private area.
    ///
    /// # Safety
    ///
    /// As for [`priv_ptr`], with `D = T::HostData`.
    pub(super) unsafe fn data_ptr(shost: NonNull<bindings::Scsi_Host>) -> *mut T::HostData {
        // SAFETY: The private area is a `HostPriv<T::HostData>` of a live
        // host (caller contract).
        unsafe { core::ptr::addr_of_mut!((*priv_ptr::<T::HostData>(shost)).data) }
    }

    /// Queues the host's work item `which` ([`HostTemplate::work`]) on
    /// the freezable system workqueue, unless it is pending already or the
    /// host is being removed. Callable from interrupt context.
    pub(crate) fn queue_work(&self, which: HostWork) -> bool {
        if self.removed.load(Ordering::Acquire) || self.work_disabled.load(Ordering::Acquire) {
            return false;
        }
        // SAFETY: The work item is initialised (type invariant); once it is
        // disabled, queueing is a no-op, and it is disabled before the host
        // data it reaches goes away.
        unsafe { bindings::vscsi_queue_work_freezable(work_ptr::<T::HostData>(self.shost, which)) }
    }

    /// Stops the host's work items for good: waits for running instances
    /// and makes later [`Host::queue_work`] calls no-ops
    /// (`disable_work_sync()`, which may run more than once). Each item
    /// may queue the other until it is disabled, and the second is
    /// disabled after the first: neither runs afterwards.
    fn disable_work(&self) {
        self.work_disabled.store(true, Ordering::Release);
        for which in HostWork::ALL {
            // SAFETY: The work items are initialised (type invariant).
            unsafe { bindings::disable_work_sync(work_ptr::<T::HostData>(self.shost, which)) };
        }
    }

    /// Returns the host's private data.
    pub(crate) fn data(&self) -> &T::HostData {
        // SAFETY: By the type invariant the data is initialised and lives
        // as long as the host reference we own.
        unsafe { &*Self::data_ptr(self.shost) }
    }

    /// Returns the host number (`host_no`, as in `hostN`).
    pub(crate) fn host_no(&self) -> u32 {
        // SAFETY: By the type invariant the host is valid.
        unsafe { (*self.shost.as_ptr()).host_no }
    }

    /// Creates `host<N>/<T::DEBUGFS_FILE>` under the template's debugfs
    /// directory.
    fn create_debugfs(&mut self) {
        let Some(file) = T::DEBUGFS_FILE else {
            return;
        };
        if !T::HAS_DEBUGFS_SHOW {
            return;
        }
        let root = self.template.debugfs_get();
        if root.is_null() {
            return;
        }
        let Ok(name) = CString::try_from_fmt(kernel::fmt!("host{}", self.host_no())) else {
            // No memory for the name: the host works without its file.
            self.template.debugfs_put();
            return;
        };
        // SAFETY: `name` is NUL-terminated and `root` is the template's
        // directory, which stays until `remove` gives it back
        // (`debugfs_put`).
        let dir = unsafe { bindings::debugfs_create_dir(name.as_char_ptr(), root) };
        if dir.is_null() {
            // Not a value debugfs returns (it gives error pointers), but
            // `remove` would not give the directory back for it.
            self.template.debugfs_put();
            return;
        }
        // The file is removed with `dir` in `remove`, before the host goes
        // away; `debugfs_read` only runs while it exists.
        // SAFETY: The host is added: `shost_gendev` is registered and can
        // carry device-managed memory for the file's entry.
        unsafe {
            bindings::debugfs_create_devm_seqfile(
                core::ptr::addr_of_mut!((*self.shost.as_ptr()).shost_gendev),
                file.as_char_ptr(),
                dir,
                Some(Adapter::<T>::debugfs_read),
            )
        };
        *self.debugfs.get_mut() = dir;
    }

    /// Scans the host for devices (`scsi_scan_host()`). Process context
    /// only: the host is also borrowed by interrupt handlers (a virtio
    /// driver's `vq_done`), where a scan must not run; a kernel with
    /// `CONFIG_DEBUG_ATOMIC_SLEEP` reports such a call (`might_sleep()`).
    pub(crate) fn scan(&self) {
        // SAFETY: Plain call.
        unsafe { bindings::vscsi_might_sleep() };
        if !self.removed.load(Ordering::Acquire) {
            // SAFETY: The host was added and stays allocated while `self` is
            // borrowed. A `remove` may be under way on another thread: the
            // midlayer's operations check the host's state (a scan does
            // nothing once `scsi_remove_host()` has started).
            unsafe { HostRef::<T>::from_raw(self.shost.as_ptr()) }.scan();
        }
    }

    /// Removes the host from the midlayer (`scsi_remove_host()`): the work
    /// stops first, then devices go away, in-flight commands complete
    /// first. Idempotent; takes `&self`, so interrupt handlers may keep
    /// borrowing the host meanwhile (they find it removed).
    pub(crate) fn remove(&self) {
        self.disable_work();
        let dir = self.debugfs.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !dir.is_null() {
            // SAFETY: The directory was created in `add`; the swap above
            // gives it to one caller only; removal waits for readers of its
            // files.
            unsafe { bindings::debugfs_remove(dir) };
            self.template.debugfs_put();
        }
        if !self.removed.swap(true, Ordering::AcqRel) {
            // SAFETY: The host is valid and added until now (type
            // invariant); the swap above lets one caller only remove it.
            unsafe { bindings::scsi_remove_host(self.shost.as_ptr()) };
        }
    }
}

impl<T: HostTemplate> Drop for Host<T> {
    fn drop(&mut self) {
        self.remove();
        // SAFETY: The host is removed. With the host removed the midlayer
        // calls none of its callbacks and its work is disabled; whoever owns
        // the host (the virtio abstraction's remove) has stopped the
        // transport's callbacks before dropping it, and `self` is the last
        // owner of the reference.
        unsafe { release::<T>(self.shost) };
    }
}

/// A borrowed, added host, as given to [`HostTemplate::work`] and
/// [`HostTemplate::debugfs_show`]: the host's data and the midlayer's scan
/// and device operations, which may sleep. The error handlers get an
/// [`EhHost`] instead, without them (they would deadlock there).
///
/// # Invariants
///
/// `shost` is a live host allocated by [`HostBuilder::alloc`] for `T` and
/// added to the midlayer, for `'a`; its removal may be under way (the
/// midlayer's operations check the host's state for that). The borrower runs
/// in process context, outside the host's error handling, and may sleep.
///
/// # Examples
///
/// In the host's work, handling hot-plug events:
///
/// ```ignore
/// fn handle_event(host: HostRef<'_, VirtioScsi>, ev: protocol::Event) {
///     if ev.missed {
///         host.scan();
///     }
///     match ev.action {
///         EventAction::ScanTarget { target } => host.scan_target(0, target),
///         EventAction::AddDevice { target, lun } => {
///             if let Err(e) = host.add_device(0, target, lun) {
///                 dev_info!(&host.data().vdev, "adding 0:{}:{} failed ({:?})\n", target, lun, e);
///             }
///         }
///         EventAction::RescanDevice { target, lun } => {
///             host.with_device(0, target, lun, HeldDevice::rescan);
///         }
///         _ => {}
///     }
/// }
/// ```
pub(crate) struct HostRef<'a, T: HostTemplate> {
    shost: NonNull<bindings::Scsi_Host>,
    _p: PhantomData<&'a T>,
}

impl<T: HostTemplate> Clone for HostRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: HostTemplate> Copy for HostRef<'_, T> {}

/// `SCAN_WILD_CARD`: every LUN.
pub(super) const SCAN_WILD_CARD: u64 = !0;

impl<'a, T: HostTemplate> HostRef<'a, T> {
    /// # Safety
    ///
    /// `shost` must satisfy the type invariant for `'a`.
    pub(super) unsafe fn from_raw(shost: *mut bindings::Scsi_Host) -> Self {
        // INVARIANT: The caller guarantees it.
        Self {
            // SAFETY: The caller passes a live host.
            shost: unsafe { NonNull::new_unchecked(shost) },
            _p: PhantomData,
        }
    }

    /// Returns the host's private data.
    pub(crate) fn data(&self) -> &'a T::HostData {
        // SAFETY: The data lives as long as the host (type invariant).
        unsafe { &*Host::<T>::data_ptr(self.shost) }
    }

    /// Adds the device at `channel:id:lun` (`scsi_add_device()`).
    pub(crate) fn add_device(&self, channel: u32, id: u32, lun: u64) -> Result {
        // SAFETY: The host is live and added (type invariant); the call may
        // sleep, which the contexts giving a `HostRef` allow.
        to_result(unsafe { bindings::scsi_add_device(self.shost.as_ptr(), channel, id, lun) })
    }

    /// Calls `f` with the device at `channel:id:lun`, holding a reference
    /// to it, if there is one (`scsi_device_lookup()`); returns whether
    /// there was.
    pub(crate) fn with_device(
        &self,
        channel: u32,
        id: u32,
        lun: u64,
        f: impl FnOnce(&HeldDevice),
    ) -> bool {
        // SAFETY: The host is live (type invariant).
        let sdev = unsafe { bindings::scsi_device_lookup(self.shost.as_ptr(), channel, id, lun) };
        if sdev.is_null() {
            return false;
        }
        // SAFETY: `sdev` is a device of this host with a reference we hold
        // until the `put` below; a `HostRef` is only lent in process
        // context outside the error handler (its type invariant).
        f(unsafe { HeldDevice::from_raw(sdev) });
        // SAFETY: Drops the reference `scsi_device_lookup()` took.
        unsafe { bindings::scsi_device_put(sdev) };
        true
    }

    /// Scans target `channel:id` for new LUNs (`scsi_scan_target()` with
    /// `SCSI_SCAN_INITIAL`, as the C driver: LUNs already added are left
    /// alone). Does nothing when the midlayer scans manually only
    /// (`scsi_mod.scan=manual`).
    pub(crate) fn scan_target(&self, channel: u32, id: u32) {
        // SAFETY: The host is live and added (type invariant), so its
        // `shost_gendev` is registered.
        unsafe {
            bindings::scsi_scan_target(
                core::ptr::addr_of_mut!((*self.shost.as_ptr()).shost_gendev),
                channel,
                id,
                SCAN_WILD_CARD,
                bindings::scsi_scan_mode_SCSI_SCAN_INITIAL,
            )
        };
    }

    /// Scans the whole host (`scsi_scan_host()`).
    pub(crate) fn scan(&self) {
        // SAFETY: The host is live and added (type invariant).
        unsafe { bindings::scsi_scan_host(self.shost.as_ptr()) };
    }

    /// Calls `f` for each command the midlayer has outstanding on the host
    /// (`scsi_host_busy_iter()`), until `f` returns `false`. The commands
    /// can be inspected, not completed. May not sleep in `f`.
    pub(crate) fn for_each_busy<F: FnMut(&EhCommand) -> bool>(&self, mut f: F) {
        /// # Safety
        ///
        /// `data` points to the `G` of the enclosing call; `sc` is a busy
        /// command of the host.
        unsafe extern "C" fn visit<G: FnMut(&EhCommand) -> bool>(
            sc: *mut bindings::scsi_cmnd,
            data: *mut kernel::ffi::c_void,
        ) -> bool {
            // SAFETY: The caller passes the closure of the enclosing call,
            // which the iteration only uses on this thread, one visit at a
            // time.
            let f = unsafe { &mut *data.cast::<G>() };
            // SAFETY: The iteration holds a reference on the command's
            // request for the visit, which holds its queue's usage counter
            // until the last put; removing the device
            // (`blk_mq_destroy_queue()`) waits for that counter, so the
            // command and its device are valid for the visit. Only started
            // requests are visited, and `sc->device` is set before a request
            // is started. The reference does not escape the closure call.
            f(unsafe { EhCommand::from_raw(sc) })
        }
        // SAFETY: The host is live (type invariant); `visit::<F>` only uses
        // `f`, which outlives the call.
        unsafe {
            bindings::scsi_host_busy_iter(
                self.shost.as_ptr(),
                Some(visit::<F>),
                core::ptr::addr_of_mut!(f).cast(),
            )
        };
    }

    /// Calls `f` for each device of the host (`shost_for_each_device()`),
    /// holding a reference to the device during the call.
    pub(crate) fn for_each_device(&self, mut f: impl FnMut(&HeldDevice)) {
        let mut sdev: *mut bindings::scsi_device = core::ptr::null_mut();
        loop {
            // SAFETY: The host is live; `sdev` is null or the device the
            // previous call returned, whose reference this call drops.
            sdev = unsafe { bindings::__scsi_iterate_devices(self.shost.as_ptr(), sdev) };
            if sdev.is_null() {
                return;
            }
            // SAFETY: We hold a reference to `sdev` until the next call; a
            // `HostRef` is only lent in process context outside the error
            // handler (its type invariant).
            f(unsafe { HeldDevice::from_raw(sdev) });
        }
    }
}

/// A borrowed, added host, as given to the error handlers
/// ([`HostTemplate::eh_timed_out`] and the `eh_*` handlers): the host's data
/// and its outstanding commands, nothing that scans, adds or removes devices
/// or sends commands through the midlayer, which would wait for the error
/// handler itself (review finding 18).
///
/// # Invariants
///
/// As for [`HostRef`], but the borrower may be the error handler, or the
/// block layer's timeout handling.
///
/// # Examples
///
/// After a LUN reset, whether the device still holds a command it ended:
///
/// ```ignore
/// fn eh_device_reset(host: EhHost<'_, Self>, cmd: &EhCommand) -> EhResult {
///     let (_channel, id, lun) = cmd.device().address();
///     let result = host.data().tmf(Tmf::LogicalUnitReset, id, lun, 0);
///     let mut held = false;
///     host.for_each_busy(|c| {
///         let (_, i, l) = c.device().address();
///         held = c.in_device() && i == id && l == lun;
///         !held
///     });
///     if held { EhResult::Failed } else { result }
/// }
/// ```
pub(crate) struct EhHost<'a, T: HostTemplate>(HostRef<'a, T>);

impl<T: HostTemplate> Clone for EhHost<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: HostTemplate> Copy for EhHost<'_, T> {}

impl<'a, T: HostTemplate> EhHost<'a, T> {
    /// # Safety
    ///
    /// `shost` must satisfy the type invariant for `'a`.
    pub(super) unsafe fn from_raw(shost: *mut bindings::Scsi_Host) -> Self {
        // INVARIANT: The caller guarantees it; the inner `HostRef` is never
        // lent out, so its process-context operations stay unreachable.
        // SAFETY: As above.
        Self(unsafe { HostRef::from_raw(shost) })
    }

    /// Returns the host's private data.
    pub(crate) fn data(&self) -> &'a T::HostData {
        self.0.data()
    }

    /// Calls `f` for each command the midlayer has outstanding on the host,
    /// as [`HostRef::for_each_busy`] does.
    pub(crate) fn for_each_busy<F: FnMut(&EhCommand) -> bool>(&self, f: F) {
        self.0.for_each_busy(f)
    }
}
