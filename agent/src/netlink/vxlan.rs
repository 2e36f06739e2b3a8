//! The overlay device: one `vxlan0` per node in external (collect_md) mode. It carries no VNI or
//! remote of its own; the eBPF programs set the tunnel key (remote node) on every packet.
use rtnetlink::{LinkMessageBuilder, LinkVxlan};

use super::{Link, Netlink, NetlinkError};

impl Netlink {
    /// Creates `name` as an external-mode VXLAN device on UDP `port` if it is missing, and sets it
    /// up — `ip link add NAME type vxlan external nolearning dstport PORT; ip link set NAME up`. A device of
    /// that name that is not a VXLAN device is an error, never replaced.
    pub async fn ensure_vxlan(&self, name: &str, port: u16) -> Result<Link, NetlinkError> {
        let span = tracing::info_span!("ensure_vxlan", device = name, port);
        let _enter = span.enter();
        let link = match self.link(name).await? {
            Some(link) => link,
            None => {
                let msg = LinkMessageBuilder::<LinkVxlan>::new(name)
                    .collect_metadata(true)
                    // No FDB learning (`ip link add … external` implies it): the programs route
                    // by tunnel key, and learning drops frames with an all-zero source MAC, such
                    // as those of the node's own processes reaching a NodePort through `lo`.
                    .learning(false)
                    .port(port)
                    .build();
                if let Err(e) = self.raw().link().add(msg).execute().await {
                    let err = NetlinkError::request(format!("create vxlan device {name}"))(e);
                    if err.errno() != Some(libc::EEXIST) {
                        return Err(err);
                    }
                }
                tracing::info!("created the overlay device");
                self.require_link(name).await?
            }
        };
        if link.kind.as_deref() != Some("vxlan") {
            return Err(NetlinkError::WrongKind {
                name: name.to_string(),
                expected: "vxlan",
                found: link.kind.unwrap_or_else(|| "device without a kind".into()),
            });
        }
        if !link.up {
            self.set_up(link.index).await?;
        }
        self.require_link(name).await
    }
}
