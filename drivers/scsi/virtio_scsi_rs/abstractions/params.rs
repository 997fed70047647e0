// SPDX-License-Identifier: GPL-2.0

//! Module parameters.
//!
//! The 6.12 `module!` macro has no parameters, so they are declared with
//! `module_param()` in `vscsi_helpers.c` and read here.

use crate::bindings;

/// `virtscsi_poll_queues`: request queues to dedicate to polled I/O.
pub(crate) fn virtscsi_poll_queues() -> u32 {
    // SAFETY: The helper only reads the parameter's value.
    unsafe { bindings::vscsi_param_poll_queues() }
}
