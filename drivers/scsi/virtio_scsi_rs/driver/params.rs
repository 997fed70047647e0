// SPDX-License-Identifier: GPL-2.0

//! The driver's module parameters: what their values mean.
//!
//! They are declared in `vscsi_helpers.c` (the 6.12 `module!` macro has no
//! parameters) and read through [`UintParam`]; the C driver has only
//! `virtscsi_poll_queues`. `Documentation/admin-guide.rst` describes them.

use crate::abstractions::params::UintParam;
use core::sync::atomic::{AtomicI64, Ordering};
use kernel::time::Ktime;

/// What a command timeout leads to (`timeout_policy`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeoutPolicy {
    /// Wait as C does while the command is younger than
    /// [`stall_limit_ms`], then error handling (the default).
    Stall,
    /// Always wait (C's behaviour).
    Wait,
    /// Error handling at the first timeout.
    Abort,
}

/// `timeout_policy`, read at each timeout.
pub(super) fn timeout_policy() -> TimeoutPolicy {
    match UintParam::TIMEOUT_POLICY.get() {
        UintParam::TIMEOUT_STALL => TimeoutPolicy::Stall,
        UintParam::TIMEOUT_WAIT => TimeoutPolicy::Wait,
        UintParam::TIMEOUT_ABORT => TimeoutPolicy::Abort,
        // The parameter's setter takes no other value.
        _ => TimeoutPolicy::Stall,
    }
}

/// `stall_limit`, in milliseconds.
pub(super) fn stall_limit_ms() -> u32 {
    UintParam::STALL_LIMIT.get().saturating_mul(1000)
}

/// `tmf_timeout`, in milliseconds: how long a task management function may
/// take before the error handler escalates (C waits forever).
pub(super) fn tmf_timeout_ms() -> u32 {
    UintParam::TMF_TIMEOUT.get().saturating_mul(1000)
}

/// `virtscsi_poll_queues`: request queues to dedicate to polled I/O, read
/// at probe.
pub(super) fn virtscsi_poll_queues() -> u32 {
    UintParam::VIRTSCSI_POLL_QUEUES.get()
}

/// Milliseconds between two stall warnings, for the whole driver.
const STALL_WARN_INTERVAL_MS: i64 = 5000;

/// When the last stall warning was printed (`ktime_get()`, in ms), or
/// `i64::MIN` before the first.
static LAST_STALL_WARN_MS: AtomicI64 = AtomicI64::new(i64::MIN);

/// Whether a stall warning may be printed now: at most one per
/// [`STALL_WARN_INTERVAL_MS`], for the whole driver (as
/// `DEFINE_RATELIMIT_STATE(rs, 5 * HZ, 1)` would allow).
pub(super) fn stall_warn_ratelimit() -> bool {
    let now = Ktime::ktime_get().to_ms();
    let last = LAST_STALL_WARN_MS.load(Ordering::Relaxed);
    if last != i64::MIN && now.saturating_sub(last) < STALL_WARN_INTERVAL_MS {
        return false;
    }
    // One of the callers that saw the same `last` wins.
    LAST_STALL_WARN_MS
        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}
