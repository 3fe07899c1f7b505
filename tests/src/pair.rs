//! One scenario under Debian's runc (the reference) and under runc-rs, side
//! by side, for the operations on a running container (exec, ps, pause,
//! update, events, kill): each runtime gets its own [`Cli`] (private
//! `--root`, log and cgroup parent) and its own bundle; what each printed
//! is normalised (cgroup parent, pids) and compared.
//!
//! The reference is `$DIFF_REFERENCE` (default `/usr/sbin/runc`), as for
//! the create/start differential suite in [`crate::diff`].

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;
use testdata::Bundle;

use crate::runtime::{is_root, wait_for, Cli};

/// The two runtimes, reference first.
pub struct Pair {
    pub runc: Cli,
    pub rs: Cli,
}

impl Pair {
    /// `None` (the test is skipped) when not root; a missing reference
    /// runtime fails the test.
    pub fn new() -> Option<Pair> {
        if !is_root() {
            eprintln!("skipping: needs root");
            return None;
        }
        let reference = PathBuf::from(
            std::env::var("DIFF_REFERENCE").unwrap_or_else(|_| "/usr/sbin/runc".into()),
        );
        assert!(
            reference.exists(),
            "reference runtime {} missing (apt-get install runc)",
            reference.display()
        );
        Some(Pair {
            runc: Cli::new(reference),
            rs: Cli::runc_rs(),
        })
    }

    pub fn both(&self) -> [(&'static str, &Cli); 2] {
        [("runc", &self.runc), ("runc-rs", &self.rs)]
    }
}

/// A container started with `run -d` (its bundle lives as long as this).
pub struct Running {
    pub bundle: Bundle,
    pub id: String,
    pub pid: i32,
}

/// `run -d` of a busybox bundle with `args` (after `mutate`), placed in the
/// cli's cgroup parent; panics with the runtime's stderr on failure.
pub fn run_detached(cli: &Cli, id: &str, args: &[&str], mutate: impl Fn(&mut Value)) -> Running {
    let mut b = Bundle::with_args(args).expect("bundle");
    cli.place(&mut b.spec, id);
    mutate(&mut b.spec);
    b.write_spec().expect("write spec");
    let out = cli.run_detached(&["run", "-d", "--bundle", b.dir.to_str().unwrap(), id]);
    assert!(
        out.status.success(),
        "{} run -d {id}: {}",
        cli.bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_for(10, || cli
            .state(id)
            .is_some_and(|s| s["status"] == "running")),
        "{id} not running"
    );
    let pid = cli.state(id).unwrap()["pid"].as_i64().unwrap() as i32;
    Running {
        bundle: b,
        id: id.to_owned(),
        pid,
    }
}

/// `exec <flags> <id> <cmd...>` in the foreground, output captured.
pub fn exec(cli: &Cli, flags: &[&str], id: &str, cmd: &[&str]) -> Output {
    let mut args = vec!["exec"];
    args.extend_from_slice(flags);
    args.push(id);
    args.extend_from_slice(cmd);
    cli.run(&args)
}

/// `text` with the cli's cgroup parent replaced by `<CG>`.
pub fn normalise(cli: &Cli, text: &str) -> String {
    text.replace(&cli.cgroup_parent, "<CG>")
}

/// stdout of a successful command, or a panic naming the runtime.
pub fn stdout_ok(cli: &Cli, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{} failed ({:?}): {}{}",
        cli.bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last line the runtime wrote to stderr (its error message).
pub fn last_err(out: &Output) -> String {
    let e = String::from_utf8_lossy(&out.stderr);
    let line = e
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_owned();
    // runc with --log writes logrus lines; take the msg.
    match serde_json::from_str::<Value>(&line) {
        Ok(v) if v["msg"].is_string() => v["msg"].as_str().unwrap().to_owned(),
        _ => line,
    }
}

/// A cgroup file of a container (`<hierarchy>/<file>`, e.g.
/// `memory/memory.limit_in_bytes`), trimmed; "<missing>" when absent.
pub fn cgroup_file(cli: &Cli, id: &str, file: &str) -> String {
    let (hier, name) = file.split_once('/').unwrap_or(("", file));
    for d in cli.cgroup_dirs(id) {
        let parent_hier = d
            .strip_prefix("/sys/fs/cgroup")
            .ok()
            .and_then(|r| r.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        if parent_hier.as_deref() == Some(hier) || (hier.is_empty() && d.join(name).exists()) {
            return std::fs::read_to_string(d.join(name))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "<missing>".into());
        }
    }
    "<missing>".into()
}

/// The shape of a JSON value: every path with its type ("number",
/// "string", "array", "object", "null", "bool"); arrays by first element.
pub fn json_shape(v: &Value) -> std::collections::BTreeMap<String, &'static str> {
    fn walk(v: &Value, path: String, out: &mut std::collections::BTreeMap<String, &'static str>) {
        let t = match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(a) => {
                if let Some(first) = a.first() {
                    walk(first, format!("{path}[]"), out);
                }
                "array"
            }
            Value::Object(m) => {
                for (k, x) in m {
                    walk(x, format!("{path}/{k}"), out);
                }
                "object"
            }
        };
        out.insert(path, t);
    }
    let mut out = std::collections::BTreeMap::new();
    walk(v, String::new(), &mut out);
    out
}
