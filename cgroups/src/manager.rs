//! The [`Manager`]: placement (new/create/add_pid), listing, delete. Freezing and killing live
//! in `freezer.rs`, resources in `resources/`.

use crate::error::{Error, Result};
use crate::fs;
use crate::hierarchy::{self, CgPath, Dir};
use crate::{detect_mode, CgroupMode};
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cgroup directories of one container, one per hierarchy.
///
/// Serializable: a runtime stores it in its state and rebuilds it for `kill`/`delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manager {
    pub(crate) mode: CgroupMode,
    /// The cleaned `cgroupsPath` ("/a/b" or "a/b").
    pub(crate) cgroups_path: String,
    /// v1 controller (or `name=...` hierarchy) -> directory. Co-mounted controllers
    /// (cpu,cpuacct) share one directory.
    pub(crate) v1: BTreeMap<String, Dir>,
    /// The cgroup2 directory: everything on pure v2, the /sys/fs/cgroup/unified one on hybrid.
    pub(crate) unified: Option<Dir>,
}

/// One hierarchy of the container, as the operations walk them.
pub(crate) struct Hier<'a> {
    /// "cpu,cpuacct", "name=systemd", "unified", ...
    pub label: String,
    pub dir: &'a Dir,
    pub v2: bool,
}

impl Manager {
    /// `cgroups_path` is the OCI `linux.cgroupsPath`. Absolute ("/a/b"): from each hierarchy's
    /// root. Relative ("a/b"): below the calling process's own cgroup of each hierarchy (from
    /// /proc/self/cgroup). None or empty: "/" + `default_name` (runc's cgroupfs default).
    pub fn new(cgroups_path: Option<&str>, default_name: &str) -> Result<Manager> {
        let mode = detect_mode();
        let path = hierarchy::parse_cgroups_path(cgroups_path, default_name)?;
        let read_proc = |p: &str| {
            std::fs::read_to_string(p).map_err(|source| Error::Read {
                field: "cgroup mounts".into(),
                path: PathBuf::from(p),
                source,
            })
        };
        let mounts = hierarchy::parse_mountinfo(&read_proc("/proc/self/mountinfo")?);
        let own = hierarchy::parse_proc_cgroup(&read_proc("/proc/self/cgroup")?);
        let layout = hierarchy::layout(mode, &mounts, &own, &path)?;
        let cgroups_path = match &path {
            CgPath::Absolute(p) => format!("/{}", p.join("/")),
            CgPath::Relative(p) => p.join("/"),
        };
        log::debug!("cgroups: {mode:?} mode, {cgroups_path} -> {layout:?}");
        Ok(Manager {
            mode,
            cgroups_path,
            v1: layout.v1,
            unified: layout.unified,
        })
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// The cleaned cgroups path this manager was built from.
    pub fn cgroups_path(&self) -> &str {
        &self.cgroups_path
    }

    /// Controller name -> directory; "unified" names the cgroup2 directory (the only entry on
    /// pure v2). The named `name=systemd` hierarchy appears as "systemd" (the base name of its
    /// usual mount point /sys/fs/cgroup/systemd, which is what a runtime binds it as).
    pub fn paths(&self) -> BTreeMap<String, PathBuf> {
        let mut out: BTreeMap<String, PathBuf> = self
            .v1
            .iter()
            .map(|(c, d)| {
                let key = c.strip_prefix("name=").unwrap_or(c);
                (key.to_string(), d.path.clone())
            })
            .collect();
        if let Some(u) = &self.unified {
            out.insert("unified".into(), u.path.clone());
        }
        out
    }

    /// Every hierarchy once (co-mounted v1 controllers grouped), v1 first, then cgroup2.
    pub(crate) fn hierarchies(&self) -> Vec<Hier<'_>> {
        let mut grouped: BTreeMap<&Path, Vec<&str>> = BTreeMap::new();
        for (c, d) in &self.v1 {
            grouped.entry(d.path.as_path()).or_default().push(c);
        }
        let mut out: Vec<Hier<'_>> = grouped
            .into_iter()
            .map(|(p, names)| Hier {
                label: names.join(","),
                dir: self
                    .v1
                    .values()
                    .find(|d| d.path == p)
                    .expect("grouped from v1"),
                v2: false,
            })
            .collect();
        if let Some(u) = &self.unified {
            out.push(Hier {
                label: "unified".into(),
                dir: u,
                v2: true,
            });
        }
        out
    }

    /// The directory whose tree lists the container's processes: the cgroup2 one on pure v2,
    /// else the v1 freezer (what kill_all freezes), else another v1 hierarchy.
    pub(crate) fn primary(&self) -> Option<&Dir> {
        if self.mode == CgroupMode::Unified {
            return self.unified.as_ref();
        }
        ["freezer", "pids", "memory", "cpu", "devices"]
            .iter()
            .find_map(|c| self.v1.get(*c))
            .or_else(|| self.v1.values().next())
            .or(self.unified.as_ref())
    }

