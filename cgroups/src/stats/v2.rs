//! cgroup v2 statistics: `io.containerd.cgroups.v2.Metrics` (containerd's
//! `cgroup2/stats/metrics.proto`), message for message and field for field. Limits that read
//! "max" are u64::MAX, as containerd reports them.

use super::{eq_pairs, from_pairs, major_minor, read_keyed, read_keyed_except, read_opt, read_u64};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    pub pids: Option<PidsStat>,
    pub cpu: Option<CpuStat>,
    pub memory: Option<MemoryStat>,
    pub rdma: Option<RdmaStat>,
    pub io: Option<IoStat>,
    pub hugetlb: Vec<HugeTlbStat>,
    pub memory_events: Option<MemoryEvents>,
    /// Interface counters live in the container's network namespace, not in a cgroup: always
    /// empty here.
    pub network: Vec<NetworkStat>,
}

/// PRESSURE stall information of one line ("some" or "full") of a *.pressure file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PsiData {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// microseconds
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PsiStats {
    pub some: Option<PsiData>,
    pub full: Option<PsiData>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PidsStat {
    pub current: u64,
    pub limit: u64,
}

/// cpu.stat (microseconds) and cpu.pressure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuStat {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
    pub psi: Option<PsiStats>,
    pub nr_bursts: u64,
    pub burst_usec: u64,
}

/// memory.stat (bytes and event counts, by the kernel's key names), memory.current/max/peak,
/// memory.swap.current/max/peak and memory.pressure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryStat {
    pub anon: u64,
    pub file: u64,
    pub kernel_stack: u64,
    pub slab: u64,
    pub sock: u64,
    pub shmem: u64,
    pub file_mapped: u64,
    pub file_dirty: u64,
    pub file_writeback: u64,
    pub anon_thp: u64,
    pub inactive_anon: u64,
    pub active_anon: u64,
    pub inactive_file: u64,
    pub active_file: u64,
    pub unevictable: u64,
    pub slab_reclaimable: u64,
    pub slab_unreclaimable: u64,
    pub pgfault: u64,
    pub pgmajfault: u64,
    /// Before Linux 5.9 only (then split into _anon/_file).
    pub workingset_refault: u64,
    /// Before Linux 5.9 only (then split into _anon/_file).
    pub workingset_activate: u64,
    pub workingset_nodereclaim: u64,
    pub pgrefill: u64,
    pub pgscan: u64,
    pub pgsteal: u64,
    pub pgactivate: u64,
    pub pgdeactivate: u64,
    pub pglazyfree: u64,
    pub pglazyfreed: u64,
    pub thp_fault_alloc: u64,
    pub thp_collapse_alloc: u64,
    /// memory.current
    pub usage: u64,
    /// memory.max
    pub usage_limit: u64,
    /// memory.swap.current
    pub swap_usage: u64,
    /// memory.swap.max
    pub swap_limit: u64,
    /// memory.peak (Linux 5.19+, else 0)
    pub max_usage: u64,
    /// memory.swap.peak (Linux 6.5+, else 0)
    pub swap_max_usage: u64,
    pub psi: Option<PsiStats>,
    pub workingset_refault_anon: u64,
    pub workingset_refault_file: u64,
    pub workingset_activate_anon: u64,
    pub workingset_activate_file: u64,
}

/// memory.events (hierarchical: counts the container's sub-cgroups too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryEvents {
    pub low: u64,
    pub high: u64,
    pub max: u64,
    pub oom: u64,
    pub oom_kill: u64,
    pub oom_group_kill: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RdmaStat {
    pub current: Vec<RdmaEntry>,
    pub limit: Vec<RdmaEntry>,
}

