//! Shared helpers for the end-to-end tests in `tests/tests/`.
//!
//! The tests drive built binaries (never link the runtime), so a runtime that
//! fails to build does not hide which test broke.

pub mod containerd;
mod containerd_config;
pub mod cri;
pub mod diff;
pub mod hygiene;
pub mod pair;
pub mod podman;
pub mod runtime;
pub mod shim_rs;
pub mod vm;
