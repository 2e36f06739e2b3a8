//! The lab node runtime ("kubelet"): registers the Node, runs its pods, reports their status.
//!
//! `switchyard-labnode kubelet --node n1 --kubeconfig PATH --node-ip 198.18.0.11`, run inside the node's
//! network namespace (with `nsenter --net=…`, see [`netns`]):
//! 1. registers Node `n1` ([`node`]) and heartbeats its Ready condition;
//! 2. waits for the control plane to assign `spec.podCIDR`;
//! 3. watches the pods bound to the node ([`pods`]); for each one a [`worker`] creates the pod
//!    namespace, runs the CNI plugin (the `switchyard` executable beside this one: [`cni_exec`]),
//!    waits until the agent marked the pod's veth as attached (so the containers' first packets
//!    are load-balanced already, as behind a CNI plugin that returns once the datapath is
//!    programmed), starts the containers' commands inside the namespace ([`process`]) with the
//!    Service variables of the Services that exist then ([`envvars`]), the service-account
//!    token, CA and namespace at the usual path ([`serviceaccount`]) and the pod's own
//!    `/etc/resolv.conf` (the cluster DNS: [`resolvconf`]) and `/etc/hosts` ([`hosts`]),
//!    mounted over the host's in the container only ([`etc`]), and reports status
//!    ([`status`]). A `hostNetwork` pod skips the namespace, CNI and the marker: its containers
//!    run in the kubelet's own network namespace (the node's) and its podIP is the node's
//!    InternalIP;
//! 4. on deletion stops the processes (SIGTERM, SIGKILL after the grace period), runs CNI DEL,
//!    removes the namespace and deletes the object;
//! 5. serves the kubelet API the API server calls for logs, exec and port-forward ([`server`];
//!    container output is kept by a log shim per container: [`logs`]).
//!
//! Pods outlive the kubelet: on SIGTERM it exits and leaves them running; a restarted kubelet
//! adopts them from its records ([`state`]). Containers are started again as `restartPolicy`
//! says ([`restart`]). Not implemented: image pulling (commands run from the host filesystem), volumes (but the
//! service-account one), exec probes.
mod api;
pub mod cni_exec;
pub mod envvars;
mod error;
pub mod etc;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod hosts;
pub mod logs;
pub mod netns;
pub mod node;
pub mod pods;
pub mod probe;
pub mod process;
pub mod resolvconf;
pub mod restart;
pub mod server;
pub mod serviceaccount;
pub mod state;
pub mod status;
pub mod worker;

pub use error::Error;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::Api;
use kube::runtime::reflector::Store;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use switchyard::cni::Subnet;

