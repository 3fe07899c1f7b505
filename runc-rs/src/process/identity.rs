//! Who the container process is: rlimits, groups, uid/gid, HOME, and the
//! path of the program it runs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{PosixRlimit, PosixRlimitType, User};

pub fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    (match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::__rlimit_resource_t
}

pub fn set_rlimits(limits: &[PosixRlimit]) -> Result<(), String> {
    for l in limits {
        let r = libc::rlimit {
            rlim_cur: l.soft(),
            rlim_max: l.hard(),
        };
        if unsafe { libc::setrlimit(rlimit_resource(l.typ()), &r) } != 0 {
            return Err(format!(
                "process.rlimits: setrlimit {:?} (soft {}, hard {}): {}",
                l.typ(),
                l.soft(),
                l.hard(),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Switches to the spec's user, keeping capabilities for `capabilities::apply`.
pub fn switch_user(user: &User, setgroups_allowed: bool) -> Result<(), String> {
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    if setgroups_allowed {
        let gids: Vec<nix::unistd::Gid> = user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| (*g).into())
            .collect();
        nix::unistd::setgroups(&gids)
            .map_err(|e| format!("process.user.additionalGids: setgroups: {e}"))?;
    }
    let gid = user.gid().into();
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| format!("process.user.gid: setresgid({}): {e}", user.gid()))?;
    let uid = user.uid().into();
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| format!("process.user.uid: setresuid({}): {e}", user.uid()))?;
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

/// Whether setgroups(2) may be called: not when a user namespace denies it.
pub fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true)
}

/// HOME from the container's /etc/passwd for `uid`, else "/".
pub fn home_for(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid) {
            return f[5].to_owned();
        }
    }
    "/".to_owned()
}

/// The process environment as runc 1.1 builds it: each `NAME=value` set in
/// order like Go's os.Setenv (a repeated name keeps its first position and
/// takes the last value), entries without `=` or with an empty name
/// refused, and HOME added from `home` when unset or empty.
pub fn process_env(env: &[String], home: impl FnOnce() -> String) -> Result<Vec<String>, String> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len() + 1);
    for pair in env {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!(
                "process.env: invalid environment variable {pair:?}: missing '='"
            ));
        };
        if name.is_empty() {
            return Err(format!(
                "process.env: invalid environment variable {pair:?}: name cannot be empty"
            ));
        }
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_owned(),
            None => out.push((name.to_owned(), value.to_owned())),
        }
    }
    match out.iter_mut().find(|(n, _)| n == "HOME") {
        Some(slot) if slot.1.is_empty() => slot.1 = home(),
        Some(_) => {}
        None => out.push(("HOME".to_owned(), home())),
    }
    Ok(out.into_iter().map(|(n, v)| format!("{n}={v}")).collect())
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves the program like Go's exec.LookPath (runc's messages included),
/// using the container's PATH, in the container's filesystem.
pub fn look_path(name: &str, env: &[String]) -> Result<PathBuf, String> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return match std::fs::metadata(&p) {
            Ok(_) if is_executable(&p) => Ok(p),
            Ok(_) => Err(format!("exec: {name:?}: permission denied")),
            Err(e) => Err(format!("exec: {name:?}: stat {name}: {e}")),
        };
    }
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_like_runc() {
        let got = process_env(
            &env(&["A=1", "DUP=first", "B=x=y", "DUP=second", "EMPTY="]),
            || "/root".into(),
        )
        .unwrap();
        assert_eq!(
            got,
            env(&["A=1", "DUP=second", "B=x=y", "EMPTY=", "HOME=/root"])
        );
        let kept = process_env(&env(&["HOME=/h"]), || unreachable!()).unwrap();
        assert_eq!(kept, env(&["HOME=/h"]));
        let filled = process_env(&env(&["HOME="]), || "/".into()).unwrap();
        assert_eq!(filled, env(&["HOME=/"]));
        assert!(process_env(&env(&["NOEQUALS"]), || "/".into()).is_err());
        assert!(process_env(&env(&["=v"]), || "/".into()).is_err());
    }
}
