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

/// At most one message per interval (as `DEFINE_RATELIMIT_STATE(rs,
/// interval, 1)` allows), lock-free.
pub(super) struct Ratelimit {
    interval_ms: i64,
    /// When the last message was allowed (`ktime_get()`, in ms), or
    /// `i64::MIN` before the first.
    last_ms: AtomicI64,
}

impl Ratelimit {
    pub(super) const fn new(interval_ms: i64) -> Self {
        Self {
            interval_ms,
            last_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// Whether a message may be printed now.
    pub(super) fn allow(&self) -> bool {
        let now = Ktime::ktime_get().to_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != i64::MIN && now.saturating_sub(last) < self.interval_ms {
            return false;
        }
        // One of the callers that saw the same `last` wins.
        self.last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Stall warnings: one per 5 s for the whole driver.
static STALL_WARN: Ratelimit = Ratelimit::new(5000);

/// Whether a stall warning may be printed now (one per 5 s, for the
/// whole driver).
pub(super) fn stall_warn_ratelimit() -> bool {
    STALL_WARN.allow()
}
