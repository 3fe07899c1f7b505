//! `Manager::apply`: OCI `linux.resources` -> cgroup files.
//!
//! Apply works in two phases so that bad input leaves the cgroup untouched:
//! 1. *plan*: each resource group turns its fields into an ordered list of `Step`s (file +
//!    value + the OCI field it serves), converting values for the hierarchy that serves the
//!    controller (v1 file names, or cgroup2 ones on pure v2 and for controllers that a hybrid
//!    host only has in its cgroup2 mount, e.g. hugetlb). Planning validates values (ranges,
//!    cpuset lists against the parent, unified keys, device rules) and reads what ordering
//!    depends on (the current memory limit);
//! 2. *check*: every file that must be written has to exist, else `Error::Unsupported`
//!    naming the field; optional files (v1 kernel memory, swap) are dropped with a log line;
//! 3. *write* in order. A kernel refusal is `Error::Write` naming field, file and value; the
//!    steps already written stay (the kernel has no transaction).
//!
//! | OCI | v1 | cgroup2 |
//! |---|---|---|
//! | cpu.shares | cpu.shares | cpu.weight = 1 + (shares-2)*9999/262142 |
//! | cpu.quota/period | cpu.cfs_quota_us/cfs_period_us | cpu.max "quota\|max period" |
//! | cpu.burst / idle | cpu.cfs_burst_us / cpu.idle | cpu.max.burst / cpu.idle |
//! | cpu.realtime* | cpu.rt_runtime_us/rt_period_us | unsupported (error) |
//! | cpu.cpus/mems | cpuset.cpus/mems | cpuset.cpus/mems |
//! | memory.limit/swap | memory.limit_in_bytes, memory.memsw.limit_in_bytes (if present) | memory.max, memory.swap.max = swap - limit |
//! | memory.reservation | memory.soft_limit_in_bytes | memory.low |
//! | memory.swappiness/disableOOMKiller/kernelTCP | memory.swappiness/oom_control/kmem.tcp.limit_in_bytes | ignored, logged |
//! | memory.kernel | memory.kmem.limit_in_bytes if present | ignored, logged |
//! | pids.limit | pids.max (<= 0: max) | pids.max |
//! | blockIO.weight/weightDevice | blkio.weight(_device) or blkio.bfq.* | io.bfq.weight, else io.weight converted |
//! | blockIO.leafWeight | blkio.leaf_weight(_device) | ignored, logged |
//! | blockIO.throttle* | blkio.throttle.* | io.max rbps/wbps/riops/wiops |
//! | hugepageLimits | hugetlb.SIZE.limit_in_bytes | hugetlb.SIZE.max (+ .rsvd.max) |
//! | network | net_cls.classid, net_prio.ifpriomap | net_cls/net_prio if mounted, else error |
//! | rdma | rdma.max | rdma.max |
//! | devices | only the changes to devices.allow/deny, checked in devices.list | eBPF device program (replaces ours) |
//! | unified | error on legacy | each key written, unknown keys rejected |

mod blkio;
mod cpu;
mod devices;
mod memory;
mod misc;

use crate::error::{Error, Result};
use crate::hierarchy::Dir;
use crate::{CgroupMode, Manager};
use oci_spec::runtime::LinuxResources;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use blkio::blkio_weight_to_io_weight;
pub use cpu::{parse_cpu_list, shares_to_weight};
pub use memory::swap_to_v2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// Where a controller's files are for this container.
#[derive(Debug, Clone)]
pub(crate) struct Loc {
    pub version: Version,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// The file must exist.
    Always,
    /// Skipped (logged) when the file does not exist.
    IfExists,
    /// EINVAL is ignored: a later step writes the same file again (cpu period before quota).
    TolerateEinval,
}

#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub field: String,
    pub path: PathBuf,
    pub value: String,
    pub when: When,
}

pub(crate) struct Plan<'a> {
    mgr: &'a Manager,
    /// Controllers of the container's cgroup2 directory (its cgroup.controllers).
    unified_controllers: BTreeSet<String>,
    pub steps: Vec<Step>,
    /// Done after the writes, in order (device program, devices.list check).
    pub finish: Vec<devices::Finish>,
}

