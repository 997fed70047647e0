// SPDX-License-Identifier: GPL-2.0

//! Virtio drivers (`struct virtio_driver`): the id table, the driver trait
//! and its C callbacks, registration, and the device as the bound driver sees
//! it.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h)

use super::*;
use crate::abstractions::bindings;
use crate::abstractions::device::AsRawDevice;
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::error::{from_result, to_result};
use kernel::prelude::*;
use kernel::sync::{Arc, UniqueArc};
use kernel::types::{ForeignOwnable, Opaque};
/// The device as driver `T` sees it in [`Driver::probe`] and
/// [`Driver::restore`]: bound (or being bound) to `T`. Virtqueues are
/// created through it only, so their callbacks can only ever assume `T`'s
/// driver data.
///
/// # Invariants
///
/// `dev` is bound, or being bound, to driver `T`, for the lifetime `'a`.
///
/// # Examples
///
/// Creating the virtqueues in probe (or in restore, after a reset) and keeping
/// a reference to the device:
///
/// ```ignore
/// use crate::abstractions::virtio::{self, Queue, QueueInfo};
///
/// fn probe(dev: &virtio::DriverDevice<'_, Self>) -> Result<Self::Data> {
///     let infos = [
///         QueueInfo { name: c_str!("control"), callback: true },
///         QueueInfo { name: c_str!("event"), callback: true },
///         QueueInfo { name: c_str!("request"), callback: true },
///     ];
///     // Two vectors (control, event) stay out of the affinity spread.
///     let mut raw = dev.find_vqs(&infos, 2)?.into_iter();
///     let ctrl_vq = KBox::pin_init(
///         Queue::new(raw.next().ok_or(EINVAL)?, CtrlStats::default()),
///         GFP_KERNEL,
///     )?;
///     let vdev = dev.get();
///     // ...
/// }
/// ```
pub(crate) struct DriverDevice<'a, T: Driver> {
    pub(super) dev: &'a Device,
    pub(super) binding: &'a Arc<Binding>,
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
        // SAFETY: The device is valid and bound for as long as the set made
        // below exists (`QueueSet` invariant, which the binding's count
        // makes true); the value goes to that set and, as `sets.live`, to
        // this binding only, which takes it out when the set's drop begins.
        let reset = Arc::pin_init(unsafe { SetReset::new(self.as_raw()) }, GFP_KERNEL)?;
        let mut raw = KVec::with_capacity(n, GFP_KERNEL)?;
        let nvqs = u32::try_from(n)?;
        // One set at a time: an earlier one may still be deleting its
        // virtqueues on another thread, with the device's list of them
        // already empty.
        let mut sets = self.binding.sets.lock();
        if sets.count != 0 {
            return Err(EBUSY);
        }
        // The callbacks are `vq_callback`, which tolerates running before the
        // driver data is set.
        // SAFETY: The device is valid (type invariant); `vqs` and `infos`
        // hold `n` entries each and outlive the call; `desc` is valid.
        to_result(unsafe {
            bindings::vscsi_virtio_find_vqs(
                self.as_raw(),
                nvqs,
                vqs.as_mut_ptr(),
                infos.as_mut_ptr(),
                &mut desc,
            )
        })?;
        // From here on, dropping the last `RawQueue` resets the device and
        // deletes its virtqueues, including on the error path below.
        // INVARIANT: Every queue has a name (`QueueInfo::name`), so the
        // transport numbers them `0..n` (unnamed ones would get no index).
        let set_reset = reset.clone();
        let init = pin_init!(QueueSet {
            vdev: self.as_raw(),
            binding: self.binding.clone(),
            nvqs,
            reset: set_reset,
        });
        let set: Arc<QueueSet> = match set.write_pin_init(init) {
            Ok(set) => set.into(),
            Err(never) => match never {},
        };
        // INVARIANT: The set is counted, and live, until its drop (which
        // takes the lock, so after it is released below).
        sets.live = Some(reset);
        sets.count = 1;
        drop(sets);
        for vq in vqs.iter() {
            let vq = NonNull::new(*vq).ok_or(EINVAL)?;
            // INVARIANT: `vq` was created by the `find_vqs` above, whose
            // virtqueues only `set`'s drop deletes.
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

/// An entry of a virtio driver's id table (`struct virtio_device_id`).
///
/// # Examples
///
/// The id table of a driver for virtio-scsi devices (device id 8):
///
/// ```ignore
/// use crate::abstractions::virtio::{virtio_device_table, DeviceId};
///
/// virtio_device_table!(ID_TABLE, [DeviceId::new(protocol::VIRTIO_ID_SCSI)]);
///
/// impl virtio::Driver for VirtioScsi {
///     const ID_TABLE: &'static [DeviceId] = &ID_TABLE;
///     // ...
/// }
/// ```
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
///
/// # Examples
///
/// A driver whose per-device data is a SCSI host; interrupts reap the request
/// queues:
///
/// ```ignore
/// use crate::abstractions::scsi;
/// use crate::abstractions::virtio::{self, virtio_device_table, DeviceId};
///
/// virtio_device_table!(ID_TABLE, [DeviceId::new(protocol::VIRTIO_ID_SCSI)]);
///
/// #[vtable]
/// impl virtio::Driver for VirtioScsi {
///     type Data = KBox<scsi::Host<VirtioScsi>>;
///
///     const NAME: &'static CStr = c_str!("virtio_scsi_rs");
///     const ID_TABLE: &'static [DeviceId] = &ID_TABLE;
///     const FEATURES: &'static [u32] = &[feature::HOTPLUG, feature::CHANGE];
///
///     fn probe(dev: &virtio::DriverDevice<'_, Self>) -> Result<Self::Data> {
///         let vscsi = VirtioScsi::new(dev)?; // reads the configuration, finds the queues
///         let host = scsi::HostBuilder::alloc(&TEMPLATE, vscsi)?.add(dev)?;
///         Ok(KBox::new(host, GFP_KERNEL)?)
///     }
///
///     // After DRIVER_OK: scan the bus.
///     fn scan(_dev: &virtio::Device, host: &scsi::Host<VirtioScsi>) {
///         host.scan();
///     }
///
///     // The abstraction resets the device and drops the data after this.
///     fn remove(_dev: &virtio::Device, host: &scsi::Host<VirtioScsi>) {
///         host.remove();
///     }
///
///     // Hard-IRQ context.
///     fn vq_done(host: &scsi::Host<VirtioScsi>, index: u32) {
///         if let Some(vq) = host.data().req_vqs.get((index - 2) as usize) {
///             host.data().reap_interrupt(vq);
///         }
///     }
/// }
/// ```
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
    /// Process context; remove does not run meanwhile (system sleep: the
    /// PM core's ordering; a reset: the device lock).
    fn freeze(_dev: &Device, _data: <Self::Data as ForeignOwnable>::Borrowed<'_>) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Brings the device back after [`Driver::freeze`] (`restore`): the
    /// virtio core has reset it and negotiated the features again; the
    /// driver creates its virtqueues ([`DriverDevice::find_vqs`],
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

    /// A virtqueue created with a callback by [`DriverDevice::find_vqs`] has new
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
            });
            let data = match data {
                Ok(data) => data,
                Err(e) => {
                    // Probe may have handed out `DeviceRef`s and `Queue`s
                    // that outlive it (kept in a global, say): the binding
                    // ends as at remove. No driver data, no `priv`.
                    // (Their callbacks find `priv` null and return.)
                    bound.binding.revoke();
                    bound.binding.reset_device(dev, false);
                    bound.binding.wait_sets_deleted(dev);
                    return Err(e);
                }
            };
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
        // The device stops raising interrupts and using buffers (its queues'
        // notifications end first: a `Queue` may be used on another thread
        // still), the data becomes unreachable for callbacks, and those that
        // found it have finished: nothing borrows it any more.
        // SAFETY: As above.
        unsafe { (*bound).binding.reset_device(dev, true) };
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
        let binding = bound.binding.clone();
        drop(bound);
        // The virtqueues go with the `Queue`s that hold them (their last
        // reference resets the device and deletes them). One kept outside
        // the driver data would outlive the binding: wait for it instead,
        // until its drop has finished with the transport.
        binding.wait_sets_deleted(dev);
    }
}

/// A registered virtio driver (`register_virtio_driver()`); dropping it
/// unregisters the driver, which unbinds it from every device.
///
/// # Invariants
///
/// `drv` is registered with the virtio core from construction until drop.
///
/// # Examples
///
/// Registered for the module's lifetime; dropping it unbinds every device:
///
/// ```ignore
/// use crate::abstractions::virtio;
///
/// struct VirtioScsiModule {
///     _driver: Pin<KBox<virtio::Registration<driver::VirtioScsi>>>,
/// }
///
/// impl kernel::Module for VirtioScsiModule {
///     fn init(module: &'static ThisModule) -> Result<Self> {
///         let driver = KBox::pin_init(virtio::Registration::new(module), GFP_KERNEL)?;
///         Ok(Self { _driver: driver })
///     }
/// }
/// ```
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
        // INVARIANT: `drv` is registered once `register` succeeds; if it
        // fails, no `Registration` exists.
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
