//! The agent's start-up check: switchyard does not start beside kube-proxy's rules unless told
//! to (`--allow-kube-proxy`), since both would translate the same Service packets.
use super::detect::Snapshot;
use super::CleanupError;

/// Fails with [`CleanupError::KubeProxyPresent`] when kube-proxy's rules are in this network
/// namespace (see [`super::detect`]), unless `allow`; then it only warns. Logs what it could not
/// check (a tool not installed).
pub fn check_kube_proxy(allow: bool) -> Result<(), CleanupError> {
    let snap = match Snapshot::take() {
        Ok(snap) => snap,
        Err(e) if allow => {
            tracing::warn!(
                error = %super::report::chain(&e),
                "could not check for kube-proxy's rules; starting anyway (--allow-kube-proxy)"
            );
            return Ok(());
        }
        Err(e) => return Err(CleanupError::Check(Box::new(e))),
    };
    for note in &snap.notes {
        tracing::warn!(note = %note, "kube-proxy check");
    }
    let found = snap.presence();
    if found.is_empty() {
        tracing::info!("kube-proxy check passed: no kube-proxy rules on this node");
        Ok(())
    } else if allow {
        tracing::warn!(
            found = %found.join("; "),
            "kube-proxy check passed by --allow-kube-proxy: its rules are on this node, and both \
             dataplanes will translate Service packets"
        );
        Ok(())
    } else {
        Err(CleanupError::KubeProxyPresent { found })
    }
}
