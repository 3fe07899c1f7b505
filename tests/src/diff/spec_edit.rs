//! Spec edits and host facts shared by the differential cases
//! (`tests/tests/differential.rs`).

use serde_json::{json, Value};

pub fn ns_add(s: &mut Value, t: &str) {
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "type": t }));
}

pub fn ns_remove(s: &mut Value, t: &str) {
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != t);
}

pub fn ns_set_path(s: &mut Value, t: &str, path: &str) {
    for n in s["linux"]["namespaces"].as_array_mut().unwrap() {
        if n["type"] == t {
            n["path"] = json!(path);
        }
    }
}

/// Set all five capability sets (inheritable too) to `caps`.
pub fn caps_all(s: &mut Value, caps: &[&str]) {
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        s["process"]["capabilities"][set] = json!(caps);
    }
}

pub fn mount_add(s: &mut Value, m: Value) {
    s["mounts"].as_array_mut().unwrap().push(m);
}

pub fn writable_rootfs(s: &mut Value) {
    s["root"]["readonly"] = json!(false);
}

pub fn set_sh_path(s: &mut Value, path: &str) {
    s["process"]["args"][0] = json!(path);
}

pub fn seccomp(s: &mut Value, profile: Value) {
    s["linux"]["seccomp"] = profile;
}

/// A host value read now, so that a runtime wrongly applying a setting to
/// the host (instead of refusing it, as runc does) changes nothing.
pub fn host_sysctl(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// (major, minor) of the device holding the host's `/`.
pub fn root_dev() -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let d = std::fs::metadata("/").map(|m| m.dev()).unwrap_or(0);
    (libc::major(d) as u64, libc::minor(d) as u64)
}

/// A host-side hook appending one line about itself and the state it got
/// on stdin to `<bundle>/hooks.log`.
pub fn host_hook(name: &str) -> Value {
    let script = concat!(
        "s=$(cat); ",
        "j=$(printf '%s' \"$s\" | jq -c '{status, id, pid: (.pid > 0), bundle, annotations}'); ",
        "echo \"$0 $j cwd=$(pwd) env=$HOOKVAR args=$1\" >> {{BUNDLE}}/hooks.log"
    );
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", script, name, "extra-arg"],
        "env": ["HOOKVAR=hook-env", "PATH=/usr/bin:/bin"],
        "timeout": 10
    })
}
