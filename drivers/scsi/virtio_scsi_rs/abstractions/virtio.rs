// SPDX-License-Identifier: GPL-2.0

//! Virtio drivers and devices.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h).

use crate::abstractions::device::{dev_warn, AsRawDevice};
use crate::abstractions::sync::{
    msleep, new_spinlock_irq, synchronize_rcu, Completion, RcuReadGuard, SpinLockIrq,
    SpinLockIrqGuard,
};
use crate::abstractions::bindings;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::alloc::Flags;
use kernel::error::{from_result, to_result};
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex, UniqueArc};
use kernel::types::{ForeignOwnable, Opaque};

/// Transport feature: indirect descriptors (`VIRTIO_RING_F_INDIRECT_DESC`).
pub(crate) const RING_F_INDIRECT_DESC: u32 = bindings::VIRTIO_RING_F_INDIRECT_DESC;

/// Returns the number of possible CPU ids (`nr_cpu_ids`).
pub(crate) fn nr_cpu_ids() -> u32 {
    // SAFETY: `nr_cpu_ids` is set during early boot and only read after.
    unsafe { bindings::nr_cpu_ids }
}

/// A virtio device, as passed to a driver's callbacks (`struct virtio_device`).
///
/// # Invariants
///
/// `self.0` is a `struct virtio_device` that is bound, or being bound, to the
/// driver whose callback received the reference: it stays valid for at least
/// as long as the reference.
#[repr(transparent)]
pub(crate) struct Device(Opaque<bindings::virtio_device>);

impl Device {
    /// Creates a reference to a device from a pointer the virtio core passed.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct virtio_device` that stays valid
    /// for the lifetime `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::virtio_device) -> &'a Self {
        // INVARIANT: The caller guarantees validity for `'a`.
        // SAFETY: `Device` is a transparent wrapper of `virtio_device`, and
        // the caller guarantees the pointee is valid for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::virtio_device {
        self.0.get()
    }

    /// Returns whether the feature bit `fbit` was negotiated
    /// (`virtio_has_feature()`).
    pub(crate) fn has_feature(&self, fbit: u32) -> bool {
        // SAFETY: By the type invariant the device is valid.
        unsafe { bindings::vscsi_virtio_has_feature(self.as_raw(), fbit) }
    }

    /// Returns whether the transport gives access to the configuration space
    /// (`vdev->config->get` is set).
    pub(crate) fn has_config_access(&self) -> bool {
        // SAFETY: By the type invariant the device is valid, and so is its
        // `config` ops table, set by the transport before the device exists.
        unsafe { bindings::vscsi_virtio_has_config_access(self.as_raw()) }
    }

    /// Checks that the configuration space can be read and `offset` fits the
    /// C interface.
    fn check_config_access(&self, offset: usize) -> Result<u32> {
        if !self.has_config_access() {
            return Err(ENODEV);
        }
        u32::try_from(offset).map_err(|_| EINVAL)
    }

    /// Reads the 16-bit configuration field at `offset` (`virtio_cread16()`),
    /// converted to CPU byte order.
    pub(crate) fn cread16(&self, offset: usize) -> Result<u16> {
        let offset = self.check_config_access(offset)?;
        // SAFETY: The device is valid (type invariant) and has a `get`
        // config op (checked above). Offsets come from the driver's
        // description of its config layout.
        Ok(unsafe { bindings::vscsi_virtio_cread16(self.as_raw(), offset) })
    }

    /// Reads the 32-bit configuration field at `offset` (`virtio_cread32()`),
    /// converted to CPU byte order.
    pub(crate) fn cread32(&self, offset: usize) -> Result<u32> {
        let offset = self.check_config_access(offset)?;
        // SAFETY: As in `cread16`.
        Ok(unsafe { bindings::vscsi_virtio_cread32(self.as_raw(), offset) })
    }

    /// Writes the 32-bit configuration field at `offset` (`virtio_cwrite32()`).
    pub(crate) fn cwrite32(&self, offset: usize, val: u32) -> Result {
        let offset = self.check_config_access(offset)?;
        // SAFETY: As in `cread16`; a transport without a `set` op ignores
        // the write.
        unsafe { bindings::vscsi_virtio_cwrite32(self.as_raw(), offset, val) };
        Ok(())
    }

    /// Sets `DRIVER_OK` (`virtio_device_ready()`). Probe need not: the
    /// virtio core does it after a successful probe or restore; a restore
    /// that kicks its queues calls it first.
    pub(crate) fn ready(&self) {
        // SAFETY: By the type invariant the device is valid.
        unsafe { bindings::vscsi_virtio_device_ready(self.as_raw()) };
    }

    /// Returns whether the device asks to be reset: its status has
    /// `DEVICE_NEEDS_RESET` (virtio 1.x, 2.1.2). A device sets it when it
    /// cannot go on without a reset, and then announces a configuration
    /// change ([`Driver::config_changed`]).
    pub(crate) fn needs_reset(&self) -> bool {
        // SAFETY: By the type invariant the device is valid; every
        // transport provides `get_status`, which may be called from any
        // context.
        unsafe { bindings::vscsi_virtio_needs_reset(self.as_raw()) }
    }

    /// Resets the device and initialises it again, as suspend and resume do
    /// (`virtio_device_freeze()`, then `virtio_device_restore()`): the bound
    /// driver's [`Driver::freeze`] and [`Driver::restore`] run, with the
    /// device lock held and allocations made without I/O (`GFP_NOIO`).
    /// Fails with `EAGAIN` if that cannot be done now or here (the device
    /// lock is taken by remove, bind or a system sleep callback; the device
    /// is between system sleep callbacks; the kernel lacks
    /// `CONFIG_PM_SLEEP`), with `ENODEV` if no driver is bound, and with
    /// the error of a failed freeze or restore.
    ///
    /// Must not be called from the driver's own callbacks (the device lock
    /// may be held there).
    pub(crate) fn reset_and_restore(&self) -> Result {
        // SAFETY: By the type invariant the device is valid; the helper
        // checks the binding under the device lock.
        to_result(unsafe { bindings::vscsi_virtio_reset_restore(self.as_raw()) })
    }
}

/// The device as driver `T` sees it in [`Driver::probe`] and
/// [`Driver::restore`]: bound (or being bound) to `T`. Virtqueues are
/// created through it only, so their callbacks can only ever assume `T`'s
/// driver data.
///
/// # Invariants
///
/// `dev` is bound, or being bound, to driver `T`, for the lifetime `'a`.
pub(crate) struct DriverDevice<'a, T: Driver> {
    dev: &'a Device,
    binding: &'a Arc<Binding>,
    _p: PhantomData<T>,
}

impl<T: Driver> core::ops::Deref for DriverDevice<'_, T> {
    type Target = Device;

    fn deref(&self) -> &Device {
        self.dev
    }
}

// SAFETY: The embedded `struct device` of `dev` is valid for as long as
// `dev` is, which outlives `self`.
unsafe impl<T: Driver> AsRawDevice for DriverDevice<'_, T> {
    fn as_raw_device(&self) -> *mut bindings::device {
        self.dev.as_raw_device()
    }
}

