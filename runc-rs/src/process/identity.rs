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
        let r = libc::rlimit { rlim_cur: l.soft(), rlim_max: l.hard() };
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
        let gids: Vec<nix::unistd::Gid> = user.additional_gids().iter().flatten().map(|g| (*g).into()).collect();
        nix::unistd::setgroups(&gids).map_err(|e| format!("process.user.additionalGids: setgroups: {e}"))?;
    }
    let gid = user.gid().into();
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("process.user.gid: setresgid({}): {e}", user.gid()))?;
    let uid = user.uid().into();
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("process.user.uid: setresuid({}): {e}", user.uid()))?;
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

/// Whether setgroups(2) may be called: not when a user namespace denies it.
pub fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map(|s| s.trim() != "deny").unwrap_or(true)
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

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
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
    let path = env.iter().rev().find_map(|kv| kv.strip_prefix("PATH=")).unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err(format!("exec: {name:?}: executable file not found in $PATH"))
}
