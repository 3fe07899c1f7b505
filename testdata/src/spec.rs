//! The default OCI runtime spec, as runc 1.1 generates it.
//!
//! Why a copy of `runc spec` rather than a hand-picked minimal spec: runc-rs
//! must be CLI-compatible with runc, so its tests start from the exact
//! document users get from `runc spec` and diff runtimes' behaviour on it.
//! The only changes are the ones every non-interactive test needs:
//! `process.terminal` is false (tests capture stdout; a terminal would need
//! `--console-socket`) and `process.args` is `["sh"]`.

use serde_json::{json, Value};

/// `ociVersion` runc 1.1.x writes (the spec-go version it was built with).
pub const OCI_VERSION: &str = "1.0.2-dev";

/// Default `process.env` PATH, shared with the image config.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What `runc spec` (runc 1.1) prints, except `process.terminal` = false and
/// `process.args` = `["sh"]`.
///
/// Field order in the returned `Value` is serde_json's (sorted), not runc's;
/// compare with `==` on `Value`, not on the serialized text.
pub fn default_spec() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [DEFAULT_PATH, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps.clone(),
                "effective": caps.clone(),
                "permitted": caps.clone(),
                "ambient": caps
            },
            "rlimits": [
                { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }
            ],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "runc",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            {
                "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
            },
            {
                "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
            },
            {
                "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
            },
            {
                "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"]
            },
            {
                "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"]
            },
            {
                "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
            }
        ],
        "linux": {
            "resources": {
                "devices": [ { "allow": false, "access": "rwm" } ]
            },
            "namespaces": [
                { "type": "pid" },
                { "type": "network" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" }
            ],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Replace `process.args` in `spec`.
pub fn set_args(spec: &mut Value, args: &[&str]) {
    spec["process"]["args"] = json!(args);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Compare two JSON values recursively and list every differing path,
    /// so a mismatch names the field instead of dumping two documents.
    fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<_> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = format!("{path}.{k}");
                    match (x.get(k), y.get(k)) {
                        (Some(u), Some(v)) => diff(&p, u, v, out),
                        (u, v) => out.push(format!("{p}: {u:?} vs {v:?}")),
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (u, v)) in x.iter().zip(y).enumerate() {
                    diff(&format!("{path}[{i}]"), u, v, out);
                }
            }
            _ if a == b => {}
            _ => out.push(format!("{path}: {a} vs {b}")),
        }
    }

    #[test]
    fn terminal_off_and_args_sh() {
        let s = default_spec();
        assert_eq!(s["process"]["terminal"], json!(false));
        assert_eq!(s["process"]["args"], json!(["sh"]));
        assert_eq!(s["root"]["path"], json!("rootfs"));
    }

    #[test]
    fn matches_runc_spec_field_by_field() {
        let Some(runc) = crate::which("runc") else {
            eprintln!("runc not installed: skipping comparison with `runc spec`");
            return;
        };
        // default_spec pins runc 1.1's output; other versions differ
        // legitimately (e.g. ociVersion), so only compare against 1.1.x.
        let v = Command::new(&runc).arg("--version").output().unwrap();
        let v = String::from_utf8_lossy(&v.stdout).into_owned();
        if !v.starts_with("runc version 1.1.") {
            eprintln!("{v}: not runc 1.1, skipping comparison with `runc spec`");
            return;
        }
        let tmp = crate::temp_dir().unwrap();
        let st = Command::new(&runc)
            .arg("spec")
            .current_dir(tmp.path())
            .status()
            .unwrap();
        assert!(st.success());
        let text = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
        let mut theirs: Value = serde_json::from_str(&text).unwrap();
        theirs["process"]["terminal"] = json!(false);
        theirs["process"]["args"] = json!(["sh"]);
        let mut out = Vec::new();
        diff("", &default_spec(), &theirs, &mut out);
        assert!(
            out.is_empty(),
            "default_spec differs from runc spec:\n{}",
            out.join("\n")
        );
    }
}
