//! Independent check of an oci-archive: re-read it and recompute every
//! digest, size and diff ID.
//!
//! Why: a wrong digest in an archive is only reported by containerd or
//! podman as an opaque import error, on a machine where they may not even
//! be installed. This module lets the crate's own tests (and anyone holding
//! an archive) prove the content addressing is right without those tools.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::GzDecoder;
use serde_json::Value;

use crate::image::{media, sha256_digest, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};

/// What [`verify_image_archive`] found in a valid archive.
#[derive(Debug, Clone)]
pub struct VerifiedImage {
    /// `io.containerd.image.name` of the (single) manifest.
    pub name: String,
    /// `org.opencontainers.image.ref.name` of the manifest.
    pub ref_name: String,
    /// Digest of the manifest.
    pub manifest_digest: String,
    /// Digest of the config (image ID).
    pub config_digest: String,
    /// The parsed image config.
    pub config: Value,
    /// Digests of the compressed layers, in order.
    pub layers: Vec<String>,
    /// Number of blobs in `blobs/sha256/`.
    pub blob_count: usize,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn parse(name: &str, data: &[u8]) -> io::Result<Value> {
    serde_json::from_slice(data).map_err(|e| invalid(format!("{name}: bad JSON: {e}")))
}

/// Look up the blob a descriptor points to and check size, digest and
/// media type against it.
fn resolve<'a>(
    blobs: &'a BTreeMap<String, Vec<u8>>,
    desc: &Value,
    want_media: &str,
    what: &str,
) -> io::Result<&'a [u8]> {
    let digest = desc["digest"]
        .as_str()
        .ok_or_else(|| invalid(format!("{what}: no digest")))?;
    let size = desc["size"]
        .as_u64()
        .ok_or_else(|| invalid(format!("{what}: no size")))?;
    let media = desc["mediaType"].as_str().unwrap_or("");
    if media != want_media {
        return Err(invalid(format!(
            "{what}: mediaType {media:?}, want {want_media:?}"
        )));
    }
    let data = blobs
        .get(digest)
        .ok_or_else(|| invalid(format!("{what}: blob {digest} missing")))?;
    if data.len() as u64 != size {
        return Err(invalid(format!(
            "{what}: size {size} but blob has {}",
            data.len()
        )));
    }
    Ok(data)
}

