//! The Stats RPC: the container's cgroup statistics as containerd's cgroups
//! metrics protos, `io.containerd.cgroups.v1.Metrics` (cgroup v1 and hybrid
//! hosts) or `io.containerd.cgroups.v2.Metrics` (pure v2), packed in an `Any`
//! with the bare type name containerd's typeurl registry knows them by.
//!
//! The numbers come from the `cgroups` crate, whose structs mirror the
//! protos field for field; this module only copies them over.

use std::path::Path;

use cgroups::stats::{v1, v2};
use cgroups::{Manager, Stats};
use containerd_shim_protos::cgroups::metrics as pb1;
use containerd_shim_protos::cgroups_v2::metrics as pb2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

use crate::error::{Error, Result};

pub const V1_TYPE: &str = "io.containerd.cgroups.v1.Metrics";
pub const V2_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

/// The cgroup of the container whose init is `pid`: where the kernel says
/// that process is (as the Go shim loads it), else the spec's
/// `linux.cgroupsPath` in `bundle`.
pub fn container_cgroup(pid: i32, bundle: &Path, id: &str) -> Result<Manager> {
    let from_proc = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|s| own_cgroup_path(&s));
    let path = match from_proc {
        Some(p) => p,
        None => spec_cgroups_path(bundle).ok_or_else(|| {
            Error::NotFound(format!(
                "cgroup of container {id} (init pid {pid} gone, no cgroupsPath)"
            ))
        })?,
    };
    Manager::new(Some(&path), id).map_err(|e| Error::Other(format!("cgroup {path}: {e}")))
}

/// The process's cgroup path from `/proc/PID/cgroup`: the v1 memory
/// hierarchy's when there is one (hybrid hosts), else the cgroup2 one.
fn own_cgroup_path(proc_cgroup: &str) -> Option<String> {
    let mut unified = None;
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        if ctrls.split(',').any(|c| c == "memory") {
            return Some(path.to_owned());
        }
        if ctrls.is_empty() {
            unified = Some(path.to_owned());
        }
    }
    unified.filter(|p| p != "/")
}

/// A plain (cgroupfs) `linux.cgroupsPath` of the bundle's spec.
fn spec_cgroups_path(bundle: &Path) -> Option<String> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    let p = spec["linux"]["cgroupsPath"].as_str()?;
    (!p.is_empty() && !p.contains(':')).then(|| p.to_owned())
}

/// Read the statistics of `cg` as the Any the Stats RPC returns.
pub fn stats_any(cg: &Manager, id: &str) -> Result<Any> {
    let stats = cg.stats().map_err(|e| {
        let text = e.to_string();
        if text.contains("No such file") || text.contains("not found") {
            Error::NotFound(format!("cgroup of container {id}: {text}"))
        } else {
            Error::Other(format!("cgroup stats of {id}: {text}"))
        }
    })?;
    Ok(to_any(&stats))
}

/// Pack `stats` for containerd.
pub fn to_any(stats: &Stats) -> Any {
    let (type_url, value) = match stats {
        Stats::V1(m) => (V1_TYPE, metrics_v1(m).write_to_bytes()),
        Stats::V2(m) => (V2_TYPE, metrics_v2(m).write_to_bytes()),
    };
    let mut a = Any::new();
    a.type_url = type_url.to_owned();
    a.value = value.unwrap_or_default();
    a
}

/// `dst.f = src.f` for each listed field.
macro_rules! copy {
    ($dst:ident, $src:ident; $($f:ident),* $(,)?) => { $( $dst.$f = $src.$f.clone(); )* };
}

fn some<T>(v: Option<T>) -> MessageField<T> {
    MessageField::from_option(v)
}

