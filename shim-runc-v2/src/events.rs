//! Task events (TaskCreate, TaskStart, TaskExit, TaskDelete, ...) forwarded
//! to containerd.
//!
//! RPC handlers only enqueue: [`Publisher::publish`] never blocks (the queue
//! is bounded; when it is full the event is dropped and logged). One thread
//! drains the queue and forwards each event over ttrpc to containerd's
//! `containerd.services.events.ttrpc.v1.Events/Forward` at `$TTRPC_ADDRESS`
//! (what containerd 1.6+ gives its shims), or, without that address, runs
//! `<publish-binary> --address A publish --topic T --namespace N` with the
//! event on stdin (the older contract).
//!
//! An event containerd does not take (it is restarting, say) is retried,
//! the events behind it waiting in order, for [`RETRY_FOR`]: an exit while
//! containerd is down reaches the new one, which is how CRI learns of it.
//! The Go shim re-queues a failed event for about 15 s.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;

use crate::rpc;

const QUEUE: usize = 256;
/// How long one event is retried before it is dropped.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// The first wait between attempts; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// One event: its topic and the event as a protobuf `Any`.
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: &'static str,
    pub event: Any,
    /// When it was published (the envelope's time, also when retried).
    pub at: SystemTime,
}

/// The events a shim sends, as (topic, Any) pairs with containerd's names.
pub trait TaskEvent: Message {
    const TOPIC: &'static str;
    const TYPE: &'static str;
}

macro_rules! task_event {
    ($t:ty, $topic:literal, $name:literal) => {
        impl TaskEvent for $t {
            const TOPIC: &'static str = $topic;
            const TYPE: &'static str = $name;
        }
    };
}
task_event!(
    ev::TaskCreate,
    "/tasks/create",
    "containerd.events.TaskCreate"
);
task_event!(ev::TaskStart, "/tasks/start", "containerd.events.TaskStart");
task_event!(ev::TaskExit, "/tasks/exit", "containerd.events.TaskExit");
task_event!(
    ev::TaskDelete,
    "/tasks/delete",
    "containerd.events.TaskDelete"
);
task_event!(
    ev::TaskExecAdded,
    "/tasks/exec-added",
    "containerd.events.TaskExecAdded"
);
task_event!(
    ev::TaskExecStarted,
    "/tasks/exec-started",
    "containerd.events.TaskExecStarted"
);
task_event!(
    ev::TaskCheckpointed,
    "/tasks/checkpointed",
    "containerd.events.TaskCheckpointed"
);
task_event!(
    ev::TaskPaused,
    "/tasks/paused",
    "containerd.events.TaskPaused"
);
task_event!(
    ev::TaskResumed,
    "/tasks/resumed",
    "containerd.events.TaskResumed"
);
task_event!(ev::TaskOOM, "/tasks/oom", "containerd.events.TaskOOM");

/// Encode `e` as containerd's typeurl does (bare type name).
pub fn to_any<E: TaskEvent>(e: &E) -> Any {
    let mut a = Any::new();
    a.type_url = E::TYPE.to_owned();
    a.value = e.write_to_bytes().unwrap_or_default();
    a
}

/// A protobuf timestamp of `t`.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

/// Where events go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// containerd's ttrpc address (`$TTRPC_ADDRESS`).
    Ttrpc(String),
    /// `-publish-binary` and `-address`.
    Binary { binary: String, address: String },
    /// Nowhere (tests, or no address known).
    Discard,
}

#[derive(Default)]
struct Pending {
    queued: usize,
    /// Requests that published an event and have not replied yet: their
    /// replies go out first (see [`rpc::after_reply`]).
    held: usize,
}

/// How long forwarding waits for a reply to go out first, at most.
const HOLD_MAX: Duration = Duration::from_millis(50);

/// What the forwarding thread takes when it starts.
type Forwarding = (Receiver<Event>, Sink, String);

