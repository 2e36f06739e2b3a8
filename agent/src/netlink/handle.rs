//! [`Netlink`]: a route-netlink connection in one network namespace, with the few link, address
//! and route operations switchyard needs.
use super::NetlinkError;
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

/// A network interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index in its namespace.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address (all zero for devices without one, like `lo`).
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, …), if the device has one.
    pub kind: Option<String>,
    /// Index of the bridge this link is a port of.
    pub controller: Option<u32>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: [0; 6],
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            kind: None,
            controller: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(a),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Controller(c) if *c != 0 => link.controller = Some(*c),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    /// The MAC as `aa:bb:cc:dd:ee:ff`.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

/// Formats a MAC address as lower-case `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The stable MAC switchyard gives a bridge with address `ip`: `0a:58:` + the four IP bytes
/// (the convention kubenet uses), so the pods' gateway MAC never changes when ports come and go.
fn bridge_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// A route-netlink connection bound to the network namespace it was opened in.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace. Must run inside a tokio
    /// runtime (the connection is driven by a spawned task).
    pub fn connect() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The underlying rtnetlink handle, for the device-specific helpers of sibling modules.
    pub(super) fn raw(&self) -> &Handle {
        &self.handle
    }

    /// Looks up a link by name; `None` if there is none.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let req = self.handle.link().get().match_name(name).execute();
        collect_one(req, &format!("look up link {name}")).await
    }

    /// Looks up a link by index; `None` if there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let req = self.handle.link().get().match_index(index).execute();
        collect_one(req, &format!("look up link #{index}")).await
    }

    /// Looks up a link that must exist.
    pub async fn require_link(&self, name: &str) -> Result<Link, NetlinkError> {
        self.link(name)
            .await?
            .ok_or_else(|| NetlinkError::LinkNotFound(name.to_string()))
    }

    /// Sets a link administratively up.
    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.set_link(msg, format!("set link #{index} up")).await
    }

    /// Applies a link change message; `op` says what it does, for the error.
    async fn set_link(&self, msg: LinkMessage, op: String) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(NetlinkError::request(op))
    }

    /// Sets the MTU of a link.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set_link(msg, format!("set mtu {mtu} on link #{index}"))
            .await
    }

    /// Turns ARP off on a link (`ip link set DEV arp off`): the kernel sends to its on-link
    /// routes without resolving neighbours (the overlay device, whose peers are chosen by the
    /// programs' tunnel keys).
    pub async fn set_noarp(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).arp(false).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(NetlinkError::request(format!(
                "set arp off on link #{index}"
            )))
    }

    /// Sets (or replaces) the on-link route to `net/prefix` out of link `index`, with `src` as the
    /// source of the node's own packets (`ip route replace NET/PREFIX dev DEV src SRC`).
    pub async fn replace_route(
        &self,
        (net, prefix): (Ipv4Addr, u8),
        index: u32,
        src: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net, prefix)
            .output_interface(index)
            .pref_source(src)
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .build();
        self.replace(
            msg,
            format!("route {net}/{prefix} via link #{index} src {src}"),
        )
        .await
    }

    /// Adds or replaces a route; `op` says which, for the error.
    async fn replace(
        &self,
        msg: rtnetlink::packet_route::route::RouteMessage,
        op: String,
    ) -> Result<(), NetlinkError> {
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(NetlinkError::request(op))
    }

    /// Makes a link a port of the bridge with index `bridge`.
    pub async fn set_controller(&self, index: u32, bridge: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).controller(bridge).build();
        self.set_link(msg, format!("attach link #{index} to bridge #{bridge}"))
            .await
    }

    /// Deletes the link `name`; returns whether it existed. Deleting one end of a veth pair
    /// removes both.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let err = NetlinkError::request(format!("delete link {name}"))(e);
                // Gone in between (e.g. its peer's namespace was just destroyed): fine.
                if err.errno() == Some(libc::ENODEV) {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// The IPv4 addresses on a link, with their prefix lengths.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        Ok(self
            .ipv4_address_messages(index)
            .await?
            .into_iter()
            .map(|(ip, prefix, _)| (ip, prefix))
            .collect())
    }

    async fn ipv4_address_messages(
        &self,
        index: u32,
    ) -> Result<Vec<(Ipv4Addr, u8, AddressMessage)>, NetlinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(NetlinkError::request(format!(
                "list addresses of link #{index}"
            )))?;
        let mut out = Vec::new();
        for msg in msgs {
            if msg.header.index != index {
                continue;
            }
            let addr = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let addr = addr.or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                out.push((ip, msg.header.prefix_len, msg));
            }
        }
        Ok(out)
    }

    /// Adds `addr/prefix` to a link unless it is already there.
    pub async fn ensure_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let present = self.ipv4_addresses(index).await?;
        if present.contains(&(addr, prefix)) {
            return Ok(());
        }
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = NetlinkError::request(format!(
                    "add address {addr}/{prefix} to link #{index}"
                ))(e);
                if err.errno() == Some(libc::EEXIST) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Removes every IPv4 address of a link except `keep`.
    pub async fn remove_other_addresses(
        &self,
        index: u32,
        keep: (Ipv4Addr, u8),
    ) -> Result<(), NetlinkError> {
        for (ip, prefix, msg) in self.ipv4_address_messages(index).await? {
            if (ip, prefix) == keep {
                continue;
            }
            tracing::info!(%ip, prefix, index, "removing stale address");
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(NetlinkError::request(format!(
                    "remove address {ip}/{prefix} from link #{index}"
                )))?;
        }
        Ok(())
    }

    /// Sets (or replaces) the IPv4 default route via `gateway` out of link `index`.
    pub async fn replace_default_route(
        &self,
        index: u32,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.replace(msg, format!("set default route via {gateway}"))
            .await
    }

    /// See [`super::ensure_bridge`].
    pub async fn ensure_bridge(
        &self,
        name: &str,
        mtu: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<Link, NetlinkError> {
        let span = tracing::info_span!("ensure_bridge", bridge = name, %addr, prefix, mtu);
        let _enter = span.enter();
        let link = match self.link(name).await? {
            Some(link) => link,
            None => {
                let msg = LinkBridge::new(name)
                    .mtu(mtu)
                    .address(bridge_mac(addr).to_vec())
                    .build();
                if let Err(e) = self.handle.link().add(msg).execute().await {
                    let err = NetlinkError::request(format!("create bridge {name}"))(e);
                    if err.errno() != Some(libc::EEXIST) {
                        return Err(err);
                    }
                }
                tracing::info!("created bridge");
                self.require_link(name).await?
            }
        };
        if link.kind.as_deref() != Some("bridge") {
            return Err(NetlinkError::WrongKind {
                name: name.to_string(),
                expected: "bridge",
                found: link.kind.unwrap_or_else(|| "device without a kind".into()),
            });
        }
        if link.mtu != mtu {
            self.set_mtu(link.index, mtu).await?;
        }
        self.ensure_address(link.index, addr, prefix).await?;
        self.remove_other_addresses(link.index, (addr, prefix))
            .await?;
        if !link.up {
            self.set_up(link.index).await?;
        }
        self.require_link(name).await
    }

    /// Creates a veth pair: `host_name` in this namespace (MTU `mtu`, port of bridge `bridge`,
    /// up) and `peer_name` directly inside the namespace `peer_netns` (MTU `mtu`, still down).
    /// Returns the host side.
    pub async fn create_veth_into(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_netns: &File,
        mtu: u32,
        bridge: u32,
    ) -> Result<Link, NetlinkError> {
        let peer = LinkUnspec::new_with_name(peer_name)
            .mtu(mtu)
            .setns_by_fd(peer_netns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_name)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(NetlinkError::request(format!(
                "create veth {host_name} with peer {peer_name}"
            )))?;
        let host = self.require_link(host_name).await?;
        self.set_controller(host.index, bridge).await?;
        self.set_up(host.index).await?;
        self.require_link(host_name).await
    }
}

async fn collect_one<S>(stream: S, op: &str) -> Result<Option<Link>, NetlinkError>
where
    S: futures::Stream<Item = Result<LinkMessage, rtnetlink::Error>>,
{
    let result: Result<Vec<LinkMessage>, _> = stream.try_collect().await;
    match result {
        Ok(msgs) => Ok(msgs.first().map(Link::from_message)),
        Err(e) => {
            let err = NetlinkError::request(op)(e);
            if err.errno() == Some(libc::ENODEV) {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_format_like_iproute2() {
        assert_eq!(
            format_mac(&[0x0a, 0x58, 10, 244, 1, 1]),
            "0a:58:0a:f4:01:01"
        );
    }

    #[test]
    fn bridge_mac_is_locally_administered_unicast_and_follows_the_ip() {
        let mac = bridge_mac(Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_ne!(mac, bridge_mac(Ipv4Addr::new(10, 244, 2, 1)));
    }
}