impl<T: Driver> DriverDevice<'_, T> {
    /// Finds the device's virtqueues (`virtio_find_vqs()`).
    ///
    /// `queues` names the queues in device order and says which ones get an
    /// interrupt callback ([`Driver::vq_done`]); `pre_vectors` interrupt
    /// vectors are kept out of the managed affinity spread, the others get
    /// the default spread without the CPU hotplug lock being taken (so the
    /// queues can be re-created while a CPU going offline waits for the
    /// driver's requests, see `vscsi_virtio_find_vqs()`). The returned
    /// queues are turned into [`Queue`]s; once all of those are gone the
    /// device is reset and its virtqueues deleted.
    pub(crate) fn find_vqs(
        &self,
        queues: &[QueueInfo],
        pre_vectors: u32,
    ) -> Result<KVec<RawQueue>> {
        let n = queues.len();
        let mut infos = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut vqs = KVec::with_capacity(n, GFP_KERNEL)?;
        for q in queues {
            infos.push(
                bindings::virtqueue_info {
                    name: q.name.as_char_ptr(),
                    callback: if q.callback {
                        Some(Adapter::<T>::vq_callback)
                    } else {
                        None
                    },
                    ctx: false,
                },
                GFP_KERNEL,
            )?;
            vqs.push(core::ptr::null_mut(), GFP_KERNEL)?;
        }
        let mut desc = bindings::irq_affinity {
            pre_vectors,
            ..Default::default()
        };
        // Allocated first: once the virtqueues exist, only the set deletes
        // them, so nothing may fail before it holds them.
        let set = UniqueArc::<QueueSet>::new_uninit(GFP_KERNEL)?;
        let mut raw = KVec::with_capacity(n, GFP_KERNEL)?;
        // The callbacks are `vq_callback`, which tolerates running before the
        // driver data is set.
        // SAFETY: The device is valid (type invariant); `vqs` and `infos`
        // hold `n` entries each and outlive the call; `desc` is valid.
        to_result(unsafe {
            bindings::vscsi_virtio_find_vqs(
                self.as_raw(),
                u32::try_from(n)?,
                vqs.as_mut_ptr(),
                infos.as_mut_ptr(),
                &mut desc,
            )
        })?;
        // From here on, dropping the last `RawQueue` resets the device and
        // deletes its virtqueues, including on the error path below.
        let init = pin_init!(QueueSet {
            vdev: self.as_raw(),
            reset: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            reset_done <- Completion::new(),
        });
        let set: Arc<QueueSet> = match set.write_pin_init(init) {
            Ok(set) => set.into(),
            Err(never) => match never {},
        };
        for vq in vqs.iter() {
            let vq = NonNull::new(*vq).ok_or(EINVAL)?;
            // Within the capacity reserved above: no allocation.
            raw.push(
                RawQueue {
                    vq,
                    set: set.clone(),
                },
                GFP_ATOMIC,
            )?;
        }
        Ok(raw)
    }
}

/// Whether a device is still bound to the driver that took a
/// [`DeviceRef`]: set from probe until the driver's remove has returned.
#[pin_data]
struct Binding {
    #[pin]
    bound: Mutex<bool>,
}

impl Binding {
    fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            bound <- new_mutex!(true),
        })
    }

    /// Ends the binding, once the users of [`DeviceRef::access`] are done.
    fn revoke(&self) {
        *self.bound.lock() = false;
    }
}

/// A counted reference to a virtio device (`get_device()`/`put_device()`),
/// for data that must name the device outside its callbacks: messages can
/// always name it ([`AsRawDevice`]); its transport operations are reached
/// through [`DeviceRef::access`], only while the driver that took the
/// reference is bound.
///
/// # Invariants
///
/// `ptr` is a virtio device whose embedded `struct device` we hold a
/// reference on, so it stays allocated until this value is dropped;
/// `binding` is true for as long as the device is bound to the driver that
/// made this reference (from [`DriverDevice::get`]).
pub(crate) struct DeviceRef {
    ptr: NonNull<bindings::virtio_device>,
    binding: Arc<Binding>,
}

// SAFETY: Device references may be taken and dropped on any thread; the
// binding is a mutex.
unsafe impl Send for DeviceRef {}
// SAFETY: Shared access only names the device, or reaches it under the
// binding's mutex.
unsafe impl Sync for DeviceRef {}

impl<T: Driver> DriverDevice<'_, T> {
    /// Takes a counted reference to the device, tied to this binding.
    pub(crate) fn get(&self) -> DeviceRef {
        // SAFETY: The device is valid (type invariant); the reference taken
        // here is put in `DeviceRef::drop`.
        unsafe { bindings::get_device(self.dev.as_raw_device()) };
        // INVARIANT: We hold a reference on the device; the binding is the
        // one of the driver bound to it.
        DeviceRef {
            // SAFETY: `Opaque::get` of a valid device is not null.
            ptr: unsafe { NonNull::new_unchecked(self.dev.as_raw()) },
            binding: self.binding.clone(),
        }
    }
}

/// A [`Device`] reached through a [`DeviceRef`] while its driver is bound:
/// its remove waits until this is dropped. Hold it for one operation, never
/// across a wait for the driver's own remove.
pub(crate) struct BoundDevice<'a> {
    dev: &'a Device,
    _bound: kernel::sync::lock::Guard<'a, bool, kernel::sync::lock::mutex::MutexBackend>,
}

impl core::ops::Deref for BoundDevice<'_> {
    type Target = Device;

    fn deref(&self) -> &Device {
        self.dev
    }
}

impl DeviceRef {
    /// Returns the device if its driver is still bound (`None` once the
    /// driver's remove has returned). Sleeps (a mutex): process context.
    pub(crate) fn access(&self) -> Option<BoundDevice<'_>> {
        let bound = self.binding.bound.lock();
        if !*bound {
            return None;
        }
        Some(BoundDevice {
            // SAFETY: The device is allocated (type invariant) and bound
            // while the guard is held (`Binding::revoke` waits for it).
            dev: unsafe { Device::from_raw(self.ptr.as_ptr()) },
            _bound: bound,
        })
    }
}

// SAFETY: The embedded `struct device` stays allocated while we hold the
// reference (type invariant); naming it in a message is fine bound or not.
unsafe impl AsRawDevice for DeviceRef {
    fn as_raw_device(&self) -> *mut bindings::device {
        // SAFETY: As above.
        unsafe { core::ptr::addr_of_mut!((*self.ptr.as_ptr()).dev) }
    }
}

impl Drop for DeviceRef {
    fn drop(&mut self) {
        // SAFETY: We hold the reference taken in `DriverDevice::get`.
        unsafe { bindings::put_device(core::ptr::addr_of_mut!((*self.ptr.as_ptr()).dev)) };
    }
}

// SAFETY: `struct virtio_device` embeds its `struct device`, which is valid
// for as long as the `Device` is (type invariant).
unsafe impl AsRawDevice for Device {
    fn as_raw_device(&self) -> *mut bindings::device {
        // SAFETY: By the type invariant the device is valid, so taking the
        // address of its embedded `dev` field is fine.
        unsafe { core::ptr::addr_of_mut!((*self.as_raw()).dev) }
    }
}

/// An entry of a virtio driver's id table (`struct virtio_device_id`).
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(crate) struct DeviceId(bindings::virtio_device_id);

impl DeviceId {
    /// Matches devices of type `device` from any vendor.
    pub(crate) const fn new(device: u32) -> Self {
        Self(bindings::virtio_device_id {
            device,
            vendor: bindings::VIRTIO_DEV_ANY_ID,
        })
    }

    /// The all-zero entry that ends a table.
    pub(crate) const fn end() -> Self {
        Self(bindings::virtio_device_id {
            device: 0,
            vendor: 0,
        })
    }

