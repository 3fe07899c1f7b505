//! The config file of a private containerd (see [`crate::containerd`]).

use std::path::Path;

/// The CRI plugin's settings for a private daemon (see [`config_toml`]).
pub(crate) struct CriConfig<'a> {
    /// `sandbox_image`: an imported image whose command keeps running.
    pub sandbox_image: &'a str,
    /// The runtime handlers; the first is the default.
    pub runtimes: &'a [CriRuntime<'a>],
}

/// One runtime handler of the CRI plugin (`RunPodSandbox`'s `runtime_handler`).
pub struct CriRuntime<'a> {
    pub handler: &'a str,
    /// `io.containerd.runc.v2` (CRI sends runc `Options`) or another
    /// (CRI sends `runtimeoptions.v1.Options`, i.e. a `ConfigPath`).
    pub runtime_type: &'a str,
    /// `(key, value)` of the runtime's `options` table, e.g.
    /// `("BinaryName", "/path/runc-rs")`; `{dir}` in a value stands for the
    /// harness's temp dir.
    pub options: Vec<(&'a str, String)>,
}

/// The containerd 1.6 config (version 2) of a private daemon in `d`.
///
/// Disabled: CRI unless `cri` is given (it wants CNI, /opt/cni and a pause
/// image; when enabled, its CNI dirs are in `d`, pods use the host's
/// network, AppArmor is off and an `oom_score_adj` below containerd's own
/// is clamped, as this host lacks CAP_SYS_RESOURCE), the `opt` plugin
/// (creates /opt/containerd), snapshotters that cannot work here and
/// tracing. `temp` keeps unpack mounts in our dir; no debug or metrics
/// listener.
pub(crate) fn config_toml(d: &Path, socket: &Path, cri: Option<&CriConfig>) -> String {
    let q = |p: &Path| toml_string(&p.to_string_lossy());
    let mut config = format!(
        r#"version = 2
root = {root}
state = {state}
temp = {temp}
oom_score = 0
disabled_plugins = [
  {cri_disabled}"io.containerd.internal.v1.opt",
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
        cri_disabled = if cri.is_some() {
            ""
        } else {
            "\"io.containerd.grpc.v1.cri\",\n  "
        },
    );
    if let Some(cri) = cri {
        config.push_str(&cri_toml(d, cri));
    }
    config
}

fn cri_toml(d: &Path, cri: &CriConfig) -> String {
    const P: &str = "plugins.\"io.containerd.grpc.v1.cri\"";
    let dir = d.to_string_lossy();
    let mut t = format!(
        "\n[{P}]\n  sandbox_image = {image}\n  disable_apparmor = true\n  \
         restrict_oom_score_adj = true\n  enable_selinux = false\n\
         [{P}.cni]\n  bin_dir = {cni_bin}\n  conf_dir = {cni_conf}\n\
         [{P}.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = {default}\n",
        image = toml_string(cri.sandbox_image),
        cni_bin = toml_string(&format!("{dir}/cni/bin")),
        cni_conf = toml_string(&format!("{dir}/cni/conf")),
        default = toml_string(cri.runtimes.first().map_or("runc", |r| r.handler)),
    );
    for r in cri.runtimes {
        let h = toml_string(r.handler);
        t.push_str(&format!(
            "[{P}.containerd.runtimes.{h}]\n  runtime_type = {}\n[{P}.containerd.runtimes.{h}.options]\n",
            toml_string(r.runtime_type)
        ));
        for (k, v) in &r.options {
            t.push_str(&format!(
                "  {k} = {}\n",
                toml_string(&v.replace("{dir}", &dir))
            ));
        }
    }
    t
}

/// A TOML basic string.
pub(crate) fn toml_string(s: &str) -> String {
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
