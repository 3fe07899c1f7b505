//! Normalisation and comparison of two runs' observations.

use super::{Case, Known, Observations};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Per-run facts that legitimately differ between two runs of the same
/// case and are replaced by placeholders before comparing.
#[derive(Clone, Debug, Default)]
pub struct Placeholders {
    /// `(literal, placeholder)`; applied longest literal first.
    pub pairs: Vec<(String, String)>,
}

impl Placeholders {
    pub fn add(&mut self, literal: impl Into<String>, placeholder: &str) {
        let literal = literal.into();
        if !literal.is_empty() && !self.pairs.iter().any(|(l, _)| *l == literal) {
            self.pairs.push((literal, placeholder.to_string()));
        }
    }

    pub fn apply(&self, s: &str) -> String {
        let mut pairs: Vec<&(String, String)> = self.pairs.iter().collect();
        pairs.sort_by_key(|(l, _)| std::cmp::Reverse(l.len()));
        let mut out = s.to_string();
        for (l, p) in pairs {
            if out.contains(l.as_str()) {
                out = out.replace(l.as_str(), p);
            }
        }
        out
    }
}

/// Normalise one run's raw observations. The whole list of what is
/// normalised (everything else is compared verbatim):
///
/// * host paths of the bundle, state root and harness work dir, the
///   case's cgroup path and the suite's cgroup parent -> `<BUNDLE>`,
///   `<ROOT>`, `<WORK>`, `<CGROUP>`, `<CGPARENT>` (in keys and values);
/// * `ns.*` (namespace links, whose inode numbers differ per run) -> "host"
///   when equal to the harness's own namespace, else "new";
/// * mount ids, device numbers, peer-group numbers and host source paths
///   in mountinfo (dropped by the parser, see `script::parse_mountinfo`);
/// * the state JSON's `pid` (-> `>0`), `created` timestamp and `ociVersion`
///   (-> their JSON type), done by the runner when it records them;
/// * `devices.list` lines are sorted (an unordered set; the kernel keeps
///   insertion order), done by the runner;
/// * masked-path probes report a file's content as empty/non-empty, not its
///   size (unmasked /proc files change size between runs), done by the script.
pub fn normalise(
    raw: &Observations,
    ph: &Placeholders,
    host_ns: &BTreeMap<String, String>,
) -> Observations {
    let mut out = Observations::new();
    for (k, v) in raw {
        let k = ph.apply(k);
        let v = ph.apply(v);
        let v = match k.strip_prefix("ns.") {
            Some(name) if !v.is_empty() => match host_ns.get(name) {
                Some(h) if *h == v => "host".to_string(),
                Some(_) => "new".to_string(),
                None => format!("new (no such namespace on the host: {v})"),
            },
            _ => v,
        };
        out.insert(k, v);
    }
    out
}

/// One key whose values differ (`None` = the run did not observe it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDiff {
    pub key: String,
    pub reference: Option<String>,
    pub test: Option<String>,
}

