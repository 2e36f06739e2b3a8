//! The agent's watch stores and desired state against a real API server, without a kernel:
//! follows Services, EndpointSlices and Nodes as the agent does (`switchyard::watch`), waits
//! until the Service count stops changing, computes the desired state and plans it into
//! in-memory service maps, then prints the process's VmRSS and VmHWM (after returning freed
//! memory to the kernel, as the agent does after a sync).
//!
//! Run: `cargo run -p switchyard --example watch_rss -- KUBECONFIG [NODE]`.
use std::net::Ipv4Addr;
use std::time::Duration;

use switchyard::datapath::services::{MemServiceMaps, ServiceSync};
use switchyard::model::{DesiredCache, NodeView};

fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    switchyard::memory::limit_arenas();
    let mut args = std::env::args().skip(1);
    let kubeconfig = args.next().expect("a kubeconfig path");
    let node = args.next().unwrap_or_else(|| "n1".into());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client =
            switchyard::kubeclient::client_from_kubeconfig(std::path::Path::new(&kubeconfig))
                .await?;
        let (stores, tasks) = switchyard::watch::start(&client);
        stores.wait_ready().await;
        eprintln!("stores ready");
        let mut last = usize::MAX;
        loop {
            let n = stores.services.state().len();
            if n == last {
                break;
            }
            last = n;
            eprintln!("{n} Services so far");
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let slices = stores.slices.state();
        let endpoints: usize = slices
            .iter()
            .map(|s| s.endpoints.as_ref().map_or(0, Vec::len))
            .sum();
        switchyard::memory::release_freed();
        println!(
            "{last} Services, {} EndpointSlices, {endpoints} endpoints; stores only: VmRSS {} VmHWM {}",
            slices.len(),
            status("VmRSS:"),
            status("VmHWM:")
        );
        drop(slices);
        let view = NodeView::new(
            &stores.nodes.state(),
            &node,
            Ipv4Addr::new(198, 18, 0, 11),
        );
        let cache = DesiredCache::rebuild(&stores.services.state(), &stores.slices.state(), view);
        let mut sync = ServiceSync::open(MemServiceMaps::in_memory())?;
        sync.sync_all(cache.desired())?;
        let names = switchyard::metrics::frontend_names(sync.programmed(), cache.desired());
        switchyard::memory::release_freed();
        println!(
            "{} frontends, {} names; with the desired cache and the sync (and its in-memory maps): VmRSS {} VmHWM {}",
            cache.desired().frontends.len(),
            names.len(),
            status("VmRSS:"),
            status("VmHWM:")
        );
        tasks.iter().for_each(|t| t.abort());
        Ok(())
    })
}
