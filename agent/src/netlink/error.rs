//! Errors of the netlink helpers.
use std::path::PathBuf;

/// What went wrong talking to the kernel about links, addresses or namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// No netlink socket could be opened (not root, or no tokio runtime).
    #[error("cannot open a netlink socket: {0} (switchyard needs root / CAP_NET_ADMIN)")]
    Connect(#[source] std::io::Error),
    /// The kernel rejected a request.
    #[error("netlink: {op} failed: {source}")]
    Request {
        /// What was being done, e.g. `add address 10.244.1.1/24 to cbr0`.
        op: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link that must exist does not.
    #[error("link {0} does not exist")]
    LinkNotFound(String),
    /// A link exists under the expected name but is of another kind.
    #[error("link {name} exists but is a {found}, not a {expected}; delete it first")]
    WrongKind {
        /// Link name.
        name: String,
        /// The kind switchyard needs.
        expected: &'static str,
        /// The kind found.
        found: String,
    },
    /// A network namespace could not be opened or entered.
    #[error("cannot enter network namespace {path}: {source}")]
    Netns {
        /// The namespace file, e.g. `/run/netns/sy-pod-default-echo`.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A sysctl could not be written.
    #[error("cannot write {path}: {source}")]
    Sysctl {
        /// The `/proc/sys` file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The helper thread running work inside another namespace died.
    #[error("the thread working inside network namespace {0} panicked")]
    NetnsThread(PathBuf),
}

impl NetlinkError {
    /// The errno of a kernel rejection (positive, e.g. `libc::ENODEV`), if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => Some(msg.raw_code().abs()),
            _ => None,
        }
    }

    pub(crate) fn request(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
        let op = op.into();
        move |source| NetlinkError::Request { op, source }
    }
}
