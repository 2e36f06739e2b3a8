//! # switchyard-labnode
//!
//! What a lab node runs besides the product: not part of the `switchyard` agent, which it uses
//! (the CNI plugin and its configuration, paths, the kubeconfig client) — dependencies point from the lab to
//! the product only.
//! - `switchyard-labnode kubelet`: the lab node runtime ([`kubelet`]): registers the Node, runs
//!   the pods scheduled to it in their own network namespaces (wired by the `switchyard` CNI
//!   plugin), reports their status.
//! - `switchyard-labnode echo`: a tiny TCP/UDP/HTTP echo server, the demo and test workload
//!   ([`echo`]).
//! - `switchyard-labnode dns`: the cluster DNS the lab runs as a pod behind `kube-dns` ([`dns`]).
pub mod dns;
pub mod echo;
pub mod kubelet;
pub mod reflect;
