//! [`Manager::oom_events`]: one event per OOM kill in the container's memory cgroup, ending
//! when the cgroup is removed.
//!
//! Both versions work the same way: a file descriptor wakes us up, then the kernel's kill
//! counter is re-read and every increase becomes events. The counter, not the wake-up, is what
//! counts, because wake-ups are coalesced (v2) or come per OOM *situation* rather than per kill
//! (v1):
//! * v1: an eventfd registered through `cgroup.event_control` for `memory.oom_control`; the
//!   counter is `oom_kill` in memory.oom_control (Linux 4.13+). The kernel signals the eventfd
//!   before it picks a victim, so a wake-up without a new kill keeps the watcher looking for a
//!   short grace period; if the cgroup is then stuck in OOM (`under_oom 1`, OOM killer
//!   disabled) one event with `killed: false` is reported for that episode. On removal the
//!   kernel signals the eventfd one last time.
//! * v2: inotify on `memory.events` (the kernel reports each counter change as a modification)
//!   and on the parent directory, whose IN_DELETE names our directory when it is removed
//!   (cgroupfs sends no IN_DELETE_SELF/IN_IGNORED for the directory or its files: kernfs keeps
//!   their inodes linked; seen on 6.x). The counter is `oom_kill` of memory.events
//!   (hierarchical: kills in sub-cgroups count), or `oom` on kernels without it.
//!
//! Kills that happened before the watcher was created are not reported. Kills whose wake-up
//! is still unread when the cgroup is removed are lost with the counter file, so read the
//! events before deleting the cgroup.

use crate::error::{Error, Result};
use crate::stats::{from_pairs, keyed_pairs};
use crate::{CgroupMode, Manager};
use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FIELD: &str = "oom events";
/// v1: how long after a notification a kill may still show up in `oom_kill`.
const GRACE: Duration = Duration::from_secs(1);
/// v1: how often the counter is re-read during the grace period.
const RECHECK: Duration = Duration::from_millis(10);

/// One OOM event of the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomEvent {
    /// True: the kernel killed a process (the `oom_kill` counter rose). False: an OOM without a
    /// counted kill (v1 stuck with `oom_kill_disable`, or a kernel without `oom_kill`).
    pub killed: bool,
    /// The kill counter after this event (`oom_kill`), so consecutive kills read 1, 2, 3 in a
    /// fresh cgroup; unchanged for a v1 OOM without a kill. On kernels without `oom_kill`: the
    /// `oom` counter (v2) or the number of notifications so far (v1).
    pub count: u64,
}

/// What [`OomWatcher::try_next`] found without blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomPoll {
    Event(OomEvent),
    /// Nothing now: wait for the fd to become readable (or [`OomWatcher::retry_after`]).
    Pending,
    /// The cgroup is gone; no event will come.
    Ended,
}

/// A stream of [`OomEvent`]s: iterate it (blocking), or poll [`AsRawFd::as_raw_fd`] for
/// readability and call [`OomWatcher::try_next`] from an event loop.
#[derive(Debug)]
pub struct OomWatcher {
    /// eventfd (v1) or inotify (v2), non-blocking.
    fd: OwnedFd,
    v2: bool,
    dir: PathBuf,
    /// memory.oom_control (v1) or memory.events (v2).
    counter_file: PathBuf,
    /// "oom_kill", or "oom" / None (count notifications) on old kernels.
    key: Option<&'static str>,
    last: u64,
    /// v2: the parent directory's watch, whose IN_DELETE of `name` says "removed".
    parent_wd: i32,
    name: OsString,
    queued: VecDeque<OomEvent>,
    /// v1: a notification not yet matched by a kill.
    pending: Option<Instant>,
    /// v1: a `killed: false` event was reported for the current under_oom episode.
    reported_stuck: bool,
    ended: bool,
}

