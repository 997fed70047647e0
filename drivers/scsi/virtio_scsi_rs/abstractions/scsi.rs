// SPDX-License-Identifier: GPL-2.0

//! SCSI low-level drivers: host templates, hosts and commands.
//!
//! C headers: [`include/scsi/scsi_host.h`](srctree/include/scsi/scsi_host.h),
//! [`include/scsi/scsi_cmnd.h`](srctree/include/scsi/scsi_cmnd.h),
//! [`include/scsi/scsi_device.h`](srctree/include/scsi/scsi_device.h).
//!
//! A driver describes its host with a [`HostTemplate`] (the C
//! `struct scsi_host_template` as a `#[vtable]` trait), keeps one static
//! [`Template`] of it, allocates a [`Host`] per adapter with its private data
//! stored inline (like `shost_priv()`), and receives [`Command`]s, which it
//! must complete exactly once (dropping one completes it with `DID_ERROR`).

use crate::abstractions::bindings;
use crate::abstractions::device::AsRawDevice;
use crate::abstractions::virtio::{self, Request, SgList};
use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ops::Range;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};
use kernel::error::to_result;
use kernel::prelude::*;
use kernel::types::Opaque;

/// The size of the midlayer's sense buffer (`SCSI_SENSE_BUFFERSIZE`).
pub(crate) const SENSE_BUFFERSIZE: usize = 96;

/// Host byte values (`enum scsi_host_status`) the abstraction exposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum HostByte {
    /// `DID_OK`.
    Ok = bindings::scsi_host_status_DID_OK as u8,
    /// `DID_NO_CONNECT`.
    NoConnect = bindings::scsi_host_status_DID_NO_CONNECT as u8,
    /// `DID_BUS_BUSY`.
    BusBusy = bindings::scsi_host_status_DID_BUS_BUSY as u8,
    /// `DID_BAD_TARGET`.
    BadTarget = bindings::scsi_host_status_DID_BAD_TARGET as u8,
    /// `DID_ABORT`.
    Abort = bindings::scsi_host_status_DID_ABORT as u8,
    /// `DID_ERROR`.
    Error = bindings::scsi_host_status_DID_ERROR as u8,
    /// `DID_RESET`.
    Reset = bindings::scsi_host_status_DID_RESET as u8,
    /// `DID_TIME_OUT`: the midlayer hands the command to its error handler.
    TimeOut = bindings::scsi_host_status_DID_TIME_OUT as u8,
    /// `DID_TRANSPORT_DISRUPTED`.
    TransportDisrupted = bindings::scsi_host_status_DID_TRANSPORT_DISRUPTED as u8,
}

/// The direction of a command's data (`enum dma_data_direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataDirection {
    /// No data.
    None,
    /// Data from the initiator to the device (a write).
    ToDevice,
    /// Data from the device to the initiator (a read).
    FromDevice,
    /// Both ways.
    Bidirectional,
}

