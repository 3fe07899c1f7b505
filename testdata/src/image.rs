//! OCI image archives (`oci-archive`: a tar of an OCI image layout) built
//! offline from the busybox rootfs.
//!
//! Why: the daemon-lite and shim tests need an image in containerd and
//! podman, and the machine has no registry access. One archive format is
//! accepted by both `ctr images import` (containerd 1.6) and `podman load`:
//! containerd names the image from the `io.containerd.image.name`
//! annotation, podman (libimage) reads the same annotation first and falls
//! back to `org.opencontainers.image.ref.name`.
//!
//! Why deterministic (sorted entries, fixed mtimes, uid/gid 0, fixed gzip
//! header): the same inputs give the same digests, so a test can compare
//! image IDs across runs and tools, and re-imports are no-ops.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::bundle::temp_dir;
use crate::rootfs::build_rootfs;
use crate::spec::DEFAULT_PATH;

/// mtime of every tar entry and `created` of the image: 2000-01-01T00:00:00Z.
pub const FIXED_MTIME: u64 = 946_684_800;
/// [`FIXED_MTIME`] as RFC 3339, for the image config.
pub const FIXED_CREATED: &str = "2000-01-01T00:00:00Z";

/// Reference used by the `testdata image` command when none is given.
pub const DEFAULT_REFERENCE: &str = "docker.io/library/busybox:latest";

/// OCI media types used in the archive.
pub mod media {
    /// Image index (`index.json`).
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// Image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// gzip-compressed layer tar.
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
}

/// Annotation containerd (and podman, first) reads for the image name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Standard OCI annotation for the tag.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let sum = Sha256::digest(data);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in sum {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A parsed image reference, normalized like docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Full name with tag, e.g. `docker.io/library/busybox:latest`.
    pub full: String,
    /// Just the tag, e.g. `latest`.
    pub tag: String,
}

/// Normalize `reference` the way docker/containerd do: a missing registry
/// becomes `docker.io`, a single docker.io path component gets `library/`,
/// a missing tag becomes `latest`. `busybox` -> `docker.io/library/busybox:latest`,
/// `localhost/x:1` stays. Digest references (`@sha256:`) are rejected: the
/// archive's digest is whatever the content hashes to.
pub fn normalize_reference(reference: &str) -> io::Result<Reference> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("reference {reference:?}: {why}"),
        )
    };
    if reference.is_empty() || reference.contains('@') || reference.contains(char::is_whitespace) {
        return Err(bad("empty, digest or whitespace not supported"));
    }
    let (name, tag) = match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => (&reference[..i], &reference[i + 1..]),
        _ => (reference, "latest"),
    };
    if name.is_empty() || tag.is_empty() || name.ends_with('/') || name.starts_with('/') {
        return Err(bad("malformed"));
    }
    let (domain, path) = match name.split_once('/') {
        Some((d, rest)) if d.contains('.') || d.contains(':') || d == "localhost" => {
            (d.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("repository names must be lowercase"));
    }
    Ok(Reference {
        full: format!("{domain}/{path}:{tag}"),
        tag: tag.to_owned(),
    })
}

/// OCI architecture name of the host (the rootfs holds the host's busybox).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A tar header with the fields every entry shares: fixed mtime, root owner.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(FIXED_MTIME);
    // Empty user/group names: ownership is numeric only.
    let _ = h.set_username("");
    let _ = h.set_groupname("");
    h
}

/// Every path under `root` (relative), directories included, sorted by
/// path components so a directory always precedes its contents.
fn walk_sorted(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push(child.clone());
            }
            out.push(child);
        }
    }
    out.sort();
    Ok(out)
}