    /// mkdir -p in every hierarchy. v1 cpuset: new directories get cpuset.cpus/mems copied
    /// from their parent (the kernel leaves them empty, which refuses tasks). cgroup2: the
    /// controllers available to a parent are enabled in its cgroup.subtree_control -- for
    /// every ancestor on pure v2 (as runc does), but on hybrid only for directories this call
    /// created, so host-owned cgroups are never written.
    pub fn create(&self) -> Result<()> {
        for h in self.hierarchies() {
            let is_cpuset = !h.v2 && h.label.split(',').any(|c| c == "cpuset");
            let levels = h.dir.levels();
            let mut parent = h.dir.mount.clone();
            let mut parent_created = false;
            for (i, level) in levels.iter().enumerate() {
                let created = match std::fs::create_dir(level) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(source) => {
                        return Err(Error::Create {
                            path: level.clone(),
                            source,
                        })
                    }
                };
                if created {
                    log::debug!("{}: created {}", h.label, level.display());
                }
                if h.v2 && (self.mode == CgroupMode::Unified || parent_created) {
                    enable_controllers(&parent);
                }
                if is_cpuset && (created || i == levels.len() - 1) {
                    copy_cpuset_from_parent(&parent, level)?;
                }
                parent = level.clone();
                parent_created = created;
            }
        }
        Ok(())
    }

    /// Moves `pid` into the container's cgroup of every hierarchy (v1 ones and, on hybrid, the
    /// unified one too).
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for h in self.hierarchies() {
            fs::write(
                &format!("cgroup.procs ({})", h.label),
                &h.dir.path.join("cgroup.procs"),
                &pid.to_string(),
            )?;
        }
        Ok(())
    }

    /// Moves the calling thread into the container's cgroup, the cheap way.
    ///
    /// Moving *another* process (`add_pid`) takes the kernel's global
    /// threadgroup rwsem for writing, which waits for an RCU grace period:
    /// 5–15 ms on an idle machine, the largest single cost of creating a
    /// container. A thread moving itself by writing "0" to a v1 `tasks`
    /// file takes no such lock. The cgroup2 directory has no such shortcut
    /// (its `cgroup.procs` always takes the lock), so a caller that forked
    /// with `clone3(CLONE_INTO_CGROUP)` into [`Manager::unified_dir`] passes
    /// `skip_unified`; otherwise the cgroup2 directory is joined through
    /// `cgroup.procs`. The caller must be single-threaded: `tasks` moves one
    /// thread only.
    pub fn enter_self(&self, skip_unified: bool) -> Result<()> {
        for h in self.hierarchies() {
            if h.v2 {
                if !skip_unified {
                    fs::write(
                        &format!("cgroup.procs ({})", h.label),
                        &h.dir.path.join("cgroup.procs"),
                        "0",
                    )?;
                }
                continue;
            }
            fs::write(
                &format!("tasks ({})", h.label),
                &h.dir.path.join("tasks"),
                "0",
            )?;
        }
        Ok(())
    }

    /// The container's cgroup2 directory (pure v2, or the unified one of a
    /// hybrid host), for `clone3(CLONE_INTO_CGROUP)`.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_ref().map(|u| u.path.as_path())
    }

    /// Writes `linux.resources`; see [`crate::resources`] for what maps where.
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        crate::resources::apply(self, res)
    }

    /// Every pid in the container's cgroup and below it.
    pub fn pids(&self) -> Result<Vec<i32>> {
        match self.primary() {
            Some(d) => fs::procs_recursive(&d.path),
            None => Ok(Vec::new()),
        }
    }

    /// True if the container's directory exists in any hierarchy.
    pub fn exists(&self) -> bool {
        self.hierarchies().iter().any(|h| h.dir.path.is_dir())
    }

    /// Removes the container's directory in every hierarchy, with any sub-cgroups below it
    /// (deepest first, EBUSY retried for up to a second in all). Directories already gone are fine; the
    /// parents named by the cgroups path are never removed. Tries every hierarchy and returns
    /// the first error.
    pub fn delete(&self) -> Result<()> {
        let mut first_err = None;
        // One EBUSY budget for the whole call, so a cgroup that is really busy fails fast.
        let deadline = Instant::now() + Duration::from_secs(1);
        for h in self.hierarchies() {
            let dir = &h.dir.path;
            if dir == &h.dir.mount || !dir.starts_with(&h.dir.mount) {
                // Never from our own construction; guards a hand-edited state file.
                first_err.get_or_insert(Error::Path {
                    path: dir.display().to_string(),
                    reason: format!(
                        "is not below the {} mount {}",
                        h.label,
                        h.dir.mount.display()
                    ),
                });
                continue;
            }
            if let Err(e) = fs::remove_tree(dir, deadline) {
                log::warn!("delete {}: {e}", h.label);
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Enables in `dir`'s cgroup.subtree_control every controller it has but has not enabled yet.
/// Best effort: a controller that cannot be enabled (internal processes, threaded subtree) is
/// logged, and apply() later reports the field that needs it.
fn enable_controllers(dir: &Path) {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let enabled: BTreeSet<String> = read("cgroup.subtree_control")
        .split_whitespace()
        .map(String::from)
        .collect();
    let missing: Vec<String> = read("cgroup.controllers")
        .split_whitespace()
        .filter(|c| !enabled.contains(*c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return;
    }
    let file = dir.join("cgroup.subtree_control");
    if fs::write("cgroup.subtree_control", &file, &missing.join(" ")).is_ok() {
        return;
    }
    for c in &missing {
        if let Err(e) = fs::write("cgroup.subtree_control", &file, c) {
            log::warn!("cannot enable controller {c}: {e}");
        }
    }
}

fn copy_cpuset_from_parent(parent: &Path, dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let field = format!("{file} (copied from parent on create)");
        if fs::read(&field, &dir.join(file))?.is_empty() {
            let value = fs::read(&field, &parent.join(file))?;
            fs::write(&field, &dir.join(file), &value)?;
        }
    }
    Ok(())
}
