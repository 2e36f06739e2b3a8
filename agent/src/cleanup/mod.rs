//! `switchyard cleanup`: switching a node between kube-proxy and switchyard.
//!
//! Two scopes, each asked for by name, never implied: `--kube-proxy` removes kube-proxy's
//! iptables chains and nftables tables, as `kube-proxy --cleanup` does ([`remove_kube_proxy`]);
//! `--switchyard` removes what switchyard installed for one node ([`remove_switchyard`]). Both act
//! on the network namespace the command runs in. `--dry-run` prints what would go and changes
//! nothing. The agent refuses to start beside kube-proxy's rules ([`guard`]).
//!
//! One concern per module:
//! - [`chains`]: which chains and tables are kube-proxy's (the list, and where it comes from).
//! - [`save`]: `iptables-save` output, parsed (pure).
//! - [`tools`]: running the iptables backends and `nft`.
//! - [`detect`]: finding kube-proxy's rules.
//! - [`remove_kube_proxy`], [`remove_switchyard`]: the two removals.
//! - [`procs`]: the node's agent and kube-proxy among the running processes.
//! - [`report`]: one printed line per thing removed, kept or failed.
pub mod chains;
pub mod detect;
mod error;
pub mod guard;
pub mod procs;
pub mod remove_kube_proxy;
pub mod remove_switchyard;
pub mod report;
pub mod save;
pub mod tools;

pub use error::CleanupError;

use report::Report;

/// Command-line options of `switchyard cleanup`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(
    clap::ArgGroup::new("scope")
        .required(true)
        .multiple(true)
        .args(["kube_proxy", "switchyard"])
))]
pub struct Options {
    /// Remove kube-proxy's iptables chains (nat, filter, mangle; IPv4 and IPv6; nf_tables and
    /// legacy backends) and its nftables tables `ip kube-proxy`/`ip6 kube-proxy`, as
    /// `kube-proxy --cleanup` does. Stop kube-proxy first, or it writes them again.
    #[arg(long)]
    pub kube_proxy: bool,
    /// Remove what switchyard installed for --node: its pinned maps and links (detaching its
    /// programs), cbr0, vxlan0 and their routes, and its state under /run/switchyard. Stop the
    /// node's agent first.
    #[arg(long, requires = "node")]
    pub switchyard: bool,
    /// The node whose switchyard state to remove.
    #[arg(long, env = "NODE_NAME")]
    pub node: Option<String>,
    /// Print what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs the clean-up the options ask for, printing one line per thing removed (see
/// [`report`]); fails if anything could not be removed.
pub fn run(opts: &Options) -> Result<(), CleanupError> {
    let mut report = Report::new(opts.dry_run);
    if opts.kube_proxy {
        for pid in procs::kube_proxies() {
            report.note(&format!(
                "kube-proxy is running (pid {pid}): it will write its rules again; stop it first"
            ));
        }
        let snap = detect::Snapshot::take()?;
        for note in &snap.notes {
            report.note(note);
        }
        remove_kube_proxy::Plan::new(&snap).apply(&mut report);
    }
    if opts.switchyard {
        if let Some(node) = &opts.node {
            remove_switchyard::remove(node, &mut report)?;
        }
    }
    report.finish()
}
