//! What each containerd hands the `start` action, and what it reads back.
//!
//! | containerd | gives the shim | reads from stdout |
//! |---|---|---|
//! | 1.6 | flags, `$TTRPC_ADDRESS`, runc options `Any` on stdin | the bare socket address |
//! | 1.7 | same, plus `$MAX_SHIM_VERSION=2`, `$GRPC_ADDRESS`, `$NAMESPACE` | bare address, or JSON of version 2 |
//! | 2.0 – 2.2 | same as 1.7 | bare address (task API v2), or JSON up to version 3 |
//! | 2.3 + | a protobuf `BootstrapParams` on stdin (flags and env still set) | protobuf `BootstrapResult` (JSON and bare still read) |
//!
//! 2.3 is recognised by its stdin: a `BootstrapParams` naming the same id
//! and namespace as the flags (runc options, an `Any`, decode as one too:
//! its type URL lands in the id). 1.7 and 2.0–2.2 set the same variables,
//! and 1.7 refuses a JSON version 3, so the shim asks the `-publish-binary`
//! (containerd itself) which major version it is: the module path in its Go
//! build info (`github.com/containerd/containerd/v2/...` from 2.0 on). When
//! that cannot be told, the bare address is the answer every version reads.
//! `$RUNC_RS_SHIM_REPLY=address|json` overrides the choice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, LogLevel};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Enum, Message};

use crate::args::Flags;
use crate::error::{Error, Result};

/// The task API version this shim serves (v2 and v3 service names alike).
pub const TASK_API_VERSION: i32 = 3;
/// Overrides the reply format of a legacy `start`.
pub const REPLY_ENV: &str = "RUNC_RS_SHIM_REPLY";

/// How to answer `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The bare `unix://` address (containerd 1.6, 1.7).
    Address,
    /// `{"version":3,"address":...,"protocol":"ttrpc"}` (containerd 2.0–2.2).
    Json,
    /// A protobuf `BootstrapResult` (containerd 2.3+).
    Bootstrap,
}

/// Everything `start` needs, whichever way containerd gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct StartParams {
    pub id: String,
    pub namespace: String,
    /// containerd's gRPC address (`-address`): part of the socket's hash.
    pub grpc_address: String,
    /// containerd's ttrpc address, where events go (`$TTRPC_ADDRESS`).
    pub ttrpc_address: String,
    /// containerd's binary (`-publish-binary`).
    pub containerd_binary: String,
    pub debug: bool,
    /// The runtime options (runc's or CRI's), if any.
    pub options: Option<Any>,
    /// Where to put the socket (2.3's `socket_dir`), else the default.
    pub socket_dir: Option<String>,
    pub reply: Reply,
}

/// Decide the protocol from `stdin`, the flags and `env` (a lookup).
pub fn start_params(
    flags: &Flags,
    stdin: &[u8],
    env: impl Fn(&str) -> Option<String>,
) -> Result<StartParams> {
    if let Some(p) = bootstrap_params(stdin, flags)? {
        let debug = flags.debug || p.log_level.value() <= LogLevel::LOG_LEVEL_DEBUG.value();
        let options = p
            .extensions
            .iter()
            .filter_map(|e| e.value.as_ref())
            .find(|a| is_options(a))
            .cloned();
        let or = |a: String, b: &str| if a.is_empty() { b.to_owned() } else { a };
        return Ok(StartParams {
            grpc_address: or(p.containerd_grpc_address, &flags.address),
            ttrpc_address: or(
                p.containerd_ttrpc_address,
                &env("TTRPC_ADDRESS").unwrap_or_default(),
            ),
            containerd_binary: or(p.containerd_binary, &flags.publish_binary),
            id: p.instance_id,
            namespace: p.namespace,
            debug,
            options,
            socket_dir: p.socket_dir.filter(|d| !d.is_empty()),
            reply: Reply::Bootstrap,
        });
    }
    let options = if stdin.is_empty() {
        None
    } else {
        let a = Any::parse_from_bytes(stdin)
            .map_err(|e| Error::InvalidArgument(format!("runtime options on stdin: {e}")))?;
        (!a.type_url.is_empty()).then_some(a)
    };
    let reply = match env(REPLY_ENV).as_deref() {
        Some("address") => Reply::Address,
        Some("json") => Reply::Json,
        _ if env("MAX_SHIM_VERSION").is_none() => Reply::Address,
        _ => match containerd_major(Path::new(&flags.publish_binary)) {
            Some(major) if major >= 2 => Reply::Json,
            _ => Reply::Address,
        },
    };
    Ok(StartParams {
        id: flags.id.clone(),
        namespace: flags.namespace.clone(),
        grpc_address: if flags.address.is_empty() {
            env("GRPC_ADDRESS").unwrap_or_default()
        } else {
            flags.address.clone()
        },
        ttrpc_address: env("TTRPC_ADDRESS").unwrap_or_default(),
        containerd_binary: flags.publish_binary.clone(),
        debug: flags.debug,
        options,
        socket_dir: None,
        reply,
    })
}

