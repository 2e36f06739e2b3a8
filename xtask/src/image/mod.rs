//! `cargo xtask image [--out target/image/switchyard.oci.tar]`: the agent's container image as
//! an OCI archive, built without a container daemon or a base image — the release binary, the
//! programs it runs and their shared libraries, taken from this machine ([`rootfs`]), written
//! as an image layout in a tar ([`oci`]). `Containerfile` builds the equivalent with a daemon.
//! Push it with `skopeo copy oci-archive:target/image/switchyard.oci.tar docker://REGISTRY/switchyard:TAG`.
//!
//! Invariant: the image's entrypoint is the DaemonSet's agent command ([`ENTRYPOINT`]) and
//! everything it loads is inside; `an_image_built_here_inspects_with_skopeo_and_runs_in_a_chroot`
//! checks both with skopeo and by running the programs in a chroot of the layer.
pub mod oci;
pub mod rootfs;

use std::path::{Path, PathBuf};

use anyhow::Context;
use switchyard_lab::deploy::{IMAGE_BIN_DIR, IMAGE_PATH};

/// The image's `Entrypoint`: the agent, as `deploy/03-daemonset.yaml` runs it.
pub const ENTRYPOINT: [&str; 2] = ["/usr/local/bin/switchyard", "agent"];

/// Why an image cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file cannot be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A tool this needs cannot be run.
    #[error(
        "cannot run {tool} (from libc-bin; `cargo xtask setup` installs what the project needs)"
    )]
    Tool {
        /// The tool.
        tool: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `ldd` cannot resolve what a program loads.
    #[error("ldd {program}: {message}: install the missing library on this machine")]
    Ldd {
        /// The program.
        program: PathBuf,
        /// What ldd said.
        message: String,
    },
    /// Symbolic links that never end.
    #[error("{0}: too many levels of symbolic links")]
    LinkLoop(PathBuf),
    /// A file where a directory was expected on the way to a path.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// An OCI document cannot be built.
    #[error("building {what}: {message}")]
    Spec {
        /// Which document.
        what: &'static str,
        /// oci-spec's complaint.
        message: String,
    },
}

/// The default archive: `target/image/switchyard.oci.tar`.
pub fn default_out(root: &Path) -> PathBuf {
    root.join("target/image/switchyard.oci.tar")
}

/// What [`build`] made.
#[derive(Debug)]
pub struct Built {
    /// The archive's digests.
    pub written: oci::Written,
    /// The programs of [`rootfs::TOOLS`] included (with where they were found).
    pub tools: Vec<PathBuf>,
    /// Those this machine does not have.
    pub missing: Vec<&'static str>,
    /// The newest glibc symbol version the agent binary needs (`2.34`): what a node needs for
    /// the CNI plugin, which install-cni copies to the host.
    pub min_glibc: Option<(u32, u32)>,
}

/// The newest `GLIBC_x.y` version named in `binary` (the versions of the symbols it imports).
pub fn min_glibc(binary: &[u8]) -> Option<(u32, u32)> {
    let needle = b"GLIBC_";
    let mut best = None;
    let mut at = 0;
    while let Some(pos) = binary[at..].windows(needle.len()).position(|w| w == needle) {
        let start = at + pos + needle.len();
        let digits: String = binary[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .map(|b| *b as char)
            .collect();
        let mut parts = digits.split('.').map(|p| p.parse::<u32>().ok());
        if let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) {
            best = best.max(Some((major, minor)));
        }
        at = start;
    }
    best
}

/// Builds the image of the agent binary `binary` into `out`.
pub fn build(binary: &Path, out: &Path, version: &str) -> Result<Built, ImageError> {
    let mut rootfs = rootfs::Rootfs::new();
    rootfs.add_file_as(binary, &Path::new(IMAGE_BIN_DIR).join("switchyard"), 0o755);
    rootfs.add_libraries(binary)?;
    let (mut tools, mut missing) = (Vec::new(), Vec::new());
    for tool in rootfs::TOOLS {
        match rootfs.add_program(tool, IMAGE_PATH)? {
            Some(found) => tools.push(found),
            None => missing.push(tool),
        }
    }
    let mtime = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let spec = oci::ImageSpec {
        entrypoint: ENTRYPOINT.map(String::from).to_vec(),
        env: vec![format!("PATH={IMAGE_PATH}")],
        ref_name: version.to_string(),
        mtime,
    };
    let written = oci::write_archive(&rootfs, &spec, out)?;
    let min_glibc = std::fs::read(binary).ok().and_then(|b| min_glibc(&b));
    Ok(Built {
        written,
        tools,
        missing,
        min_glibc,
    })
}

