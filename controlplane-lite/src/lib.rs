//! controlplane-lite library.
