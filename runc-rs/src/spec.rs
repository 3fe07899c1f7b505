//! Loading and validating a bundle's `config.json`.
//!
//! Errors name the file and the JSON path of the offending field, so a user
//! sees `config.json: linux.namespaces[2].type: unknown variant "foo"`
//! rather than a bare serde message.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {field}: {message}")]
    Parse {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// Reads `<bundle>/config.json` and checks what runc checks before creating
/// anything: the fields must parse, and their combination must be usable.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|source| SpecError::Open {
        path: path.clone(),
        source,
    })?;
    let parse_err = |e: serde_path_to_error::Error<serde_json::Error>| {
        let field = e.path().to_string();
        SpecError::Parse {
            path: path.clone(),
            field,
            message: e.into_inner().to_string(),
        }
    };
    let de = &mut serde_json::Deserializer::from_slice(&data);
    let spec: Spec = match serde_path_to_error::deserialize(de) {
        Ok(spec) => spec,
        // Only a config naming a capability oci-spec does not know pays for
        // the second parse; any other error is reported as it was found.
        Err(e) if e.path().to_string().starts_with("process.capabilities.") => {
            let mut value: serde_json::Value =
                serde_json::from_slice(&data).map_err(|_| parse_err(e))?;
            drop_unknown_capabilities(&mut value);
            serde_path_to_error::deserialize(value).map_err(parse_err)?
        }
        Err(e) => return Err(parse_err(e)),
    };
    validate(&spec).map_err(|(field, message)| SpecError::Invalid {
        path,
        field: field.into(),
        message,
    })?;
    Ok(spec)
}

/// runc 1.1 warns about capability names it does not know and ignores them;
/// oci-spec's types refuse them. Removes them from the five sets of
/// `process.capabilities`, with one warning naming them. Values that are not
/// strings are left for the deserializer to refuse.
pub(crate) fn drop_unknown_capabilities(spec: &mut serde_json::Value) {
    use oci_spec::runtime::Capability;
    let Some(sets) = spec
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    else {
        return;
    };
    let mut unknown: Vec<String> = vec![];
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        let Some(names) = sets.get_mut(set).and_then(|v| v.as_array_mut()) else {
            continue;
        };
        names.retain(|n| {
            let known = !n.is_string() || serde_json::from_value::<Capability>(n.clone()).is_ok();
            if !known {
                unknown.push(n.as_str().unwrap_or_default().to_owned());
            }
            known
        });
    }
    unknown.sort();
    unknown.dedup();
    if !unknown.is_empty() {
        log::warn!(
            "ignoring unknown or unavailable capabilities: [{}]",
            unknown.join(" ")
        );
    }
}

fn validate(spec: &Spec) -> Result<(), (&'static str, String)> {
    let process = spec
        .process()
        .as_ref()
        .ok_or(("process", "missing".to_string()))?;
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        return Err(("process.args", "must contain at least one element".into()));
    }
    if !process.cwd().is_absolute() {
        return Err((
            "process.cwd",
            format!("{:?} is not an absolute path", process.cwd()),
        ));
    }
    if spec.root().is_none() {
        return Err(("root", "missing".into()));
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or(("linux", "missing".to_string()))?;
    let mut seen = std::collections::HashSet::new();
    let namespaces = linux.namespaces().as_deref().unwrap_or_default();
    for ns in namespaces {
        if !seen.insert(ns.typ() as u32) {
            return Err((
                "linux.namespaces",
                format!("duplicate namespace {:?}", ns.typ()),
            ));
        }
    }
    let has = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if maps && !has(LinuxNamespaceType::User) {
        return Err((
            "linux.uidMappings",
            "user namespace mappings specified without a user namespace".into(),
        ));
    }
    if let Some(hostname) = spec.hostname() {
        if !hostname.is_empty() && !has(LinuxNamespaceType::Uts) {
            return Err((
                "hostname",
                "unable to set hostname without a private UTS namespace".into(),
            ));
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            check_sysctl(key, namespaces)?;
        }
    }
    for m in spec.mounts().as_deref().unwrap_or_default() {
        if !m.destination().is_absolute() {
            return Err((
                "mounts.destination",
                format!("{:?} is not an absolute path", m.destination()),
            ));
        }
    }
    Ok(())
}

