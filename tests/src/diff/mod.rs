//! Differential testing: run the same OCI bundle under a reference runtime
//! (Debian's runc) and under the runtime under test, and compare what the
//! container saw and what the host saw.
//!
//! # Model
//!
//! A [`Case`] starts from [`testdata::default_spec`], sets `process.args` to
//! a busybox `sh -c SCRIPT` that prints the [`Obs`]ervations the case asks
//! for, and then applies the case's `mutate` function (add a namespace,
//! change capabilities, add a seccomp profile, ...). Each runtime then goes
//! through the same life cycle (see [`runner`]):
//!
//! ```text
//! create --pid-file  -> host: state JSON, /proc/<pid>/cgroup, cgroup files
//! start              -> host: state (the script blocks on stdin: "running")
//! write "go" to stdin -> container prints its observations and exits
//! wait for the init  -> host: exit status (the harness is a child subreaper)
//! state, delete      -> host: status "stopped", nothing left behind (no
//!                       state, empty --root, no cgroup dir in any
//!                       hierarchy, no orphan process), hook log
//! ```
//!
//! A case expected to fail (`expect_fail`) goes through the same steps as
//! far as the runtime lets it; `host.outcome` records where it stopped
//! ("create failed", "start failed", ...) and the leftover checks still run.
//! The reference run of every case is checked first: a normal case must run
//! its script to the end marker, a failing case must not run it, otherwise
//! the case itself is reported as broken (so two runtimes failing the same
//! way never count as a pass).
//!
//! Both runs produce a flat `key -> value` map of [`Observations`]; the two
//! maps are [`compare`]d key by key after minimal, principled normalisation
//! (temp paths, cgroup path and pids become placeholders; namespace inodes
//! become "host"/"new"). See [`compare::normalise`] for the full list.
//!
//! # Choosing the runtimes
//!
//! * reference: `$DIFF_REFERENCE`, default `/usr/sbin/runc`;
//! * under test: `$DIFF_RUNTIME`, default [`crate::runtime::runc_rs_bin`].
//!
//! A value without whitespace is a program path (or a name looked up in
//! `$PATH`). A value with whitespace is a shell command prefix: the harness
//! runs `sh -c '<value> "$@"' diff-runtime ARGS...`. This is how crun 1.8
//! (which refuses hybrid cgroups) is tested on a hybrid host:
//!
//! ```text
//! DIFF_RUNTIME='unshare -m sh -c '\''umount -l /sys/fs/cgroup/unified; exec crun "$@"'\'' sh'
//! ```
//!
//! Other knobs: `$DIFF_CASES` (comma-separated substrings of case names to
//! run), `$DIFF_REPORT` (a directory receiving the normalised observations
//! of every run, one file per case and runtime, for `diff -r`).

pub mod compare;
mod host;
mod runcmd;
pub mod runner;
pub mod script;
pub mod spec_edit;

use serde_json::Value;
use std::collections::BTreeMap;

pub use compare::{compare, CaseOutcome, KeyDiff};
pub use runcmd::Runtime;
pub use runner::{run_suite, SuiteReport};

/// Normalised observations of one run: `key -> value`.
///
/// Keys starting with `host.` were observed by the harness; all others were
/// printed by the container's script.
pub type Observations = BTreeMap<String, String>;

/// One observation the container's script makes. Each variant becomes a
/// section of the script's output and one or more keys in [`Observations`].
#[derive(Clone, Copy, Debug)]
pub enum Obs {
    /// `/proc/self/status` lines `Cap*`, `NoNewPrivs`, `Seccomp`,
    /// `Seccomp_filters`, `Uid`, `Gid`, `Groups`, and `oom_score_adj`.
    Status,
    /// `/proc/self/uid_map`, `gid_map`, `setgroups`.
    IdMaps,
    /// `/proc/self/mountinfo`, one key per mount point (`mount <path>`),
    /// without mount ids, device numbers or host source paths.
    Mounts,
    /// `/proc/sys/kernel/hostname` and `domainname`.
    Uts,
    /// `/proc/self/limits`, one key per limit: `soft hard [units]`.
    Limits,
    /// For each path: kind (file/chardev/dir/missing/other), whether reading
    /// it works, whether a file's content is empty (a masked file reads as
    /// /dev/null; exact sizes of unmasked /proc files change from run to
    /// run), how many entries a directory shows.
    Masked(&'static [&'static str]),
    /// Values of the given sysctls (dotted names) read from `/proc/sys`.
    Sysctl(&'static [&'static str]),
    /// The process environment (`/proc/self/environ`), one key per variable.
    Env,
    /// `pwd` (the shell's idea) and `readlink /proc/self/cwd`.
    Cwd,
    /// `umask` as the shell reports it.
    Umask,
    /// Every node under `/dev` (recursively): type, mode, major:minor,
    /// owner and symlink target.
    Devices,
    /// For each `/proc/self/ns/*`: "host" when it is the harness's own
    /// namespace, "new" otherwise (inode numbers differ per run).
    Namespaces,
    /// `/proc/self/cgroup` (cgroup path normalised to `<CGROUP>`).
    ProcCgroup,
    /// Run a shell snippet in a subshell (`$BB` is the busybox binary) and
    /// record its combined stdout+stderr and exit status under `cmd.<name>`.
    Cmd(&'static str, &'static str),
    /// Contents of a file (or the error reading it) under `file <path>`.
    File(&'static str),
}

