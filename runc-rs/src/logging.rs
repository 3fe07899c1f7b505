//! runc's logging contract: `--log FILE` and `--log-format text|json`.
//!
//! containerd's Go shim passes `--log <bundle>/log.json --log-format json`
//! and, when a command fails, reports the `msg` of the last JSON line to the
//! user; the line shape therefore follows logrus: `{"level","msg","time"}`.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use crate::utils::rfc3339_nano;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

struct Logger {
    out: Mutex<Option<File>>,
    format: LogFormat,
    level: log::LevelFilter,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let msg = record.args().to_string();
        let time = rfc3339_nano(std::time::SystemTime::now());
        let line = match self.format {
            LogFormat::Json => {
                let v = serde_json::json!({"level": level, "msg": msg, "time": time});
                format!("{v}\n")
            }
            LogFormat::Text => format!("time=\"{time}\" level={level} msg={:?}\n", msg),
        };
        let mut guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => {
                // Without --log, errors are printed by main; the rest goes
                // to stderr when its level is enabled.
                if record.level() != log::Level::Error {
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger. Opening the log file is the only fallible step; the
/// file is opened in append mode because the shim reuses one file per bundle.
pub fn init(path: Option<&std::path::Path>, format: LogFormat, debug: bool) -> std::io::Result<()> {
    let out = match path {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        None => None,
    };
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    };
    let logger = Logger {
        out: Mutex::new(out),
        format,
        level,
    };
    let _ = log::set_boxed_logger(Box::new(logger));
    log::set_max_level(level);
    Ok(())
}

/// Whether a `--log` file is in use (main then prints errors to stderr too).
pub fn to_file(path: Option<&std::path::Path>) -> bool {
    path.is_some()
}
