//! `run`: create + start, and in the foreground wait for the container,
//! forwarding signals to it, then delete it and return its exit code.

use std::path::Path;

use super::create::{create, CreateOpts};
use super::foreground::Foreground;
use super::{delete, start, ContainerError};

pub fn run(root: &Path, opts: &CreateOpts, detach: bool) -> Result<i32, ContainerError> {
    let st = create(root, opts)?;
    if detach {
        start::start(root, &opts.id)?;
        return Ok(0);
    }
    // Block the forwarded signals (and SIGCHLD) now that the container's
    // process exists: a mask set before the fork would be inherited by the
    // setup code of init (which unblocks only at execve).
    let mut fg = match Foreground::block() {
        Ok(fg) => fg,
        Err(e) => {
            let _ = delete::delete(root, &opts.id, true);
            return Err(e);
        }
    };
    if let Err(e) = start::start(root, &opts.id) {
        let _ = delete::delete(root, &opts.id, true);
        return Err(e);
    }
    let code = fg.wait(st.pid, None);
    drop(fg);
    delete::delete(root, &opts.id, true)?;
    Ok(code)
}
