//! The agent's start-up check: switchyard does not start beside kube-proxy's rules unless told
//! to (`--allow-kube-proxy`), since both would translate the same Service packets.
use super::detect::Snapshot;
use super::CleanupError;

/// Fails with [`CleanupError::KubeProxyPresent`] when kube-proxy's rules are in this network
/// namespace (see [`super::detect`]). With `allow` it does not look: the check reads every
/// iptables table (`iptables-save`), which takes 25 s on a node with kube-proxy's rules for
/// 10,000 Services (iptables-nft 1.8.9), and an allowed start must not wait for that on every
/// restart; a warning says the check was skipped. Logs what it could not check (a tool not
/// installed).
pub fn check_kube_proxy(allow: bool) -> Result<(), CleanupError> {
    if allow {
        tracing::warn!(
            "kube-proxy check skipped (--allow-kube-proxy): where kube-proxy's rules are on this \
             node, both dataplanes translate Service packets; `switchyard cleanup --kube-proxy \
             --dry-run` lists them"
        );
        return Ok(());
    }
    let snap = Snapshot::take().map_err(|e| CleanupError::Check(Box::new(e)))?;
    for note in &snap.notes {
        tracing::warn!(note = %note, "kube-proxy check");
    }
    let found = snap.presence();
    if found.is_empty() {
        tracing::info!("kube-proxy check passed: no kube-proxy rules on this node");
        Ok(())
    } else {
        Err(CleanupError::KubeProxyPresent { found })
    }
}
