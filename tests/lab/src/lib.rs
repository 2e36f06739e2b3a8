//! # switchyard-lab
//!
//! The netns lab every end-to-end test and `cargo xtask lab|demo` runs on: an underlay bridge,
//! node namespaces with their kubelet and agent, controlplane-lite reachable from the root
//! namespace (so kubectl works there), an external client, and a clean-up that removes all of it.
//! Traffic only ever flows between these namespaces and loopback.
//!
//! # Layout
//! - [`lab`]: [`Lab`] — up, down, helpers for tests.
//! - [`topology`]: namespaces, links and addresses.
//! - [`ethtool`]: transmit checksum offload of a lab veth.
//! - [`netns`]: network namespaces for the lab, the benchmark and the tests: made and removed
//!   (`sy-*` only), a guard that removes what a test made, commands and closures run inside one.
//! - [`procs`]: background processes with logs and pid files.
//! - [`kube`]: kubectl, the kubeconfig, tokens, waits.
//! - [`dns`]: the cluster DNS (`kube-system/kube-dns`) every lab runs, and `dig` against it.
//! - [`probe`]: curl and Python clients in a namespace, echo answers.
//! - [`prometheus`]: a real Prometheus server scraping the agents, queried through its API.
//! - [`cleanup`]: `lab down`.
//! - [`xdp_pass`]: an `XDP_PASS` program for veth peers of native XDP (NodePort acceleration).
//! - [`bins`]: other packages' binaries for tests (cargo only hands a test its own package's).
//! - [`deploy`]: `deploy/`'s manifests, typed, and a DaemonSet container as a lab process.
//! - [`daemonset`]: the agents run from `deploy/`'s DaemonSet, with in-cluster configuration.
pub mod bins;
pub mod cleanup;
pub mod cmd;
pub mod daemonset;
pub mod deploy;
pub mod dns;
mod error;
pub mod ethtool;
pub mod kube;
pub mod lab;
pub mod netns;
pub mod probe;
pub mod procs;
pub mod prometheus;
pub mod topology;
pub mod xdp_pass;

pub use error::LabError;
pub use lab::{Lab, LabOptions};
