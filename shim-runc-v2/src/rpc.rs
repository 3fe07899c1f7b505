//! ttrpc over a unix socket as the shim uses it: the server for the task
//! service (the generated handlers of `containerd-shim-protos`) and a
//! client for containerd's events service.
//!
//! Why not the `ttrpc` crate's own server and client: they hop each
//! message across threads (a reader hands a request to a worker, which
//! hands the reply to a writer; a client call goes through a writer and a
//! reader thread) and start five threads per connection. On a VM every
//! hop can mean waking an idle vCPU, and `ctr run` makes a handful of
//! RPCs in a row. Here the thread that reads a request handles it and
//! writes the reply itself; before it starts on the request it makes
//! sure another thread is reading (leader/follower), so a slow Create or
//! a long Wait never holds up the next request. The client calls on the
//! caller's thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ttrpc::proto::{
    Codec, MessageHeader, Request, Response, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX,
    MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE,
};
use ttrpc::{Code, ConnectionContext, MethodHandler, TtrpcContext};

use crate::spare;

/// The generated handlers, by `/service/method`.
pub type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// Threads of a connection waiting to read beyond this many end.
const MAX_IDLE: usize = 2;

/// Work left for after a reply, in order.
type Deferred = Vec<Box<dyn FnOnce()>>;

thread_local! {
    /// What the request this thread handles left for after its reply.
    static AFTER_REPLY: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

/// Run `f` once the reply to the request this thread is handling has been
/// written; outside a request, now. For what a handler sets off but the
/// client does not wait for (an event to forward, work for the background
/// thread): woken before the reply, those threads take the CPUs the reply
/// needs (measured on Create: its reply left the shim 0.4 ms later).
pub fn after_reply(f: impl FnOnce() + 'static) {
    let f: Box<dyn FnOnce()> = Box::new(f);
    let now = AFTER_REPLY.with(|a| match a.borrow_mut().as_mut() {
        Some(list) => {
            list.push(f);
            None
        }
        None => Some(f),
    });
    if let Some(f) = now {
        f();
    }
}

/// Whether this thread is handling a request (so [`after_reply`] defers).
pub fn in_request() -> bool {
    AFTER_REPLY.with(|a| a.borrow().is_some())
}

/// While alive, [`after_reply`] collects; dropped (also on a panic), it
/// runs what was collected, in order.
struct AfterReply;

impl AfterReply {
    fn begin() -> AfterReply {
        AFTER_REPLY.with(|a| *a.borrow_mut() = Some(Vec::new()));
        AfterReply
    }
}

impl Drop for AfterReply {
    fn drop(&mut self) {
        let list = AFTER_REPLY.with(|a| a.borrow_mut().take());
        for f in list.into_iter().flatten() {
            f();
        }
    }
}

fn read_frame(mut sock: &UnixStream) -> io::Result<(MessageHeader, Vec<u8>)> {
    let mut h = [0u8; MESSAGE_HEADER_LENGTH];
    sock.read_exact(&mut h)?;
    let mh = MessageHeader::from(h);
    let len = mh.length as usize;
    if len > MESSAGE_LENGTH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ttrpc message of {len} bytes (the limit is {MESSAGE_LENGTH_MAX})"),
        ));
    }
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body)?;
    Ok((mh, body))
}

fn write_frame(mut sock: &UnixStream, mut mh: MessageHeader, payload: &[u8]) -> io::Result<()> {
    mh.length = payload.len() as u32;
    let mut frame: Vec<u8> = mh.into();
    frame.extend_from_slice(payload);
    sock.write_all(&frame)
}

/// A listening task server.
pub struct Server {
    stopped: Arc<AtomicBool>,
}

