//! The desired datapath state as a pure function of Kubernetes objects.
//!
//! Services, EndpointSlices and Nodes go in; [`Desired`] comes out. Nothing here touches the
//! kernel or the network, so every rule of the model is a plain unit test.
mod types;
pub use types::*;
