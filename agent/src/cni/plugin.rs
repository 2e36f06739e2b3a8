//! ADD, DEL and CHECK: wiring a pod's network namespace to the node's bridge.
//!
//! ADD: allocate an address, create the veth pair (`syv…` on `cbr0`, `eth0` in the pod), set the
//! pod side up with its address and a default route via the gateway, bring `lo` up, and leave an
//! [`EndpointRecord`] for the agent. DEL undoes all of it and succeeds when parts are already gone.
//!
//! Invariant: the plugin only ever deletes a host veth that is its container's or nobody's. The
//! host veth name is a 32-bit hash of the container id, so two containers can share it; a link
//! of that name which another container's endpoint record describes (same name and ifindex) is
//! that pod's: ADD fails naming the pod ([`code::HOST_LINK_TAKEN`]) and DEL leaves it alone. A
//! retried ADD of the same container (its own record, or no record) starts from scratch.
use super::config::{Invocation, NetConf};
use super::error::{code, CniError};
use super::ipam::{Ipam, IpamError};
use super::record::{read_records, EndpointRecord};
use super::result::{CniResult, Dns, Interface, IpConfig, Route};
use crate::netlink::{self, Link, Netlink};
use crate::paths;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> CniError {
        let code = match e {
            IpamError::Exhausted { .. } => code::IPAM_EXHAUSTED,
            IpamError::Io { .. } => code::IO,
        };
        CniError::new(code, "IPAM failed").with_details(e.to_string())
    }
}

fn io_error(what: String) -> impl FnOnce(io::Error) -> CniError {
    move |e| CniError::new(code::IO, what).with_details(e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_error("cannot start the async runtime".into()))
}

fn ipam_of(conf: &NetConf) -> Ipam {
    Ipam::new(
        paths::ipam_dir(&conf.node),
        conf.ipam.subnet,
        conf.gateway(),
    )
}

/// Path of the endpoint record of a container.
pub fn record_path(node: &str, container_id: &str) -> PathBuf {
    paths::endpoints_dir(node).join(format!("{container_id}.json"))
}

/// What ADD configured inside the pod.
struct PodSide {
    mac: String,
    /// The pod namespace's cookie, for socket load balancing.
    netns_cookie: u64,
}

/// Runs ADD; returns the result to print.
pub fn add(conf: &NetConf, inv: &Invocation) -> Result<CniResult, CniError> {
    let span = tracing::info_span!("cni_add", container = %inv.container_id);
    let _enter = span.enter();
    let netns = inv
        .netns
        .clone()
        .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS is not set"))?;
    let ns_file = netlink::open_netns(&netns).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} cannot be opened", netns.display()),
        )
        .with_details(e.to_string())
    })?;
    let rt = runtime()?;
    let host_name = paths::host_veth_name(&inv.container_id);

    let bridge = rt.block_on(async {
        let nl = Netlink::connect()?;
        Ok::<_, CniError>(nl.link(&conf.bridge).await?)
    })?;
    let Some(bridge) = bridge else {
        return Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("bridge {} does not exist yet; try again later", conf.bridge),
        )
        .with_details("the switchyard agent creates it once the node has a podCIDR"));
    };

    if let Some(owner) = rt.block_on(host_link_owner(conf, inv, &host_name))? {
        return Err(taken(&host_name, &owner));
    }

    let ipam = ipam_of(conf);
    let ip = ipam.allocate(&inv.container_id, &inv.ifname)?;
    let wired = wire(conf, inv, &rt, &bridge, &ns_file, &netns, &host_name, ip);
    let (host, pod) = match wired {
        Ok(v) => v,
        Err(e) => {
            // Leave nothing half-made: the veth (if created) and the address go again.
            let _ = rt.block_on(async { Netlink::connect()?.delete_link(&host_name).await });
            let _ = ipam.release(&inv.container_id);
            return Err(e);
        }
    };

    let prefix = conf.ipam.subnet.prefix();
    let gateway = conf.gateway();
    let record = EndpointRecord {
        container_id: inv.container_id.clone(),
        pod_namespace: inv.args.pod_namespace(),
        pod_name: inv.args.pod_name(),
        netns: netns.display().to_string(),
        ip,
        prefix_len: prefix,
        gateway,
        host_ifname: host.name.clone(),
        host_ifindex: host.index,
        host_mac: host.mac_string(),
        pod_mac: pod.mac.clone(),
        netns_cookie: pod.netns_cookie,
    };
    write_record(&conf.node, &record)?;
    tracing::info!(%ip, host_veth = %host.name, "pod wired");

    let pre_1_0 = conf.cni_version.starts_with("0.");
    Ok(CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: host.name.clone(),
                mac: host.mac_string(),
                sandbox: None,
            },
            Interface {
                name: inv.ifname.clone(),
                mac: pod.mac,
                sandbox: Some(netns.display().to_string()),
            },
        ],
        ips: vec![IpConfig {
            version: pre_1_0.then(|| "4".to_string()),
            address: format!("{ip}/{prefix}"),
            gateway: Some(gateway.to_string()),
            interface: Some(1),
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(gateway.to_string()),
        }],
        dns: Dns::default(),
    })
}

