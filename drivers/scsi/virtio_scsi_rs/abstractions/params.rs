// SPDX-License-Identifier: GPL-2.0

//! Module parameters.
//!
//! The 6.12 `module!` macro has no parameters, so they are declared with
//! `module_param()` in `vscsi_helpers.c` and read here.

use crate::abstractions::bindings;

/// What a command timeout leads to (`timeout_policy`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeoutPolicy {
    /// Wait as C does while the command is younger than
    /// [`stall_limit_ms`], then error handling (the default).
    Stall,
    /// Always wait (C's behaviour).
    Wait,
    /// Error handling at the first timeout.
    Abort,
}

/// `timeout_policy`, read at each timeout.
pub(crate) fn timeout_policy() -> TimeoutPolicy {
    // SAFETY: The helper only reads the parameter's value.
    match unsafe { bindings::vscsi_param_timeout_policy() } {
        bindings::vscsi_timeout_policy_VSCSI_TIMEOUT_WAIT => TimeoutPolicy::Wait,
        bindings::vscsi_timeout_policy_VSCSI_TIMEOUT_ABORT => TimeoutPolicy::Abort,
        _ => TimeoutPolicy::Stall,
    }
}

/// Whether a stall warning may be printed now: at most one per 5 s, for
/// the whole driver.
pub(crate) fn stall_warn_ratelimit() -> bool {
    // SAFETY: The helper only updates its own rate-limit state.
    unsafe { bindings::vscsi_stall_warn_ratelimit() }
}

/// `stall_limit`, in milliseconds.
pub(crate) fn stall_limit_ms() -> u32 {
    // SAFETY: The helper only reads the parameter's value.
    unsafe { bindings::vscsi_param_stall_limit() }.saturating_mul(1000)
}

/// `virtscsi_poll_queues`: request queues to dedicate to polled I/O.
pub(crate) fn virtscsi_poll_queues() -> u32 {
    // SAFETY: The helper only reads the parameter's value.
    unsafe { bindings::vscsi_param_poll_queues() }
}