fn is_options(a: &Any) -> bool {
    let name = a.type_url.rsplit('/').next().unwrap_or_default();
    matches!(
        name,
        "containerd.runc.v1.Options"
            | "containerd.linux.runc.RuncOptions"
            | "runtimeoptions.v1.Options"
    )
}

/// `stdin` as 2.3's `BootstrapParams` for this shim, `None` when it is not
/// one (legacy options or nothing).
fn bootstrap_params(stdin: &[u8], flags: &Flags) -> Result<Option<BootstrapParams>> {
    if stdin.is_empty() {
        return Ok(None);
    }
    let Ok(p) = BootstrapParams::parse_from_bytes(stdin) else {
        return Ok(None);
    };
    if p.instance_id == flags.id && p.namespace == flags.namespace {
        return Ok(Some(p));
    }
    // An `Any` reads as instance_id + namespace and nothing else.
    let only_identity = BootstrapParams {
        instance_id: p.instance_id.clone(),
        namespace: p.namespace.clone(),
        ..Default::default()
    };
    if p == only_identity {
        return Ok(None);
    }
    Err(Error::InvalidArgument(format!(
        "bootstrap parameters for {}/{} do not match the command line ({}/{})",
        p.namespace, p.instance_id, flags.namespace, flags.id
    )))
}