/// The endpoint record of another container than `inv`'s that describes the existing link
/// `host_name` (same name and ifindex), if any.
async fn host_link_owner(
    conf: &NetConf,
    inv: &Invocation,
    host_name: &str,
) -> Result<Option<EndpointRecord>, CniError> {
    let Some(link) = Netlink::connect()?.link(host_name).await? else {
        return Ok(None);
    };
    let (records, _unreadable) = read_records(&paths::endpoints_dir(&conf.node));
    Ok(other_owner(records.values(), &inv.container_id, &link.name, link.index).cloned())
}

/// Among `records`, the one of a container other than `container_id` whose host veth is the
/// link `name` with ifindex `index`. A record naming the link with another ifindex is stale
/// (its veth is gone, the name was reused) and owns nothing.
pub fn other_owner<'a>(
    records: impl IntoIterator<Item = &'a EndpointRecord>,
    container_id: &str,
    name: &str,
    index: u32,
) -> Option<&'a EndpointRecord> {
    records.into_iter().find(|r| {
        r.container_id != container_id && r.host_ifname == name && r.host_ifindex == index
    })
}

/// The error of an ADD whose host veth name `host_name` is `owner`'s link.
fn taken(host_name: &str, owner: &EndpointRecord) -> CniError {
    let pod = if owner.pod_name.is_empty() {
        "an unnamed pod".to_string()
    } else {
        format!("pod {}/{}", owner.pod_namespace, owner.pod_name)
    };
    CniError::new(
        code::HOST_LINK_TAKEN,
        format!(
            "host veth {host_name} belongs to {pod} (container {}); refusing to delete it",
            owner.container_id
        ),
    )
    .with_details(
        "the host veth name is a hash of the container id and another container has the same \
         one; remove that pod first or use another container id",
    )
}

#[allow(clippy::too_many_arguments)]
fn wire(
    conf: &NetConf,
    inv: &Invocation,
    rt: &tokio::runtime::Runtime,
    bridge: &Link,
    ns_file: &fs::File,
    netns: &Path,
    host_name: &str,
    ip: Ipv4Addr,
) -> Result<(Link, PodSide), CniError> {
    rt.block_on(async {
        let nl = Netlink::connect()?;
        // A repeated ADD for the same container starts from scratch; removing the host end
        // also removes the old pod end.
        nl.delete_link(host_name).await?;
        let mtu = conf.mtu.unwrap_or(bridge.mtu);
        nl.create_veth_into(host_name, &inv.ifname, ns_file, mtu, bridge.index)
            .await?;
        Ok::<_, CniError>(())
    })?;
    let ifname = inv.ifname.clone();
    let prefix = conf.ipam.subnet.prefix();
    let gateway = conf.gateway();
    let pod = netlink::block_on_in_netns(netns, move || async move {
        let nl = Netlink::connect()?;
        if let Some(lo) = nl.link("lo").await? {
            nl.set_up(lo.index).await?;
        }
        let eth = nl.require_link(&ifname).await?;
        nl.ensure_address(eth.index, ip, prefix).await?;
        nl.set_up(eth.index).await?;
        nl.replace_default_route(eth.index, gateway).await?;
        Ok::<_, netlink::NetlinkError>((eth.mac_string(), crate::datapath::devices::netns_cookie()))
    })??;
    let pod = PodSide {
        mac: pod.0,
        netns_cookie: pod.1.map_err(io_error(format!(
            "cannot read the cookie of network namespace {} (SO_NETNS_COOKIE, Linux 5.14+)",
            netns.display()
        )))?,
    };
    let host = rt.block_on(async { Netlink::connect()?.require_link(host_name).await })?;
    Ok((host, pod))
}

