//! Work an RPC leaves for after its reply: one long-lived thread that runs
//! jobs in order, so that what containerd does not wait for stays off the
//! RPC's path — releasing an unmounted rootfs (the kernel syncs an
//! overlay's upper filesystem when its last reference goes) and dropping a
//! deleted container's OOM watch. ([`Latch`] is what Start waits on until
//! a new container's OOM watch, set up after Create's reply, is in place.)
//!
//! The server starts the thread right after its listener, not with the
//! first job: a thread's creation would otherwise land on the very RPC this
//! is meant to speed up. Jobs queued before it starts wait for it.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct Background {
    tx: Mutex<Option<Sender<Job>>>,
    /// The queue's receiving end until the thread takes it.
    rx: Arc<Mutex<Option<Receiver<Job>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Default for Background {
    fn default() -> Background {
        Background::new()
    }
}

impl Background {
    /// A queue whose jobs wait until [`Background::start_thread`].
    pub fn new() -> Background {
        let (tx, rx) = channel::<Job>();
        Background {
            tx: Mutex::new(Some(tx)),
            rx: Arc::new(Mutex::new(Some(rx))),
            thread: Mutex::new(None),
        }
    }

    /// Start the thread (once). Without one (spawn failed) what is queued
    /// and what comes later runs inline.
    pub fn start_thread(&self) {
        if self
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        let slot = Arc::clone(&self.rx);
        let spawned = std::thread::Builder::new()
            .name("background".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let rx = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                for job in rx.into_iter().flatten() {
                    job();
                }
            });
        match spawned {
            Ok(t) => *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t),
            Err(e) => {
                log::warn!("background thread: {e}; its work runs inline");
                self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
                self.run_queued_here();
            }
        }
    }

    /// Run what the queue holds on this thread (there is no other).
    fn run_queued_here(&self) {
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take();
        for job in rx.iter().flat_map(|rx| rx.try_iter()) {
            job();
        }
    }

    /// Run `job` after whatever is queued (inline once finished), and not
    /// before the reply to the request that asks for it is written.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        crate::rpc::after_reply(move || match tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(job)) = tx.send(Box::new(job)) {
                    job();
                }
            }
            None => job(),
        });
    }

    /// Take no more jobs; wait up to `timeout` for the queued ones.
    pub fn finish(&self, timeout: Duration) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            // Never started: what is queued runs here.
            self.run_queued_here();
            return;
        };
        let deadline = Instant::now() + timeout;
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::warn!("background work still running after {timeout:?}");
        }
    }
}

/// A one-way gate: closed until [`Latch::open`], then open for good.
#[derive(Default)]
pub struct Latch {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Wait until open, at most `timeout`; whether it is open.
    pub fn wait(&self, timeout: Duration) -> bool {
        let g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn jobs_run_in_order_off_the_caller() {
        let bg = Background::new();
        bg.start_thread();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let me = std::thread::current().id();
        for i in 0..3 {
            let s = Arc::clone(&seen);
            bg.run(move || {
                assert_ne!(std::thread::current().id(), me);
                s.lock().unwrap().push(i);
            });
        }
        bg.finish(Duration::from_secs(5));
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
        // Finished: later jobs still run, inline.
        let s = Arc::clone(&seen);
        bg.run(move || s.lock().unwrap().push(3));
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn latch_waits_until_opened() {
        let l = Arc::new(Latch::default());
        assert!(!l.wait(Duration::from_millis(10)));
        let l2 = Arc::clone(&l);
        let t = std::thread::spawn(move || l2.wait(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        l.open();
        assert!(t.join().unwrap());
        assert!(l.wait(Duration::ZERO));
    }
}
