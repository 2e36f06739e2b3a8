//! rtnetlink helpers: the pod bridge `cbr0`, pod veth pairs, addresses and routes, and running
//! netlink work inside another network namespace.
//!
//! Everything here is idempotent where the kernel allows it, so the agent and the CNI plugin can
//! reconcile instead of recreating. The agent calls [`ensure_bridge`] and [`enable_ip_forward`];
//! the CNI plugin uses [`Netlink`] and [`block_on_in_netns`] to wire pod interfaces.
mod error;
mod handle;
mod netns;
mod sysctl;
mod vxlan;

pub use error::NetlinkError;
pub use handle::{format_mac, Link, Netlink};
pub use netns::{block_on_in_netns, open_netns};
pub use sysctl::enable_ip_forward;

use std::net::Ipv4Addr;

/// Creates the pod bridge `name` in the current network namespace if it is missing, sets its MTU,
/// gives it `addr/prefix` (removing any other IPv4 address it carries) and sets it up.
///
/// This is what the seed notes do by hand:
/// `ip link add name cbr0 type bridge; ip link set dev cbr0 mtu 1460;
/// ip addr add 10.244.1.1/24 dev cbr0; ip link set dev cbr0 up`.
/// Calling it again with the same arguments changes nothing. Must run inside a tokio runtime.
pub async fn ensure_bridge(
    name: &str,
    mtu: u32,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<Link, NetlinkError> {
    Netlink::connect()?
        .ensure_bridge(name, mtu, addr, prefix)
        .await
}

/// Deletes the link `name` in the current network namespace; returns whether it existed.
/// Must run inside a tokio runtime.
pub async fn delete_link(name: &str) -> Result<bool, NetlinkError> {
    Netlink::connect()?.delete_link(name).await
}

/// Looks up the link `name` in the current network namespace. Must run inside a tokio runtime.
pub async fn get_link(name: &str) -> Result<Option<Link>, NetlinkError> {
    Netlink::connect()?.link(name).await
}
