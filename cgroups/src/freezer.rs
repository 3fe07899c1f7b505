//! Freeze/thaw (v1 `freezer.state`, cgroup2 `cgroup.freeze`) and kill-all.
//!
//! On hybrid hosts the v1 freezer is used when it is mounted; without it the cgroup2
//! directory's core `cgroup.freeze` works too (the manager puts processes in both).

use crate::error::{Error, Result};
use crate::fs;
use crate::{CgroupMode, FreezerState, Manager};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

const FIELD: &str = "freezer";
/// Generous: the cgroup2 test VM runs under software emulation.
const TIMEOUT: Duration = Duration::from_secs(10);

enum Freezer {
    V1(PathBuf),
    V2(PathBuf),
}

impl Manager {
    fn freezer(&self) -> Result<Freezer> {
        if let Some(d) = self.v1.get("freezer") {
            return Ok(Freezer::V1(d.path.clone()));
        }
        match (&self.unified, self.mode) {
            (Some(u), CgroupMode::Unified | CgroupMode::Hybrid) => Ok(Freezer::V2(u.path.clone())),
            _ => Err(Error::unsupported(
                FIELD,
                "no v1 freezer hierarchy is mounted and there is no cgroup2 directory",
            )),
        }
    }

    /// Freezes every process of the container and waits until the kernel reports FROZEN.
    /// If that does not happen in time the cgroup is thawed again and an error returned.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Thaws the container and waits until it is reported thawed.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let wanted = if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        };
        let (file, value, v2_dir) = match (self.freezer()?, frozen) {
            (Freezer::V1(d), true) => (d.join("freezer.state"), "FROZEN", None),
            (Freezer::V1(d), false) => (d.join("freezer.state"), "THAWED", None),
            (Freezer::V2(d), true) => (d.join("cgroup.freeze"), "1", Some(d)),
            (Freezer::V2(d), false) => (d.join("cgroup.freeze"), "0", Some(d)),
        };
        // v2: done when cgroup.events says so (cgroup.freeze only echoes the request).
        let reached = || -> Result<bool> {
            match &v2_dir {
                Some(d) => {
                    let events = d.join("cgroup.events");
                    let content = fs::read(FIELD, &events)?;
                    Ok(fs::keyed_value(&content, "frozen").as_deref()
                        == Some(if frozen { "1" } else { "0" }))
                }
                None => Ok(self.freezer_state()? == wanted),
            }
        };
        let start = Instant::now();
        let mut delay = Duration::from_micros(100);
        for attempt in 0u32.. {
            // v1 can stay FREEZING when tasks fork during the freeze: ask again now and then.
            if attempt % 16 == 0 {
                fs::write(FIELD, &file, value)?;
            }
            if reached()? {
                return Ok(());
            }
            if start.elapsed() > TIMEOUT {
                if frozen {
                    let undo = if value == "1" { "0" } else { "THAWED" };
                    if let Err(e) = fs::write(FIELD, &file, undo) {
                        log::warn!("could not thaw after a failed freeze: {e}");
                    }
                }
                return Err(Error::Timeout {
                    field: FIELD.into(),
                    path: file,
                    wanted: format!("{wanted:?}"),
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(20));
        }
        unreachable!()
    }

    pub fn freezer_state(&self) -> Result<FreezerState> {
        match self.freezer()? {
            Freezer::V1(d) => {
                let path = d.join("freezer.state");
                match fs::read(FIELD, &path)?.as_str() {
                    "THAWED" => Ok(FreezerState::Thawed),
                    "FREEZING" => Ok(FreezerState::Freezing),
                    "FROZEN" => Ok(FreezerState::Frozen),
                    other => Err(Error::Parse {
                        field: FIELD.into(),
                        path,
                        content: other.into(),
                    }),
                }
            }
            Freezer::V2(d) => v2_state(&d),
        }
    }

    /// Sends `signal` to every process of the container. SIGKILL with a cgroup2 `cgroup.kill`
    /// available uses it (atomic, no race with forks). Otherwise: freeze, signal every pid,
    /// thaw (a container that was already frozen stays frozen unless the signal is SIGKILL,
    /// which needs the thaw to take effect). The caller's own pid is never signalled.
    pub fn kill_all(&self, signal: i32) -> Result<()> {
        let sig = Signal::try_from(signal)
            .map_err(|e| Error::invalid("signal", signal, e.to_string()))?;
        if sig == Signal::SIGKILL {
            if let Some(u) = &self.unified {
                let file = u.path.join("cgroup.kill");
                if file.exists() {
                    fs::write("cgroup.kill", &file, "1")?;
                    if self.mode == CgroupMode::Unified {
                        return Ok(());
                    }
                    // Hybrid: a process joined to the v1 hierarchies only is not in the
                    // cgroup2 directory; the walk below catches it.
                }
            }
        }
        let was_frozen = self.freezer_state().ok() == Some(FreezerState::Frozen);
        let froze = match self.freeze() {
            Ok(()) => true,
            Err(e) => {
                log::warn!("kill_all: signalling without freezing: {e}");
                false
            }
        };
        let result = self.signal_each(sig);
        if froze && (!was_frozen || sig == Signal::SIGKILL) {
            let thawed = self.thaw();
            result?;
            return thawed;
        }
        result
    }

    fn signal_each(&self, sig: Signal) -> Result<()> {
        let me = std::process::id() as i32;
        for pid in self.pids()? {
            if pid == me {
                log::warn!("kill_all: not signalling the calling process {pid}");
                continue;
            }
            match kill(Pid::from_raw(pid), sig) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(source) => {
                    return Err(Error::Signal {
                        pid,
                        signal: sig as i32,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

fn v2_state(dir: &Path) -> Result<FreezerState> {
    if fs::read(FIELD, &dir.join("cgroup.freeze"))? == "0" {
        return Ok(FreezerState::Thawed);
    }
    let events = dir.join("cgroup.events");
    let content = fs::read(FIELD, &events)?;
    match fs::keyed_value(&content, "frozen").as_deref() {
        Some("1") => Ok(FreezerState::Frozen),
        Some("0") => Ok(FreezerState::Freezing),
        _ => Err(Error::Parse {
            field: FIELD.into(),
            path: events,
            content,
        }),
    }
}
