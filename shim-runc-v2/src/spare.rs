//! Spare threads: a few threads made when the server starts and parked
//! until a job needs one, so that an RPC that starts a thread (a stdio
//! copy, a connection's reader) hands it over instead of paying for
//! `clone`, a stack mapping and a guard page on its own path. A thread
//! whose job ends parks again while fewer than the target are parked;
//! with none parked, `run` starts a thread as `std::thread` would.
//! (Replacing a spare as soon as it is taken would put that thread's
//! creation on a CPU the RPC needs at that very moment.)
//!
//! Every spare has the same stack ([`STACK`]), sized for the deepest job:
//! a task RPC's handler (its untouched pages cost no memory).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use crate::background::Latch;

/// Every spare's stack.
pub const STACK: usize = 256 * 1024;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Pool {
    parked: Mutex<Vec<Sender<(String, Job)>>>,
    /// How many may stay parked: the most any `start` asked for.
    target: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Park spare threads until `n` are parked (a few first, the rest once
/// what needs them soonest is running: calls add up to the largest `n`).
pub fn start(n: usize) {
    let pool = POOL.get_or_init(|| Pool {
        parked: Mutex::new(Vec::new()),
        target: AtomicUsize::new(0),
    });
    pool.target.fetch_max(n, Ordering::SeqCst);
    let have = pool.parked.lock().unwrap_or_else(|e| e.into_inner()).len();
    for _ in have..n {
        if let Err(e) = spawn_spare(pool) {
            log::warn!("spare thread: {e}");
            break;
        }
    }
}

/// Run `job` on a thread named `name`: a parked spare, else a new one.
/// The handle tells when the job is over.
pub fn run(name: &str, job: impl FnOnce() + Send + 'static) -> io::Result<Finished> {
    let done = Arc::new(Latch::default());
    let d2 = Arc::clone(&done);
    let mut job: Job = Box::new(move || {
        // Opened even if the job panics.
        struct Open(Arc<Latch>);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.open();
            }
        }
        let _open = Open(d2);
        job();
    });
    if let Some(pool) = POOL.get() {
        loop {
            let spare = pool.parked.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(tx) = spare else { break };
            match tx.send((name.to_owned(), job)) {
                Ok(()) => return Ok(Finished(done)),
                // That spare is gone: try the next.
                Err(std::sync::mpsc::SendError((_, j))) => job = j,
            }
        }
    }
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(STACK)
        .spawn(job)?;
    Ok(Finished(done))
}

/// A job's end.
#[derive(Clone)]
pub struct Finished(Arc<Latch>);

impl Finished {
    pub fn is_finished(&self) -> bool {
        self.0.wait(std::time::Duration::ZERO)
    }

    /// Wait at most `timeout`; whether the job is over.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        self.0.wait(timeout)
    }
}

fn set_name(name: &str) {
    // The kernel keeps 15 bytes. No allocation: a thread taking a job
    // right when an RPC is busy allocating would contend for the
    // allocator's lock.
    let mut buf = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    buf[..n].copy_from_slice(&bytes[..n]);
    if !buf[..n].contains(&0) {
        unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
    }
}

fn spawn_spare(pool: &'static Pool) -> io::Result<()> {
    let (tx, rx) = channel::<(String, Job)>();
    let park = tx.clone();
    std::thread::Builder::new()
        .name("spare".into())
        .stack_size(STACK)
        .spawn(move || {
            while let Ok((name, job)) = rx.recv() {
                set_name(&name);
                job();
                set_name("spare");
                let mut parked = pool.parked.lock().unwrap_or_else(|e| e.into_inner());
                if parked.len() >= pool.target.load(Ordering::SeqCst) {
                    return;
                }
                parked.push(tx.clone());
            }
        })?;
    // A job sent before the thread runs waits in its channel.
    pool.parked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(park);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn thread_name() -> String {
        std::fs::read_to_string("/proc/thread-self/comm")
            .unwrap()
            .trim()
            .to_owned()
    }

    #[test]
    fn jobs_run_on_named_threads_and_report_their_end() {
        start(2);
        let (tx, rx) = channel();
        let mut handles = Vec::new();
        for i in 0..4 {
            let tx = tx.clone();
            handles.push(
                run(&format!("job-{i}"), move || {
                    std::thread::sleep(Duration::from_millis(20));
                    tx.send(thread_name()).unwrap();
                })
                .unwrap(),
            );
        }
        let mut names: Vec<String> = (0..4).map(|_| rx.recv().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["job-0", "job-1", "job-2", "job-3"]);
        for h in &handles {
            assert!(h.wait(Duration::from_secs(5)));
        }
        // Spares park again (up to the target) and take the next jobs.
        std::thread::sleep(Duration::from_millis(20));
        let parked = POOL.get().unwrap().parked.lock().unwrap().len();
        assert_eq!(parked, 2);
        let h = run("again", || panic!("a job that panics")).unwrap();
        assert!(h.wait(Duration::from_secs(5)), "a panicking job still ends");
    }
}