/// An uncompressed, deterministic tar of the directory `root` for use as a
/// layer: entries sorted, mtimes fixed, uid/gid 0, symlinks kept as
/// symlinks, permission bits (incl. sticky) preserved. Only directories,
/// regular files and symlinks are supported (that is all a rootfs built by
/// [`build_rootfs`] contains).
pub fn layer_tar(root: &Path) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    for rel in walk_sorted(root)? {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path)?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, &rel, &target)?;
        } else if ft.is_dir() {
            let mut h = header(tar::EntryType::Directory, mode, 0);
            let mut name = rel.into_os_string();
            name.push("/");
            b.append_data(&mut h, &name, io::empty())?;
        } else if ft.is_file() {
            let data = fs::read(&path)?;
            let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
            b.append_data(&mut h, &rel, data.as_slice())?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{}: unsupported file type in layer", path.display()),
            ));
        }
    }
    b.into_inner()
}

/// gzip `data` with a fixed header (mtime 0, no name), so equal input
/// gives equal output.
pub fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2), Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256_digest(data), "size": data.len() })
}

/// The parts of an image layout before they are written out; kept public
/// so tests can inspect what went into an archive without re-reading it.
#[derive(Debug, Clone)]
pub struct ImageLayout {
    /// Normalized reference (`io.containerd.image.name` / `ref.name`).
    pub reference: Reference,
    /// Content-addressed blobs: (digest `sha256:<hex>`, bytes).
    pub blobs: Vec<(String, Vec<u8>)>,
    /// `index.json` bytes.
    pub index: Vec<u8>,
    /// Digest of the manifest blob.
    pub manifest_digest: String,
    /// Digest of the config blob (the image ID podman and docker show).
    pub config_digest: String,
}

/// Build the image layout (blobs + index) for the busybox rootfs, `Cmd ["sh"]`.
pub fn image_layout(reference: &str) -> io::Result<ImageLayout> {
    image_layout_with_cmd(reference, &["sh"])
}

/// Like [`image_layout`], with `cmd` as the image's `Cmd` (a CRI sandbox
/// image needs one that keeps running, as `pause` does).
pub fn image_layout_with_cmd(reference: &str, cmd: &[&str]) -> io::Result<ImageLayout> {
    let reference = normalize_reference(reference)?;
    let tmp = temp_dir()?;
    let rootfs = tmp.path().join("rootfs");
    build_rootfs(&rootfs)?;
    let layer = layer_tar(&rootfs)?;
    drop(tmp);
    let diff_id = sha256_digest(&layer);
    let layer_gz = gzip(&layer)?;

    let config = json!({
        "created": FIXED_CREATED,
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": [DEFAULT_PATH],
            "Cmd": cmd,
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{
            "created": FIXED_CREATED,
            "created_by": "runc-rs testdata: busybox rootfs",
            "comment": "single layer from Debian busybox-static",
        }],
    });
    let config = serde_json::to_vec(&config).map_err(io::Error::other)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "config": descriptor(media::CONFIG, &config),
        "layers": [descriptor(media::LAYER_GZIP, &layer_gz)],
    });
    let manifest = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    let mut mdesc = descriptor(media::MANIFEST, &manifest);
    mdesc["platform"] = json!({ "architecture": oci_arch(), "os": "linux" });
    mdesc["annotations"] = json!({
        ANNOTATION_IMAGE_NAME: reference.full,
        ANNOTATION_REF_NAME: reference.tag,
    });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::INDEX,
        "manifests": [mdesc],
    });
    let index = serde_json::to_vec(&index).map_err(io::Error::other)?;

    let manifest_digest = sha256_digest(&manifest);
    let config_digest = sha256_digest(&config);
    let blobs = vec![
        (sha256_digest(&layer_gz), layer_gz),
        (config_digest.clone(), config),
        (manifest_digest.clone(), manifest),
    ];
    Ok(ImageLayout {
        reference,
        blobs,
        index,
        manifest_digest,
        config_digest,
    })
}

/// `{"imageLayoutVersion":"1.0.0"}`: marks a directory/tar as an OCI layout.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

