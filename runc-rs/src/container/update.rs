//! `update`: change a running container's resources from a JSON file
//! (`--resources FILE`, `-` for stdin) or from runc 1.1's individual flags,
//! then record the new values in the container's saved spec.
//!
//! As in runc, only memory (limit, reservation, swap), cpu (shares, quota,
//! period, realtime runtime/period, cpus, mems), blockIO.weight, pids.limit
//! and `unified` can change, and a zero or empty value means "unchanged"
//! (runc's decoder pre-fills zeros and its cgroup writers skip them). A
//! failed write puts the recorded values back.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{load, ContainerError};
use crate::state::Status;

#[derive(Debug, Clone, Default)]
pub struct UpdateOpts {
    pub id: String,
    /// `--resources`: a file, or "-" for stdin; the other flags are then ignored.
    pub resources: Option<String>,
    pub blkio_weight: Option<String>,
    pub cpu_period: Option<String>,
    pub cpu_quota: Option<String>,
    pub cpu_share: Option<String>,
    pub cpu_rt_period: Option<String>,
    pub cpu_rt_runtime: Option<String>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub kernel_memory: Option<String>,
    pub kernel_memory_tcp: Option<String>,
    pub memory: Option<String>,
    pub memory_reservation: Option<String>,
    pub memory_swap: Option<String>,
    pub pids_limit: Option<String>,
    pub l3_cache_schema: Option<String>,
    pub mem_bw_schema: Option<String>,
}

/// The part of `linux.resources` that runc's update reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Input {
    memory: MemoryIn,
    cpu: CpuIn,
    #[serde(rename = "blockIO")]
    block_io: BlockIoIn,
    pids: PidsIn,
    unified: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MemoryIn {
    limit: i64,
    reservation: i64,
    swap: i64,
    kernel: i64,
    #[serde(rename = "kernelTCP")]
    kernel_tcp: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct CpuIn {
    shares: u64,
    quota: i64,
    period: u64,
    realtime_runtime: i64,
    realtime_period: u64,
    cpus: String,
    mems: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BlockIoIn {
    weight: u16,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PidsIn {
    limit: i64,
}

fn bad(msg: impl Into<String>) -> ContainerError {
    ContainerError::Precondition(msg.into())
}

pub fn update(root: &Path, o: &UpdateOpts) -> Result<(), ContainerError> {
    let mut st = load(root, &o.id)?;
    let input = match o.resources.as_deref().filter(|r| !r.is_empty()) {
        Some(src) => read_input(src)?,
        None => from_flags(o)?,
    };
    if input.memory.kernel != 0 || input.memory.kernel_tcp != 0 {
        log::warn!("Kernel memory settings are ignored and will be removed");
    }
    rdt_check(o)?;
    if st.status(root) == Status::Stopped {
        return Err(bad("container not running"));
    }
    let cg = st.cgroup.clone().ok_or_else(|| {
        bad("the container has no cgroup (not delegated to this user?): cannot update it")
    })?;
    let mut spec = serde_json::to_value(
        st.config
            .as_ref()
            .ok_or_else(|| bad("the container's state has no spec"))?,
    )
    .expect("spec serializes");
    let old = spec
        .pointer("/linux/resources")
        .cloned()
        .unwrap_or(Value::Null);
    let delta = delta(&input, &old, &cg);
    if delta.as_object().is_none_or(|m| m.is_empty()) {
        return Ok(());
    }
    let res: oci_spec::runtime::LinuxResources =
        serde_json::from_value(delta.clone()).map_err(|e| bad(format!("resources: {e}")))?;
    if let Err(e) = cg.apply(&res) {
        // As runc: try to put back what the container had.
        let back = restore_values(&delta, &old);
        if let Ok(r) = serde_json::from_value::<oci_spec::runtime::LinuxResources>(back) {
            if let Err(e2) = cg.apply(&r) {
                log::warn!("Setting back cgroup configs failed due to error: {e2}, your state.json and actual configs might be inconsistent.");
            }
        }
        return Err(e.into());
    }
    let linux = spec
        .as_object_mut()
        .expect("spec is an object")
        .entry("linux")
        .or_insert_with(|| json!({}));
    let resources = linux
        .as_object_mut()
        .ok_or_else(|| bad("spec: linux is not an object"))?
        .entry("resources")
        .or_insert_with(|| json!({}));
    merge(resources, &delta);
    st.config = Some(serde_json::from_value(spec).map_err(|e| bad(format!("updated spec: {e}")))?);
    st.save(root)?;
    Ok(())
}

fn read_input(src: &str) -> Result<Input, ContainerError> {
    let mut data = Vec::new();
    if src == "-" {
        std::io::stdin()
            .read_to_end(&mut data)
            .map_err(super::io_err("read resources from stdin"))?;
    } else {
        data = std::fs::read(src).map_err(super::io_err(format!("open {src}")))?;
    }
    let de = &mut serde_json::Deserializer::from_slice(&data);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            bad(format!("resources: {}", e.inner()))
        } else {
            bad(format!("resources: {path}: {}", e.inner()))
        }
    })
}

