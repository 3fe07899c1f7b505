//! Differential tests: every case runs the same bundle under Debian's runc
//! (the reference) and under the runtime under test, and compares what the
//! container saw and what the host saw. See `integration_tests::diff`.
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/cache/runc-rs/target
//! cargo build -p runc-rs                                   # the default runtime under test
//! cargo test -p integration-tests --test differential -- --nocapture
//! DIFF_RUNTIME=/usr/sbin/runc cargo test ...               # runc vs runc: proves the normalisation
//! DIFF_RUNTIME='unshare -m sh -c '\''umount -l /sys/fs/cgroup/unified; exec crun "$@"'\'' sh' cargo test ...
//! DIFF_CASES=seccomp,hooks DIFF_REPORT=/tmp/diff-report cargo test ...
//! ```

use integration_tests::diff::spec_edit::*;
use integration_tests::diff::{self, Case, Obs, ALL, BASIC};
use serde_json::json;

const ID: Obs = Obs::Cmd("id", "$BB id");
const WRITE_ROOT: Obs = Obs::Cmd("write_root", "$BB touch /diff-probe && echo wrote");
const DOCKER_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

// ------------------------------------------------------------------ cases

fn cases() -> Vec<Case> {
    vec![
        // ---- baselines
        Case::new("default", ALL, |_| {}).cgroup(&[
            "devices/devices.list",
            "pids/pids.max",
            "memory/memory.limit_in_bytes",
            "cpu/cpu.shares",
            "cpuset/cpuset.cpus",
            "freezer/freezer.state",
        ])
        .cgroup_v2(&["cgroup.controllers", "cgroup.type", "pids.max", "memory.max", "cpu.weight", "cpuset.cpus", "cgroup.freeze"]),
        Case::new("rootfs_readonly_write", &[Obs::Mounts, WRITE_ROOT], |_| {}),
        Case::new("rootfs_writable", &[Obs::Mounts, WRITE_ROOT], writable_rootfs),
        Case::new("root_path_absolute", &[Obs::Mounts], |s| {
            s["root"]["path"] = json!("{{BUNDLE}}/rootfs");
        }),
        Case::new("pid_one", &[Obs::Cmd("pid", "echo $$; echo $PPID")], |_| {}),
        // ---- namespaces
        Case::new("ns_user", &[Obs::Status, Obs::IdMaps, Obs::Namespaces, Obs::Mounts, Obs::Devices, ID], |s| {
            ns_add(s, "user");
            s["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
            s["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
        }),
        Case::new("ns_user_multi_range", &[Obs::Status, Obs::IdMaps, ID], |s| {
            ns_add(s, "user");
            s["linux"]["uidMappings"] = json!([
                { "containerID": 0, "hostID": 200000, "size": 1000 },
                { "containerID": 1000, "hostID": 300000, "size": 10 }
            ]);
            s["linux"]["gidMappings"] = json!([
                { "containerID": 0, "hostID": 200000, "size": 1000 },
                { "containerID": 1000, "hostID": 300000, "size": 10 }
            ]);
            s["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        }),
        Case::new("ns_user_without_mappings", &[Obs::IdMaps], |s| ns_add(s, "user")).fail(),
        Case::new("ns_cgroup", &[Obs::ProcCgroup, Obs::Mounts, Obs::Namespaces], |s| ns_add(s, "cgroup")),
        Case::new(
            "ns_host_network",
            &[Obs::Namespaces, Obs::Sysctl(&["net.ipv4.ip_forward"]), Obs::Mounts],
            |s| ns_remove(s, "network"),
        ),
        Case::new("ns_host_ipc_uts", &[Obs::Namespaces, Obs::Uts], |s| {
            ns_remove(s, "ipc");
            ns_remove(s, "uts");
            s.as_object_mut().unwrap().remove("hostname");
        }),
        Case::new("ns_host_pid", &[Obs::Namespaces, Obs::Cmd("pid_is_1", "[ $$ -eq 1 ] && echo yes || echo no")], |s| {
            ns_remove(s, "pid")
        }),
        Case::new("ns_join_net_by_path", &[Obs::Namespaces], |s| ns_set_path(s, "network", "/proc/{{HARNESS_PID}}/ns/net")),
        Case::new("ns_hostname_without_uts", &[Obs::Uts], |s| {
            ns_remove(s, "uts");
            // The host's own name: a runtime that wrongly applies it changes nothing.
            s["hostname"] = json!(host_sysctl("/proc/sys/kernel/hostname"));
        })
        .fail(),
        // ---- capabilities
        Case::new("caps_none", &[Obs::Status], |s| caps_all(s, &[])),
        Case::new("caps_chown_only", &[Obs::Status, Obs::Cmd("chown", "$BB chown 1000 /dev/null && echo chowned")], |s| {
            caps_all(s, &["CAP_CHOWN"]);
            s["process"]["capabilities"]["ambient"] = json!([]);
            s["process"]["capabilities"]["inheritable"] = json!([]);
        }),
        Case::new("caps_docker_default", &[Obs::Status], |s| {
            caps_all(s, DOCKER_CAPS);
            s["process"]["capabilities"]["ambient"] = json!([]);
            s["process"]["capabilities"]["inheritable"] = json!([]);
        }),
        Case::new("caps_ambient_nonroot", &[Obs::Status, ID], |s| {
            caps_all(s, &["CAP_NET_BIND_SERVICE", "CAP_KILL"]);
            s["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        }),
        Case::new("caps_nonroot_no_ambient", &[Obs::Status], |s| {
            caps_all(s, &["CAP_NET_BIND_SERVICE", "CAP_KILL"]);
            s["process"]["capabilities"]["ambient"] = json!([]);
            s["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        }),
        Case::new("caps_unknown_name", &[Obs::Status], |s| {
            caps_all(s, &["CAP_KILL", "CAP_DOES_NOT_EXIST"]);
        }),
        // ---- rlimits
        Case::new("rlimits_lowered", &[Obs::Limits], |s| {
            s["process"]["rlimits"] = json!([
                { "type": "RLIMIT_NOFILE", "soft": 100, "hard": 200 },
                { "type": "RLIMIT_NPROC", "soft": 50, "hard": 60 },
                { "type": "RLIMIT_CORE", "soft": 0, "hard": 0 },
                { "type": "RLIMIT_STACK", "soft": 4194304, "hard": 8388608 },
                { "type": "RLIMIT_MSGQUEUE", "soft": 4096, "hard": 8192 }
            ]);
        }),
        Case::new("rlimits_none", &[Obs::Limits], |s| {
            s["process"].as_object_mut().unwrap().remove("rlimits");
        }),
        Case::new("rlimits_above_hard", &[Obs::Limits], |s| {
            s["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576 }]);
        })
        .fail(),
        Case::new("rlimits_soft_above_hard", &[Obs::Limits], |s| {
            s["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "soft": 200, "hard": 100 }]);
        })
        .fail(),
        Case::new("rlimits_unknown_type", &[Obs::Limits], |s| {
            s["process"]["rlimits"] = json!([{ "type": "RLIMIT_BOGUS", "soft": 1, "hard": 1 }]);
        })
        .fail(),
        // ---- mounts
        Case::new(
            "mount_tmpfs_options",
            &[Obs::Mounts, Obs::Cmd("stat", "$BB stat -c '%a %u %g' /mnt/t"), Obs::Cmd("exec", "$BB cp $BB /mnt/t/x && /mnt/t/x true; echo rc=$?")],
            |s| {
                mount_add(s, json!({
                    "destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=1777", "uid=1000", "gid=1000"]
                }));
            },
        ),
        Case::new("mount_bind_ro_dir", &[Obs::Mounts, Obs::Cmd("ls", "$BB ls /mnt/b; $BB touch /mnt/b/x")], |s| {
            mount_add(s, json!({
                "destination": "/mnt/b", "type": "bind", "source": "{{BUNDLE}}/rootfs/etc",
                "options": ["rbind", "ro", "nosuid"]
            }));
        }),
        Case::new("mount_bind_file", &[Obs::Mounts, Obs::Cmd("read", "$BB head -n 1 /etc/diff-passwd")], |s| {
            mount_add(s, json!({
                "destination": "/etc/diff-passwd", "type": "none", "source": "{{BUNDLE}}/rootfs/etc/passwd",
                "options": ["bind", "ro"]
            }));
        }),
        Case::new("mount_creates_mountpoint_in_ro_rootfs", &[Obs::Mounts, Obs::Cmd("ls", "$BB ls -ld /new/deep/dir | $BB cut -c1-10")], |s| {
            mount_add(s, json!({ "destination": "/new/deep/dir", "type": "tmpfs", "source": "tmpfs", "options": ["ro"] }));
        }),
        Case::new("mount_bind_propagation", &[Obs::Mounts], |s| {
            mount_add(s, json!({
                "destination": "/mnt/shared", "type": "bind", "source": "{{BUNDLE}}/rootfs/home",
                "options": ["rbind", "rshared"]
            }));
            mount_add(s, json!({
                "destination": "/mnt/slave", "type": "bind", "source": "{{BUNDLE}}/rootfs/var",
                "options": ["rbind", "rslave"]
            }));
        }),
        Case::new("rootfs_propagation_shared", &[Obs::Mounts], |s| {
            s["linux"]["rootfsPropagation"] = json!("shared");
        }),
        Case::new("rootfs_propagation_slave", &[Obs::Mounts], |s| {
            s["linux"]["rootfsPropagation"] = json!("slave");
        }),
        Case::new("mount_missing_source", &[Obs::Mounts], |s| {
            mount_add(s, json!({
                "destination": "/mnt/x", "type": "bind", "source": "{{BUNDLE}}/does-not-exist", "options": ["rbind"]
            }));
        })
        .fail(),
        Case::new("mount_sysfs_rw", &[Obs::Mounts], |s| {
            for m in s["mounts"].as_array_mut().unwrap() {
                if m["destination"] == "/sys" {
                    m["options"] = json!(["nosuid", "noexec", "nodev"]);
                }
            }
        }),
        // ---- masked and read-only paths
        Case::new(
            "masked_custom",
            &[Obs::Mounts, Obs::Masked(&["/etc/passwd", "/home", "/proc/kcore", "/nonexistent"])],
            |s| {
                s["linux"]["maskedPaths"] = json!(["/etc/passwd", "/home", "/proc/kcore", "/nonexistent"]);
            },
        ),
        Case::new(
            "masked_none",
            &[Obs::Mounts, Obs::Masked(&["/proc/kcore", "/proc/keys", "/proc/acpi", "/sys/firmware"])],
            |s| {
                s["linux"]["maskedPaths"] = json!([]);
                s["linux"]["readonlyPaths"] = json!([]);
            },
        ),
        Case::new(
            "readonly_custom",
            &[Obs::Mounts, Obs::Cmd("write_home", "$BB touch /home/x && echo wrote"), Obs::Cmd("write_tmp", "$BB touch /tmp/x && echo wrote")],
            |s| {
                writable_rootfs(s);
                s["linux"]["readonlyPaths"] = json!(["/home", "/proc/sys", "/nonexistent"]);
            },
        ),
        // ---- sysctls
        Case::new(
            "sysctl_namespaced",
            &[Obs::Sysctl(&["net.ipv4.ip_forward", "net.core.somaxconn", "kernel.shm_rmid_forced", "kernel.msgmax", "kernel.domainname"])],
            |s| {
                s["linux"]["sysctl"] = json!({
                    "net.ipv4.ip_forward": "1",
                    "net.core.somaxconn": "1024",
                    "kernel.shm_rmid_forced": "1",
                    "kernel.msgmax": "16384",
                    "kernel.domainname": "sysctl.example"
                });
            },
        ),
        Case::new("sysctl_not_namespaced", &[Obs::Sysctl(&["kernel.panic"])], |s| {
            s["linux"]["sysctl"] = json!({ "kernel.panic": host_sysctl("/proc/sys/kernel/panic") });
        })
        .fail(),
        Case::new("sysctl_net_in_host_netns", &[Obs::Sysctl(&["net.ipv4.ip_forward"])], |s| {
            ns_remove(s, "network");
            s["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": host_sysctl("/proc/sys/net/ipv4/ip_forward") });
        })
        .fail(),
        // ---- process: env, args, cwd
        Case::new("env_custom", &[Obs::Env], |s| {
            s["process"]["env"] = json!([
                "PATH=/bin:/usr/bin", "SPACES=a b  c", "EQUALS=x=y=z", "EMPTY=", "UNICODE=héllo wörld",
                "DUP=first", "DUP=second", "NEWLINE=line1\nline2"
            ]);
        }),
        Case::new("env_minimal_no_path", &[Obs::Env], |s| {
            s["process"]["env"] = json!(["ONLY=1"]);
            set_sh_path(s, "/bin/sh");
        }),
        Case::new("args_path_lookup", &[Obs::Env, Obs::Cmd("argv0", "echo $0")], |s| {
            // "busybox" is found through process.env's PATH, in /bin.
            s["process"]["args"].as_array_mut().unwrap().insert(0, json!("busybox"));
        }),
        Case::new("args_not_in_path", &[Obs::Env], |s| {
            s["process"]["env"] = json!(["PATH=/usr/bin"]);
        })
        .fail(),
        Case::new("args_nonexistent_binary", &[Obs::Env], |s| set_sh_path(s, "/nonexistent/binary")).fail(),
        Case::new("args_not_executable", &[Obs::Env], |s| set_sh_path(s, "/etc/passwd")).fail(),
        Case::new("cwd_tmp", &[Obs::Cwd], |s| s["process"]["cwd"] = json!("/tmp")),
        Case::new("cwd_missing", &[Obs::Cwd, Obs::Cmd("ls", "$BB stat -c '%F %a %u' /does/not/exist")], |s| {
            writable_rootfs(s);
            s["process"]["cwd"] = json!("/does/not/exist");
        }),
        Case::new("cwd_relative", &[Obs::Cwd], |s| s["process"]["cwd"] = json!("tmp")).fail(),
        // ---- user, groups, umask
        Case::new("user_uid_gid", &[Obs::Status, Obs::Env, ID, Obs::Cwd], |s| {
            s["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        }),
        Case::new("user_additional_gids", &[Obs::Status, ID], |s| {
            s["process"]["user"] = json!({ "uid": 1000, "gid": 1000, "additionalGids": [10, 2000, 1000] });
        }),
        Case::new("user_root_additional_gids", &[Obs::Status], |s| {
            s["process"]["user"] = json!({ "uid": 0, "gid": 0, "additionalGids": [1, 2] });
        }),
        Case::new("user_not_in_passwd", &[Obs::Status, Obs::Env, ID], |s| {
            s["process"]["user"] = json!({ "uid": 4242, "gid": 4343 });
        }),
        Case::new(
            "umask_077",
            &[Obs::Umask, Obs::Cmd("create", "$BB touch /dev/shm/f && $BB mkdir /dev/shm/d && $BB stat -c '%n %a' /dev/shm/f /dev/shm/d")],
            |s| s["process"]["user"]["umask"] = json!(0o077),
        ),
        Case::new("umask_000_nonroot", &[Obs::Umask, Obs::Status], |s| {
            s["process"]["user"] = json!({ "uid": 1000, "gid": 1000, "umask": 0 });
        }),
        // ---- uts
        Case::new("uts_hostname_domainname", &[Obs::Uts], |s| {
            s["hostname"] = json!("diff-host");
            s["domainname"] = json!("diff.example");
        }),
        Case::new("uts_no_hostname", &[Obs::Uts], |s| {
            s.as_object_mut().unwrap().remove("hostname");
        }),
        // ---- devices
        Case::new(
            "devices_extra_nodes",
            &[Obs::Devices, Obs::Cmd("write", "echo x > /dev/diffnull && echo ok; $BB head -c 1 /dev/diffzero | $BB wc -c")],
            |s| {
                s["linux"]["devices"] = json!([
                    { "path": "/dev/diffnull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 0, "gid": 0 },
                    { "path": "/dev/diffzero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o600, "uid": 1000, "gid": 1000 },
                    { "path": "/dev/sub/diffloop", "type": "b", "major": 7, "minor": 200 }
                ]);
                s["linux"]["resources"]["devices"] = json!([
                    { "allow": false, "access": "rwm" },
                    { "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" },
                    { "allow": true, "type": "c", "major": 1, "minor": 5, "access": "r" }
                ]);
            },
        )
        .cgroup(&["devices/devices.list"]),
        Case::new("devices_cgroup_allow_all", &[Obs::Cmd("full", "$BB head -c 1 /dev/full | $BB wc -c")], |s| {
            s["linux"]["resources"]["devices"] = json!([{ "allow": true, "access": "rwm" }]);
        })
        .cgroup(&["devices/devices.list"]),
        Case::new("devices_cgroup_deny_null", &[Obs::Cmd("null", "echo x > /dev/null && echo ok")], |s| {
            s["linux"]["resources"]["devices"] = json!([
                { "allow": false, "access": "rwm" },
                { "allow": false, "type": "c", "major": 1, "minor": 3, "access": "w" }
            ]);
        })
        .cgroup(&["devices/devices.list"]),
        // ---- oom score, no_new_privs
        Case::new("oom_score_adj_positive", &[Obs::Status], |s| s["process"]["oomScoreAdj"] = json!(500)),
        Case::new("oom_score_adj_negative", &[Obs::Status], |s| s["process"]["oomScoreAdj"] = json!(-500)).fail(),
        Case::new("no_new_privileges_false", BASIC, |s| s["process"]["noNewPrivileges"] = json!(false)),
        // ---- seccomp
        Case::new(
            "seccomp_errno",
            &[Obs::Status, Obs::Cmd("mkdir", "$BB mkdir /dev/shm/d"), Obs::Cmd("touch", "$BB touch /dev/shm/f && echo ok")],
            |s| {
                seccomp(s, json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                    "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 }]
                }));
            },
        ),
        Case::new("seccomp_errno_default_ret", &[Obs::Status, Obs::Cmd("mkdir", "$BB mkdir /dev/shm/d")], |s| {
            seccomp(s, json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }]
            }));
        }),
        Case::new("seccomp_kill", &[Obs::Status, Obs::Cmd("dmesg", "$BB dmesg >/dev/null; echo rc=$?")], |s| {
            seccomp(s, json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["syslog"], "action": "SCMP_ACT_KILL" }]
            }));
        }),
        Case::new("seccomp_kill_process", &[Obs::Cmd("sethostname", "$BB hostname x; echo rc=$?")], |s| {
            seccomp(s, json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["sethostname"], "action": "SCMP_ACT_KILL_PROCESS" }]
            }));
        }),
        Case::new(
            "seccomp_arg_eq",
            &[Obs::Cmd("chmod", "$BB touch /dev/shm/f; $BB chmod 777 /dev/shm/f; echo rc777=$?; $BB chmod 755 /dev/shm/f; echo rc755=$?")],
            |s| {
                seccomp(s, json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [
                        { "names": ["chmod"], "action": "SCMP_ACT_ERRNO",
                          "args": [{ "index": 1, "value": 0o777, "op": "SCMP_CMP_EQ" }] },
                        { "names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
                          "args": [{ "index": 2, "value": 0o777, "op": "SCMP_CMP_EQ" }] }
                    ]
                }));
            },
        ),
        Case::new(
            "seccomp_arg_masked_eq",
            &[Obs::Cmd("personality", "$BB linux32 $BB true; echo rc32=$?; $BB linux64 $BB true; echo rc64=$?")],
            |s| {
                seccomp(s, json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{ "names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                                   "args": [{ "index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ" }] }]
                }));
            },
        ),
        Case::new("seccomp_without_nnp", &[Obs::Status, Obs::Cmd("mkdir", "$BB mkdir /dev/shm/d")], |s| {
            s["process"]["noNewPrivileges"] = json!(false);
            seccomp(s, json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }]
            }));
        }),
        Case::new("seccomp_unknown_syscall", &[Obs::Status], |s| {
            seccomp(s, json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["not_a_real_syscall", "mkdirat"], "action": "SCMP_ACT_ERRNO" }]
            }));
        }),
        Case::new("seccomp_log_action", &[Obs::Status], |s| {
            seccomp(s, json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_LOG" }]
            }));
        }),
        // ---- hooks
        Case::new("hooks_all", &[Obs::File("/dev/shm/hook.log")], |s| {
            s["hooks"] = json!({
                "prestart": [host_hook("prestart")],
                "createRuntime": [host_hook("createRuntime")],
                "createContainer": [host_hook("createContainer")],
                "startContainer": [{
                    "path": "{{BB}}",
                    "args": ["sh", "-c", "echo \"startContainer $0 $(pwd)\" >> /dev/shm/hook.log", "sc-arg0"]
                }],
                "poststart": [host_hook("poststart")],
                "poststop": [host_hook("poststop")]
            });
            s["annotations"] = json!({ "org.example.hooks": "yes" });
        }),
        Case::new("hooks_prestart_fails", &[Obs::Status], |s| {
            s["hooks"] = json!({
                "prestart": [{ "path": "/bin/sh", "args": ["sh", "-c", "exit 3"] }],
                "poststop": [host_hook("poststop")]
            });
        })
        .fail(),
        // runc 1.1 runs poststart hooks at `create` (right after the init
        // started, while it waits on the exec fifo), so `create` fails.
        Case::new("hooks_poststart_fails", &[Obs::Status], |s| {
            s["hooks"] = json!({
                "poststart": [{ "path": "/bin/sh", "args": ["sh", "-c", "exit 5"] }],
                "poststop": [host_hook("poststop")]
            });
        })
        .fail(),
        Case::new("hooks_create_runtime_fails", &[Obs::Status], |s| {
            s["hooks"] = json!({
                "createRuntime": [{ "path": "/bin/sh", "args": ["sh", "-c", "exit 4"] }]
            });
        })
        .fail(),
        // ---- cgroup resources (host reads the files while the container lives)
        Case::new("cgroup_memory", &[Obs::ProcCgroup], |s| {
            s["linux"]["resources"]["memory"] = json!({
                "limit": 67108864, "reservation": 33554432, "swap": 134217728,
                "swappiness": 10, "disableOOMKiller": true
            });
        })
        .cgroup(&[
            "memory/memory.limit_in_bytes",
            "memory/memory.soft_limit_in_bytes",
            "memory/memory.memsw.limit_in_bytes",
            "memory/memory.swappiness",
            "memory/memory.oom_control",
        ])
        .cgroup_v2(&["memory.max", "memory.low", "memory.swap.max"]),
        Case::new("cgroup_cpu", &[Obs::Cmd("nproc", "$BB nproc")], |s| {
            s["linux"]["resources"]["cpu"] = json!({
                "shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"
            });
        })
        .cgroup(&["cpu/cpu.shares", "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us", "cpuset/cpuset.cpus", "cpuset/cpuset.mems"])
        .cgroup_v2(&["cpu.weight", "cpu.max", "cpuset.cpus", "cpuset.mems"]),
        Case::new("cgroup_pids", &[Obs::ProcCgroup], |s| {
            s["linux"]["resources"]["pids"] = json!({ "limit": 42 });
        })
        .cgroup(&["pids/pids.max"])
        .cgroup_v2(&["pids.max"]),
        Case::new("cgroup_blkio_throttle", &[Obs::ProcCgroup], |s| {
            let (major, minor) = root_dev();
            s["linux"]["resources"]["blockIO"] = json!({
                "throttleReadBpsDevice": [{ "major": major, "minor": minor, "rate": 1048576 }],
                "throttleWriteIOPSDevice": [{ "major": major, "minor": minor, "rate": 100 }]
            });
        })
        .cgroup(&["blkio/blkio.throttle.read_bps_device", "blkio/blkio.throttle.write_iops_device"])
        .cgroup_v2(&["io.max"]),
        // ---- state
        Case::new("annotations", &[Obs::Status], |s| {
            s["annotations"] = json!({ "org.example.key": "value", "org.example.empty": "" });
        }),
    ]
}

// ------------------------------------------------------------------ tests

#[test]
fn case_list_is_sane() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "duplicate case name {}", c.name);
        assert!(
            c.name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
            "bad case name {}",
            c.name
        );
        assert!(
            !c.script.is_empty() || c.expect_fail,
            "case {} observes nothing",
            c.name
        );
    }
}

#[test]
fn runc_vs_runtime_under_test() {
    if !integration_tests::runtime::is_root() {
        eprintln!("differential: skipped (needs root)");
        return;
    }
    let reference = diff::Runtime::reference();
    let test = diff::Runtime::under_test();
    if let Err(e) = reference.check_available() {
        panic!("reference runtime unavailable: {e}");
    }
    if let Err(e) = test.check_available() {
        panic!("runtime under test unavailable: {e}");
    }
    let report = diff::run_suite(&cases(), &reference, &test);
    println!(
        "differential: {} cases in {:.1}s",
        report.outcomes.len(),
        report.seconds
    );
    if report.all_passed() {
        println!("{}", report.text);
    } else {
        panic!("{}", report.text);
    }
}
