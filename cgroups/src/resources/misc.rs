//! linux.resources.{pids, hugepageLimits, network, rdma, unified}.

use super::{Plan, Version, When};
use crate::error::{Error, Result};
use oci_spec::runtime::{LinuxHugepageLimit, LinuxNetwork, LinuxPids, LinuxRdma};
use std::collections::HashMap;

pub(super) fn pids(p: &mut Plan, pids: &LinuxPids) -> Result<()> {
    let field = "linux.resources.pids.limit";
    let loc = p.require(field, "pids")?;
    let value = if pids.limit() > 0 {
        pids.limit().to_string()
    } else {
        "max".into()
    };
    p.push(field, &loc, "pids.max", value, When::Always);
    Ok(())
}

/// "2MB", "1GB", "64KB": what the kernel uses in hugetlb file names.
fn valid_page_size(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["KB", "MB", "GB", "TB", "PB"].contains(&unit)
}

pub(super) fn hugetlb(p: &mut Plan, limits: &[LinuxHugepageLimit]) -> Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let loc = p.require("linux.resources.hugepageLimits", "hugetlb")?;
    for l in limits {
        let size = l.page_size();
        let field = format!("linux.resources.hugepageLimits[{size}]");
        if !valid_page_size(size) {
            return Err(Error::invalid(
                field,
                size,
                "page size must look like 2MB or 1GB",
            ));
        }
        match loc.version {
            Version::V1 => p.push(
                &field,
                &loc,
                &format!("hugetlb.{size}.limit_in_bytes"),
                l.limit(),
                When::Always,
            ),
            Version::V2 => {
                let v = if l.limit() < 0 {
                    "max".to_string()
                } else {
                    l.limit().to_string()
                };
                p.push(
                    &field,
                    &loc,
                    &format!("hugetlb.{size}.max"),
                    &v,
                    When::Always,
                );
                // Reservations are accounted separately since 5.7; limit them alike (runc does).
                p.push(
                    &field,
                    &loc,
                    &format!("hugetlb.{size}.rsvd.max"),
                    v,
                    When::IfExists,
                );
            }
        }
    }
    Ok(())
}

/// net_cls / net_prio exist only in cgroup v1; setting them without the hierarchy is an error.
pub(super) fn network(p: &mut Plan, n: &LinuxNetwork) -> Result<()> {
    if let Some(id) = n.class_id() {
        let field = "linux.resources.network.classID";
        let loc = p.require(field, "net_cls")?;
        p.push(field, &loc, "net_cls.classid", id, When::Always);
    }
    let prios = n.priorities().as_deref().unwrap_or(&[]);
    if !prios.is_empty() {
        let field = "linux.resources.network.priorities";
        let loc = p.require(field, "net_prio")?;
        for prio in prios {
            if prio.name().is_empty() || prio.name().contains(char::is_whitespace) {
                return Err(Error::invalid(
                    field,
                    prio.name(),
                    "interface name must be non-empty without blanks",
                ));
            }
            p.push(
                field,
                &loc,
                "net_prio.ifpriomap",
                format!("{} {}", prio.name(), prio.priority()),
                When::Always,
            );
        }
    }
    Ok(())
}

pub(super) fn rdma(p: &mut Plan, rdma: &HashMap<String, LinuxRdma>) -> Result<()> {
    let mut devices: Vec<_> = rdma.iter().collect();
    devices.sort_by(|a, b| a.0.cmp(b.0));
    for (dev, limits) in devices {
        let field = format!("linux.resources.rdma[{dev}]");
        let mut value = dev.clone();
        if let Some(h) = limits.hca_handles() {
            value.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = limits.hca_objects() {
            value.push_str(&format!(" hca_object={o}"));
        }
        if value == *dev {
            continue;
        }
        let loc = p.require(&field, "rdma")?;
        p.push(&field, &loc, "rdma.max", value, When::Always);
    }
    Ok(())
}

/// Files that place or kill processes are not resources.
const NOT_RESOURCES: &[&str] = &["cgroup.procs", "cgroup.threads", "cgroup.kill"];

/// linux.resources.unified: raw cgroup2 files, written into the cgroup2 directory (pure v2,
/// or the /sys/fs/cgroup/unified one on hybrid). Each key must name an existing interface
/// file; a multi-line value is written line by line.
pub(super) fn unified(p: &mut Plan, map: &HashMap<String, String>) -> Result<()> {
    if map.is_empty() {
        return Ok(());
    }
    let Some(dir) = p.unified_dir().map(|d| d.to_path_buf()) else {
        return Err(Error::unsupported(
            "linux.resources.unified",
            "this host has no cgroup v2 hierarchy (legacy cgroup v1)",
        ));
    };
    let mut keys: Vec<_> = map.iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    for (key, value) in keys {
        let field = format!("linux.resources.unified[{key:?}]");
        let well_formed =
            !key.contains('/') && key.contains('.') && !key.starts_with('.') && !key.ends_with('.');
        if !well_formed || NOT_RESOURCES.contains(&key.as_str()) {
            return Err(Error::invalid(
                field,
                key,
                "not a cgroup v2 resource file name",
            ));
        }
        let path = dir.join(key);
        if !path.exists() {
            let controller = key.split('.').next().unwrap_or_default();
            let reason = match p.locate(controller) {
                Some(loc) if loc.version == Version::V1 => format!(
                    "unknown key: the {controller} controller is cgroup v1 on this host, so {} does not exist",
                    path.display()
                ),
                None if controller != "cgroup" => format!(
                    "unknown key: controller {controller:?} is not available in {} and {} does not exist",
                    dir.display(),
                    path.display()
                ),
                _ => format!("unknown key: {} does not exist", path.display()),
            };
            return Err(Error::invalid(field, value, reason));
        }
        let loc = super::Loc {
            version: Version::V2,
            dir: dir.clone(),
        };
        let lines: Vec<&str> = value.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            p.push(&field, &loc, key, value, When::Always);
        }
        for line in lines {
            p.push(&field, &loc, key, line, When::Always);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_sizes() {
        assert!(super::valid_page_size("2MB"));
        assert!(super::valid_page_size("1GB"));
        assert!(!super::valid_page_size("2M"));
        assert!(!super::valid_page_size("MB"));
        assert!(!super::valid_page_size("2MB/../x"));
    }
}