impl Manager {
    /// Starts watching the container's memory cgroup for OOM kills (how: [`crate::oom`]). The
    /// cgroup must exist and have the memory controller.
    pub fn oom_events(&self) -> Result<OomWatcher> {
        if let (CgroupMode::Legacy | CgroupMode::Hybrid, Some(d)) =
            (self.mode, self.v1.get("memory"))
        {
            return OomWatcher::v1(&d.path);
        }
        match (&self.unified, self.mode) {
            (Some(u), CgroupMode::Unified) if u.path.join("memory.events").exists() => {
                OomWatcher::v2(&u.path)
            }
            _ => Err(Error::unsupported(
                FIELD,
                "the container has no memory cgroup (v1 memory hierarchy or cgroup2 memory.events)",
            )),
        }
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn owned(fd: RawFd, call: &str) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(Error::syscall(FIELD, call));
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl OomWatcher {
    fn v1(dir: &Path) -> Result<OomWatcher> {
        let counter_file = dir.join("memory.oom_control");
        // SAFETY: plain syscalls on values we own.
        let efd = owned(
            unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) },
            "eventfd",
        )?;
        let cfd = std::fs::File::open(&counter_file).map_err(|source| Error::Read {
            field: FIELD.into(),
            path: counter_file.clone(),
            source,
        })?;
        // The kernel takes its own references: cfd may close after registering.
        let line = format!("{} {}", efd.as_raw_fd(), cfd.as_raw_fd());
        crate::fs::write(FIELD, &dir.join("cgroup.event_control"), &line)?;
        let mut w = OomWatcher::new(efd, false, dir, counter_file);
        let content = w.read_counter_file()?.unwrap_or_default();
        w.key = content
            .lines()
            .any(|l| l.starts_with("oom_kill "))
            .then_some("oom_kill");
        w.last = w.counter(&content)?.0;
        Ok(w)
    }

