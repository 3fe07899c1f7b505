//! What the host sees of a container (state JSON, init, cgroup files,
//! namespaces), and the clean-up of what a case leaves behind.

use super::runcmd::*;
use super::Observations;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Remove a cgroup directory we created (and its children), first killing
/// (by pid) any process of ours still inside it.
pub fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for attempt in 0..100 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        if attempt == 0 || attempt % 20 == 10 {
            // A frozen process cannot die: thaw first (freezer hierarchy).
            let _ = fs::write(dir.join("freezer.state"), "THAWED");
            for pid in fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
            {
                if let Ok(pid) = pid.parse::<i32>() {
                    if pid > 1 {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        reap_zombies();
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "differential: WARNING: could not remove cgroup {}",
        dir.display()
    );
}

/// Reap every exited child (orphans reparented to us as subreaper).
/// Only called when no `std::process::Child` of this thread is pending, and
/// the differential suite is the only test spawning processes in this binary.
pub(super) fn reap_zombies() {
    loop {
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

/// The cgroup hierarchies of the host (mount points of cgroup and cgroup2
/// filesystems), e.g. `/sys/fs/cgroup/memory`, `/sys/fs/cgroup/unified`.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = mi
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            let fstype = *f.get(dash + 1)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(f[4]))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

pub(super) fn host_namespaces() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Ok(rd) = fs::read_dir("/proc/self/ns") {
        for e in rd.flatten() {
            if let Ok(l) = fs::read_link(e.path()) {
                m.insert(
                    e.file_name().to_string_lossy().into_owned(),
                    l.to_string_lossy().into_owned(),
                );
            }
        }
    }
    m
}

/// Replace placeholders in every string of the spec.
pub(super) fn substitute(v: &mut Value, subs: &[(&str, String)]) {
    match v {
        Value::String(s) => {
            for (k, r) in subs {
                if s.contains(k) {
                    *s = s.replace(k, r);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, subs)),
        Value::Object(o) => o.values_mut().for_each(|x| substitute(x, subs)),
        _ => {}
    }
}

pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Record a `state` answer under `host.state.<phase>.*`; returns the pid.
pub(super) fn record_state(obs: &mut Observations, phase: &str, res: &CmdResult) -> Option<i32> {
    let p = format!("host.state.{phase}");
    if !res.ok() {
        obs.insert(p, format!("state {}", res.describe()));
        return None;
    }
    let v: Value = match serde_json::from_str(&res.stdout) {
        Ok(v) => v,
        Err(e) => {
            obs.insert(p, format!("unparseable JSON: {e}"));
            return None;
        }
    };
    let Some(o) = v.as_object() else {
        obs.insert(p, format!("not an object: {}", json_type(&v)));
        return None;
    };
    let keys: Vec<String> = o
        .iter()
        .map(|(k, v)| format!("{k}:{}", json_type(v)))
        .collect();
    obs.insert(format!("{p}.keys"), keys.join(","));
    for (k, v) in o {
        let shown = match (k.as_str(), v) {
            ("pid", Value::Number(n)) => match n.as_i64() {
                Some(x) if x > 0 => ">0".to_string(),
                _ => n.to_string(),
            },
            // Values that differ per run or per implementation version.
            ("created", Value::String(s)) => {
                if s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T') {
                    "<RFC 3339 timestamp>".into()
                } else {
                    format!("<not RFC 3339: {s}>")
                }
            }
            ("ociVersion", Value::String(_)) => "<string>".into(),
            (_, Value::String(s)) => s.clone(),
            (_, v) => v.to_string(),
        };
        obs.insert(format!("{p}.{k}"), shown);
    }
    // Only a real pid: 0 or negative must never reach waitpid/kill.
    v.get("pid")
        .and_then(Value::as_i64)
        .filter(|&p| p > 0 && p <= i32::MAX as i64)
        .map(|p| p as i32)
}

pub(super) enum Exit {
    Status(i32),
    NotChild,
    Timeout,
}

/// Wait for the container's init (our child: we are a subreaper and the
/// runtime's create process exited).
pub(super) fn wait_init(pid: i32, timeout: Duration) -> Exit {
    if pid <= 0 {
        return Exit::NotChild;
    }
    let start = Instant::now();
    loop {
        let mut st = 0;
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return Exit::Status(st);
        }
        if r < 0 {
            return Exit::NotChild;
        }
        if start.elapsed() > timeout {
            return Exit::Timeout;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(super) fn describe_wait_status(st: i32) -> String {
    if libc::WIFEXITED(st) {
        format!("exited {}", libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        format!("killed by signal {}", libc::WTERMSIG(st))
    } else {
        format!("wait status {st:#x}")
    }
}

/// A cgroup file's content on one line (`; ` between lines). Files whose
/// lines form an unordered set (`devices.list`: the kernel keeps exceptions
/// in insertion order, which has no effect on access checks) are sorted.
pub(super) fn cgroup_file_value(file: &str, s: &str) -> String {
    let mut lines: Vec<String> = s
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if file == "devices.list" {
        lines.sort();
    }
    lines.join("; ")
}

/// Live (non-zombie) processes whose parent is this process: container
/// processes orphaned by a runtime and reparented to us (we are a child
/// subreaper). Called when no `Child` of ours is running.
pub(super) fn live_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ..." - comm may contain spaces and parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (
            f.next().unwrap_or(""),
            f.next().and_then(|p| p.parse::<i32>().ok()),
        );
        if ppid == Some(me) && state != "Z" && state != "X" {
            v.push(pid);
        }
    }
    v.sort();
    v
}

/// Kill (by pid) and reap leftover children of ours.
pub(super) fn kill_children(pids: &[i32]) {
    for &pid in pids {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in pids {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            if r != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Remove `runc-rs-diff-<pid>` cgroup trees left by an earlier run of this
/// harness that was killed before its guards ran (its pid no longer exists;
/// trees of a live harness, e.g. a concurrent run, are left alone).
pub(super) fn sweep_stale_cgroups(hierarchies: &[PathBuf]) {
    for h in hierarchies {
        let Ok(rd) = fs::read_dir(h) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("runc-rs-diff-")
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("differential: removing stale cgroup {}", e.path().display());
                remove_cgroup_tree(&e.path());
            }
        }
    }
}