/// What `start` prints for `address`.
pub fn encode_reply(reply: Reply, address: &str) -> Vec<u8> {
    match reply {
        Reply::Address => address.as_bytes().to_vec(),
        Reply::Json => serde_json::json!({
            "version": TASK_API_VERSION,
            "address": address,
            "protocol": "ttrpc",
        })
        .to_string()
        .into_bytes(),
        Reply::Bootstrap => BootstrapResult {
            version: TASK_API_VERSION,
            address: address.to_owned(),
            protocol: "ttrpc".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap_or_default(),
    }
}

/// containerd's major version from the Go build info of its binary: the
/// main package path of 2.x is `github.com/containerd/containerd/v2/...`.
/// `None` when the file is not a Go ELF binary with inline build info.
pub fn containerd_major(binary: &Path) -> Option<u32> {
    let info = go_build_info(binary)?;
    // The module info is framed by 16-byte markers: find the line itself.
    let at = info.find("path\t")?;
    let path = info[at + 5..].lines().next()?;
    let rest = path.strip_prefix("github.com/containerd/containerd")?;
    match rest.strip_prefix("/v").and_then(|r| r.split('/').next()) {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v.parse().ok(),
        _ => Some(1),
    }
}

/// The module info string of a Go binary (`.go.buildinfo`, Go 1.18+
/// layout: 32-byte header, then two varint-prefixed strings).
fn go_build_info(binary: &Path) -> Option<String> {
    let mut f = File::open(binary).ok()?;
    let mut read_at = |off: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        f.seek(SeekFrom::Start(off)).ok()?;
        f.read_exact(&mut buf).ok()?;
        Some(buf)
    };
    let eh = read_at(0, 64)?;
    // ELF, 64-bit, little-endian: the only kind containerd ships for Linux
    // hosts this shim runs on.
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at =
        |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
    let u32_at =
        |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(&eh, 0x28),
        u16_at(&eh, 0x3a),
        u16_at(&eh, 0x3c),
        u16_at(&eh, 0x3e),
    );
    if shentsize < 64 || shnum == 0 || shnum > 4096 || shstrndx >= shnum {
        return None;
    }
    let sh = read_at(shoff, shentsize * shnum)?;
    let section = |i: usize| &sh[i * shentsize..(i + 1) * shentsize];
    let strtab = section(shstrndx);
    let names = read_at(
        u64_at(strtab, 0x18),
        (u64_at(strtab, 0x20) as usize).min(1 << 20),
    )?;
    let wanted = (0..shnum).map(section).find(|s| {
        let at = u32_at(s, 0) as usize;
        names
            .get(at..)
            .is_some_and(|n| n.starts_with(b".go.buildinfo\0"))
    })?;
    let size = (u64_at(wanted, 0x20) as usize).min(64 << 10);
    let data = read_at(u64_at(wanted, 0x18), size)?;
    if !data.starts_with(b"\xff Go buildinf:") || data.get(15)? & 2 == 0 {
        return None;
    }
    let mut pos = 32;
    let mut string = || -> Option<String> {
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = *data.get(pos)?;
            pos += 1;
            len |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let s = data.get(pos..pos + len)?;
        pos += len;
        Some(String::from_utf8_lossy(s).into_owned())
    };
    let _go_version = string()?;
    string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::bootstrap_api::Extension;
    use containerd_shim_protos::protobuf::MessageField;
    use std::collections::HashMap;

    fn flags() -> Flags {
        Flags {
            namespace: "ns".into(),
            id: "c1".into(),
            address: "/run/containerd/containerd.sock".into(),
            publish_binary: "/nonexistent/containerd".into(),
            action: "start".into(),
            ..Default::default()
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn runc_any() -> Any {
        let mut o = containerd_shim_protos::shim::oci::Options::new();
        o.binary_name = "runc".into();
        let mut a = Any::new();
        a.type_url = "containerd.runc.v1.Options".into();
        a.value = o.write_to_bytes().unwrap();
        a
    }

    #[test]
    fn containerd_1_6_gets_the_address() {
        let stdin = runc_any().write_to_bytes().unwrap();
        let p = start_params(&flags(), &stdin, env(&[("TTRPC_ADDRESS", "/t")])).unwrap();
        assert_eq!(p.reply, Reply::Address);
        assert_eq!(p.options.unwrap().type_url, "containerd.runc.v1.Options");
        assert_eq!(p.ttrpc_address, "/t");
        assert_eq!(encode_reply(Reply::Address, "unix:///s"), b"unix:///s");
    }

    #[test]
    fn legacy_with_max_shim_version_asks_the_binary() {
        // Unknown binary: the bare address, which every version reads.
        let e = env(&[("MAX_SHIM_VERSION", "2")]);
        assert_eq!(
            start_params(&flags(), &[], e).unwrap().reply,
            Reply::Address
        );
        let e = env(&[("MAX_SHIM_VERSION", "2"), (REPLY_ENV, "json")]);
        assert_eq!(start_params(&flags(), &[], e).unwrap().reply, Reply::Json);
        let j: serde_json::Value =
            serde_json::from_slice(&encode_reply(Reply::Json, "unix:///s")).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"version":3,"address":"unix:///s","protocol":"ttrpc"})
        );
    }

    #[test]
    fn bootstrap_params_on_stdin() {
        let mut p = BootstrapParams::new();
        p.instance_id = "c1".into();
        p.namespace = "ns".into();
        p.containerd_ttrpc_address = "/run/containerd/containerd.sock.ttrpc".into();
        p.log_level = LogLevel::LOG_LEVEL_DEBUG.into();
        p.socket_dir = Some("/tmp/s".into());
        p.extensions.push(Extension {
            value: MessageField::some(runc_any()),
            ..Default::default()
        });
        let got = start_params(&flags(), &p.write_to_bytes().unwrap(), env(&[])).unwrap();
        assert_eq!(got.reply, Reply::Bootstrap);
        assert!(got.debug);
        assert_eq!(got.socket_dir.as_deref(), Some("/tmp/s"));
        assert_eq!(got.options.unwrap().type_url, "containerd.runc.v1.Options");
        assert_eq!(got.ttrpc_address, "/run/containerd/containerd.sock.ttrpc");
        assert_eq!(got.grpc_address, "/run/containerd/containerd.sock");
        let r = BootstrapResult::parse_from_bytes(&encode_reply(Reply::Bootstrap, "unix:///x"))
            .unwrap();
        assert_eq!(
            (r.version, r.address.as_str(), r.protocol.as_str()),
            (3, "unix:///x", "ttrpc")
        );
        // Params for another shim are an error, not options.
        p.instance_id = "other".into();
        assert!(start_params(&flags(), &p.write_to_bytes().unwrap(), env(&[])).is_err());
    }

    #[test]
    fn build_info_of_this_test_binary_and_of_non_go_files() {
        // Not Go: no build info.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(containerd_major(&exe), None);
        assert_eq!(containerd_major(Path::new("/nonexistent")), None);
        // Debian's containerd 1.6, where installed.
        let installed = Path::new("/usr/bin/containerd");
        if installed.exists() {
            assert_eq!(containerd_major(installed), Some(1));
        }
    }
}
