// SPDX-License-Identifier: GPL-2.0

//! Bindings for the C headers that `kernel::bindings` does not cover.
//!
//! `bindings_generated.rs` is written at build time by bindgen from
//! `bindings_helper.h`, with the kernel's own flags and options (see `Kbuild`).
//! It holds only the items listed in `bindgen_parameters`; every type they
//! refer to that is not listed resolves through the glob import of
//! `kernel::bindings` below, so the two sets never define a type twice.
//!
//! A private child of `abstractions`: only the abstraction layer can use it.

#![allow(
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    improper_ctypes,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]

pub(super) use kernel::bindings::*;

include!("bindings_generated.rs");
