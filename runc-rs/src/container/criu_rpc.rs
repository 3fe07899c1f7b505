//! criu's RPC over `criu swrk`, as runc uses it: one protobuf `criu_req`
//! (images/rpc.proto of criu) on a SOCK_SEQPACKET socketpair, then
//! `criu_resp` messages until the final one. Between them criu sends
//! notifications (`setup-namespaces`, `post-restore`, `orphan-pts-master`
//! with a pty master as SCM_RIGHTS, ...) that must each be acknowledged.
//! Only the RPC offers what a terminal container needs (a restored pty
//! master handed back) and the notifications runc runs hooks on.
//!
//! The protobuf encoding is written by hand: a few scalar, string and
//! nested-message fields of proto2, no dependency.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::socket::{
    recvmsg, send, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

use super::ContainerError;

/// A protobuf message being written (proto2 wire format).
#[derive(Debug, Default, Clone)]
pub struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }

    pub fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0);
        self.varint(v);
        self
    }

    /// int32: negative values are sign-extended to ten bytes.
    pub fn int(&mut self, field: u32, v: i32) -> &mut Self {
        self.uint(field, v as i64 as u64)
    }

    pub fn flag(&mut self, field: u32, v: bool) -> &mut Self {
        self.uint(field, v as u64)
    }

    pub fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    pub fn string(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    pub fn message(&mut self, field: u32, m: &Pb) -> &mut Self {
        self.bytes(field, &m.0)
    }

    /// A message of two string fields 1 and 2 (ext_mount_map, cgroup_root).
    pub fn pair(&mut self, field: u32, a: &str, b: &str) -> &mut Self {
        let mut m = Pb::default();
        m.string(1, a).string(2, b);
        self.message(field, &m)
    }
}

/// A decoded field: a varint or a length-delimited payload.
#[derive(Debug, Clone)]
enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn decode(mut buf: &[u8]) -> Option<Vec<(u32, Field)>> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = vec![];
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let field = (key >> 3) as u32;
        match key & 7 {
            0 => out.push((field, Field::Varint(varint(&mut buf)?))),
            2 => {
                let len = varint(&mut buf)? as usize;
                let bytes = buf.get(..len)?.to_vec();
                buf = &buf[len..];
                out.push((field, Field::Bytes(bytes)));
            }
            5 => buf = buf.get(4..)?,
            1 => buf = buf.get(8..)?,
            _ => return None,
        }
    }
    Some(out)
}

/// criu_req_type values.
pub const DUMP: u64 = 1;
pub const RESTORE: u64 = 2;
pub const PRE_DUMP: u64 = 4;
const NOTIFY: u64 = 6;

fn type_name(t: u64) -> &'static str {
    match t {
        DUMP => "DUMP",
        RESTORE => "RESTORE",
        PRE_DUMP => "PRE_DUMP",
        NOTIFY => "NOTIFY",
        _ => "UNKNOWN",
    }
}

/// What a notification carries.
pub struct Notice {
    pub script: String,
    pub pid: i32,
    /// orphan-pts-master: the restored terminal's new pty master.
    pub fd: Option<OwnedFd>,
}

fn bad(msg: impl Into<String>) -> ContainerError {
    ContainerError::Precondition(msg.into())
}

