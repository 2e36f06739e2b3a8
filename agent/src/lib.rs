//! # switchyard agent
//!
//! One binary, several roles, all for one node:
//! - `switchyard agent`: watches Services, EndpointSlices and its Node ([`watch`]), turns them into
//!   desired datapath state ([`model`], pure), and programs the eBPF maps ([`datapath`]). It also
//!   creates `cbr0` ([`netlink`]).
//! - `switchyard cni`: the CNI 1.0 plugin with host-local IPAM ([`cni`]); also selected automatically
//!   when `CNI_COMMAND` is set, as a container runtime invokes it.
//! - `switchyard kubelet`: the lab node runtime ([`kubelet`]): registers the Node, runs the pods
//!   scheduled to it in their own network namespaces, reports their status.
//! - `switchyard echo`: a tiny TCP/UDP/HTTP echo server used as the demo and test workload ([`echo`]).
//!
//! # Layout
//! - [`paths`]: every file-system and naming convention shared by the roles.
//! - [`model`]: Kubernetes objects in, desired frontends/backends out. No I/O.
//! - [`datapath`]: aya loader, program attachment, pinned maps and the diffing map sync.
pub mod cni;
pub mod daemon;
pub mod datapath;
pub mod echo;
pub mod kubeclient;
pub mod kubelet;
pub mod model;
pub mod netlink;
pub mod paths;
pub mod signals;
pub mod watch;
