//! Sub-cgroups of a container, for runc's `exec --cgroup`: a process started in a running
//! container may be placed in an existing cgroup below the container's instead of the
//! container's own, per v1 controller or (on cgroup v2, or for every hierarchy) as one path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::Manager;

impl Manager {
    /// This manager with some of its directories moved to a sub-cgroup, so that the usual
    /// placement ([`Manager::enter_self`], [`Manager::unified_dir`]) puts a process there.
    ///
    /// `paths` maps a v1 controller, spelt as in /proc/self/cgroup (`memory`, `name=systemd`),
    /// to a path relative to the container's cgroup; the key "" moves every hierarchy, the
    /// cgroup2 one included (the only form that means anything on pure v2), and then the other
    /// keys are ignored, as runc does. The sub-cgroups must exist: they are the caller's, and
    /// are checked here so that a missing one fails before any process is started.
    pub fn sub_cgroup(&self, paths: &BTreeMap<String, String>) -> Result<Manager> {
        let mut m = self.clone();
        if let Some(rel) = paths.get("") {
            for d in m.v1.values_mut().chain(m.unified.as_mut()) {
                d.path = below(&d.path, rel)?;
            }
        } else {
            for (controller, rel) in paths {
                let d =
                    m.v1.get_mut(controller)
                        .ok_or_else(|| Error::UnknownController {
                            controller: controller.clone(),
                        })?;
                d.path = below(&d.path, rel)?;
            }
        }
        let own = self.hierarchies();
        for h in m.hierarchies() {
            let file = h.dir.path.join("cgroup.procs");
            if !own.iter().any(|o| o.dir.path == h.dir.path) {
                std::fs::metadata(&file).map_err(|source| Error::NoSubCgroup { file, source })?;
            }
        }
        Ok(m)
    }
}

/// `base` joined with `rel` and cleaned lexically ("/" and ".." in `rel` as path.Join treats
/// them); an error unless the result is `base` or below it.
fn below(base: &Path, rel: &str) -> Result<PathBuf> {
    let mut out = base.to_path_buf();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    if !out.starts_with(base) {
        return Err(Error::NotSubCgroup {
            path: rel.to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hierarchy::Dir;
    use crate::CgroupMode;

    fn dir(p: &str) -> Dir {
        Dir {
            mount: PathBuf::from("/nonexistent/mnt"),
            path: PathBuf::from(p),
        }
    }

    fn manager() -> Manager {
        let mut v1 = BTreeMap::new();
        v1.insert("memory".to_string(), dir("/nonexistent/mnt/memory/ct"));
        v1.insert("pids".to_string(), dir("/nonexistent/mnt/pids/ct"));
        Manager {
            mode: CgroupMode::Hybrid,
            cgroups_path: "/ct".into(),
            v1,
            unified: Some(dir("/nonexistent/mnt/unified/ct")),
        }
    }

    fn paths(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn paths_stay_below_the_container() {
        let base = Path::new("/a/ct");
        assert_eq!(below(base, "sub").unwrap(), Path::new("/a/ct/sub"));
        assert_eq!(below(base, "/x/./y/").unwrap(), Path::new("/a/ct/x/y"));
        assert_eq!(below(base, "../ct/s").unwrap(), Path::new("/a/ct/s"));
        assert_eq!(below(base, "/").unwrap(), Path::new("/a/ct"));
        for bad in ["..", "../..", "../ct2", "s/../../x"] {
            let e = below(base, bad).unwrap_err().to_string();
            assert_eq!(e, format!("{bad} is not a sub cgroup path"));
        }
    }

    #[test]
    fn unknown_controller_and_missing_dir_are_errors() {
        let m = manager();
        let e = m
            .sub_cgroup(&paths(&[("cpu", "s")]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown controller cpu in sub-cgroup paths");
        let e = m
            .sub_cgroup(&paths(&[("memory", "s")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot join sub-cgroup: /nonexistent/mnt/memory/ct/s/cgroup.procs: "),
            "{e}"
        );
        // The container's own directories are not checked (nothing moved).
        assert_eq!(m.sub_cgroup(&paths(&[("memory", "/")])).unwrap(), m);
    }
}
