//! Where the cgroup hierarchies are mounted (/proc/self/mountinfo), which cgroup the calling
//! process is in (/proc/self/cgroup), and how an OCI `cgroupsPath` maps to one directory per
//! hierarchy. The parsers take strings so they can be unit-tested with foreign layouts.

use crate::error::{Error, Result};
use crate::CgroupMode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// cgroup v1 controllers we recognise among a v1 mount's super options (the other options are
/// mount flags such as `rw`, `xattr`, `clone_children`). Of the named hierarchies only
/// [`SYSTEMD_HIERARCHY`] is joined, as runc does; others (`name=elogind`, ...) are left alone.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
    "debug",
];

/// The named v1 hierarchy systemd keeps its process tracking in. runc creates the container's
/// directory there and moves the container into it (no controller, so no resource is ever
/// written there); runtimes bind that directory into the container for systemd-in-container.
pub(crate) const SYSTEMD_HIERARCHY: &str = "name=systemd";

/// One cgroup directory of the container in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dir {
    /// Mount point of the hierarchy (its root as seen by us).
    pub mount: PathBuf,
    /// The container's directory: `mount` joined with the resolved cgroup path, never `mount`.
    pub path: PathBuf,
}

impl Dir {
    /// The directories from the first level below the mount down to `path` (inclusive).
    pub fn levels(&self) -> Vec<PathBuf> {
        let rel = self.path.strip_prefix(&self.mount).unwrap_or(Path::new(""));
        let mut cur = self.mount.clone();
        rel.components()
            .map(|c| {
                cur.push(c);
                cur.clone()
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub mountpoint: PathBuf,
    /// The cgroup (of the hierarchy) that is mounted at `mountpoint`, usually "/".
    pub root: String,
    pub v2: bool,
    /// v1 only: controllers (and `name=...`) of the hierarchy, sorted.
    pub controllers: Vec<String>,
}

/// cgroup and cgroup2 mounts from /proc/self/mountinfo content.
pub(crate) fn parse_mountinfo(content: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in content.lines() {
        // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let v2 = match r[0] {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let mut controllers: Vec<String> = if v2 {
            Vec::new()
        } else {
            r[2].split(',')
                .filter(|o| V1_CONTROLLERS.contains(o) || *o == SYSTEMD_HIERARCHY)
                .map(str::to_string)
                .collect()
        };
        controllers.sort();
        out.push(Mount {
            mountpoint: PathBuf::from(unescape(l[4])),
            root: unescape(l[3]),
            v2,
            controllers,
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The calling process's cgroups, from /proc/self/cgroup content.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OwnCgroups {
    /// (sorted controllers of a v1 hierarchy, path in it)
    pub v1: Vec<(Vec<String>, String)>,
    pub v2: Option<String>,
}

pub(crate) fn parse_proc_cgroup(content: &str) -> OwnCgroups {
    let mut own = OwnCgroups::default();
    for line in content.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            own.v2 = Some(path.to_string());
        } else {
            // Same filter as the mounts, so a hierarchy's key matches between the two files.
            let mut c: Vec<String> = ctrls
                .split(',')
                .filter(|c| !c.starts_with("name=") || *c == SYSTEMD_HIERARCHY)
                .map(str::to_string)
                .collect();
            c.sort();
            own.v1.push((c, path.to_string()));
        }
    }
    own
}

/// An OCI cgroupsPath after lexical cleaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgPath {
    /// From each hierarchy's root.
    Absolute(Vec<String>),
    /// Below the calling process's own cgroup.
    Relative(Vec<String>),
}

pub(crate) fn parse_cgroups_path(path: Option<&str>, default_name: &str) -> Result<CgPath> {
    let given = match path {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => format!("/{default_name}"),
    };
    let err = |reason: &str| Error::Path {
        path: given.clone(),
        reason: reason.to_string(),
    };
    if given.contains(':') && !given.starts_with('/') {
        // "slice:prefix:name" is the systemd driver's syntax.
        return Err(err("systemd-style paths (slice:prefix:name) need the systemd driver, which is not implemented"));
    }
    let absolute = given.starts_with('/');
    let mut parts: Vec<String> = Vec::new();
    for c in given.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() && !absolute {
                    return Err(err("'..' leaves the caller's own cgroup"));
                }
            }
            c => parts.push(c.to_string()),
        }
    }
    if parts.is_empty() {
        return Err(err(
            "names a hierarchy root (or the caller's own cgroup), which is never managed",
        ));
    }
    Ok(if absolute {
        CgPath::Absolute(parts)
    } else {
        CgPath::Relative(parts)
    })
}