pub use super::v1::RdmaEntry;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IoStat {
    /// io.stat, one entry per device line
    pub usage: Vec<IoEntry>,
    pub psi: Option<PsiStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IoEntry {
    pub major: u64,
    pub minor: u64,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HugeTlbStat {
    /// hugetlb.SIZE.current
    pub current: u64,
    /// hugetlb.SIZE.max (the limit)
    pub max: u64,
    /// "2MB", "1GB"
    pub pagesize: String,
    /// `max` of hugetlb.SIZE.events
    pub failcnt: u64,
}

pub use super::v1::NetworkStat;

pub(super) fn read(d: &Path) -> Result<Metrics> {
    let mut m = Metrics::default();
    if let Some(current) = read_u64(&d.join("pids.current"), u64::MAX)? {
        let limit = read_u64(&d.join("pids.max"), u64::MAX)?.unwrap_or(u64::MAX);
        m.pids = Some(PidsStat { current, limit });
    }
    // cpu.stat is a core file (usage without the cpu controller, throttling with it).
    m.cpu = read_keyed_except::<CpuStat>(&d.join("cpu.stat"), &["psi"])?;
    if let Some(c) = &mut m.cpu {
        c.psi = psi(&d.join("cpu.pressure"))?;
    }
    // Filled from their own files below; never taken from a same-named memory.stat key.
    let own_files = [
        "usage",
        "usage_limit",
        "swap_usage",
        "swap_limit",
        "max_usage",
        "swap_max_usage",
        "psi",
    ];
    m.memory = read_keyed_except::<MemoryStat>(&d.join("memory.stat"), &own_files)?;
    if let Some(mem) = &mut m.memory {
        let f = |name: &str| read_u64(&d.join(name), u64::MAX).map(Option::unwrap_or_default);
        mem.usage = f("memory.current")?;
        mem.usage_limit = f("memory.max")?;
        mem.max_usage = f("memory.peak")?;
        mem.swap_usage = f("memory.swap.current")?;
        mem.swap_limit = f("memory.swap.max")?;
        mem.swap_max_usage = f("memory.swap.peak")?;
        mem.psi = psi(&d.join("memory.pressure"))?;
    }
    m.memory_events = read_keyed(&d.join("memory.events"))?;
    let io_stat = d.join("io.stat");
    if let Some(content) = read_opt(&io_stat)? {
        let mut usage = Vec::new();
        for line in content.lines().filter(|l| !l.trim().is_empty()) {
            let (mm, rest) = line.split_once(' ').unwrap_or((line, ""));
            let (major, minor) = major_minor(mm).ok_or_else(|| super::parse_err(&io_stat, line))?;
            let nums = eq_pairs(rest).filter_map(|(k, v)| Some((k, v.parse().ok()?)));
            let nums = nums.chain([("major", major), ("minor", minor)]);
            usage.push(from_pairs::<IoEntry>(&io_stat, nums)?);
        }
        m.io = Some(IoStat {
            usage,
            psi: psi(&d.join("io.pressure"))?,
        });
    }
    if d.join("rdma.current").exists() {
        m.rdma = Some(RdmaStat {
            current: rdma(&d.join("rdma.current"))?,
            limit: rdma(&d.join("rdma.max"))?,
        });
    }
    m.hugetlb = hugetlb(d)?;
    Ok(m)
}

/// hugetlb of every page size whose files exist in `dir` (the controller is enabled there).
pub(crate) fn hugetlb(dir: &Path) -> Result<Vec<HugeTlbStat>> {
    use super::hugetlb_file as f;
    let mut out = Vec::new();
    for size in super::hugepage_sizes() {
        let Some(current) = read_u64(&f(dir, size, "current"), u64::MAX)? else {
            continue;
        };
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Events {
            max: u64,
        }
        let events = read_keyed::<Events>(&f(dir, size, "events"))?.unwrap_or_default();
        out.push(HugeTlbStat {
            current,
            max: read_u64(&f(dir, size, "max"), u64::MAX)?.unwrap_or(u64::MAX),
            pagesize: size.clone(),
            failcnt: events.max,
        });
    }
    Ok(out)
}

/// rdma.current / rdma.max: "DEV hca_handle=N hca_object=M" ("max" = u32::MAX). The same
/// format in v1 and v2.
pub(crate) fn rdma(path: &Path) -> Result<Vec<RdmaEntry>> {
    let Some(content) = read_opt(path)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in content.lines().filter(|l| !l.trim().is_empty()) {
        let (dev, rest) = line.split_once(' ').unwrap_or((line, ""));
        let mut e = RdmaEntry {
            device: dev.to_string(),
            ..Default::default()
        };
        for (k, v) in eq_pairs(rest) {
            let n = if v == "max" {
                u32::MAX
            } else {
                v.parse().map_err(|_| super::parse_err(path, line))?
            };
            match k {
                "hca_handle" => e.hca_handles = n,
                "hca_object" => e.hca_objects = n,
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// A *.pressure file: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and a "full" line.
fn psi(path: &Path) -> Result<Option<PsiStats>> {
    let Some(content) = read_opt(path)? else {
        return Ok(None);
    };
    let mut out = PsiStats::default();
    for line in content.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        let mut d = PsiData::default();
        for (k, v) in eq_pairs(rest) {
            let bad = || super::parse_err(path, line);
            match k {
                "avg10" => d.avg10 = v.parse().map_err(|_| bad())?,
                "avg60" => d.avg60 = v.parse().map_err(|_| bad())?,
                "avg300" => d.avg300 = v.parse().map_err(|_| bad())?,
                "total" => d.total = v.parse().map_err(|_| bad())?,
                _ => {}
            }
        }
        match kind {
            "some" => out.some = Some(d),
            "full" => out.full = Some(d),
            _ => {}
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stat_keys_land_in_their_fields() {
        let p = Path::new("memory.stat");
        let content = "anon 4096\nfile 8192\nworkingset_refault_anon 3\npgfault 77\nzswap 1\n";
        let m: MemoryStat = from_pairs(p, super::super::keyed_pairs(p, content)).unwrap();
        assert_eq!((m.anon, m.file, m.pgfault), (4096, 8192, 77));
        assert_eq!(m.workingset_refault_anon, 3);
    }
}
