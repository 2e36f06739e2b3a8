//! `switchyard-labnode`: the lab's node runtime and echo workload.
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "switchyard-labnode",
    version,
    about = "The switchyard lab's node runtime and echo workload"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the lab node runtime: register the Node, run its pods.
    Kubelet(Box<switchyard_labnode::kubelet::Options>),
    /// Run the echo workload.
    Echo(switchyard_labnode::echo::Options),
    /// Run the cluster DNS (in a pod behind the kube-dns Service).
    Dns(switchyard_labnode::dns::Options),
    /// Copy a container's stdout (fd 0) and stderr (fd 3) into its CRI log file (fd 1); the
    /// kubelet starts one per container.
    ContainerLog,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Kubelet(o) => switchyard_labnode::kubelet::run(*o).await,
        Command::Echo(o) => switchyard_labnode::echo::run(o).await,
        Command::Dns(o) => switchyard_labnode::dns::run(o).await.map_err(Into::into),
        Command::ContainerLog => switchyard_labnode::kubelet::logs::shim::run(),
    };
    if let Err(e) = result {
        eprintln!("switchyard-labnode: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
