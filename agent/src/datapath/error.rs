//! What can go wrong loading, attaching and writing the datapath. Every variant keeps the
//! kernel's or aya's error as its `source`, so `{:#}` chains show the root cause.
use std::path::PathBuf;

use aya::maps::MapError;
use aya::pin::PinError;
use aya::programs::links::LinkError;
use aya::programs::ProgramError;

/// Errors of the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// `/sys/fs/bpf` cannot be examined.
    #[error("no BPF file system at /sys/fs/bpf; mount it with `mount -t bpf bpf /sys/fs/bpf` (cargo xtask setup does)")]
    NoBpffs(#[source] nix::Error),
    /// `/sys/fs/bpf` exists but is another file system.
    #[error("/sys/fs/bpf is not a BPF file system; mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NotBpffs,
    /// The object failed to load.
    #[error("loading the eBPF object failed (needs root / CAP_BPF and a kernel with BTF)")]
    Load(#[source] aya::EbpfError),
    /// The embedded object lacks a program or map the agent expects (a build mismatch).
    #[error("{kind} {name} is missing from the eBPF object (rebuild the agent)")]
    Missing {
        /// `program` or `map`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A program could not be loaded into the kernel.
    #[error("loading program {program}: {verifier}")]
    Program {
        /// Program name.
        program: String,
        /// The end of the verifier log, where it says why (empty if the verifier said nothing).
        verifier: String,
        /// The load error (for a verifier rejection: the syscall's errno).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A map operation failed.
    #[error("BPF map {map}: {source}")]
    Map {
        /// Pinned map name.
        map: &'static str,
        /// What aya or the kernel said.
        #[source]
        source: Box<MapError>,
    },
    /// A pinned map could not be opened (inspect, without an agent).
    #[error("cannot open the pinned map {} (is the agent for node {node} running, or were its pins removed?)", path.display())]
    OpenPin {
        /// The pin.
        path: PathBuf,
        /// The node it belongs to.
        node: String,
        /// What aya said.
        #[source]
        source: Box<MapError>,
    },
    /// Attaching a program to an interface failed.
    #[error("attaching {program} to {ifname}: {step}")]
    Attach {
        /// Program name.
        program: String,
        /// Interface.
        ifname: String,
        /// Which step failed.
        step: String,
        /// Why.
        #[source]
        source: Box<AttachError>,
    },
    /// A CNI endpoint record is unusable.
    #[error("CNI endpoint record {container}: {reason}")]
    BadRecord {
        /// Container id of the record.
        container: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The model produced something the maps cannot hold.
    #[error(transparent)]
    Plan(#[from] super::plan::PlanError),
    /// File-system error.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The aya error behind a failed attach.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Taking or attaching the program.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// Reading or converting a (pinned) link.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Pinning the new link.
    #[error(transparent)]
    Pin(#[from] PinError),
}

impl DatapathError {
    /// A failed load of `program`: the verifier log's last `n` bytes go into the message and the
    /// errno becomes the source (the whole log would otherwise be printed twice).
    pub fn program(program: &str, e: ProgramError) -> DatapathError {
        const TAIL: usize = 1500;
        match e {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => DatapathError::Program {
                program: program.to_string(),
                verifier: tail(&verifier_log.to_string(), TAIL).to_string(),
                source: Box::new(io_error),
            },
            other => DatapathError::Program {
                program: program.to_string(),
                verifier: String::new(),
                source: Box::new(other),
            },
        }
    }

    /// A map error of the map pinned as `map`.
    pub fn map(map: &'static str) -> impl Fn(MapError) -> DatapathError {
        move |source| DatapathError::Map {
            map,
            source: Box::new(source),
        }
    }

    /// The pinned name of the map, when this is a map refusing a new key because it is full
    /// (`E2BIG` from a hash map, `ENOSPC` from an LPM trie).
    pub fn full_map(&self) -> Option<&'static str> {
        let DatapathError::Map { map, source } = self else {
            return None;
        };
        let MapError::SyscallError(e) = source.as_ref() else {
            return None;
        };
        matches!(e.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC)).then_some(*map)
    }

    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DatapathError {
        let path = path.into();
        move |source| DatapathError::Io { path, source }
    }
}

/// The last `n` bytes of a (long) verifier log: where it failed is at the end.
fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn a_map_error_keeps_the_kernels_answer_as_its_source() {
        let e = DatapathError::map("SERVICES_V1")(MapError::KeyNotFound);
        assert!(e.to_string().starts_with("BPF map SERVICES_V1"));
        let source = e.source().expect("a source");
        assert_eq!(source.to_string(), MapError::KeyNotFound.to_string());
    }

    #[test]
    fn a_full_map_is_told_apart_from_other_map_errors() {
        let errno = |n| {
            DatapathError::map("BACKENDS_V1")(MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_elem",
                io_error: std::io::Error::from_raw_os_error(n),
            }))
        };
        assert_eq!(errno(libc::E2BIG).full_map(), Some("BACKENDS_V1"));
        assert_eq!(errno(libc::ENOSPC).full_map(), Some("BACKENDS_V1"));
        assert_eq!(errno(libc::EIO).full_map(), None);
        assert_eq!(
            DatapathError::map("BACKENDS_V1")(MapError::KeyNotFound).full_map(),
            None
        );
    }
}
