//! Runtime options: which runtime binary, state root, cgroup driver, stdio
//! ownership, ... for one container, from the first of these that exists:
//!
//! 1. the request's options `Any`: runc's `containerd.runc.v1.Options`
//!    (what `ctr --runc-binary` and CRI's runc runtime send), or CRI's
//!    `runtimeoptions.v1.Options`, whose `config_path` names a TOML file
//!    with the same keys (`BinaryName = "..."`, `SystemdCgroup = true`, ...);
//! 2. the shim config file, `/etc/containerd/runc-rs-shim.toml` or
//!    `$RUNC_RS_SHIM_CONFIG`, same keys;
//! 3. defaults: runc-rs, state under `/run/containerd/runc`.
//!
//! The options are saved as `<bundle>/options.json` (the field names of the
//! Go shim's file) so that the `delete` action finds the container again.

use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, Message};
use containerd_shim_protos::shim::oci::Options;
use serde::{Deserialize, Serialize};

use crate::error::{io_ctx, Error, Result};
use crate::runc::Runc;
use crate::toml::{self, Value};

/// The runtime binary used when no options name one.
pub const DEFAULT_RUNTIME: &str = "runc-rs";
/// The runtime's state root when no options give one (as the Go shim).
pub const DEFAULT_ROOT: &str = "/run/containerd/runc";
/// The shim config file, read when a request carries no options.
pub const SHIM_CONFIG: &str = "/etc/containerd/runc-rs-shim.toml";
/// Overrides [`SHIM_CONFIG`] (an empty value disables the file).
pub const SHIM_CONFIG_ENV: &str = "RUNC_RS_SHIM_CONFIG";

const RUNC_TYPES: [&str; 2] = [
    "containerd.runc.v1.Options",
    "containerd.linux.runc.RuncOptions",
];
const CRI_TYPE: &str = "runtimeoptions.v1.Options";

/// The runc options the shim honours (`containerd.runc.v1.Options`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RuncOptions {
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    /// The cgroup the shim server moves itself into (at `start`).
    pub shim_cgroup: String,
    /// Owner of the stdio pipes handed to the container.
    pub io_uid: u32,
    pub io_gid: u32,
    /// Checkpoint / restore paths (kept; checkpointing is not implemented).
    pub criu_image_path: String,
    pub criu_work_path: String,
}

impl From<&Options> for RuncOptions {
    fn from(o: &Options) -> RuncOptions {
        RuncOptions {
            binary_name: o.binary_name.clone(),
            root: o.root.clone(),
            systemd_cgroup: o.systemd_cgroup,
            no_pivot_root: o.no_pivot_root,
            no_new_keyring: o.no_new_keyring,
            shim_cgroup: o.shim_cgroup.clone(),
            io_uid: o.io_uid,
            io_gid: o.io_gid,
            criu_image_path: o.criu_image_path.clone(),
            criu_work_path: o.criu_work_path.clone(),
        }
    }
}

impl RuncOptions {
    /// The options of a request (or of the `start` / `-info` stdin): the
    /// `Any` when there is one, else the shim config file, else defaults.
    pub fn from_any(any: Option<&Any>) -> Result<RuncOptions> {
        let Some(any) = any.filter(|a| !a.type_url.is_empty()) else {
            return RuncOptions::shim_config();
        };
        let name = any.type_url.rsplit('/').next().unwrap_or_default();
        if RUNC_TYPES.contains(&name) {
            let o = Options::parse_from_bytes(&any.value)
                .map_err(|e| Error::InvalidArgument(format!("runc options ({name}): {e}")))?;
            return Ok(RuncOptions::from(&o));
        }
        if name == CRI_TYPE {
            let path = config_path(&any.value)?;
            if path.is_empty() {
                return Ok(RuncOptions::default());
            }
            return RuncOptions::from_file(Path::new(&path));
        }
        Err(Error::InvalidArgument(format!(
            "runtime options of unsupported type {:?} (expected containerd.runc.v1.Options or {CRI_TYPE})",
            any.type_url
        )))
    }

    /// The shim config file's options; defaults when there is no file.
    pub fn shim_config() -> Result<RuncOptions> {
        let path = match std::env::var_os(SHIM_CONFIG_ENV) {
            Some(p) if p.is_empty() => return Ok(RuncOptions::default()),
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(SHIM_CONFIG),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => RuncOptions::from_toml(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RuncOptions::default()),
            Err(e) => Err(Error::InvalidArgument(format!(
                "shim config {}: {e}",
                path.display()
            ))),
        }
    }

