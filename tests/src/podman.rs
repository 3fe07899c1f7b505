//! A podman with storage and state private to one test.
//!
//! Why: the tests must not read or pollute the machine's podman storage
//! (`/var/lib/containers`, `/run/containers`, `/run/libpod`,
//! `/dev/shm/libpod_lock`, `/etc/containers/networks`). Every call gets
//! `--root`, `--runroot` and `--tmpdir` in a temp dir and a
//! `CONTAINERS_CONF` / `CONTAINERS_STORAGE_CONF` written here (file locks,
//! file events log, network config dir, image copy dir all in the temp dir).
//! Podman 4.3 passes its environment and these flags on to conmon and to
//! the `podman container cleanup` conmon runs, so those stay inside too.
//!
//! Host quirks handled here (Debian 12, no systemd as PID 1, cgroup v1):
//! * `--cgroup-manager cgroupfs` and `--events-backend file` (no systemd,
//!   no journald);
//! * `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024` on `run`: podman's
//!   default rlimits are above what the runtime may set here;
//! * `--cgroup-parent` = a [`CgroupParent`] of the test, so the container
//!   and conmon cgroups (`<parent>/libpod-<id>`, `<parent>/conmon`) are
//!   removed after;
//! * `podman load` of an oci-archive extracts it under `/var/tmp` and writes
//!   a blob-info cache to `/var/lib/containers/cache` whatever `--root`
//!   says: [`Podman::load_busybox`] runs it in a private mount namespace
//!   where both are bind mounts of dirs in the temp dir.
//!
//! Not isolated: the OCI runtime's own state dir. Podman passes
//! `--runtime-flag`s to create/start but not to the `runtime delete` its
//! cleanup process runs, so a private `--root` would leave containers
//! undeleted; the runtime keeps its default root (runc: `/run/runc`) and
//! removes its entries itself on delete.
//!
//! [`Drop`] removes the images, waits for (then kills) conmon and cleanup
//! processes, runs `podman system reset -f`, kills what is left in the
//! cgroup parent, unmounts anything left under the temp dir and deletes it.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use crate::containerd::{
    default_timeout, describe, reap_processes_mentioning, run_with_timeout, unmount_under,
    CgroupParent,
};
use crate::containerd_config::toml_string as q;

/// Deadline of the calls made while cleaning up.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// See the module docs.
pub struct Podman {
    runtime: PathBuf,
    cgroups: CgroupParent,
    images: Vec<String>,
    dir: Option<TempDir>,
}