    const fn is_end(&self) -> bool {
        self.0.device == 0 && self.0.vendor == 0
    }
}

/// Declares the module's virtio id table, under the symbol name that modpost
/// reads to emit `MODULE_ALIAS("virtio:d…v*")` lines (what
/// `MODULE_DEVICE_TABLE(virtio, …)` does in C), and appends the end entry.
///
/// A module has at most one such table.
///
/// # Examples
///
/// ```ignore
/// virtio_device_table!(ID_TABLE, [DeviceId::new(8)]);
/// ```
macro_rules! virtio_device_table {
    ($name:ident, [$($id:expr),+ $(,)?]) => {
        // modpost reads `__mod_<bus>__<name>_device_table` symbols; the
        // table's own name makes the symbol unique within the module.
        #[export_name = concat!("__mod_virtio__", stringify!($name), "_device_table")]
        static $name: [$crate::abstractions::virtio::DeviceId;
            [$(stringify!($id)),+].len() + 1] =
            [$($id,)+ $crate::abstractions::virtio::DeviceId::end()];
    };
}
pub(crate) use virtio_device_table;

/// A virtio driver.
///
/// The C driver ops (`struct virtio_driver`) the trait maps to are named in
/// each method's documentation.
#[vtable]
pub(crate) trait Driver {
    /// Per-device data created by [`Driver::probe`] and handed back to
    /// [`Driver::remove`].
    type Data: ForeignOwnable + Send + Sync;

    /// The driver name (`driver.name`).
    const NAME: &'static CStr;

    /// The devices this driver binds to, ending with [`DeviceId::end`].
    const ID_TABLE: &'static [DeviceId];

    /// The device feature bits the driver understands (`feature_table`).
    const FEATURES: &'static [u32];

