//! Errors of the node runtime.
use std::path::PathBuf;

/// What can go wrong running pods on this node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("API request to {what} failed: {source}")]
    Api {
        /// What was being done, e.g. `register node n1`.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A helper command (`ip netns …`) failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr or the spawn error.
        message: String,
    },
    /// The CNI plugin failed.
    #[error("CNI {command} for {container_id} failed (code {code}): {msg}")]
    Cni {
        /// ADD or DEL.
        command: &'static str,
        /// Container id.
        container_id: String,
        /// CNI error code (0 if the plugin printed no error object).
        code: u32,
        /// The plugin's message and details.
        msg: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A container could not be started.
    #[error("cannot start container {container}: {message}")]
    Start {
        /// Container name.
        container: String,
        /// Why.
        message: String,
    },
    /// The pod cannot run as specified.
    #[error("pod {pod} cannot run: {message}")]
    InvalidPod {
        /// `namespace/name`.
        pod: String,
        /// Why.
        message: String,
    },
}

impl Error {
    pub(crate) fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Api { what, source }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Whether a client error is an API answer with HTTP status `code`.
pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}
