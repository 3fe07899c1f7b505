//! A model of a device cgroup's rules: a default (allow or deny every device) plus exceptions,
//! exactly as the v1 kernel keeps them (security/device_cgroup.c) and prints them in
//! `devices.list`. Used twice:
//! * v1: [`DeviceState::transition`] computes the few `devices.allow`/`devices.deny` lines that
//!   take the cgroup from what `devices.list` shows to the wanted state, so re-applying never
//!   passes through "deny all" (which both blocks the running container and is refused with
//!   EINVAL once the cgroup has sub-cgroups);
//! * v2: the eBPF program is generated from the same state (`bpf.rs`).

use std::collections::BTreeMap;

/// Access bits, with the values of the kernel's BPF_DEVCG_ACC_* so the program uses them as is.
pub(crate) const ACC_MKNOD: u8 = 1;
pub(crate) const ACC_READ: u8 = 2;
pub(crate) const ACC_WRITE: u8 = 4;
pub(crate) const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DevType {
    Block,
    Char,
}

/// A device pattern; `None` is the "*" wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub typ: DevType,
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

/// One line written to devices.allow / devices.deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    /// "a": every device with every access; resets the exceptions.
    All {
        allow: bool,
    },
    Dev {
        allow: bool,
        key: Key,
        access: u8,
    },
}

impl Rule {
    pub fn file(&self) -> &'static str {
        match self {
            Rule::All { allow: true } | Rule::Dev { allow: true, .. } => "devices.allow",
            _ => "devices.deny",
        }
    }

    /// The kernel's syntax: "a", "c 1:3 rw", "b 8:* m".
    pub fn line(&self) -> String {
        match self {
            Rule::All { .. } => "a".into(),
            Rule::Dev { key, access, .. } => key_line(key, *access),
        }
    }
}

fn key_line(key: &Key, access: u8) -> String {
    let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
    let t = if key.typ == DevType::Block { 'b' } else { 'c' };
    format!(
        "{t} {}:{} {}",
        num(key.major),
        num(key.minor),
        access_str(access)
    )
}