/// Command-line options of `switchyard-labnode kubelet`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Node name (e.g. `n1`).
    #[arg(long)]
    pub node: String,
    /// Kubeconfig used to reach controlplane-lite.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The node's underlay address, reported as its InternalIP and as pods' hostIP.
    #[arg(long)]
    pub node_ip: Ipv4Addr,
    /// Hostname reported in the node's addresses (default: the node name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Seconds between node heartbeats.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_seconds: u64,
    /// CNI plugin executable (default: `switchyard` in this executable's directory).
    #[arg(long)]
    pub cni_plugin: Option<PathBuf>,
    /// Directory of CNI network configurations, read as a container runtime reads
    /// `/etc/cni/net.d` ([`cni_exec::config_from_dir`]; pods wait until it holds one): where
    /// `switchyard install-cni` writes. Without it, the plugin gets the kubelet's own
    /// configuration for the node ([`cni_exec::network_config`]).
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// File whose first line is the bearer token pods get at
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token` (without it they get no token).
    #[arg(long)]
    pub service_account_token_file: Option<PathBuf>,
    /// A service account's own token, `NAMESPACE/NAME=FILE` (repeatable): its pods get the
    /// first line of FILE instead of the default token.
    #[arg(long = "service-account-token", value_name = "NAMESPACE/NAME=FILE")]
    pub service_account_tokens: Vec<String>,
    /// The cluster DNS address(es) `dnsPolicy: ClusterFirst` pods get as nameservers (without
    /// it they keep the host's resolver).
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<Ipv4Addr>,
    /// The cluster domain pods search.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The host's resolver configuration, which `dnsPolicy: Default` pods get.
    #[arg(long, default_value = etc::RESOLV_CONF)]
    pub resolv_conf: PathBuf,
    #[command(flatten)]
    pub api: server::ApiOptions,
}

/// The CNI plugin's executable name: the agent's binary, which acts as the plugin when
/// `CNI_COMMAND` is set.
pub const CNI_PLUGIN: &str = "switchyard";

/// Shared by the pod manager and its workers.
pub struct Ctx {
    /// API client.
    pub client: kube::Client,
    /// The Events written on pods.
    pub events: events::PodEvents,
    /// Node name.
    pub node: String,
    /// Node address.
    pub node_ip: Ipv4Addr,
    /// The CNI plugin with this node's configuration.
    pub cni: cni_exec::CniRunner,
    /// Directory of the `switchyard-labnode` (and `switchyard`) executables, first on the
    /// containers' `PATH`.
    pub exe_dir: PathBuf,
    /// Every Service of the cluster, for the containers' Service variables ([`envvars`]).
    pub services: Store<Service>,
    /// Token and CA for the pods' service-account directories ([`serviceaccount`]).
    pub credentials: serviceaccount::Credentials,
    /// What the pods' `/etc/resolv.conf` and `/etc/hosts` are made of ([`etc`]).
    pub etc: etc::Settings,
}

/// The plugin configuration of `dir`, once there is one (checked every 200 ms).
async fn wait_for_cni_config(dir: &Path) -> anyhow::Result<String> {
    let mut logged = false;
    loop {
        if let Some(conf) = cni_exec::config_from_dir(dir)? {
            tracing::info!(dir = %dir.display(), "CNI configuration found");
            return Ok(conf);
        }
        if !logged {
            tracing::info!(dir = %dir.display(), "waiting for a CNI configuration");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the node runtime until SIGTERM/SIGINT; pods keep running after it exits.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    if !switchyard::cni::config::is_safe_name(&opts.node) {
        anyhow::bail!(
            "node name {:?} must be letters, digits, '-', '_' or '.'",
            opts.node
        );
    }
    if let Some(w) = netns::mount_namespace_warning() {
        tracing::warn!("{w}");
    }
    let exe = std::env::current_exe().context("cannot find the switchyard-labnode executable")?;
    let exe_dir = exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let cni_plugin = opts
        .cni_plugin
        .clone()
        .unwrap_or_else(|| exe_dir.join(CNI_PLUGIN));
    let credentials = serviceaccount::Credentials::load(
        &opts.kubeconfig,
        opts.service_account_token_file.as_deref(),
        &opts.service_account_tokens,
    )?;
    if credentials.token.is_none() {
        tracing::warn!("no --service-account-token-file: pods get no service-account token");
    }
    let client = switchyard::kubeclient::client_from_kubeconfig(&opts.kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let hostname = opts.hostname.clone().unwrap_or_else(|| opts.node.clone());
    let (api_server, kubelet_port) = server::start(
        &opts.api,
        &opts.node,
        &[opts.node_ip.to_string(), hostname.clone()],
    )
    .await?;
    let id = node::NodeIdentity {
        name: opts.node.clone(),
        internal_ip: opts.node_ip,
        hostname,
        facts: node::MachineFacts::read(),
        kubelet_port,
    };

    let main = async {
        let ready_since = node::register(&nodes, &id).await?;
        let heartbeat = tokio::spawn(node::heartbeat(
            nodes.clone(),
            id.clone(),
            ready_since,
            Duration::from_secs(opts.heartbeat_seconds.max(1)),
        ));
        let cidr = node::wait_for_pod_cidr(&nodes, &opts.node).await?;
        let subnet: Subnet = cidr
            .parse()
            .with_context(|| format!("node {} has an unusable podCIDR", opts.node))?;
        let gateway = subnet
            .first_host()
            .with_context(|| format!("podCIDR {subnet} is too small for pods"))?;
        let conf = match &opts.cni_conf_dir {
            Some(dir) => wait_for_cni_config(dir).await?,
            None => cni_exec::network_config(&opts.node, subnet, gateway),
        };
        let (services, service_watch) = crate::reflect::all::<Service>(client.clone());
        let ctx = Arc::new(Ctx {
            events: events::PodEvents::new(client.clone(), &opts.node),
            client: client.clone(),
            node: opts.node.clone(),
            node_ip: opts.node_ip,
            cni: cni_exec::CniRunner::new(cni_plugin, conf),
            exe_dir,
            services,
            credentials,
            etc: etc::Settings {
                cluster: resolvconf::ClusterDns {
                    servers: opts.cluster_dns.clone(),
                    domain: opts.cluster_domain.clone(),
                },
                host_resolv_conf: opts.resolv_conf.clone(),
            },
        });
        let result = pods::Manager::new(ctx).run().await;
        heartbeat.abort();
        service_watch.abort();
        api_server.abort();
        result?;
        anyhow::Ok(())
    };
    tokio::select! {
        r = main => r,
        r = switchyard::signals::shutdown() => {
            r.context("cannot install signal handlers")?;
            tracing::info!("kubelet stopping; pods keep running");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kubelet: super::Options,
    }

    #[test]
    fn the_command_line_is_well_formed_and_takes_the_api_flags() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "kubelet",
            "--node",
            "n1",
            "--kubeconfig",
            "kc",
            "--node-ip",
            "198.18.0.11",
            "--client-ca-file",
            "ca.crt",
        ]);
        assert_eq!(cli.kubelet.api.port, super::server::DEFAULT_PORT);
        assert_eq!(
            cli.kubelet.api.client_ca_file.as_deref(),
            Some(std::path::Path::new("ca.crt"))
        );
    }
}
