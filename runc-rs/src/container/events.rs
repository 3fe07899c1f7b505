//! `events`: the container's statistics (`{"type":"stats","id":..,"data":..}`,
//! once with `--stats`, else every `--interval`) and its OOM kills
//! (`{"type":"oom","id":..}`), one JSON object per line, until the
//! container's cgroup is removed.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::json;

use super::{load, ContainerError};
use crate::state::Status;

fn bad(msg: impl Into<String>) -> ContainerError {
    ContainerError::Precondition(msg.into())
}

/// A Go duration ("5s", "100ms", "1m30s", "1.5h"); `None` if malformed.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += value * scale;
    }
    // Negative durations exist in Go; `events` refuses them (as zero) below.
    if neg {
        return Some(Duration::ZERO);
    }
    Some(Duration::from_secs_f64(total))
}

fn emit(out: &mut impl Write, v: &serde_json::Value) {
    // Go's json.Encoder: one object per line. A closed stdout ends nothing
    // here; the loop ends with the cgroup.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn stats_event(id: &str, cg: &cgroups::Manager) -> Result<serde_json::Value, ContainerError> {
    let data = super::stats::runc_stats(cg)
        .map_err(|e| bad(format!("unable to get container cgroup stats: {e}")))?;
    Ok(json!({"type": "stats", "id": id, "data": data}))
}

pub fn events(
    root: &Path,
    id: &str,
    interval: &str,
    stats_once: bool,
) -> Result<(), ContainerError> {
    let st = load(root, id)?;
    let interval = parse_duration(interval).ok_or_else(|| {
        bad(format!(
            "invalid value {interval:?} for flag -interval: parse error"
        ))
    })?;
    if interval.is_zero() {
        return Err(bad("duration interval must be greater than 0"));
    }
    if st.status(root) == Status::Stopped {
        return Err(bad(format!("container with id {id} is not running")));
    }
    let cg = st.cgroup.as_ref().ok_or_else(|| {
        bad("the container has no cgroup (not delegated to this user?): no statistics")
    })?;
    let mut out = std::io::stdout().lock();
    if stats_once {
        emit(&mut out, &stats_event(id, cg)?);
        return Ok(());
    }
    let mut oom = cg.oom_events()?;
    let mut next_stats = Instant::now() + interval;
    loop {
        // Drain what the watcher has now; it ends when the cgroup goes.
        loop {
            match oom.try_next()? {
                cgroups::OomPoll::Event(_) => emit(&mut out, &json!({"type": "oom", "id": id})),
                cgroups::OomPoll::Pending => break,
                cgroups::OomPoll::Ended => return Ok(()),
            }
        }
        let now = Instant::now();
        if now >= next_stats {
            match stats_event(id, cg) {
                Ok(v) => emit(&mut out, &v),
                // As runc: logged, and the stream goes on until the cgroup is gone.
                Err(e) => log::error!("{e}"),
            }
            next_stats = now + interval;
        }
        let mut wait = next_stats.saturating_duration_since(Instant::now());
        if let Some(r) = oom.retry_after() {
            wait = wait.min(r);
        }
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        let fd = unsafe { BorrowedFd::borrow_raw(oom.as_raw_fd()) };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(source) => {
                return Err(ContainerError::Sys {
                    what: "poll the OOM watcher".into(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("-1s"), Some(Duration::ZERO));
        for bad in ["", "5", "s", "5x", "1..5s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