fn from_flags(o: &UpdateOpts) -> Result<Input, ContainerError> {
    let mut i = Input::default();
    let int_flag = |name: &str, v: &Option<String>| -> Result<i64, ContainerError> {
        match v {
            None => Ok(0),
            Some(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| bad(format!("invalid value {s:?} for flag -{name}: parse error"))),
        }
    };
    i.block_io.weight = int_flag("blkio-weight", &o.blkio_weight)? as u16;
    i.pids.limit = int_flag("pids-limit", &o.pids_limit)?;
    if let Some(v) = o.cpuset_cpus.as_ref().filter(|v| !v.is_empty()) {
        i.cpu.cpus = v.clone();
    }
    if let Some(v) = o.cpuset_mems.as_ref().filter(|v| !v.is_empty()) {
        i.cpu.mems = v.clone();
    }
    let uint = |name: &str, v: &Option<String>| -> Result<u64, ContainerError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(0),
            Some(s) => s.parse::<u64>().map_err(|e| {
                bad(format!(
                    "invalid value for {name}: strconv.ParseUint: parsing {s:?}: {}",
                    num_err(&e.to_string())
                ))
            }),
        }
    };
    let int = |name: &str, v: &Option<String>| -> Result<i64, ContainerError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(0),
            Some(s) => s.parse::<i64>().map_err(|e| {
                bad(format!(
                    "invalid value for {name}: strconv.ParseInt: parsing {s:?}: {}",
                    num_err(&e.to_string())
                ))
            }),
        }
    };
    i.cpu.period = uint("cpu-period", &o.cpu_period)?;
    i.cpu.realtime_period = uint("cpu-rt-period", &o.cpu_rt_period)?;
    i.cpu.shares = uint("cpu-share", &o.cpu_share)?;
    i.cpu.quota = int("cpu-quota", &o.cpu_quota)?;
    i.cpu.realtime_runtime = int("cpu-rt-runtime", &o.cpu_rt_runtime)?;
    let mem = |name: &str, v: &Option<String>| -> Result<i64, ContainerError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(0),
            Some("-1") => Ok(-1),
            Some(s) => ram_in_bytes(s)
                .ok_or_else(|| bad(format!("invalid value for {name}: invalid size: '{s}'"))),
        }
    };
    i.memory.limit = mem("memory", &o.memory)?;
    i.memory.swap = mem("memory-swap", &o.memory_swap)?;
    i.memory.kernel = mem("kernel-memory", &o.kernel_memory)?;
    i.memory.kernel_tcp = mem("kernel-memory-tcp", &o.kernel_memory_tcp)?;
    i.memory.reservation = mem("memory-reservation", &o.memory_reservation)?;
    Ok(i)
}

/// Go's strconv error reasons.
fn num_err(rust: &str) -> &'static str {
    if rust.contains("too large") || rust.contains("too small") {
        "value out of range"
    } else {
        "invalid syntax"
    }
}

/// docker/go-units RAMInBytes: "512", "1.5g", "64MiB", "100 kb" (binary
/// multiples, case-insensitive, optional "i" and "b").
pub fn ram_in_bytes(s: &str) -> Option<i64> {
    // ^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    while i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
    }
    let num = &s[..i];
    if i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let mut mult = 1f64;
    if let Some(p) = b
        .get(i)
        .and_then(|c| "kmgtp".find(c.to_ascii_lowercase() as char))
    {
        mult = 1024f64.powi(p as i32 + 1);
        i += 1;
    }
    if matches!(b.get(i), Some(b'i' | b'I')) {
        i += 1;
    }
    if matches!(b.get(i), Some(b'b' | b'B')) {
        i += 1;
    }
    if i != b.len() {
        return None;
    }
    // Go's ParseFloat refuses "1.2.3", which the pattern lets through.
    let value: f64 = num.parse().ok()?;
    Some((value * mult) as i64)
}

/// runc's Intel RDT checks: a schema needs the resctrl feature enabled.
fn rdt_check(o: &UpdateOpts) -> Result<(), ContainerError> {
    let info = Path::new("/sys/fs/resctrl/info");
    if o.l3_cache_schema.as_deref().is_some_and(|s| !s.is_empty()) && !info.join("L3").is_dir() {
        return Err(bad("Intel RDT/CAT: l3 cache schema is not enabled"));
    }
    if o.mem_bw_schema.as_deref().is_some_and(|s| !s.is_empty()) && !info.join("MB").is_dir() {
        return Err(bad("Intel RDT/MBA: memory bandwidth schema is not enabled"));
    }
    if o.l3_cache_schema.as_deref().is_some_and(|s| !s.is_empty())
        || o.mem_bw_schema.as_deref().is_some_and(|s| !s.is_empty())
    {
        return Err(bad(
            "Intel RDT: this runtime does not manage resctrl groups",
        ));
    }
    Ok(())
}