    /// Binds the driver to `dev` (`probe`).
    ///
    /// The virtio core sets `DRIVER_OK` after a successful return unless the
    /// driver did so itself.
    fn probe(dev: &DriverDevice<'_, Self>) -> Result<Self::Data>
    where
        Self: Sized;

    /// Called after a successful probe, once the device is `DRIVER_OK` and
    /// `data` is reachable from virtqueue callbacks (`scan`).
    fn scan(_dev: &Device, _data: <Self::Data as ForeignOwnable>::Borrowed<'_>) {}

    /// Unbinds the driver from `dev` (`remove`): stop using the device
    /// (wait for what is in flight). Afterwards the abstraction resets the
    /// device, waits for running callbacks, makes the data unreachable from
    /// new ones, and only then drops it (which drops the driver's
    /// [`Queue`]s, deleting the virtqueues); it waits until every virtqueue
    /// is deleted, so a [`Queue`] kept elsewhere holds up the unbind rather
    /// than outliving the device.
    fn remove(dev: &Device, data: <Self::Data as ForeignOwnable>::Borrowed<'_>);

    /// Quiesces the device for suspend or a reset (`freeze`): on return the
    /// device is reset and its virtqueues deleted ([`Queue::detach`]).
    /// Process context, device lock held.
    fn freeze(_dev: &Device, _data: <Self::Data as ForeignOwnable>::Borrowed<'_>) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Brings the device back after [`Driver::freeze`] (`restore`): the
    /// virtio core has reset it and negotiated the features again; the
    /// driver creates its virtqueues ([`Device::find_vqs`],
    /// [`Queue::attach`]). `DRIVER_OK` follows unless the driver set it.
    fn restore(
        _dev: &DriverDevice<'_, Self>,
        _data: <Self::Data as ForeignOwnable>::Borrowed<'_>,
    ) -> Result
    where
        Self: Sized,
    {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// The device changed its configuration space or its status, e.g. set
    /// `DEVICE_NEEDS_RESET` (`config_changed`). Hard-IRQ context, under the
    /// device's configuration lock. The virtio core calls it only between
    /// the end of a successful probe (or restore) and the start of remove
    /// (or freeze); a change announced outside that window is delivered
    /// when it opens again.
    fn config_changed(_dev: &Device, _data: <Self::Data as ForeignOwnable>::Borrowed<'_>) {}

    /// A virtqueue created with a callback by [`Device::find_vqs`] has new
    /// used buffers (`vring_interrupt()`, hard-IRQ context). `index` is the
    /// queue's position in the list given to `find_vqs`.
    fn vq_done(_data: <Self::Data as ForeignOwnable>::Borrowed<'_>, _index: u32) {}
}

/// Glue between the C `struct virtio_driver` ops and a [`Driver`].
struct Adapter<T: Driver>(PhantomData<T>);

/// What the abstraction keeps in `vdev->priv` while a driver is bound: the
/// binding that [`DeviceRef`]s check, and the driver data
/// (`ForeignOwnable::into_foreign`), null until probe returns it.
struct Bound {
    binding: Arc<Binding>,
    data: *const kernel::ffi::c_void,
}

impl<T: Driver> Adapter<T> {
    /// The `Bound` record of a bound device, or null (volatile: `remove`
    /// clears it while callbacks may read it).
    ///
    /// # Safety
    ///
    /// `vdev` must be valid.
    unsafe fn bound(vdev: *mut bindings::virtio_device) -> *const Bound {
        // SAFETY: The caller passes a valid device.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*vdev).priv_)) }.cast()
    }

    /// # Safety
    ///
    /// Only called by the virtio core with a valid device that is being bound
    /// to this driver, and that stays valid until `remove_callback` returns.
    unsafe extern "C" fn probe_callback(vdev: *mut bindings::virtio_device) -> kernel::ffi::c_int {
        from_result(|| {
            // SAFETY: The virtio core passes a valid device that outlives
            // this call.
            let dev = unsafe { Device::from_raw(vdev) };
            let binding = Arc::pin_init(Binding::new(), GFP_KERNEL)?;
            let mut bound = KBox::new(
                Bound {
                    binding,
                    data: core::ptr::null(),
                },
                GFP_KERNEL,
            )?;
            // INVARIANT: The device is being bound to `T`.
            let data = T::probe(&DriverDevice {
                dev,
                binding: &bound.binding,
                _p: PhantomData,
            })?;
            bound.data = data.into_foreign();
            // SAFETY: `vdev` is valid and `priv` belongs to the bound driver;
            // no callback reads it before probe returns.
            unsafe { (*vdev).priv_ = KBox::into_raw(bound).cast() };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// Only called by the virtio core right after a successful
    /// `probe_callback`, with the device bound.
    unsafe extern "C" fn scan_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio core passes a valid, bound device.
        let dev = unsafe { Device::from_raw(vdev) };
        // SAFETY: `priv` was set by `probe_callback` and is only reclaimed
        // by `remove_callback`, which cannot run concurrently with `scan`.
        let data = unsafe { T::Data::borrow((*Self::bound(vdev)).data) };
        T::scan(dev, data);
    }

    /// # Safety
    ///
    /// Only called by the virtio core for a device bound to this driver
    /// (`virtio_device_freeze()`), which keeps remove out (system sleep:
    /// the PM core's ordering; a reset: the device lock).
    unsafe extern "C" fn freeze_callback(vdev: *mut bindings::virtio_device) -> kernel::ffi::c_int {
        // SAFETY: The virtio core passes a valid, bound device.
        let dev = unsafe { Device::from_raw(vdev) };
        // SAFETY: `priv` was set by `probe_callback` and is only reclaimed
        // by `remove_callback`, which does not run meanwhile.
        let data = unsafe { T::Data::borrow((*Self::bound(vdev)).data) };
        from_result(|| T::freeze(dev, data).map(|()| 0))
    }

    /// # Safety
    ///
    /// As for `freeze_callback` (`virtio_device_restore()`).
    unsafe extern "C" fn restore_callback(
        vdev: *mut bindings::virtio_device,
    ) -> kernel::ffi::c_int {
        // SAFETY: The virtio core passes a valid, bound device.
        let dev = unsafe { Device::from_raw(vdev) };
        // SAFETY: As in `freeze_callback`.
        let bound = unsafe { &*Self::bound(vdev) };
        // SAFETY: As in `freeze_callback`.
        let data = unsafe { T::Data::borrow(bound.data) };
        // INVARIANT: The device is bound to `T`.
        let dev = DriverDevice {
            dev,
            binding: &bound.binding,
            _p: PhantomData,
        };
        from_result(|| T::restore(&dev, data).map(|()| 0))
    }

    /// # Safety
    ///
    /// Only called by the virtio core (`__virtio_config_changed()`) for a
    /// device bound to this driver, once its probe or restore has finished
    /// and before its remove or freeze starts.
    unsafe extern "C" fn config_changed_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio core passes a valid, bound device.
        let dev = unsafe { Device::from_raw(vdev) };
        // SAFETY: `vdev` is valid (above).
        let bound = unsafe { Self::bound(vdev) };
        if bound.is_null() {
            return;
        }
        // SAFETY: `priv` holds the record from `probe_callback`; the virtio
        // core disables configuration callbacks (under the lock this one
        // runs under) before `remove_callback` reclaims it.
        let data = unsafe { T::Data::borrow((*bound).data) };
        T::config_changed(dev, data);
    }

    /// # Safety
    ///
    /// Only called by `vring_interrupt()` for a virtqueue of a device bound
    /// to this driver.
    unsafe extern "C" fn vq_callback(vq: *mut bindings::virtqueue) {
        // SAFETY: `vq` is valid during the callback; `vdev` and `index` are
        // set at creation and never change.
        let (vdev, index) = unsafe { ((*vq).vdev, (*vq).index) };
        // SAFETY: `vdev` is valid while its virtqueues exist.
        let bound = unsafe { Self::bound(vdev) };
        if bound.is_null() {
            // No buffer was added before the driver data was published,
            // and none is left after it is torn down.
            return;
        }
        // SAFETY: `priv` holds the record from `probe_callback`;
        // `remove_callback` reclaims it only after clearing `priv` and
        // waiting for callbacks that read it before (`synchronize_cbs`).
        let data = unsafe { T::Data::borrow((*bound).data) };
        T::vq_done(data, index);
    }

    /// # Safety
    ///
    /// Only called by the virtio core, once, for a device whose
    /// `probe_callback` succeeded, after configuration callbacks were
    /// disabled.
    unsafe extern "C" fn remove_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio core passes a valid device that stays valid
        // until this function returns.
        let dev = unsafe { Device::from_raw(vdev) };
        // SAFETY: `vdev` is valid; `priv` holds the record from
        // `probe_callback`, reclaimed only below.
        let bound = unsafe { Self::bound(vdev) }.cast_mut();
        {
            // SAFETY: As above; the borrow ends before the data is reclaimed.
            let data = unsafe { T::Data::borrow((*bound).data) };
            T::remove(dev, data);
        }
        // `DeviceRef`s no longer reach the transport (waits for those that
        // do right now).
        // SAFETY: As above.
        unsafe { (*bound).binding.revoke() };
        // The device stops raising interrupts and using buffers, the data
        // becomes unreachable for callbacks, and those that found it have
        // finished: nothing borrows it any more.
        // SAFETY: The device is valid.
        unsafe { bindings::virtio_reset_device(vdev) };
        // SAFETY: As above; callbacks read `priv` with a volatile read.
        unsafe {
            core::ptr::write_volatile(
                core::ptr::addr_of_mut!((*vdev).priv_),
                core::ptr::null_mut(),
            )
        };
        // SAFETY: As above.
        unsafe { bindings::vscsi_virtio_synchronize_cbs(vdev) };
        // SAFETY: `bound` came from `KBox::into_raw` in `probe_callback` and
        // is reclaimed once; no callback can reach it any more (above).
        let bound = unsafe { KBox::from_raw(bound) };
        // SAFETY: `data` came from `into_foreign` in `probe_callback`, is
        // reclaimed once, and no borrow of it is left (above).
        drop(unsafe { T::Data::from_foreign(bound.data) });
        drop(bound);
        // The virtqueues go with the `Queue`s that hold them (their last
        // reference resets the device and deletes them). One kept outside
        // the driver data would outlive the binding: wait for it instead.
        let mut waited = 0u32;
        // SAFETY: The device is valid.
        while unsafe { bindings::vscsi_virtio_has_vqs(vdev) } {
            if waited == 1000 {
                dev_warn!(
                    dev,
                    "virtqueues still held after remove: waiting for them\n"
                );
            }
            msleep(10);
            waited = waited.saturating_add(1);
        }
    }
}

/// A registered virtio driver (`register_virtio_driver()`); dropping it
/// unregisters the driver, which unbinds it from every device.
///
/// # Invariants
///
/// `drv` is registered with the virtio core from construction until drop.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: Driver> {
    #[pin]
    drv: Opaque<bindings::virtio_driver>,
    _p: PhantomData<T>,
}

// SAFETY: After registration the C side owns `drv`; the only operation on a
// `Registration` is dropping it, which may happen on any thread.
unsafe impl<T: Driver> Send for Registration<T> {}
// SAFETY: `Registration` has no methods that take `&self`.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers driver `T` on behalf of `module`.
    pub(crate) fn new(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            drv <- Self::register(module),
            _p: PhantomData,
        })
    }

    fn register(
        module: &'static ThisModule,
    ) -> impl PinInit<Opaque<bindings::virtio_driver>, Error> {
        let slot_init = move |slot: *mut Opaque<bindings::virtio_driver>| -> Result {
            if !T::ID_TABLE.last().is_some_and(DeviceId::is_end) {
                return Err(EINVAL);
            }
            let drv = Opaque::raw_get(slot);
            let features = u32::try_from(T::FEATURES.len())?;
            // SAFETY: `drv` points to memory that is ours to initialise
            // (`pin_init_from_closure`); all-zero is a valid
            // `virtio_driver` and the fields set afterwards complete it.
            unsafe {
                drv.write(bindings::virtio_driver::default());
                (*drv).driver.name = T::NAME.as_char_ptr();
                (*drv).id_table = T::ID_TABLE.as_ptr().cast();
                (*drv).feature_table = T::FEATURES.as_ptr();
                (*drv).feature_table_size = features;
                (*drv).probe = Some(Adapter::<T>::probe_callback);
                (*drv).remove = Some(Adapter::<T>::remove_callback);
                (*drv).scan = Some(Adapter::<T>::scan_callback);
                if T::HAS_CONFIG_CHANGED {
                    (*drv).config_changed = Some(Adapter::<T>::config_changed_callback);
                }
                if T::HAS_FREEZE && T::HAS_RESTORE {
                    (*drv).freeze = Some(Adapter::<T>::freeze_callback);
                    (*drv).restore = Some(Adapter::<T>::restore_callback);
                }
            }
            // SAFETY: `drv` is fully initialised, pinned (it lives in a
            // pinned `Registration`) and stays valid until `drop`
            // unregisters it. The id and feature tables are `'static`.
            to_result(unsafe { bindings::vscsi_register_virtio_driver(drv, module.as_ptr()) })
        };
        // SAFETY: The closure initialises the slot fully on success and
        // leaves nothing to clean up on failure (the driver is not
        // registered then); it does not move the slot.
        unsafe { kernel::init::pin_init_from_closure(slot_init) }
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the driver is registered.
        unsafe { bindings::unregister_virtio_driver(self.drv.get()) };
    }
}

/// A virtqueue to create with [`Device::find_vqs`].
pub(crate) struct QueueInfo {
    /// The queue's name (shown in `/proc/interrupts`).
    pub(crate) name: &'static CStr,
    /// Whether the queue raises interrupts ([`Driver::vq_done`]); polled
    /// queues do not.
    pub(crate) callback: bool,
}

/// The virtqueues of one device, shared by its [`Queue`]s.
///
/// # Invariants
///
/// `vdev` is a device whose virtqueues were created by `find_vqs` and not
/// yet deleted; it stays bound until this set is dropped. `reset_done` is
/// signalled (for all waiters) once the reset that `reset` claims is done.
/// Once `stopping` is set, no [`Kick`] is prepared on the set's queues.
#[pin_data(PinnedDrop)]
struct QueueSet {
    vdev: *mut bindings::virtio_device,
    reset: AtomicBool,
    stopping: AtomicBool,
    #[pin]
    reset_done: Completion,
}

// SAFETY: The set only holds a pointer to the device, used to reset it and to
// delete its queues, which the virtio core allows from any thread.
unsafe impl Send for QueueSet {}
// SAFETY: See `Send`; the reset flag is atomic, the completion thread-safe.
unsafe impl Sync for QueueSet {}

impl QueueSet {
    /// Resets the device once: no notification reaches it afterwards, it
    /// stops using buffers and raising interrupts, and callbacks that were
    /// running have finished. A caller that finds the reset claimed by
    /// another waits until it is done, so none goes on to take buffers
    /// back from a device still running. Sleeps.
    fn reset_device(&self) {
        if self.reset.swap(true, Ordering::AcqRel) {
            self.reset_done.wait();
            return;
        }
        // No new `Kick`, then wait for those prepared before: the device
        // must not be notified once reset (`virtio_reset_device()`), some
        // devices wedge.
        self.stopping.store(true, Ordering::Relaxed);
        synchronize_rcu();
        // SAFETY: By the type invariant the device is valid; no notification
        // is in progress (above).
        unsafe { bindings::virtio_reset_device(self.vdev) };
        // The reset itself does not wait for running callbacks on every
        // transport (virtio-mmio's does not).
        // SAFETY: As above.
        unsafe { bindings::vscsi_virtio_synchronize_cbs(self.vdev) };
        self.reset_done.complete_all();
    }
}

#[pinned_drop]
impl PinnedDrop for QueueSet {
    fn drop(self: Pin<&mut Self>) {
        // After the reset no `Kick` is running or can be prepared.
        self.reset_device();
        // SAFETY: By the type invariant the queues exist; no `Queue` or
        // `RawQueue` is left to use them (each holds a reference to `self`),
        // and no `Kick` either (`reset_device`).
        unsafe { bindings::vscsi_virtio_del_vqs(self.vdev) };
    }
}

/// A virtqueue returned by [`Device::find_vqs`], not yet wrapped in a
/// [`Queue`].
pub(crate) struct RawQueue {
    vq: NonNull<bindings::virtqueue>,
    set: Arc<QueueSet>,
}

// SAFETY: A `RawQueue` only carries the pointer until it becomes a `Queue`;
// it offers no operation on the virtqueue.
unsafe impl Send for RawQueue {}
// SAFETY: See `Send`.
unsafe impl Sync for RawQueue {}

/// Buffers that a request hands to the device, and the ownership token that
/// comes back with them.
///
/// # Safety
///
/// Implementers guarantee that the memory the scatterlists pushed by
/// [`Request::sgs`] describe stays valid, and is not accessed by the CPU,
/// from [`Request::into_token`] until the value is rebuilt by
/// [`Request::from_token`]; and that `from_token` only accepts what
/// `into_token` returned.
pub(crate) unsafe trait Request: Sized {
    /// Pushes the device-readable, then the device-writable scatterlists.
    fn sgs(&mut self, sgs: &mut SgList);

    /// Gives up ownership for as long as the device has the buffers.
    fn into_token(self) -> NonNull<kernel::ffi::c_void>;

    /// Takes ownership back.
    ///
    /// # Safety
    ///
    /// `token` must come from [`Request::into_token`] of the same type and
    /// be used once.
    unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self;
}

/// The scatterlists of one request: up to six lists, device-readable first,
/// plus room for two single-entry lists built here (headers).
pub(crate) struct SgList {
    lists: [*mut bindings::scatterlist; 6],
    out: u32,
    ins: u32,
    /// Initialised by `sg_init_one()` when pushed (`local[..nlocal]`).
    local: [core::mem::MaybeUninit<bindings::scatterlist>; 2],
    nlocal: usize,
}

impl SgList {
    fn new() -> Self {
        Self {
            lists: [core::ptr::null_mut(); 6],
            out: 0,
            ins: 0,
            local: [core::mem::MaybeUninit::uninit(); 2],
            nlocal: 0,
        }
    }

    /// Adds a single-entry list for `len` bytes at `buf`.
    ///
    /// # Safety
    ///
    /// `buf..buf + len` must be directly mapped kernel memory that the
    /// request owns (see [`Request`]).
    pub(crate) unsafe fn push_buf(
        &mut self,
        buf: *const u8,
        len: u32,
        device_writes: bool,
    ) -> Result {
        if self.nlocal == self.local.len() {
            return Err(EINVAL);
        }
        let sg = self.local[self.nlocal].as_mut_ptr();
        // SAFETY: `sg` points to writable memory for one scatterlist, which
        // `sg_init_one()` initialises whole; the caller guarantees `buf`.
        unsafe { bindings::sg_init_one(sg, buf.cast(), len) };
        self.nlocal += 1;
        // SAFETY: `sg` lives in `self.local` and `self` is not moved while
        // the list is in use (`QueueGuard::add` keeps it on its stack).
        unsafe { self.push_list(sg, device_writes) }
    }

    /// Adds a terminated scatterlist.
    ///
    /// # Safety
    ///
    /// `sg` must be a valid, end-marked scatterlist whose entries describe
    /// memory the request owns (see [`Request`]), and it must stay valid
    /// until [`QueueGuard::add`] returns.
    pub(crate) unsafe fn push_list(
        &mut self,
        sg: *mut bindings::scatterlist,
        device_writes: bool,
    ) -> Result {
        let used = (self.out + self.ins) as usize;
        if used == self.lists.len() || (!device_writes && self.ins != 0) {
            // Full, or a device-readable list after a device-writable one.
            return Err(EINVAL);
        }
        self.lists[used] = sg;
        if device_writes {
            self.ins += 1;
        } else {
            self.out += 1;
        }
        Ok(())
    }
}

/// A virtqueue of a [`Queue`], and the set that keeps it alive.
///
/// # Invariants
///
/// `vq` is a virtqueue of the device of `set`, created by the `find_vqs` call
/// that created `set`; it is deleted only when `set` is dropped.
struct Attached {
    vq: NonNull<bindings::virtqueue>,
    set: Arc<QueueSet>,
}

// SAFETY: `Attached` is only reached under its queue's lock; the set may be
// dropped on any thread (in process context, see `QueueSet::drop`).
unsafe impl Send for Attached {}

/// What a [`Queue`]'s lock protects.
struct QueueInner<D> {
    /// The virtqueue; `None` between [`Queue::detach`] and [`Queue::attach`].
    attached: Option<Attached>,
    data: D,
}

/// A virtqueue with its lock (`virtqueue` plus the C driver's `vq_lock`).
/// Requests of type `R` go in and come back out; `D` is driver state kept
/// under the same lock (counters, for instance).
///
/// A queue can give up its virtqueue ([`Queue::detach`], which resets the
/// device) and take a new one from a later [`Device::find_vqs`]
/// ([`Queue::attach`]): that is how a driver resets and re-initialises a
/// device under a live upper layer. While detached, adding fails with
/// `ENODEV` and reaping finds nothing. Dropping the queue detaches it,
/// dropping the requests the device did not complete.
///
/// # Invariants
///
/// Every buffer on the attached virtqueue was added as an `R` by
/// [`QueueGuard::add`].
#[pin_data(PinnedDrop)]
pub(crate) struct Queue<R: Request, D = ()> {
    #[pin]
    lock: SpinLockIrq<QueueInner<D>>,
    _p: PhantomData<R>,
}

// SAFETY: The virtqueue is only used under `lock`, except for notifications
// (`Kick`), which the virtio core allows concurrently; requests in flight
// are owned by the queue and are `Send`.
unsafe impl<R: Request + Send, D: Send> Send for Queue<R, D> {}
// SAFETY: See `Send`; `D` is only reached under the lock.
unsafe impl<R: Request + Send, D: Send> Sync for Queue<R, D> {}

impl<R: Request, D> Queue<R, D> {
    /// Wraps a queue from [`Device::find_vqs`], with `data` under its lock.
    pub(crate) fn new(raw: RawQueue, data: D) -> impl PinInit<Self> {
        // INVARIANT: `raw` came from `find_vqs` with its set; no buffer has
        // been added yet.
        pin_init!(Self {
            lock <- new_spinlock_irq!(QueueInner {
                attached: Some(Attached {
                    vq: raw.vq,
                    set: raw.set,
                }),
                data,
            }),
            _p: PhantomData,
        })
    }

    /// Locks the queue for adding and reaping buffers.
    pub(crate) fn lock(&self) -> QueueGuard<'_, R, D> {
        QueueGuard {
            guard: self.lock.lock(),
            _p: PhantomData,
        }
    }

    /// Returns the number of descriptors in the ring
    /// (`virtqueue_get_vring_size()`), 0 while detached.
    pub(crate) fn vring_size(&self) -> u32 {
        match self.lock().vq() {
            // SAFETY: The queue is attached and locked, so `vq` is live.
            Some(vq) => unsafe { bindings::virtqueue_get_vring_size(vq) },
            None => 0,
        }
    }

    /// Gives up the virtqueue: resets the device (once for all the queues
    /// of one `find_vqs`), then hands every request still on the ring to
    /// `f`, under the lock: with `Some(len)` for those the device completed
    /// (and the driver has not reaped yet), `None` for those it never
    /// finished. A no-op on a detached queue.
    ///
    /// Sleeps: the reset waits for running callbacks, and the last queue of
    /// a set to be detached deletes the device's virtqueues (after the RCU
    /// grace period that pending [`Kick`]s hold off).
    pub(crate) fn detach(&self, mut f: impl FnMut(R, Option<u32>)) {
        let Some(set) = self.lock.lock().attached.as_ref().map(|a| a.set.clone()) else {
            return;
        };
        // Outside the lock: resetting sleeps. Requests added meanwhile go
        // to a stopped device and are handed back below.
        set.reset_device();
        let attached = {
            let mut guard = self.lock();
            // Answered ones first. (The set taken above is still attached:
            // a new one needs `find_vqs`, which refuses while this set's
            // virtqueues exist, and the clone keeps them.)
            while let Some((req, len)) = guard.get_buf() {
                f(req, Some(len));
            }
            let attached = guard.guard.attached.take();
            if let Some(a) = &attached {
                loop {
                    // SAFETY: `a.vq` is live (we hold its set) and the
                    // device is reset, so detaching the unused buffers is
                    // allowed; the queue's lock is held.
                    let token = unsafe { bindings::virtqueue_detach_unused_buf(a.vq.as_ptr()) };
                    let Some(token) = NonNull::new(token) else {
                        break;
                    };
                    // SAFETY: Every buffer on the queue was added as an `R`
                    // (type invariant); each token comes back once.
                    f(unsafe { R::from_token(token) }, None);
                }
            }
            attached
        };
        // Dropped without the lock: the last reference deletes the queues.
        drop(attached);
        drop(set);
    }

    /// Takes a virtqueue from a new [`Device::find_vqs`] call, after
    /// [`Queue::detach`]. Fails with `EBUSY`, dropping `raw`, if the queue
    /// is attached.
    pub(crate) fn attach(&self, raw: RawQueue) -> Result {
        let mut guard = self.lock.lock();
        if guard.attached.is_some() {
            drop(guard);
            drop(raw);
            return Err(EBUSY);
        }
        // INVARIANT: A fresh virtqueue carries no buffer.
        guard.attached = Some(Attached {
            vq: raw.vq,
            set: raw.set,
        });
        Ok(())
    }
}

#[pinned_drop]
impl<R: Request, D> PinnedDrop for Queue<R, D> {
    fn drop(self: Pin<&mut Self>) {
        self.detach(|req, _| drop(req));
    }
}

/// A locked [`Queue`].
pub(crate) struct QueueGuard<'a, R: Request, D> {
    guard: SpinLockIrqGuard<'a, QueueInner<D>>,
    _p: PhantomData<R>,
}

impl<'a, R: Request, D> QueueGuard<'a, R, D> {
    /// The virtqueue, if attached: live while the lock is held (the set is
    /// only dropped after being taken out under the lock).
    fn vq(&self) -> Option<*mut bindings::virtqueue> {
        self.guard.attached.as_ref().map(|a| a.vq.as_ptr())
    }

