//! Running a test binary again inside the throwaway cgroup v2 VM
//! (`../shared/cgroup2-vm`) for what this host's kernel cannot do: Debian's
//! criu 3.17 cannot dump on it (`criu check` fails) but works in the guest,
//! and the host's cgroups are hybrid where the guest's are pure v2.
//!
//! The guest sees the host's `/` read-only and the target dir read-write at
//! the same path, so the same test executable (and the binaries beside it)
//! run there. Its `/tmp` is a shared folder where mkfifo fails: state and
//! temp dirs go to the guest's `/run` (`TESTDATA_TMPDIR`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::runtime::runc_rs_bin;

/// Set in the guest's environment: the test is already where criu works.
pub const IN_VM: &str = "RUNC_RS_CRIU_VM";

/// Whether criu can checkpoint on this kernel.
pub fn criu_works() -> bool {
    Command::new("criu")
        .arg("check")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this process runs where criu works (the VM, or a host where
/// `criu check` passes).
pub fn criu_here() -> bool {
    std::env::var_os(IN_VM).is_some() || criu_works()
}

/// The VM runner: `$CGROUP2_VM`, else `<repo>/../shared/cgroup2-vm/run-in-cgroup2-vm.sh`.
pub fn runner() -> PathBuf {
    if let Some(p) = std::env::var_os("CGROUP2_VM") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cgroup2-vm/run-in-cgroup2-vm.sh")
}

/// Run this test executable with `args` where criu works: in place when it
/// works here, else in the VM. Panics unless the run passed.
pub fn run_self_where_criu_works(args: &[&str]) {
    run_self(args, !criu_works(), "criu check fails on this kernel");
}

/// Run this test executable with `args` on a pure cgroup v2 kernel: in
/// place on such a host, else in the VM. Panics unless the run passed.
pub fn run_self_on_cgroup_v2(args: &[&str]) {
    run_self(
        args,
        !crate::hygiene::pure_cgroup_v2_host(),
        "this host is not pure cgroup v2",
    );
}

/// Run this test executable with `args`, in the VM if `in_vm` (saying
/// `why`), marked [`IN_VM`]; panics unless the run passed.
fn run_self(args: &[&str], in_vm: bool, why: &str) {
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/<exe>: the target dir must be shared with the guest.
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    let mut cmd = if in_vm {
        let vm = runner();
        assert!(
            vm.exists(),
            "{why} and the cgroup v2 VM runner {} is missing (set CGROUP2_VM)",
            vm.display()
        );
        eprintln!("{why}: running {args:?} in the cgroup v2 VM");
        let mut c = Command::new(vm);
        // The guest's /tmp is the host's, shared over 9p, where sockets
        // cannot be made (e.g. a shim's console socket): its own /run.
        c.arg("--").arg(&exe).args(args).env("TMPDIR", "/run");
        c
    } else {
        let mut c = Command::new(&exe);
        c.args(args);
        c
    };
    let status = cmd
        .env(IN_VM, "1")
        .env("RUNC_RS_BIN", runc_rs_bin())
        .env("CARGO_TARGET_DIR", &target)
        .env("TESTDATA_TMPDIR", "/run")
        .env(
            "VM_ENV",
            format!("PATH RUST_BACKTRACE {IN_VM} RUNC_RS_BIN TESTDATA_TMPDIR TMPDIR"),
        )
        .env("VM_TIMEOUT", "1200")
        .status()
        .expect("start the test run");
    assert!(
        status.success(),
        "{args:?} failed ({why}: in_vm = {in_vm}) ({status})"
    );
}
