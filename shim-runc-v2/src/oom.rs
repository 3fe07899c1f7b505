//! OOM events: one thread polls the `cgroups` crate's OOM watchers of every
//! container this shim holds (an eventfd on v1, inotify on v2) and reports
//! each OOM through a callback (which publishes `/tasks/oom`).
//!
//! One thread for all containers rather than one each: a grouped shim may
//! hold a pod's worth of containers, and every thread costs its stack. The
//! thread starts with the first container, and a watcher leaves when its
//! cgroup is removed or its container is deleted. [`OomMonitor::flush`]
//! reads one watcher on the caller's thread (no hop to this one, whose
//! wake-up can wait for a busy CPU).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use cgroups::{OomPoll, OomWatcher};

use crate::error::{io_ctx, Error, Result};

type Report = Box<dyn Fn(&str) + Send + Sync + 'static>;

/// The watchers by container id, and what reports their events: shared by
/// the thread and [`OomMonitor::flush`], which reads one on its caller's
/// thread.
struct Shared {
    watchers: Mutex<HashMap<String, OomWatcher>>,
    report: Report,
}

impl Shared {
    fn watchers(&self) -> MutexGuard<'_, HashMap<String, OomWatcher>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the watching thread.
pub struct OomMonitor {
    shared: Arc<Shared>,
    /// The thread's wake-up pipe, once started.
    wake: Mutex<Option<File>>,
}

impl OomMonitor {
    pub fn new(report: Report) -> OomMonitor {
        OomMonitor {
            shared: Arc::new(Shared {
                watchers: Mutex::new(HashMap::new()),
                report,
            }),
            wake: Mutex::new(None),
        }
    }

    /// Watch container `id`'s memory cgroup.
    pub fn add(&self, id: &str, w: OomWatcher) -> Result<()> {
        self.shared.watchers().insert(id.to_owned(), w);
        self.wake_thread()
    }

    /// Stop watching container `id` (deleted).
    pub fn remove(&self, id: &str) {
        if self.shared.watchers().remove(id).is_some() {
            // It polls the closed fd until it looks again.
            let _ = self.wake_thread();
        }
    }

    /// Report what container `id`'s watcher holds now, on this thread:
    /// before its cgroup goes, with an OOM in it that the kernel counted
    /// and the monitor thread has not read yet.
    pub fn flush(&self, id: &str) {
        let mut watchers = self.shared.watchers();
        if let Some(w) = watchers.get_mut(id) {
            // Ended or not, the thread drops it (and its fd) on its next look.
            drain(id, w, &self.shared.report);
        }
    }

    /// Have the thread look at the watchers again (starting it first).
    fn wake_thread(&self) -> Result<()> {
        let mut wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if wake.is_none() {
            let (r, w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                    .map_err(|e| Error::sys("pipe2", e))?;
            let shared = Arc::clone(&self.shared);
            std::thread::Builder::new()
                .name("oom".into())
                .stack_size(128 * 1024)
                .spawn(move || run(&shared, File::from(r)))
                .map_err(io_ctx("spawn oom monitor"))?;
            *wake = Some(File::from(w));
        }
        // A full pipe already means "wake up".
        let _ = wake.as_mut().expect("started").write(&[1]);
        Ok(())
    }
}

fn run(shared: &Shared, mut wake: File) {
    loop {
        // The fds are polled without the lock: one removed meanwhile is
        // closed (POLLNVAL, or a reused number: a spurious look), and its
        // removal wakes this thread to poll without it.
        let (ids, fds, timeout): (Vec<String>, Vec<RawFd>, i32) = {
            let watchers = shared.watchers();
            let timeout = watchers
                .values()
                .filter_map(OomWatcher::retry_after)
                .min()
                .map(|d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX))
                .unwrap_or(-1);
            let (ids, fds) = watchers
                .iter()
                .map(|(id, w)| (id.clone(), w.as_raw_fd()))
                .unzip();
            (ids, fds, timeout)
        };
        let mut pfds: Vec<libc::pollfd> = std::iter::once(wake.as_raw_fd())
            .chain(fds)
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("oom monitor: poll: {e}; OOM events stop");
            return;
        }
        if pfds[0].revents != 0 {
            let mut buf = [0u8; 64];
            while matches!(wake.read(&mut buf), Ok(n) if n > 0) {}
        }
        let mut watchers = shared.watchers();
        for (i, id) in ids.iter().enumerate() {
            let Some(w) = watchers.get_mut(id) else {
                continue;
            };
            if pfds[i + 1].revents == 0 && w.retry_after().is_none() {
                continue;
            }
            if !drain(id, w, &shared.report) {
                watchers.remove(id);
            }
        }
    }
}

/// Report every queued event of `w`; false when the watcher ended.
fn drain(id: &str, w: &mut OomWatcher, report: &Report) -> bool {
    loop {
        match w.try_next() {
            Ok(OomPoll::Event(e)) => {
                log::info!(
                    "{id}: out of memory (killed: {}, count {})",
                    e.killed,
                    e.count
                );
                report(id);
            }
            Ok(OomPoll::Pending) => return true,
            Ok(OomPoll::Ended) => return false,
            Err(e) => {
                log::warn!("{id}: oom watcher: {e}");
                return false;
            }
        }
    }
}
