// SPDX-License-Identifier: GPL-2.0

//! Module parameters declared in C.
//!
//! C header: [`include/linux/moduleparam.h`](srctree/include/linux/moduleparam.h).
//!
//! The 6.12 `module!` macro has no parameters, so the module declares them
//! with `module_param()` and `module_param_cb()` in `vscsi_helpers.c`, where
//! `modinfo` and sysfs find them and where a value is checked when it is set;
//! each has a getter that reads it with `READ_ONCE()`. [`UintParam`] gives
//! safe code those values as C stores them. What a value means, when it is
//! read and what it leads to is the driver's policy (`driver/params.rs`).

use crate::abstractions::bindings;
use kernel::ffi::c_uint;

/// A `uint` module parameter declared in C, or an enumerated one stored as
/// the index of its value.
///
/// # Invariants
///
/// `get` is the getter of a parameter of this module: it only reads the
/// value with `READ_ONCE()`, so it can be called in any context, at any time.
///
/// # Examples
///
/// ```ignore
/// use crate::abstractions::params::UintParam;
///
/// // At probe: how many request queues to dedicate to polled I/O.
/// let wanted_poll = UintParam::VIRTSCSI_POLL_QUEUES.get();
/// let num_poll = wanted_poll.min(num_queues - 1);
/// ```
#[derive(Clone, Copy)]
pub(crate) struct UintParam {
    get: unsafe extern "C" fn() -> c_uint,
}

impl UintParam {
    /// `virtscsi_poll_queues` (mode 0644).
    pub(crate) const VIRTSCSI_POLL_QUEUES: Self = Self {
        get: bindings::vscsi_param_poll_queues,
    };

    /// `timeout_policy` (mode 0644), one of [`UintParam::TIMEOUT_STALL`],
    /// [`UintParam::TIMEOUT_WAIT`] and [`UintParam::TIMEOUT_ABORT`].
    pub(crate) const TIMEOUT_POLICY: Self = Self {
        get: bindings::vscsi_param_timeout_policy,
    };

    /// `stall_limit` (mode 0644), in seconds, from 1 to 86400.
    pub(crate) const STALL_LIMIT: Self = Self {
        get: bindings::vscsi_param_stall_limit,
    };

    /// `tmf_timeout` (mode 0644), in seconds, from 1 to 3600.
    pub(crate) const TMF_TIMEOUT: Self = Self {
        get: bindings::vscsi_param_tmf_timeout,
    };

    /// `timeout_policy=stall` (`VSCSI_TIMEOUT_STALL`).
    pub(crate) const TIMEOUT_STALL: u32 = bindings::vscsi_timeout_policy_VSCSI_TIMEOUT_STALL;
    /// `timeout_policy=wait` (`VSCSI_TIMEOUT_WAIT`).
    pub(crate) const TIMEOUT_WAIT: u32 = bindings::vscsi_timeout_policy_VSCSI_TIMEOUT_WAIT;
    /// `timeout_policy=abort` (`VSCSI_TIMEOUT_ABORT`).
    pub(crate) const TIMEOUT_ABORT: u32 = bindings::vscsi_timeout_policy_VSCSI_TIMEOUT_ABORT;

    /// Returns the parameter's current value.
    pub(crate) fn get(self) -> u32 {
        // SAFETY: By the type invariant `get` only reads the value.
        unsafe { (self.get)() }
    }
}