/// The container's directory in every hierarchy that `mode` uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// v1 controller (or `name=...`) -> dir; co-mounted controllers share a Dir.
    pub v1: BTreeMap<String, Dir>,
    pub unified: Option<Dir>,
}

pub(crate) fn layout(
    mode: CgroupMode,
    mounts: &[Mount],
    own: &OwnCgroups,
    path: &CgPath,
) -> Result<Layout> {
    let mut out = Layout::default();
    if mode != CgroupMode::Unified {
        // One mount per hierarchy: prefer one that shows the hierarchy's root.
        let mut chosen: BTreeMap<Vec<String>, &Mount> = BTreeMap::new();
        for m in mounts.iter().filter(|m| !m.v2 && !m.controllers.is_empty()) {
            let e = chosen.entry(m.controllers.clone()).or_insert(m);
            if e.root != "/" && m.root == "/" {
                *e = m;
            }
        }
        for (ctrls, m) in chosen {
            let own_path = own
                .v1
                .iter()
                .find(|(c, _)| *c == ctrls)
                .map(|(_, p)| p.as_str());
            let dir = dir_for(m, own_path, path, &ctrls.join(","))?;
            for c in ctrls {
                out.v1.insert(c, dir.clone());
            }
        }
    }
    if mode != CgroupMode::Legacy {
        let want = if mode == CgroupMode::Unified {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/unified"
        };
        let v2: Vec<&Mount> = mounts.iter().filter(|m| m.v2).collect();
        let m = v2
            .iter()
            .find(|m| m.mountpoint == Path::new(want))
            .or_else(|| v2.first())
            .ok_or_else(|| Error::Mounts {
                reason: format!("{mode:?} mode but no cgroup2 mount in /proc/self/mountinfo"),
            })?;
        out.unified = Some(dir_for(m, own.v2.as_deref(), path, "unified")?);
    }
    if out.v1.is_empty() && out.unified.is_none() {
        return Err(Error::Mounts {
            reason: "no cgroup hierarchy is mounted".into(),
        });
    }
    Ok(out)
}

