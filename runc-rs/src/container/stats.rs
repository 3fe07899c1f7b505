//! The `data` of `events --stats`: runc 1.1's `types.Stats` JSON (key
//! names, Go's `omitempty` rules, number types), built from the cgroups
//! crate's [`cgroups::Stats`] for both cgroup versions.
//!
//! runc prints a few things the crate's containerd-shaped structs do not
//! carry; they are read from the container's cgroup directories
//! ([`cgroups::Manager::paths`]): every `memory.stat` key (`memory.raw`),
//! the v1 cpuset files and `cpuacct.usage_all` (per-cpu user/kernel time).

use std::collections::BTreeMap;
use std::path::Path;

use cgroups::stats::{v1, v2};
use serde_json::{json, Map, Value};

/// Go's `omitempty` for the numbers of runc's types: a zero is left out.
fn put(m: &mut Map<String, Value>, key: &str, v: u64) {
    if v != 0 {
        m.insert(key.into(), json!(v));
    }
}

fn put_list<T: serde::Serialize>(m: &mut Map<String, Value>, key: &str, v: &[T]) {
    if !v.is_empty() {
        m.insert(key.into(), json!(v));
    }
}

/// runc's MemoryEntry: limit and failcnt always, usage and max when set.
fn memory_entry(limit: u64, usage: u64, max: u64, failcnt: u64) -> Value {
    let mut m = Map::new();
    m.insert("limit".into(), json!(limit));
    put(&mut m, "usage", usage);
    put(&mut m, "max", max);
    m.insert("failcnt".into(), json!(failcnt));
    Value::Object(m)
}

fn v1_entry(e: &Option<v1::MemoryEntry>) -> Value {
    let e = e.clone().unwrap_or_default();
    memory_entry(e.limit, e.usage, e.max, e.failcnt)
}