    /// Options from a TOML file (a runtime-options `config_path`).
    pub fn from_file(path: &Path) -> Result<RuncOptions> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidArgument(format!("runtime options file {}: {e}", path.display()))
        })?;
        RuncOptions::from_toml(&text, path)
    }

    /// Options from TOML text; `origin` names it in errors. Keys are runc's
    /// Go field names (`BinaryName`) or the proto's (`binary_name`).
    pub fn from_toml(text: &str, origin: &Path) -> Result<RuncOptions> {
        let bad = |msg: String| Error::InvalidArgument(format!("{}: {msg}", origin.display()));
        let mut o = RuncOptions::default();
        for (key, value) in toml::parse(text).map_err(|e| bad(e.to_string()))? {
            let norm = key.to_ascii_lowercase().replace('_', "");
            let want = |kind: &str| bad(format!("{key} must be {kind}, not {value:?}"));
            let string = |v: &Value| match v {
                Value::Str(s) => Ok(s.clone()),
                _ => Err(want("a string")),
            };
            let boolean = |v: &Value| match v {
                Value::Bool(b) => Ok(*b),
                _ => Err(want("a boolean")),
            };
            let id = |v: &Value| match v {
                Value::Int(i) => u32::try_from(*i).map_err(|_| want("a uid/gid (0..2^32)")),
                _ => Err(want("an integer")),
            };
            match norm.as_str() {
                "binaryname" => o.binary_name = string(&value)?,
                "root" => o.root = string(&value)?,
                "systemdcgroup" => o.systemd_cgroup = boolean(&value)?,
                "nopivotroot" => o.no_pivot_root = boolean(&value)?,
                "nonewkeyring" => o.no_new_keyring = boolean(&value)?,
                "shimcgroup" => o.shim_cgroup = string(&value)?,
                "iouid" => o.io_uid = id(&value)?,
                "iogid" => o.io_gid = id(&value)?,
                "criuimagepath" => o.criu_image_path = string(&value)?,
                "criuworkpath" => o.criu_work_path = string(&value)?,
                // Deprecated in runc's Options; the runtime finds criu itself.
                "criupath" => {}
                _ => log::warn!("{}: ignoring unknown option {key}", origin.display()),
            }
        }
        Ok(o)
    }

    /// The options a container was created with (`<bundle>/options.json`).
    pub fn load(bundle: &Path) -> RuncOptions {
        std::fs::read(bundle.join("options.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, bundle: &Path) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(bundle.join("options.json"), data).map_err(io_ctx("write options.json"))
    }

    /// The runtime client for a container of namespace `ns` in `bundle`.
    pub fn runc(&self, ns: &str, bundle: &Path) -> Result<Runc> {
        let root = if self.root.is_empty() {
            DEFAULT_ROOT
        } else {
            &self.root
        };
        Ok(Runc {
            binary: resolve_runtime(&self.binary_name)?,
            root: Path::new(root).join(ns),
            log: bundle.join("log.json"),
            systemd_cgroup: self.systemd_cgroup,
        })
    }

    /// As runc's protobuf Options (for `-info`).
    pub fn to_proto(&self) -> Options {
        let mut o = Options::new();
        o.binary_name = self.binary_name.clone();
        o.root = self.root.clone();
        o.systemd_cgroup = self.systemd_cgroup;
        o.no_pivot_root = self.no_pivot_root;
        o.no_new_keyring = self.no_new_keyring;
        o.shim_cgroup = self.shim_cgroup.clone();
        o.io_uid = self.io_uid;
        o.io_gid = self.io_gid;
        o.criu_image_path = self.criu_image_path.clone();
        o.criu_work_path = self.criu_work_path.clone();
        o
    }
}

/// `config_path` (field 2) of a `runtimeoptions.v1.Options`; the crate has
/// no generated type for it, and the message is two strings.
fn config_path(value: &[u8]) -> Result<String> {
    let bad = |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("{CRI_TYPE}: {e}"));
    let mut is = CodedInputStream::from_bytes(value);
    let mut path = String::new();
    while !is.eof().map_err(|e| bad(&e))? {
        let tag = is.read_raw_varint32().map_err(|e| bad(&e))?;
        match (tag >> 3, tag & 7) {
            (2, 2) => path = is.read_string().map_err(|e| bad(&e))?,
            (_, 2) => {
                is.read_bytes().map_err(|e| bad(&e))?;
            }
            (_, 0) => {
                is.read_raw_varint64().map_err(|e| bad(&e))?;
            }
            (f, w) => return Err(bad(&format!("unexpected field {f} (wire type {w})"))),
        }
    }
    Ok(path)
}