impl<'a> Plan<'a> {
    fn new(mgr: &'a Manager) -> Result<Plan<'a>> {
        let mut unified_controllers = BTreeSet::new();
        if let Some(u) = &mgr.unified {
            let file = u.path.join("cgroup.controllers");
            // Hybrid: the unified dir is optional for resources; pure v2: it must exist.
            if mgr.mode == CgroupMode::Unified || file.exists() {
                unified_controllers = crate::fs::read(
                    "linux.resources (cgroup.controllers; was create() called?)",
                    &file,
                )?
                .split_whitespace()
                .map(String::from)
                .collect();
            }
        }
        Ok(Plan {
            mgr,
            unified_controllers,
            steps: Vec::new(),
            finish: Vec::new(),
        })
    }

    pub fn mode(&self) -> CgroupMode {
        self.mgr.mode
    }

    /// The hierarchy that serves `controller`: its v1 mount if there is one (not on pure v2),
    /// else the cgroup2 directory if the controller is enabled there.
    pub fn locate(&self, controller: &str) -> Option<Loc> {
        if self.mgr.mode != CgroupMode::Unified {
            if let Some(d) = self.mgr.v1.get(controller) {
                return Some(Loc {
                    version: Version::V1,
                    dir: d.path.clone(),
                });
            }
        }
        let u = self.mgr.unified.as_ref()?;
        self.unified_controllers.contains(controller).then(|| Loc {
            version: Version::V2,
            dir: u.path.clone(),
        })
    }

    /// Like [`Plan::locate`] but an error naming `field` when no hierarchy serves it.
    pub fn require(&self, field: &str, controller: &str) -> Result<Loc> {
        self.locate(controller).ok_or_else(|| {
            let reason = match self.mgr.mode {
                CgroupMode::Unified => format!(
                    "controller {controller:?} is not enabled for {} (not in its cgroup.controllers)",
                    self.unified_dir().map(|d| d.display().to_string()).unwrap_or_default()
                ),
                CgroupMode::Hybrid => format!(
                    "controller {controller:?} is neither mounted as cgroup v1 nor enabled in the cgroup2 directory {} \
                     (the host must delegate it in the cgroup2 root's cgroup.subtree_control; host-owned cgroups are never written)",
                    self.unified_dir().map(|d| d.display().to_string()).unwrap_or_default()
                ),
                CgroupMode::Legacy => format!("controller {controller:?} is not mounted"),
            };
            Error::unsupported(field, reason)
        })
    }

    pub fn unified_dir(&self) -> Option<&Path> {
        self.mgr.unified.as_ref().map(|d: &Dir| d.path.as_path())
    }

    pub fn push(&mut self, field: &str, loc: &Loc, file: &str, value: impl ToString, when: When) {
        self.steps.push(Step {
            field: field.to_string(),
            path: loc.dir.join(file),
            value: value.to_string(),
            when,
        });
    }
}

pub(crate) fn apply(mgr: &Manager, res: &LinuxResources) -> Result<()> {
    let mut plan = Plan::new(mgr)?;
    if let Some(c) = res.cpu() {
        cpu::plan(&mut plan, c)?;
    }
    if let Some(m) = res.memory() {
        memory::plan(&mut plan, m)?;
    }
    if let Some(p) = res.pids() {
        misc::pids(&mut plan, p)?;
    }
    if let Some(b) = res.block_io() {
        blkio::plan(&mut plan, b)?;
    }
    if let Some(h) = res.hugepage_limits() {
        misc::hugetlb(&mut plan, h)?;
    }
    if let Some(n) = res.network() {
        misc::network(&mut plan, n)?;
    }
    if let Some(r) = res.rdma() {
        misc::rdma(&mut plan, r)?;
    }
    if let Some(d) = res.devices() {
        devices::plan(&mut plan, d)?;
    }
    // Last, so explicit unified keys override the converted values (as runc does).
    if let Some(u) = res.unified() {
        misc::unified(&mut plan, u)?;
    }

    let mut steps = Vec::with_capacity(plan.steps.len());
    for s in std::mem::take(&mut plan.steps) {
        if s.path.exists() {
            steps.push(s);
        } else if s.when == When::IfExists {
            log::info!(
                "{}: {} does not exist on this host; not set",
                s.field,
                s.path.display()
            );
        } else {
            return Err(Error::unsupported(
                &s.field,
                format!("{} does not exist", s.path.display()),
            ));
        }
    }
    for s in steps {
        match crate::fs::write_raw(&s.path, &s.value) {
            Ok(()) => log::debug!("{}: wrote {:?} to {}", s.field, s.value, s.path.display()),
            Err(e) if s.when == When::TolerateEinval && e.raw_os_error() == Some(libc::EINVAL) => {
                log::debug!(
                    "{}: {} refused {:?} for now, retried later",
                    s.field,
                    s.path.display(),
                    s.value
                )
            }
            Err(source) => {
                return Err(Error::Write {
                    field: s.field,
                    path: s.path,
                    value: s.value,
                    source,
                });
            }
        }
    }
    plan.finish.into_iter().try_for_each(devices::finish)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn dir(mount: &str, rel: &str) -> Dir {
        Dir {
            mount: PathBuf::from(mount),
            path: Path::new(mount).join(rel),
        }
    }

    /// A hybrid host whose cgroup2 tree has hugetlb enabled (not the dev VM's case, whose
    /// unified root delegates nothing): hugetlb goes to the unified dir with v2 file names,
    /// memory stays v1.
    #[test]
    fn hybrid_routes_controllers_missing_in_v1_to_the_unified_dir() {
        let mgr = Manager {
            mode: CgroupMode::Hybrid,
            cgroups_path: "/c".into(),
            v1: BTreeMap::from([("memory".to_string(), dir("/sys/fs/cgroup/memory", "c"))]),
            unified: Some(dir("/sys/fs/cgroup/unified", "c")),
        };
        let mut plan = Plan {
            mgr: &mgr,
            unified_controllers: BTreeSet::from(["hugetlb".to_string()]),
            steps: Vec::new(),
            finish: Vec::new(),
        };
        assert_eq!(plan.locate("memory").unwrap().version, Version::V1);
        assert_eq!(plan.locate("hugetlb").unwrap().version, Version::V2);
        assert!(plan.locate("pids").is_none());
        let limits: Vec<oci_spec::runtime::LinuxHugepageLimit> =
            serde_json::from_str(r#"[{"pageSize": "2MB", "limit": 4194304}]"#).unwrap();
        misc::hugetlb(&mut plan, &limits).unwrap();
        assert_eq!(
            plan.steps[0].path,
            Path::new("/sys/fs/cgroup/unified/c/hugetlb.2MB.max")
        );
        assert_eq!(plan.steps[0].value, "4194304");
        assert_eq!(plan.steps[1].when, When::IfExists); // .rsvd.max
        let e = plan
            .require("linux.resources.pids.limit", "pids")
            .unwrap_err();
        assert_eq!(e.field(), Some("linux.resources.pids.limit"));
    }
}
