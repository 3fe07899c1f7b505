//! cgroup v1 statistics: `io.containerd.cgroups.v1.Metrics` (containerd's
//! `cgroup1/stats/metrics.proto`), message for message and field for field. Units are the
//! kernel's: bytes, nanoseconds (CPU), counts.

use super::{major_minor, read_keyed, read_keyed_except, read_opt, read_u64};
use crate::error::Result;
use crate::{CgroupMode, Manager};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    pub hugetlb: Vec<HugetlbStat>,
    pub pids: Option<PidsStat>,
    pub cpu: Option<CpuStat>,
    pub memory: Option<MemoryStat>,
    pub blkio: Option<BlkIoStat>,
    pub rdma: Option<RdmaStat>,
    /// Interface counters live in the container's network namespace, not in a cgroup: always
    /// empty here (containerd fills it from /proc/PID/net/dev).
    pub network: Vec<NetworkStat>,
    /// Task states come from netlink taskstats, not cgroupfs: always `None` here.
    pub cgroup_stats: Option<CgroupStats>,
    pub memory_oom_control: Option<MemoryOomControl>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HugetlbStat {
    /// hugetlb.SIZE.usage_in_bytes (hybrid from cgroup2: hugetlb.SIZE.current)
    pub usage: u64,
    /// hugetlb.SIZE.max_usage_in_bytes, the peak (hybrid from cgroup2: 0, v2 keeps no peak)
    pub max: u64,
    /// hugetlb.SIZE.failcnt (hybrid from cgroup2: `max` of hugetlb.SIZE.events)
    pub failcnt: u64,
    /// "2MB", "1GB"
    pub pagesize: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PidsStat {
    pub current: u64,
    /// pids.max; 0 when it is "max" (unlimited), as containerd reports it.
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuStat {
    pub usage: Option<CpuUsage>,
    pub throttling: Option<Throttle>,
}

/// Nanoseconds, from cpuacct.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    /// cpuacct.usage
    pub total: u64,
    /// cpuacct.stat `system` (clock ticks, converted)
    pub kernel: u64,
    /// cpuacct.stat `user` (clock ticks, converted)
    pub user: u64,
    /// cpuacct.usage_percpu
    pub per_cpu: Vec<u64>,
}

/// cpu.stat of the cpu controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Throttle {
    #[serde(alias = "nr_periods")]
    pub periods: u64,
    #[serde(alias = "nr_throttled")]
    pub throttled_periods: u64,
    /// nanoseconds
    pub throttled_time: u64,
}

/// memory.stat (bytes and page-event counts), plus the four usage/limit file groups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryStat {
    pub cache: u64,
    pub rss: u64,
    pub rss_huge: u64,
    pub mapped_file: u64,
    pub dirty: u64,
    pub writeback: u64,
    #[serde(alias = "pgpgin")]
    pub pg_pg_in: u64,
    #[serde(alias = "pgpgout")]
    pub pg_pg_out: u64,
    #[serde(alias = "pgfault")]
    pub pg_fault: u64,
    #[serde(alias = "pgmajfault")]
    pub pg_maj_fault: u64,
    pub inactive_anon: u64,
    pub active_anon: u64,
    pub inactive_file: u64,
    pub active_file: u64,
    pub unevictable: u64,
    pub hierarchical_memory_limit: u64,
    #[serde(alias = "hierarchical_memsw_limit")]
    pub hierarchical_swap_limit: u64,
    pub total_cache: u64,
    pub total_rss: u64,
    pub total_rss_huge: u64,
    pub total_mapped_file: u64,
    pub total_dirty: u64,
    pub total_writeback: u64,
    #[serde(alias = "total_pgpgin")]
    pub total_pg_pg_in: u64,
    #[serde(alias = "total_pgpgout")]
    pub total_pg_pg_out: u64,
    #[serde(alias = "total_pgfault")]
    pub total_pg_fault: u64,
    #[serde(alias = "total_pgmajfault")]
    pub total_pg_maj_fault: u64,
    pub total_inactive_anon: u64,
    pub total_active_anon: u64,
    pub total_inactive_file: u64,
    pub total_active_file: u64,
    pub total_unevictable: u64,
    /// memory.{usage_in_bytes,limit_in_bytes,max_usage_in_bytes,failcnt}
    pub usage: Option<MemoryEntry>,
    /// memory.memsw.* (memory + swap); `None` without swap accounting
    pub swap: Option<MemoryEntry>,
    /// memory.kmem.*; `None` on kernels without it
    pub kernel: Option<MemoryEntry>,
    /// memory.kmem.tcp.*
    pub kernel_tcp: Option<MemoryEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryEntry {
    pub limit: u64,
    pub usage: u64,
    /// the peak (`max_usage_in_bytes`)
    pub max: u64,
    pub failcnt: u64,
}

