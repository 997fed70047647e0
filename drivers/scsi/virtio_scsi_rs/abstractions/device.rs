// SPDX-License-Identifier: GPL-2.0

//! Device-prefixed logging, like the C `dev_info()` family.
//!
//! C header: [`include/linux/dev_printk.h`](srctree/include/linux/dev_printk.h).
//!
//! The 6.12 `kernel` crate only has `pr_*!`. These macros print through
//! `_dev_info()` and friends with the `%pA` format, which formats a Rust
//! [`core::fmt::Arguments`], so messages carry the driver and device names
//! exactly like the C driver's (`virtio_scsi_rs virtio1: ...`).

use crate::abstractions::bindings;
use core::fmt;

/// A device as seen by the logging functions: anything that can give a
/// pointer to a live `struct device`.
///
/// # Safety
///
/// Implementers must return a pointer to a `struct device` that stays valid
/// for as long as `self` is borrowed.
///
/// # Examples
///
/// The printing macros take anything that implements it: a virtio device, a
/// reference to one, a SCSI device:
///
/// ```ignore
/// use crate::abstractions::device::{dev_err, dev_info, dev_warn};
///
/// dev_info!(dev, "{}/{}/{} default/read/poll queues\n", default, read, poll);
/// dev_warn!(&vscsi.vdev, "device needs reset: resetting it\n");
/// dev_err!(&vscsi.vdev, "host reset failed ({:?})\n", e);
/// dev_info!(cmd.device(), "abort\n");
/// ```
pub(crate) unsafe trait AsRawDevice {
    /// Returns the `struct device` to print with.
    fn as_raw_device(&self) -> *mut bindings::device;
}

/// Message levels, matching `dev_err()`, `dev_warn()`, `dev_info()`.
#[derive(Clone, Copy)]
pub(crate) enum Level {
    /// `KERN_ERR`.
    Err,
    /// `KERN_WARNING`.
    Warning,
    /// `KERN_INFO`.
    Info,
}

/// Prints `args` with the device's name prefix. Used by the macros.
pub(crate) fn dev_print(dev: &impl AsRawDevice, level: Level, args: fmt::Arguments<'_>) {
    let dev = dev.as_raw_device();
    let fmt = kernel::c_str!("%pA").as_char_ptr();
    let args = core::ptr::from_ref(&args).cast::<kernel::ffi::c_void>();
    // `%pA` (`rust_fmt_argument()`) formats the `fmt::Arguments` at `args`.
    // SAFETY: `dev` is valid (`AsRawDevice`), `fmt` has a single `%pA`, and
    // `args` points to a `fmt::Arguments` that outlives the call.
    unsafe {
        match level {
            Level::Err => bindings::_dev_err(dev, fmt, args),
            Level::Warning => bindings::_dev_warn(dev, fmt, args),
            Level::Info => bindings::_dev_info(dev, fmt, args),
        }
    }
}

/// Prints an error message prefixed with the device's driver and name.
///
/// # Examples
///
/// ```ignore
/// dev_err!(dev, "probe failure: config access disabled\n");
/// ```
macro_rules! dev_err {
    ($dev:expr, $($arg:tt)*) => {
        $crate::abstractions::device::dev_print(
            $dev,
            $crate::abstractions::device::Level::Err,
            ::core::format_args!($($arg)*),
        )
    };
}

/// Prints a warning prefixed with the device's driver and name.
///
/// # Examples
///
/// ```ignore
/// dev_warn!(&self.vdev, "{} to {}:{} not answered in {} ms\n", tmf.name(), target, lun, 30_000);
/// ```
macro_rules! dev_warn {
    ($dev:expr, $($arg:tt)*) => {
        $crate::abstractions::device::dev_print(
            $dev,
            $crate::abstractions::device::Level::Warning,
            ::core::format_args!($($arg)*),
        )
    };
}

/// Prints an informational message prefixed with the device's driver and name.
///
/// # Examples
///
/// ```ignore
/// dev_info!(cmd.device(), "device reset\n");
/// ```
macro_rules! dev_info {
    ($dev:expr, $($arg:tt)*) => {
        $crate::abstractions::device::dev_print(
            $dev,
            $crate::abstractions::device::Level::Info,
            ::core::format_args!($($arg)*),
        )
    };
}

pub(crate) use {dev_err, dev_info, dev_warn};