impl Server {
    /// Serve `methods` to every connection `listener` accepts.
    pub fn start(listener: UnixListener, methods: Methods) -> io::Result<Server> {
        let stopped = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stopped);
        let methods = Arc::new(methods);
        std::thread::Builder::new()
            .name("listener".into())
            .stack_size(spare::STACK)
            .spawn(move || accept_loop(listener, methods, s2))?;
        Ok(Server { stopped })
    }

    /// Take no new connections (the socket file is the caller's).
    pub fn stop_listen(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: UnixListener, methods: Arc<Methods>, stopped: Arc<AtomicBool>) {
    loop {
        let sock = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("accept: {e}");
                // EMFILE and the like last a while: do not spin.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if stopped.load(Ordering::SeqCst) {
            continue; // dropped: closed
        }
        let (cancel_tx, cancel_rx) = crossbeam_channel::bounded(0);
        let conn = Arc::new(Conn {
            sock,
            methods: Arc::clone(&methods),
            reading: Mutex::new(()),
            writing: Mutex::new(()),
            idle: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            cancel_tx: Mutex::new(Some(cancel_tx)),
            cancel_rx,
        });
        // Two from the start: the second reads while the first handles.
        for _ in 0..2 {
            if let Err(e) = conn.add_thread() {
                log::error!("connection thread: {e}");
            }
        }
    }
}

struct Conn {
    sock: UnixStream,
    methods: Arc<Methods>,
    /// Held by the one thread reading the next request.
    reading: Mutex<()>,
    /// Held while a reply is written, so frames never interleave.
    writing: Mutex<()>,
    /// Threads reading or waiting to.
    idle: AtomicUsize,
    closed: AtomicBool,
    /// Dropped on close: what handlers see as the connection's cancel.
    cancel_tx: Mutex<Option<crossbeam_channel::Sender<()>>>,
    cancel_rx: crossbeam_channel::Receiver<()>,
}

impl Conn {
    fn add_thread(self: &Arc<Self>) -> io::Result<()> {
        self.idle.fetch_add(1, Ordering::SeqCst);
        let c = Arc::clone(self);
        spare::run("ttrpc", move || c.serve())
            .map(drop)
            .inspect_err(|_| {
                self.idle.fetch_sub(1, Ordering::SeqCst);
            })
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            let _ = self.sock.shutdown(std::net::Shutdown::Both);
            self.cancel_tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
    }

    /// One thread's loop: read a request, hand the reading on, handle it.
    fn serve(self: Arc<Self>) {
        loop {
            let frame = {
                let _r = self.reading.lock().unwrap_or_else(|e| e.into_inner());
                if self.closed.load(Ordering::SeqCst) {
                    break;
                }
                read_frame(&self.sock)
            };
            let (mh, body) = match frame {
                Ok(f) => f,
                Err(e) => {
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        log::warn!("ttrpc connection: {e}");
                    }
                    self.close();
                    break;
                }
            };
            // Busy now: if no other thread reads, start one.
            if self.idle.fetch_sub(1, Ordering::SeqCst) == 1 {
                if let Err(e) = self.add_thread() {
                    log::error!("connection thread: {e}");
                }
            }
            self.handle(mh, body);
            if self.idle.fetch_add(1, Ordering::SeqCst) >= MAX_IDLE {
                self.idle.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
        self.idle.fetch_sub(1, Ordering::SeqCst);
    }

    fn handle(&self, mh: MessageHeader, body: Vec<u8>) {
        if mh.type_ != MESSAGE_TYPE_REQUEST {
            return; // the task service has no streams
        }
        // Dropped last, once the reply is written.
        let _after = AfterReply::begin();
        let req = match Request::decode(&body) {
            Ok(r) => r,
            Err(e) => return self.reply_error(mh, Code::INVALID_ARGUMENT, format!("{e}")),
        };
        let path = format!("/{}/{}", req.service, req.method);
        let Some(method) = self.methods.get(&path) else {
            return self.reply_error(mh, Code::UNIMPLEMENTED, format!("{path} is not served"));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let ctx = TtrpcContext {
            fd: self.sock.as_raw_fd(),
            cancel_rx: self.cancel_rx.clone(),
            mh,
            res_tx: tx,
            metadata: ttrpc::context::from_pb(&req.metadata),
            timeout_nano: req.timeout_nano,
            conn_ctx: Arc::new(ConnectionContext::default()),
        };
        if let Err(e) = method.handler(ctx, req) {
            log::warn!("{path}: {e:?}");
        }
        // The handler queued its reply (on this thread: no hop).
        for (h, payload) in rx.try_iter() {
            self.write(h, &payload);
        }
    }

    fn reply_error(&self, mh: MessageHeader, code: Code, msg: String) {
        let res: Response = ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg)).into();
        match res.encode() {
            Ok(b) => self.write(MessageHeader::new_response(mh.stream_id, 0), &b),
            Err(e) => log::error!("encode ttrpc error reply: {e:?}"),
        }
    }