impl ImageLayout {
    /// Write the layout as an oci-archive (tar) to `w`. Entries:
    /// `blobs/`, `blobs/sha256/`, `blobs/sha256/<hex>` (sorted),
    /// `index.json`, `oci-layout`.
    pub fn write_archive<W: Write>(&self, w: W) -> io::Result<W> {
        let mut b = tar::Builder::new(w);
        for dir in ["blobs/", "blobs/sha256/"] {
            b.append_data(
                &mut header(tar::EntryType::Directory, 0o755, 0),
                dir,
                io::empty(),
            )?;
        }
        let mut blobs: Vec<_> = self.blobs.iter().collect();
        blobs.sort_by(|a, b| a.0.cmp(&b.0));
        blobs.dedup_by(|a, b| a.0 == b.0);
        for (digest, data) in blobs {
            let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
            b.append_data(&mut h, format!("blobs/sha256/{hex}"), data.as_slice())?;
        }
        let mut h = header(tar::EntryType::Regular, 0o644, self.index.len() as u64);
        b.append_data(&mut h, "index.json", self.index.as_slice())?;
        let mut h = header(tar::EntryType::Regular, 0o644, OCI_LAYOUT.len() as u64);
        b.append_data(&mut h, "oci-layout", OCI_LAYOUT)?;
        b.into_inner()
    }
}

/// Write an OCI image (busybox rootfs, one gzip layer, `Cmd ["sh"]`) as an
/// oci-archive to `out`, named `reference` (normalized, see
/// [`normalize_reference`]; e.g. `busybox` -> `docker.io/library/busybox:latest`).
///
/// Accepted by `ctr images import` (containerd 1.6), which names it from
/// `io.containerd.image.name`, and by `podman load -i`, which reads the same
/// annotation. The file is written to a sibling temp file and renamed, so a
/// reader never sees a half-written archive.
pub fn build_image_archive(out: &Path, reference: &str) -> io::Result<()> {
    build_image_archive_with_cmd(out, reference, &["sh"])
}

/// Like [`build_image_archive`], with `cmd` as the image's `Cmd`.
pub fn build_image_archive_with_cmd(out: &Path, reference: &str, cmd: &[&str]) -> io::Result<()> {
    let layout = image_layout_with_cmd(reference, cmd)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".testdata-image-")
        .tempfile_in(dir)?;
    let file = layout.write_archive(io::BufWriter::new(tmp.as_file()))?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    tmp.persist(out).map_err(|e| e.error)?;
    fs::set_permissions(out, fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_like_docker() {
        let n = |r| normalize_reference(r).unwrap();
        assert_eq!(n("busybox").full, "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.35").full, "docker.io/library/busybox:1.35");
        assert_eq!(n("busybox:1.35").tag, "1.35");
        assert_eq!(n("me/app").full, "docker.io/me/app:latest");
        assert_eq!(n("localhost/x").full, "localhost/x:latest");
        assert_eq!(n("localhost:5000/a/b:t").full, "localhost:5000/a/b:t");
        assert_eq!(n("quay.io/a/b").full, "quay.io/a/b:latest");
        assert_eq!(
            n("docker.io/library/busybox:latest").full,
            "docker.io/library/busybox:latest"
        );
        for bad in ["", "a@sha256:00", "Upper", "a:", "/a", "a b"] {
            assert!(normalize_reference(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn digest_format() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn layer_is_deterministic_and_normalized() {
        let tmp = temp_dir().unwrap();
        build_rootfs(tmp.path()).unwrap();
        let a = layer_tar(tmp.path()).unwrap();
        let b = layer_tar(tmp.path()).unwrap();
        assert_eq!(a, b);
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(a.as_slice());
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.gid().unwrap(), 0);
            assert_eq!(h.mtime().unwrap(), FIXED_MTIME);
            let p = e.path().unwrap().into_owned();
            if p == Path::new("bin/sh") {
                assert_eq!(h.entry_type(), tar::EntryType::Symlink);
                assert_eq!(e.link_name().unwrap().unwrap(), Path::new("busybox"));
            }
            if p == Path::new("tmp") {
                assert_eq!(h.mode().unwrap(), 0o1777);
            }
            names.push(p);
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&PathBuf::from("bin/busybox")));
        assert!(names.contains(&PathBuf::from("etc/passwd")));
    }
}