    /// Returns whether the queue has a virtqueue (it is not between
    /// [`Queue::detach`] and [`Queue::attach`]).
    pub(crate) fn is_attached(&self) -> bool {
        self.guard.attached.is_some()
    }

    /// Returns the driver state kept under the queue's lock.
    pub(crate) fn data(&mut self) -> &mut D {
        &mut self.guard.data
    }

    /// Hands `req` to the device (`virtqueue_add_sgs()`). On failure the
    /// request comes back with the error: `ENOSPC` when the ring is full,
    /// `EIO` when the device is broken, `ENODEV` while the queue is
    /// detached.
    ///
    /// Called with interrupts off, so descriptor tables are allocated with
    /// `GFP_ATOMIC`.
    pub(crate) fn add(&mut self, mut req: R) -> Result<(), (R, Error)> {
        let Some(vq) = self.vq() else {
            return Err((req, ENODEV));
        };
        let mut sgs = SgList::new();
        req.sgs(&mut sgs);
        if sgs.out + sgs.ins == 0 {
            return Err((req, EINVAL));
        }
        let token = req.into_token();
        // `sgs.lists` holds `out + ins` valid, terminated scatterlists (the
        // `SgList` push contracts), alive until the call returns.
        // SAFETY: The queue is attached and locked, so `vq` is live; the
        // buffers stay valid until the token comes back (`Request`
        // contract).
        let ret = unsafe {
            bindings::virtqueue_add_sgs(
                vq,
                sgs.lists.as_mut_ptr(),
                sgs.out,
                sgs.ins,
                token.as_ptr(),
                bindings::GFP_ATOMIC,
            )
        };
        match to_result(ret) {
            Ok(()) => Ok(()),
            // SAFETY: The device did not take the token, so it is ours.
            Err(e) => Err((unsafe { R::from_token(token) }, e)),
        }
    }

