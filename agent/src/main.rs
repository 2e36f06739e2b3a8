//! `switchyard`: the node agent, CNI plugin and inspect CLI in one binary.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Kubernetes Service dataplane in eBPF"
)]
struct Cli {
    /// Log format: `text` for people, `json` (one object per line) for programs.
    #[arg(long, global = true, value_enum, default_value_t = switchyard::logging::LogFormat::Text)]
    log_format: switchyard::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: watch the API, program the eBPF datapath.
    Agent(Box<switchyard::daemon::Options>),
    /// Run as a CNI plugin (also selected when CNI_COMMAND is set).
    Cni,
    /// Show what the datapath of a node holds (reads the pinned maps).
    Inspect(switchyard::datapath::inspect::Options),
    /// Remove kube-proxy's rules (--kube-proxy) or switchyard's own state (--switchyard).
    Cleanup(switchyard::cleanup::Options),
    /// Install the CNI plugin (this executable) and the node's network configuration list, as
    /// the DaemonSet's init container does.
    InstallCni(switchyard::cni::install::Options),
}

fn main() -> std::process::ExitCode {
    // A container runtime invokes CNI plugins with CNI_COMMAND set and no arguments.
    if std::env::var_os("CNI_COMMAND").is_some() {
        return exit(switchyard::cni::run_from_env());
    }
    let cli = Cli::parse();
    match &cli.command {
        Command::Cni => return exit(switchyard::cni::run_from_env()),
        Command::Inspect(o) => {
            return match switchyard::datapath::inspect::run(o) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard inspect: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Cleanup(o) => {
            return match switchyard::cleanup::run(o) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "switchyard cleanup: {}",
                        switchyard::cleanup::report::chain(&e)
                    );
                    std::process::ExitCode::FAILURE
                }
            }
        }
        _ => {}
    }
    switchyard::logging::init(cli.log_format);
    switchyard::memory::limit_arenas();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Agent(o) => switchyard::daemon::run(*o).await,
            Command::InstallCni(o) => {
                let done = switchyard::cni::install::run(&o).await?;
                println!(
                    "installed the CNI plugin {} and its configuration {}",
                    done.plugin.display(),
                    done.conflist.display()
                );
                Ok(())
            }
            Command::Cni | Command::Inspect(_) | Command::Cleanup(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn exit(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
