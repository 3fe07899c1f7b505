//! runc-rs: a native OCI runtime, CLI-compatible with runc.
//!
//! The binary (`main.rs`) parses runc's command line and calls one operation
//! in [`container`]; each operation lives in its own file. Creating a
//! container forks twice (see [`process`]): the *parent* (this CLI process)
//! places the child in its cgroup and writes id mappings, the *intermediate*
//! joins/creates namespaces, and the *init* (pid 1 of a new pid namespace)
//! prepares the rootfs, waits on `exec.fifo`, and execs the user's process.

pub mod capabilities;
pub mod container;
pub mod features;
pub mod goflags;
pub mod hooks;
pub mod logging;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod rootless;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod tty;
pub mod utils;