/// Find the runtime binary: an absolute or relative path as given, else a
/// name looked up in `$PATH`, then beside the shim's own executable.
pub fn resolve_runtime(name: &str) -> Result<PathBuf> {
    let name = if name.is_empty() {
        DEFAULT_RUNTIME
    } else {
        name
    };
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(Error::NotFound(format!(
                "runtime binary {name} (no such executable)"
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)));
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(beside)
        .find(|p| is_exec(p))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "runtime binary {name:?} (looked in $PATH and beside the shim)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        let mut a = Any::new();
        a.type_url = type_url.into();
        a.value = value;
        a
    }

    /// A `runtimeoptions.v1.Options` as CRI encodes it.
    fn cri_options(type_url: &str, path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut os = containerd_shim_protos::protobuf::CodedOutputStream::vec(&mut out);
        os.write_string(1, type_url).unwrap();
        os.write_string(2, path).unwrap();
        os.flush().unwrap();
        drop(os);
        out
    }

    #[test]
    fn runc_options_any() {
        let mut o = Options::new();
        o.binary_name = "crun".into();
        o.root = "/x".into();
        o.io_uid = 7;
        o.shim_cgroup = "/shims".into();
        let a = any("containerd.runc.v1.Options", o.write_to_bytes().unwrap());
        let r = RuncOptions::from_any(Some(&a)).unwrap();
        assert_eq!((r.binary_name.as_str(), r.root.as_str()), ("crun", "/x"));
        assert_eq!((r.io_uid, r.shim_cgroup.as_str()), (7, "/shims"));
        assert_eq!(r.to_proto(), o);
        let a = any(
            "type.googleapis.com/containerd.runc.v1.Options",
            vec![0xff, 0xff],
        );
        assert!(matches!(
            RuncOptions::from_any(Some(&a)),
            Err(Error::InvalidArgument(_))
        ));
        let a = any("example.com/Other", vec![]);
        let e = RuncOptions::from_any(Some(&a)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }

    #[test]
    fn cri_config_path() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("runc.toml");
        std::fs::write(
            &f,
            "BinaryName = \"/usr/sbin/runc\"\nSystemdCgroup = false\nIoUid = 1000\nIoGid = 1001\n\
             NoPivotRoot = true\nCriuImagePath = \"/ci\"\nCriuPath = \"/old\"\nFuture = 1\n",
        )
        .unwrap();
        let a = any(CRI_TYPE, cri_options("", f.to_str().unwrap()));
        let r = RuncOptions::from_any(Some(&a)).unwrap();
        assert_eq!(r.binary_name, "/usr/sbin/runc");
        assert_eq!((r.io_uid, r.io_gid, r.no_pivot_root), (1000, 1001, true));
        assert_eq!(r.criu_image_path, "/ci");
        // Missing file, wrong type: InvalidArgument naming the file.
        let a = any(CRI_TYPE, cri_options("", "/nonexistent/runc.toml"));
        let e = RuncOptions::from_any(Some(&a)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)));
        assert!(e.to_string().contains("/nonexistent/runc.toml"), "{e}");
        std::fs::write(&f, "IoUid = \"x\"\n").unwrap();
        let e = RuncOptions::from_file(&f).unwrap_err();
        assert!(e.to_string().contains("IoUid must be an integer"), "{e}");
        std::fs::write(&f, "BinaryName = \n").unwrap();
        assert!(RuncOptions::from_file(&f)
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        // An empty config path: defaults.
        let a = any(CRI_TYPE, cri_options("x", ""));
        assert_eq!(
            RuncOptions::from_any(Some(&a)).unwrap(),
            RuncOptions::default()
        );
    }

    #[test]
    fn shim_config_file_when_no_options() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("shim.toml");
        std::fs::write(&f, "binary_name = \"crun\"\nroot = \"/r\"\n").unwrap();
        // Tests run in parallel threads: only this test sets the variable.
        std::env::set_var(SHIM_CONFIG_ENV, &f);
        let r = RuncOptions::from_any(None).unwrap();
        let r2 = RuncOptions::from_any(Some(&Any::new())).unwrap();
        std::env::set_var(SHIM_CONFIG_ENV, d.path().join("absent.toml"));
        let absent = RuncOptions::from_any(None).unwrap();
        std::env::remove_var(SHIM_CONFIG_ENV);
        assert_eq!((r.binary_name.as_str(), r.root.as_str()), ("crun", "/r"));
        assert_eq!(r, r2);
        assert_eq!(absent, RuncOptions::default());
    }

    #[test]
    fn saved_roundtrip_and_runc() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(RuncOptions::load(d.path()), RuncOptions::default());
        let o = RuncOptions {
            binary_name: "/bin/sh".into(),
            root: "/r".into(),
            io_uid: 3,
            ..Default::default()
        };
        o.save(d.path()).unwrap();
        assert_eq!(RuncOptions::load(d.path()), o);
        // The Go shim's options.json uses the same names.
        std::fs::write(
            d.path().join("options.json"),
            r#"{"binary_name":"x","root":"/g"}"#,
        )
        .unwrap();
        assert_eq!(RuncOptions::load(d.path()).root, "/g");
        let r = o.runc("ns1", d.path()).unwrap();
        assert_eq!(r.root, Path::new("/r/ns1"));
        assert_eq!(r.log, d.path().join("log.json"));
    }

    #[test]
    fn runtime_lookup() {
        assert_eq!(
            resolve_runtime("/bin/sh").unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert!(resolve_runtime("sh").unwrap().ends_with("sh"));
        assert!(matches!(
            resolve_runtime("/nonexistent/runc"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            resolve_runtime("no-such-runtime-xyz"),
            Err(Error::NotFound(_))
        ));
    }
}