/// The resources to write: the non-zero inputs, in `linux.resources` form.
/// A quota or period given alone is paired with the other's recorded value,
/// as runc keeps it.
fn delta(i: &Input, old: &Value, cg: &cgroups::Manager) -> Value {
    let mut d = Map::new();
    let mut mem = Map::new();
    if i.memory.limit != 0 {
        mem.insert("limit".into(), json!(i.memory.limit));
    }
    if i.memory.reservation != 0 {
        mem.insert("reservation".into(), json!(i.memory.reservation));
    }
    let mut swap = i.memory.swap;
    // runc: an unlimited memory limit without a swap value lifts the v1
    // memory+swap limit too (else the kernel refuses memory > memsw).
    if i.memory.limit == -1 && swap == 0 {
        let memsw = cg
            .paths()
            .get("memory")
            .map(|d| d.join("memory.memsw.limit_in_bytes"));
        if memsw.is_some_and(|p| p.exists()) {
            swap = -1;
        }
    }
    if swap != 0 {
        mem.insert("swap".into(), json!(swap));
    }
    if !mem.is_empty() {
        d.insert("memory".into(), Value::Object(mem));
    }
    let mut cpu = Map::new();
    let (p, q) = (i.cpu.period, i.cpu.quota);
    let old_cpu = |k: &str| {
        old.pointer(&format!("/cpu/{k}"))
            .filter(|v| v.as_i64() != Some(0) && !v.is_null())
            .cloned()
    };
    if p != 0 {
        cpu.insert("period".into(), json!(p));
    }
    if q != 0 {
        cpu.insert("quota".into(), json!(q));
    }
    if p != 0 && q == 0 {
        if let Some(v) = old_cpu("quota") {
            cpu.insert("quota".into(), v);
        }
    }
    if q != 0 && p == 0 {
        if let Some(v) = old_cpu("period") {
            cpu.insert("period".into(), v);
        }
    }
    if i.cpu.shares != 0 {
        cpu.insert("shares".into(), json!(i.cpu.shares));
    }
    if i.cpu.realtime_period != 0 {
        cpu.insert("realtimePeriod".into(), json!(i.cpu.realtime_period));
    }
    if i.cpu.realtime_runtime != 0 {
        cpu.insert("realtimeRuntime".into(), json!(i.cpu.realtime_runtime));
    }
    if !i.cpu.cpus.is_empty() {
        cpu.insert("cpus".into(), json!(i.cpu.cpus));
    }
    if !i.cpu.mems.is_empty() {
        cpu.insert("mems".into(), json!(i.cpu.mems));
    }
    if !cpu.is_empty() {
        d.insert("cpu".into(), Value::Object(cpu));
    }
    if i.block_io.weight != 0 {
        d.insert("blockIO".into(), json!({ "weight": i.block_io.weight }));
    }
    if i.pids.limit != 0 {
        d.insert("pids".into(), json!({ "limit": i.pids.limit }));
    }
    if let Some(u) = i.unified.as_ref().filter(|u| !u.is_empty()) {
        d.insert("unified".into(), json!(u));
    }
    Value::Object(d)
}

/// The recorded values of the fields `delta` touches (those recorded).
fn restore_values(delta: &Value, old: &Value) -> Value {
    let mut out = Map::new();
    for (group, fields) in delta.as_object().into_iter().flatten() {
        let mut g = Map::new();
        for (k, _) in fields.as_object().into_iter().flatten() {
            if let Some(v) = old
                .pointer(&format!("/{group}/{k}"))
                .filter(|v| !v.is_null())
            {
                g.insert(k.clone(), v.clone());
            }
        }
        if !g.is_empty() {
            out.insert(group.clone(), Value::Object(g));
        }
    }
    Value::Object(out)
}

/// Deep-merges `delta` into `target` (objects key by key, other values replaced).
fn merge(target: &mut Value, delta: &Value) {
    match (target.as_object_mut(), delta.as_object()) {
        (Some(t), Some(d)) => {
            for (k, v) in d {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = delta.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(ram_in_bytes("1024"), Some(1024));
        assert_eq!(ram_in_bytes("1k"), Some(1024));
        assert_eq!(ram_in_bytes("64m"), Some(64 << 20));
        assert_eq!(ram_in_bytes("64MiB"), Some(64 << 20));
        assert_eq!(ram_in_bytes("1.5g"), Some(3 << 29));
        assert_eq!(ram_in_bytes("100 kb"), Some(102400));
        assert_eq!(ram_in_bytes("5b"), Some(5));
        assert_eq!(ram_in_bytes("5i"), Some(5));
        for bad in ["abc", "", "-2", "1x", "m", "1..5m", "1.m", "1.2.3", "1  k"] {
            assert_eq!(ram_in_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn merge_keeps_untouched_fields() {
        let mut t = json!({"memory": {"limit": 1, "swap": 2}, "devices": [1]});
        merge(
            &mut t,
            &json!({"memory": {"limit": 5}, "pids": {"limit": 3}}),
        );
        assert_eq!(
            t,
            json!({"memory": {"limit": 5, "swap": 2}, "devices": [1], "pids": {"limit": 3}})
        );
        let back = restore_values(
            &json!({"memory": {"limit": 5, "reservation": 1}}),
            &json!({"memory": {"limit": 9}}),
        );
        assert_eq!(back, json!({"memory": {"limit": 9}}));
    }
}