    /// Returns a notification to send after unlocking if the device needs
    /// one for what was added (`virtqueue_kick_prepare()`).
    pub(crate) fn kick_prepare(&mut self) -> Option<Kick<'a>> {
        let attached = self.guard.attached.as_ref()?;
        let vq = attached.vq.as_ptr();
        // SAFETY: The queue is attached and locked.
        if !unsafe { bindings::virtqueue_kick_prepare(vq) } {
            return None;
        }
        // The read-side section begins before `stopping` is read: a reset
        // that set it either waits for this section or is seen here.
        let rcu = RcuReadGuard::new();
        if attached.set.stopping.load(Ordering::Relaxed) {
            return None;
        }
        // INVARIANT: `vq` is attached now, and the read-side section begins
        // before the lock is dropped, so `QueueSet::drop` (which runs after
        // the set was taken out under the lock) waits for it.
        Some(Kick {
            vq: attached.vq,
            _rcu: rcu,
            _p: PhantomData,
        })
    }

    /// Takes back the next request the device completed, with the number
    /// of bytes it wrote (`virtqueue_get_buf()`).
    pub(crate) fn get_buf(&mut self) -> Option<(R, u32)> {
        let vq = self.vq()?;
        let mut len = 0u32;
        // SAFETY: The queue is attached and locked; `len` is a valid out
        // pointer.
        let token = unsafe { bindings::virtqueue_get_buf(vq, &mut len) };
        let token = NonNull::new(token.cast::<kernel::ffi::c_void>())?;
        // SAFETY: Every buffer on this queue was added as an `R` (type
        // invariant); the ring returns each token once.
        Some((unsafe { R::from_token(token) }, len))
    }

