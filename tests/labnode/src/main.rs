//! `switchyard-labnode`: the lab's node runtime and echo workload.
use clap::{Parser, Subcommand};

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
    Kubelet(switchyard_labnode::kubelet::Options),
    /// Run the echo workload.
    Echo(switchyard_labnode::echo::Options),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard-labnode: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Kubelet(o) => switchyard_labnode::kubelet::run(o).await,
            Command::Echo(o) => switchyard_labnode::echo::run(o).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-labnode: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
