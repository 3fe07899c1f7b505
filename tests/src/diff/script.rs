//! The container side: the busybox `sh` script that prints observations,
//! and the parser turning its output into [`Observations`].
//!
//! Output format (one section per observation, raw file contents inside, so
//! all interpretation happens here in Rust, not in shell):
//!
//! ```text
//! @@marker begin
//! @@section <name>
//! <raw lines>
//! @@end
//! @@marker end
//! ```
//!
//! The script reads one line from stdin before observing anything: the
//! harness uses that pause to check that the runtime reports the container
//! as "running" after `start`.

use super::{Obs, Observations};

/// Where busybox is inside the container (testdata's rootfs layout).
pub const BUSYBOX: &str = "/bin/busybox";

/// Marker printed first and last; a run without both did not really run.
pub const MARKER_BEGIN: &str = "@@marker begin";
pub const MARKER_END: &str = "@@marker end";

/// Single-quote `s` for sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn section(out: &mut String, name: &str, body: &str) {
    out.push_str(&format!(
        "echo {}\n{}\necho\necho @@end\n",
        shell_quote(&format!("@@section {name}")),
        body
    ));
}

/// The script printing `obs` (run as `sh -c SCRIPT`).
pub fn build(obs: &[Obs]) -> String {
    let mut s = String::new();
    // stderr of every command joins stdout, so error messages are observed
    // too; the runtime's own stderr (not the container's) stays apart.
    s.push_str("exec 2>&1\n");
    s.push_str(&format!("BB={}\n", shell_quote(BUSYBOX)));
    s.push_str(&format!("echo {}\n", shell_quote(MARKER_BEGIN)));
    s.push_str("read -r _go\n");
    for o in obs {
        match o {
            Obs::Status => {
                section(&mut s, "status", "$BB cat /proc/$$/status");
                section(&mut s, "oom_score_adj", "$BB cat /proc/$$/oom_score_adj");
            }
            Obs::IdMaps => {
                for f in ["uid_map", "gid_map", "setgroups"] {
                    section(&mut s, f, &format!("$BB cat /proc/$$/{f}"));
                }
            }
            Obs::Mounts => section(&mut s, "mountinfo", "$BB cat /proc/$$/mountinfo"),
            Obs::Uts => {
                section(&mut s, "hostname", "$BB cat /proc/sys/kernel/hostname");
                section(&mut s, "domainname", "$BB cat /proc/sys/kernel/domainname");
            }
            Obs::Limits => section(&mut s, "limits", "$BB cat /proc/$$/limits"),
            Obs::Masked(paths) => {
                for p in *paths {
                    let q = shell_quote(p);
                    let body = format!(
                        "if [ -d {q} ]; then echo kind=dir; echo entries=$($BB ls -A {q} 2>/dev/null | $BB wc -l); \
                         $BB ls -A {q} >/dev/null 2>&1; echo read_rc=$?; \
                         elif [ -f {q} ] || [ -c {q} ]; then [ -f {q} ] && echo kind=file || echo kind=chardev; \
                         _n=$($BB head -c 1 {q} 2>/dev/null | $BB wc -c); [ \"$_n\" -gt 0 ] && echo content=non-empty || echo content=empty; \
                         $BB head -c 4096 {q} >/dev/null 2>&1; echo read_rc=$?; \
                         elif [ -e {q} ]; then echo kind=other; else echo kind=missing; fi"
                    );
                    section(&mut s, &format!("masked {p}"), &body);
                }
            }
            Obs::Sysctl(names) => {
                for n in *names {
                    let path = format!("/proc/sys/{}", n.replace('.', "/"));
                    section(
                        &mut s,
                        &format!("sysctl {n}"),
                        &format!("$BB cat {}", shell_quote(&path)),
                    );
                }
            }
            Obs::Env => section(&mut s, "environ", "$BB cat /proc/$$/environ"),
            Obs::Cwd => {
                section(&mut s, "pwd", "pwd");
                section(&mut s, "cwd_link", "$BB readlink /proc/$$/cwd");
            }
            Obs::Umask => section(&mut s, "umask", "umask"),
            Obs::Devices => section(
                &mut s,
                "devices",
                "for f in $($BB find /dev -mindepth 1 | $BB sort); do \
                 $BB stat -c '%n|%F|%a|%t|%T|%u|%g' \"$f\"; \
                 [ -L \"$f\" ] && echo \"$f|link|$($BB readlink \"$f\")\"; done",
            ),
            Obs::Namespaces => section(
                &mut s,
                "ns",
                "for f in /proc/$$/ns/*; do echo \"${f##*/} $($BB readlink $f)\"; done",
            ),
            Obs::ProcCgroup => section(&mut s, "proc_cgroup", "$BB cat /proc/$$/cgroup"),
            Obs::Cmd(name, cmd) => {
                let body = format!("( {cmd}\n) 2>&1; _rc=$?; echo; echo \"@@rc $_rc\"");
                section(&mut s, &format!("cmd {name}"), &body);
            }
            Obs::File(path) => section(
                &mut s,
                &format!("file {path}"),
                &format!("$BB cat {}", shell_quote(path)),
            ),
        }
    }
    s.push_str(&format!("echo {}\n", shell_quote(MARKER_END)));
    s
}