/// Runs one request through `criu swrk 3`; `notify` sees each notification
/// (an error fails the request). `setup` runs in criu's process before it
/// starts (to join the container's cgroup). Returns the restored pid (0
/// for a dump). `log` names criu's log file for error messages.
pub fn call(
    criu: &str,
    typ: u64,
    opts: &Pb,
    setup: Option<Box<dyn Fn() -> std::io::Result<()> + Send + Sync>>,
    notify: &mut dyn FnMut(Notice) -> Result<(), ContainerError>,
    log: &std::path::Path,
) -> Result<i32, ContainerError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| ContainerError::Sys {
        what: "criu socketpair".into(),
        source,
    })?;
    let their_fd: RawFd = theirs.as_raw_fd();
    let mut cmd = Command::new(criu);
    cmd.args(["swrk", "3"]);
    unsafe {
        cmd.pre_exec(move || {
            if let Some(f) = &setup {
                f()?;
            }
            // criu's end as fd 3, open across exec.
            let rc = if their_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(their_fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(super::io_err(format!("start {criu} swrk")))?;
    drop(theirs);
    let result = converse(&ours, typ, opts, notify, log);
    drop(ours);
    let status = child.wait().map_err(super::io_err("wait for criu"))?;
    let pid = result?;
    // A pre-dump leaves criu waiting for more: its exit status means nothing.
    if !status.success() && typ != PRE_DUMP {
        return Err(bad(format!(
            "criu failed: {status}\nlog file: {}",
            log.display()
        )));
    }
    Ok(pid)
}

fn converse(
    sock: &OwnedFd,
    typ: u64,
    opts: &Pb,
    notify: &mut dyn FnMut(Notice) -> Result<(), ContainerError>,
    log: &std::path::Path,
) -> Result<i32, ContainerError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| ContainerError::Sys { what, source }
    };
    let mut req = Pb::default();
    req.uint(1, typ).message(2, opts);
    send(sock.as_raw_fd(), &req.0, MsgFlags::MSG_NOSIGNAL).map_err(io("send the criu request"))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let (n, fd) = {
            let msg = recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io("read criu's response"))?;
            let mut fd = None;
            for c in msg.cmsgs().map_err(io("read criu's response"))? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    fd = fds.first().map(|f| unsafe { OwnedFd::from_raw_fd(*f) });
                }
            }
            (msg.bytes, fd)
        };
        if n == 0 {
            return Err(bad(format!(
                "criu closed its socket without a response\nlog file: {}",
                log.display()
            )));
        }
        let fields = decode(&buf[..n]).ok_or_else(|| bad("undecodable response from criu"))?;
        let get = |f: u32| fields.iter().find(|(k, _)| *k == f).map(|(_, v)| v.clone());
        let rtype = match get(1) {
            Some(Field::Varint(v)) => v,
            _ => 0,
        };
        if !matches!(get(2), Some(Field::Varint(1))) {
            let errno = match get(7) {
                Some(Field::Varint(v)) => v as i32,
                _ => 0,
            };
            let msg = match get(9) {
                Some(Field::Bytes(b)) => format!(": {}", String::from_utf8_lossy(&b)),
                _ => String::new(),
            };
            return Err(bad(format!(
                "criu failed: type {} errno {errno}{msg}\nlog file: {}",
                type_name(typ),
                log.display()
            )));
        }
        match rtype {
            NOTIFY => {
                let inner = match get(5) {
                    Some(Field::Bytes(b)) => decode(&b).unwrap_or_default(),
                    _ => vec![],
                };
                let script = inner.iter().find_map(|(k, v)| match (k, v) {
                    (1, Field::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                });
                let pid = inner.iter().find_map(|(k, v)| match (k, v) {
                    (2, Field::Varint(p)) => Some(*p as i32),
                    _ => None,
                });
                log::debug!("criu notify: {script:?} pid {pid:?}");
                notify(Notice {
                    script: script.unwrap_or_default(),
                    pid: pid.unwrap_or(0),
                    fd,
                })?;
                let mut ack = Pb::default();
                ack.uint(1, NOTIFY).flag(3, true);
                send(sock.as_raw_fd(), &ack.0, MsgFlags::MSG_NOSIGNAL)
                    .map_err(io("acknowledge criu's notification"))?;
            }
            t if t == typ => {
                let pid =
                    match get(4) {
                        Some(Field::Bytes(b)) => decode(&b)
                            .unwrap_or_default()
                            .into_iter()
                            .find_map(|(k, v)| match (k, v) {
                                (1, Field::Varint(p)) => Some(p as i32),
                                _ => None,
                            }),
                        _ => None,
                    };
                return Ok(pid.unwrap_or(0));
            }
            other => return Err(bad(format!("unexpected criu response type {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes_proto2() {
        let mut opts = Pb::default();
        opts.int(1, 7)
            .flag(3, true)
            .string(10, "dump.log")
            .int(2, -1)
            .pair(23, "/a", "/b");
        let f = decode(&opts.0).unwrap();
        assert!(matches!(f[0], (1, Field::Varint(7))));
        assert!(matches!(f[1], (3, Field::Varint(1))));
        assert!(matches!(&f[2], (10, Field::Bytes(b)) if b == b"dump.log"));
        assert!(matches!(f[3], (2, Field::Varint(v)) if v as i64 as i32 == -1));
        let Field::Bytes(inner) = &f[4].1 else {
            panic!()
        };
        assert!(matches!(&decode(inner).unwrap()[1], (2, Field::Bytes(b)) if b == b"/b"));
        // 300 as a varint: ac 02.
        let mut p = Pb::default();
        p.uint(1, 300);
        assert_eq!(p.0, vec![0x08, 0xac, 0x02]);
    }
}
