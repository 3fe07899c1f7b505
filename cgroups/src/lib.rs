//! cgroup manager for an OCI runtime: one [`Manager`] over cgroup v1 (legacy), hybrid
//! (v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified) and pure v2 (unified).
//!
//! * placement: [`Manager::new`] resolves the OCI `linux.cgroupsPath` to one directory per
//!   hierarchy, [`Manager::create`] makes them, [`Manager::add_pid`] moves a process in;
//! * resources: [`Manager::apply`] writes `linux.resources` (validated first, see
//!   [`resources`]);
//! * lifecycle: freeze/thaw, recursive pid listing, kill-all and delete;
//! * observation: [`Manager::stats`] (containerd's metrics shapes, [`stats`]) and
//!   [`Manager::oom_events`] (one event per OOM kill, [`oom`]).
//!
//! On v1 hosts the container also joins the named `name=systemd` hierarchy (as runc does; no
//! resource is ever written there); [`Manager::paths`] lists it as "systemd".
//!
//! The manager is serializable so a runtime can keep it in its state file and rebuild it for
//! `kill`/`delete` in a later process.

mod error;
mod freezer;
mod fs;
mod hierarchy;
mod manager;
pub mod oom;
pub mod resources;
pub mod stats;
mod sub;

pub use error::{Error, Result};
pub use manager::Manager;
pub use oom::{OomEvent, OomPoll, OomWatcher};
pub use stats::Stats;

use serde::{Deserialize, Serialize};
use std::path::Path;

/// How cgroups are mounted on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CgroupMode {
    /// cgroup v1 only.
    Legacy,
    /// cgroup v1 controllers, plus a cgroup2 mount at /sys/fs/cgroup/unified.
    Hybrid,
    /// Pure cgroup v2 at /sys/fs/cgroup.
    Unified,
}

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
pub const HYBRID_UNIFIED_ROOT: &str = "/sys/fs/cgroup/unified";

/// The host's cgroup mode, from the filesystem magic of /sys/fs/cgroup and
/// /sys/fs/cgroup/unified.
pub fn detect_mode() -> CgroupMode {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    let is_cgroup2 = |p: &str| {
        statfs(Path::new(p))
            .map(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
            .unwrap_or(false)
    };
    if is_cgroup2(CGROUP_ROOT) {
        CgroupMode::Unified
    } else if is_cgroup2(HYBRID_UNIFIED_ROOT) {
        CgroupMode::Hybrid
    } else {
        CgroupMode::Legacy
    }
}

/// State of the freezer (v1 `freezer.state`, v2 `cgroup.freeze` + `cgroup.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreezerState {
    Thawed,
    /// Freezing was requested but not every task is frozen yet.
    Freezing,
    Frozen,
}
