// SPDX-License-Identifier: GPL-2.0

//! Virtio devices (`struct virtio_device`) and references to them that
//! outlive a callback.
//!
//! C header: [`include/linux/virtio.h`](srctree/include/linux/virtio.h)

use super::*;
use crate::abstractions::bindings;
use crate::abstractions::device::{dev_warn, AsRawDevice};
use crate::abstractions::sync::msleep;
use core::ptr::NonNull;
use kernel::error::to_result;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::types::Opaque;

/// Transport feature: indirect descriptors (`VIRTIO_RING_F_INDIRECT_DESC`).
pub(crate) const RING_F_INDIRECT_DESC: u32 = bindings::VIRTIO_RING_F_INDIRECT_DESC;

/// Bytes of device-specific configuration the virtio specification (1.3,
/// chapter 5) lays out for device type `id`: a driver reads and writes
/// within them only, whatever offset it asks for. The transports do not
/// all check (virtio-mmio reads and writes wherever it is told); a device
/// type not listed here has none this abstraction lets a driver touch.
fn spec_config_len(id: u32) -> usize {
    match id {
        // `struct virtio_scsi_config`: ten 32- and 16-bit fields.
        bindings::VIRTIO_ID_SCSI => 36,
        _ => 0,
    }
}

/// A virtio device, as passed to a driver's callbacks (`struct virtio_device`).
///
/// # Invariants
///
/// `self.0` is a `struct virtio_device` that is bound, or being bound, to the
/// driver whose callback received the reference: it stays valid for at least
/// as long as the reference.
///
/// # Examples
///
/// Reading the configuration space and the negotiated features at probe:
///
/// ```ignore
/// use crate::abstractions::virtio;
///
/// fn read_config(dev: &virtio::Device) -> Result<(u32, bool)> {
///     if !dev.has_config_access() {
///         return Err(EINVAL);
///     }
///     let num_queues = dev.cread32(config_offset::NUM_QUEUES)?;
///     let indirect = dev.has_feature(virtio::RING_F_INDIRECT_DESC);
///     // The driver's own CDB size, which a reset puts back to the default.
///     dev.cwrite32(config_offset::CDB_SIZE, protocol::CDB_SIZE)?;
///     Ok((num_queues, indirect))
/// }
/// ```
#[repr(transparent)]
pub(crate) struct Device(Opaque<bindings::virtio_device>);

impl Device {
    /// Creates a reference to a device from a pointer the virtio core passed.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct virtio_device` that stays valid
    /// for the lifetime `'a`.
    pub(super) unsafe fn from_raw<'a>(ptr: *mut bindings::virtio_device) -> &'a Self {
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
        unsafe { bindings::vscsi_virtio_has_config_ops(self.as_raw(), false) }
    }

    /// The device type (`vdev->id.device`, `VIRTIO_ID_*`).
    fn id(&self) -> u32 {
        // SAFETY: By the type invariant the device is valid; its id is set
        // by the transport before the device is registered and not changed.
        unsafe { (*self.as_raw()).id.device }
    }

    /// Checks that the configuration space can be read (and written, if
    /// `write`) and that a `size`-byte field at `offset` lies, aligned,
    /// within the layout the specification gives the device's type
    /// ([`spec_config_len`]); returns the offset for the C interface.
    fn check_config_access(&self, offset: usize, size: usize, write: bool) -> Result<u32> {
        // SAFETY: By the type invariant the device is valid, and so is its
        // `config` ops table, set by the transport before the device exists.
        let access = unsafe { bindings::vscsi_virtio_has_config_ops(self.as_raw(), write) };
        if !access {
            return Err(ENODEV);
        }
        let end = offset.checked_add(size).ok_or(EINVAL)?;
        if offset % size != 0 || end > spec_config_len(self.id()) {
            return Err(EINVAL);
        }
        u32::try_from(offset).map_err(|_| EINVAL)
    }

    /// Reads the 16-bit configuration field at `offset` (`virtio_cread16()`),
    /// converted to CPU byte order. `EINVAL` for a field outside the
    /// specification's layout for the device's type, or misaligned.
    pub(crate) fn cread16(&self, offset: usize) -> Result<u16> {
        let offset = self.check_config_access(offset, 2, false)?;
        // SAFETY: The device is valid (type invariant) and has a `get`
        // config op (checked above); the field lies within the layout the
        // specification gives its type (checked above), which its transport
        // maps (for virtio-pci the transport checks it too).
        Ok(unsafe { bindings::vscsi_virtio_cread16(self.as_raw(), offset) })
    }