impl Podman {
    /// Prepare a private podman (nothing runs yet) whose containers use
    /// the OCI runtime binary `runtime`.
    pub fn new(runtime: &Path) -> io::Result<Podman> {
        let dir = testdata::temp_dir()?;
        let d = dir.path();
        for sub in [
            "root",
            "runroot",
            "tmp",
            "networks",
            "imgtmp",
            "shadow/cache",
            "shadow/vartmp",
        ] {
            fs::create_dir_all(d.join(sub))?;
        }
        fs::set_permissions(d.join("shadow/vartmp"), fs::Permissions::from_mode(0o1777))?;
        let s = |p: &str| d.join(p).to_string_lossy().into_owned();
        fs::write(
            d.join("containers.conf"),
            format!(
                "[engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 events_logfile_path = {}\n\
                 lock_type = \"file\"\n\
                 tmp_dir = {}\n\
                 image_copy_tmp_dir = {}\n\
                 volume_path = {}\n\
                 static_dir = {}\n\
                 \n[network]\n\
                 network_config_dir = {}\n",
                q(&s("events.log")),
                q(&s("tmp")),
                q(&s("imgtmp")),
                q(&s("root/volumes")),
                q(&s("root/libpod")),
                q(&s("networks")),
            ),
        )?;
        fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = {}\nrunroot = {}\n",
                q(&s("root")),
                q(&s("runroot"))
            ),
        )?;
        fs::write(
            d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )?;
        Ok(Podman {
            runtime: runtime.to_path_buf(),
            cgroups: CgroupParent::new(),
            images: Vec::new(),
            dir: Some(dir),
        })
    }

    /// The harness's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// The cgroup parent of this harness's containers.
    pub fn cgroups(&self) -> &CgroupParent {
        &self.cgroups
    }

    /// The OCI runtime under test.
    pub fn runtime(&self) -> &Path {
        &self.runtime
    }

    /// `podman <isolating global flags> <args>` (not run).
    pub fn command(&self, args: &[&str]) -> Command {
        let d = self.dir();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("TMPDIR", d.join("imgtmp"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args);
        c
    }

    /// Run `podman <args>`, killed after [`default_timeout`].
    pub fn podman(&self, args: &[&str]) -> io::Result<Output> {
        run_with_timeout(&mut self.command(args), default_timeout())
    }

    /// Like [`Podman::podman`] but panics unless podman exits 0; returns stdout.
    pub fn podman_ok(&self, args: &[&str]) -> String {
        let out = self
            .podman(args)
            .unwrap_or_else(|e| panic!("podman {args:?}: {e}"));
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Build the busybox OCI archive (testdata) under a unique name and
    /// `podman load -i` it; returns the reference (removed again on drop).
    pub fn load_busybox(&mut self) -> io::Result<String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let reference = format!(
            "localhost/runc-rs-e2e-{}-{}:latest",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let archive = self.dir().join("busybox.oci.tar");
        testdata::build_image_archive(&archive, &reference)?;
        let mut cmd = self.command(&["load", "-i", &archive.to_string_lossy()]);
        self.shadow_global_dirs(&mut cmd)?;
        let out = run_with_timeout(&mut cmd, default_timeout())?;
        if !out.status.success() {
            return Err(io::Error::other(format!("podman load: {}", describe(&out))));
        }
        self.images.push(reference.clone());
        let listed = self.podman_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        if !listed.lines().any(|l| l.trim() == reference) {
            return Err(io::Error::other(format!(
                "loaded image {reference} not listed by podman images: {listed}\nload said: {}",
                describe(&out)
            )));
        }
        Ok(reference)
    }

    /// Make `cmd` run in a private mount namespace where the global dirs
    /// podman's image copy writes to regardless of `--root`
    /// (`/var/lib/containers/cache`, `/var/tmp`) are our own dirs. Binds
    /// over the deepest existing ancestor, so nothing is created outside.
    fn shadow_global_dirs(&self, cmd: &mut Command) -> io::Result<()> {
        let d = self.dir();
        let mut binds: Vec<(CString, CString)> = Vec::new();
        let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
        let cache_target = [
            "/var/lib/containers/cache",
            "/var/lib/containers",
            "/var/lib",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_dir());
        if let Some(t) = cache_target {
            // The shadow holds what a missing tail would have held.
            let src = match t.to_str() {
                Some("/var/lib/containers/cache") => d.join("shadow/cache"),
                _ => d.join("shadow"),
            };
            binds.push((cstr(&src)?, cstr(t)?));
        }
        if Path::new("/var/tmp").is_dir() {
            binds.push((
                cstr(&d.join("shadow/vartmp"))?,
                cstr(Path::new("/var/tmp"))?,
            ));
        }
        let root = CString::new("/").expect("cstr");
        let none = CString::new("none").expect("cstr");
        // SAFETY: only async-signal-safe syscalls on pre-built C strings.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(
                    none.as_ptr(),
                    root.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                for (src, dst) in &binds {
                    if libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// argv tail of `podman run --rm --network none --cgroup-parent <ours>
    /// --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 <image> <cmd...>`.
    pub fn run_args(&self, image: &str, cmd: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--cgroup-parent",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(self.cgroups.path());
        v.push(image.to_owned());
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    }

    /// `podman run --rm ... <image> <cmd...>` (see [`Podman::run_args`]).
    pub fn run(&self, image: &str, cmd: &[&str]) -> io::Result<Output> {
        let args = self.run_args(image, cmd);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.podman(&refs)
    }

    fn shutdown(&mut self) {
        let Some(dir) = self.dir.as_ref().map(|d| d.path().to_path_buf()) else {
            return;
        };
        for image in std::mem::take(&mut self.images) {
            match run_with_timeout(
                &mut self.command(&["rmi", "--force", &image]),
                CLEANUP_TIMEOUT,
            ) {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!("cleanup: podman rmi {image}: {}", describe(&o)),
                Err(e) => eprintln!("cleanup: podman rmi {image}: {e}"),
            }
        }
        // conmon and the `podman container cleanup` it spawns name our dir.
        reap_processes_mentioning(&dir, Duration::from_secs(10));
        match run_with_timeout(
            &mut self.command(&["system", "reset", "--force"]),
            CLEANUP_TIMEOUT,
        ) {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("cleanup: podman system reset: {}", describe(&o)),
            Err(e) => eprintln!("cleanup: podman system reset: {e}"),
        }
        reap_processes_mentioning(&dir, Duration::from_secs(2));
        self.cgroups.cleanup();
        unmount_under(&dir);
        if let Some(d) = self.dir.take() {
            if let Err(e) = fs::remove_dir_all(d.path()) {
                eprintln!("cleanup: removing {}: {e}", d.path().display());
            }
            let _ = d.close();
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.shutdown();
    }
}
