// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `virtio_scsi_rs_protocol`: the protocol layer's self-tests
//! (`protocol::selftest`, also run on the host by `cargo test`), executed in
//! the kernel.
//!
//! Linux 6.12 has no Rust KUnit macros, so the suite is registered the way
//! `kunit_test_suite()` does it in C: a pointer to a `struct kunit_suite` in
//! the module's `.kunit_test_suites` section, which the module loader hands
//! to KUnit. The suite has one parameterised case, `protocol`, with one
//! parameter per self-test; KTAP names each subtest after it.

use core::cell::UnsafeCell;
use kernel::bindings;
use kernel::prelude::*;

#[allow(dead_code)]
#[path = "../protocol.rs"]
mod protocol;

use protocol::selftest::{CaseResult, CASES};

module! {
    type: VscsiKunit,
    name: "virtio_scsi_rs_kunit",
    author: "virtio-scsi-rs developers",
    description: "KUnit tests of the virtio_scsi_rs protocol layer",
    license: "GPL",
}

struct VscsiKunit;

impl kernel::Module for VscsiKunit {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}

extern "C" {
    fn vscsi_kunit_fail(test: *mut bindings::kunit, line: u32, expr: *const u8, len: usize);
}

type Case = (&'static str, fn() -> CaseResult);

/// Returns the parameter after `prev` (the first if null) and names it in
/// `desc`; null after the last.
///
/// # Safety
///
/// Called by KUnit with `prev` null or a value this function returned, and
/// `desc` pointing to `KUNIT_PARAM_DESC_SIZE` writable bytes.
unsafe extern "C" fn generate_params(
    prev: *const kernel::ffi::c_void,
    desc: *mut kernel::ffi::c_char,
) -> *const kernel::ffi::c_void {
    let next = if prev.is_null() {
        0
    } else {
        // SAFETY: `prev` is an element of `CASES` (returned below), a
        // `static`: the same single array every time it is read.
        let offset = unsafe { prev.cast::<Case>().offset_from(CASES.as_ptr()) };
        offset as usize + 1
    };
    let Some(case) = CASES.get(next) else {
        return core::ptr::null();
    };
    let name = case.0.as_bytes();
    let len = name.len().min(bindings::KUNIT_PARAM_DESC_SIZE as usize - 1);
    // SAFETY: `desc` has room for `KUNIT_PARAM_DESC_SIZE` bytes; we write at
    // most that many, NUL included.
    unsafe {
        core::ptr::copy_nonoverlapping(name.as_ptr(), desc.cast::<u8>(), len);
        *desc.add(len) = 0;
    }
    core::ptr::from_ref(case).cast()
}

/// Runs the self-test in the test's parameter.
///
/// # Safety
///
/// Called by KUnit with a valid test whose `param_value` came from
/// `generate_params`.
unsafe extern "C" fn run_case(test: *mut bindings::kunit) {
    // SAFETY: KUnit passes a valid test; its parameter is an element of
    // `CASES` (see `generate_params`).
    let case = unsafe { &*(*test).param_value.cast::<Case>() };
    if let Err(failure) = (case.1)() {
        // SAFETY: `test` is valid; the expression is passed with its length.
        unsafe {
            vscsi_kunit_fail(
                test,
                failure.line,
                failure.expr.as_ptr(),
                failure.expr.len(),
            )
        };
    }
}

/// Interior-mutable storage for C objects that KUnit writes to (status,
/// log), shared only with KUnit.
#[repr(transparent)]
struct KunitCell<T>(UnsafeCell<T>);

// SAFETY: Only KUnit accesses the contents, and it serialises the runs of a
// suite.
unsafe impl<T> Sync for KunitCell<T> {}

const fn test_case() -> bindings::kunit_case {
    // SAFETY: All-zero is a valid `kunit_case` (null pointers, no callbacks,
    // default attributes); the fields that matter are set below.
    let mut case: bindings::kunit_case = unsafe { core::mem::zeroed() };
    case.run_case = Some(run_case);
    case.name = kernel::c_str!("protocol").as_char_ptr();
    case.generate_params = Some(generate_params);
    case
}

/// The case table, ended by an all-zero entry as `KUNIT_CASE` tables are.
static TEST_CASES: KunitCell<[bindings::kunit_case; 2]> =
    // SAFETY: All-zero is the terminating `kunit_case`.
    KunitCell(UnsafeCell::new([test_case(), unsafe {
            core::mem::zeroed()
        }]));

const fn suite() -> bindings::kunit_suite {
    // SAFETY: All-zero is a valid `kunit_suite` before registration.
    let mut suite: bindings::kunit_suite = unsafe { core::mem::zeroed() };
    let name = b"virtio_scsi_rs_protocol";
    let mut i = 0;
    while i < name.len() {
        suite.name[i] = name[i];
        i += 1;
    }
    suite.test_cases = TEST_CASES.0.get().cast();
    suite
}

static SUITE: KunitCell<bindings::kunit_suite> = KunitCell(UnsafeCell::new(suite()));

/// A suite pointer as the module loader expects in `.kunit_test_suites`.
#[repr(transparent)]
struct SuitePtr(*mut bindings::kunit_suite);

// SAFETY: The pointer is only read, by the module loader and KUnit.
unsafe impl Sync for SuitePtr {}

#[used]
#[link_section = ".kunit_test_suites"]
static KUNIT_SUITES: [SuitePtr; 1] = [SuitePtr(SUITE.0.get())];