    fn v2(dir: &Path) -> Result<OomWatcher> {
        let counter_file = dir.join("memory.events");
        // SAFETY: plain syscall.
        let ifd = owned(
            unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) },
            "inotify_init1",
        )?;
        let watch = |p: &Path, mask: u32| -> Result<i32> {
            // SAFETY: valid fd and NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(ifd.as_raw_fd(), cpath(p).as_ptr(), mask) };
            if wd < 0 {
                return Err(Error::syscall(
                    FIELD,
                    format!("inotify_add_watch {}", p.display()),
                ));
            }
            Ok(wd)
        };
        watch(&counter_file, libc::IN_MODIFY)?;
        let parent = dir.parent().unwrap_or(Path::new("/"));
        let parent_wd = watch(parent, libc::IN_DELETE | libc::IN_ONLYDIR)?;
        let mut w = OomWatcher::new(ifd, true, dir, counter_file);
        w.parent_wd = parent_wd;
        let content = w.read_counter_file()?.unwrap_or_default();
        let has = |k: &str| content.lines().any(|l| l.starts_with(&format!("{k} ")));
        w.key = Some(if has("oom_kill") { "oom_kill" } else { "oom" });
        w.last = w.counter(&content)?.0;
        Ok(w)
    }

    fn new(fd: OwnedFd, v2: bool, dir: &Path, counter_file: PathBuf) -> OomWatcher {
        OomWatcher {
            fd,
            v2,
            dir: dir.to_path_buf(),
            counter_file,
            key: None,
            last: 0,
            parent_wd: -1,
            name: dir.file_name().unwrap_or_default().to_os_string(),
            queued: VecDeque::new(),
            pending: None,
            reported_stuck: false,
            ended: false,
        }
    }

    /// The next event without blocking. After [`OomPoll::Pending`], wait until the fd is
    /// readable or [`OomWatcher::retry_after`] has passed.
    pub fn try_next(&mut self) -> Result<OomPoll> {
        if self.queued.is_empty() && !self.ended {
            if let Err(e) = self.update() {
                self.ended = true;
                return Err(e);
            }
        }
        Ok(match self.queued.pop_front() {
            Some(e) => OomPoll::Event(e),
            None if self.ended => OomPoll::Ended,
            None => OomPoll::Pending,
        })
    }

    /// Some(d): call [`OomWatcher::try_next`] again after `d` even if the fd stays quiet (v1
    /// is waiting for a notified OOM's kill to be counted).
    pub fn retry_after(&self) -> Option<Duration> {
        self.pending.map(|_| RECHECK)
    }

    /// Drains the fd, re-reads the counter, queues events, notices the end.
    fn update(&mut self) -> Result<()> {
        let (notifications, removed) = self.drain()?;
        let content = self.read_counter_file()?;
        if let Some(content) = &content {
            let (now, stuck) = self.counter(content)?;
            match self.key {
                None => {
                    // Old v1 kernel: every notification is an event.
                    for _ in 0..notifications {
                        self.last += 1;
                        self.queue(false, self.last);
                    }
                }
                Some(key) => {
                    let killed = key == "oom_kill";
                    for n in self.last + 1..=now {
                        self.queue(killed, n);
                    }
                    if now > self.last {
                        self.pending = None;
                    } else if notifications > 0 && !self.v2 && self.pending.is_none() {
                        log::debug!("{FIELD}: notified, waiting for the kill to be counted");
                        self.pending = Some(Instant::now());
                    }
                    self.last = self.last.max(now);
                }
            }
            if !stuck {
                self.reported_stuck = false;
            }
            if let Some(since) = self.pending.filter(|t| t.elapsed() >= GRACE) {
                log::debug!(
                    "{FIELD}: notified {:?} ago, no kill counted",
                    since.elapsed()
                );
                self.pending = None;
                if stuck && !self.reported_stuck {
                    self.reported_stuck = true;
                    self.queue(false, self.last);
                }
            }
        }
        if content.is_none() || removed || !self.dir.is_dir() {
            log::debug!(
                "{FIELD}: {} was removed (counter file gone: {}, inotify said so: {removed})",
                self.dir.display(),
                content.is_none()
            );
            self.ended = true;
            self.pending = None;
        }
        Ok(())
    }

    fn queue(&mut self, killed: bool, count: u64) {
        log::debug!(
            "{FIELD}: {} killed={killed} count={count}",
            self.dir.display()
        );
        self.queued.push_back(OomEvent { killed, count });
    }

    /// (the counter, under_oom) from the counter file's content.
    fn counter(&self, content: &str) -> Result<(u64, bool)> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct C {
            oom_kill: u64,
            oom: u64,
            under_oom: u64,
        }
        let c: C = from_pairs(&self.counter_file, keyed_pairs(&self.counter_file, content))?;
        let n = match self.key {
            Some("oom") => c.oom,
            _ => c.oom_kill,
        };
        Ok((n, c.under_oom == 1))
    }

    /// `None` once the cgroup is gone (ENOENT, or ENODEV from a removed kernfs node).
    fn read_counter_file(&self) -> Result<Option<String>> {
        match std::fs::read_to_string(&self.counter_file) {
            Ok(c) => Ok(Some(c)),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(source) => Err(Error::Read {
                field: FIELD.into(),
                path: self.counter_file.clone(),
                source,
            }),
        }
    }

    /// Reads everything the fd has: (v1 notification count, v2 "the cgroup was removed").
    fn drain(&mut self) -> Result<(u64, bool)> {
        let mut buf = [0u8; 4096];
        let (mut notifications, mut removed) = (0u64, false);
        loop {
            // SAFETY: reading into a buffer we own, of its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok((notifications, removed)),
                    Some(libc::EINTR) => continue,
                    _ => {
                        return Err(Error::Syscall {
                            field: FIELD.into(),
                            call: format!("read of the notification fd for {}", self.dir.display()),
                            source: e,
                        })
                    }
                }
            }
            let n = n as usize;
            if !self.v2 {
                // eventfd: an 8-byte counter of signals since the last read.
                if n == 8 {
                    notifications += u64::from_ne_bytes(buf[..8].try_into().unwrap_or_default());
                }
                continue;
            }
            // inotify: struct inotify_event { i32 wd; u32 mask; u32 cookie; u32 len; name[len] }
            let mut off = 0;
            while off + 16 <= n {
                let word =
                    |i: usize| u32::from_ne_bytes(buf[off + i..off + i + 4].try_into().unwrap());
                let (wd, mask, len) = (word(0) as i32, word(4), word(12) as usize);
                let name = &buf[(off + 16).min(n)..(off + 16 + len).min(n)];
                let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
                if wd == self.parent_wd && mask & libc::IN_DELETE != 0 {
                    removed |= name == self.name.as_bytes();
                }
                off += 16 + len;
            }
        }
    }
}

impl AsRawFd for OomWatcher {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Iterator for OomWatcher {
    type Item = Result<OomEvent>;

    /// Blocks until the next event; `None` once the cgroup is removed (or after an error).
    fn next(&mut self) -> Option<Result<OomEvent>> {
        loop {
            match self.try_next() {
                Ok(OomPoll::Event(e)) => return Some(Ok(e)),
                Ok(OomPoll::Ended) => return None,
                Err(e) => return Some(Err(e)),
                Ok(OomPoll::Pending) => {}
            }
            let timeout = self.retry_after().map_or(-1, |d| d.as_millis() as i32);
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own. EINTR just loops.
            unsafe { libc::poll(&mut pfd, 1, timeout) };
        }
    }
}