/// Result of one case.
#[derive(Clone, Debug, Default)]
pub struct CaseOutcome {
    pub name: String,
    /// Unexplained differences: these fail the suite.
    pub diffs: Vec<KeyDiff>,
    /// Differences covered by a [`Known`] note of the case.
    pub known: Vec<(KeyDiff, &'static str)>,
    /// The case itself is broken on this host (the reference runtime did
    /// not behave as the case says): fails the suite too.
    pub errors: Vec<String>,
    /// Number of keys compared.
    pub keys: usize,
    /// Runtime logs (commands, exit codes, stderr) for failure reports.
    pub reference_log: String,
    pub test_log: String,
    pub seconds: (f64, f64),
}

impl CaseOutcome {
    pub fn passed(&self) -> bool {
        self.diffs.is_empty() && self.errors.is_empty()
    }
}

/// Did this run really run the script to its end?
pub fn ran(obs: &Observations) -> bool {
    obs.get("host.outcome").map(String::as_str) == Some("ran")
}

/// Compare two normalised runs of `case`.
pub fn compare(
    case: &Case,
    reference: &Observations,
    test: &Observations,
    test_desc: &str,
) -> CaseOutcome {
    let mut o = CaseOutcome {
        name: case.name.to_string(),
        ..Default::default()
    };
    // The case must really exercise something: the reference runtime has to
    // either run the script to the end marker or (expect_fail) refuse.
    if case.expect_fail {
        if ran(reference) || reference.contains_key("marker.begin") {
            o.errors.push(format!(
                "case expects the reference runtime to fail, but it ran the container (host.outcome = {:?})",
                reference.get("host.outcome")
            ));
        }
    } else if !ran(reference)
        || !reference.contains_key("marker.begin")
        || !reference.contains_key("marker.end")
    {
        o.errors.push(format!(
            "the reference runtime did not run the case to its end (host.outcome = {:?}); the case is broken on this host",
            reference.get("host.outcome")
        ));
    }
    let keys: BTreeSet<&String> = reference.keys().chain(test.keys()).collect();
    o.keys = keys.len();
    for k in keys {
        let (r, t) = (reference.get(k), test.get(k));
        if r == t {
            continue;
        }
        let d = KeyDiff {
            key: k.clone(),
            reference: r.cloned(),
            test: t.cloned(),
        };
        match find_known(case.known, test_desc, k) {
            Some(note) => o.known.push((d, note)),
            None => o.diffs.push(d),
        }
    }
    o
}

fn find_known(known: &[Known], test_desc: &str, key: &str) -> Option<&'static str> {
    known
        .iter()
        .find(|k| test_desc.contains(k.runtime) && key.starts_with(k.key_prefix))
        .map(|k| k.note)
}

fn indent_value(v: &Option<String>) -> String {
    match v {
        None => "<not observed>".to_string(),
        Some(v) if v.contains('\n') => {
            let mut s = String::from("|\n");
            for l in v.lines() {
                let _ = writeln!(s, "              {l}");
            }
            s.trim_end().to_string()
        }
        Some(v) => format!("{v:?}"),
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Human-readable report of every failing case and its differing keys.
pub fn render(outcomes: &[CaseOutcome], reference_desc: &str, test_desc: &str) -> String {
    let mut s = String::new();
    let failing: Vec<&CaseOutcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    let _ = writeln!(s, "differential: reference = {reference_desc}");
    let _ = writeln!(s, "differential: under test = {test_desc}");
    let _ = writeln!(
        s,
        "{} cases, {} equal, {} differ or are broken",
        outcomes.len(),
        outcomes.len() - failing.len(),
        failing.len()
    );
    for o in outcomes {
        if !o.known.is_empty() {
            let _ = writeln!(
                s,
                "\ncase `{}`: {} known difference(s):",
                o.name,
                o.known.len()
            );
            for (d, note) in &o.known {
                let _ = writeln!(s, "  {} ({note})", d.key);
            }
        }
    }
    for o in &failing {
        let _ = writeln!(
            s,
            "\n=== case `{}`: {} differing key(s) of {}",
            o.name,
            o.diffs.len(),
            o.keys
        );
        for e in &o.errors {
            let _ = writeln!(s, "  CASE ERROR: {e}");
        }
        for d in &o.diffs {
            let _ = writeln!(s, "  {}", d.key);
            let _ = writeln!(s, "    reference: {}", indent_value(&d.reference));
            let _ = writeln!(s, "    test:      {}", indent_value(&d.test));
        }
        if !o.errors.is_empty() || o.diffs.iter().any(|d| d.key.starts_with("host.")) {
            let _ = writeln!(
                s,
                "  --- reference runtime log (tail) ---\n{}",
                tail(&o.reference_log, 2000)
            );
            let _ = writeln!(
                s,
                "  --- test runtime log (tail) ---\n{}",
                tail(&o.test_log, 2000)
            );
        }
    }
    if !failing.is_empty() {
        let _ = writeln!(
            s,
            "\nfailing cases: {}",
            failing
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_longest_first() {
        let mut p = Placeholders::default();
        p.add("/cg", "<CGPARENT>");
        p.add("/cg/ref-x", "<CGROUP>");
        assert_eq!(
            p.apply("root=/cg/ref-x/y and /cg"),
            "root=<CGROUP>/y and <CGPARENT>"
        );
    }
}
