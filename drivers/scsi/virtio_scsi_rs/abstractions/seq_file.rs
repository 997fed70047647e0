// SPDX-License-Identifier: GPL-2.0

//! Printing into a `seq_file`.
//!
//! C header: [`include/linux/seq_file.h`](srctree/include/linux/seq_file.h)

use crate::abstractions::bindings;
use core::fmt;
use kernel::types::Opaque;

/// A `seq_file` being printed into.
///
/// # Invariants
///
/// `self.0` is a valid `seq_file` for the lifetime of the reference.
///
/// # Examples
///
/// A host's debugfs file, one line per queue:
///
/// ```ignore
/// fn debugfs_show(host: HostRef<'_, Self>, m: &SeqFile) {
///     for (i, vq) in host.data().req_vqs.iter().enumerate() {
///         // Copy out, then print without the lock held.
///         let s = *vq.lock().data();
///         m.print(format_args!("{} submitted {} completed {}\n", i, s.submitted, s.completed));
///     }
/// }
/// ```
#[repr(transparent)]
pub(crate) struct SeqFile(Opaque<bindings::seq_file>);

impl SeqFile {
    /// Appends formatted text (`seq_printf()`).
    pub(crate) fn print(&self, args: fmt::Arguments<'_>) {
        // SAFETY: The seq_file is valid (type invariant); `%pA` formats the
        // `fmt::Arguments`, which outlives the call.
        unsafe {
            bindings::seq_printf(
                self.0.get(),
                kernel::c_str!("%pA").as_char_ptr(),
                core::ptr::from_ref(&args).cast::<kernel::ffi::c_void>(),
            )
        };
    }
}