pub(crate) fn access_str(a: u8) -> String {
    [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')]
        .iter()
        .filter(|(bit, _)| a & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

pub(crate) fn parse_access(s: &str) -> Option<u8> {
    s.chars().try_fold(0u8, |acc, c| match c {
        'r' => Some(acc | ACC_READ),
        'w' => Some(acc | ACC_WRITE),
        'm' => Some(acc | ACC_MKNOD),
        _ => None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceState {
    pub default_allow: bool,
    /// Devices that differ from the default (denied ones when it allows, allowed ones when
    /// it denies), with their access bits.
    pub exceptions: BTreeMap<Key, u8>,
    /// v1 `devices.list` of an allow-by-default cgroup prints only "a *:* rwm": its deny
    /// exceptions cannot be known, so a transition has to start with a reset.
    pub unknown_exceptions: bool,
}

impl DeviceState {
    /// Where an OCI rule list starts (as in runc): nothing allowed.
    pub fn deny_all() -> DeviceState {
        DeviceState {
            default_allow: false,
            exceptions: BTreeMap::new(),
            unknown_exceptions: false,
        }
    }

    /// The state after the kernel accepted `rule`.
    pub fn apply(&mut self, rule: &Rule) {
        match rule {
            Rule::All { allow } => {
                *self = DeviceState::deny_all();
                self.default_allow = *allow;
            }
            Rule::Dev { allow, key, access } => {
                if *allow == self.default_allow {
                    // Towards the default: takes bits away from the exact same exception.
                    if let Some(bits) = self.exceptions.get_mut(key) {
                        *bits &= !access;
                        if *bits == 0 {
                            self.exceptions.remove(key);
                        }
                    }
                } else {
                    *self.exceptions.entry(*key).or_insert(0) |= access;
                }
            }
        }
    }

    pub fn from_rules(rules: &[Rule]) -> DeviceState {
        let mut s = DeviceState::deny_all();
        rules.iter().for_each(|r| s.apply(r));
        s
    }

    /// From `devices.list` content.
    pub fn parse_list(content: &str) -> Result<DeviceState, String> {
        let lines: Vec<&str> = content.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() == 1 && lines[0].starts_with('a') {
            return Ok(DeviceState {
                default_allow: true,
                exceptions: BTreeMap::new(),
                unknown_exceptions: true,
            });
        }
        let mut s = DeviceState::deny_all();
        for line in lines {
            let bad = || format!("unexpected line {line:?}");
            let w: Vec<&str> = line.split_whitespace().collect();
            let [t, mm, acc] = w.as_slice() else {
                return Err(bad());
            };
            let typ = match *t {
                "b" => DevType::Block,
                "c" => DevType::Char,
                _ => return Err(bad()),
            };
            let (a, b) = mm.split_once(':').ok_or_else(bad)?;
            let num = |s: &str| -> Result<Option<u32>, String> {
                if s == "*" {
                    Ok(None)
                } else {
                    s.parse().map(Some).map_err(|_| bad())
                }
            };
            let key = Key {
                typ,
                major: num(a)?,
                minor: num(b)?,
            };
            let access = parse_access(acc).filter(|a| *a != 0).ok_or_else(bad)?;
            *s.exceptions.entry(key).or_insert(0) |= access;
        }
        Ok(s)
    }

    /// The rules that take a cgroup in state `self` to `target`, in writing order: a reset only
    /// when the default changes (or the current exceptions cannot be known), then the
    /// exceptions to add, then those to take away. Adding before taking away means that a
    /// device both states allow stays allowed at every step (permission only grows with more
    /// allow-exceptions, and only shrinks with more deny-exceptions).
    pub fn transition(&self, target: &DeviceState) -> Vec<Rule> {
        let mut out = Vec::new();
        let empty = BTreeMap::new();
        let base = if self.unknown_exceptions || self.default_allow != target.default_allow {
            out.push(Rule::All {
                allow: target.default_allow,
            });
            &empty
        } else {
            &self.exceptions
        };
        let flip = !target.default_allow;
        for (key, want) in &target.exceptions {
            let add = want & !base.get(key).copied().unwrap_or(0);
            if add != 0 {
                out.push(Rule::Dev {
                    allow: flip,
                    key: *key,
                    access: add,
                });
            }
        }
        for (key, have) in base {
            let drop = have & !target.exceptions.get(key).copied().unwrap_or(0);
            if drop != 0 {
                out.push(Rule::Dev {
                    allow: !flip,
                    key: *key,
                    access: drop,
                });
            }
        }
        out
    }

    /// Whether the kernel would let `access` to the device through (v1 semantics, which the
    /// eBPF program reproduces): with a deny default some exception must grant every requested
    /// bit; with an allow default no exception may cover any of them. The tests' oracle.
    #[cfg(test)]
    pub fn permits(&self, typ: DevType, major: u32, minor: u32, access: u8) -> bool {
        let matches = |k: &Key| {
            k.typ == typ && k.major.is_none_or(|m| m == major) && k.minor.is_none_or(|m| m == minor)
        };
        let mut hits = self.exceptions.iter().filter(|(k, _)| matches(k));
        if self.default_allow {
            !hits.any(|(_, bits)| bits & access != 0)
        } else {
            hits.any(|(_, bits)| access & !bits == 0)
        }
    }

    /// devices.list lines for messages.
    pub fn describe(&self) -> String {
        let ex: Vec<String> = self
            .exceptions
            .iter()
            .map(|(k, a)| key_line(k, *a))
            .collect();
        let default = if self.default_allow { "allow" } else { "deny" };
        format!("default {default}, exceptions [{}]", ex.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(
        allow: bool,
        typ: DevType,
        major: Option<u32>,
        minor: Option<u32>,
        access: &str,
    ) -> Rule {
        Rule::Dev {
            allow,
            key: Key { typ, major, minor },
            access: parse_access(access).unwrap(),
        }
    }
    use DevType::{Block as B, Char as C};

    fn lines(rules: &[Rule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| format!("{} {}", r.file(), r.line()))
            .collect()
    }

    #[test]
    fn reapplying_the_same_rules_writes_nothing() {
        let rules = vec![
            Rule::All { allow: false },
            dev(true, C, Some(1), Some(3), "rwm"),
            dev(true, C, Some(1), Some(5), "r"),
            dev(true, C, None, None, "m"),
        ];
        let target = DeviceState::from_rules(&rules);
        let current = DeviceState::parse_list("c 1:3 rwm\nc 1:5 r\nc *:* m\n").unwrap();
        assert_eq!(current, target);
        assert!(current.transition(&target).is_empty());
    }

    #[test]
    fn changes_are_additions_then_removals_without_reset() {
        let current = DeviceState::parse_list("c 1:3 rwm\nc 1:5 rw\nc 1:9 r\n").unwrap();
        let target = DeviceState::from_rules(&[
            dev(true, C, Some(1), Some(3), "rwm"),
            dev(true, C, Some(1), Some(5), "r"),
            dev(true, B, Some(8), None, "m"),
        ]);
        assert_eq!(
            lines(&current.transition(&target)),
            vec![
                "devices.allow b 8:* m",
                "devices.deny c 1:5 w",
                "devices.deny c 1:9 r",
            ]
        );
        // replaying the transition on the model gives the target
        let mut s = current.clone();
        current.transition(&target).iter().for_each(|r| s.apply(r));
        assert_eq!(s, target);
    }

    #[test]
    fn an_allow_all_cgroup_starts_with_a_reset() {
        let fresh = DeviceState::parse_list("a *:* rwm\n").unwrap();
        assert!(fresh.default_allow && fresh.unknown_exceptions);
        let target = DeviceState::from_rules(&[dev(true, C, Some(1), Some(3), "rw")]);
        assert_eq!(
            lines(&fresh.transition(&target)),
            vec!["devices.deny a", "devices.allow c 1:3 rw"]
        );
        // allow-all with a deny exception: the list cannot show it, so a reset again
        let blacklist = DeviceState::from_rules(&[
            Rule::All { allow: true },
            dev(false, C, Some(1), Some(3), "rwm"),
        ]);
        assert_eq!(
            lines(&fresh.transition(&blacklist)),
            vec!["devices.allow a", "devices.deny c 1:3 rwm"]
        );
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        let s = DeviceState::from_rules(&[
            Rule::All { allow: true },
            dev(false, C, Some(1), Some(3), "rw"),
            dev(true, C, Some(1), Some(3), "w"),
        ]);
        assert!(s.permits(C, 1, 3, ACC_WRITE));
        assert!(!s.permits(C, 1, 3, ACC_READ));
        assert!(s.permits(C, 1, 5, ACC_READ | ACC_WRITE));
        let s = DeviceState::from_rules(&[
            dev(true, C, None, None, "r"),
            dev(true, C, Some(1), Some(3), "w"),
        ]);
        // v1: no single exception grants rw on 1:3
        assert!(!s.permits(C, 1, 3, ACC_READ | ACC_WRITE));
        assert!(s.permits(C, 4, 1, ACC_READ));
        assert!(!s.permits(B, 4, 1, ACC_READ));
    }

    #[test]
    fn list_parsing_rejects_garbage() {
        assert!(DeviceState::parse_list("x 1:3 rwm").is_err());
        assert!(DeviceState::parse_list("c 1:3 rwz").is_err());
        assert!(DeviceState::parse_list("c 1 rw").is_err());
        assert_eq!(
            DeviceState::parse_list("").unwrap(),
            DeviceState::deny_all()
        );
    }
}
