//! One process of a container (its init, or an exec) and its explicit state
//! machine: created → running ⇄ paused → stopped → deleted.
//!
//! Operations that call the runtime mark the process busy (starting,
//! pausing, resuming, deleting) under the lock, release it for the runtime
//! call, and commit the new state after. An exit that arrives while the
//! process is starting is held back and handed to the starter, so that
//! TaskExit is never published before TaskStart.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::reaper;
use crate::stdio::{ProcessIo, StdioConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
    Deleted,
}

/// A transition in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Starting,
    Pausing,
    Resuming,
    Deleting,
    Checkpointing,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
            Status::Deleted => "deleted",
        }
    }

    pub fn alive(self) -> bool {
        matches!(self, Status::Created | Status::Running | Status::Paused)
    }
}

/// The mutable part of a process.
pub struct State {
    pub status: Status,
    pub busy: Option<Op>,
    pub pid: i32,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
    /// An exit that came while starting, for the starter to handle.
    pending_exit: Option<i32>,
    pub io: Option<ProcessIo>,
    /// CloseIO(stdin) came: also for the stdio set up after it (the client
    /// may finish writing while the runtime still creates the process).
    pub stdin_closed: bool,
    /// Exec processes: the OCI process spec (JSON) until started.
    pub spec: Option<serde_json::Value>,
    /// A Wait claimed the exit (see [`crate::reaper::claim_child`]).
    pub exit_claimed: bool,
}

/// A point-in-time copy of the fields the State RPC reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub status: Status,
    pub busy: Option<Op>,
    pub pid: i32,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

pub struct Process {
    /// The container id for an init process, the exec id for an exec.
    pub id: String,
    /// Empty for the init process.
    pub exec_id: String,
    pub stdio: StdioConfig,
    state: Mutex<State>,
    cv: Condvar,
}

impl Process {
    pub fn new(id: &str, exec_id: &str, stdio: StdioConfig) -> Process {
        Process {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            stdio,
            state: Mutex::new(State {
                status: Status::Created,
                busy: None,
                pid: 0,
                exit_status: 0,
                exited_at: None,
                pending_exit: None,
                io: None,
                stdin_closed: false,
                spec: None,
                exit_claimed: false,
            }),
            cv: Condvar::new(),
        }
    }

    pub fn is_init(&self) -> bool {
        self.exec_id.is_empty()
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        let s = self.lock();
        Snapshot {
            status: s.status,
            busy: s.busy,
            pid: s.pid,
            exit_status: s.exit_status,
            exited_at: s.exited_at,
        }
    }

    pub fn pid(&self) -> i32 {
        self.lock().pid
    }

    /// Begin `op` if the current state allows it; returns the state it
    /// started from.
    pub fn begin(&self, op: Op) -> Result<Status> {
        let mut s = self.lock();
        if let Some(b) = s.busy {
            return Err(Error::FailedPrecondition(format!(
                "process {} is busy ({b:?})",
                self.id
            )));
        }
        let st = s.status;
        let allowed = match op {
            Op::Starting => st == Status::Created,
            Op::Pausing => st == Status::Running,
            Op::Resuming => st == Status::Paused,
            Op::Deleting => matches!(st, Status::Created | Status::Stopped),
            Op::Checkpointing => matches!(st, Status::Running | Status::Paused),
        };
        if st == Status::Deleted {
            return Err(Error::NotFound(format!("process {} was deleted", self.id)));
        }
        if !allowed {
            let verb = match op {
                Op::Starting => "start",
                Op::Pausing => "pause",
                Op::Resuming => "resume",
                Op::Deleting => "delete",
                Op::Checkpointing => "checkpoint",
            };
            return Err(Error::FailedPrecondition(format!(
                "cannot {verb} a {} process",
                st.name()
            )));
        }
        s.busy = Some(op);
        Ok(st)
    }

