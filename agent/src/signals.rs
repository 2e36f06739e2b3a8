//! Process signals shared by the long-running roles.

/// Resolves on SIGTERM or SIGINT. If the handlers cannot be installed the error says why; callers
/// should refuse to start rather than run unstoppable.
pub async fn shutdown() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
