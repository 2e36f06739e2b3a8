//! An OCI image archive (`oci-archive:` to skopeo, podman and buildah): an image layout —
//! `oci-layout`, `index.json`, and `blobs/sha256/<digest>` for the manifest, the configuration
//! and one gzip layer — in a tar file, written without a container daemon.
//!
//! Invariant: every blob is named by the SHA-256 of its bytes and described by its size, and
//! the configuration's `diff_ids` is the SHA-256 of the uncompressed layer, so a registry or
//! runtime that checks digests accepts the archive. Layers are reproducible: entries in path
//! order, owned by root, with one fixed modification time.
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
    ANNOTATION_REF_NAME,
};
use sha2::{Digest as _, Sha256};

use super::rootfs::{Entry, Rootfs};
use super::ImageError;

/// What the image runs and how it is named.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// The configuration's `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// The configuration's `Env` (`PATH=…`).
    pub env: Vec<String>,
    /// The reference name in `index.json` (a tag, e.g. the version).
    pub ref_name: String,
    /// Modification time of every layer entry (seconds since the epoch).
    pub mtime: u64,
}

/// The archive written: its digests, for messages and tests.
#[derive(Clone, Debug)]
pub struct Written {
    /// `sha256:…` of the manifest.
    pub manifest: String,
    /// `sha256:…` of the compressed layer.
    pub layer: String,
    /// Uncompressed layer size in bytes.
    pub layer_bytes: u64,
}

fn sha256(bytes: &[u8]) -> Sha256Digest {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex.parse()
        .unwrap_or_else(|e| unreachable!("64 hex digits are a SHA-256 digest: {e}"))
}

fn spec_err(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> ImageError {
    move |e| ImageError::Spec {
        what,
        message: e.to_string(),
    }
}

/// The layer: `rootfs` as an uncompressed tar.
pub fn layer_tar(rootfs: &Rootfs, mtime: u64) -> Result<Vec<u8>, ImageError> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    for (path, entry) in rootfs.entries() {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        let io = |source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        };
        match entry {
            Entry::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                tar.append_data(&mut h, path, std::io::empty())
                    .map_err(io)?;
            }
            Entry::File { source, mode } => {
                let bytes = std::fs::read(source).map_err(|source_err| ImageError::Io {
                    path: source.clone(),
                    source: source_err,
                })?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(bytes.len() as u64);
                tar.append_data(&mut h, path, bytes.as_slice())
                    .map_err(io)?;
            }
            Entry::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, path, target).map_err(io)?;
            }
        }
    }
    tar.into_inner().map_err(|source| ImageError::Io {
        path: "(layer)".into(),
        source,
    })
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    let io = |source| ImageError::Io {
        path: "(layer.tar.gz)".into(),
        source,
    };
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).map_err(io)?;
    gz.finish().map_err(io)
}

/// The GOARCH name of the machine this runs on (the binaries in the image are its own).
pub fn arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::from(other),
    }
}

