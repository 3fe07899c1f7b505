//! `-info`: the runtime options (an `Any`) on stdin, a `RuntimeInfo`
//! protobuf on stdout: the shim's name and version, the options echoed
//! back, and the runtime binary's `features` document (the OCI features
//! JSON, as containerd's typeurl packs it).

use std::io::Read;
use std::process::{Command, Stdio};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::error::{io_ctx, Error, Result};
use crate::options::{resolve_runtime, RuncOptions};
use crate::RUNTIME_NAME;

/// The type URL containerd registers the runtime-spec features under.
pub const FEATURES_TYPE: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Build the RuntimeInfo for the options `input` (empty: none).
pub fn runtime_info(input: &[u8]) -> Result<Vec<u8>> {
    let options = if input.is_empty() {
        None
    } else {
        let a = Any::parse_from_bytes(input)
            .map_err(|e| Error::InvalidArgument(format!("runtime options on stdin: {e}")))?;
        (!a.type_url.is_empty()).then_some(a)
    };
    let opts = RuncOptions::from_any(options.as_ref())?;
    let binary = resolve_runtime(&opts.binary_name)?;
    let mut info = RuntimeInfo::new();
    info.name = RUNTIME_NAME.to_owned();
    info.version = MessageField::some(RuntimeVersion {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    });
    if options.is_some() {
        let mut a = Any::new();
        a.type_url = "containerd.runc.v1.Options".into();
        a.value = opts
            .to_proto()
            .write_to_bytes()
            .map_err(|e| Error::Other(e.to_string()))?;
        info.options = MessageField::some(a);
    }
    // A runtime without `features` (older ones) leaves the field unset, as
    // with the Go shim.
    let out = Command::new(&binary)
        .arg("features")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(io_ctx(format!("run {} features", binary.display())))?;
    let doc = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && serde_json::from_str::<serde_json::Value>(&doc).is_ok() {
        let mut a = Any::new();
        a.type_url = FEATURES_TYPE.into();
        a.value = doc.trim().as_bytes().to_vec();
        info.features = MessageField::some(a);
    }
    info.write_to_bytes()
        .map_err(|e| Error::Other(e.to_string()))
}

/// Read the options from stdin (when piped) and build the RuntimeInfo.
pub fn run() -> Result<Vec<u8>> {
    let mut input = Vec::new();
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        std::io::stdin()
            .read_to_end(&mut input)
            .map_err(io_ctx("read stdin"))?;
    }
    runtime_info(&input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_with_a_fake_runtime() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("fake-runc");
        std::fs::write(
            &bin,
            "#!/bin/sh\n[ \"$1\" = features ] && echo '{\"ociVersionMin\":\"1.0.0\"}'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut o = containerd_shim_protos::shim::oci::Options::new();
        o.binary_name = bin.to_string_lossy().into_owned();
        let mut a = Any::new();
        a.type_url = "containerd.runc.v1.Options".into();
        a.value = o.write_to_bytes().unwrap();
        let out = runtime_info(&a.write_to_bytes().unwrap()).unwrap();
        let info = RuntimeInfo::parse_from_bytes(&out).unwrap();
        assert_eq!(info.name, RUNTIME_NAME);
        assert_eq!(info.features.type_url, FEATURES_TYPE);
        assert_eq!(info.features.value, br#"{"ociVersionMin":"1.0.0"}"#);
        assert_eq!(info.options.type_url, "containerd.runc.v1.Options");
        let bad = runtime_info(b"\xff\xff");
        assert!(matches!(bad, Err(Error::InvalidArgument(_))));
    }
}
