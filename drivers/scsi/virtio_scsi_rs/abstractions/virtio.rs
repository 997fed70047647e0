// SPDX-License-Identifier: GPL-2.0

//! Virtio drivers and devices.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h).

use crate::abstractions::device::AsRawDevice;
use crate::bindings;
use core::marker::PhantomData;
use kernel::error::{from_result, to_result};
use kernel::prelude::*;
use kernel::types::{ForeignOwnable, Opaque};

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

    fn as_raw(&self) -> *mut bindings::virtio_device {
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

    /// Resets the device (`virtio_reset_device()`): it stops using all
    /// buffers and raises no more interrupts.
    pub(crate) fn reset(&self) {
        // SAFETY: By the type invariant the device is valid.
        unsafe { bindings::virtio_reset_device(self.as_raw()) };
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
        #[export_name = "__mod_virtio__vscsi_id_table_device_table"]
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
    fn probe(dev: &Device) -> Result<Self::Data>;

    /// Unbinds the driver from `dev` (`remove`). The implementation must
    /// leave the device reset ([`Device::reset`]).
    fn remove(dev: &Device, data: Self::Data);
}

/// Glue between the C `struct virtio_driver` ops and a [`Driver`].
struct Adapter<T: Driver>(PhantomData<T>);

impl<T: Driver> Adapter<T> {
    /// # Safety
    ///
    /// Only called by the virtio core with a valid device that is being bound
    /// to this driver, and that stays valid until `remove_callback` returns.
    unsafe extern "C" fn probe_callback(vdev: *mut bindings::virtio_device) -> kernel::ffi::c_int {
        from_result(|| {
            // SAFETY: The virtio core passes a valid device that outlives
            // this call.
            let dev = unsafe { Device::from_raw(vdev) };
            let data = T::probe(dev)?;
            // SAFETY: `vdev` is valid and `priv` belongs to the bound driver;
            // nobody else accesses it during probe.
            unsafe { (*vdev).priv_ = data.into_foreign().cast_mut() };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// Only called by the virtio core, once, for a device whose
    /// `probe_callback` succeeded.
    unsafe extern "C" fn remove_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio core passes a valid device that stays valid
        // until this function returns.
        let dev = unsafe { Device::from_raw(vdev) };
        // SAFETY: `priv` was set by `probe_callback` from `into_foreign`, and
        // remove is called once, so ownership is taken back exactly once.
        let data = unsafe { T::Data::from_foreign((*vdev).priv_) };
        // SAFETY: As above; clear the stale pointer.
        unsafe { (*vdev).priv_ = core::ptr::null_mut() };
        T::remove(dev, data);
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
