//! linux.resources.devices: the v1 device cgroup (devices.allow / devices.deny).

use super::{Plan, When};
use crate::error::{Error, Result};
use crate::CgroupMode;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// One rule as the kernel reads it: "c 1:3 rwm", "a".
pub(crate) fn rule_line(index: usize, r: &LinuxDeviceCgroup) -> Result<String> {
    let field = format!("linux.resources.devices[{index}]");
    let access = r
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(Error::invalid(
            format!("{field}.access"),
            access,
            "only r, w and m are allowed",
        ));
    }
    let typ = match r.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => {
            // The kernel treats any "a" rule as all devices with all access; refuse what it
            // would silently widen.
            let mut sorted: Vec<char> = access.chars().collect();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted != ['m', 'r', 'w']
                || r.major().is_some_and(|m| m >= 0)
                || r.minor().is_some_and(|m| m >= 0)
            {
                return Err(Error::invalid(
                    field,
                    access,
                    "a type \"a\" rule must cover all devices with access rwm",
                ));
            }
            return Ok("a".into());
        }
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::P => {
            return Err(Error::invalid(
                format!("{field}.type"),
                "p",
                "the device cgroup has no rules for FIFOs",
            ));
        }
    };
    // runc's specs use -1 for "any".
    let num = |v: Option<i64>| {
        v.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    Ok(format!(
        "{typ} {}:{} {access}",
        num(r.major()),
        num(r.minor())
    ))
}

pub(super) fn plan(p: &mut Plan, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let lines = rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule_line(i, r).map(|l| (r.allow(), l)))
        .collect::<Result<Vec<_>>>()?;
    if p.mode() == CgroupMode::Unified {
        // TODO(devices-bpf): cgroup v2 enforces device rules with a BPF_CGROUP_DEVICE program
        // attached to the container's directory; until that lands the rules are not enforced.
        log::warn!("linux.resources.devices: cgroup v2 device rules need an eBPF program, not implemented yet; {} rule(s) NOT enforced", lines.len());
        return Ok(());
    }
    let field = "linux.resources.devices";
    let loc = p.require(field, "devices")?;
    // Start from deny-all, then replay the rules in order (what runc does for a new cgroup).
    p.push(field, &loc, "devices.deny", "a", When::Always);
    for (i, (allow, line)) in lines.into_iter().enumerate() {
        let file = if allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        p.push(&format!("{field}[{i}]"), &loc, file, line, When::Always);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rule_line;
    use oci_spec::runtime::LinuxDeviceCgroup;

    fn rule(json: &str) -> LinuxDeviceCgroup {
        serde_json::from_str(json).unwrap()
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