/// runc 1.1's rules for `linux.sysctl`: only sysctls of a kernel namespace
/// the container owns. IPC ones (a fixed list, plus fs.mqueue.*) need an IPC
/// namespace in the spec (new or joined); net.* need a network namespace
/// that is not the runtime's own; with a UTS namespace kernel.domainname is
/// allowed, kernel.hostname is not (the `hostname` field sets it).
fn check_sysctl(key: &str, namespaces: &[LinuxNamespace]) -> Result<(), (&'static str, String)> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let find = |t: LinuxNamespaceType| namespaces.iter().find(|n| n.typ() == t);
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        if find(LinuxNamespaceType::Ipc).is_some() {
            return Ok(());
        }
        return Err((
            "linux.sysctl",
            format!("sysctl {key:?} is not allowed in the host's ipc namespace"),
        ));
    }
    if key.starts_with("net.") {
        let host_net = match find(LinuxNamespaceType::Network) {
            None => true,
            Some(ns) => match ns.path().as_deref().filter(|p| !p.as_os_str().is_empty()) {
                None => false,
                Some(p) => is_own_netns(p).map_err(|e| {
                    (
                        "linux.namespaces",
                        format!("network namespace {}: {e}", p.display()),
                    )
                })?,
            },
        };
        if host_net {
            return Err((
                "linux.sysctl",
                format!("sysctl {key:?} is not allowed in the host's network namespace"),
            ));
        }
        return Ok(());
    }
    if find(LinuxNamespaceType::Uts).is_some() {
        match key {
            "kernel.domainname" => return Ok(()),
            "kernel.hostname" => {
                return Err((
                    "linux.sysctl",
                    format!(
                        "sysctl {key:?} is not allowed as it conflicts with the \"hostname\" field"
                    ),
                ))
            }
            _ => {}
        }
    }
    Err((
        "linux.sysctl",
        format!("sysctl {key:?} is not in a separate kernel namespace"),
    ))
}

/// Whether the namespace at `path` is the runtime's own network namespace.
fn is_own_netns(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(path)?;
    let ours = std::fs::metadata("/proc/self/ns/net")?;
    Ok(theirs.dev() == ours.dev() && theirs.ino() == ours.ino())
}

/// The rootfs path, made absolute against the bundle.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> PathBuf {
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| "rootfs".into());
    if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_capabilities_are_dropped() {
        let mut v = serde_json::json!({"process": {"capabilities": {
            "bounding": ["CAP_KILL", "CAP_DOES_NOT_EXIST"],
            "ambient": ["CAP_DOES_NOT_EXIST"],
            "effective": [1]
        }}});
        drop_unknown_capabilities(&mut v);
        assert_eq!(
            v["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_KILL"])
        );
        assert_eq!(
            v["process"]["capabilities"]["ambient"],
            serde_json::json!([])
        );
        assert_eq!(
            v["process"]["capabilities"]["effective"],
            serde_json::json!([1]),
            "left for the deserializer to refuse"
        );
    }

    #[test]
    fn sysctl_rules() {
        let ns = |t: LinuxNamespaceType| {
            oci_spec::runtime::LinuxNamespaceBuilder::default()
                .typ(t)
                .build()
                .unwrap()
        };
        let all = [
            ns(LinuxNamespaceType::Ipc),
            ns(LinuxNamespaceType::Network),
            ns(LinuxNamespaceType::Uts),
        ];
        for key in [
            "kernel.msgmax",
            "kernel.shm_rmid_forced",
            "fs.mqueue.msg_max",
            "net.ipv4.ip_forward",
            "kernel.domainname",
        ] {
            assert!(check_sysctl(key, &all).is_ok(), "{key}");
            assert!(check_sysctl(key, &[]).is_err(), "{key} without namespaces");
        }
        for key in [
            "kernel.hostname",
            "kernel.panic",
            "kernel.msgfoo",
            "vm.swappiness",
        ] {
            assert!(check_sysctl(key, &all).is_err(), "{key}");
        }
    }
}