    /// Reads the 32-bit configuration field at `offset` (`virtio_cread32()`),
    /// converted to CPU byte order. Errors as [`Device::cread16`].
    pub(crate) fn cread32(&self, offset: usize) -> Result<u32> {
        let offset = self.check_config_access(offset, 4, false)?;
        // SAFETY: As in `cread16`.
        Ok(unsafe { bindings::vscsi_virtio_cread32(self.as_raw(), offset) })
    }

    /// Writes the 32-bit configuration field at `offset` (`virtio_cwrite32()`).
    /// `ENODEV` if the transport cannot write the configuration space;
    /// otherwise errors as [`Device::cread16`].
    pub(crate) fn cwrite32(&self, offset: usize, val: u32) -> Result {
        let offset = self.check_config_access(offset, 4, true)?;
        // SAFETY: As in `cread16`, with a `set` config op (checked above).
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

/// One binding of a driver to a device (from probe until remove has
/// returned, or until a failed probe has): whether the [`DeviceRef`]s it
/// gave out may still reach the device, and its virtqueue set.
///
/// # Invariants
///
/// `sets.count` is the number of [`QueueSet`]s made for this binding whose
/// drop has not finished deleting their virtqueues (at most one: `find_vqs`
/// refuses another while it is not zero). `sets.live` is that set's
/// [`SetReset`] until the set's drop begins, which takes it out first.
#[pin_data]
pub(super) struct Binding {
    #[pin]
    bound: Mutex<bool>,
    #[pin]
    pub(super) sets: Mutex<LiveSets>,
}

/// The virtqueue set of a [`Binding`] (see its invariants).
pub(super) struct LiveSets {
    pub(super) live: Option<Arc<SetReset>>,
    pub(super) count: u32,
}

impl Binding {
    pub(super) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            bound <- new_mutex!(true),
            sets <- new_mutex!(LiveSets {
                live: None,
                count: 0,
            }),
        })
    }

    /// Ends the binding, once the users of [`DeviceRef::access`] are done.
    pub(super) fn revoke(&self) {
        *self.bound.lock() = false;
    }

    /// Makes `dev` (which this binding is of) stop using buffers and
    /// raising interrupts: resets it through the live virtqueue set, if
    /// there is one, which first ends its notifications (no kick reaches a
    /// reset device). With none, a set being dropped resets the device
    /// itself ([`Binding::wait_sets_deleted`] waits for it); with no set
    /// at all, the device is reset directly if `idle_too`. Sleeps.
    pub(super) fn reset_device(&self, dev: &Device, idle_too: bool) {
        let sets = self.sets.lock();
        match &sets.live {
            // The set's drop, which ends its device's validity, takes
            // `live` out under the lock first: the set exists.
            Some(live) => live.reset_device(),
            None if sets.count == 0 && idle_too => {
                // SAFETY: The device is valid (type invariant of `Device`);
                // no virtqueue is left to notify it.
                unsafe { bindings::virtio_reset_device(dev.as_raw()) };
            }
            None => {}
        }
    }

    /// Waits until no virtqueue set of this binding is left: until the
    /// device's virtqueues are deleted, by whichever thread drops the last
    /// [`Queue`] or [`RawQueue`] of the set. Warns once after about 10 s.
    pub(super) fn wait_sets_deleted(&self, dev: &Device) {
        let mut waited = 0u32;
        while self.sets.lock().count != 0 {
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
///
/// # Examples
///
/// The driver data keeps a reference taken at probe, names the device in
/// messages at any time, and reaches it only while bound:
///
/// ```ignore
/// use crate::abstractions::device::dev_warn;
/// use crate::abstractions::virtio;
///
/// struct VirtioScsi {
///     vdev: virtio::DeviceRef,
/// }
///
/// fn probe(dev: &virtio::DriverDevice<'_, VirtioScsiDriver>) -> Result<VirtioScsi> {
///     Ok(VirtioScsi { vdev: dev.get() })
/// }
///
/// fn config_change(vscsi: &VirtioScsi) {
///     // Unbound meanwhile: nothing to do.
///     let Some(dev) = vscsi.vdev.access() else {
///         return;
///     };
///     let needs_reset = dev.needs_reset();
///     drop(dev);
///     if needs_reset {
///         dev_warn!(&vscsi.vdev, "device needs reset: resetting it\n");
///     }
/// }
/// ```
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
///
/// # Examples
///
/// Held for one operation, then dropped before anything that may wait for the
/// driver's remove:
///
/// ```ignore
/// let Some(dev) = vscsi.vdev.access() else {
///     return Err(ENODEV);
/// };
/// let ret = dev.reset_and_restore();
/// drop(dev);
/// ret
/// ```
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