/// A SCSI host template (`struct scsi_host_template`).
///
/// Mandatory items have no default; optional operations are only wired into
/// the C template when the implementation provides them.
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

    /// Starts a command (`queuecommand`). A command that cannot be started
    /// now is handed back in [`QueueError::HostBusy`] and retried later;
    /// only `cmd` itself can be handed back so.
    fn queuecommand(host: &Self::HostData, cmd: Command<Self>) -> Result<(), QueueError<Self>>;

    /// Prepares a command's private area once, when the midlayer allocates
    /// the command (`init_cmd_priv`); the area arrives zeroed. With this
    /// operation the midlayer no longer clears the area before every
    /// command, so the driver must not rely on it being zero.
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
    /// `/sys/kernel/debug/<PROC_NAME>/host<N>/queues`.
    fn debugfs_show(_host: HostRef<'_, Self>, _m: &SeqFile) {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// The host's deferred work, run in process context on the freezable
    /// system workqueue after [`Host::queue_work`]. It never runs once
    /// [`Host::remove`] has started.
    fn work(_host: HostRef<'_, Self>) {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// A command's timer expired (`eh_timed_out`).
    fn eh_timed_out(_host: HostRef<'_, Self>, _cmd: &EhCommand) -> TimeoutAction {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Aborts one command (`eh_abort_handler`).
    fn eh_abort(_host: HostRef<'_, Self>, _cmd: &EhCommand) -> EhResult {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Resets the command's logical unit (`eh_device_reset_handler`).
    fn eh_device_reset(_host: HostRef<'_, Self>, _cmd: &EhCommand) -> EhResult {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Resets the command's target (`eh_target_reset_handler`).
    fn eh_target_reset(_host: HostRef<'_, Self>, _cmd: &EhCommand) -> EhResult {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Resets the whole host (`eh_host_reset_handler`).
    fn eh_host_reset(_host: HostRef<'_, Self>, _cmd: &EhCommand) -> EhResult {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// The outcome of an error handler (`SUCCESS`, `FAILED` of
/// `enum scsi_disposition` in `scsi/scsi.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EhResult {
    /// The function completed; the midlayer stops escalating.
    Success,
    /// The function failed or timed out; the midlayer escalates.
    Failed,
}

impl EhResult {
    fn to_c(self) -> i32 {
        // The `eh_*_handler` ops return the `enum scsi_disposition` as an
        // `int`.
        let disposition = match self {
            EhResult::Success => bindings::scsi_disposition_SUCCESS,
            EhResult::Failed => bindings::scsi_disposition_FAILED,
        };
        disposition as i32
    }
}

/// What to do with a command whose timer expired (`enum scsi_timeout_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeoutAction {
    /// The driver completed it (`SCSI_EH_DONE`).
    Done,
    /// Let the midlayer abort it (`SCSI_EH_NOT_HANDLED`).
    NotHandled,
    /// Give it another timeout period (`SCSI_EH_RESET_TIMER`).
    ResetTimer,
}

/// A `seq_file` being printed into.
///
/// # Invariants
///
/// `self.0` is a valid `seq_file` for the lifetime of the reference.
#[repr(transparent)]
pub(crate) struct SeqFile(Opaque<bindings::seq_file>);

impl SeqFile {
    /// Appends formatted text (`seq_printf()`).
    pub(crate) fn print(&self, args: fmt::Arguments<'_>) {
        // SAFETY: The seq_file is valid (type invariant); `%pA` formats the
        // `fmt::Arguments`, which outlives the call.
        unsafe {
            bindings::seq_printf(
                self.0.get(),
                kernel::c_str!("%pA").as_char_ptr(),
                core::ptr::from_ref(&args).cast::<kernel::ffi::c_void>(),
            )
        };
    }
}

/// The blk-mq queue types (`enum hctx_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum HctxType {
    /// `HCTX_TYPE_DEFAULT`: all I/O not sent elsewhere.
    Default = bindings::hctx_type_HCTX_TYPE_DEFAULT,
    /// `HCTX_TYPE_READ`: reads, if the driver separates them.
    Read = bindings::hctx_type_HCTX_TYPE_READ,
    /// `HCTX_TYPE_POLL`: polled I/O.
    Poll = bindings::hctx_type_HCTX_TYPE_POLL,
}

/// The number of queue maps a tag set has room for (`HCTX_MAX_TYPES`).
const MAX_MAPS: usize = bindings::hctx_type_HCTX_MAX_TYPES as usize;

/// The queue maps of a host's tag set, handed to
/// [`HostTemplate::map_queues`].
///
/// It points to the maps alone, not to the host: the host's data (which
/// `map_queues` also gets) and fields other threads read lie in the same
/// allocation.
///
/// # Invariants
///
/// For `'a`, each non-null entry of `maps` points to a distinct queue map
/// (`struct blk_mq_queue_map`, with its CPU table allocated) of a tag set
/// that blk-mq is mapping (`blk_mq_update_queue_map()`: at allocation, or
/// with the queues frozen), which nothing else reads or writes meanwhile.
pub(crate) struct QueueMaps<'a> {
    maps: [*mut bindings::blk_mq_queue_map; MAX_MAPS],
    _p: PhantomData<&'a mut bindings::blk_mq_queue_map>,
}

impl QueueMaps<'_> {
    /// # Safety
    ///
    /// `shost` must be a live host whose tag set blk-mq is mapping, in a
    /// `map_queues` call that lasts for `'a`.
    unsafe fn from_host<'a>(shost: *mut bindings::Scsi_Host) -> QueueMaps<'a> {
        // SAFETY: The host is live (caller contract); the field is read
        // through the raw pointer, without a reference to the host.
        let nr_maps = unsafe { (*shost).tag_set.nr_maps } as usize;
        let mut maps = [core::ptr::null_mut(); MAX_MAPS];
        for (i, map) in maps.iter_mut().enumerate().take(nr_maps) {
            // SAFETY: In bounds of the host's `map` array (`MAX_MAPS`
            // entries); a raw projection, no reference is created.
            *map = unsafe { core::ptr::addr_of_mut!((*shost).tag_set.map[i]) };
        }
        // INVARIANT: blk-mq allocated the first `nr_maps` maps of the tag
        // set and, during `map_queues`, leaves them to the driver (caller
        // contract).
        QueueMaps {
            maps,
            _p: PhantomData,
        }
    }

    /// Gives `ty` the `nr_queues` hardware queues starting at `offset` and
    /// maps CPUs to them: by the managed affinity of the virtio device's
    /// interrupt vectors from `first_vec` on (`blk_mq_virtio_map_queues()`),
    /// or spread evenly when `virtio` is `None` (`blk_mq_map_queues()`).
    /// Types the host has no map for (`nr_maps`) are ignored.
    pub(crate) fn map(
        &mut self,
        ty: HctxType,
        nr_queues: u32,
        offset: u32,
        virtio: Option<(&virtio::Device, u32)>,
    ) {
        let map = match self.maps.get(ty as usize) {
            Some(&map) if !map.is_null() => map,
            _ => return,
        };
        // SAFETY: `map` is a queue map that is ours for `'a` (type
        // invariant), and `&mut self` keeps other uses of it out.
        unsafe {
            (*map).nr_queues = nr_queues;
            (*map).queue_offset = offset;
        }
        if nr_queues == 0 {
            return;
        }
        match virtio {
            // SAFETY: As above, and the device is valid while borrowed.
            Some((dev, first)) => unsafe {
                bindings::blk_mq_virtio_map_queues(map, dev.as_raw(), first as i32)
            },
            // SAFETY: As above.
            None => unsafe { bindings::blk_mq_map_queues(map) },
        }
    }
}

/// Why [`HostTemplate::queuecommand`] did not start a command.
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

/// The static template of a [`HostTemplate`], filled in once at module
/// initialisation by [`Template::init`].
///
/// # Invariants
///
/// Once `state` is `READY`, `inner` is a fully initialised template that is
/// never written again.
pub(crate) struct Template<T: HostTemplate> {
    inner: Opaque<bindings::scsi_host_template>,
    state: AtomicU8,
    /// `/sys/kernel/debug/<PROC_NAME>`, or null.
    debugfs: AtomicPtr<bindings::dentry>,
    _p: PhantomData<T>,
}

const TEMPLATE_UNINIT: u8 = 0;
const TEMPLATE_BUSY: u8 = 1;
const TEMPLATE_READY: u8 = 2;

// SAFETY: After initialisation the template is only read, by any thread; the
// initialisation itself is serialised by `state`.
unsafe impl<T: HostTemplate> Sync for Template<T> {}

impl<T: HostTemplate> Template<T> {
    /// Creates an empty template, for a `static`.
    pub(crate) const fn new() -> Self {
        Self {
            inner: Opaque::uninit(),
            state: AtomicU8::new(TEMPLATE_UNINIT),
            debugfs: AtomicPtr::new(core::ptr::null_mut()),
            _p: PhantomData,
        }
    }

    /// Fills in the template on behalf of `module`. Fails with `EBUSY` if
    /// it was already initialised.
    pub(crate) fn init(&'static self, module: &'static ThisModule) -> Result {
        if self
            .state
            .compare_exchange(
                TEMPLATE_UNINIT,
                TEMPLATE_BUSY,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return Err(EBUSY);
        }
        // The midlayer puts the command's inline scatterlist, then (with
        // T10 PI) its `scsi_data_buffer` for protection information, right
        // after the private area: round it up so that both are aligned.
        let align = core::mem::align_of::<bindings::scatterlist>()
            .max(core::mem::align_of::<bindings::scsi_data_buffer>());
        let cmd_size = match u32::try_from((CMD_STATE_SIZE + T::CMD_SIZE).next_multiple_of(align)) {
            Ok(size) => size,
            Err(_) => {
                self.state.store(TEMPLATE_UNINIT, Ordering::Release);
                return Err(EINVAL);
            }
        };
        let mut t = bindings::scsi_host_template {
            module: module.as_ptr(),
            name: T::NAME.as_char_ptr(),
            proc_name: T::PROC_NAME.as_char_ptr(),
            this_id: -1,
            cmd_size,
            // `UINT_MAX`, as the C driver: no boundary the device cares about.
            dma_boundary: u32::MAX as kernel::ffi::c_ulong,
            queuecommand: Some(Adapter::<T>::queuecommand),
            ..Default::default()
        };
        if T::HAS_INIT_CMD_PRIV {
            t.init_cmd_priv = Some(Adapter::<T>::init_cmd_priv);
        }
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
        if T::HAS_DEBUGFS_SHOW {
            // SAFETY: `PROC_NAME` is a valid string; a failure gives an
            // error pointer, which debugfs accepts as a parent and ignores.
            let dir = unsafe {
                bindings::debugfs_create_dir(T::PROC_NAME.as_char_ptr(), core::ptr::null_mut())
            };
            self.debugfs.store(dir, Ordering::Release);
        }
        t.set_track_queue_depth(u32::from(T::TRACK_QUEUE_DEPTH));
        t.set_skip_settle_delay(u32::from(T::SKIP_SETTLE_DELAY));
        // SAFETY: `state` is `BUSY`, so nobody else writes or reads `inner`
        // (readers wait for `READY`).
        unsafe { self.inner.get().write(t) };
        // INVARIANT: `inner` is initialised and is not written again.
        self.state.store(TEMPLATE_READY, Ordering::Release);
        Ok(())
    }

    /// Undoes what [`Template::init`] created outside the template (the
    /// debugfs directory). Call at module exit, after every host is gone.
    pub(crate) fn exit(&'static self) {
        let dir = self.debugfs.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !dir.is_null() {
            // SAFETY: `dir` came from `debugfs_create_dir` and is removed
            // once; hosts removed their entries below it already.
            unsafe { bindings::debugfs_remove(dir) };
        }
    }

    fn get(&'static self) -> Result<*const bindings::scsi_host_template> {
        if self.state.load(Ordering::Acquire) != TEMPLATE_READY {
            return Err(EINVAL);
        }
        Ok(self.inner.get())
    }
}

/// Limits of a host, set before [`Host::add`] (fields of `struct Scsi_Host`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    /// `can_queue`: commands in flight on one hardware queue (an `int`:
    /// [`Host::set_limits`] refuses more than `i32::MAX`).
    pub(crate) can_queue: u32,
    /// `cmd_per_lun`: default queue depth of a device (a `short`:
    /// [`Host::set_limits`] refuses more than `i16::MAX`).
    pub(crate) cmd_per_lun: u32,
    /// `sg_tablesize`: segments per command.
    pub(crate) sg_tablesize: u16,
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

/// What a [`Host`] keeps in `hostdata`: the driver's data first, then the
/// host's work item (initialised once, at allocation).
#[repr(C)]
struct HostPriv<D> {
    data: D,
    work: Opaque<bindings::work_struct>,
}

/// A SCSI host (`struct Scsi_Host`) with its private data of type
/// `T::HostData` stored inline.
///
/// Dropping the host removes it from the midlayer if it was added, drops
/// the private data and puts the host reference.
///
/// # Invariants
///
/// `shost` was allocated by `scsi_host_alloc` from `T`'s template with room
/// for a `HostPriv<T::HostData>`, whose data is initialised and pinned in its
/// `hostdata` and whose work item is initialised; this value owns the
/// reference from `scsi_host_alloc`. Once `work_disabled` is set the work
/// item cannot be queued again (`disable_work_sync()` has run or is
/// running). `debugfs` is null or the host's directory, created once.
pub(crate) struct Host<T: HostTemplate> {
    shost: NonNull<bindings::Scsi_Host>,
    /// The work item was disabled for good (`disable_work_sync()`).
    work_disabled: AtomicBool,
    /// The host is added to the midlayer (and not yet removed).
    added: AtomicBool,
    template: &'static Template<T>,
    /// The host's debugfs directory, or null.
    debugfs: AtomicPtr<bindings::dentry>,
}

// SAFETY: The host can be removed and released from any thread; its data is
// `Send + Sync`.
unsafe impl<T: HostTemplate> Send for Host<T> {}
// SAFETY: Shared access only reads the private data, which is `Sync`.
unsafe impl<T: HostTemplate> Sync for Host<T> {}

impl<T: HostTemplate> Host<T> {
    /// Allocates a host from `template` (`scsi_host_alloc()`) and
    /// initialises its private data in place with `init`.
    pub(crate) fn alloc(
        template: &'static Template<T>,
        init: impl PinInit<T::HostData, Error>,
    ) -> Result<Self> {
        // `hostdata` is aligned to `unsigned long`.
        build_assert!(align_of::<HostPriv<T::HostData>>() <= align_of::<kernel::ffi::c_ulong>());
        let sht = template.get()?;
        let size = kernel::ffi::c_int::try_from(size_of::<HostPriv<T::HostData>>())?;
        // SAFETY: `sht` is a ready template that lives for `'static`.
        let shost = NonNull::new(unsafe { bindings::scsi_host_alloc(sht, size) }).ok_or(ENOMEM)?;
        let data = Self::data_ptr(shost);
        // SAFETY: `data` points to `size` bytes of suitably aligned memory
        // owned by the new host, which never moves.
        if let Err(e) = unsafe { init.__pinned_init(data) } {
            // SAFETY: We own the only reference; the data is not initialised.
            unsafe { bindings::scsi_host_put(shost.as_ptr()) };
            return Err(e);
        }
        // SAFETY: The work item lies in the new host's private area, which
        // never moves; it is initialised once, here.
        unsafe { bindings::vscsi_init_work(Self::work_ptr(shost), Some(Adapter::<T>::work)) };
        // INVARIANT: The host is allocated from `T`'s template and its data
        // and work item are initialised.
        Ok(Self {
            shost,
            work_disabled: AtomicBool::new(false),
            added: AtomicBool::new(false),
            template,
            debugfs: AtomicPtr::new(core::ptr::null_mut()),
        })
    }

    fn priv_ptr(shost: NonNull<bindings::Scsi_Host>) -> *mut HostPriv<T::HostData> {
        // SAFETY: `hostdata` is the trailing array of a live host.
        unsafe { core::ptr::addr_of_mut!((*shost.as_ptr()).hostdata) }.cast()
    }

    fn data_ptr(shost: NonNull<bindings::Scsi_Host>) -> *mut T::HostData {
        // SAFETY: The private area holds a `HostPriv` (type invariant).
        unsafe { core::ptr::addr_of_mut!((*Self::priv_ptr(shost)).data) }
    }

    fn work_ptr(shost: NonNull<bindings::Scsi_Host>) -> *mut bindings::work_struct {
        // SAFETY: The private area holds a `HostPriv` (type invariant).
        Opaque::raw_get(unsafe { core::ptr::addr_of!((*Self::priv_ptr(shost)).work) })
    }

    /// Queues the host's work ([`HostTemplate::work`]) on the freezable
    /// system workqueue, unless it is pending already or the host is not
    /// added (or being removed). Callable from interrupt context.
    pub(crate) fn queue_work(&self) -> bool {
        if !self.added.load(Ordering::Acquire) || self.work_disabled.load(Ordering::Acquire) {
            return false;
        }
        // SAFETY: The work item is initialised (type invariant); once it is
        // disabled, queueing is a no-op, and it is disabled before the host
        // data it reaches goes away.
        unsafe { bindings::vscsi_queue_work_freezable(Self::work_ptr(self.shost)) }
    }

    /// Stops the host's work for good: waits for a running instance and
    /// makes later [`Host::queue_work`] calls no-ops (`disable_work_sync()`,
    /// which may run more than once).
    fn disable_work(&self) {
        self.work_disabled.store(true, Ordering::Release);
        // SAFETY: The work item is initialised (type invariant).
        unsafe { bindings::disable_work_sync(Self::work_ptr(self.shost)) };
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

    /// Sets the host's limits. Only before [`Host::add`].
    pub(crate) fn set_limits(&mut self, l: &Limits) -> Result {
        if *self.added.get_mut() {
            return Err(EBUSY);
        }
        let sh = self.shost.as_ptr();
        // SAFETY: The host is valid and not yet added, so the midlayer does
        // not read these fields concurrently.
        unsafe {
            (*sh).can_queue = i32::try_from(l.can_queue)?;
            (*sh).cmd_per_lun = i16::try_from(l.cmd_per_lun)?;
            (*sh).sg_tablesize = l.sg_tablesize;
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
    /// (`scsi_host_set_prot()`, `scsi_host_set_guard()`). Only before
    /// [`Host::add`].
    pub(crate) fn set_t10_pi(&mut self) -> Result {
        if *self.added.get_mut() {
            return Err(EBUSY);
        }
        let caps = bindings::scsi_host_prot_capabilities_SHOST_DIF_TYPE1_PROTECTION
            | bindings::scsi_host_prot_capabilities_SHOST_DIF_TYPE2_PROTECTION
            | bindings::scsi_host_prot_capabilities_SHOST_DIF_TYPE3_PROTECTION
            | bindings::scsi_host_prot_capabilities_SHOST_DIX_TYPE1_PROTECTION
            | bindings::scsi_host_prot_capabilities_SHOST_DIX_TYPE2_PROTECTION
            | bindings::scsi_host_prot_capabilities_SHOST_DIX_TYPE3_PROTECTION;
        let sh = self.shost.as_ptr();
        // SAFETY: The host is valid and not yet added, so the midlayer does
        // not read these fields concurrently.
        unsafe {
            (*sh).prot_capabilities = caps;
            (*sh).prot_guard_type = bindings::scsi_host_guard_type_SHOST_DIX_GUARD_CRC as u8;
        }
        Ok(())
    }

    /// Adds the host to the midlayer under `parent` (`scsi_add_host()`).
    pub(crate) fn add(&mut self, parent: &impl AsRawDevice) -> Result {
        if *self.added.get_mut() {
            return Err(EBUSY);
        }
        // SAFETY: The host is valid (type invariant); `parent` is a live
        // device (`AsRawDevice` contract) that outlives the host's
        // registration, which ends in `remove` or `drop`.
        to_result(unsafe {
            bindings::vscsi_scsi_add_host(self.shost.as_ptr(), parent.as_raw_device())
        })?;
        *self.added.get_mut() = true;
        self.create_debugfs();
        Ok(())
    }

    /// Creates `host<N>/queues` under the template's debugfs directory.
    fn create_debugfs(&mut self) {
        let root = self.template.debugfs.load(Ordering::Acquire);
        if !T::HAS_DEBUGFS_SHOW || root.is_null() {
            return;
        }
        let name = host_dir_name(self.host_no());
        // SAFETY: `name` is NUL-terminated and `root` is the template's
        // directory, alive until `Template::exit`, after all hosts.
        let dir = unsafe { bindings::debugfs_create_dir(name.as_ptr(), root) };
        // The file is removed with `dir` in `remove`, before the host goes
        // away; `debugfs_read` only runs while it exists.
        // SAFETY: The host is added: `shost_gendev` is registered and can
        // carry device-managed memory for the file's entry.
        unsafe {
            bindings::debugfs_create_devm_seqfile(
                core::ptr::addr_of_mut!((*self.shost.as_ptr()).shost_gendev),
                kernel::c_str!("queues").as_char_ptr(),
                dir,
                Some(Adapter::<T>::debugfs_read),
            )
        };
        *self.debugfs.get_mut() = dir;
    }

    /// Scans the host for devices (`scsi_scan_host()`).
    pub(crate) fn scan(&self) {
        if self.added.load(Ordering::Acquire) {
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
        }
        if self.added.swap(false, Ordering::AcqRel) {
            // SAFETY: The host is valid and was added; the swap above lets
            // one caller only remove it.
            unsafe { bindings::scsi_remove_host(self.shost.as_ptr()) };
        }
    }
}

impl<T: HostTemplate> Drop for Host<T> {
    fn drop(&mut self) {
        self.remove();
        // SAFETY: The data is initialised (type invariant). With the host
        // removed the midlayer calls none of its callbacks; whoever owns the
        // host (the virtio abstraction's remove) has stopped the transport's
        // callbacks before dropping it, and `self` is the last owner.
        unsafe { core::ptr::drop_in_place(Self::data_ptr(self.shost)) };
        // SAFETY: We own the reference from `scsi_host_alloc`.
        unsafe { bindings::scsi_host_put(self.shost.as_ptr()) };
    }
}

/// `scsi_cmd_to_rq()`: the request a command is the driver payload of.
///
/// # Safety
///
/// `sc` must be a command the midlayer allocated (right behind its request).
unsafe fn cmd_to_rq(sc: *mut bindings::scsi_cmnd) -> *mut bindings::request {
    // SAFETY: The caller guarantees the request lies right before `sc`.
    unsafe { sc.cast::<u8>().sub(size_of::<bindings::request>()) }.cast()
}

/// Bytes at the front of every command's private area that the abstraction
/// keeps for itself (a [`CmdState`]); the driver's `T::CMD_SIZE` bytes
/// follow, 8-byte aligned like the area itself.
const CMD_STATE_SIZE: usize = 8;

/// The abstraction's state of a command, at the front of its private area.
///
/// `in_device` is set when the command goes on a device queue and cleared
/// when the queue gives it back (the device answered, or was reset). While
/// it is set the device may still write the command's response and data:
/// the command must not be issued again, nor its private area handed out.
#[repr(C)]
struct CmdState {
    in_device: AtomicBool,
}

const _: () = assert!(size_of::<CmdState>() <= CMD_STATE_SIZE);

/// `scsi_cmd_priv()`: the area behind a command, as the template sized it.
///
/// # Safety
///
/// `sc` must be a command the midlayer allocated for a host of a
/// [`Template`] (whose `cmd_size` holds the state and `T::CMD_SIZE`).
unsafe fn cmd_area(sc: *mut bindings::scsi_cmnd) -> *mut u8 {
    // SAFETY: The caller guarantees the private area follows the command.
    unsafe { sc.add(1) }.cast()
}

/// The command's [`CmdState`].
///
/// # Safety
///
/// As for [`cmd_area`]; the area must have been initialised by
/// `init_cmd_priv` (it is, before the midlayer uses a command), and the
/// command must stay allocated for `'a`.
unsafe fn cmd_state<'a>(sc: *mut bindings::scsi_cmnd) -> &'a CmdState {
    // SAFETY: The state lies at the front of the area, which is 8-byte
    // aligned (it follows `struct scsi_cmnd`, whose size is a multiple of
    // its 8-byte alignment), zeroed by `init_cmd_priv` (a valid `CmdState`)
    // and only accessed atomically.
    unsafe { &*cmd_area(sc).cast::<CmdState>() }
}

/// The driver's `T::CMD_SIZE` bytes of a command, after the state.
///
/// # Safety
///
/// As for [`cmd_area`].
unsafe fn cmd_priv(sc: *mut bindings::scsi_cmnd) -> *mut u8 {
    // SAFETY: The template made the area `CMD_STATE_SIZE + T::CMD_SIZE`
    // bytes long at least (caller contract).
    unsafe { cmd_area(sc).add(CMD_STATE_SIZE) }
}

/// A borrowed, added host, as given to [`HostTemplate::work`] and the error
/// handlers: the host's data and the midlayer's scan and device operations,
/// which may sleep.
///
/// # Invariants
///
/// `shost` is a live host allocated by [`Host::alloc`] for `T` and added to
/// the midlayer, for `'a`; its removal may be under way (the midlayer's
/// operations check the host's state for that).
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
const SCAN_WILD_CARD: u64 = !0;

impl<'a, T: HostTemplate> HostRef<'a, T> {
    /// # Safety
    ///
    /// `shost` must satisfy the type invariant for `'a`.
    unsafe fn from_raw(shost: *mut bindings::Scsi_Host) -> Self {
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
        f: impl FnOnce(&ScsiDevice),
    ) -> bool {
        // SAFETY: The host is live (type invariant).
        let sdev = unsafe { bindings::scsi_device_lookup(self.shost.as_ptr(), channel, id, lun) };
        if sdev.is_null() {
            return false;
        }
        // SAFETY: `sdev` is a device of this host with a reference we hold
        // until the `put` below.
        f(unsafe { ScsiDevice::from_raw(sdev) });
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
            // request for the visit, so the command and its device are valid
            // for it; the reference does not escape the closure call.
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
    pub(crate) fn for_each_device(&self, mut f: impl FnMut(&ScsiDevice)) {
        let mut sdev: *mut bindings::scsi_device = core::ptr::null_mut();
        loop {
            // SAFETY: The host is live; `sdev` is null or the device the
            // previous call returned, whose reference this call drops.
            sdev = unsafe { bindings::__scsi_iterate_devices(self.shost.as_ptr(), sdev) };
            if sdev.is_null() {
                return;
            }
            // SAFETY: We hold a reference to `sdev` until the next call.
            f(unsafe { ScsiDevice::from_raw(sdev) });
        }
    }
}

/// A command in the hands of the error handler (`eh_*` callbacks), or one
/// visited by [`HostRef::for_each_busy`]: it can be inspected, not
/// completed.
///
/// # Invariants
///
/// `self.0` is a valid `scsi_cmnd` of a live device for the lifetime of the
/// reference.
#[repr(transparent)]
pub(crate) struct EhCommand(Opaque<bindings::scsi_cmnd>);

impl EhCommand {
    /// # Safety
    ///
    /// `sc` must be valid for `'a`.
    unsafe fn from_raw<'a>(sc: *mut bindings::scsi_cmnd) -> &'a Self {
        // SAFETY: Transparent wrapper; the caller guarantees validity.
        unsafe { &*sc.cast::<Self>() }
    }

    /// Returns the command's device.
    pub(crate) fn device(&self) -> &ScsiDevice {
        // SAFETY: A command's device outlives it (type invariant).
        unsafe { ScsiDevice::from_raw((*self.0.get()).device) }
    }

    /// Returns whether the command was completed (`SCMD_STATE_COMPLETE`),
    /// for instance by polling its queue in `eh_timed_out`.
    pub(crate) fn is_complete(&self) -> bool {
        // SAFETY: The command is valid (type invariant). `state` is only
        // changed with atomic bit operations; a volatile read is the
        // kernel's `READ_ONCE()`, and a stale value only means the midlayer
        // aborts a command that just completed, which it tolerates.
        let state = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*self.0.get()).state)) };
        state & (1 << bindings::SCMD_STATE_COMPLETE) != 0
    }

    /// Returns the blk-mq unique tag (`blk_mq_unique_tag()`): the hardware
    /// queue in the upper 16 bits, the tag in the lower.
    ///
    /// `None` for a command that blk-mq did not allocate, which has neither:
    /// the one the `SG_SCSI_RESET` ioctl hands to the reset handlers
    /// (`scsi_ioctl_reset()` allocates it with `kzalloc()`, so its request
    /// has no hardware queue context).
    pub(crate) fn unique_tag(&self) -> Option<u32> {
        // SAFETY: The command is valid (type invariant) and lies right behind
        // its request, which blk-mq or `scsi_ioctl_reset()` allocated with it.
        let rq = unsafe { cmd_to_rq(self.0.get()) };
        // SAFETY: The request is valid as long as the command. blk-mq sets
        // `mq_hctx` when it allocates the request and clears it when it frees
        // it; the ioctl's request keeps the null of its `kzalloc()`.
        if unsafe { (*rq).mq_hctx }.is_null() {
            return None;
        }
        // SAFETY: A request with a hardware queue context, which
        // `blk_mq_unique_tag()` reads.
        Some(unsafe { bindings::blk_mq_unique_tag(rq) })
    }

    /// Returns how long ago the command was first issued, in milliseconds
    /// (`jiffies - jiffies_at_alloc`: retries keep the first issue time).
    pub(crate) fn age_ms(&self) -> u32 {
        // SAFETY: The command is valid for the reference's lifetime; the
        // helper reads one field and `jiffies`.
        unsafe { bindings::vscsi_scmd_age_ms(self.0.get()) }
    }

    /// Returns the command's timeout (its request's), in milliseconds; 0
    /// for a command without a blk-mq request.
    pub(crate) fn timeout_ms(&self) -> u32 {
        // SAFETY: A midlayer command lies right behind its request.
        let rq = unsafe { cmd_to_rq(self.0.get()) };
        // SAFETY: The request is valid with its command; `timeout` is set
        // before the command is issued and not written while it times out.
        let timeout = unsafe { (*rq).timeout };
        // SAFETY: Plain conversion.
        unsafe { bindings::jiffies_to_msecs(timeout as kernel::ffi::c_ulong) }
    }

    /// Returns whether a device queue still holds the command (it went on
    /// one and has not come back). The error handler must not finish or
    /// retry such a command: the device may still write into it.
    pub(crate) fn in_device(&self) -> bool {
        // SAFETY: The error handlers only get commands of hosts of a
        // `Template`, whose private area starts with an initialised state
        // (`init_cmd_priv`; the `SG_SCSI_RESET` ioctl's command is zeroed
        // by `scsi_ioctl_reset()`, which reads as "not in a device"); the
        // command is valid for the reference's lifetime.
        unsafe { cmd_state(self.0.get()) }
            .in_device
            .load(Ordering::Acquire)
    }
}

/// Returns `host<N>` as a NUL-terminated name.
fn host_dir_name(n: u32) -> [u8; 16] {
    let mut name = [0u8; 16];
    name[..4].copy_from_slice(b"host");
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut v = n;
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..len {
        name[4 + i] = digits[len - 1 - i];
    }
    name
}

/// A SCSI device (`struct scsi_device`), as passed to template callbacks.
///
/// # Invariants
///
/// `self.0` is a valid `scsi_device` for the lifetime of the reference.
#[repr(transparent)]
pub(crate) struct ScsiDevice(Opaque<bindings::scsi_device>);

// SAFETY: `struct scsi_device` embeds its `sdev_gendev`, valid for as long
// as the device is (type invariant). Messages on it name the device as
// `H:C:T:L`.
unsafe impl crate::abstractions::device::AsRawDevice for ScsiDevice {
    fn as_raw_device(&self) -> *mut bindings::device {
        // SAFETY: The device is valid (type invariant).
        unsafe { core::ptr::addr_of_mut!((*self.0.get()).sdev_gendev) }
    }
}

impl ScsiDevice {
    /// # Safety
    ///
    /// `ptr` must be valid for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::scsi_device) -> &'a Self {
        // SAFETY: `ScsiDevice` is transparent over `scsi_device`; the caller
        // guarantees validity.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn raw(&self) -> *mut bindings::scsi_device {
        self.0.get()
    }

    /// Returns the host's `cmd_per_lun`.
    pub(crate) fn host_cmd_per_lun(&self) -> i32 {
        // SAFETY: A device's host outlives it.
        i32::from(unsafe { (*(*self.raw()).host).cmd_per_lun })
    }

    /// Returns the device's channel, target id and LUN.
    pub(crate) fn address(&self) -> (u32, u32, u64) {
        // SAFETY: The device is valid (type invariant); these never change.
        unsafe {
            let d = self.raw();
            ((*d).channel, (*d).id, (*d).lun)
        }
    }

    /// Sends a data-in command and waits for it (`scsi_execute_cmd()`):
    /// returns the SCSI result (0: good; host byte in bits 16-23) or an
    /// error if it could not be sent. May sleep.
    pub(crate) fn execute_in(
        &self,
        cdb: &[u8],
        buf: &mut [u8],
        timeout_ms: u32,
        retries: i32,
    ) -> Result<i32> {
        let len = u32::try_from(buf.len())?;
        // SAFETY: Pure conversion.
        let timeout = unsafe { bindings::__msecs_to_jiffies(timeout_ms) };
        let timeout = i32::try_from(timeout).unwrap_or(i32::MAX);
        // SAFETY: The device is valid and referenced by the caller; `cdb`
        // and `buf` are valid for the whole (synchronous) call; the midlayer
        // bounces `buf` if it cannot be mapped directly.
        let ret = unsafe {
            bindings::vscsi_scsi_execute_in(
                self.raw(),
                cdb.as_ptr(),
                buf.as_mut_ptr().cast(),
                len,
                timeout,
                retries,
            )
        };
        if ret < 0 {
            Err(Error::from_errno(ret))
        } else {
            Ok(ret)
        }
    }

    /// Revalidates the device: capacity, mode pages (`scsi_rescan_device()`).
    /// May sleep.
    pub(crate) fn rescan(&self) {
        // SAFETY: The device is valid and the caller holds a reference.
        unsafe { bindings::scsi_rescan_device(self.raw()) };
    }

    /// Removes the device (`scsi_remove_device()`). May sleep.
    pub(crate) fn remove(&self) {
        // SAFETY: The device is valid and the caller holds a reference (as
        // `HostRef::for_each_device` does).
        unsafe { bindings::scsi_remove_device(self.raw()) };
    }

    /// Sets the queue depth (`scsi_change_queue_depth()`); returns the new
    /// depth.
    pub(crate) fn change_queue_depth(&self, depth: i32) -> i32 {
        // SAFETY: The device is valid (type invariant).
        unsafe { bindings::scsi_change_queue_depth(self.raw(), depth) }
    }
}

/// A SCSI device being set up, as passed to [`HostTemplate::slave_alloc`]:
/// a [`ScsiDevice`] whose scan flags may still be set.
///
/// Only `slave_alloc` gets one, so only it can change what the midlayer
/// reads without synchronisation once the device is scanned:
///
/// ```compile_fail
/// fn change_queue_depth(sdev: &ScsiDevice, depth: i32) -> i32 {
///     sdev.add_bflags(BLIST_TRY_VPD_PAGES); // No such method on `ScsiDevice`.
///     sdev.change_queue_depth(depth)
/// }
/// ```
///
/// # Invariants
///
/// `self.0` is a device that `scsi_alloc_sdev()` is setting up, for the
/// lifetime of the reference. The scanning thread, which holds the host's
/// `scan_mutex` and runs `slave_alloc`, has not sent the device a command
/// yet, and nothing reads `sdev_bflags` before `slave_alloc` returns: the
/// scan reads it afterwards in the same thread, and the other readers
/// (sense handling of the device's commands, sd, sysfs) come later still.
#[repr(transparent)]
pub(crate) struct SlaveAllocDevice(ScsiDevice);

impl SlaveAllocDevice {
    /// # Safety
    ///
    /// `ptr` must be a device that `scsi_alloc_sdev()` passes to
    /// `slave_alloc`, and `'a` must end when `slave_alloc` returns.
    unsafe fn from_raw<'a>(ptr: *mut bindings::scsi_device) -> &'a Self {
        // INVARIANT: The caller guarantees it.
        // SAFETY: `SlaveAllocDevice` is transparent over `ScsiDevice`, itself
        // transparent over `scsi_device`; the caller guarantees validity.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// Adds blacklist flags (`BLIST_*`) to the device (`sdev_bflags`).
    pub(crate) fn add_bflags(&self, flags: u64) {
        // SAFETY: By the type invariant nobody else accesses the flags
        // while `self` lives. No other thread can call this meanwhile: the
        // type is not `Sync` (`Opaque`), so the reference stays in the
        // thread running `slave_alloc`.
        unsafe { (*self.0.raw()).sdev_bflags |= flags };
    }
}

impl core::ops::Deref for SlaveAllocDevice {
    type Target = ScsiDevice;

    fn deref(&self) -> &ScsiDevice {
        &self.0
    }
}

/// `BLIST_TRY_VPD_PAGES`: read VPD pages even from SPC-2 devices.
pub(crate) const BLIST_TRY_VPD_PAGES: u64 = 1 << 28;

/// A command handed to the driver by [`HostTemplate::queuecommand`].
///
/// The driver owns it until it calls [`Command::done`] (or hands it to a
/// device queue, which gives it back). Dropping it completes it with
/// `DID_ERROR`, so a command is never lost.
///
/// # Invariants
///
/// `sc` is a command that the midlayer gave to `queuecommand` and that has
/// not been completed; its `cmd_size` private area belongs to this value.
pub(crate) struct Command<T: HostTemplate> {
    sc: NonNull<bindings::scsi_cmnd>,
    _p: PhantomData<T>,
}

// SAFETY: A command may be completed from any context and CPU.
unsafe impl<T: HostTemplate> Send for Command<T> {}

impl<T: HostTemplate> Command<T> {
    fn raw(&self) -> *mut bindings::scsi_cmnd {
        self.sc.as_ptr()
    }

    /// Returns the CDB and the private area together (they do not overlap).
    pub(crate) fn cdb_and_private(&mut self) -> (&[u8], &mut [u8]) {
        // SAFETY: The `T::CMD_SIZE` bytes behind an owned command belong to
        // it and, while we own it, to us alone; the CDB lies inside the
        // command, not in that area.
        let private = unsafe { core::slice::from_raw_parts_mut(cmd_priv(self.raw()), T::CMD_SIZE) };
        let sc = self.raw();
        // SAFETY: The command is valid and owned (type invariant), so
        // nobody writes its CDB and length while we borrow them. Only those
        // fields are referenced, through raw projections: other fields
        // (`state`) change concurrently. `cmnd` lies inside the command,
        // disjoint from the private area behind it.
        let (cmd_len, cmnd) = unsafe { ((*sc).cmd_len, &*core::ptr::addr_of!((*sc).cmnd)) };
        let len = usize::from(cmd_len).min(cmnd.len());
        (&cmnd[..len], private)
    }

    /// Returns the direction of the data transfer.
    pub(crate) fn data_direction(&self) -> DataDirection {
        // SAFETY: The command is valid and owned (type invariant).
        match unsafe { (*self.raw()).sc_data_direction } {
            bindings::dma_data_direction_DMA_TO_DEVICE => DataDirection::ToDevice,
            bindings::dma_data_direction_DMA_FROM_DEVICE => DataDirection::FromDevice,
            bindings::dma_data_direction_DMA_BIDIRECTIONAL => DataDirection::Bidirectional,
            _ => DataDirection::None,
        }
    }

    /// Returns the target id and LUN of the command's device.
    pub(crate) fn id_lun(&self) -> (u32, u64) {
        // SAFETY: The command is valid and owned; its device outlives it.
        unsafe {
            let sdev = (*self.raw()).device;
            ((*sdev).id, (*sdev).lun)
        }
    }

    /// Returns the blk-mq unique tag (`blk_mq_unique_tag()`): the hardware
    /// queue in the upper 16 bits, the tag in the lower.
    pub(crate) fn unique_tag(&self) -> u32 {
        // SAFETY: The command is owned (type invariant), so it and the
        // request it was allocated behind are valid.
        unsafe { bindings::blk_mq_unique_tag(cmd_to_rq(self.raw())) }
    }

    /// Returns whether this is the last command of a batch (`SCMD_LAST`):
    /// the device should be notified.
    pub(crate) fn is_last(&self) -> bool {
        // SAFETY: The command is valid and owned (type invariant).
        let flags = unsafe { (*self.raw()).flags };
        flags & bindings::SCMD_LAST as i32 != 0
    }

    /// Returns the number of data segments (`scsi_sg_count()`).
    pub(crate) fn sg_count(&self) -> u32 {
        // SAFETY: The command is valid and owned (type invariant).
        unsafe { (*self.raw()).sdb.table.nents }
    }

    /// Returns the data length in bytes (`scsi_bufflen()`).
    pub(crate) fn bufflen(&self) -> u32 {
        // SAFETY: The command is valid and owned (type invariant).
        unsafe { (*self.raw()).sdb.length }
    }

    /// Returns the protection information scatterlist, if any travels with
    /// the data (`scsi_prot_sglist()` when `scsi_prot_sg_count()` is not 0).
    fn prot_sgl(&self) -> Option<*mut bindings::scatterlist> {
        // SAFETY: The command is valid and owned (type invariant).
        let prot = unsafe { (*self.raw()).prot_sdb };
        if prot.is_null() {
            return None;
        }
        // SAFETY: A non-null `prot_sdb` is valid while the command is.
        let (sgl, nents) = unsafe { ((*prot).table.sgl, (*prot).table.nents) };
        (nents != 0 && !sgl.is_null()).then_some(sgl)
    }

    /// Returns the number of protection information bytes that travel with
    /// the data (0 without PI), as `pi_bytesout`/`pi_bytesin` want them.
    pub(crate) fn prot_bytes(&self) -> u32 {
        if self.prot_sgl().is_none() {
            return 0;
        }
        // SAFETY: The command is valid and owned; the helper only reads it,
        // its request and its disk's integrity profile.
        unsafe { bindings::vscsi_scsi_prot_bytes(self.raw()) }
    }

    /// Returns the private area and the sense buffer together (separate
    /// allocations, so they do not overlap).
    pub(crate) fn private_and_sense(&mut self) -> (&mut [u8], &mut [u8]) {
        // SAFETY: The template's `cmd_size` (`T::CMD_SIZE`) bytes right
        // behind the command belong to it and, while it is owned, to us.
        let private = unsafe { core::slice::from_raw_parts_mut(cmd_priv(self.raw()), T::CMD_SIZE) };
        // SAFETY: The midlayer allocates `SCSI_SENSE_BUFFERSIZE` bytes of
        // sense buffer for every command, apart from the private area; it is
        // ours while we own the command.
        let sense = unsafe {
            core::slice::from_raw_parts_mut((*self.raw()).sense_buffer, SENSE_BUFFERSIZE)
        };
        (private, sense)
    }

    /// Sets the result (`result`): host byte and SAM status byte.
    pub(crate) fn set_result(&mut self, host: HostByte, status: u8) {
        // SAFETY: The command is valid and owned (type invariant).
        unsafe { (*self.raw()).result = (i32::from(host as u8) << 16) | i32::from(status) };
    }

    /// Sets the residual byte count (`scsi_set_resid()`).
    pub(crate) fn set_resid(&mut self, resid: u32) {
        // SAFETY: The command is valid and owned (type invariant).
        unsafe { (*self.raw()).resid_len = resid };
    }

    /// Completes the command (`scsi_done()`).
    pub(crate) fn done(self) {
        let sc = self.raw();
        core::mem::forget(self);
        // SAFETY: The command was owned and is completed exactly once.
        unsafe { bindings::scsi_done(sc) };
    }

    /// Turns the command into a device request whose headers are the
    /// `out_hdr` and `in_hdr` byte ranges of its private area, followed in
    /// the command's direction by its protection information (if any) and
    /// its data. Commands with data both ways are refused (`EINVAL`), as are
    /// overlapping ranges or ranges outside the area.
    pub(crate) fn into_request(
        self,
        out_hdr: Range<usize>,
        in_hdr: Range<usize>,
    ) -> Result<CommandRequest<T>, (Self, Error)> {
        let cmd_size = T::CMD_SIZE;
        let ok = out_hdr.start < out_hdr.end
            && out_hdr.end <= cmd_size
            && in_hdr.start < in_hdr.end
            && in_hdr.end <= cmd_size
            && (out_hdr.end <= in_hdr.start || in_hdr.end <= out_hdr.start)
            && self.data_direction() != DataDirection::Bidirectional;
        if !ok {
            return Err((self, EINVAL));
        }
        Ok(CommandRequest {
            cmd: self,
            out_hdr,
            in_hdr,
        })
    }

    /// # Safety
    ///
    /// `sc` must be a command the midlayer handed to the driver and that is
    /// not completed nor owned by another `Command`.
    unsafe fn from_raw(sc: *mut bindings::scsi_cmnd) -> Option<Self> {
        // INVARIANT: The caller guarantees the command is ours.
        NonNull::new(sc).map(|sc| Self {
            sc,
            _p: PhantomData,
        })
    }
}

impl<T: HostTemplate> Drop for Command<T> {
    fn drop(&mut self) {
        // A command that nobody completed would hang its issuer until the
        // midlayer's timeout: fail it now.
        self.set_result(HostByte::Error, 0);
        // SAFETY: The command is owned and completed exactly once, here.
        unsafe { bindings::scsi_done(self.raw()) };
    }
}

/// A [`Command`] with its header layout, ready to go on a virtqueue.
pub(crate) struct CommandRequest<T: HostTemplate> {
    cmd: Command<T>,
    out_hdr: Range<usize>,
    in_hdr: Range<usize>,
}

impl<T: HostTemplate> CommandRequest<T> {
    /// Returns the command back, for completion.
    pub(crate) fn into_command(self) -> Command<T> {
        self.cmd
    }
}

// SAFETY: The headers lie in the command's private area and the data in its
// scatterlist, all owned by the command until it is completed; the command
// pointer is the token, and only a `CommandRequest` turns it back.
unsafe impl<T: HostTemplate> Request for CommandRequest<T> {
    fn sgs(&mut self, sgs: &mut SgList) {
        let sc = self.cmd.raw();
        // SAFETY: The private area follows the command (see `private_and_sense`).
        let base = unsafe { cmd_priv(sc) };
        let dir = self.cmd.data_direction();
        // SAFETY: The command is owned, so its scatterlist is valid.
        let (data, nents) = unsafe { ((*sc).sdb.table.sgl, (*sc).sdb.table.nents) };
        let has_data = !data.is_null() && nents != 0;
        let prot = self.cmd.prot_sgl();
        // The ranges were checked against the private area in
        // `into_request`, which is directly mapped memory the command owns;
        // the data scatterlist is the midlayer's, end-marked, and owned by
        // the command. Pushing cannot fail: at most four lists, two local.
        // SAFETY: As above.
        let _ = unsafe {
            sgs.push_buf(
                base.add(self.out_hdr.start),
                (self.out_hdr.end - self.out_hdr.start) as u32,
                false,
            )
        };
        if has_data && dir == DataDirection::ToDevice {
            // Protection information goes in front of the data it protects.
            if let Some(prot) = prot {
                // SAFETY: As above; the protection list is owned likewise.
                let _ = unsafe { sgs.push_list(prot, false) };
            }
            // SAFETY: As above.
            let _ = unsafe { sgs.push_list(data, false) };
        }
        // SAFETY: As above.
        let _ = unsafe {
            sgs.push_buf(
                base.add(self.in_hdr.start),
                (self.in_hdr.end - self.in_hdr.start) as u32,
                true,
            )
        };
        if has_data && dir == DataDirection::FromDevice {
            if let Some(prot) = prot {
                // SAFETY: As above; the protection list is owned likewise.
                let _ = unsafe { sgs.push_list(prot, true) };
            }
            // SAFETY: As above.
            let _ = unsafe { sgs.push_list(data, true) };
        }
    }

    fn into_token(self) -> NonNull<kernel::ffi::c_void> {
        let sc = self.cmd.sc;
        // SAFETY: The command is owned, so allocated and initialised.
        unsafe { cmd_state(sc.as_ptr()) }
            .in_device
            .store(true, Ordering::Release);
        core::mem::forget(self.cmd);
        sc.cast()
    }

    unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self {
        // SAFETY: The token is a command turned into it by `into_token`
        // (caller contract), still allocated: the device held it.
        unsafe { cmd_state(token.as_ptr().cast()) }
            .in_device
            .store(false, Ordering::Release);
        // The header ranges are not needed after the device is done; keep
        // empty ones.
        // INVARIANT: The token is a command owned by the request that was
        // turned into it (caller contract).
        Self {
            cmd: Command {
                sc: token.cast(),
                _p: PhantomData,
            },
            out_hdr: 0..0,
            in_hdr: 0..0,
        }
    }
}

/// Glue between the C template ops and a [`HostTemplate`].
struct Adapter<T: HostTemplate>(PhantomData<T>);

impl<T: HostTemplate> Adapter<T> {
    /// # Safety
    ///
    /// `shost` must be a live host allocated by [`Host::alloc`] for `T`.
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
        if sc.is_null() {
            return 0;
        }
        // SAFETY: A command of a host of this template, allocated and
        // initialised by the midlayer.
        if unsafe { cmd_state(sc) }.in_device.load(Ordering::Acquire) {
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
        let Some(cmd) = (unsafe { Command::from_raw(sc) }) else {
            return 0;
        };
        match T::queuecommand(data, cmd) {
            Ok(()) => 0,
            Err(QueueError::HostBusy(cmd)) if cmd.raw() == sc => {
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
        // `blk_mq_update_queue_map()` for the host's tag set; `maps` does
        // not outlive the call.
        let mut maps = unsafe { QueueMaps::from_host(shost) };
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
    unsafe extern "C" fn debugfs_read(
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
        // SAFETY: `m` is valid during the call; `SeqFile` is transparent.
        T::debugfs_show(host, unsafe { &*m.cast::<SeqFile>() });
        0
    }

    /// # Safety
    ///
    /// Called by the workqueue for the work item of a host of `T`, which
    /// `Host::remove` disables (waiting for this function) before the host
    /// is removed or its data dropped.
    unsafe extern "C" fn work(work: *mut bindings::work_struct) {
        let off = core::mem::offset_of!(HostPriv<T::HostData>, work)
            + core::mem::offset_of!(bindings::Scsi_Host, hostdata);
        // SAFETY: `work` is the `work` field of the `HostPriv` in the
        // `hostdata` of a `Scsi_Host` (`container_of()`).
        let shost = unsafe { work.cast::<u8>().sub(off) }.cast::<bindings::Scsi_Host>();
        // SAFETY: The work only runs between `Host::add` (queueing checks
        // it) and `Host::remove` (which disables it first).
        T::work(unsafe { HostRef::from_raw(shost) });
    }

    /// # Safety
    ///
    /// `sc` must be a command of a live, added host of `T`, as the midlayer
    /// passes to the `eh_*` callbacks.
    unsafe fn eh_args<'a>(sc: *mut bindings::scsi_cmnd) -> (HostRef<'a, T>, &'a EhCommand) {
        // SAFETY: The caller guarantees `sc`; its device and host are valid.
        unsafe {
            let shost = (*(*sc).device).host;
            (HostRef::from_raw(shost), EhCommand::from_raw(sc))
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
    /// # Safety
    ///
    /// As for [`Self::eh_args`].
    unsafe fn eh_handler(
        sc: *mut bindings::scsi_cmnd,
        f: fn(HostRef<'_, T>, &EhCommand) -> EhResult,
    ) -> i32 {
        // SAFETY: The caller passes a command of a live, added host of `T`.
        let (host, cmd) = unsafe { Self::eh_args(sc) };
        f(host, cmd).to_c()
    }

    /// # Safety
    ///
    /// Called by the error handler with a command of a host of `T`.
    unsafe extern "C" fn eh_abort(sc: *mut bindings::scsi_cmnd) -> i32 {
        // SAFETY: The midlayer passes such a command.
        unsafe { Self::eh_handler(sc, T::eh_abort) }
    }

    /// # Safety
    ///
    /// Called by the error handler with a command of a host of `T`.
    unsafe extern "C" fn eh_device_reset(sc: *mut bindings::scsi_cmnd) -> i32 {
        // SAFETY: The midlayer passes such a command.
        unsafe { Self::eh_handler(sc, T::eh_device_reset) }
    }

    /// # Safety
    ///
    /// Called by the error handler with a command of a host of `T`.
    unsafe extern "C" fn eh_target_reset(sc: *mut bindings::scsi_cmnd) -> i32 {
        // SAFETY: The midlayer passes such a command.
        unsafe { Self::eh_handler(sc, T::eh_target_reset) }
    }

    /// # Safety
    ///
    /// Called by the error handler with a command of a host of `T`.
    unsafe extern "C" fn eh_host_reset(sc: *mut bindings::scsi_cmnd) -> i32 {
        // SAFETY: The midlayer passes such a command.
        unsafe { Self::eh_handler(sc, T::eh_host_reset) }
    }

    /// # Safety
    ///
    /// Called by the midlayer with a device of a live host of `T`.
    unsafe extern "C" fn change_queue_depth(sdev: *mut bindings::scsi_device, depth: i32) -> i32 {
        // SAFETY: The device is valid during the call.
        T::change_queue_depth(unsafe { ScsiDevice::from_raw(sdev) }, depth)
    }
}