/// The observations most cases make besides their own focus: who the
/// process is, what it can do, where it runs.
pub const BASIC: &[Obs] = &[Obs::Status, Obs::Namespaces, Obs::Cwd, Obs::Env, Obs::Umask];

/// Everything, for the baseline cases.
pub const ALL: &[Obs] = &[
    Obs::Status,
    Obs::IdMaps,
    Obs::Mounts,
    Obs::Uts,
    Obs::Limits,
    Obs::Masked(&[
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/acpi",
        "/proc/scsi",
        "/sys/firmware",
        "/proc/sched_debug",
    ]),
    Obs::Sysctl(&["kernel.hostname", "net.ipv4.ip_forward", "kernel.shmmax"]),
    Obs::Env,
    Obs::Cwd,
    Obs::Umask,
    Obs::Devices,
    Obs::Namespaces,
    Obs::ProcCgroup,
];

/// A difference that is expected for one runtime and explained, so it is
/// reported but does not fail the suite. Use only when essential (a real,
/// understood, accepted incompatibility); never to hide a bug.
#[derive(Clone, Copy, Debug)]
pub struct Known {
    /// Matched as a substring of the runtime-under-test's description.
    pub runtime: &'static str,
    /// Matched as a prefix of the observation key.
    pub key_prefix: &'static str,
    /// Why the difference is accepted.
    pub note: &'static str,
}

/// One differential test case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Unique, `[a-z0-9_]`; also names the container and its cgroup.
    pub name: &'static str,
    /// Applied to the base spec (default spec + args + cgroupsPath).
    ///
    /// Strings in the spec may use placeholders, substituted after `mutate`:
    /// `{{BUNDLE}}` (host path of the bundle), `{{BB}}` (busybox inside the
    /// container), `{{CGROUP}}` (the case's cgroupsPath).
    pub mutate: fn(&mut Value),
    /// What the container's script prints.
    pub script: &'static [Obs],
    /// The reference runtime is expected to fail (create or start fails, or
    /// the script never runs); both runtimes must then fail and leave nothing
    /// behind.
    pub expect_fail: bool,
    /// Cgroup files read on the host while the container is alive, as
    /// `<hierarchy>/<file>` (e.g. `memory/memory.limit_in_bytes`), relative
    /// to the case's cgroup in that hierarchy.
    pub cgroup_files: &'static [&'static str],
    /// The same on a pure cgroup v2 host: file names in the case's one
    /// cgroup2 directory (e.g. `memory.max`).
    pub cgroup_v2_files: &'static [&'static str],
    /// Accepted per-runtime differences (see [`Known`]).
    pub known: &'static [Known],
}

impl Case {
    /// A case expected to run to completion under the reference runtime.
    pub fn new(name: &'static str, script: &'static [Obs], mutate: fn(&mut Value)) -> Case {
        Case {
            name,
            mutate,
            script,
            expect_fail: false,
            cgroup_files: &[],
            cgroup_v2_files: &[],
            known: &[],
        }
    }

    /// The reference runtime is expected to refuse this spec.
    pub fn fail(mut self) -> Case {
        self.expect_fail = true;
        self
    }

    /// Read these cgroup files on the host while the container is alive.
    pub fn cgroup(mut self, files: &'static [&'static str]) -> Case {
        self.cgroup_files = files;
        self
    }

    /// Read these cgroup2 files instead when the host is pure cgroup v2.
    pub fn cgroup_v2(mut self, files: &'static [&'static str]) -> Case {
        self.cgroup_v2_files = files;
        self
    }

    /// Accepted differences for a given runtime (see [`Known`]).
    pub fn known(mut self, known: &'static [Known]) -> Case {
        self.known = known;
        self
    }
}
