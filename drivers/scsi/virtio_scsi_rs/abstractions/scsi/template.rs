// SPDX-License-Identifier: GPL-2.0

//! Host templates (`struct scsi_host_template`): the driver's trait, the
//! static template built from it, and the C callbacks that call it.
//!
//! C header: [`include/scsi/scsi_host.h`](srctree/include/scsi/scsi_host.h)

use super::*;
use crate::abstractions::bindings;
use crate::abstractions::blk_mq::QueueMaps;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::types::Opaque;

/// A SCSI host template (`struct scsi_host_template`).
///
/// Mandatory items have no default; optional operations are only wired into
/// the C template when the implementation provides them.
///
/// # Examples
///
/// The template of a host whose data is the driver's adapter state:
///
/// ```ignore
/// use crate::abstractions::scsi::{self, Command, HostRef, HostTemplate, QueueError, SeqFile};
///
/// #[vtable]
/// impl HostTemplate for VirtioScsi {
///     type HostData = Self;
///
///     const NAME: &'static CStr = c_str!("Virtio SCSI HBA");
///     const PROC_NAME: &'static CStr = c_str!("virtio_scsi_rs");
///     const CMD_SIZE: usize = 64 + protocol::CMD_RESP_SIZE;
///     const TRACK_QUEUE_DEPTH: bool = true;
///     const DEBUGFS_FILE: Option<&'static CStr> = Some(c_str!("queues"));
///
///     fn queuecommand(vscsi: &Self, cmd: Command<Self>) -> Result<(), QueueError<Self>> {
///         vscsi.submit(cmd)
///     }
///
///     fn debugfs_show(host: HostRef<'_, Self>, m: &SeqFile) {
///         let submitted = host.data().submitted();
///         m.print(format_args!("submitted {}\n", submitted));
///     }
/// }
///
/// pub(crate) static TEMPLATE: scsi::Template<VirtioScsi> = scsi::Template::new();
/// ```
#[vtable]
pub(crate) trait HostTemplate: Sized + 'static {
    /// Per-host data, stored inline in the `Scsi_Host` (`shost_priv()`).
    type HostData: Send + Sync;

    /// Host name (`name`).
    const NAME: &'static CStr;
    /// Name under `/proc/scsi` and in logs (`proc_name`).
    const PROC_NAME: &'static CStr;
    /// Size of the per-command private area (`cmd_size`; the template
    /// rounds it up to the alignment of what the midlayer puts after it).
    const CMD_SIZE: usize;
    /// Let the midlayer track the queue depth (`track_queue_depth`).
    const TRACK_QUEUE_DEPTH: bool = false;
    /// Skip the midlayer's 10 s settle delay after a host reset
    /// (`skip_settle_delay`): the host is ready when its handler returns.
    const SKIP_SETTLE_DELAY: bool = false;
    /// Name of each host's debugfs file, which [`HostTemplate::debugfs_show`]
    /// prints into: `/sys/kernel/debug/<PROC_NAME>/host<N>/<name>`.
    ///
    /// The directories and the file exist only when this is set and
    /// `debugfs_show` is implemented.
    const DEBUGFS_FILE: Option<&'static CStr> = None;

    /// Starts a command (`queuecommand`). A command that cannot be started
    /// now is handed back in [`QueueError::HostBusy`] and retried later;
    /// only `cmd` itself can be handed back so.
    fn queuecommand(host: &Self::HostData, cmd: Command<Self>) -> Result<(), QueueError<Self>>;

    /// Prepares a command's private area once, when the midlayer allocates
    /// the command (`init_cmd_priv`); the area arrives zeroed. The midlayer
    /// does not clear it between commands (the template always has an
    /// `init_cmd_priv`, this one's or none), so the driver must not rely
    /// on it being zero.
    fn init_cmd_priv(_private: &mut [u8]) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Flushes commands queued without [`Command::is_last`]
    /// (`commit_rqs`).
    fn commit_rqs(_host: &Self::HostData, _hwq: u16) {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Sets up a new device before it is scanned (`slave_alloc`).
    fn slave_alloc(_sdev: &SlaveAllocDevice) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Changes a device's queue depth; returns the new depth
    /// (`change_queue_depth`).
    fn change_queue_depth(_sdev: &ScsiDevice, _depth: i32) -> i32 {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Maps CPUs to hardware queues for each queue type (`map_queues`).
    fn map_queues(_host: &Self::HostData, _maps: &mut QueueMaps<'_>) {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Reaps completions of polled hardware queue `queue` without
    /// interrupts; returns how many commands completed (`mq_poll`).
    fn mq_poll(_host: &Self::HostData, _queue: u32) -> i32 {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Prints the host's state into its debugfs file
    /// ([`HostTemplate::DEBUGFS_FILE`]).
    fn debugfs_show(_host: HostRef<'_, Self>, _m: &SeqFile) {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// The host's deferred work, run in process context on the freezable
    /// system workqueue after [`Host::queue_work`]. [`Host::remove`] waits
    /// for a run under way, and none starts after it has begun.
    ///
    /// Returns whether to run again: the work is then queued anew, behind
    /// what the workqueue already holds, so that work which a device can
    /// renew without end is done in bounded runs that let the worker
    /// yield in between (nothing is queued once [`Host::remove`] has
    /// disabled the work).
    ///
    /// `which` says which of the host's two work items runs
    /// ([`Host::queue_work`]); the two may run at the same time.
    fn work(_host: HostRef<'_, Self>, _which: HostWork) -> bool {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// A command's timer expired (`eh_timed_out`).
    fn eh_timed_out(_host: EhHost<'_, Self>, _cmd: &EhCommand) -> TimeoutAction {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Aborts one command (`eh_abort_handler`).
    fn eh_abort(_host: EhHost<'_, Self>, _cmd: &EhCommand) -> EhResult {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Resets the command's logical unit (`eh_device_reset_handler`).
    fn eh_device_reset(_host: EhHost<'_, Self>, _cmd: &EhCommand) -> EhResult {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Resets the command's target (`eh_target_reset_handler`).
    fn eh_target_reset(_host: EhHost<'_, Self>, _cmd: &EhCommand) -> EhResult {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Resets the whole host (`eh_host_reset_handler`).
    fn eh_host_reset(_host: EhHost<'_, Self>, _cmd: &EhCommand) -> EhResult {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// Why [`HostTemplate::queuecommand`] did not start a command.
///
/// # Examples
///
/// A full ring: the midlayer requeues the command; a broken device: the command
/// fails now:
///
/// ```ignore
/// match guard.add(req) {
///     Ok(()) => Ok(()),
///     Err((req, e)) if e == EIO => {
///         drop(guard);
///         let mut cmd = req.into_command();
///         cmd.set_result(HostByte::BadTarget, 0);
///         cmd.done();
///         Ok(())
///     }
///     Err((req, _e)) => Err(QueueError::HostBusy(req.into_command())),
/// }
/// ```
pub(crate) enum QueueError<T: HostTemplate> {
    /// The host is out of resources: the midlayer retries the command later
    /// (`SCSI_MLQUEUE_HOST_BUSY`).
    ///
    /// It must hold the very command `queuecommand` was given. Any other
    /// command (one the driver kept from an earlier call) is completed with
    /// `DID_ERROR`, with an error message, and the given one counts as
    /// accepted: the driver kept it, so it must complete it.
    HostBusy(Command<T>),
}

/// The static template of a [`HostTemplate`], built at compile time.
///
/// The C template (`struct scsi_host_template`) is a constant, as a C
/// driver's `static const` one is: its operations are the [`HostTemplate`]
/// methods the driver provides, its sizes and flags the trait's constants,
/// so a template that could not work (a private area too large for the
/// midlayer) fails the build. Only the template's debugfs directory is made
/// at run time, by [`Template::init`].
///
/// # Invariants
///
/// `inner` is a complete template whose `module` is the module that holds
/// the `static`; it is never written. `debugfs` is null or a directory made
/// by `init` that stays until no host has an entry in it (`debugfs_users`
/// counts them).
///
/// # Examples
///
/// Defined beside the driver's [`HostTemplate`], its directory made at
/// module load and removed after the last host is gone:
///
/// ```ignore
/// pub(crate) static TEMPLATE: scsi::Template<VirtioScsi> = scsi::Template::new(&crate::THIS_MODULE);
///
/// impl kernel::Module for VirtioScsiModule {
///     fn init(module: &'static ThisModule) -> Result<Self> {
///         TEMPLATE.init()?;
///         match KBox::pin_init(virtio::Registration::new(module), GFP_KERNEL) {
///             Ok(driver) => Ok(Self { driver: Some(driver) }),
///             Err(e) => {
///                 TEMPLATE.exit();
///                 Err(e)
///             }
///         }
///     }
/// }
///
/// impl Drop for VirtioScsiModule {
///     fn drop(&mut self) {
///         self.driver.take(); // every host goes away first
///         TEMPLATE.exit();
///     }
/// }
/// ```
pub(crate) struct Template<T: HostTemplate> {
    inner: bindings::scsi_host_template,
    /// `init` has run (the directory may still be null: debugfs failed or
    /// is absent).
    initialised: AtomicBool,
    /// `/sys/kernel/debug/<PROC_NAME>`, or null.
    debugfs: AtomicPtr<bindings::dentry>,
    /// Hosts that looked up `debugfs` for their entry and have not removed
    /// it yet.
    debugfs_users: AtomicUsize,
    _p: PhantomData<T>,
}

// SAFETY: `inner` is never written, so any thread may read it; the other
// fields are atomics.
unsafe impl<T: HostTemplate> Sync for Template<T> {}

impl<T: HostTemplate> Template<T> {
    /// Builds the template of `module`'s driver `T`, for a `static`.
    ///
    /// # Panics
    ///
    /// At compile time (the template is a `static`), if the command's
    /// private area does not fit the midlayer's `cmd_size`.
    pub(crate) const fn new(module: &'static ThisModule) -> Self {
        // The midlayer puts the command's inline scatterlist, then (with
        // T10 PI) its `scsi_data_buffer` for protection information, right
        // after the private area: round it up so that both are aligned.
        let sg_align = core::mem::align_of::<bindings::scatterlist>();
        let sdb_align = core::mem::align_of::<bindings::scsi_data_buffer>();
        let align = if sg_align > sdb_align {
            sg_align
        } else {
            sdb_align
        };
        let cmd_size = (CMD_STATE_SIZE + T::CMD_SIZE).next_multiple_of(align);
        assert!(
            cmd_size <= u32::MAX as usize,
            "HostTemplate::CMD_SIZE too large"
        );
        // SAFETY: All-zero is a valid `scsi_host_template`: null pointers,
        // absent operations (`None`), zero sizes and flags, which is what
        // the midlayer takes as "not provided" (C's designated
        // initialisers leave the same zeros).
        let mut t: bindings::scsi_host_template = unsafe { core::mem::zeroed() };
        t.module = module.as_ptr().cast();
        t.name = T::NAME.as_char_ptr();
        t.proc_name = T::PROC_NAME.as_char_ptr();
        t.this_id = -1;
        t.cmd_size = cmd_size as u32;
        // `UINT_MAX`, as the C driver: no boundary the device cares about.
        t.dma_boundary = u32::MAX as kernel::ffi::c_ulong;
        t.queuecommand = Some(Adapter::<T>::queuecommand);
        // Always: without `init_cmd_priv` the midlayer clears the private
        // area at every dispatch (`scsi_prepare_cmd()`), which would also
        // clear the command's state, and with it the mark of a command the
        // device still holds.
        t.init_cmd_priv = Some(Adapter::<T>::init_cmd_priv);
        if T::HAS_COMMIT_RQS {
            t.commit_rqs = Some(Adapter::<T>::commit_rqs);
        }
        if T::HAS_SLAVE_ALLOC {
            t.slave_alloc = Some(Adapter::<T>::slave_alloc);
        }
        if T::HAS_CHANGE_QUEUE_DEPTH {
            t.change_queue_depth = Some(Adapter::<T>::change_queue_depth);
        }
        if T::HAS_MAP_QUEUES {
            t.map_queues = Some(Adapter::<T>::map_queues);
        }
        if T::HAS_MQ_POLL {
            t.mq_poll = Some(Adapter::<T>::mq_poll);
        }
        if T::HAS_EH_TIMED_OUT {
            t.eh_timed_out = Some(Adapter::<T>::eh_timed_out);
        }
        if T::HAS_EH_ABORT {
            t.eh_abort_handler = Some(Adapter::<T>::eh_abort);
        }
        if T::HAS_EH_DEVICE_RESET {
            t.eh_device_reset_handler = Some(Adapter::<T>::eh_device_reset);
        }
        if T::HAS_EH_TARGET_RESET {
            t.eh_target_reset_handler = Some(Adapter::<T>::eh_target_reset);
        }
        if T::HAS_EH_HOST_RESET {
            t.eh_host_reset_handler = Some(Adapter::<T>::eh_host_reset);
        }
        // The one-bit flags, in declaration order from bit 0 of the
        // template's first bitfield unit: `track_queue_depth` (bit 0),
        // `supported_mode` (bits 1-2), `emulated`, `skip_settle_delay`
        // (bit 4), .... `flags_match` checks the positions against the
        // generated accessors when the module loads.
        t._bitfield_1 = bindings::__BindgenBitfieldUnit::new([
            (T::TRACK_QUEUE_DEPTH as u8) | ((T::SKIP_SETTLE_DELAY as u8) << 4)
        ]);
        Self {
            inner: t,
            initialised: AtomicBool::new(false),
            debugfs: AtomicPtr::new(core::ptr::null_mut()),
            debugfs_users: AtomicUsize::new(0),
            _p: PhantomData,
        }
    }

    /// Whether the flags written as bits in [`Template::new`] read back
    /// through the accessors bindgen generated for them.
    fn flags_match(&self) -> bool {
        self.inner.track_queue_depth() == u32::from(T::TRACK_QUEUE_DEPTH)
            && self.inner.skip_settle_delay() == u32::from(T::SKIP_SETTLE_DELAY)
            && self.inner.supported_mode() == 0
            && self.inner.emulated() == 0
            && self.inner.no_write_same() == 0
            && self.inner.host_tagset() == 0
            && self.inner.queuecommand_may_block() == 0
    }

    /// Makes the template's debugfs directory (`/sys/kernel/debug/<PROC_NAME>`,
    /// if the driver has a debugfs file), for module initialisation. Fails
    /// with `EBUSY` the second time, and with `EINVAL` if the compile-time
    /// flags do not match the C layout.
    pub(crate) fn init(&'static self) -> Result {
        if !self.flags_match() {
            pr_err!("scsi host template: bitfield layout mismatch\n");
            return Err(EINVAL);
        }
        if self.initialised.swap(true, Ordering::AcqRel) {
            return Err(EBUSY);
        }
        if T::HAS_DEBUGFS_SHOW && T::DEBUGFS_FILE.is_some() {
            // SAFETY: `PROC_NAME` is a valid string; a failure gives an
            // error pointer, which debugfs accepts as a parent and ignores.
            let dir = unsafe {
                bindings::debugfs_create_dir(T::PROC_NAME.as_char_ptr(), core::ptr::null_mut())
            };
            self.debugfs.store(dir, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Removes the debugfs directory, for module exit after every host is
    /// gone. Should a host still have an entry in it, the directory stays
    /// (with a warning): removing it would free the host's entry under it.
    pub(crate) fn exit(&'static self) {
        let dir = self.debugfs.swap(core::ptr::null_mut(), Ordering::SeqCst);
        if dir.is_null() {
            return;
        }
        // A host that found the directory counted itself before looking
        // (`debugfs_get`), so it is seen here; one that did not will find
        // null from now on.
        if self.debugfs_users.load(Ordering::SeqCst) != 0 {
            pr_warn!("scsi host template: hosts remain; debugfs directory left in place\n");
            return;
        }
        // SAFETY: `dir` came from `debugfs_create_dir`, the swap gives it to
        // one caller only, and no host has an entry in it (above).
        unsafe { bindings::debugfs_remove(dir) };
    }

    /// The directory for a host's debugfs entry, or null; a non-null one
    /// stays until the host gives it back with [`Template::debugfs_put`].
    pub(super) fn debugfs_get(&'static self) -> *mut bindings::dentry {
        self.debugfs_users.fetch_add(1, Ordering::SeqCst);
        let dir = self.debugfs.load(Ordering::SeqCst);
        if dir.is_null() {
            self.debugfs_users.fetch_sub(1, Ordering::SeqCst);
        }
        dir
    }

    /// Ends a use begun by a non-null [`Template::debugfs_get`], once the
    /// host's entry is removed.
    pub(super) fn debugfs_put(&'static self) {
        self.debugfs_users.fetch_sub(1, Ordering::SeqCst);
    }

    pub(super) fn as_raw(&'static self) -> *const bindings::scsi_host_template {
        &self.inner
    }
}

/// The commands that the midlayer finishes after an error handler succeeds:
/// the handler's own (abort), or all of its device, target or host.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EhScope {
    Command,
    Device,
    Target,
    Host,
}

/// Glue between the C template ops and a [`HostTemplate`].
pub(super) struct Adapter<T: HostTemplate>(PhantomData<T>);

impl<T: HostTemplate> Adapter<T> {
    /// # Safety
    ///
    /// `shost` must be a live host allocated by [`HostBuilder::alloc`] for `T`.
    unsafe fn data<'a>(shost: *mut bindings::Scsi_Host) -> &'a T::HostData {
        // SAFETY: Such a host's data is initialised until `Host` drops it,
        // which happens only after the host is removed, when the midlayer
        // calls no more template ops.
        unsafe { &*Host::<T>::data_ptr(NonNull::new_unchecked(shost)) }
    }

    /// # Safety
    ///
    /// Called by the midlayer with a live host of `T` and a new command.
    unsafe extern "C" fn queuecommand(
        shost: *mut bindings::Scsi_Host,
        sc: *mut bindings::scsi_cmnd,
    ) -> i32 {
        // SAFETY: The midlayer passes a live host of this template.
        let data = unsafe { Self::data(shost) };
        // SAFETY: The midlayer passes a command it allocated
        // (`scsi_dispatch_cmd()` dereferences it before the call).
        let sc = unsafe { NonNull::new_unchecked(sc) };
        // SAFETY: A command of a host of this template, allocated and
        // initialised by the midlayer.
        if unsafe { cmd_state(sc.as_ptr()) }
            .in_device
            .load(Ordering::Acquire)
        {
            // The error handler took back a command the device still holds
            // and issues it again (its TEST UNIT READY, a retry): a second
            // request on one private area would alias it while the device
            // writes it. It waits until the device gives it back or is
            // reset; the error handler times out meanwhile and escalates.
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                pr_err!("a command the device still holds was issued again: held back\n");
            }
            return bindings::SCSI_MLQUEUE_HOST_BUSY as i32;
        }
        // SAFETY: The midlayer hands the command over to us, and no device
        // holds it.
        let cmd = unsafe { Command::from_raw(sc) };
        match T::queuecommand(data, cmd) {
            Ok(()) => 0,
            Err(QueueError::HostBusy(cmd)) if cmd.raw() == sc.as_ptr() => {
                // The midlayer keeps the command and requeues it.
                core::mem::forget(cmd);
                bindings::SCSI_MLQUEUE_HOST_BUSY as i32
            }
            Err(QueueError::HostBusy(other)) => {
                // A driver bug: it kept `sc` (completed it, dropped it, put
                // it on a device or stored it) and handed back another
                // command it owned. Telling the midlayer "busy" would have
                // it requeue `sc` while the driver may complete it, and
                // forgetting `other` would hang its issuer. `sc` is the
                // driver's now, as if accepted; `other` is a command the
                // driver owned and could have dropped, so completing it
                // with `DID_ERROR` is what its `Drop` does.
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    pr_err!("queuecommand returned a command it was not given: failed it\n");
                }
                drop(other);
                0
            }
        }
    }

    /// # Safety
    ///
    /// Called by the midlayer with a command being allocated for a host of
    /// `T`, which nobody else uses yet.
    unsafe extern "C" fn init_cmd_priv(
        _shost: *mut bindings::Scsi_Host,
        sc: *mut bindings::scsi_cmnd,
    ) -> i32 {
        // SAFETY: The private area (the state, then `T::CMD_SIZE` bytes)
        // follows the command; the command is not in use yet, so it is ours.
        // Zeroing it first makes every byte initialised whatever the
        // allocator left, and the state "not in a device".
        let private = unsafe {
            core::ptr::write_bytes(cmd_area(sc), 0, CMD_STATE_SIZE + T::CMD_SIZE);
            core::slice::from_raw_parts_mut(cmd_priv(sc), T::CMD_SIZE)
        };
        if !T::HAS_INIT_CMD_PRIV {
            return 0;
        }
        match T::init_cmd_priv(private) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by the midlayer with a live host of `T`.
    unsafe extern "C" fn commit_rqs(shost: *mut bindings::Scsi_Host, hwq: u16) {
        // SAFETY: The midlayer passes a live host of this template.
        T::commit_rqs(unsafe { Self::data(shost) }, hwq);
    }

    /// # Safety
    ///
    /// Called by the midlayer with a new device of a live host of `T`.
    unsafe extern "C" fn slave_alloc(sdev: *mut bindings::scsi_device) -> i32 {
        // SAFETY: `scsi_alloc_sdev()` passes the device it is setting up;
        // the reference does not outlive the call.
        let sdev = unsafe { SlaveAllocDevice::from_raw(sdev) };
        match T::slave_alloc(sdev) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by the midlayer with a live host of `T`, while its tag set is
    /// being set up.
    unsafe extern "C" fn map_queues(shost: *mut bindings::Scsi_Host) {
        // SAFETY: The midlayer passes a live host of this template.
        let data = unsafe { Self::data(shost) };
        // SAFETY: `scsi_map_queues()` calls us from
        // `blk_mq_update_queue_map()` for the host's tag set (a raw
        // projection: no reference to the host is created); `maps` does not
        // outlive the call.
        let mut maps =
            unsafe { QueueMaps::from_tag_set(core::ptr::addr_of_mut!((*shost).tag_set)) };
        T::map_queues(data, &mut maps);
    }

    /// # Safety
    ///
    /// Called by the midlayer with a live host of `T`.
    unsafe extern "C" fn mq_poll(shost: *mut bindings::Scsi_Host, queue: u32) -> i32 {
        // SAFETY: The midlayer passes a live host of this template.
        T::mq_poll(unsafe { Self::data(shost) }, queue)
    }

    /// # Safety
    ///
    /// Called through `single_open()` by debugfs, with the host's
    /// `shost_gendev` as the seq_file's `private`, while the file created in
    /// `Host::create_debugfs` exists.
    pub(super) unsafe extern "C" fn debugfs_read(
        m: *mut bindings::seq_file,
        _token: *mut kernel::ffi::c_void,
    ) -> i32 {
        // SAFETY: `m` is valid during the call; `single_open()` stored the
        // device given to `debugfs_create_devm_seqfile()` in `private`.
        let data = unsafe { (*m).private };
        // `dev_to_shost()`: the device is the host's embedded `shost_gendev`.
        let offset = core::mem::offset_of!(bindings::Scsi_Host, shost_gendev);
        // SAFETY: `data` is the `shost_gendev` of a live host of `T`.
        let shost = unsafe { data.cast::<u8>().sub(offset) }.cast::<bindings::Scsi_Host>();
        // SAFETY: The file exists, so the host is added and its data alive
        // (the file is removed before the host is removed).
        let host = unsafe { HostRef::<T>::from_raw(shost) };
        // INVARIANT: The reference does not outlive the call, during which
        // `m` is valid.
        // SAFETY: `m` is valid during the call; `SeqFile` is transparent.
        T::debugfs_show(host, unsafe { &*m.cast::<SeqFile>() });
        0
    }

    /// # Safety
    ///
    /// Called by the workqueue for work item `N` (a [`HostWork`] index) of
    /// a host of `T`, which `Host::remove` disables (waiting for this
    /// function) before the host is removed or its data dropped.
    pub(super) unsafe extern "C" fn work<const N: usize>(work: *mut bindings::work_struct) {
        // Installed for the elements of `works` only.
        build_assert!(N < HostWork::COUNT);
        let off = core::mem::offset_of!(HostPriv<T::HostData>, works)
            + N * core::mem::size_of::<Opaque<bindings::work_struct>>()
            + core::mem::offset_of!(bindings::Scsi_Host, hostdata);
        // SAFETY: `work` is element `N` of the `works` field of the
        // `HostPriv` in the `hostdata` of a `Scsi_Host` (`container_of()`;
        // `Adapter::work::<N>` is installed on that element only).
        let shost = unsafe { work.cast::<u8>().sub(off) }.cast::<bindings::Scsi_Host>();
        // SAFETY: The work only runs between `HostBuilder::add` (queueing checks
        // it) and `Host::remove` (which disables it first).
        if T::work(unsafe { HostRef::from_raw(shost) }, HostWork::from_index(N)) {
            // SAFETY: `work` is the host's initialised work item, running
            // now; the host stays added until `Host::remove`, whose
            // `disable_work_sync()` waits for this run and, once it has
            // started, makes this queueing a no-op, so the work never runs
            // after the remove either.
            unsafe { bindings::vscsi_queue_work_freezable(work) };
        }
    }

    /// # Safety
    ///
    /// `sc` must be a command, of a live device, of a live, added host of
    /// `T`, valid for `'a`, as the midlayer passes to the `eh_*` callbacks.
    unsafe fn eh_args<'a>(sc: *mut bindings::scsi_cmnd) -> (EhHost<'a, T>, &'a EhCommand) {
        // SAFETY: The caller guarantees `sc`, its device and its host.
        unsafe {
            let shost = (*(*sc).device).host;
            (EhHost::from_raw(shost), EhCommand::from_raw(sc))
        }
    }

    /// # Safety
    ///
    /// Called by the midlayer's timeout handler with a command of a host of `T`.
    unsafe extern "C" fn eh_timed_out(
        sc: *mut bindings::scsi_cmnd,
    ) -> bindings::scsi_timeout_action {
        // SAFETY: The midlayer passes such a command.
        let (host, cmd) = unsafe { Self::eh_args(sc) };
        match T::eh_timed_out(host, cmd) {
            TimeoutAction::Done => bindings::scsi_timeout_action_SCSI_EH_DONE,
            TimeoutAction::NotHandled => bindings::scsi_timeout_action_SCSI_EH_NOT_HANDLED,
            TimeoutAction::ResetTimer => bindings::scsi_timeout_action_SCSI_EH_RESET_TIMER,
        }
    }

    /// Runs error handler `f` for `sc` and converts its result.
    ///
    /// On `SUCCESS` the midlayer finishes every command of the handler's
    /// `scope` that it holds, and their requests may be freed and their
    /// buffers reused: a success that leaves one of them in a device queue
    /// (which may still write into it) is turned into `FAILED`, whatever
    /// the driver's handler says, and the midlayer escalates.
    ///
    /// # Safety
    ///
    /// As for [`Self::eh_args`].
    unsafe fn eh_handler(
        sc: *mut bindings::scsi_cmnd,
        scope: EhScope,
        f: fn(EhHost<'_, T>, &EhCommand) -> EhResult,
    ) -> i32 {
        // SAFETY: The caller passes a command of a live, added host of `T`.
        let (host, cmd) = unsafe { Self::eh_args(sc) };
        let mut result = f(host, cmd);
        if result == EhResult::Success && Self::held_in_device(host, cmd, scope) {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                pr_err!(
                    "an error handler succeeded while a device still holds a command it ends: failed instead\n"
                );
            }
            result = EhResult::Failed;
        }
        result.to_c()
    }

    /// Whether a command that a successful handler for `cmd` ends (those of
    /// `scope`) is still in a device queue.
    fn held_in_device(host: EhHost<'_, T>, cmd: &EhCommand, scope: EhScope) -> bool {
        if scope == EhScope::Command {
            return cmd.in_device();
        }
        let (_, id, _) = cmd.device().address();
        let mut held = false;
        host.for_each_busy(|c| {
            let ends = match scope {
                EhScope::Command | EhScope::Device => core::ptr::eq(c.device(), cmd.device()),
                // The midlayer groups a target reset's commands by id
                // alone (`scsi_eh_target_reset()`), whatever their channel.
                EhScope::Target => c.device().address().1 == id,
                EhScope::Host => true,
            };
            held = ends && c.in_device();
            !held
        });
        // The handler's own command is not visited if it has no request
        // (the `SG_SCSI_RESET` ioctl's).
        held || cmd.in_device()
    }

    /// # Safety
    ///
    /// Called by the error handler with a command of a host of `T`.
    unsafe extern "C" fn eh_abort(sc: *mut bindings::scsi_cmnd) -> i32 {
        // SAFETY: The midlayer passes such a command.
        unsafe { Self::eh_handler(sc, EhScope::Command, T::eh_abort) }
    }

    /// # Safety
    ///
    /// Called by the error handler with a command of a host of `T`.
    unsafe extern "C" fn eh_device_reset(sc: *mut bindings::scsi_cmnd) -> i32 {
        // SAFETY: The midlayer passes such a command.
        unsafe { Self::eh_handler(sc, EhScope::Device, T::eh_device_reset) }
    }

    /// # Safety
    ///
    /// Called by the error handler with a command of a host of `T`.
    unsafe extern "C" fn eh_target_reset(sc: *mut bindings::scsi_cmnd) -> i32 {
        // SAFETY: The midlayer passes such a command.
        unsafe { Self::eh_handler(sc, EhScope::Target, T::eh_target_reset) }
    }

    /// # Safety
    ///
    /// Called by the error handler with a command of a host of `T`.
    unsafe extern "C" fn eh_host_reset(sc: *mut bindings::scsi_cmnd) -> i32 {
        // SAFETY: The midlayer passes such a command.
        unsafe { Self::eh_handler(sc, EhScope::Host, T::eh_host_reset) }
    }

    /// # Safety
    ///
    /// Called by the midlayer with a device of a live host of `T`.
    unsafe extern "C" fn change_queue_depth(sdev: *mut bindings::scsi_device, depth: i32) -> i32 {
        // SAFETY: The device is valid during the call.
        T::change_queue_depth(unsafe { ScsiDevice::from_raw(sdev) }, depth)
    }
}