/// memory.oom_control
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryOomControl {
    pub oom_kill_disable: u64,
    pub under_oom: u64,
    pub oom_kill: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlkIoStat {
    pub io_service_bytes_recursive: Vec<BlkIoEntry>,
    pub io_serviced_recursive: Vec<BlkIoEntry>,
    pub io_queued_recursive: Vec<BlkIoEntry>,
    pub io_service_time_recursive: Vec<BlkIoEntry>,
    pub io_wait_time_recursive: Vec<BlkIoEntry>,
    pub io_merged_recursive: Vec<BlkIoEntry>,
    pub io_time_recursive: Vec<BlkIoEntry>,
    pub sectors_recursive: Vec<BlkIoEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlkIoEntry {
    /// "Read", "Write", "Sync", "Async", "Discard", "Total"; empty for single-value files
    pub op: String,
    /// "/dev/NAME" from /proc/partitions, empty when not listed there
    pub device: String,
    pub major: u64,
    pub minor: u64,
    pub value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RdmaStat {
    pub current: Vec<RdmaEntry>,
    pub limit: Vec<RdmaEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RdmaEntry {
    pub device: String,
    /// "max" is u32::MAX
    pub hca_handles: u32,
    pub hca_objects: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkStat {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CgroupStats {
    pub nr_sleeping: u64,
    pub nr_running: u64,
    pub nr_stopped: u64,
    pub nr_uninterruptible: u64,
    pub nr_io_wait: u64,
}

pub(super) fn read(mgr: &Manager) -> Result<Metrics> {
    let dir = |c: &str| mgr.v1.get(c).map(|d| d.path.as_path());
    let mut m = Metrics::default();
    if let Some(d) = dir("pids") {
        if let Some(current) = read_u64(&d.join("pids.current"), 0)? {
            let limit = read_u64(&d.join("pids.max"), 0)?.unwrap_or(0);
            m.pids = Some(PidsStat { current, limit });
        }
    }
    let usage = dir("cpuacct").map(cpu_usage).transpose()?.flatten();
    let throttling = match dir("cpu") {
        Some(d) => read_keyed::<Throttle>(&d.join("cpu.stat"))?,
        None => None,
    };
    if usage.is_some() || throttling.is_some() {
        m.cpu = Some(CpuStat { usage, throttling });
    }
    if let Some(d) = dir("memory") {
        m.memory = memory(d)?;
        m.memory_oom_control = read_keyed(&d.join("memory.oom_control"))?;
    }
    if let Some(d) = dir("blkio") {
        m.blkio = Some(blkio(d)?);
    }
    if let Some(d) = dir("rdma") {
        m.rdma = Some(RdmaStat {
            current: super::v2::rdma(&d.join("rdma.current"))?,
            limit: super::v2::rdma(&d.join("rdma.max"))?,
        });
    }
    m.hugetlb = hugetlb(mgr)?;
    Ok(m)
}

fn cpu_usage(d: &Path) -> Result<Option<CpuUsage>> {
    let Some(total) = read_u64(&d.join("cpuacct.usage"), 0)? else {
        return Ok(None);
    };
    let mut u = CpuUsage {
        total,
        ..Default::default()
    };
    // cpuacct.stat counts USER_HZ ticks (as runc and containerd read it, so numbers compare).
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Ticks {
        user: u64,
        system: u64,
    }
    if let Some(t) = read_keyed::<Ticks>(&d.join("cpuacct.stat"))? {
        let hz = clock_ticks();
        u.user = t.user.saturating_mul(1_000_000_000) / hz;
        u.kernel = t.system.saturating_mul(1_000_000_000) / hz;
    }
    let file = d.join("cpuacct.usage_percpu");
    if let Some(c) = read_opt(&file)? {
        u.per_cpu = c
            .split_whitespace()
            .map(|v| v.parse().map_err(|_| super::parse_err(&file, &c)))
            .collect::<Result<_>>()?;
    }
    Ok(Some(u))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    }
}

fn memory(d: &Path) -> Result<Option<MemoryStat>> {
    // The entries come from their own files (memory.stat's `swap` is a plain byte count).
    let entries = ["usage", "swap", "kernel", "kernel_tcp"];
    let Some(mut m) = read_keyed_except::<MemoryStat>(&d.join("memory.stat"), &entries)? else {
        return Ok(None);
    };
    let entry = |prefix: &str| -> Result<Option<MemoryEntry>> {
        let f = |name: &str| read_u64(&d.join(format!("{prefix}{name}")), u64::MAX);
        let Some(usage) = f("usage_in_bytes")? else {
            return Ok(None);
        };
        Ok(Some(MemoryEntry {
            usage,
            limit: f("limit_in_bytes")?.unwrap_or(0),
            max: f("max_usage_in_bytes")?.unwrap_or(0),
            failcnt: f("failcnt")?.unwrap_or(0),
        }))
    };
    m.usage = entry("memory.")?;
    m.swap = entry("memory.memsw.")?;
    m.kernel = entry("memory.kmem.")?;
    m.kernel_tcp = entry("memory.kmem.tcp.")?;
    Ok(Some(m))
}

/// The first family of blkio statistics files that has entries: CFQ (`blkio.*_recursive`),
/// then BFQ (`blkio.bfq.*_recursive`), then the throttle layer (which counts every bio, so a
/// cgroup on a device with neither scheduler still shows its I/O), as runc does. Since Linux
/// 6.9 the throttle layer exists on a device only once some cgroup has a throttle rule for it:
/// before that its counters stay empty, for runc as here.
fn blkio(d: &Path) -> Result<BlkIoStat> {
    let devices = partitions();
    let read = |file: &str| -> Result<Vec<BlkIoEntry>> {
        let path = d.join(file);
        let Some(content) = read_opt(&path)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for line in content.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            // "MAJ:MIN Op value", "MAJ:MIN value", or the closing "Total value".
            let (mm, op, value) = match w.as_slice() {
                [mm, op, v] => (*mm, *op, *v),
                [mm, v] if mm.contains(':') => (*mm, "", *v),
                _ => continue,
            };
            let (Some((major, minor)), Ok(value)) = (major_minor(mm), value.parse()) else {
                return Err(super::parse_err(&path, line));
            };
            out.push(BlkIoEntry {
                op: op.to_string(),
                device: devices.get(&(major, minor)).cloned().unwrap_or_default(),
                major,
                minor,
                value,
            });
        }
        Ok(out)
    };
    for prefix in ["blkio.", "blkio.bfq."] {
        let s = BlkIoStat {
            io_service_bytes_recursive: read(&format!("{prefix}io_service_bytes_recursive"))?,
            io_serviced_recursive: read(&format!("{prefix}io_serviced_recursive"))?,
            io_queued_recursive: read(&format!("{prefix}io_queued_recursive"))?,
            io_service_time_recursive: read(&format!("{prefix}io_service_time_recursive"))?,
            io_wait_time_recursive: read(&format!("{prefix}io_wait_time_recursive"))?,
            io_merged_recursive: read(&format!("{prefix}io_merged_recursive"))?,
            io_time_recursive: read(&format!("{prefix}time_recursive"))?,
            sectors_recursive: read(&format!("{prefix}sectors_recursive"))?,
        };
        if s != BlkIoStat::default() {
            return Ok(s);
        }
    }
    Ok(BlkIoStat {
        io_service_bytes_recursive: read("blkio.throttle.io_service_bytes_recursive")?,
        io_serviced_recursive: read("blkio.throttle.io_serviced_recursive")?,
        ..Default::default()
    })
}

/// (major, minor) -> "/dev/NAME" from /proc/partitions.
fn partitions() -> HashMap<(u64, u64), String> {
    let content = std::fs::read_to_string("/proc/partitions").unwrap_or_default();
    content
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [a, b, _, name] => {
                    Some(((a.parse().ok()?, b.parse().ok()?), format!("/dev/{name}")))
                }
                _ => None,
            }
        })
        .collect()
}

/// From the v1 hugetlb hierarchy, or on hybrid from the cgroup2 directory when the host
/// enables hugetlb there (its files exist) and v1 has no hugetlb hierarchy.
fn hugetlb(mgr: &Manager) -> Result<Vec<HugetlbStat>> {
    use super::hugetlb_file as f;
    let mut out = Vec::new();
    if let Some(d) = mgr.v1.get("hugetlb") {
        for size in super::hugepage_sizes() {
            let Some(usage) = read_u64(&f(&d.path, size, "usage_in_bytes"), u64::MAX)? else {
                continue;
            };
            out.push(HugetlbStat {
                usage,
                max: read_u64(&f(&d.path, size, "max_usage_in_bytes"), u64::MAX)?.unwrap_or(0),
                failcnt: read_u64(&f(&d.path, size, "failcnt"), u64::MAX)?.unwrap_or(0),
                pagesize: size.clone(),
            });
        }
    } else if let (CgroupMode::Hybrid, Some(u)) = (mgr.mode, &mgr.unified) {
        for h in super::v2::hugetlb(&u.path)? {
            out.push(HugetlbStat {
                usage: h.current,
                max: 0,
                failcnt: h.failcnt,
                pagesize: h.pagesize,
            });
        }
    }
    Ok(out)
}
