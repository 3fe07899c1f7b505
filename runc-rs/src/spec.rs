//! Loading and validating a bundle's `config.json`.
//!
//! Errors name the file and the JSON path of the offending field, so a user
//! sees `config.json: linux.namespaces[2].type: unknown variant "foo"`
//! rather than a bare serde message.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path}: {field}: {message}")]
    Parse { path: PathBuf, field: String, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

/// Reads `<bundle>/config.json` and checks what runc checks before creating
/// anything: the fields must parse, and their combination must be usable.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|source| SpecError::Open { path: path.clone(), source })?;
    let de = &mut serde_json::Deserializer::from_slice(&data);
    let spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        SpecError::Parse { path: path.clone(), field, message: e.into_inner().to_string() }
    })?;
    validate(&spec).map_err(|(field, message)| SpecError::Invalid { path, field: field.into(), message })?;
    Ok(spec)
}

fn validate(spec: &Spec) -> Result<(), (&'static str, String)> {
    let process = spec.process().as_ref().ok_or(("process", "missing".to_string()))?;
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        return Err(("process.args", "must contain at least one element".into()));
    }
    if !process.cwd().is_absolute() {
        return Err(("process.cwd", format!("{:?} is not an absolute path", process.cwd())));
    }
    if spec.root().is_none() {
        return Err(("root", "missing".into()));
    }
    let linux = spec.linux().as_ref().ok_or(("linux", "missing".to_string()))?;
    let mut seen = std::collections::HashSet::new();
    let namespaces = linux.namespaces().as_deref().unwrap_or_default();
    for ns in namespaces {
        if !seen.insert(ns.typ() as u32) {
            return Err(("linux.namespaces", format!("duplicate namespace {:?}", ns.typ())));
        }
    }
    let has = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if maps && !has(LinuxNamespaceType::User) {
        return Err(("linux.uidMappings", "user namespace mappings specified without a user namespace".into()));
    }
    if let Some(hostname) = spec.hostname() {
        if !hostname.is_empty() && !has(LinuxNamespaceType::Uts) {
            return Err(("hostname", "unable to set hostname without a private UTS namespace".into()));
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            let net = key.starts_with("net.");
            let ipc = key.starts_with("kernel.msg") || key.starts_with("kernel.sem") || key.starts_with("kernel.shm") || key.starts_with("fs.mqueue.");
            let uts = key == "kernel.hostname" || key == "kernel.domainname";
            if net && !has(LinuxNamespaceType::Network) {
                return Err(("linux.sysctl", format!("sysctl {key:?} is not allowed in the host's network namespace")));
            }
            if ipc && !has(LinuxNamespaceType::Ipc) {
                return Err(("linux.sysctl", format!("sysctl {key:?} is not allowed in the host's ipc namespace")));
            }
            if uts {
                return Err(("linux.sysctl", format!("sysctl {key:?} is not allowed: use the hostname/domainname fields")));
            }
            if !net && !ipc && !uts {
                return Err(("linux.sysctl", format!("sysctl {key:?} is not in a separate kernel namespace")));
            }
        }
    }
    for m in spec.mounts().as_deref().unwrap_or_default() {
        if !m.destination().is_absolute() {
            return Err(("mounts.destination", format!("{:?} is not an absolute path", m.destination())));
        }
    }
    Ok(())
}

/// The rootfs path, made absolute against the bundle.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> PathBuf {
    let root = spec.root().as_ref().map(|r| r.path().clone()).unwrap_or_else(|| "rootfs".into());
    if root.is_absolute() { root } else { bundle.join(root) }
}
