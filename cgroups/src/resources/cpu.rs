//! linux.resources.cpu: cpu controller (shares, CFS quota/period/burst, idle, real-time) and
//! cpuset (cpus, mems).

use super::{Loc, Plan, Version, When};
use crate::error::{Error, Result};
use crate::fs;
use oci_spec::runtime::LinuxCpu;
use std::collections::BTreeSet;

const F: &str = "linux.resources.cpu";

/// runc's conversion of v1 cpu.shares [2, 262144] to cgroup2 cpu.weight [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262142
}

/// Parses a cpu/node list ("0-3,5,7-8"); None if malformed.
pub fn parse_cpu_list(s: &str) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    let s = s.trim();
    if s.is_empty() {
        return Some(out);
    }
    for item in s.split(',') {
        let item = item.trim();
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let v = item.parse::<u32>().ok()?;
                (v, v)
            }
        };
        if a > b || b - a > 65536 {
            return None;
        }
        out.extend(a..=b);
    }
    Some(out)
}

pub(super) fn plan(p: &mut Plan, cpu: &LinuxCpu) -> Result<()> {
    cpuset(p, "cpus", cpu.cpus().as_deref())?;
    cpuset(p, "mems", cpu.mems().as_deref())?;

    let shares = cpu.shares().filter(|s| *s != 0);
    let quota = cpu.quota().filter(|q| *q != 0);
    let period = cpu.period().filter(|p| *p != 0);
    let rt_runtime = cpu.realtime_runtime().filter(|r| *r != 0);
    let rt_period = cpu.realtime_period().filter(|p| *p != 0);
    let first_set = [
        (shares.is_some(), "shares"),
        (quota.is_some(), "quota"),
        (period.is_some(), "period"),
        (cpu.burst().is_some(), "burst"),
        (cpu.idle().is_some(), "idle"),
        (rt_runtime.is_some(), "realtimeRuntime"),
        (rt_period.is_some(), "realtimePeriod"),
    ]
    .into_iter()
    .find(|(set, _)| *set);
    let Some((_, name)) = first_set else {
        return Ok(());
    };
    let loc = p.require(&format!("{F}.{name}"), "cpu")?;

    if let Some(s) = shares {
        if !(2..=262144).contains(&s) {
            return Err(Error::invalid(
                format!("{F}.shares"),
                s,
                "must be between 2 and 262144",
            ));
        }
    }
    if let Some(q) = quota {
        if q != -1 && q < 1000 {
            return Err(Error::invalid(
                format!("{F}.quota"),
                q,
                "must be -1 (no limit) or at least 1000 (µs)",
            ));
        }
    }
    if let Some(pd) = period {
        if !(1000..=1_000_000).contains(&pd) {
            return Err(Error::invalid(
                format!("{F}.period"),
                pd,
                "must be between 1000 and 1000000 (µs)",
            ));
        }
    }

    match loc.version {
        Version::V1 => {
            if let Some(s) = shares {
                p.push(&format!("{F}.shares"), &loc, "cpu.shares", s, When::Always);
            }
            // A smaller period can be refused until the quota is lowered: period (EINVAL
            // tolerated), quota, period again -- the order runc uses.
            let text = |v: Option<u64>| v.map(|v| v.to_string());
            paired(
                p,
                &loc,
                ("period", "cpu.cfs_period_us", text(period)),
                ("quota", "cpu.cfs_quota_us", quota.map(|q| q.to_string())),
            );
            if let Some(b) = cpu.burst() {
                p.push(
                    &format!("{F}.burst"),
                    &loc,
                    "cpu.cfs_burst_us",
                    b,
                    When::Always,
                );
            }
            if let Some(i) = cpu.idle() {
                p.push(&format!("{F}.idle"), &loc, "cpu.idle", i, When::Always);
            }
            paired(
                p,
                &loc,
                ("realtimePeriod", "cpu.rt_period_us", text(rt_period)),
                (
                    "realtimeRuntime",
                    "cpu.rt_runtime_us",
                    rt_runtime.map(|r| r.to_string()),
                ),
            );
        }
        Version::V2 => {
            if rt_runtime.is_some() || rt_period.is_some() {
                let which = if rt_runtime.is_some() {
                    "realtimeRuntime"
                } else {
                    "realtimePeriod"
                };
                return Err(Error::unsupported(
                    format!("{F}.{which}"),
                    "cgroup v2 has no real-time group scheduling interface",
                ));
            }
            if let Some(s) = shares {
                p.push(
                    &format!("{F}.shares"),
                    &loc,
                    "cpu.weight",
                    shares_to_weight(s),
                    When::Always,
                );
            }
            if quota.is_some() || period.is_some() {
                // cpu.max takes both; keep the current half that was not given.
                let cur = fs::read(&format!("{F}.quota"), &loc.dir.join("cpu.max"))
                    .unwrap_or_else(|_| "max 100000".into());
                let mut cur = cur.split_whitespace();
                let (cur_q, cur_p) = (
                    cur.next().unwrap_or("max").to_string(),
                    cur.next().unwrap_or("100000").to_string(),
                );
                let q = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    Some(_) => "max".to_string(),
                    None => cur_q,
                };
                let pd = period.map(|x| x.to_string()).unwrap_or(cur_p);
                let field = if quota.is_some() { "quota" } else { "period" };
                p.push(
                    &format!("{F}.{field}"),
                    &loc,
                    "cpu.max",
                    format!("{q} {pd}"),
                    When::Always,
                );
            }
            if let Some(b) = cpu.burst() {
                p.push(
                    &format!("{F}.burst"),
                    &loc,
                    "cpu.max.burst",
                    b,
                    When::Always,
                );
            }
            if let Some(i) = cpu.idle() {
                p.push(&format!("{F}.idle"), &loc, "cpu.idle", i, When::Always);
            }
        }
    }
    Ok(())
}