/// Every `key value` line of a flat keyed file.
fn keyed(path: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

fn blkio_list(entries: &[(String, u64, u64, u64)]) -> Value {
    entries
        .iter()
        .map(|(op, major, minor, value)| {
            let mut m = Map::new();
            put(&mut m, "major", *major);
            put(&mut m, "minor", *minor);
            if !op.is_empty() {
                m.insert("op".into(), json!(op));
            }
            put(&mut m, "value", *value);
            Value::Object(m)
        })
        .collect()
}

fn v1_blkio(entries: &[v1::BlkIoEntry]) -> Vec<(String, u64, u64, u64)> {
    entries
        .iter()
        .map(|e| (e.op.clone(), e.major, e.minor, e.value))
        .collect()
}

/// The runc `types.Stats` object of a container.
pub fn runc_stats(cg: &cgroups::Manager) -> Result<Value, cgroups::Error> {
    let paths = cg.paths();
    match cg.stats()? {
        cgroups::Stats::V1(m) => Ok(from_v1(&m, &paths)),
        cgroups::Stats::V2(m) => Ok(from_v2(&m, paths.get("unified").map(|p| p.as_path()), cg)),
    }
}

fn empty_cpuset() -> Map<String, Value> {
    let mut m = Map::new();
    for k in [
        "cpu_exclusive",
        "mem_hardwall",
        "mem_exclusive",
        "memory_migrate",
        "memory_spread_page",
        "memory_spread_slab",
        "memory_pressure",
        "sched_load_balance",
    ] {
        m.insert(k.into(), json!(0u64));
    }
    m.insert("sched_relax_domain_level".into(), json!(0i64));
    m
}

/// runc's fs driver reads the v1 cpuset files into CPUSetStats (key order
/// as runc prints them).
fn v1_cpuset(dir: Option<&Path>) -> Value {
    let Some(d) = dir else {
        return Value::Object(empty_cpuset());
    };
    let read = |f: &str| {
        std::fs::read_to_string(d.join(format!("cpuset.{f}")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let list = |f: &str| -> Vec<u16> {
        cgroups::resources::parse_cpu_list(&read(f))
            .unwrap_or_default()
            .into_iter()
            .map(|c| c as u16)
            .collect()
    };
    let num = |f: &str| json!(read(f).parse::<u64>().unwrap_or(0));
    let mut out = Map::new();
    put_list(&mut out, "cpus", &list("cpus"));
    out.insert("cpu_exclusive".into(), num("cpu_exclusive"));
    put_list(&mut out, "mems", &list("mems"));
    for k in [
        "mem_hardwall",
        "mem_exclusive",
        "memory_migrate",
        "memory_spread_page",
        "memory_spread_slab",
        "memory_pressure",
        "sched_load_balance",
    ] {
        out.insert(k.into(), num(k));
    }
    out.insert(
        "sched_relax_domain_level".into(),
        json!(read("sched_relax_domain_level").parse::<i64>().unwrap_or(0)),
    );
    Value::Object(out)
}

fn from_v1(m: &v1::Metrics, paths: &BTreeMap<String, std::path::PathBuf>) -> Value {
    let dir = |c: &str| paths.get(c).map(|p| p.as_path());
    // cpu
    let usage = m
        .cpu
        .as_ref()
        .and_then(|c| c.usage.clone())
        .unwrap_or_default();
    let mut u = Map::new();
    put(&mut u, "total", usage.total);
    put_list(&mut u, "percpu", &usage.per_cpu);
    let (mut pk, mut pu) = (vec![], vec![]);
    if let Some(d) = dir("cpuacct") {
        // "cpu user system" per line, after a header.
        let text = std::fs::read_to_string(d.join("cpuacct.usage_all")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<u64> = line
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() == 3 {
                pu.push(f[1]);
                pk.push(f[2]);
            }
        }
    }
    put_list(&mut u, "percpu_kernel", &pk);
    put_list(&mut u, "percpu_user", &pu);
    u.insert("kernel".into(), json!(usage.kernel));
    u.insert("user".into(), json!(usage.user));
    let th = m
        .cpu
        .as_ref()
        .and_then(|c| c.throttling.clone())
        .unwrap_or_default();
    let mut t = Map::new();
    put(&mut t, "periods", th.periods);
    put(&mut t, "throttledPeriods", th.throttled_periods);
    put(&mut t, "throttledTime", th.throttled_time);
    // memory
    let mem = m.memory.clone().unwrap_or_default();
    let mut mm = Map::new();
    put(&mut mm, "cache", mem.cache);
    mm.insert("usage".into(), v1_entry(&mem.usage));
    mm.insert("swap".into(), v1_entry(&mem.swap));
    mm.insert("kernel".into(), v1_entry(&mem.kernel));
    mm.insert("kernelTCP".into(), v1_entry(&mem.kernel_tcp));
    let raw = dir("memory")
        .map(|d| keyed(&d.join("memory.stat")))
        .unwrap_or_default();
    if !raw.is_empty() {
        mm.insert("raw".into(), json!(raw));
    }
    // pids
    let pids = m.pids.clone().unwrap_or_default();
    let mut p = Map::new();
    put(&mut p, "current", pids.current);
    put(&mut p, "limit", pids.limit);
    // blkio
    let b = m.blkio.clone().unwrap_or_default();
    let mut bm = Map::new();
    for (key, list) in [
        ("ioServiceBytesRecursive", &b.io_service_bytes_recursive),
        ("ioServicedRecursive", &b.io_serviced_recursive),
        ("ioQueueRecursive", &b.io_queued_recursive),
        ("ioServiceTimeRecursive", &b.io_service_time_recursive),
        ("ioWaitTimeRecursive", &b.io_wait_time_recursive),
        ("ioMergedRecursive", &b.io_merged_recursive),
        ("ioTimeRecursive", &b.io_time_recursive),
        ("sectorsRecursive", &b.sectors_recursive),
    ] {
        if !list.is_empty() {
            bm.insert(key.into(), blkio_list(&v1_blkio(list)));
        }
    }
    let mut h = Map::new();
    for e in &m.hugetlb {
        h.insert(e.pagesize.clone(), hugetlb(e.usage, e.max, e.failcnt));
    }
    assemble(u, t, v1_cpuset(dir("cpuset")), mm, p, bm, h)
}

fn hugetlb(usage: u64, max: u64, failcnt: u64) -> Value {
    let mut m = Map::new();
    put(&mut m, "usage", usage);
    put(&mut m, "max", max);
    m.insert("failcnt".into(), json!(failcnt));
    Value::Object(m)
}

fn assemble(
    usage: Map<String, Value>,
    throttling: Map<String, Value>,
    cpuset: Value,
    memory: Map<String, Value>,
    pids: Map<String, Value>,
    blkio: Map<String, Value>,
    hugetlb: Map<String, Value>,
) -> Value {
    json!({
        "cpu": { "usage": usage, "throttling": throttling },
        "cpuset": cpuset,
        "memory": memory,
        "pids": pids,
        "blkio": blkio,
        "hugetlb": hugetlb,
        "intel_rdt": {},
        "network_interfaces": null,
    })
}

/// runc's fs2 driver: cpu.stat in µs scaled to ns, memory.current/max with
/// swap reported v1-style (memory + swap), io.stat as Read/Write entries.
fn from_v2(m: &v2::Metrics, dir: Option<&Path>, cg: &cgroups::Manager) -> Value {
    let cpu = m.cpu.clone().unwrap_or_default();
    let mut u = Map::new();
    put(&mut u, "total", cpu.usage_usec * 1000);
    u.insert("kernel".into(), json!(cpu.system_usec * 1000));
    u.insert("user".into(), json!(cpu.user_usec * 1000));
    let mut t = Map::new();
    put(&mut t, "periods", cpu.nr_periods);
    put(&mut t, "throttledPeriods", cpu.nr_throttled);
    put(&mut t, "throttledTime", cpu.throttled_usec * 1000);
    let mut mm = Map::new();
    if let Some(mem) = &m.memory {
        put(&mut mm, "cache", mem.file);
        mm.insert(
            "usage".into(),
            memory_entry(mem.usage_limit, mem.usage, 0, 0),
        );
        let swap_limit = if mem.swap_limit == u64::MAX {
            u64::MAX
        } else {
            mem.swap_limit.saturating_add(mem.usage_limit)
        };
        mm.insert(
            "swap".into(),
            memory_entry(swap_limit, mem.swap_usage + mem.usage, 0, 0),
        );
    } else {
        mm.insert("usage".into(), memory_entry(0, 0, 0, 0));
        mm.insert("swap".into(), memory_entry(0, 0, 0, 0));
    }
    mm.insert("kernel".into(), memory_entry(0, 0, 0, 0));
    mm.insert("kernelTCP".into(), memory_entry(0, 0, 0, 0));
    let raw = dir
        .map(|d| keyed(&d.join("memory.stat")))
        .unwrap_or_default();
    if !raw.is_empty() {
        mm.insert("raw".into(), json!(raw));
    }
    let mut p = Map::new();
    match &m.pids {
        Some(pids) => {
            put(&mut p, "current", pids.current);
            put(
                &mut p,
                "limit",
                if pids.limit == u64::MAX {
                    0
                } else {
                    pids.limit
                },
            );
        }
        // Without the pids controller runc counts cgroup.procs.
        None => put(
            &mut p,
            "current",
            cg.pids().map(|v| v.len() as u64).unwrap_or(0),
        ),
    }
    let mut bm = Map::new();
    if let Some(io) = &m.io {
        let (mut bytes, mut ios) = (vec![], vec![]);
        for e in &io.usage {
            bytes.push(("Read".to_owned(), e.major, e.minor, e.rbytes));
            bytes.push(("Write".to_owned(), e.major, e.minor, e.wbytes));
            ios.push(("Read".to_owned(), e.major, e.minor, e.rios));
            ios.push(("Write".to_owned(), e.major, e.minor, e.wios));
        }
        if !bytes.is_empty() {
            bm.insert("ioServiceBytesRecursive".into(), blkio_list(&bytes));
            bm.insert("ioServicedRecursive".into(), blkio_list(&ios));
        }
    }
    let mut h = Map::new();
    for e in &m.hugetlb {
        h.insert(e.pagesize.clone(), hugetlb(e.current, 0, e.failcnt));
    }
    assemble(u, t, Value::Object(empty_cpuset()), mm, p, bm, h)
}
