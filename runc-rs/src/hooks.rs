//! OCI hooks: each runs with the container state as JSON on stdin, its own
//! args and env, and an optional timeout after which it is killed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook #{index} ({path}): start: {source}")]
    Start {
        kind: &'static str,
        index: usize,
        path: String,
        source: std::io::Error,
    },
    #[error("{kind} hook #{index} ({path}): {status}, stderr: {stderr}")]
    Failed {
        kind: &'static str,
        index: usize,
        path: String,
        status: String,
        stderr: String,
    },
    #[error("{kind} hook #{index} ({path}): timed out after {secs}s")]
    Timeout {
        kind: &'static str,
        index: usize,
        path: String,
        secs: i64,
    },
}

/// Runs every hook of one kind in order; the first failure stops the list.
pub fn run_all(
    kind: &'static str,
    hooks: Option<&Vec<Hook>>,
    state_json: &[u8],
) -> Result<(), HookError> {
    for (index, hook) in hooks.into_iter().flatten().enumerate() {
        run_one(kind, index, hook, state_json)?;
    }
    Ok(())
}

fn run_one(
    kind: &'static str,
    index: usize,
    hook: &Hook,
    state_json: &[u8],
) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    let mut cmd = Command::new(hook.path());
    let args = hook.args().clone().unwrap_or_default();
    if let Some((argv0, rest)) = args.split_first() {
        use std::os::unix::process::CommandExt;
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Start {
        kind,
        index,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin must not make us fail.
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(t as u64)));
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Start {
                    kind,
                    index,
                    path,
                    source,
                })
            }
        }
        if let Some((secs, at)) = deadline {
            if Instant::now() >= at {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout {
                    kind,
                    index,
                    path,
                    secs,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        return Err(HookError::Failed {
            kind,
            index,
            path,
            status: status.to_string(),
            stderr: stderr.trim().to_owned(),
        });
    }
    Ok(())
}