/// period first (EINVAL tolerated when the limit is also set), limit, period again.
type Half<'a> = (&'a str, &'a str, Option<String>);
fn paired(p: &mut Plan, loc: &Loc, period: Half, limit: Half) {
    let (pname, pfile, pval) = period;
    let (lname, lfile, lval) = limit;
    let pfield = format!("{F}.{pname}");
    let lfield = format!("{F}.{lname}");
    match (pval, lval) {
        (Some(pv), Some(lv)) => {
            p.push(&pfield, loc, pfile, &pv, When::TolerateEinval);
            p.push(&lfield, loc, lfile, lv, When::Always);
            p.push(&pfield, loc, pfile, pv, When::Always);
        }
        (Some(pv), None) => p.push(&pfield, loc, pfile, pv, When::Always),
        (None, Some(lv)) => p.push(&lfield, loc, lfile, lv, When::Always),
        (None, None) => {}
    }
}

/// cpuset.cpus / cpuset.mems, checked against what the parent cgroup has.
fn cpuset(p: &mut Plan, what: &str, value: Option<&str>) -> Result<()> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let field = format!("{F}.{what}");
    let wanted = parse_cpu_list(value)
        .ok_or_else(|| Error::invalid(&field, value, "expected a list like \"0-3,5\""))?;
    let loc = p.require(&field, "cpuset")?;
    let parent_file = match (loc.version, what) {
        (Version::V1, "cpus") => "cpuset.effective_cpus",
        (Version::V1, _) => "cpuset.effective_mems",
        (Version::V2, "cpus") => "cpuset.cpus.effective",
        (Version::V2, _) => "cpuset.mems.effective",
    };
    if let Some(parent) = loc.dir.parent() {
        match fs::read(&field, &parent.join(parent_file)) {
            Ok(avail_s) => {
                let avail = parse_cpu_list(&avail_s).unwrap_or_default();
                let missing: Vec<String> = wanted.difference(&avail).map(u32::to_string).collect();
                if !avail.is_empty() && !missing.is_empty() {
                    let kind = if what == "cpus" {
                        "CPUs"
                    } else {
                        "memory nodes"
                    };
                    return Err(Error::invalid(
                        &field,
                        value,
                        format!(
                            "{kind} {} not available: the parent cgroup {} has {avail_s:?}",
                            missing.join(","),
                            parent.display()
                        ),
                    ));
                }
            }
            Err(e) => log::debug!("{field}: cannot check against the parent: {e}"),
        }
    }
    p.push(&field, &loc, &format!("cpuset.{what}"), value, When::Always);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_conversion_matches_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262144), 10000);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-2,5")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![0, 1, 2, 5]
        );
        assert_eq!(parse_cpu_list(" 3 ").unwrap().len(), 1);
        assert!(parse_cpu_list("").unwrap().is_empty());
        assert!(parse_cpu_list("2-1").is_none());
        assert!(parse_cpu_list("a").is_none());
        assert!(parse_cpu_list("1,,2").is_none());
    }
}
