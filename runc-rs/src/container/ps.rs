//! `ps`: the container's processes, as a JSON array of pids or as the
//! host's `ps` output (default `-ef`) filtered to the container's pids.

use std::path::Path;

use super::{load, ContainerError};
use crate::state::{ContainerState, Status};

/// Pids of the container: every process of its cgroup. Without a cgroup (a
/// rootless container whose cgroup was not delegated) init and its
/// descendants.
pub fn pids(root: &Path, st: &ContainerState) -> Result<Vec<i32>, ContainerError> {
    let status = st.status(root);
    match &st.cgroup {
        Some(cg) => {
            if status == Status::Stopped && !cg.exists() {
                return Ok(vec![]);
            }
            cg.pids().map_err(|e| {
                ContainerError::Precondition(format!("unable to get all container pids: {e}"))
            })
        }
        None if status == Status::Stopped => Ok(vec![]),
        None => Ok(descendants(st.pid)),
    }
}

/// `pid` and every process below it, from the ppid field of /proc/*/stat.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out.sort_unstable();
    out
}

/// What `runc ps` prints: `format` is "table" or "json"; `ps_args` go to
/// ps(1) (default `-ef`), whose output keeps its header and the lines of
/// the container's processes.
pub fn ps(
    root: &Path,
    id: &str,
    format: &str,
    ps_args: &[String],
) -> Result<String, ContainerError> {
    let st = load(root, id)?;
    let pids = pids(root, &st)?;
    match format {
        "json" => {
            // Go encodes an empty (nil) slice as null.
            let body = if pids.is_empty() {
                "null".to_owned()
            } else {
                serde_json::to_string(&pids).expect("pids serialize")
            };
            return Ok(format!("{body}\n"));
        }
        "table" => {}
        _ => return Err(ContainerError::Precondition("invalid format option".into())),
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(super::io_err("run ps"))?;
    let mut combined = out.stdout.clone();
    combined.extend_from_slice(&out.stderr);
    let text = String::from_utf8_lossy(&combined).into_owned();
    if !out.status.success() {
        let status = match out.status.code() {
            Some(c) => format!("exit status {c}"),
            None => out.status.to_string(),
        };
        return Err(ContainerError::Precondition(format!("{status}: {text}")));
    }
    filter_table(&text, &pids)
}

fn filter_table(text: &str, pids: &[i32]) -> Result<String, ContainerError> {
    let mut lines = text.split('\n');
    let header = lines.next().unwrap_or_default();
    let pid_index = header
        .split_whitespace()
        .position(|t| t == "PID")
        .ok_or_else(|| {
            ContainerError::Precondition("couldn't find PID field in ps output".into())
        })?;
    let mut out = format!("{header}\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let field = line.split_whitespace().nth(pid_index).unwrap_or_default();
        let p: i32 = field
            .parse()
            .map_err(|e| ContainerError::Precondition(format!("unable to parse pid: {e}")))?;
        if pids.contains(&p) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_header_and_the_container_lines() {
        let text = "UID   PID  PPID CMD\nroot    1     0 init\nroot   42     1 sleep 1\nroot   43    42 sh\n";
        assert_eq!(
            filter_table(text, &[42]).unwrap(),
            "UID   PID  PPID CMD\nroot   42     1 sleep 1\n"
        );
        assert!(filter_table("UID CMD\nroot x\n", &[1]).is_err());
    }
}
