//! `switchyard cleanup`: switching a node between kube-proxy and switchyard.
//!
//! One concern per module:
//! - [`chains`]: which chains and tables are kube-proxy's (the list, and where it comes from).
//! - [`save`]: `iptables-save` output, parsed (pure).
//! - [`tools`]: running the iptables backends and `nft`.
//! - [`detect`]: finding kube-proxy's rules.
pub mod chains;
pub mod detect;
mod error;
pub mod save;
pub mod tools;

pub use error::CleanupError;
