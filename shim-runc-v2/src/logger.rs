//! Logging through the `log` crate into containerd's shim log FIFO.
//!
//! containerd creates `<bundle>/log` (a FIFO) before starting a shim and
//! copies whatever the shim writes there into its own log. Lines use the
//! logrus text format the Go shim writes (`time=... level=... msg=...`), so
//! they read the same in containerd's output.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    out: Mutex<Option<File>>,
    level: LevelFilter,
    fields: String,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        let line = format!(
            "time=\"{}\" level={level} msg={}{}\n",
            rfc3339_now(),
            quote(&r.args().to_string()),
            self.fields
        );
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = out.as_mut() {
            match f.write_all(line.as_bytes()) {
                Ok(()) => {}
                // No reader: containerd is restarting. The line is lost;
                // the FIFO is kept for the next containerd, which opens
                // it again when it finds this shim.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                // Anything else: stop logging rather than fail each time.
                Err(_) => *out = None,
            }
        }
    }

    fn flush(&self) {}
}

/// Install the logger. `fifo` is the shim log FIFO (opened without blocking:
/// when containerd is not reading it, logs are dropped); `None` discards.
pub fn init(fifo: Option<&Path>, debug: bool, fields: &[(&str, &str)]) {
    let out = fifo.and_then(|p| {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(p)
            .ok()
            .inspect(|f| {
                // Writes may block briefly while containerd drains the FIFO.
                use std::os::fd::AsRawFd;
                let fd = f.as_raw_fd();
                unsafe {
                    let fl = libc::fcntl(fd, libc::F_GETFL);
                    libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
                }
            })
    });
    let level = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let fields: String = fields
        .iter()
        .map(|(k, v)| format!(" {k}={}", quote(v)))
        .collect();
    let logger = Logger {
        out: Mutex::new(out),
        level,
        fields,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

/// logrus quoting: bare when safe, else a Go-style quoted string.
fn quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if safe {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Now as RFC 3339 UTC with nanoseconds.
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        let now = rfc3339_now();
        assert!(now.ends_with('Z') && now.len() == 30, "{now}");
        assert!(humantime::parse_rfc3339(&now).is_ok(), "{now}");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(quote(""), "\"\"");
    }
}
