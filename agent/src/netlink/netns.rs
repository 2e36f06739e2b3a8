//! Running netlink work inside another network namespace.
//!
//! A netlink socket talks to the namespace it was created in, and `setns` only moves the calling
//! thread. So work for another namespace runs on a fresh thread that enters the namespace, builds
//! its own single-threaded tokio runtime and opens its sockets there; the caller's threads never
//! change namespace.
use super::NetlinkError;
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};

/// Opens a network namespace file (e.g. `/run/netns/NAME` or `/proc/PID/ns/net`).
pub fn open_netns(path: &Path) -> Result<File, NetlinkError> {
    File::open(path).map_err(|source| NetlinkError::Netns {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `work` to completion on a new thread inside the network namespace at `path` and returns
/// its output. Blocks the caller until done: from async code call it through
/// `tokio::task::spawn_blocking`.
pub fn block_on_in_netns<F, Fut, T>(path: &Path, work: F) -> Result<T, NetlinkError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let ns = open_netns(path)?;
    let owned: PathBuf = path.to_path_buf();
    let thread_path = owned.clone();
    let joined = std::thread::Builder::new()
        .name("switchyard-netns".into())
        .spawn(move || -> Result<T, NetlinkError> {
            let netns_err = |source: std::io::Error| NetlinkError::Netns {
                path: thread_path.clone(),
                source,
            };
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(e.into()))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(netns_err)?;
            Ok(rt.block_on(work()))
        })
        .map_err(|source| NetlinkError::Netns {
            path: owned.clone(),
            source,
        })?
        .join();
    joined.map_err(|_| NetlinkError::NetnsThread(owned))?
}
