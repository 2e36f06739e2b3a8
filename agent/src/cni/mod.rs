//! CNI 1.0 plugin (ADD/DEL/CHECK/VERSION) with host-local IPAM from the node's podCIDR.
mod record;
pub use record::EndpointRecord;
