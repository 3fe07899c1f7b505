//! `containerd-shim-runc-v2-rs`: a containerd runtime-v2 shim (runtime type
//! `io.containerd.runc.v2-rs`), a drop-in for containerd's Go
//! `containerd-shim-runc-v2`, that drives any runc-compatible CLI (runc-rs by
//! default, runc, crun) through the runc command-line contract only.
//!
//! Layers, top down:
//!
//! | module | what |
//! |---|---|
//! | [`bootstrap`], [`protocol`], [`info`] | the `start` / `delete` actions; what each containerd gives and reads; `-info` |
//! | [`server`] | the serving process: ttrpc server, signals, subreaper, shutdown |
//! | [`service`] | the ttrpc `containerd.task.v2.Task` (and v3) service, a thin adapter |
//! | [`task`] | the task manager: containers, pid ↔ process bookkeeping, events |
//! | [`container`] | one container: options, rootfs mounts, runtime calls |
//! | [`early_delete`] | the runtime's delete of a container whose init exited, before containerd's Delete |
//! | [`checkpoint`] | the Checkpoint RPC and the restore a checkpointed Create defers to Start |
//! | [`process`] | a process's state machine (created, running, paused, stopped, deleted) |
//! | [`lifecycle`] | exit bookkeeping and ordering (init after its execs) |
//! | [`options`] | runtime options: runc Options, CRI config files, shim config |
//! | [`runc`] | the runc CLI client |
//! | [`stdio`], [`logbin`], [`console`] | FIFOs, pipes, console socket, copy threads; `binary://` loggers |
//! | [`metrics`], [`oom`] | Stats (cgroup metrics protos), OOM events |
//! | [`events`] | the bounded event queue forwarded to containerd |
//! | [`reaper`] | subreaper, SIGCHLD reaping, waiting for commands |
//! | [`mount`], [`logger`], [`args`], [`toml`], [`error`] | helpers |

pub mod args;
pub mod background;
pub mod bootstrap;
pub mod checkpoint;
pub mod console;
pub mod container;
pub mod early_delete;
pub mod error;
pub mod events;
pub mod info;
pub mod lifecycle;
pub mod logbin;
pub mod logger;
pub mod metrics;
pub mod mount;
pub mod oom;
pub mod options;
pub mod process;
pub mod protocol;
pub mod reaper;
pub mod rpc;
pub mod runc;
pub mod server;
pub mod service;
pub mod spare;
pub mod stdio;
pub mod task;
pub mod toml;

/// The runtime type containerd selects this shim with.
pub const RUNTIME_NAME: &str = "io.containerd.runc.v2-rs";
