//! Events: one stored object seen through two APIs, core `v1` `events` and
//! `events.k8s.io/v1` `events`, as kube-apiserver serves them.
//!
//! Invariant: the store holds every Event in its core/v1 form, normalised as kube-apiserver
//! prints it ([`convert::normalize_core`]); [`convert`] maps it to and from the
//! events.k8s.io/v1 form at the API's edge (requests, responses, watches, field selectors).
//! [`recorder`] is how controlplane-lite's own controllers report, aggregating repeats;
//! [`ttl`] removes Events an hour (`--event-ttl`) after their last write.
pub mod convert;
pub mod recorder;
pub mod ttl;

pub use recorder::{Recorder, Reference};

/// The stored resource (the plural both APIs share).
pub const RESOURCE: &str = "events";
/// The events.k8s.io API group.
pub const GROUP: &str = "events.k8s.io";