/// Writes the endpoint record atomically (temp file + rename).
fn write_record(node: &str, record: &EndpointRecord) -> Result<(), CniError> {
    let dir = paths::endpoints_dir(node);
    fs::create_dir_all(&dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
    let path = record_path(node, &record.container_id);
    let tmp = dir.join(format!(".{}.json.tmp", record.container_id));
    let json = serde_json::to_vec_pretty(record).map_err(|e| {
        CniError::new(code::IO, "cannot encode the endpoint record").with_details(e.to_string())
    })?;
    let mut f =
        fs::File::create(&tmp).map_err(io_error(format!("cannot write {}", tmp.display())))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(io_error(format!("cannot write {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io_error(format!("cannot rename to {}", path.display())))
}

fn remove_if_present(path: &Path) -> Result<(), CniError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_error(format!("cannot remove {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Runs DEL: removes the veth pair, the address, the record and the agent's marker. Anything
/// already gone is skipped, so DEL can be repeated.
pub fn del(conf: &NetConf, inv: &Invocation) -> Result<(), CniError> {
    let span = tracing::info_span!("cni_del", container = %inv.container_id);
    let _enter = span.enter();
    let host_name = paths::host_veth_name(&inv.container_id);
    let rt = runtime()?;
    match rt.block_on(host_link_owner(conf, inv, &host_name))? {
        Some(owner) => tracing::warn!(
            host_veth = %host_name,
            owner = %owner.container_id,
            "the host veth belongs to another container; left alone"
        ),
        None => {
            rt.block_on(async { Netlink::connect()?.delete_link(&host_name).await })?;
        }
    }
    ipam_of(conf).release(&inv.container_id)?;
    remove_if_present(&record_path(&conf.node, &inv.container_id))?;
    remove_if_present(&paths::attached_dir(&conf.node).join(&inv.container_id))?;
    Ok(())
}

/// Runs CHECK: the record, the IPAM allocation, the host veth on the bridge and the pod
/// interface with its address must all still be as ADD left them.
pub fn check(conf: &NetConf, inv: &Invocation) -> Result<(), CniError> {
    let fail = |msg: String| CniError::new(code::CHECK_FAILED, msg);
    let path = record_path(&conf.node, &inv.container_id);
    let raw = fs::read(&path).map_err(|e| {
        fail(format!(
            "endpoint record {} unreadable: {e}",
            path.display()
        ))
    })?;
    let record: EndpointRecord = serde_json::from_slice(&raw).map_err(|e| {
        fail(format!(
            "endpoint record {} is corrupt: {e}",
            path.display()
        ))
    })?;
    match ipam_of(conf).lookup(&inv.container_id)? {
        Some(ip) if ip == record.ip => {}
        other => {
            return Err(fail(format!(
                "IPAM holds {other:?} for the container, record says {}",
                record.ip
            )))
        }
    }
    let rt = runtime()?;
    let (host, bridge) = rt.block_on(async {
        let nl = Netlink::connect()?;
        Ok::<_, CniError>((
            nl.link(&record.host_ifname).await?,
            nl.link(&conf.bridge).await?,
        ))
    })?;
    let host = host.ok_or_else(|| fail(format!("host veth {} is missing", record.host_ifname)))?;
    let bridge = bridge.ok_or_else(|| fail(format!("bridge {} is missing", conf.bridge)))?;
    if host.controller != Some(bridge.index) || !host.up {
        return Err(fail(format!(
            "host veth {} is not up on {}",
            host.name, conf.bridge
        )));
    }
    let netns = inv
        .netns
        .clone()
        .unwrap_or_else(|| PathBuf::from(&record.netns));
    let ifname = inv.ifname.clone();
    let (ip, prefix) = (record.ip, record.prefix_len);
    let ok = netlink::block_on_in_netns(&netns, move || async move {
        let nl = Netlink::connect()?;
        let Some(eth) = nl.link(&ifname).await? else {
            return Ok::<_, netlink::NetlinkError>(false);
        };
        Ok(eth.up && nl.ipv4_addresses(eth.index).await?.contains(&(ip, prefix)))
    })
    .map_err(|e| fail(format!("cannot inspect {}: {e}", netns.display())))??;
    if !ok {
        return Err(fail(format!(
            "{} in {} lacks {ip}/{prefix} or is down",
            inv.ifname,
            netns.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(container_id: &str, host_ifname: &str, host_ifindex: u32) -> EndpointRecord {
        EndpointRecord {
            container_id: container_id.into(),
            pod_namespace: "default".into(),
            pod_name: format!("pod-{container_id}"),
            netns: "/run/netns/x".into(),
            ip: Ipv4Addr::new(10, 244, 1, 2),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 244, 1, 1),
            host_ifname: host_ifname.into(),
            host_ifindex,
            host_mac: "02:00:00:00:00:01".into(),
            pod_mac: "02:00:00:00:00:02".into(),
            netns_cookie: 0,
        }
    }

    #[test]
    fn a_host_link_another_containers_record_describes_is_that_containers() {
        let records = [record("a", "syv1", 7), record("b", "syv2", 8)];
        let owner = other_owner(&records, "c", "syv1", 7).expect("owned by a");
        assert_eq!(owner.container_id, "a");
        let err = taken("syv1", owner);
        assert_eq!(err.code, code::HOST_LINK_TAKEN);
        assert!(err.msg.contains("pod default/pod-a") && err.msg.contains("syv1"));
    }

    #[test]
    fn a_retried_add_or_a_stale_record_owns_nothing_that_blocks_add() {
        let records = [record("a", "syv1", 7)];
        assert!(other_owner(&records, "a", "syv1", 7).is_none(), "its own");
        assert!(
            other_owner(&records, "c", "syv1", 9).is_none(),
            "another ifindex: the record's veth is gone"
        );
        assert!(other_owner(&records, "c", "syv3", 7).is_none(), "unrelated");
    }
}