/// Read the oci-archive at `path` and verify it:
///
/// * `oci-layout` says version 1.0.0;
/// * every `blobs/sha256/<hex>` hashes to `<hex>`;
/// * `index.json` has exactly one manifest, whose descriptor (digest, size,
///   media type) matches its blob and carries both name annotations;
/// * the manifest's config and layer descriptors match their blobs;
/// * `rootfs.diff_ids[i]` is the sha256 of layer `i` after gunzip.
pub fn verify_image_archive(path: &Path) -> io::Result<VerifiedImage> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut ar = tar::Archive::new(File::open(path)?);
    for entry in ar.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        if files.insert(name.clone(), data).is_some() {
            return Err(invalid(format!("{name}: duplicate entry")));
        }
    }

    let layout = parse(
        "oci-layout",
        files
            .get("oci-layout")
            .ok_or_else(|| invalid("oci-layout missing".into()))?,
    )?;
    if layout["imageLayoutVersion"] != "1.0.0" {
        return Err(invalid(format!("oci-layout: {layout}")));
    }

    let mut blobs = BTreeMap::new();
    for (name, data) in &files {
        let Some(hex) = name.strip_prefix("blobs/sha256/") else {
            continue;
        };
        let digest = sha256_digest(data);
        if digest != format!("sha256:{hex}") {
            return Err(invalid(format!("{name}: content hashes to {digest}")));
        }
        blobs.insert(digest, data.clone());
    }

    let index = parse(
        "index.json",
        files
            .get("index.json")
            .ok_or_else(|| invalid("index.json missing".into()))?,
    )?;
    if index["schemaVersion"] != 2 {
        return Err(invalid("index.json: schemaVersion != 2".into()));
    }
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let [mdesc] = manifests.as_slice() else {
        return Err(invalid(format!(
            "index.json: {} manifests, want 1",
            manifests.len()
        )));
    };
    let annotation = |key: &str| -> io::Result<String> {
        mdesc["annotations"][key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("index.json: annotation {key} missing")))
    };
    let name = annotation(ANNOTATION_IMAGE_NAME)?;
    let ref_name = annotation(ANNOTATION_REF_NAME)?;

    let manifest = parse(
        "manifest",
        resolve(&blobs, mdesc, media::MANIFEST, "manifest")?,
    )?;
    if manifest["schemaVersion"] != 2 {
        return Err(invalid("manifest: schemaVersion != 2".into()));
    }
    let config_bytes = resolve(&blobs, &manifest["config"], media::CONFIG, "config")?;
    let config = parse("config", config_bytes)?;
    let layer_descs = manifest["layers"].as_array().cloned().unwrap_or_default();
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if layer_descs.is_empty() || layer_descs.len() != diff_ids.len() {
        return Err(invalid(format!(
            "{} layers but {} diff_ids",
            layer_descs.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (i, (ld, diff_id)) in layer_descs.iter().zip(&diff_ids).enumerate() {
        let gz = resolve(&blobs, ld, media::LAYER_GZIP, &format!("layer {i}"))?;
        let mut raw = Vec::new();
        GzDecoder::new(gz).read_to_end(&mut raw)?;
        let got = sha256_digest(&raw);
        if Some(got.as_str()) != diff_id.as_str() {
            return Err(invalid(format!(
                "layer {i}: diff_id {diff_id} but content is {got}"
            )));
        }
        layers.push(ld["digest"].as_str().unwrap_or_default().to_owned());
    }

    Ok(VerifiedImage {
        name,
        ref_name,
        manifest_digest: mdesc["digest"].as_str().unwrap_or_default().to_owned(),
        config_digest: manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        config,
        layers,
        blob_count: blobs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::temp_dir;
    use crate::image::{build_image_archive, image_layout};

    #[test]
    fn built_archive_verifies() {
        let tmp = temp_dir().unwrap();
        let out = tmp.path().join("img.tar");
        build_image_archive(&out, "docker.io/library/busybox:latest").unwrap();
        let v = verify_image_archive(&out).unwrap();
        assert_eq!(v.name, "docker.io/library/busybox:latest");
        assert_eq!(v.ref_name, "latest");
        assert_eq!(v.layers.len(), 1);
        assert_eq!(v.blob_count, 3);
        assert_eq!(v.config["os"], "linux");
        assert_eq!(v.config["architecture"], crate::image::oci_arch());
        assert_eq!(v.config["config"]["Cmd"], serde_json::json!(["sh"]));
        assert!(v.config["config"]["Env"][0]
            .as_str()
            .unwrap()
            .starts_with("PATH="));
        assert_eq!(v.config["history"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn archive_is_deterministic() {
        let tmp = temp_dir().unwrap();
        let (a, b) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
        build_image_archive(&a, "busybox").unwrap();
        build_image_archive(&b, "busybox").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }

    #[test]
    fn tampered_blob_is_rejected() {
        let tmp = temp_dir().unwrap();
        let mut layout = image_layout("busybox:t").unwrap();
        // Flip one byte of the config blob but keep its name: the blob no
        // longer hashes to its file name.
        let cfg = layout
            .blobs
            .iter_mut()
            .find(|(d, _)| *d == layout.config_digest)
            .unwrap();
        let last = cfg.1.len() - 2;
        cfg.1[last] ^= 0x20;
        let out = tmp.path().join("bad.tar");
        layout.write_archive(File::create(&out).unwrap()).unwrap();
        let err = verify_image_archive(&out).unwrap_err();
        assert!(err.to_string().contains("hashes to"), "{err}");
    }
}