/// Writes the image of `rootfs` to `out` as an OCI archive (to a temporary name first, then
/// renamed, so `out` is never half-written).
pub fn write_archive(rootfs: &Rootfs, spec: &ImageSpec, out: &Path) -> Result<Written, ImageError> {
    let layer = layer_tar(rootfs, spec.mtime)?;
    let diff_id = sha256(&layer);
    let layer_gz = gzip(&layer)?;
    let layer_digest = sha256(&layer_gz);

    let config = ImageConfigurationBuilder::default()
        .architecture(arch())
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .entrypoint(spec.entrypoint.clone())
                .env(spec.env.clone())
                .working_dir("/")
                .build()
                .map_err(spec_err("the image configuration"))?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![format!("sha256:{diff_id}")])
                .build()
                .map_err(spec_err("the image's rootfs"))?,
        )
        .build()
        .map_err(spec_err("the image configuration"))?;
    let config_json = config
        .to_string()
        .map_err(spec_err("the image configuration"))?;
    let config_digest = sha256(config_json.as_bytes());

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_json.len() as u64,
            config_digest.clone(),
        ))
        .layers(vec![Descriptor::new(
            MediaType::ImageLayerGzip,
            layer_gz.len() as u64,
            layer_digest.clone(),
        )])
        .build()
        .map_err(spec_err("the image manifest"))?;
    let manifest_json = manifest
        .to_string()
        .map_err(spec_err("the image manifest"))?;
    let manifest_digest = sha256(manifest_json.as_bytes());

    let mut manifest_desc = Descriptor::new(
        MediaType::ImageManifest,
        manifest_json.len() as u64,
        manifest_digest.clone(),
    );
    manifest_desc.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_string(),
        spec.ref_name.clone(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()
        .map_err(spec_err("the image index"))?;
    let index_json = index.to_string().map_err(spec_err("the image index"))?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(spec_err("oci-layout"))?
        .to_string()
        .map_err(spec_err("oci-layout"))?;

    let blob = |d: &Sha256Digest| format!("blobs/sha256/{d}");
    let files: [(String, &[u8]); 5] = [
        ("oci-layout".into(), layout.as_bytes()),
        ("index.json".into(), index_json.as_bytes()),
        (blob(&manifest_digest), manifest_json.as_bytes()),
        (blob(&config_digest), config_json.as_bytes()),
        (blob(&layer_digest), &layer_gz),
    ];
    let tmp = out.with_extension("tar.tmp");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let written = (|| {
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        for dir in ["blobs", "blobs/sha256"] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_mtime(spec.mtime);
            h.set_size(0);
            tar.append_data(&mut h, dir, std::io::empty())
                .map_err(io(&tmp))?;
        }
        for (name, bytes) in &files {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_mtime(spec.mtime);
            h.set_size(bytes.len() as u64);
            tar.append_data(&mut h, name, *bytes).map_err(io(&tmp))?;
        }
        let mut inner = tar.into_inner().map_err(io(&tmp))?;
        inner.flush().map_err(io(&tmp))?;
        drop(inner);
        std::fs::rename(&tmp, out).map_err(io(out))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    Ok(Written {
        manifest: format!("sha256:{manifest_digest}"),
        layer: format!("sha256:{layer_digest}"),
        layer_bytes: layer.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The archive's files by name.
    fn read_archive(path: &Path) -> HashMap<String, Vec<u8>> {
        let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
        let mut files = HashMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            files.insert(name, bytes);
        }
        files
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn every_blob_is_named_and_described_by_its_digest_and_the_diff_id_is_the_raw_layers() {
        let dir = std::env::temp_dir().join(format!("sy-oci-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("program");
        std::fs::write(&program, b"#!/bin/sh\necho hi\n").unwrap();
        let mut rootfs = Rootfs::new();
        rootfs.add_file_as(&program, Path::new("/usr/local/bin/program"), 0o755);
        let spec = ImageSpec {
            entrypoint: vec!["/usr/local/bin/program".into()],
            env: vec!["PATH=/usr/local/bin".into()],
            ref_name: "0.1.0".into(),
            mtime: 0,
        };
        let out = dir.join("image.oci.tar");
        let written = write_archive(&rootfs, &spec, &out).unwrap();
        let again = write_archive(&rootfs, &spec, &dir.join("again.oci.tar")).unwrap();
        let files = read_archive(&out);
        let _ = std::fs::remove_dir_all(&dir);

        assert_eq!(
            again.manifest, written.manifest,
            "the same tree gives the same image"
        );
        assert_eq!(json(&files["oci-layout"])["imageLayoutVersion"], "1.0.0");
        let blob = |digest: &str| {
            let bytes = &files[&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))];
            assert_eq!(format!("sha256:{}", sha256(bytes)), digest);
            bytes.clone()
        };
        let index = json(&files["index.json"]);
        let m = &index["manifests"][0];
        assert_eq!(m["annotations"][ANNOTATION_REF_NAME], "0.1.0");
        let manifest_bytes = blob(m["digest"].as_str().unwrap());
        assert_eq!(m["size"], manifest_bytes.len());
        let manifest = json(&manifest_bytes);
        let config_bytes = blob(manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(manifest["config"]["size"], config_bytes.len());
        let config = json(&config_bytes);
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/program");
        assert_eq!(config["os"], "linux");
        let layer = &manifest["layers"][0];
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let gz = blob(layer["digest"].as_str().unwrap());
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256(&raw))
        );
        let mut names = Vec::new();
        for e in tar::Archive::new(raw.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert!(
            names.contains(&"usr/local/bin/program".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"var/run".to_string()), "{names:?}");
    }
}
