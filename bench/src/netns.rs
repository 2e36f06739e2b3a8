//! Running a closure inside a lab network namespace: a fresh thread joins `/run/netns/<name>`
//! (setns applies to the calling thread only), so the driver itself stays in the root namespace.
use std::fs::File;
use std::os::fd::AsRawFd;

/// Errors entering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Refused: only the lab's own namespaces are entered.
    #[error("refusing to enter network namespace {0:?}: the benchmark only uses the lab's sy-* namespaces")]
    NotLab(String),
    /// The namespace file cannot be opened.
    #[error("cannot open /run/netns/{0} ({1}); is the lab up?")]
    Open(String, std::io::Error),
    /// setns failed.
    #[error("setns into {0}: {1} (needs root)")]
    Setns(String, std::io::Error),
    /// The closure panicked.
    #[error("the measurement thread in {0} panicked")]
    Panicked(String),
}

/// Runs `f` on a new thread inside network namespace `name` (which must start with `sy-`);
/// threads `f` spawns are in that namespace too.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    if !name.starts_with("sy-") {
        return Err(NetnsError::NotLab(name.into()));
    }
    let file =
        File::open(format!("/run/netns/{name}")).map_err(|e| NetnsError::Open(name.into(), e))?;
    let owned = name.to_string();
    let handle = std::thread::spawn(move || -> Result<T, NetnsError> {
        // SAFETY: setns on a valid namespace fd; it affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(NetnsError::Setns(owned, std::io::Error::last_os_error()));
        }
        Ok(f())
    });
    handle
        .join()
        .map_err(|_| NetnsError::Panicked(name.into()))?
}
