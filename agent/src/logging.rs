//! How the agent logs: human-readable text (the default) or one JSON object per line
//! (`--log-format json`), whose fields other programs may read (see
//! [`crate::daemon::report`]). `RUST_LOG` filters either way (default `info`).
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The log formats the agent can write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for people, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`, `span`.
    Json,
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The JSON subscriber, writing to `writer`.
pub fn json_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        .with_current_span(true)
        .with_writer(writer)
        .finish()
}

/// Installs the process-wide subscriber, writing to stderr.
pub fn init(format: LogFormat) {
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => {
            let _ = tracing::subscriber::set_global_default(json_subscriber(std::io::stderr));
        }
    }
}
