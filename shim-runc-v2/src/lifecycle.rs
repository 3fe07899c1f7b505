//! Exit bookkeeping and ordering, kept apart from the task manager so that
//! the rules are unit-tested without a runtime:
//!
//! * reaped pids are matched to the process registered for them; an exit
//!   that arrives before its pid is registered (a process that died during
//!   `runc create` / `exec`) is kept for the registration to claim;
//! * a container's init exit is held back while execs of that container
//!   are still running, and released when the last one exited: containerd
//!   must see every exec's TaskExit before the init's (it tears the task
//!   down on the init's);
//! * once the init exited, starting an exec is refused
//!   (`FailedPrecondition`, as the Go shim).
//!
//! One mutex (the caller's) guards all of it; nothing here blocks.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::error::{Error, Result};
use crate::reaper::Exit;

/// Exits of pids not (yet) known, kept for a process whose pid is being
/// registered: at most this many.
const UNCLAIMED: usize = 64;

/// `E` is what a pid is registered with (container + process).
pub struct Lifecycle<E> {
    running: HashMap<i32, E>,
    unclaimed: VecDeque<Exit>,
    /// Per container id: execs started (or starting) and not yet exited.
    running_execs: HashMap<String, usize>,
    /// Containers whose init exited (until deleted).
    init_exited: HashSet<String>,
    /// Init exits waiting for the container's execs.
    held: HashMap<String, (E, Exit)>,
}

impl<E> Default for Lifecycle<E> {
    fn default() -> Self {
        Lifecycle {
            running: HashMap::new(),
            unclaimed: VecDeque::new(),
            running_execs: HashMap::new(),
            init_exited: HashSet::new(),
            held: HashMap::new(),
        }
    }
}

impl<E> Lifecycle<E> {
    /// A reaped exit: the registered entry, or `None` (kept as unclaimed).
    pub fn reaped(&mut self, e: Exit) -> Option<E> {
        let entry = self.running.remove(&e.pid);
        if entry.is_none() {
            if self.unclaimed.len() >= UNCLAIMED {
                self.unclaimed.pop_front();
            }
            self.unclaimed.push_back(e);
        }
        entry
    }

    /// Register `pid`; returns its exit if it already came.
    pub fn register(&mut self, pid: i32, entry: E) -> Option<Exit> {
        match self.unclaimed.iter().position(|e| e.pid == pid) {
            Some(i) => self.unclaimed.remove(i),
            None => {
                self.running.insert(pid, entry);
                None
            }
        }
    }

    /// Forget every registration that `matches` (a deleted process).
    pub fn unregister(&mut self, matches: impl Fn(&E) -> bool) {
        self.running.retain(|_, e| !matches(e));
    }

    /// An exec of `id` is about to start: refused once the init exited.
    pub fn exec_starting(&mut self, id: &str) -> Result<()> {
        if self.init_exited.contains(id) {
            return Err(Error::FailedPrecondition(format!(
                "container {id} init process is not running"
            )));
        }
        *self.running_execs.entry(id.to_owned()).or_default() += 1;
        Ok(())
    }

    /// An exec of `id` exited, or failed to start: returns the init exit to
    /// handle now if it was waiting for this one.
    pub fn exec_done(&mut self, id: &str) -> Option<(E, Exit)> {
        let n = self.running_execs.entry(id.to_owned()).or_default();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.running_execs.remove(id);
            return self.held.remove(id);
        }
        None
    }

    /// The init of `id` exited: `Some` hands it back to handle now, `None`
    /// means it is held until the running execs exited.
    pub fn init_exited(&mut self, id: &str, entry: E, e: Exit) -> Option<(E, Exit)> {
        self.init_exited.insert(id.to_owned());
        if self.running_execs.get(id).copied().unwrap_or(0) > 0 {
            self.held.insert(id.to_owned(), (entry, e));
            return None;
        }
        Some((entry, e))
    }

    /// Whether the init of `id` exited (its exit may still be held).
    pub fn has_init_exited(&self, id: &str) -> bool {
        self.init_exited.contains(id)
    }

    /// The container `id` was deleted: its id may be reused.
    pub fn forget(&mut self, id: &str) {
        self.init_exited.remove(id);
        self.running_execs.remove(id);
        self.held.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(pid: i32, status: i32) -> Exit {
        Exit { pid, status }
    }

    #[test]
    fn early_exit_is_claimed_by_registration() {
        let mut l: Lifecycle<&str> = Lifecycle::default();
        assert_eq!(l.reaped(exit(10, 1)), None);
        assert_eq!(l.register(10, "p"), Some(exit(10, 1)));
        assert_eq!(l.register(11, "q"), None);
        assert_eq!(l.reaped(exit(11, 0)), Some("q"));
        for pid in 0..100 {
            l.reaped(exit(1000 + pid, 0));
        }
        assert_eq!(l.unclaimed.len(), UNCLAIMED, "bounded");
        l.register(12, "r");
        l.unregister(|e| *e == "r");
        assert_eq!(l.reaped(exit(12, 0)), None);
    }

    #[test]
    fn init_exit_waits_for_execs() {
        let mut l: Lifecycle<&str> = Lifecycle::default();
        l.exec_starting("c").unwrap();
        l.exec_starting("c").unwrap();
        // Init exits while two execs run: held back.
        assert_eq!(l.init_exited("c", "init", exit(1, 137)), None);
        assert!(l.has_init_exited("c"));
        // No exec may start now.
        assert!(matches!(
            l.exec_starting("c"),
            Err(Error::FailedPrecondition(_))
        ));
        assert_eq!(l.exec_done("c"), None);
        assert_eq!(l.exec_done("c"), Some(("init", exit(1, 137))));
        // Another container is not affected.
        l.exec_starting("d").unwrap();
        assert_eq!(
            l.init_exited("e", "init-e", exit(3, 0)),
            Some(("init-e", exit(3, 0)))
        );
    }

    #[test]
    fn init_exit_without_execs_and_failed_exec_start() {
        let mut l: Lifecycle<&str> = Lifecycle::default();
        l.exec_starting("c").unwrap();
        // The exec failed to start: the count drops back.
        assert_eq!(l.exec_done("c"), None);
        assert_eq!(
            l.init_exited("c", "init", exit(1, 0)),
            Some(("init", exit(1, 0)))
        );
        // Deleting the container lets its id be used again.
        l.forget("c");
        assert!(!l.has_init_exited("c"));
        l.exec_starting("c").unwrap();
    }
}
