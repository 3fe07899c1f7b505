//! Typed messages between the parent, intermediate and init processes.
//!
//! A SOCK_SEQPACKET socketpair keeps message boundaries, so each message is
//! one JSON datagram; a closed peer reads as `Eof`, which tells the parent
//! that a child died without reporting.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Message {
    /// parent → intermediate: you are in the cgroup, go on.
    Go,
    /// intermediate → parent: I unshared a user namespace, write my id maps.
    UserNsReady,
    /// parent → intermediate: uid_map and gid_map are written.
    MappingsWritten,
    /// intermediate → parent: init's pid (in the parent's pid namespace).
    InitPid(i32),
    /// init → parent: mounts are in place, run createRuntime/prestart hooks.
    RunCreateRuntimeHooks,
    /// parent → init: those hooks succeeded.
    HooksDone,
    /// init → parent: the seccomp notify fd follows as SCM_RIGHTS.
    SeccompNotifyFd,
    /// init → parent: set up and now waiting on exec.fifo.
    Ready,
    /// any child → parent: setup failed with this message.
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("sync channel: {0}")]
    Io(nix::Error),
    #[error("sync channel: peer closed the channel")]
    Eof,
    #[error("sync channel: bad message: {0}")]
    Decode(serde_json::Error),
    #[error("sync channel: expected {expected}, got {got:?}")]
    Unexpected {
        expected: &'static str,
        got: Message,
    },
}

pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> Result<(Channel, Channel), ChannelError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(ChannelError::Io)?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Message) -> Result<(), ChannelError> {
        let data = serde_json::to_vec(msg).expect("message serializes");
        send(self.fd.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL).map_err(ChannelError::Io)?;
        Ok(())
    }

    pub fn recv(&self) -> Result<Message, ChannelError> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(nix::Error::EINTR) => continue,
                r => break r.map_err(ChannelError::Io)?,
            }
        };
        if n == 0 {
            return Err(ChannelError::Eof);
        }
        serde_json::from_slice(&buf[..n]).map_err(ChannelError::Decode)
    }

    /// Receives `expected`, turning a child's `Error` into an error.
    pub fn expect(&self, expected: Message, name: &'static str) -> Result<(), ChildOrChannel> {
        match self.recv()? {
            m if m == expected => Ok(()),
            Message::Error(e) => Err(ChildOrChannel::Child(e)),
            got => Err(ChannelError::Unexpected {
                expected: name,
                got,
            }
            .into()),
        }
    }

    pub fn raw(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// A failure reported by a child, or a broken channel.
#[derive(Debug, thiserror::Error)]
pub enum ChildOrChannel {
    #[error("{0}")]
    Child(String),
    #[error(transparent)]
    Channel(#[from] ChannelError),
}
