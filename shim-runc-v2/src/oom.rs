//! OOM events: one thread polls the `cgroups` crate's OOM watchers of every
//! container this shim holds (an eventfd on v1, inotify on v2) and reports
//! each OOM through a callback (which publishes `/tasks/oom`).
//!
//! One thread for all containers rather than one each: a grouped shim may
//! hold a pod's worth of containers, and every thread costs its stack. The
//! thread starts with the first container, and a watcher leaves when its
//! cgroup is removed or its container is deleted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use cgroups::{OomPoll, OomWatcher};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{io_ctx, Error, Result};

enum Cmd {
    Add(String, OomWatcher),
    Remove(String),
}

type Report = Box<dyn Fn(&str) + Send + 'static>;

/// Handle to the watching thread.
pub struct OomMonitor {
    /// The thread's inbox and wake-up pipe, once started.
    inner: Mutex<Option<(Sender<Cmd>, File)>>,
    /// The callback, until the thread takes it.
    report: Mutex<Option<Report>>,
}

impl OomMonitor {
    pub fn new(report: Report) -> OomMonitor {
        OomMonitor {
            inner: Mutex::new(None),
            report: Mutex::new(Some(report)),
        }
    }

    /// Watch container `id`'s memory cgroup.
    pub fn add(&self, id: &str, w: OomWatcher) -> Result<()> {
        self.send(Cmd::Add(id.to_owned(), w))
    }

    /// Stop watching container `id` (deleted).
    pub fn remove(&self, id: &str) {
        let running = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if running {
            let _ = self.send(Cmd::Remove(id.to_owned()));
        }
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.is_none() {
            let report = self
                .report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .ok_or_else(|| Error::Other("oom monitor thread is gone".into()))?;
            let (r, w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                    .map_err(|e| Error::sys("pipe2", e))?;
            let (tx, rx) = channel();
            std::thread::Builder::new()
                .name("oom".into())
                .stack_size(128 * 1024)
                .spawn(move || run(rx, File::from(r), report))
                .map_err(io_ctx("spawn oom monitor"))?;
            *inner = Some((tx, File::from(w)));
        }
        let (tx, wake) = inner.as_mut().expect("started");
        tx.send(cmd)
            .map_err(|_| Error::Other("oom monitor thread is gone".into()))?;
        // A full pipe already means "wake up".
        let _ = wake.write(&[1]);
        Ok(())
    }
}

fn run(rx: Receiver<Cmd>, mut wake: File, report: Report) {
    let mut watchers: HashMap<String, OomWatcher> = HashMap::new();
    loop {
        let ids: Vec<String> = watchers.keys().cloned().collect();
        let timeout = watchers
            .values()
            .filter_map(OomWatcher::retry_after)
            .min()
            .map(|d| PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX))
            .unwrap_or(PollTimeout::NONE);
        let ready: Vec<bool> = {
            // SAFETY: the watchers outlive this block; no watcher is dropped
            // while the borrowed fds are in use.
            let mut fds: Vec<PollFd> = std::iter::once(wake.as_fd())
                .chain(
                    ids.iter()
                        .map(|id| unsafe { BorrowedFd::borrow_raw(watchers[id].as_raw_fd()) }),
                )
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(_) => fds
                    .iter()
                    .map(|f| !f.revents().unwrap_or(PollFlags::empty()).is_empty())
                    .collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("oom monitor: poll: {e}; OOM events stop");
                    return;
                }
            }
        };
        if ready[0] {
            let mut buf = [0u8; 64];
            while matches!(wake.read(&mut buf), Ok(n) if n > 0) {}
            loop {
                match rx.try_recv() {
                    Ok(Cmd::Add(id, w)) => {
                        watchers.insert(id, w);
                    }
                    Ok(Cmd::Remove(id)) => {
                        watchers.remove(&id);
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    // The task manager is gone: so is the shim.
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let Some(w) = watchers.get_mut(id) else {
                continue;
            };
            if !ready[i + 1] && w.retry_after().is_none() {
                continue;
            }
            if !drain(id, w, &report) {
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