    fn write(&self, mh: MessageHeader, payload: &[u8]) {
        let _w = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = write_frame(&self.sock, mh, payload) {
            log::warn!("ttrpc reply: {e}");
            self.close();
        }
    }
}

/// A ttrpc client making one call at a time on the caller's thread.
pub struct Client {
    sock: UnixStream,
    next_stream: u32,
}

impl Client {
    /// Connect to `addr` (a path or `unix://path`).
    pub fn connect(addr: &str) -> io::Result<Client> {
        let path = addr.strip_prefix("unix://").unwrap_or(addr);
        Ok(Client {
            sock: UnixStream::connect(path)?,
            next_stream: 1,
        })
    }

    /// Call `service`'s `method` with an encoded request; the encoded
    /// reply, or the error (a status from the server, or the connection's).
    pub fn call(
        &mut self,
        service: &str,
        method: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let stream = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(2);
        let mut req = Request::new();
        req.service = service.to_owned();
        req.method = method.to_owned();
        req.payload = payload;
        req.timeout_nano = timeout.as_nanos() as i64;
        let body = req.encode().map_err(|e| format!("encode request: {e:?}"))?;
        write_frame(&self.sock, MessageHeader::new_request(stream, 0), &body)
            .map_err(|e| format!("send: {e}"))?;
        self.sock
            .set_read_timeout(Some(timeout))
            .map_err(|e| format!("set timeout: {e}"))?;
        loop {
            let (mh, body) = read_frame(&self.sock).map_err(|e| format!("receive: {e}"))?;
            if mh.type_ != MESSAGE_TYPE_RESPONSE || mh.stream_id != stream {
                continue;
            }
            let res = Response::decode(&body).map_err(|e| format!("decode reply: {e:?}"))?;
            return match res.status.as_ref() {
                Some(s) if s.code != Code::OK.into() => Err(format!("{:?}: {}", s.code, s.message)),
                _ => Ok(res.payload),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::Message;
    use containerd_shim_protos::shim::event::Envelope;
    use containerd_shim_protos::shim::events::ForwardRequest;
    use containerd_shim_protos::shim::events_ttrpc::{create_events, Events};
    use std::sync::mpsc::{channel, Receiver, Sender};

    const SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

    /// For "/after": where its deferred work reports, and the client's
    /// word that the reply arrived.
    #[allow(clippy::type_complexity)] // a test's plumbing
    static AFTER: std::sync::OnceLock<(Mutex<Sender<String>>, Mutex<Receiver<()>>)> =
        std::sync::OnceLock::new();

    /// Forward: topic "/block" waits for `release`; "/fail" is an error.
    struct Svc {
        seen: Mutex<Sender<String>>,
        release: Mutex<Receiver<()>>,
    }

    impl Events for Svc {
        fn forward(
            &self,
            _: &TtrpcContext,
            r: ForwardRequest,
        ) -> ttrpc::Result<containerd_shim_protos::protobuf::well_known_types::empty::Empty>
        {
            let topic = r.envelope.topic.clone();
            self.seen.lock().unwrap().send(topic.clone()).unwrap();
            match topic.as_str() {
                "/block" => self.release.lock().unwrap().recv().unwrap(),
                // Waits, after the reply, until the client says it has it.
                "/after" => after_reply(|| {
                    let (seen, got_reply) = AFTER.get().unwrap();
                    let r = got_reply
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(2));
                    let what = if r.is_ok() {
                        "after the reply"
                    } else {
                        "before it"
                    };
                    seen.lock().unwrap().send(what.into()).unwrap();
                }),
                "/fail" => {
                    return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                        Code::NOT_FOUND,
                        "no such thing",
                    )))
                }
                _ => {}
            }
            Ok(Default::default())
        }
    }

    fn forward(topic: &str) -> Vec<u8> {
        let mut env = Envelope::new();
        env.topic = topic.into();
        let mut req = ForwardRequest::new();
        req.envelope = containerd_shim_protos::protobuf::MessageField::some(env);
        req.write_to_bytes().unwrap()
    }

    fn request(stream: u32, method: &str, payload: Vec<u8>) -> (MessageHeader, Vec<u8>) {
        let mut req = Request::new();
        req.service = SERVICE.into();
        req.method = method.into();
        req.payload = payload;
        (MessageHeader::new_request(stream, 0), req.encode().unwrap())
    }

    fn serve() -> (tempfile::TempDir, String, Receiver<String>, Sender<()>) {
        crate::spare::start(2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s").to_string_lossy().into_owned();
        let (seen_tx, seen) = channel();
        let (release, release_rx) = channel();
        let svc = Arc::new(Svc {
            seen: Mutex::new(seen_tx),
            release: Mutex::new(release_rx),
        });
        Server::start(UnixListener::bind(&path).unwrap(), create_events(svc)).unwrap();
        (dir, path, seen, release)
    }

    #[test]
    fn client_calls_and_errors() {
        let (_dir, path, seen, _release) = serve();
        let mut c = Client::connect(&format!("unix://{path}")).unwrap();
        let t = Duration::from_secs(5);
        assert!(c.call(SERVICE, "Forward", forward("/ok"), t).is_ok());
        assert_eq!(seen.recv().unwrap(), "/ok");
        let e = c.call(SERVICE, "Forward", forward("/fail"), t).unwrap_err();
        assert!(
            e.contains("no such thing") && e.contains("NOT_FOUND"),
            "{e}"
        );
        let e = c.call(SERVICE, "Publish", vec![], t).unwrap_err();
        assert!(e.contains("UNIMPLEMENTED"), "{e}");
        // The connection still serves after errors.
        assert!(c.call(SERVICE, "Forward", forward("/again"), t).is_ok());
    }

    #[test]
    fn after_reply_runs_once_the_reply_is_written() {
        let (_dir, path, seen, _release) = serve();
        let (report, reports) = channel();
        let (got_reply, got_reply_rx) = channel();
        assert!(AFTER
            .set((Mutex::new(report), Mutex::new(got_reply_rx)))
            .is_ok());
        let mut c = Client::connect(&path).unwrap();
        let r = c.call(
            SERVICE,
            "Forward",
            forward("/after"),
            Duration::from_secs(10),
        );
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(seen.recv().unwrap(), "/after");
        got_reply.send(()).unwrap();
        let when = reports.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(when, "after the reply");
        // Outside a request it runs at once.
        let ran = std::cell::Cell::new(false);
        let flag = std::rc::Rc::new(ran);
        let f2 = std::rc::Rc::clone(&flag);
        after_reply(move || f2.set(true));
        assert!(flag.get());
    }

    #[test]
    fn a_blocked_request_does_not_hold_up_the_next() {
        let (_dir, path, seen, release) = serve();
        let sock = UnixStream::connect(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (h, b) = request(1, "Forward", forward("/block"));
        write_frame(&sock, h, &b).unwrap();
        assert_eq!(seen.recv().unwrap(), "/block");
        let (h, b) = request(3, "Forward", forward("/quick"));
        write_frame(&sock, h, &b).unwrap();
        let (mh, _) = read_frame(&sock).unwrap();
        assert_eq!(
            (mh.type_, mh.stream_id),
            (MESSAGE_TYPE_RESPONSE, 3),
            "the second request's reply comes first"
        );
        release.send(()).unwrap();
        let (mh, body) = read_frame(&sock).unwrap();
        assert_eq!(mh.stream_id, 1);
        let res = Response::decode(&body).unwrap();
        assert!(res.status.code == Code::OK.into() || res.status.is_none());
    }

    #[test]
    fn oversized_and_garbled_frames_end_only_their_connection() {
        let (_dir, path, _seen, _release) = serve();
        let sock = UnixStream::connect(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let h = MessageHeader::new_request(1, (MESSAGE_LENGTH_MAX + 1) as u32);
        let frame: Vec<u8> = h.into();
        (&sock).write_all(&frame).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!((&sock).read(&mut buf).unwrap(), 0, "closed");
        // A request that is not protobuf gets an error reply.
        let sock = UnixStream::connect(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write_frame(&sock, MessageHeader::new_request(5, 0), &[0xff, 0xff, 0xff]).unwrap();
        let (mh, body) = read_frame(&sock).unwrap();
        assert_eq!(mh.stream_id, 5);
        let res = Response::decode(&body).unwrap();
        assert_eq!(res.status.code, Code::INVALID_ARGUMENT.into());
        let mut c = Client::connect(&path).unwrap();
        assert!(c
            .call(SERVICE, "Forward", forward("/ok"), Duration::from_secs(5))
            .is_ok());
    }
}