/// The queue and its forwarding thread.
pub struct Publisher {
    tx: Mutex<Option<SyncSender<Event>>>,
    pending: Arc<(Mutex<Pending>, Condvar)>,
    /// Until [`Publisher::start`]: events queue up and wait.
    unstarted: Mutex<Option<Forwarding>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Publisher {
    /// A queue; nothing is forwarded until [`Publisher::start`].
    pub fn new(sink: Sink, namespace: String) -> Publisher {
        let (tx, rx) = sync_channel::<Event>(QUEUE);
        Publisher {
            tx: Mutex::new(Some(tx)),
            pending: Arc::new((Mutex::new(Pending::default()), Condvar::new())),
            unstarted: Mutex::new(Some((rx, sink, namespace))),
            thread: Mutex::new(None),
        }
    }

    /// Start the forwarding thread (once).
    pub fn start(&self) {
        let Some((rx, sink, namespace)) = self
            .unstarted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let p2 = Arc::clone(&self.pending);
        match std::thread::Builder::new()
            .name("events".into())
            .stack_size(256 * 1024)
            .spawn(move || forward_loop(rx, sink, namespace, p2))
        {
            Ok(t) => *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t),
            Err(e) => log::error!("events thread: {e}; events are not forwarded"),
        }
    }

    /// Queue `e`; never blocks.
    pub fn publish<E: TaskEvent>(&self, e: &E) {
        let event = Event {
            topic: E::TOPIC,
            event: to_any(e),
            at: SystemTime::now(),
        };
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            log::warn!("publisher closed: dropping {} event", E::TOPIC);
            return;
        };
        let (lock, _) = &*self.pending;
        {
            let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
            p.queued += 1;
            p.held += 1;
        }
        // Queued now (the order of events is the order of publishing);
        // forwarded once this request's reply is out.
        let pending = Arc::clone(&self.pending);
        rpc::after_reply(move || {
            let (lock, cv) = &*pending;
            let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
            p.held = p.held.saturating_sub(1);
            cv.notify_all();
        });
        if let Err(err) = tx.try_send(event) {
            lock.lock().unwrap_or_else(|e| e.into_inner()).queued -= 1;
            log::error!(
                "event queue full or closed: dropping {} event ({err})",
                E::TOPIC
            );
        }
    }

    /// Stop accepting events and wait (at most `timeout`) until the queued
    /// ones are forwarded.
    pub fn close(&self, timeout: Duration) {
        self.start();
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (lock, cv) = &*self.pending;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = cv.wait_timeout_while(guard, timeout, |p| p.queued > 0);
        if let Some(h) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

fn forward_loop(
    rx: Receiver<Event>,
    sink: Sink,
    ns: String,
    pending: Arc<(Mutex<Pending>, Condvar)>,
) {
    // Connected now (the server starts this thread while its first
    // Create is under way) rather than with the first event.
    let mut client: Option<rpc::Client> = match &sink {
        Sink::Ttrpc(addr) => rpc::Client::connect(addr).ok(),
        _ => None,
    };
    loop {
        let e = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(e) => e,
            // Idle: drop the connection until needed.
            Err(RecvTimeoutError::Timeout) => {
                client = None;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        {
            let (lock, cv) = &*pending;
            let p = lock.lock().unwrap_or_else(|e| e.into_inner());
            let _ = cv.wait_timeout_while(p, HOLD_MAX, |p| p.held > 0);
        }
        forward_with_retries(&sink, &ns, &e, &mut client);
        let (lock, cv) = &*pending;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        p.queued = p.queued.saturating_sub(1);
        cv.notify_all();
    }
}

/// Send `e`, retrying with a growing wait for [`RETRY_FOR`], then drop it.
fn forward_with_retries(sink: &Sink, ns: &str, e: &Event, client: &mut Option<rpc::Client>) {
    let deadline = Instant::now() + RETRY_FOR;
    let mut wait = RETRY_FIRST;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let err = match send(sink, ns, e, client) {
            Ok(()) => {
                if attempts > 1 {
                    log::info!("forwarded {} event at attempt {attempts}", e.topic);
                }
                return;
            }
            Err(err) => err,
        };
        *client = None;
        if attempts == 1 {
            log::warn!("forward {} event: {err}; retrying", e.topic);
        } else {
            log::debug!("forward {} event (attempt {attempts}): {err}", e.topic);
        }
        if Instant::now() + wait > deadline {
            log::error!(
                "dropping {} event after {attempts} attempts in {RETRY_FOR:?}: {err}",
                e.topic
            );
            return;
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// containerd's events service, where a shim forwards its events.
const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

fn send(sink: &Sink, ns: &str, e: &Event, client: &mut Option<rpc::Client>) -> Result<(), String> {
    match sink {
        Sink::Discard => Ok(()),
        Sink::Ttrpc(addr) => {
            if client.is_none() {
                let c = rpc::Client::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
                *client = Some(c);
            }
            let mut env = Envelope::new();
            env.timestamp = MessageField::some(timestamp(e.at));
            env.namespace = ns.to_owned();
            env.topic = e.topic.to_owned();
            env.event = MessageField::some(e.event.clone());
            let mut req = ForwardRequest::new();
            req.envelope = MessageField::some(env);
            let payload = req.write_to_bytes().map_err(|e| e.to_string())?;
            let c = client.as_mut().expect("connected");
            c.call(EVENTS_SERVICE, "Forward", payload, FORWARD_TIMEOUT)
                .map(drop)
        }
        Sink::Binary { binary, address } => {
            let data = e.event.write_to_bytes().map_err(|e| e.to_string())?;
            let mut cmd = Command::new(binary);
            cmd.args([
                "--address",
                address,
                "publish",
                "--topic",
                e.topic,
                "--namespace",
                ns,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
            let mut child = crate::reaper::spawn(&mut cmd).map_err(|e| e.to_string())?;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(&data);
            }
            drop(cmd);
            match child.wait() {
                Ok(0) => Ok(()),
                Ok(code) => Err(format!("{binary} publish exited {code}")),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_uses_bare_type_names() {
        let mut e = ev::TaskExit::new();
        e.container_id = "c".into();
        e.exit_status = 3;
        let a = to_any(&e);
        assert_eq!(a.type_url, "containerd.events.TaskExit");
        let back = ev::TaskExit::parse_from_bytes(&a.value).unwrap();
        assert_eq!(back.exit_status, 3);
    }

    /// containerd's events service, recording what it is forwarded.
    struct Recorder(std::sync::Mutex<std::sync::mpsc::Sender<Envelope>>);

    impl containerd_shim_protos::shim::events_ttrpc::Events for Recorder {
        fn forward(
            &self,
            _: &ttrpc::TtrpcContext,
            r: ForwardRequest,
        ) -> ttrpc::Result<containerd_shim_protos::protobuf::well_known_types::empty::Empty>
        {
            let env = r.envelope.into_option().unwrap_or_default();
            self.0.lock().unwrap().send(env).unwrap();
            Ok(Default::default())
        }
    }

    #[test]
    fn an_event_waits_for_containerd_to_come_back() {
        crate::spare::start(2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containerd.sock.ttrpc");
        let p = Publisher::new(
            Sink::Ttrpc(format!("unix://{}", path.display())),
            "ns".into(),
        );
        p.start();
        let mut exit = ev::TaskExit::new();
        exit.container_id = "c1".into();
        exit.exit_status = 7;
        let published = SystemTime::now();
        p.publish(&exit);
        p.publish(&ev::TaskDelete::new());
        // Nobody listens for a while (containerd restarting): several
        // attempts fail.
        std::thread::sleep(Duration::from_millis(800));
        let (tx, rx) = std::sync::mpsc::channel();
        let svc = std::sync::Arc::new(Recorder(std::sync::Mutex::new(tx)));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let _server = rpc::Server::start(
            listener,
            containerd_shim_protos::shim::events_ttrpc::create_events(svc),
        )
        .unwrap();
        let first = rx.recv_timeout(Duration::from_secs(10)).expect("forwarded");
        assert_eq!(first.topic, "/tasks/exit");
        assert_eq!(first.namespace, "ns");
        let back = ev::TaskExit::parse_from_bytes(&first.event.value).unwrap();
        assert_eq!((back.container_id.as_str(), back.exit_status), ("c1", 7));
        // Stamped when published, not when it finally went.
        let at = first.timestamp.seconds as u64 * 1_000_000_000 + first.timestamp.nanos as u64;
        let published = published.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        assert!(
            at >= published && at - published < 500_000_000,
            "timestamp {at} ns, published at {published} ns"
        );
        // The one behind it, in order.
        let second = rx.recv_timeout(Duration::from_secs(10)).expect("forwarded");
        assert_eq!(second.topic, "/tasks/delete");
        p.close(Duration::from_secs(5));
    }

    #[test]
    fn discard_publisher_drains() {
        let p = Publisher::new(Sink::Discard, "ns".into());
        p.publish(&ev::TaskStart::new());
        p.close(Duration::from_secs(5));
        p.publish(&ev::TaskStart::new()); // after close: dropped, no panic
    }
}