/// Collapse runs of whitespace (tabs in /proc files) to one space.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parse the script's stdout into observations (not yet normalised).
pub fn parse(stdout: &[u8]) -> Observations {
    let text = String::from_utf8_lossy(stdout);
    let mut obs = Observations::new();
    let mut stray: Vec<String> = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in text.split('\n') {
        if let Some((name, body)) = current.as_mut() {
            if line == "@@end" {
                let mut body = std::mem::take(body).join("\n");
                while body.ends_with('\n') {
                    body.pop();
                }
                let name = std::mem::take(name);
                parse_section(&name, &body, &mut obs);
                current = None;
            } else {
                body.push(line.to_string());
            }
            continue;
        }
        if let Some(m) = line.strip_prefix("@@marker ") {
            obs.insert(format!("marker.{m}"), "seen".into());
        } else if let Some(name) = line.strip_prefix("@@section ") {
            current = Some((name.to_string(), Vec::new()));
        } else if !line.is_empty() {
            stray.push(line.to_string());
        }
    }
    if let Some((name, body)) = current {
        obs.insert(format!("truncated_section {name}"), body.join("\n"));
    }
    if !stray.is_empty() {
        obs.insert("stray_output".into(), stray.join("\n"));
    }
    obs
}

fn parse_section(name: &str, body: &str, obs: &mut Observations) {
    let put = |obs: &mut Observations, k: String, v: String| {
        obs.insert(k, v);
    };
    match name {
        "status" => {
            const KEEP: &[&str] = &[
                "CapInh",
                "CapPrm",
                "CapEff",
                "CapBnd",
                "CapAmb",
                "NoNewPrivs",
                "Seccomp",
                "Seccomp_filters",
                "Uid",
                "Gid",
                "Groups",
                // Signal dispositions survive execve: a runtime that
                // ignores or blocks a signal leaks it into the container.
                "SigIgn",
                "SigBlk",
            ];
            for l in body.lines() {
                if let Some((k, v)) = l.split_once(':') {
                    if KEEP.contains(&k) {
                        put(obs, format!("status.{k}"), squash(v));
                    }
                }
            }
        }
        "mountinfo" => parse_mountinfo(body, obs),
        "limits" => {
            for l in body.lines().skip(1) {
                // Fixed-width name column (26 chars), then soft, hard, units.
                if l.len() < 26 {
                    continue;
                }
                let (n, rest) = l.split_at(26);
                put(obs, format!("limit.{}", n.trim()), squash(rest));
            }
        }
        "environ" => {
            for (i, kv) in body.split('\0').filter(|e| !e.is_empty()).enumerate() {
                match kv.split_once('=') {
                    Some((k, v)) => put(obs, format!("env.{k}"), v.to_string()),
                    None => put(obs, format!("env.<no '='>#{i}"), kv.to_string()),
                }
            }
            put(
                obs,
                "env.<count>".into(),
                body.split('\0')
                    .filter(|e| !e.is_empty())
                    .count()
                    .to_string(),
            );
        }
        "devices" => {
            for l in body.lines() {
                let f: Vec<&str> = l.split('|').collect();
                if f.len() == 3 && f[1] == "link" {
                    put(obs, format!("dev {}", f[0]), format!("symlink -> {}", f[2]));
                } else if f.len() == 7 {
                    let (path, kind, mode, maj, min, uid, gid) =
                        (f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
                    if kind == "symbolic link" {
                        continue; // reported by the "link" line
                    }
                    let kind = match kind {
                        "character special file" => "char",
                        "block special file" => "block",
                        "directory" => "dir",
                        "regular file" | "regular empty file" => "file",
                        "fifo" => "fifo",
                        "socket" => "socket",
                        other => other,
                    };
                    let mut v = format!("{kind} mode={mode} owner={uid}:{gid}");
                    if kind == "char" || kind == "block" {
                        let maj = u64::from_str_radix(maj, 16).unwrap_or(u64::MAX);
                        let min = u64::from_str_radix(min, 16).unwrap_or(u64::MAX);
                        v.push_str(&format!(" dev={maj}:{min}"));
                    }
                    put(obs, format!("dev {path}"), v);
                } else {
                    put(obs, format!("dev <unparsed> {l}"), String::new());
                }
            }
        }
        "ns" => {
            for l in body.lines() {
                if let Some((n, link)) = l.split_once(' ') {
                    put(obs, format!("ns.{n}"), link.to_string());
                }
            }
        }
        "proc_cgroup" => {
            for l in body.lines() {
                // "N:controllers:/path" -> key by controllers (hierarchy ids
                // are host-specific but stable; controllers are what matter).
                let mut it = l.splitn(3, ':');
                let (_id, ctrl, path) =
                    (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
                let ctrl = if ctrl.is_empty() { "<unified>" } else { ctrl };
                put(obs, format!("proc_cgroup.{ctrl}"), path.to_string());
            }
        }
        _ => {
            if let Some(cmd) = name.strip_prefix("cmd ") {
                let (out, rc) = match body.rfind("@@rc ") {
                    Some(i) => (body[..i].trim_end_matches('\n'), body[i + 5..].trim()),
                    None => (body, "<missing>"),
                };
                put(obs, format!("cmd.{cmd}.out"), out.to_string());
                put(obs, format!("cmd.{cmd}.rc"), rc.to_string());
            } else if let Some(m) = name.strip_prefix("masked ") {
                for l in body.lines() {
                    if let Some((k, v)) = l.split_once('=') {
                        put(obs, format!("masked {m}.{k}"), v.trim().to_string());
                    }
                }
            } else {
                // hostname, domainname, uid_map, gid_map, setgroups, pwd,
                // cwd_link, umask, oom_score_adj, sysctl X, file X.
                let v = if name.ends_with("_map") {
                    body.lines().map(squash).collect::<Vec<_>>().join("\n")
                } else {
                    body.to_string()
                };
                put(obs, name.to_string(), v);
            }
        }
    }
}

/// `/proc/self/mountinfo` -> one key per mount point.
///
/// Dropped: mount id, parent id, major:minor (per boot/run), peer group
/// numbers (kept: the propagation kind), sources that are host paths
/// (device nodes). Kept: root within the filesystem (placeholders applied
/// later), mount point, per-mount options, fs type, non-path source,
/// superblock options. Several mounts on one mount point keep their
/// stacking order: `mount /x`, `mount /x#2`, ...
fn parse_mountinfo(body: &str, obs: &mut Observations) {
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    for l in body.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < dash + 4 || dash < 6 {
            continue;
        }
        let (root, mp, opts) = (f[3], f[4], f[5]);
        let prop: Vec<String> = f[6..dash]
            .iter()
            .map(|t| t.split(':').next().unwrap_or("").to_string())
            .collect();
        let (fstype, source, superopts) = (f[dash + 1], f[dash + 2], f[dash + 3]);
        let source = if source.starts_with('/') {
            "<path>"
        } else {
            source
        };
        let n = seen.entry(mp.to_string()).or_insert(0);
        *n += 1;
        let key = if *n == 1 {
            format!("mount {mp}")
        } else {
            format!("mount {mp}#{n}")
        };
        let prop = if prop.is_empty() {
            "private".to_string()
        } else {
            prop.join(",")
        };
        obs.insert(
            key,
            format!("{fstype} src={source} root={root} opts={opts} super={superopts} prop={prop}"),
        );
    }
    obs.insert("mount.<count>".into(), body.lines().count().to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections() {
        let out = b"@@marker begin\n@@section status\nCapEff:\t00000000a80425fb\nVmRSS:\t1 kB\n\n@@end\n\
@@section environ\nA=1\0B=x=y\0\n@@end\n@@section cmd t\nhello\n\n@@rc 3\n@@end\n\
@@section mountinfo\n65 43 254:0 /tmp/b/rootfs / ro,relatime shared:4 master:1 - ext4 /dev/vda rw\n@@end\n\
junk\n@@marker end\n";
        let o = parse(out);
        assert_eq!(o["marker.begin"], "seen");
        assert_eq!(o["marker.end"], "seen");
        assert_eq!(o["status.CapEff"], "00000000a80425fb");
        assert!(!o.contains_key("status.VmRSS"));
        assert_eq!(o["env.A"], "1");
        assert_eq!(o["env.B"], "x=y");
        assert_eq!(o["cmd.t.out"], "hello");
        assert_eq!(o["cmd.t.rc"], "3");
        assert_eq!(
            o["mount /"],
            "ext4 src=<path> root=/tmp/b/rootfs opts=ro,relatime super=rw prop=shared,master"
        );
        assert_eq!(o["stray_output"], "junk");
    }
}
