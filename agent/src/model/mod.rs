//! The desired datapath state as a pure function of Kubernetes objects.
//!
//! Services, EndpointSlices and Nodes go in; [`Desired`] frontends/backends and overlay routes
//! come out. Nothing here touches the kernel or the network, so every rule of the model is a
//! plain unit test.
//! - [`services`]: ClusterIP, NodePort and external frontends with their backends, as kube-proxy
//!   computes them; [`endpoints`]: which endpoints take new connections.
//! - [`nodes`]: the agent's own node (podCIDR, address) and the overlay routes to the others.
pub mod cache;
pub mod endpoints;
mod error;
pub mod nodes;
pub mod objects;
pub mod services;
mod types;

pub use cache::{DesiredCache, ObjKey};
pub use error::ModelError;
pub use nodes::{node_info, tunnels, NodeInfo};
pub use services::{desired, service_frontends, service_notes, slice_owner, NodeView};
pub use types::*;
