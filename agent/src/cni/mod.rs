//! CNI 1.0 plugin (ADD/DEL/CHECK/VERSION) with host-local IPAM from the node's podCIDR.
mod record;
pub use record::EndpointRecord;

/// Runs the plugin as a container runtime invokes it (`CNI_COMMAND` and friends in the
/// environment, network configuration on stdin); prints the result or a CNI error JSON on
/// stdout and returns the process exit code. (Stub: being written.)
pub fn run_from_env() -> i32 {
    println!(r#"{{"cniVersion":"1.0.0","code":999,"msg":"switchyard CNI plugin is not implemented yet"}}"#);
    1
}
