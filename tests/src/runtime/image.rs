//! The test image, built here without a shell or a registry: one layer with a static
//! `/bin/busybox` and its applets as symlinks.
//!
//! The tarball is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) that
//! also carries a Docker `manifest.json` pointing at the same blobs, so both
//! `ctr images import` and `docker load` (which only reads `manifest.json` before Docker 25)
//! take it.

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The reference the image is tagged with in every runtime.
pub const IMAGE_REF: &str = "egret.test/busybox:1";

/// The busybox applets linked into `/bin`.
pub const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "echo", "env", "false", "hostname", "id", "ip", "ls", "nc", "ps", "sleep",
    "test", "true", "wget", "[", "printf", "timeout", "ifconfig",
];

const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What [`build_busybox_image`] wrote.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The tarball.
    pub path: PathBuf,
    pub reference: String,
    /// `sha256:<hex>` of the manifest (the image's digest in containerd).
    pub manifest_digest: String,
    /// `sha256:<hex>` of the config (the image id in Docker).
    pub config_digest: String,
    /// `sha256:<hex>` of the layer (uncompressed, so also its diff id).
    pub layer_digest: String,
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// The OCI architecture name of this machine.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn add_file<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, u64::try_from(data.len())?);
    b.append_data(&mut h, path, data)
        .with_context(|| format!("tar: add {path}"))
}

fn add_dir<W: std::io::Write>(b: &mut tar::Builder<W>, path: &str, mode: u32) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    b.append_data(&mut h, path, std::io::empty())
        .with_context(|| format!("tar: add {path}"))
}

fn add_symlink<W: std::io::Write>(b: &mut tar::Builder<W>, path: &str, target: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, path, target)
        .with_context(|| format!("tar: add {path} -> {target}"))
}

/// The single layer: `/bin/busybox`, the applet symlinks, the usual empty directories and a
/// minimal `/etc/passwd` and `/etc/group`.
pub fn busybox_layer(busybox: &[u8]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("proc/", 0o555),
        ("root/", 0o700),
        ("sys/", 0o555),
        ("tmp/", 0o1777),
        ("var/", 0o755),
    ] {
        add_dir(&mut b, dir, mode)?;
    }
    add_file(&mut b, "bin/busybox", 0o755, busybox)?;
    for applet in APPLETS {
        add_symlink(&mut b, &format!("bin/{applet}"), "busybox")?;
    }
    add_file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    add_file(&mut b, "etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    b.into_inner().context("finish layer tar")
}

/// Builds the image tarball at `out` from the static busybox at `busybox`, tagged `reference`.
pub fn build_busybox_image(busybox: &Path, reference: &str, out: &Path) -> Result<BuiltImage> {
    let bin = std::fs::read(busybox).with_context(|| format!("read {}", busybox.display()))?;
    let layer = busybox_layer(&bin)?;
    let layer_hex = sha256_hex(&layer);
    let config = serde_json::to_vec(&json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": "egret e2e busybox"}
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "egret-e2e: static busybox"}]
    }))?;
    let config_hex = sha256_hex(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": [{"mediaType": MT_LAYER, "digest": format!("sha256:{layer_hex}"), "size": layer.len()}]
    }))?;
    let manifest_hex = sha256_hex(&manifest);
    let tag = reference.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest.len(),
            "platform": {"architecture": oci_arch(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": reference,
                "org.opencontainers.image.ref.name": tag
            }
        }]
    }))?;
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": format!("blobs/sha256/{config_hex}"),
        "RepoTags": [reference],
        "Layers": [format!("blobs/sha256/{layer_hex}")]
    }]))?;

    let file = std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    add_file(
        &mut b,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    add_dir(&mut b, "blobs/", 0o755)?;
    add_dir(&mut b, "blobs/sha256/", 0o755)?;
    add_file(&mut b, &format!("blobs/sha256/{layer_hex}"), 0o644, &layer)?;
    add_file(
        &mut b,
        &format!("blobs/sha256/{config_hex}"),
        0o644,
        &config,
    )?;
    add_file(
        &mut b,
        &format!("blobs/sha256/{manifest_hex}"),
        0o644,
        &manifest,
    )?;
    add_file(&mut b, "index.json", 0o644, &index)?;
    add_file(&mut b, "manifest.json", 0o644, &docker_manifest)?;
    let w = b.into_inner().context("finish image tar")?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("write {}", out.display()))?;
    Ok(BuiltImage {
        path: out.to_path_buf(),
        reference: reference.to_string(),
        manifest_digest: format!("sha256:{manifest_hex}"),
        config_digest: format!("sha256:{config_hex}"),
        layer_digest: format!("sha256:{layer_hex}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn layer_has_busybox_and_applets() -> Result<()> {
        let layer = busybox_layer(b"\x7fELF fake busybox")?;
        let mut ar = tar::Archive::new(layer.as_slice());
        let mut names = Vec::new();
        for e in ar.entries()? {
            let mut e = e?;
            let path = e.path()?.display().to_string();
            if path == "bin/busybox" {
                let mut s = Vec::new();
                e.read_to_end(&mut s)?;
                assert_eq!(s, b"\x7fELF fake busybox");
                assert_eq!(e.header().mode()?, 0o755);
            }
            if path == "bin/sh" {
                assert_eq!(
                    e.link_name()?.map(|p| p.display().to_string()),
                    Some("busybox".to_string())
                );
            }
            names.push(path);
        }
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/wget",
            "bin/nc",
            "bin/sleep",
            "etc/passwd",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        // Deterministic: the same input gives the same digest.
        assert_eq!(
            sha256_hex(&layer),
            sha256_hex(&busybox_layer(b"\x7fELF fake busybox")?)
        );
        Ok(())
    }

    #[test]
    fn image_tar_is_oci_layout_and_docker_archive() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("egret-e2e-img-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let bb = dir.join("busybox");
        std::fs::write(&bb, b"\x7fELF fake")?;
        let img = build_busybox_image(&bb, IMAGE_REF, &dir.join("image.tar"))?;
        let mut files = std::collections::BTreeMap::new();
        let mut ar = tar::Archive::new(std::fs::File::open(&img.path)?);
        for e in ar.entries()? {
            let mut e = e?;
            let path = e.path()?.display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data)?;
            files.insert(path, data);
        }
        let _ = std::fs::remove_dir_all(&dir);
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(sha256_hex(data), hex, "blob {path} has the wrong digest");
            }
        }
        let json_file = |name: &str| -> serde_json::Result<serde_json::Value> {
            serde_json::from_slice(files.get(name).map(Vec::as_slice).unwrap_or_default())
        };
        let index = json_file("index.json")?;
        assert_eq!(
            index["manifests"][0]["digest"].as_str(),
            Some(img.manifest_digest.as_str())
        );
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"].as_str(),
            Some(IMAGE_REF)
        );
        let dm = json_file("manifest.json")?;
        assert_eq!(dm[0]["RepoTags"][0].as_str(), Some(IMAGE_REF));
        assert!(files.contains_key("oci-layout"));
        Ok(())
    }
}
