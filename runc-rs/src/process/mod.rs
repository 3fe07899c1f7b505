//! The process model of `create`: parent → intermediate → init.
//!
//! * parent (the CLI process, [`parent`]): forks the intermediate, puts it
//!   in the container's cgroup, writes user-namespace id maps, runs
//!   createRuntime hooks when init asks, and returns init's pid once init
//!   reports `Ready`.
//! * intermediate ([`intermediate`]): writes oom_score_adj, joins the
//!   namespaces given by path, creates the new ones (user first), and clones
//!   init with CLONE_PARENT so that init is the parent's child, then exits.
//! * init ([`init`]): pid 1 of the new pid namespace; prepares the rootfs,
//!   pivots, sets hostname, sysctls, rlimits, identity, capabilities and
//!   seccomp, reports `Ready`, blocks on `exec.fifo` until `start`, execs.

pub mod channel;
pub mod exec;
pub mod finalize;
pub mod identity;
pub mod init;
pub mod intermediate;
pub mod parent;
pub mod spawn;

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use oci_spec::runtime::Spec;

/// Everything the children need; they inherit it through fork.
pub struct LaunchConfig {
    pub id: String,
    pub spec: Spec,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub state_dir: PathBuf,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub console_socket: Option<OwnedFd>,
    /// exec.fifo opened O_PATH by the parent (reopened for writing by init).
    pub fifo: OwnedFd,
    /// How many fds above stdio pass into the container (preserve-fds + LISTEN_FDS).
    pub passed_fds: i32,
    pub cgroup: Option<cgroups::Manager>,
    pub cgroup_unified: bool,
    /// The container's cgroup directory per v1 hierarchy (for cgroup mounts).
    pub cgroup_dirs: std::collections::BTreeMap<String, PathBuf>,
    /// Extra environment for the process (LISTEN_FDS/LISTEN_PID).
    pub extra_env: Vec<String>,
}
