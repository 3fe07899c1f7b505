//! The runtime's `delete` of a container runs as soon as its init's exit
//! has been published, not when containerd's Delete comes.
//!
//! Why: between the exit and the Delete, the client learns of the exit and
//! asks (ctr `run --rm`, CRI's exit handler): some 5 ms of Go code on this
//! 2-core VM, during which a CPU is mostly free. `delete` is a process start,
//! a state read, the cgroup's removal in every hierarchy, the state dir's
//! removal (2–3 ms); run meanwhile, it leaves Delete with the unmount and
//! the reply. Measured with `ctr run --rm … true`, interleaved with a shim
//! that deletes at Delete: 0.98 of its time, paired (bench/README.md).
//!
//! What a client sees is what the Go shim gives, except on a stopped
//! container before its Delete: the runtime no longer knows it (`runc
//! list`) and its cgroup is gone, so Pids answers with no pids and Stats
//! with NotFound (as for a deleted task; CRI and containerd's Metrics skip
//! such a task). Reading the statistics first, to answer with the last
//! numbers, took 0.6 ms of CPU right where containerd needs it, and the
//! gain went with it. Nothing is deleted early for a spec with `poststop`
//! hooks: those belong to the delete containerd asks for, and run then.
//!
//! Before the cgroup goes, its OOM watcher is read: an OOM that killed the
//! init is counted by the kernel before the exit, but the monitor thread
//! may not have read it yet, and would not find it afterwards.
//!
//! Where it runs: on the thread of the Wait that took the exit, after that
//! reply (a thread already on a CPU, which its connection does not need: it
//! is no longer the one reading); for an exit no Wait took, on a thread of
//! its own. Handing it to another thread costs wake-ups, and on two busy
//! vCPUs each can wait most of a millisecond.
//!
//! Delete waits for a delete in flight, and deletes through the runtime
//! itself when the early one failed (the error it reports is that one's).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::background::Latch;
use crate::container::Container;
use crate::oom::OomMonitor;

/// An early delete, in flight or done.
#[derive(Default)]
pub struct EarlyDelete {
    done: Latch,
    outcome: Mutex<Outcome>,
}

#[derive(Default)]
struct Outcome {
    /// Whether the runtime deleted the container.
    deleted: bool,
}

impl EarlyDelete {
    /// Start deleting `c`, whose init's exit was just published.
    pub fn start(c: &Arc<Container>, oom: &Arc<OomMonitor>) -> Arc<EarlyDelete> {
        let ed = Arc::new(EarlyDelete::default());
        let (job_ed, c, oom) = (Arc::clone(&ed), Arc::clone(c), Arc::clone(oom));
        if crate::rpc::in_request() {
            crate::rpc::after_reply(move || job_ed.run(&c, &oom));
            return ed;
        }
        let slot = Arc::clone(&job_ed);
        if let Err(e) = crate::spare::run("early-delete", move || slot.run(&c, &oom)) {
            // Delete does it then.
            log::warn!("early delete: no thread: {e}");
            job_ed.done.open();
        }
        ed
    }

    fn run(&self, c: &Container, oom: &OomMonitor) {
        oom.flush(&c.id);
        match c.runc.delete(&c.id, false) {
            Ok(()) => self.lock().deleted = true,
            Err(e) => log::debug!("{}: early delete: {e}; Delete will retry", c.id),
        }
        self.done.open();
    }

    fn lock(&self) -> MutexGuard<'_, Outcome> {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until it is over; whether the runtime deleted the container.
    pub fn deleted(&self, timeout: Duration) -> bool {
        self.done.wait(timeout) && self.lock().deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_delete_in_flight() {
        let ed = Arc::new(EarlyDelete::default());
        assert!(!ed.deleted(Duration::from_millis(10)));
        let e2 = Arc::clone(&ed);
        let t = std::thread::spawn(move || e2.deleted(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        ed.lock().deleted = true;
        ed.done.open();
        assert!(t.join().unwrap());
        assert!(ed.deleted(Duration::ZERO));
    }
}
