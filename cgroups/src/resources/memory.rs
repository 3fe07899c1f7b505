//! linux.resources.memory.

use super::{Loc, Plan, Version, When};
use crate::error::{Error, Result};
use crate::fs;
use oci_spec::runtime::LinuxMemory;

const F: &str = "linux.resources.memory";

/// runc's conversion of the OCI (v1) memory+swap limit to cgroup2 memory.swap.max, which
/// counts swap alone. 0 = leave unset, -1 = unlimited.
pub fn swap_to_v2(swap: i64, limit: i64) -> std::result::Result<i64, String> {
    // v1 compatibility: unlimited memory without an explicit swap means unlimited swap too.
    if limit == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    if limit == 0 || limit == -1 {
        return Err("a swap limit needs a memory limit".into());
    }
    if swap < limit {
        return Err(format!(
            "memory+swap limit {swap} is below the memory limit {limit}"
        ));
    }
    Ok(swap - limit)
}

fn text(v: i64, v2: bool) -> String {
    if v2 && v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

pub(super) fn plan(p: &mut Plan, m: &LinuxMemory) -> Result<()> {
    // 0 means "not set" for these, as in runc.
    let limit = m.limit().filter(|v| *v != 0);
    let swap = m.swap().filter(|v| *v != 0);
    let reservation = m.reservation().filter(|v| *v != 0);
    for (name, v) in [
        ("limit", limit),
        ("swap", swap),
        ("reservation", reservation),
        ("kernel", m.kernel()),
        ("kernelTCP", m.kernel_tcp()),
    ] {
        if let Some(v) = v.filter(|v| *v < -1) {
            return Err(Error::invalid(
                format!("{F}.{name}"),
                v,
                "must be -1 (no limit) or a byte count",
            ));
        }
    }
    if let Some(s) = m.swappiness().filter(|s| *s > 100) {
        return Err(Error::invalid(
            format!("{F}.swappiness"),
            s,
            "valid range is 0-100",
        ));
    }
    let any = limit.is_some()
        || swap.is_some()
        || reservation.is_some()
        || m.kernel().is_some()
        || m.kernel_tcp().is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer().is_some();
    if !any {
        return Ok(());
    }
    let first = [
        (limit.is_some(), "limit"),
        (swap.is_some(), "swap"),
        (reservation.is_some(), "reservation"),
    ]
    .into_iter()
    .find(|(s, _)| *s)
    .map_or("limit", |(_, n)| n);
    let loc = p.require(&format!("{F}.{first}"), "memory")?;
    match loc.version {
        Version::V1 => v1(p, &loc, m, limit, swap, reservation),
        Version::V2 => v2(p, &loc, m, limit, swap, reservation),
    }
}

fn v1(
    p: &mut Plan,
    loc: &Loc,
    m: &LinuxMemory,
    limit: Option<i64>,
    swap: Option<i64>,
    reservation: Option<i64>,
) -> Result<()> {
    let swap = match (limit, swap) {
        (Some(-1), None) => Some(-1), // unlimited memory: unlimited memory+swap too
        _ => swap,
    };
    let push_limit = |p: &mut Plan| {
        if let Some(l) = limit {
            p.push(
                &format!("{F}.limit"),
                loc,
                "memory.limit_in_bytes",
                l,
                When::Always,
            );
        }
    };
    // memsw exists only with swap accounting; runc skips it then too.
    let push_swap = |p: &mut Plan| {
        if let Some(s) = swap {
            p.push(
                &format!("{F}.swap"),
                loc,
                "memory.memsw.limit_in_bytes",
                s,
                When::IfExists,
            );
        }
    };
    // The kernel wants limit <= memsw at every moment: when raising (the new memsw is above
    // the current limit) write memsw first, when lowering write the limit first.
    let swap_first = match (limit, swap) {
        (Some(l), Some(s)) => {
            if s != -1 && l != -1 && s < l {
                return Err(Error::invalid(
                    format!("{F}.swap"),
                    s,
                    format!("memory+swap limit is below the memory limit {l}"),
                ));
            }
            let cur = fs::read(
                &format!("{F}.limit"),
                &loc.dir.join("memory.limit_in_bytes"),
            )?;
            let cur: u64 = cur.parse().unwrap_or(u64::MAX);
            s == -1 || cur < s as u64
        }
        _ => false,
    };
    if swap_first {
        push_swap(p);
        push_limit(p);
    } else {
        push_limit(p);
        push_swap(p);
    }
    if let Some(r) = reservation {
        p.push(
            &format!("{F}.reservation"),
            loc,
            "memory.soft_limit_in_bytes",
            r,
            When::Always,
        );
    }
    if let Some(k) = m.kernel() {
        // Deprecated and gone from newer kernels; runc ignores a missing file too.
        p.push(
            &format!("{F}.kernel"),
            loc,
            "memory.kmem.limit_in_bytes",
            k,
            When::IfExists,
        );
    }
    if let Some(k) = m.kernel_tcp() {
        p.push(
            &format!("{F}.kernelTCP"),
            loc,
            "memory.kmem.tcp.limit_in_bytes",
            k,
            When::Always,
        );
    }
    if let Some(s) = m.swappiness() {
        p.push(
            &format!("{F}.swappiness"),
            loc,
            "memory.swappiness",
            s,
            When::Always,
        );
    }
    if let Some(d) = m.disable_oom_killer() {
        p.push(
            &format!("{F}.disableOOMKiller"),
            loc,
            "memory.oom_control",
            u8::from(d),
            When::Always,
        );
    }
    Ok(())
}

fn v2(
    p: &mut Plan,
    loc: &Loc,
    m: &LinuxMemory,
    limit: Option<i64>,
    swap: Option<i64>,
    reservation: Option<i64>,
) -> Result<()> {
    let v2swap = swap_to_v2(swap.unwrap_or(0), limit.unwrap_or(0))
        .map_err(|reason| Error::invalid(format!("{F}.swap"), swap.unwrap_or(0), reason))?;
    // swap == limit converts to 0: no swap at all.
    let swap_value = match v2swap {
        0 if swap.is_some() => Some("0".to_string()),
        0 => None,
        v => Some(text(v, true)),
    };
    if let Some(v) = swap_value {
        // Without swap (no memory.swap.max) "no limit"/"no swap" already hold; anything
        // else must be refused.
        let when = if v == "max" || v == "0" {
            When::IfExists
        } else {
            When::Always
        };
        p.push(&format!("{F}.swap"), loc, "memory.swap.max", v, when);
    }
    if let Some(l) = limit {
        p.push(
            &format!("{F}.limit"),
            loc,
            "memory.max",
            text(l, true),
            When::Always,
        );
    }
    if let Some(r) = reservation {
        p.push(
            &format!("{F}.reservation"),
            loc,
            "memory.low",
            text(r, true),
            When::Always,
        );
    }
    for (name, set) in [
        ("kernel", m.kernel().is_some()),
        ("kernelTCP", m.kernel_tcp().is_some()),
        ("swappiness", m.swappiness().is_some()),
        ("disableOOMKiller", m.disable_oom_killer().is_some()),
    ] {
        if set {
            log::warn!("{F}.{name} has no cgroup v2 equivalent; ignored");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::swap_to_v2;

    #[test]
    fn swap_conversion_matches_runc() {
        assert_eq!(swap_to_v2(0, -1), Ok(-1));
        assert_eq!(swap_to_v2(-1, 100), Ok(-1));
        assert_eq!(swap_to_v2(0, 100), Ok(0));
        assert_eq!(swap_to_v2(300, 100), Ok(200));
        assert_eq!(swap_to_v2(100, 100), Ok(0));
        assert!(swap_to_v2(50, 100).is_err());
        assert!(swap_to_v2(50, 0).is_err());
    }
}