    /// Returns whether the queue is attached and broken
    /// (`virtqueue_is_broken()`): the device broke the ring, or the whole
    /// device was marked broken (a surprise removal).
    pub(crate) fn is_broken(&self) -> bool {
        // SAFETY: The queue is attached and locked.
        self.vq()
            .is_some_and(|vq| unsafe { bindings::virtqueue_is_broken(vq) })
    }

    /// Disables completion callbacks (`virtqueue_disable_cb()`).
    pub(crate) fn disable_cb(&mut self) {
        if let Some(vq) = self.vq() {
            // SAFETY: The queue is attached and locked.
            unsafe { bindings::virtqueue_disable_cb(vq) };
        }
    }

    /// Re-enables completion callbacks; `false` means more buffers arrived
    /// meanwhile and must be reaped first (`virtqueue_enable_cb()`).
    pub(crate) fn enable_cb(&mut self) -> bool {
        match self.vq() {
            // SAFETY: The queue is attached and locked.
            Some(vq) => unsafe { bindings::virtqueue_enable_cb(vq) },
            None => true,
        }
    }
}

/// A notification for the device, prepared under a [`Queue`]'s lock by
/// [`QueueGuard::kick_prepare`] and sent after unlocking.
///
/// Send it right after unlocking: the read-side section it holds must not
/// sleep (as for any RCU reader; debug kernels report a sleep in it).
///
/// # Invariants
///
/// `vq` was attached when the kick was prepared, and the RCU read-side
/// section held since then keeps it from being deleted.
pub(crate) struct Kick<'a> {
    vq: NonNull<bindings::virtqueue>,
    _rcu: RcuReadGuard,
    _p: PhantomData<&'a ()>,
}

impl Kick<'_> {
    /// Notifies the device (`virtqueue_notify()`); `false` if the device
    /// is broken.
    pub(crate) fn notify(self) -> bool {
        // SAFETY: `vq` is live (type invariant); notify may run
        // concurrently with the locked operations, and no reset runs
        // meanwhile (`QueueSet::reset_device` waits for the section held).
        unsafe { bindings::virtqueue_notify(self.vq.as_ptr()) }
    }
}

/// The unit of [`DeviceBuf`] memory: a cache line and then some (the
/// largest DMA alignment an architecture asks for).
#[repr(C, align(128))]
#[derive(Clone, Copy)]
struct Line([u8; 128]);

/// A buffer only the device writes (an event buffer, for instance), in
/// memory of its own: it starts on a cache line and fills whole lines, so no
/// CPU-written state shares a line with it while the device owns it. It is
/// zeroed each time it is given to the device, so after the device gives it
/// back it holds what the device wrote and zeros elsewhere, whatever used
/// length the device reports.
///
/// # Invariants
///
/// `lines` holds at least `len` bytes, which the allocation is aligned to
/// [`Line`] for (kmalloc aligns a size to its largest power-of-two divisor).
pub(crate) struct DeviceBuf {
    lines: KVec<Line>,
    len: u32,
}

impl DeviceBuf {
    /// Allocates a zeroed buffer of `len` bytes; `EINVAL` for 0 (a
    /// zero-length descriptor is not allowed).
    pub(crate) fn new(len: u32) -> Result<Self> {
        if len == 0 {
            return Err(EINVAL);
        }
        let n = (len as usize).div_ceil(core::mem::size_of::<Line>());
        let lines = KVec::from_elem(Line([0; 128]), n, GFP_KERNEL)?;
        Ok(Self { lines, len })
    }

    /// Returns the buffer's bytes (what the device wrote, after it gave the
    /// buffer back).
    pub(crate) fn bytes(&self) -> &[u8] {
        let ptr = self.lines.as_ptr().cast::<u8>();
        // SAFETY: `lines` holds at least `len` initialised bytes (type
        // invariant); `Line` is plain bytes.
        unsafe { core::slice::from_raw_parts(ptr, self.len as usize) }
    }
}

// SAFETY: The device-visible memory is the `KVec`'s heap allocation, owned
// by the boxed `DeviceBuf` behind the token while the device has it; nothing
// else points into it.
unsafe impl Request for KBox<DeviceBuf> {
    fn sgs(&mut self, sgs: &mut SgList) {
        // Every time the buffer goes to the device it starts zeroed: a
        // device need not report how much it wrote (vhost-scsi says 0), so
        // what the buffer held before must never read as its answer.
        self.lines.fill(Line([0; 128]));
        let ptr = self.lines.as_ptr().cast::<u8>();
        // SAFETY: `ptr..ptr + len` is kmalloc memory owned by this request.
        // Pushing one list onto an empty `SgList` cannot fail.
        let _ = unsafe { sgs.push_buf(ptr, self.len, true) };
    }

    fn into_token(self) -> NonNull<kernel::ffi::c_void> {
        // SAFETY: `KBox::into_raw` never returns null.
        unsafe { NonNull::new_unchecked(KBox::into_raw(self).cast()) }
    }

    unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self {
        // SAFETY: The caller passes a token from `into_token`, once.
        unsafe { KBox::from_raw(token.as_ptr().cast()) }
    }
}

/// The device-visible part of an [`Exchange`]: request then response, on
/// lines of their own.
#[repr(C, align(128))]
struct ExchangeBufs<const REQ: usize, const RESP: usize> {
    req: [u8; REQ],
    resp: core::cell::UnsafeCell<[u8; RESP]>,
}