fn metrics_v1(m: &v1::Metrics) -> pb1::Metrics {
    let mut o = pb1::Metrics::new();
    o.hugetlb = m
        .hugetlb
        .iter()
        .map(|s| {
            let mut h = pb1::HugetlbStat::new();
            copy!(h, s; usage, max, failcnt, pagesize);
            h
        })
        .collect();
    o.pids = some(m.pids.as_ref().map(|s| {
        let mut p = pb1::PidsStat::new();
        copy!(p, s; current, limit);
        p
    }));
    o.cpu = some(m.cpu.as_ref().map(|s| {
        let mut c = pb1::CPUStat::new();
        c.usage = some(s.usage.as_ref().map(|u| {
            let mut x = pb1::CPUUsage::new();
            copy!(x, u; total, kernel, user, per_cpu);
            x
        }));
        c.throttling = some(s.throttling.as_ref().map(|t| {
            let mut x = pb1::Throttle::new();
            copy!(x, t; periods, throttled_periods, throttled_time);
            x
        }));
        c
    }));
    o.memory = some(m.memory.as_ref().map(memory_v1));
    o.blkio = some(m.blkio.as_ref().map(|s| {
        let mut b = pb1::BlkIOStat::new();
        let l = |v: &[v1::BlkIoEntry]| -> Vec<pb1::BlkIOEntry> {
            v.iter()
                .map(|e| {
                    let mut x = pb1::BlkIOEntry::new();
                    copy!(x, e; op, device, major, minor, value);
                    x
                })
                .collect()
        };
        b.io_service_bytes_recursive = l(&s.io_service_bytes_recursive);
        b.io_serviced_recursive = l(&s.io_serviced_recursive);
        b.io_queued_recursive = l(&s.io_queued_recursive);
        b.io_service_time_recursive = l(&s.io_service_time_recursive);
        b.io_wait_time_recursive = l(&s.io_wait_time_recursive);
        b.io_merged_recursive = l(&s.io_merged_recursive);
        b.io_time_recursive = l(&s.io_time_recursive);
        b.sectors_recursive = l(&s.sectors_recursive);
        b
    }));
    o.rdma = some(m.rdma.as_ref().map(|r| {
        let mut x = pb1::RdmaStat::new();
        x.current = r.current.iter().map(rdma_v1).collect();
        x.limit = r.limit.iter().map(rdma_v1).collect();
        x
    }));
    o.network = m
        .network
        .iter()
        .map(|n| {
            let mut x = pb1::NetworkStat::new();
            copy!(x, n; name, rx_bytes, rx_packets, rx_errors, rx_dropped,
            tx_bytes, tx_packets, tx_errors, tx_dropped);
            x
        })
        .collect();
    o.cgroup_stats = some(m.cgroup_stats.as_ref().map(|s| {
        let mut x = pb1::CgroupStats::new();
        copy!(x, s; nr_sleeping, nr_running, nr_stopped, nr_uninterruptible, nr_io_wait);
        x
    }));
    o.memory_oom_control = some(m.memory_oom_control.as_ref().map(|s| {
        let mut x = pb1::MemoryOomControl::new();
        copy!(x, s; oom_kill_disable, under_oom, oom_kill);
        x
    }));
    o
}

fn rdma_v1(e: &v1::RdmaEntry) -> pb1::RdmaEntry {
    let mut x = pb1::RdmaEntry::new();
    copy!(x, e; device, hca_handles, hca_objects);
    x
}

fn memory_v1(s: &v1::MemoryStat) -> pb1::MemoryStat {
    let mut x = pb1::MemoryStat::new();
    copy!(x, s; cache, rss, rss_huge, mapped_file, dirty, writeback, pg_pg_in, pg_pg_out,
        pg_fault, pg_maj_fault, inactive_anon, active_anon, inactive_file, active_file,
        unevictable, hierarchical_memory_limit, hierarchical_swap_limit, total_cache,
        total_rss, total_rss_huge, total_mapped_file, total_dirty, total_writeback,
        total_pg_pg_in, total_pg_pg_out, total_pg_fault, total_pg_maj_fault,
        total_inactive_anon, total_active_anon, total_inactive_file, total_active_file,
        total_unevictable);
    let entry = |e: &Option<v1::MemoryEntry>| {
        some(e.as_ref().map(|e| {
            let mut m = pb1::MemoryEntry::new();
            copy!(m, e; limit, usage, max, failcnt);
            m
        }))
    };
    x.usage = entry(&s.usage);
    x.swap = entry(&s.swap);
    x.kernel = entry(&s.kernel);
    x.kernel_tcp = entry(&s.kernel_tcp);
    x
}

