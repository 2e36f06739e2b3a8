//! # switchyard agent
//!
//! One binary, several roles, all for one node:
//! - `switchyard agent`: watches Services, EndpointSlices and its Node ([`watch`]), turns them into
//!   desired datapath state ([`model`], pure), and programs the eBPF maps ([`datapath`]). It also
//!   creates `cbr0` ([`netlink`]).
//! - `switchyard cni`: the CNI 1.0 plugin with host-local IPAM ([`cni`]); also selected automatically
//!   when `CNI_COMMAND` is set, as a container runtime invokes it.
//! - `switchyard cleanup`: removes kube-proxy's rules or switchyard's own state ([`cleanup`]).
//! - `switchyard install-cni`: copies this executable into a node's CNI plugin directory and
//!   writes the node's network configuration list ([`cni::install`]); the DaemonSet's init
//!   container (`deploy/`).
//!
//! The lab's node runtime and echo workload are not part of the product: they are the
//! `switchyard-labnode` crate (`tests/labnode/`), which uses this one.
//!
//! # Layout
//! - [`paths`]: every file-system and naming convention shared by the roles.
//! - [`model`]: Kubernetes objects in, desired frontends/backends out. No I/O.
//! - [`datapath`]: aya loader, program attachment, pinned maps and the diffing map sync.
//! - [`kubeclient`]: the API client from a kubeconfig. [`memory`]: returning freed heap to the kernel.
pub mod cleanup;
pub mod cni;
pub mod daemon;
pub mod datapath;
pub mod healthcheck;
pub mod kubeclient;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod paths;
pub mod signals;
pub mod throttle;
pub mod watch;