#[pin_data]
struct ExchangeInner<const REQ: usize, const RESP: usize> {
    bufs: ExchangeBufs<REQ, RESP>,
    /// Bytes the device wrote; valid once `done` is set.
    used_len: core::sync::atomic::AtomicU32,
    /// The device gave the buffers back.
    done: AtomicBool,
    #[pin]
    completion: Completion,
}

/// A request and its response on a control-type queue, with a waiter (a
/// task management function, for instance).
///
/// The buffers are reference counted: the in-flight [`ExchangeRequest`]
/// holds one reference, so a waiter that gives up on a device that never
/// answers frees nothing the device may still write; the memory goes when
/// the device returns the buffers or the queue is torn down.
///
/// # Invariants
///
/// At most one [`ExchangeRequest`] refers to the same buffers, ever: both
/// halves are made together by [`Exchange::new`], and neither can be
/// cloned.
pub(crate) struct Exchange<const REQ: usize, const RESP: usize>(Arc<ExchangeInner<REQ, RESP>>);

/// The queued half of an [`Exchange`]: the only one for its buffers (see
/// the invariants of [`Exchange`]).
pub(crate) struct ExchangeRequest<const REQ: usize, const RESP: usize>(
    Arc<ExchangeInner<REQ, RESP>>,
);

/// The memory of one [`Exchange`], allocated ahead of time: a caller that
/// must not fail to allocate when it needs an exchange (an error handler
/// under memory pressure) keeps some in reserve.
pub(crate) struct ExchangeSlot<const REQ: usize, const RESP: usize>(
    UniqueArc<core::mem::MaybeUninit<ExchangeInner<REQ, RESP>>>,
);

impl<const REQ: usize, const RESP: usize> ExchangeSlot<REQ, RESP> {
    /// Allocates the memory of one exchange with `flags`.
    pub(crate) fn new(flags: Flags) -> Result<Self> {
        Ok(Self(UniqueArc::new_uninit(flags)?))
    }

    /// Allocates the memory of one exchange without starting I/O to free
    /// memory (`memalloc_noio_save()`, as `GFP_NOIO`): for an error handler
    /// whose disks may be the ones reclaim would write to.
    pub(crate) fn new_noio() -> Result<Self> {
        // SAFETY: Plain calls; the flags saved are restored below, on the
        // same task.
        let saved = unsafe { bindings::vscsi_memalloc_noio_save() };
        let slot = Self::new(GFP_KERNEL);
        // SAFETY: As above.
        unsafe { bindings::vscsi_memalloc_noio_restore(saved) };
        slot
    }
}

// SAFETY: `resp` is only written by the device while an `ExchangeRequest`
// owns the buffers and only read after `done` is set, which happens after the
// device returned them.
unsafe impl<const REQ: usize, const RESP: usize> Sync for ExchangeInner<REQ, RESP> {}
// SAFETY: See `Sync`; the data is plain bytes and atomics.
unsafe impl<const REQ: usize, const RESP: usize> Send for ExchangeInner<REQ, RESP> {}

/// Why [`Exchange::wait`] returned without an answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitError {
    /// The device did not answer in time.
    TimedOut,
    /// The request was taken back unanswered (a reset), or never queued.
    Cancelled,
}

impl<const REQ: usize, const RESP: usize> Exchange<REQ, RESP> {
    /// Builds, in `slot`, an exchange carrying `req`, its response buffer
    /// holding `resp` until the device writes it (a value no device answer
    /// has, so that an answer the device did not write is recognised).
    /// Returns the waiting half and the one half to add to a queue
    /// ([`QueueGuard::add`]).
    pub(crate) fn new(
        slot: ExchangeSlot<REQ, RESP>,
        req: [u8; REQ],
        resp: [u8; RESP],
    ) -> (Self, ExchangeRequest<REQ, RESP>) {
        let init = pin_init!(ExchangeInner {
            bufs: ExchangeBufs {
                req,
                resp: core::cell::UnsafeCell::new(resp),
            },
            used_len: core::sync::atomic::AtomicU32::new(0),
            done: AtomicBool::new(false),
            completion <- Completion::new(),
        });
        let inner: Arc<_> = match slot.0.write_pin_init(init) {
            Ok(inner) => inner.into(),
            Err(never) => match never {},
        };
        // INVARIANT: The only request for these buffers is made here.
        (Self(inner.clone()), ExchangeRequest(inner))
    }

    /// Waits up to `ms` milliseconds for the device's answer; returns the
    /// response and the number of bytes the device wrote.
    pub(crate) fn wait(&self, ms: u32) -> Result<([u8; RESP], u32), WaitError> {
        if !self.0.completion.wait_timeout_ms(ms) {
            return Err(WaitError::TimedOut);
        }
        if !self.0.done.load(Ordering::Acquire) {
            return Err(WaitError::Cancelled);
        }
        // SAFETY: `done` is set after the device returned the buffers, so
        // nothing writes `resp` any more.
        let resp = unsafe { *self.0.bufs.resp.get() };
        Ok((resp, self.0.used_len.load(Ordering::Relaxed)))
    }
}

impl<const REQ: usize, const RESP: usize> ExchangeRequest<REQ, RESP> {
    /// Records that the device returned the buffers with `used_len` bytes
    /// written, and wakes the waiter (the drop does). Callable from
    /// interrupt context.
    pub(crate) fn complete(self, used_len: u32) {
        self.0.used_len.store(used_len, Ordering::Relaxed);
        self.0.done.store(true, Ordering::Release);
    }
}

impl<const REQ: usize, const RESP: usize> Drop for ExchangeRequest<REQ, RESP> {
    /// Wakes the waiter, whether or not the device answered: a request
    /// taken back from a reset device ends the wait at once.
    fn drop(&mut self) {
        self.0.completion.complete();
    }
}

// SAFETY: The buffers live in the `Arc` allocation, kept alive by the
// reference the token carries; the CPU writes `req` only before the first
// `add` and reads `resp` only after `complete` (see `Exchange::wait`).
unsafe impl<const REQ: usize, const RESP: usize> Request for ExchangeRequest<REQ, RESP> {
    fn sgs(&mut self, sgs: &mut SgList) {
        let bufs = &self.0.bufs;
        // SAFETY: Both buffers are in the `Arc` allocation this request
        // holds a reference to; two local lists fit in an empty `SgList`.
        let _ = unsafe { sgs.push_buf(bufs.req.as_ptr(), REQ as u32, false) };
        // SAFETY: As above.
        let _ = unsafe { sgs.push_buf(bufs.resp.get().cast::<u8>(), RESP as u32, true) };
    }

    fn into_token(self) -> NonNull<kernel::ffi::c_void> {
        // Not dropped: the reference travels with the token.
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this.0` is read once and `this` is never dropped, so the
        // reference moves into the token.
        let ptr = Arc::into_raw(unsafe { core::ptr::read(&this.0) });
        // SAFETY: `Arc::into_raw` never returns null.
        unsafe { NonNull::new_unchecked(ptr.cast_mut().cast()) }
    }

    unsafe fn from_token(token: NonNull<kernel::ffi::c_void>) -> Self {
        // SAFETY: The caller passes a token from `into_token`, once.
        Self(unsafe { Arc::from_raw(token.as_ptr().cast::<ExchangeInner<REQ, RESP>>()) })
    }
}
