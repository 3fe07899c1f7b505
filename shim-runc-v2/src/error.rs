//! The shim's error type and its mapping onto ttrpc status codes.
//!
//! Every library module returns [`Error`]; the service layer turns it into a
//! ttrpc status with [`Error::code`], the same codes containerd's `errdefs`
//! expects from the Go shim (`NotFound` for an unknown container or a
//! finished process, `FailedPrecondition` for an operation the process state
//! forbids, ...).

use std::io;

use ttrpc::Code;

/// Result alias of the shim's library modules.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("{0}: not implemented")]
    Unimplemented(String),
    /// The OCI runtime failed; the message is the runtime's own (its last
    /// JSON log line) prefixed with what the shim was doing.
    #[error("{0}")]
    Runtime(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The ttrpc (gRPC) status code containerd maps back to an errdefs error.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => Code::NOT_FOUND,
            Error::Runtime(_) | Error::Io { .. } | Error::Other(_) => Code::UNKNOWN,
        }
    }

    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wrap an errno (nix) with what was being done.
    pub fn sys(context: impl Into<String>, errno: nix::errno::Errno) -> Error {
        Error::io(context, io::Error::from_raw_os_error(errno as i32))
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// `map_err` helper: `.map_err(io_ctx("open x"))`.
pub fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Error::NotFound("x".into()).code(), Code::NOT_FOUND);
        assert_eq!(
            Error::FailedPrecondition("x".into()).code(),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(Error::Runtime("x".into()).code(), Code::UNKNOWN);
        let e = Error::io("open", io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.code(), Code::NOT_FOUND);
        let t: ttrpc::Error = Error::AlreadyExists("c1".into()).into();
        match t {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::ALREADY_EXISTS);
                assert_eq!(s.message(), "c1: already exists");
            }
            other => panic!("{other:?}"),
        }
    }
}
