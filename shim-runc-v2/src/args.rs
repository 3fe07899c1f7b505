//! Command-line flags, parsed the way Go's `flag` package does (containerd
//! starts every shim with Go-style flags): `-name value`, `-name=value`,
//! `--name value`; boolean flags take no value (`-debug`, `-debug=true`).
//! Parsing stops at the first argument that is not a flag: the action
//! (`start`, `delete`, or none to serve).

use crate::error::{Error, Result};

/// The flags containerd passes to a runtime-v2 shim.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    pub debug: bool,
    pub version: bool,
    /// `-info`: print the RuntimeInfo protobuf and exit.
    pub info: bool,
    pub namespace: String,
    pub id: String,
    pub socket: String,
    pub bundle: String,
    pub address: String,
    pub publish_binary: String,
    /// `start`, `delete` or empty (serve the task API).
    pub action: String,
    /// Arguments after the action.
    pub rest: Vec<String>,
}

fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(Error::InvalidArgument(format!(
            "invalid boolean value {v:?} for -{name}"
        ))),
    }
}

/// Parse `args` (without the program name).
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Flags> {
    let mut f = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_ref();
        if arg == "--" {
            i += 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        let body = arg.trim_start_matches('-');
        if arg.len() - body.len() > 2 || body.is_empty() {
            return Err(Error::InvalidArgument(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        match name {
            "debug" | "v" | "version" | "info" => {
                let v = match inline {
                    Some(v) => parse_bool(name, v)?,
                    None => true,
                };
                match name {
                    "debug" => f.debug = v,
                    "info" => f.info = v,
                    _ => f.version = v,
                }
            }
            "namespace" | "id" | "socket" | "bundle" | "address" | "publish-binary" => {
                let value = match inline {
                    Some(v) => v.to_owned(),
                    None => {
                        i += 1;
                        args.get(i).map(|s| s.as_ref().to_owned()).ok_or_else(|| {
                            Error::InvalidArgument(format!("flag needs an argument: -{name}"))
                        })?
                    }
                };
                let slot = match name {
                    "namespace" => &mut f.namespace,
                    "id" => &mut f.id,
                    "socket" => &mut f.socket,
                    "bundle" => &mut f.bundle,
                    "address" => &mut f.address,
                    _ => &mut f.publish_binary,
                };
                *slot = value;
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "flag provided but not defined: -{name}"
                )))
            }
        }
        i += 1;
    }
    if i < args.len() {
        f.action = args[i].as_ref().to_owned();
        f.rest = args[i + 1..]
            .iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_start_line() {
        let f = parse(&[
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(f.namespace, "default");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert_eq!(f.publish_binary, "/usr/bin/containerd");
        assert_eq!(f.id, "c1");
        assert!(f.debug);
        assert_eq!(f.action, "start");
    }

    #[test]
    fn forms() {
        assert!(parse(&["-info"]).unwrap().info);
        let f = parse(&["--id=x", "-bundle=/b", "-debug=false", "-v", "delete", "-z"]).unwrap();
        assert_eq!(f.id, "x");
        assert_eq!(f.bundle, "/b");
        assert!(!f.debug);
        assert!(f.version);
        assert_eq!(f.action, "delete");
        assert_eq!(f.rest, vec!["-z"]);
        assert_eq!(parse::<&str>(&[]).unwrap(), Flags::default());
    }

    #[test]
    fn errors() {
        assert!(parse(&["-id"]).is_err());
        assert!(parse(&["-nope"]).is_err());
        assert!(parse(&["---id", "x"]).is_err());
        assert!(parse(&["-debug=maybe"]).is_err());
    }
}
