//! The config file of a private containerd (see [`crate::containerd`]).

use std::path::Path;

/// The containerd 1.6 config (version 2) of a private daemon in `d`.
///
/// Disabled: CRI (it would want CNI, /opt/cni and a pause image), the
/// `opt` plugin (creates /opt/containerd), snapshotters that cannot work
/// here and tracing. `temp` keeps unpack mounts in our dir; no debug or
/// metrics listener.
pub(crate) fn config_toml(d: &Path, socket: &Path) -> String {
    let q = |p: &Path| toml_string(&p.to_string_lossy());
    format!(
        r#"version = 2
root = {root}
state = {state}
temp = {temp}
oom_score = 0
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""
  level = "debug"

[metrics]
  address = ""
"#,
        root = q(&d.join("root")),
        state = q(&d.join("state")),
        temp = q(&d.join("tmp")),
        sock = q(socket),
        ttrpc = toml_string(&format!("{}.ttrpc", socket.display())),
    )
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