fn psi(p: &Option<v2::PsiStats>) -> MessageField<pb2::PSIStats> {
    let data = |d: &Option<v2::PsiData>| {
        some(d.as_ref().map(|d| {
            let mut x = pb2::PSIData::new();
            copy!(x, d; avg10, avg60, avg300, total);
            x
        }))
    };
    some(p.as_ref().map(|p| {
        let mut x = pb2::PSIStats::new();
        x.some = data(&p.some);
        x.full = data(&p.full);
        x
    }))
}

fn metrics_v2(m: &v2::Metrics) -> pb2::Metrics {
    let mut o = pb2::Metrics::new();
    o.pids = some(m.pids.as_ref().map(|s| {
        let mut p = pb2::PidsStat::new();
        copy!(p, s; current, limit);
        p
    }));
    o.cpu = some(m.cpu.as_ref().map(|s| {
        let mut c = pb2::CPUStat::new();
        copy!(c, s; usage_usec, user_usec, system_usec, nr_periods, nr_throttled,
            throttled_usec, nr_bursts, burst_usec);
        c.psi = psi(&s.psi);
        c
    }));
    o.memory = some(m.memory.as_ref().map(|s| {
        let mut x = pb2::MemoryStat::new();
        // containerd's proto has only the combined workingset counters,
        // which Linux 5.9 split into _anon and _file: their sums are the
        // combined values (containerd's Go code reports 0 there).
        copy!(x, s; anon, file, kernel_stack, slab, sock, shmem, file_mapped, file_dirty,
            file_writeback, anon_thp, inactive_anon, active_anon, inactive_file, active_file,
            unevictable, slab_reclaimable, slab_unreclaimable, pgfault, pgmajfault,
            workingset_refault, workingset_activate, workingset_nodereclaim, pgrefill, pgscan,
            pgsteal, pgactivate, pgdeactivate, pglazyfree, pglazyfreed, thp_fault_alloc,
            thp_collapse_alloc, usage, usage_limit, swap_usage, swap_limit, max_usage,
            swap_max_usage);
        if s.workingset_refault == 0 && s.workingset_activate == 0 {
            x.workingset_refault = s.workingset_refault_anon + s.workingset_refault_file;
            x.workingset_activate = s.workingset_activate_anon + s.workingset_activate_file;
        }
        x.psi = psi(&s.psi);
        x
    }));
    o.rdma = some(m.rdma.as_ref().map(|r| {
        let mut x = pb2::RdmaStat::new();
        let e = |e: &v2::RdmaEntry| {
            let mut y = pb2::RdmaEntry::new();
            copy!(y, e; device, hca_handles, hca_objects);
            y
        };
        x.current = r.current.iter().map(e).collect();
        x.limit = r.limit.iter().map(e).collect();
        x
    }));
    o.io = some(m.io.as_ref().map(|s| {
        let mut x = pb2::IOStat::new();
        x.usage = s
            .usage
            .iter()
            .map(|e| {
                let mut y = pb2::IOEntry::new();
                copy!(y, e; major, minor, rbytes, wbytes, rios, wios);
                y
            })
            .collect();
        x.psi = psi(&s.psi);
        x
    }));
    o.hugetlb = m
        .hugetlb
        .iter()
        .map(|s| {
            let mut h = pb2::HugeTlbStat::new();
            copy!(h, s; current, max, pagesize, failcnt);
            h
        })
        .collect();
    o.memory_events = some(m.memory_events.as_ref().map(|s| {
        let mut x = pb2::MemoryEvents::new();
        copy!(x, s; low, high, max, oom, oom_kill, oom_group_kill);
        x
    }));
    o.network = m
        .network
        .iter()
        .map(|n| {
            let mut x = pb2::NetworkStat::new();
            copy!(x, n; name, rx_bytes, rx_packets, rx_errors, rx_dropped,
            tx_bytes, tx_packets, tx_errors, tx_dropped);
            x
        })
        .collect();
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_parsing() {
        let hybrid = "12:pids:/ns/c1\n5:memory:/ns/c1\n1:name=systemd:/ns/c1\n0::/ns/c1\n";
        assert_eq!(own_cgroup_path(hybrid).as_deref(), Some("/ns/c1"));
        assert_eq!(own_cgroup_path("0::/a/b\n").as_deref(), Some("/a/b"));
        assert_eq!(own_cgroup_path("0::/\n"), None);
        assert_eq!(own_cgroup_path(""), None);
    }

    #[test]
    fn spec_path_fallback() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(spec_cgroups_path(d.path()), None);
        std::fs::write(
            d.path().join("config.json"),
            r#"{"linux":{"cgroupsPath":"/x/y"}}"#,
        )
        .unwrap();
        assert_eq!(spec_cgroups_path(d.path()).as_deref(), Some("/x/y"));
        std::fs::write(
            d.path().join("config.json"),
            r#"{"linux":{"cgroupsPath":"s.slice:p:n"}}"#,
        )
        .unwrap();
        assert_eq!(spec_cgroups_path(d.path()), None);
    }

    #[test]
    fn v1_fields_survive_the_round_trip() {
        let m = v1::Metrics {
            pids: Some(v1::PidsStat {
                current: 3,
                limit: 0,
            }),
            memory: Some(v1::MemoryStat {
                cache: 4096,
                total_pg_fault: 9,
                usage: Some(v1::MemoryEntry {
                    limit: 1 << 30,
                    usage: 1 << 20,
                    max: 2 << 20,
                    failcnt: 1,
                }),
                ..Default::default()
            }),
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage {
                    total: 5,
                    kernel: 1,
                    user: 4,
                    per_cpu: vec![2, 3],
                }),
                throttling: None,
            }),
            memory_oom_control: Some(v1::MemoryOomControl {
                oom_kill: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = to_any(&Stats::V1(m));
        assert_eq!(a.type_url, V1_TYPE);
        let back = pb1::Metrics::parse_from_bytes(&a.value).unwrap();
        assert_eq!(back.pids.current, 3);
        assert_eq!(back.memory.cache, 4096);
        assert_eq!(back.memory.total_pg_fault, 9);
        assert_eq!(back.memory.usage.usage, 1 << 20);
        assert_eq!(back.memory.usage.limit, 1 << 30);
        assert!(back.memory.swap.is_none());
        assert_eq!(back.cpu.usage.per_cpu, vec![2, 3]);
        assert!(back.cpu.throttling.is_none());
        assert_eq!(back.memory_oom_control.oom_kill, 2);
        assert!(back.blkio.is_none());
    }

    #[test]
    fn v2_fields_survive_the_round_trip() {
        let m = v2::Metrics {
            pids: Some(v2::PidsStat {
                current: 1,
                limit: u64::MAX,
            }),
            memory: Some(v2::MemoryStat {
                usage: 7,
                usage_limit: 8,
                anon: 5,
                workingset_refault_anon: 2,
                workingset_refault_file: 3,
                workingset_activate_file: 4,
                psi: Some(v2::PsiStats {
                    some: Some(v2::PsiData {
                        avg10: 1.5,
                        total: 3,
                        ..Default::default()
                    }),
                    full: None,
                }),
                ..Default::default()
            }),
            memory_events: Some(v2::MemoryEvents {
                oom_kill: 4,
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = to_any(&Stats::V2(m));
        assert_eq!(a.type_url, V2_TYPE);
        let back = pb2::Metrics::parse_from_bytes(&a.value).unwrap();
        assert_eq!(
            (back.memory.usage, back.memory.usage_limit, back.memory.anon),
            (7, 8, 5)
        );
        assert_eq!(
            (
                back.memory.workingset_refault,
                back.memory.workingset_activate
            ),
            (5, 4),
            "Linux 5.9+ split counters summed into the combined fields"
        );
        assert_eq!(back.memory.psi.some.avg10, 1.5);
        assert!(back.memory.psi.full.is_none());
        assert_eq!(back.pids.limit, u64::MAX);
        assert_eq!(back.memory_events.oom_kill, 4);
    }
}