fn dir_for(m: &Mount, own: Option<&str>, path: &CgPath, what: &str) -> Result<Dir> {
    let mut dir = m.mountpoint.clone();
    let parts = match path {
        CgPath::Absolute(p) => p,
        CgPath::Relative(p) => {
            let own = own.ok_or_else(|| Error::Mounts {
                reason: format!("/proc/self/cgroup has no entry for the {what} hierarchy (needed for a relative cgroupsPath)"),
            })?;
            // Our cgroup as seen inside this mount: strip the mount's root.
            let inside = if m.root == "/" {
                own
            } else if let Some(rest) = own
                .strip_prefix(m.root.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'))
            {
                rest
            } else {
                log::warn!(
                    "{what}: own cgroup {own} is outside the mounted root {}; using it as is",
                    m.root
                );
                own
            };
            dir.extend(inside.split('/').filter(|c| !c.is_empty()));
            p
        }
    };
    dir.extend(parts);
    Ok(Dir {
        mount: m.mountpoint.clone(),
        path: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 /kube /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /mnt/mem\\040x rw,nosuid shared:15 - cgroup cgroup rw,memory
33 25 0:30 / /proc/x rw - proc proc rw
34 25 0:31 / /sys/fs/cgroup/elogind rw,nosuid shared:12 - cgroup cgroup rw,name=elogind";

    const OWN: &str =
        "12:memory:/kube/pod1\n4:cpu,cpuacct:/user\n1:name=systemd:/init.scope\n0::/init.scope\n";

    #[test]
    fn mountinfo_parsing() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 6);
        assert!(m[0].v2 && m[0].mountpoint == Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m[1].controllers, vec!["name=systemd"]);
        assert_eq!(m[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(m[3].root, "/kube");
        assert_eq!(m[4].mountpoint, Path::new("/mnt/mem x"));
        // other named hierarchies have no recognised controller, so layout() skips them
        assert!(m[5].controllers.is_empty());
    }

    #[test]
    fn proc_cgroup_parsing() {
        let own = parse_proc_cgroup(OWN);
        assert_eq!(own.v2.as_deref(), Some("/init.scope"));
        assert!(own
            .v1
            .contains(&(vec!["cpu".into(), "cpuacct".into()], "/user".into())));
    }

    #[test]
    fn cgroups_path_cleaning() {
        let p = |s| parse_cgroups_path(Some(s), "d");
        assert_eq!(
            p("/a/./b//c/").unwrap(),
            CgPath::Absolute(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(p("/../x").unwrap(), CgPath::Absolute(vec!["x".into()]));
        assert_eq!(
            p("a/b").unwrap(),
            CgPath::Relative(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_cgroups_path(None, "ctr").unwrap(),
            CgPath::Absolute(vec!["ctr".into()])
        );
        assert_eq!(
            parse_cgroups_path(Some(""), "ctr").unwrap(),
            CgPath::Absolute(vec!["ctr".into()])
        );
        assert!(p("/").is_err());
        assert!(p("../x").is_err());
        assert!(p("a/../..").is_err());
        assert!(p("system.slice:runc:x").is_err());
    }

    #[test]
    fn layout_absolute_and_relative() {
        let mounts = parse_mountinfo(HYBRID);
        let own = parse_proc_cgroup(OWN);
        let abs = layout(
            CgroupMode::Hybrid,
            &mounts,
            &own,
            &CgPath::Absolute(vec!["c1".into()]),
        )
        .unwrap();
        // the mount showing the hierarchy root wins
        assert_eq!(abs.v1["memory"].path, Path::new("/mnt/mem x/c1"));
        assert_eq!(abs.v1["cpu"], abs.v1["cpuacct"]);
        assert_eq!(
            abs.v1["cpu"].path,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/c1")
        );
        assert_eq!(
            abs.unified.as_ref().unwrap().path,
            Path::new("/sys/fs/cgroup/unified/c1")
        );
        let rel = layout(
            CgroupMode::Hybrid,
            &mounts,
            &own,
            &CgPath::Relative(vec!["a".into(), "b".into()]),
        )
        .unwrap();
        assert_eq!(
            rel.v1["cpu"].path,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/user/a/b")
        );
        assert_eq!(
            rel.v1["name=systemd"].path,
            Path::new("/sys/fs/cgroup/systemd/init.scope/a/b")
        );
        assert_eq!(
            rel.unified.as_ref().unwrap().path,
            Path::new("/sys/fs/cgroup/unified/init.scope/a/b")
        );
        // only a mount with a non-root view: the root prefix is stripped
        let only_kube: Vec<Mount> = mounts
            .iter()
            .filter(|m| m.root == "/kube")
            .cloned()
            .collect();
        let rel = layout(
            CgroupMode::Legacy,
            &only_kube,
            &own,
            &CgPath::Relative(vec!["x".into()]),
        )
        .unwrap();
        assert_eq!(
            rel.v1["memory"].path,
            Path::new("/sys/fs/cgroup/memory/pod1/x")
        );
        assert_eq!(
            rel.v1["memory"].levels(),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/pod1"),
                PathBuf::from("/sys/fs/cgroup/memory/pod1/x")
            ]
        );
        // unified mode ignores v1 mounts
        let uni = layout(
            CgroupMode::Unified,
            &mounts,
            &own,
            &CgPath::Absolute(vec!["c".into()]),
        )
        .unwrap();
        assert!(uni.v1.is_empty());
    }
}
