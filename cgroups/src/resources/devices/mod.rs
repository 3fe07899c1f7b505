//! linux.resources.devices: the device cgroup. The OCI rules are replayed on a model of the
//! kernel's state ([`emulator`]), starting from "deny all" as runc does; then
//! * v1: only the difference between `devices.list` and that state is written (no deny-all
//!   blip on re-apply, works with sub-cgroups), and `devices.list` is checked afterwards;
//! * v2: an eBPF program made from the state replaces ours on the cgroup ([`bpf`]).

mod bpf;
mod emulator;

use super::{Plan, When};
use crate::error::{Error, Result};
use crate::CgroupMode;
use emulator::{parse_access, DevType, DeviceState, Key, Rule};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::path::PathBuf;

const F: &str = "linux.resources.devices";

/// What is left to do after the file writes of apply().
#[derive(Debug)]
pub(crate) enum Finish {
    /// v1: devices.list must now show `target`.
    CheckList { list: PathBuf, target: DeviceState },
    /// v2: attach the program for `target` to `dir`.
    Bpf { dir: PathBuf, target: DeviceState },
}

/// One OCI rule as the kernel's rule ("c 1:3 rwm", "a"), validated.
fn to_rule(index: usize, r: &LinuxDeviceCgroup) -> Result<Rule> {
    let field = format!("{F}[{index}]");
    let text = r
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    let access = parse_access(text).ok_or_else(|| {
        Error::invalid(
            format!("{field}.access"),
            text,
            "only r, w and m are allowed",
        )
    })?;
    let typ = match r.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => {
            // The kernel treats any "a" rule as all devices with all access; refuse what it
            // would silently widen.
            if access != emulator::ACC_ALL
                || r.major().is_some_and(|m| m >= 0)
                || r.minor().is_some_and(|m| m >= 0)
            {
                return Err(Error::invalid(
                    field,
                    text,
                    "a type \"a\" rule must cover all devices with access rwm",
                ));
            }
            return Ok(Rule::All { allow: r.allow() });
        }
        LinuxDeviceType::B => DevType::Block,
        LinuxDeviceType::C | LinuxDeviceType::U => DevType::Char,
        LinuxDeviceType::P => {
            return Err(Error::invalid(
                format!("{field}.type"),
                "p",
                "the device cgroup has no rules for FIFOs",
            ));
        }
    };
    // runc's specs use -1 for "any".
    let num = |name: &str, v: Option<i64>| -> Result<Option<u32>> {
        match v.filter(|n| *n >= 0) {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| Error::invalid(format!("{field}.{name}"), n, "out of range")),
        }
    };
    Ok(Rule::Dev {
        allow: r.allow(),
        key: Key {
            typ,
            major: num("major", r.major())?,
            minor: num("minor", r.minor())?,
        },
        access,
    })
}

pub(super) fn plan(p: &mut Plan, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let rules = rules
        .iter()
        .enumerate()
        .map(|(i, r)| to_rule(i, r))
        .collect::<Result<Vec<_>>>()?;
    let target = DeviceState::from_rules(&rules);
    if p.mode() == CgroupMode::Unified {
        let dir = p.unified_dir().ok_or_else(|| {
            Error::unsupported(F, "no cgroup2 directory to attach the device program to")
        })?;
        p.finish.push(Finish::Bpf {
            dir: dir.to_path_buf(),
            target,
        });
        return Ok(());
    }
    let loc = p.require(F, "devices")?;
    let list = loc.dir.join("devices.list");
    let content = crate::fs::read(F, &list)?;
    let current = DeviceState::parse_list(&content).map_err(|_| Error::Parse {
        field: F.into(),
        path: list.clone(),
        content: content.clone(),
    })?;
    for rule in current.transition(&target) {
        p.push(F, &loc, rule.file(), rule.line(), When::Always);
    }
    p.finish.push(Finish::CheckList { list, target });
    Ok(())
}

pub(super) fn finish(f: Finish) -> Result<()> {
    match f {
        Finish::Bpf { dir, target } => bpf::install(&dir, &target),
        Finish::CheckList { list, target } => {
            let content = crate::fs::read(F, &list)?;
            let now = DeviceState::parse_list(&content).map_err(|reason| Error::Verify {
                field: F.into(),
                path: list.clone(),
                reason,
            })?;
            // An allow-by-default list cannot show its exceptions; only the default is checked.
            let same = if target.default_allow {
                now.default_allow
            } else {
                now == target
            };
            if same {
                Ok(())
            } else {
                Err(Error::Verify {
                    field: F.into(),
                    path: list,
                    reason: format!(
                        "wanted {}, kernel has {}",
                        target.describe(),
                        now.describe()
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::to_rule;
    use crate::error::Result;
    use oci_spec::runtime::LinuxDeviceCgroup;

    fn rule(json: &str) -> LinuxDeviceCgroup {
        serde_json::from_str(json).unwrap()
    }

    fn rule_line(i: usize, r: &LinuxDeviceCgroup) -> Result<String> {
        to_rule(i, r).map(|r| r.line())
    }

    #[test]
    fn lines() {
        assert_eq!(
            rule_line(0, &rule(r#"{"allow":false,"access":"rwm"}"#)).unwrap(),
            "a"
        );
        assert_eq!(
            rule_line(
                0,
                &rule(r#"{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"}"#)
            )
            .unwrap(),
            "c 1:3 rw"
        );
        assert_eq!(
            rule_line(
                0,
                &rule(r#"{"allow":true,"type":"b","major":8,"access":"r"}"#)
            )
            .unwrap(),
            "b 8:* r"
        );
        assert_eq!(
            rule_line(
                0,
                &rule(r#"{"allow":true,"type":"c","major":-1,"minor":-1}"#)
            )
            .unwrap(),
            "c *:* rwm"
        );
        assert!(rule_line(0, &rule(r#"{"allow":true,"type":"a","access":"r"}"#)).is_err());
        assert!(rule_line(0, &rule(r#"{"allow":true,"type":"c","access":"x"}"#)).is_err());
        assert!(rule_line(0, &rule(r#"{"allow":true,"type":"p"}"#)).is_err());
    }
}