    /// End the current transition, moving to `to` on success (`None`: the
    /// operation failed, the state stays). A process that exited meanwhile
    /// stays stopped. Returns an exit held back while starting.
    pub fn end(&self, to: Option<Status>) -> Option<i32> {
        let mut s = self.lock();
        s.busy = None;
        if let Some(to) = to {
            if s.status != Status::Stopped || to == Status::Deleted {
                s.status = to;
            }
        }
        self.cv.notify_all();
        s.pending_exit.take()
    }

    /// Record that the process exited with `status`. True when this changed
    /// the state (the caller publishes TaskExit); false when the exit is
    /// held back for a starter, or the process was already stopped.
    pub fn exited(&self, status: i32) -> bool {
        let mut s = self.lock();
        if s.busy == Some(Op::Starting) {
            s.pending_exit = Some(status);
            return false;
        }
        if !s.status.alive() {
            return false;
        }
        s.status = Status::Stopped;
        s.exit_status = status as u32;
        s.exited_at = Some(SystemTime::now());
        self.cv.notify_all();
        true
    }

    /// Claim the process's exit for the caller (a Wait), to handle it
    /// itself (see [`reaper::claim_child`]): once the process runs (a Wait
    /// may come before its Start), unless it stopped or another Wait has
    /// the claim.
    pub fn claim_exit(&self) -> Option<reaper::ChildExit> {
        let mut s = self.lock();
        while s.status.alive() && s.pid <= 0 {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if !s.status.alive() || s.exit_claimed {
            return None;
        }
        let claim = reaper::claim_child(s.pid);
        s.exit_claimed = claim.is_some();
        claim
    }

    /// Block until the process stopped; its exit status and time.
    pub fn wait(&self) -> (u32, Option<SystemTime>) {
        let mut s = self.lock();
        while s.status.alive() {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        (s.exit_status, s.exited_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Process {
        Process::new("c", "", StdioConfig::default())
    }

    #[test]
    fn lifecycle() {
        let p = p();
        assert!(matches!(p.begin(Op::Deleting), Ok(Status::Created)));
        assert!(matches!(
            p.begin(Op::Starting),
            Err(Error::FailedPrecondition(_))
        ));
        p.end(None);
        p.begin(Op::Starting).unwrap();
        assert_eq!(p.end(Some(Status::Running)), None);
        assert!(matches!(
            p.begin(Op::Deleting),
            Err(Error::FailedPrecondition(_))
        ));
        p.begin(Op::Pausing).unwrap();
        p.end(Some(Status::Paused));
        assert!(p.exited(137));
        assert!(!p.exited(1), "second exit ignored");
        assert_eq!(p.wait().0, 137);
        p.begin(Op::Deleting).unwrap();
        p.end(Some(Status::Deleted));
        assert!(matches!(p.begin(Op::Starting), Err(Error::NotFound(_))));
    }

    #[test]
    fn exit_while_starting_is_held_back() {
        let p = p();
        p.begin(Op::Starting).unwrap();
        assert!(!p.exited(3));
        assert_eq!(p.snapshot().status, Status::Created);
        assert_eq!(p.end(Some(Status::Running)), Some(3));
        assert!(p.exited(3));
        assert_eq!(p.snapshot().status, Status::Stopped);
    }

    #[test]
    fn exit_while_pausing_wins() {
        let p = p();
        p.begin(Op::Starting).unwrap();
        p.end(Some(Status::Running));
        p.begin(Op::Pausing).unwrap();
        assert!(p.exited(0));
        p.end(Some(Status::Paused));
        assert_eq!(p.snapshot().status, Status::Stopped);
    }

    #[test]
    fn wait_wakes_on_exit() {
        let p = std::sync::Arc::new(p());
        p.begin(Op::Starting).unwrap();
        p.end(Some(Status::Running));
        let p2 = std::sync::Arc::clone(&p);
        let h = std::thread::spawn(move || p2.wait().0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(p.exited(5));
        assert_eq!(h.join().unwrap(), 5);
    }
}