/// `cargo xtask image`: set-up, the release build of the agent, the archive.
pub fn run(out: Option<PathBuf>) -> anyhow::Result<()> {
    let root = switchyard_lab::lab::workspace_root();
    crate::setup::setup()?;
    crate::cargo(&["build", "--release", "-p", "switchyard"])?;
    let binary = root.join("target/release/switchyard");
    let out = out.unwrap_or_else(|| default_out(&root));
    println!("==> image {}", out.display());
    let built = build(&binary, &out, env!("CARGO_PKG_VERSION"))
        .with_context(|| format!("building the image {}", out.display()))?;
    println!(
        "  manifest {}, layer {} ({} MiB uncompressed)",
        built.written.manifest,
        built.written.layer,
        built.written.layer_bytes / (1 << 20)
    );
    for t in &built.tools {
        println!("  with {}", t.display());
    }
    for t in &built.missing {
        println!("  WITHOUT {t}: not on this machine (apt-get install iptables nftables)");
    }
    if let Some((major, minor)) = built.min_glibc {
        println!(
            "  the CNI plugin that install-cni copies to each node runs with the node's C library: glibc {major}.{minor} or newer"
        );
    }
    println!(
        "push it: skopeo copy oci-archive:{} docker://REGISTRY/switchyard:{}",
        out.display(),
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::Command;

    #[test]
    fn the_newest_glibc_version_is_found_among_the_imported_ones() {
        let bytes = b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.3\0GLIBC_PRIVATE\0GLIBC_";
        assert_eq!(min_glibc(bytes), Some((2, 34)));
        assert_eq!(min_glibc(b"no versions"), None);
    }

    fn json(out: &std::process::Output) -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Removes the scratch directory even when an assertion fails.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    #[ignore = "needs the release build, root (chroot) and skopeo: run with cargo xtask test"]
    fn an_image_built_here_inspects_with_skopeo_and_runs_in_a_chroot() {
        let root = switchyard_lab::lab::workspace_root();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "switchyard"])
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(status.success());
        let scratch =
            Scratch(std::env::temp_dir().join(format!("sy-image-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&scratch.0);
        let out = scratch.0.join("switchyard.oci.tar");
        let binary = root.join("target/release/switchyard");
        let built = build(&binary, &out, "0.0.0-test").unwrap();

        let archive = format!("oci-archive:{}", out.display());
        let config = json(
            &Command::new("skopeo")
                .args(["inspect", "--config", &archive])
                .output()
                .expect("skopeo (cargo xtask setup installs it)"),
        );
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(ENTRYPOINT),
            "{config}"
        );
        let image = json(
            &Command::new("skopeo")
                .args(["inspect", &archive])
                .output()
                .unwrap(),
        );
        assert_eq!(image["Os"], "linux");
        assert_eq!(image["Digest"], built.written.manifest.as_str());
        assert_eq!(
            image["Layers"],
            serde_json::json!([built.written.layer]),
            "{image}"
        );

        // The layer, unpacked: the agent and every tool run from it alone.
        let mut files = tar::Archive::new(std::fs::File::open(&out).unwrap());
        let blob = format!(
            "blobs/sha256/{}",
            built.written.layer.trim_start_matches("sha256:")
        );
        let mut gz = Vec::new();
        for e in files.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy() == blob {
                e.read_to_end(&mut gz).unwrap();
            }
        }
        let rootdir = scratch.0.join("rootfs");
        std::fs::create_dir_all(&rootdir).unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()))
            .unpack(&rootdir)
            .unwrap();
        assert!(rootdir.join("usr/local/bin/switchyard").is_file());
        let chroot = |argv: &[&str]| {
            let out = Command::new("chroot")
                .arg(&rootdir)
                .args(argv)
                .env_clear()
                .env("PATH", IMAGE_PATH)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "chroot {argv:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let version = chroot(&[ENTRYPOINT[0], "--version"]);
        assert!(version.starts_with("switchyard "), "{version}");
        chroot(&[ENTRYPOINT[0], "install-cni", "--help"]);
        assert!(
            !built.tools.is_empty(),
            "cargo xtask setup installs iptables and nftables"
        );
        for tool in &built.tools {
            let name = tool.file_name().unwrap().to_string_lossy().into_owned();
            // By name, through the image's PATH, as the agent runs them.
            chroot(&[&name, "--version"]);
        }
    }
}
