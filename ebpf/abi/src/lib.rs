//! # switchyard-abi
//!
//! The `#[repr(C)]` keys and values of every BPF map switchyard uses, shared byte for byte by the
//! kernel programs (`switchyard-ebpf`, `no_std`) and the userspace agent (feature `user`, which
//! derives [`aya::Pod`]).
//!
//! Conventions:
//! - IPv4 addresses and L4 ports are stored in **network byte order** exactly as they appear in the
//!   packet, so the datapath compares them without swapping. Use [`ip_be`] / [`port_be`] to build them.
//! - Flags are `u8`/`u32` bit sets, never `bool`; every struct has explicit padding fields so both
//!   sides agree on size and every byte is initialised (hash maps compare keys bytewise).
//! - Map names carry a version suffix (`_V1`); a layout or capacity change bumps it so an old
//!   pinned map is never read with a new layout (the agent's loader removes pins of a map's
//!   other versions, see [`names::superseded`]).
//! - Reverse-NAT ids are `u32`: one per frontend address and port, so a `u16` would stop at
//!   65,535 frontends; the maps hold 100,000 Services with 500,000 endpoints with headroom.
#![no_std]

/// Pinned map names (also the names the eBPF programs declare). Pins live in
/// `/sys/fs/bpf/switchyard/<node>/<name>`.
pub mod names {
    /// Frontend (VIP, port, proto, slot) → service header or backend id.
    pub const SERVICES: &str = "SERVICES_V2";
    /// Backend id → backend address.
    pub const BACKENDS: &str = "BACKENDS_V2";
    /// Reverse-NAT id → frontend address.
    pub const REV_NAT: &str = "REV_NAT_V2";
    /// Connection tracking (LRU).
    pub const CT: &str = "CT_V2";
    /// Local pod IP → host veth.
    pub const LOCAL_PODS: &str = "LOCAL_PODS_V1";
    /// Node configuration (array of one).
    pub const CONFIG: &str = "CONFIG_V3";
    /// Per-CPU counters, indexed by [`crate::stat`].
    pub const STATS: &str = "STATS_V1";
    /// Source NAT table (masquerade and NodePort SNAT), both directions, LRU.
    pub const NAT: &str = "NAT_V2";
    /// Overlay routes: LPM trie podCIDR → node underlay address. Key: prefix length (`u32`) and
    /// network address (`u32`, network byte order); value: node address (`u32`, network order).
    pub const TUNNEL: &str = "TUNNEL_V1";
    /// Socket load balancing: (socket, backend) → the frontend the socket asked for, so that
    /// `recvmsg`/`getpeername` show the frontend (LRU).
    pub const SOCK_REV: &str = "SOCK_REV_V1";
    /// Translated fragmented datagrams: the addresses their later fragments (which carry no
    /// ports) get, keyed by the datagram as it arrived (LRU).
    pub const FRAGS: &str = "FRAGS_V1";
    /// ClientIP session affinity: (client, frontend) → backend and when it was last chosen (LRU).
    pub const AFFINITY: &str = "AFFINITY_V2";
    /// Which backends belong to which affinity frontend, so a removed backend releases its
    /// clients: (backend id, rev-NAT id, protocol) → 0.
    pub const AFFINITY_MATCH: &str = "AFFINITY_MATCH_V2";
    /// `loadBalancerSourceRanges`: LPM trie (rev-NAT id, protocol, client network) → 0.
    pub const SOURCE_RANGES: &str = "SOURCE_RANGES_V2";
    /// The node's uplinks: ifindex → the address masquerade gives traffic leaving through it.
    pub const UPLINKS: &str = "UPLINKS_V1";
    /// Per-CPU counters of each frontend, indexed by rev-NAT id ([`crate::SvcCounters`]).
    pub const SVC_STATS: &str = "SVC_STATS_V2";
    /// Socket load balancing for pods: network namespace cookie → pod IPv4 address (network
    /// order) of each local pod whose CNI record names its namespace's cookie.
    pub const POD_NETNS: &str = "POD_NETNS_V1";
    /// Every map name, for tooling that pins or removes them all.
    pub const ALL: [&str; 17] = [
        SERVICES,
        BACKENDS,
        REV_NAT,
        CT,
        LOCAL_PODS,
        CONFIG,
        STATS,
        TUNNEL,
        NAT,
        SOCK_REV,
        FRAGS,
        AFFINITY,
        AFFINITY_MATCH,
        SOURCE_RANGES,
        UPLINKS,
        SVC_STATS,
        POD_NETNS,
    ];

    /// Whether `file` (a name in a pin directory) is a version of one of our maps other than
    /// the one [`ALL`] names: `<NAME>_V<n>` where `ALL` has `<NAME>_V<m>`, `n != m`. A layout
    /// change bumps the version, so such a pin is an older agent's map, never to be read.
    pub fn superseded(file: &str) -> bool {
        let Some((base, version)) = split_version(file) else {
            return false;
        };
        ALL.iter()
            .any(|current| split_version(current).is_some_and(|(b, v)| b == base && v != version))
    }

    /// `("SERVICES", "2")` of `"SERVICES_V2"`; `None` unless the name ends in `_V` and digits.
    fn split_version(name: &str) -> Option<(&str, &str)> {
        let (base, version) = name.rsplit_once("_V")?;
        let digits = !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit());
        (digits && !base.is_empty()).then_some((base, version))
    }
}

/// Program names in the eBPF object.
pub mod programs {
    /// TC ingress on every pod's host-side veth: service load balancing, reverse NAT, local redirect.
    pub const FROM_POD: &str = "from_pod";
    /// TC ingress on `vxlan0`: packets from other nodes' pods (reverse NAT, delivery to local pods).
    pub const FROM_OVERLAY: &str = "from_overlay";
    /// TC ingress on the node's uplink: NodePort load balancing, replies to masqueraded flows.
    pub const FROM_NETDEV: &str = "from_netdev";
    /// TC egress on the node's uplink: masquerade of pod traffic leaving the cluster.
    pub const TO_NETDEV: &str = "to_netdev";
    /// TC egress on `cbr0`: what the node's own stack sends to local pods (reverse NAT of
    /// replies from endpoints in the node's namespace).
    pub const TO_PODS: &str = "to_pods";
    /// TC egress on `vxlan0`: the tunnel key of packets the node's own stack sends to other
    /// nodes' pods.
    pub const TO_OVERLAY: &str = "to_overlay";
    /// cgroup `connect4`: socket load balancing for clients in the node's own namespace.
    pub const SOCK_CONNECT4: &str = "sock_connect4";
    /// cgroup `sendmsg4`: the same for unconnected UDP.
    pub const SOCK_SENDMSG4: &str = "sock_sendmsg4";
    /// cgroup `recvmsg4`: replies of unconnected UDP show the frontend as their source.
    pub const SOCK_RECVMSG4: &str = "sock_recvmsg4";
    /// cgroup `getpeername4`: a balanced socket's peer is the frontend.
    pub const SOCK_GETPEERNAME4: &str = "sock_getpeername4";
    /// XDP (native) on the node's uplink with `--nodeport-acceleration native`: NodePort
    /// traffic to remote backends balanced, translated and encapsulated before an skb exists.
    pub const XDP_NODEPORT: &str = "xdp_nodeport";
    /// Every TC classifier.
    pub const CLASSIFIERS: [&str; 6] = [
        FROM_POD,
        FROM_OVERLAY,
        FROM_NETDEV,
        TO_NETDEV,
        TO_PODS,
        TO_OVERLAY,
    ];
    /// Every cgroup socket-address program.
    pub const SOCKET: [&str; 4] = [
        SOCK_CONNECT4,
        SOCK_SENDMSG4,
        SOCK_RECVMSG4,
        SOCK_GETPEERNAME4,
    ];
}

/// Map capacities (entries). The agent and the programs must agree.
pub mod capacity {
    /// `SERVICES`: one header plus one slot per backend, for every (frontend, port): 100,000
    /// frontends with 5 backends each take 600,000.
    pub const SERVICES: u32 = 1_048_576;
    /// `BACKENDS`: one per distinct backend (address, port, protocol): 500,000 endpoints of
    /// 100,000 single-port Services take 500,000.
    pub const BACKENDS: u32 = 1_048_576;
    /// `REV_NAT`: one per frontend address and port.
    pub const REV_NAT: u32 = 262_144;
    /// `SVC_STATS`: slots of the per-CPU frontend counters, indexed by rev-NAT id (ids at or
    /// above it are not counted). Equal to `REV_NAT`, so every frontend that fits is counted.
    pub const SVC_STATS: u32 = REV_NAT;
    /// `CT`: two entries (forward and reply) per tracked connection.
    pub const CT: u32 = 262_144;
    /// `LOCAL_PODS`.
    pub const LOCAL_PODS: u32 = 4_096;
    /// `POD_NETNS`: one per local pod, as `LOCAL_PODS`.
    pub const POD_NETNS: u32 = LOCAL_PODS;
    /// `STATS`: number of counters.
    pub const STATS: u32 = 64;
    /// `TUNNEL`: one pod CIDR and one node address per node.
    pub const TUNNEL: u32 = 8_192;
    /// `NAT`: two entries (both directions) per translated flow.
    pub const NAT: u32 = 131_072;
    /// `SOCK_REV`: one per balanced socket (and backend, for unconnected UDP).
    pub const SOCK_REV: u32 = 65_536;
    /// `FRAGS`: one per fragmented datagram in flight.
    pub const FRAGS: u32 = 8_192;
    /// `AFFINITY`: one per (client, affinity frontend).
    pub const AFFINITY: u32 = 65_536;
    /// `AFFINITY_MATCH`: one per backend of an affinity frontend.
    pub const AFFINITY_MATCH: u32 = 65_536;
    /// `SOURCE_RANGES`: one per allowed network of a load balancer frontend.
    pub const SOURCE_RANGES: u32 = 16_384;
    /// `UPLINKS`: one per uplink device.
    pub const UPLINKS: u32 = 16;
}

/// IP protocol numbers used in keys.
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMP.
    pub const ICMP: u8 = 1;
}

/// Key of `SERVICES`. Slot 0 holds the service header, slots `1..=count` the backend ids.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Frontend IPv4 address, network byte order.
    pub addr: u32,
    /// Frontend port, network byte order.
    pub port: u16,
    /// 0 for the header, 1..=count for backends.
    pub slot: u16,
    /// IP protocol ([`proto`]).
    pub proto: u8,
    /// [`SCOPE_EXTERNAL`] or [`SCOPE_INTERNAL`].
    pub scope: u8,
    /// Padding, always zero.
    pub pad: [u8; 2],
}

impl ServiceKey {
    /// The key of `slot` (0: the header) of the frontend `addr:port/proto`, all in map byte
    /// order (see [`ip_be`], [`port_be`]), in [`SCOPE_EXTERNAL`]; reserved bytes zero.
    pub const fn new(addr: u32, port: u16, proto: u8, slot: u16) -> Self {
        Self::scoped(addr, port, proto, slot, SCOPE_EXTERNAL)
    }

    /// The same in `scope`.
    pub const fn scoped(addr: u32, port: u16, proto: u8, slot: u16, scope: u8) -> Self {
        ServiceKey {
            addr,
            port,
            slot,
            proto,
            scope,
            pad: [0; 2],
        }
    }
}

/// `ServiceValue::flags`: the service uses ClientIP session affinity.
pub const SVC_FLAG_AFFINITY: u8 = 1 << 0;
/// `ServiceValue::flags`: only node-local backends may be chosen (externalTrafficPolicy: Local).
pub const SVC_FLAG_LOCAL_ONLY: u8 = 1 << 1;
/// `ServiceValue::flags`: the frontend is a NodePort.
pub const SVC_FLAG_NODEPORT: u8 = 1 << 2;
/// `ServiceValue::flags`: the frontend is an external IP or a load balancer ingress IP.
pub const SVC_FLAG_EXTERNAL: u8 = 1 << 3;
/// `ServiceValue::flags`: slots hold a Maglev table; a flow's hash picks the slot.
pub const SVC_FLAG_MAGLEV: u8 = 1 << 4;
/// `ServiceValue::flags` (scope 0 only): clients inside the cluster use the frontend's
/// [`SCOPE_INTERNAL`] entries (other backends than outside clients get).
pub const SVC_FLAG_TWO_SCOPES: u8 = 1 << 5;
/// `ServiceValue::flags`: only clients in `SOURCE_RANGES` may connect.
pub const SVC_FLAG_SOURCE_RANGES: u8 = 1 << 6;

/// `ServiceKey::scope` of the entries every client uses (outside clients, when two scopes).
pub const SCOPE_EXTERNAL: u8 = 0;
/// `ServiceKey::scope` of the entries clients inside the cluster use when the header has
/// [`SVC_FLAG_TWO_SCOPES`].
pub const SCOPE_INTERNAL: u8 = 1;

/// Slots of a Maglev frontend: a prime, so every backend's permutation covers the table.
pub const MAGLEV_TABLE_SIZE: u16 = 4093;

/// Value of `SERVICES`. In slot 0: `count`, `rev_nat_id`, `flags`, `affinity_timeout`.
/// In slot n: `backend_id` (and `rev_nat_id` repeated, for consistency checks).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceValue {
    /// Backend id (slots ≥ 1); 0 in the header.
    pub backend_id: u32,
    /// Reverse-NAT id of this frontend.
    pub rev_nat_id: u32,
    /// Number of backend slots (header only). 0 means "no ready endpoints": clients are rejected.
    pub count: u16,
    /// `SVC_FLAG_*` bits.
    pub flags: u8,
    /// Padding, always zero.
    pub pad: u8,
    /// Session affinity timeout in seconds (0 when affinity is off).
    pub affinity_timeout: u32,
}

/// `Backend::state`: the backend takes new connections.
pub const BACKEND_ACTIVE: u8 = 0;
/// `Backend::state`: the backend is terminating: existing flows only.
pub const BACKEND_TERMINATING: u8 = 1;

/// Value of `BACKENDS` (key: backend id, `u32`, never 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// Backend (pod) IPv4 address, network byte order.
    pub addr: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// `BACKEND_*`.
    pub state: u8,
    /// Underlay IPv4 address of the node the backend runs on (network byte order), 0 if unknown.
    pub node_addr: u32,
}

/// Value of `REV_NAT` (key: rev-NAT id, `u32`, never 0): the frontend to restore on replies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevNat {
    /// Frontend IPv4 address, network byte order.
    pub addr: u32,
    /// Frontend port, network byte order.
    pub port: u16,
    /// Padding, always zero.
    pub pad: u16,
}

/// `CtKey::dir`: the packet goes client → frontend (original direction).
pub const CT_DIR_FORWARD: u8 = 0;
/// `CtKey::dir`: the packet goes backend → client (reply direction, after DNAT).
pub const CT_DIR_REPLY: u8 = 1;

/// Key of `CT`. Forward entries are keyed by the packet as the client sent it
/// (client → VIP); reply entries by the reply as the backend sends it (backend → client).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Source address, network byte order.
    pub saddr: u32,
    /// Destination address, network byte order.
    pub daddr: u32,
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// `CT_DIR_*`.
    pub dir: u8,
    /// Padding, always zero.
    pub pad: [u8; 2],
}

/// Value of `CT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtValue {
    /// Chosen backend id (forward entries).
    pub backend_id: u32,
    /// Reverse-NAT id of the frontend.
    pub rev_nat_id: u32,
    /// `CT_FLAG_*`: how the flow is closing in this entry's direction (a SYN clears them).
    pub flags: u8,
    /// Padding, always zero.
    pub pad: u8,
    /// The port (network byte order) the entry's packets are translated to: in reply entries
    /// the frontend's, restored as the source of replies; in forward entries the backend's.
    pub nat_port: u16,
    /// The IPv4 address (network byte order) the entry's packets are translated to: in reply
    /// entries the frontend's, restored as the source of replies, so that a reply needs no
    /// `REV_NAT` lookup; in forward entries the backend's, so that a TCP packet needs no
    /// `BACKENDS` lookup while the entry is fresh (see `last_seen`). 0 in entries written by a
    /// datapath older than this field: their packets look `rev_nat_id` or `backend_id` up.
    pub nat_addr: u32,
    /// `bpf_ktime_get_coarse_ns()` of the last packet, refreshed at most once per
    /// `CT_REFRESH_NS` (so up to that much behind the last packet). A TCP forward entry's packets
    /// trust its `nat_addr` only until it is due for a refresh; the refreshing packet looks the
    /// backend up again.
    pub last_seen: u64,
    /// Packets seen in this direction.
    pub packets: u64,
    /// Bytes seen in this direction.
    pub bytes: u64,
}

/// How often a `CT` entry's `last_seen` is refreshed, in ns (1 s). It bounds how long a TCP
/// flow's forward entry trusts the backend it remembers: a TCP flow whose backend was removed
/// moves to a new one at its first packet a second or more after the entry's last refresh (UDP
/// flows look their backend up at every datagram). The sweeper's idle timeouts are 10 s and
/// more.
pub const CT_REFRESH_NS: u64 = 1_000_000_000;

/// `CtValue::flags`: a TCP FIN went through in this entry's direction.
pub const CT_FLAG_FIN: u8 = 1 << 0;
/// `CtValue::flags`: a TCP RST went through in this entry's direction.
pub const CT_FLAG_RST: u8 = 1 << 1;

/// Key of `NAT`: a flow as seen on the wire before translation (`CT_DIR_FORWARD`: the original
/// packet, inside → outside) or as the reply arrives (`CT_DIR_REPLY`: outside → translated address).
pub type NatKey = CtKey;

/// Value of `NAT`: the address to write — the translated source for forward entries, the original
/// source (restored as destination) for reply entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatEntry {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    /// `NAT_FLAG_*`.
    pub flags: u8,
    /// Padding, always zero.
    pub pad: u8,
    /// `bpf_ktime_get_ns()` of the last packet in this entry's direction.
    pub last_seen: u64,
}

/// `NatEntry::flags`: a TCP FIN went through in this direction.
pub const NAT_FLAG_FIN: u8 = 1 << 0;
/// `NatEntry::flags`: a TCP RST went through in this direction.
pub const NAT_FLAG_RST: u8 = 1 << 1;

// The datapath records closing flags the same way in both tables.
const _: () = assert!(CT_FLAG_FIN == NAT_FLAG_FIN && CT_FLAG_RST == NAT_FLAG_RST);

/// How long a translation outlives the last packet of its flow before its port may be given to
/// another flow (nanoseconds), after netfilter's conntrack timeouts: after an RST …
pub const NAT_TIMEOUT_RST_NS: u64 = 10 * 1_000_000_000;
/// … after a FIN (the closing side's TIME_WAIT) …
pub const NAT_TIMEOUT_FIN_NS: u64 = 60 * 1_000_000_000;
/// … for an idle TCP flow …
pub const NAT_TIMEOUT_TCP_NS: u64 = 2 * 3600 * 1_000_000_000;
/// … and for an idle UDP flow.
pub const NAT_TIMEOUT_UDP_NS: u64 = 120 * 1_000_000_000;

/// Default first port (host order) masquerade allocates (NodePort SNAT first tries to keep the
/// client's port); above the kernel's default ephemeral range (32768–60999), so translated flows
/// never collide with the node's own sockets. The agent's `--masquerade-ports` sets the range.
pub const SNAT_PORT_MIN: u16 = 61_000;
/// Default last port (host order) SNAT allocates.
pub const SNAT_PORT_MAX: u16 = 65_535;

/// Value of `LOCAL_PODS` (key: pod IPv4 address, network byte order `u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalPod {
    /// Ifindex of the pod's host-side veth (in the node namespace).
    pub ifindex: u32,
    /// MAC of the pod's `eth0`.
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth (used as source MAC when redirecting to the pod).
    pub host_mac: [u8; 6],
}

/// Key of `SOCK_REV`: a socket (its cookie) and the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockRevKey {
    /// `bpf_get_socket_cookie` of the socket.
    pub cookie: u64,
    /// Backend address, network byte order.
    pub addr: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// Padding, always zero.
    pub pad: u16,
}

/// Value of `SVC_STATS` (per CPU, index: the frontend's rev-NAT id; TCP and UDP frontends on one
/// address and port share it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SvcCounters {
    /// Packets to the frontend and replies from its backends.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// New connections (flows, and sockets balanced at connect time).
    pub connections: u64,
}

/// Key of `AFFINITY`: a client of a frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    /// Client address, network byte order.
    pub client: u32,
    /// The frontend's rev-NAT id.
    pub rev_nat_id: u32,
    /// IP protocol.
    pub proto: u8,
    /// Padding, always zero.
    pub pad: [u8; 3],
}

/// Value of `AFFINITY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityValue {
    /// The backend the client sticks to.
    pub backend_id: u32,
    /// Padding, always zero.
    pub pad: u32,
    /// `bpf_ktime_get_ns()` of the client's last new connection.
    pub last_used: u64,
}

/// Key of `AFFINITY_MATCH`: a backend of an affinity frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityMatchKey {
    /// Backend id.
    pub backend_id: u32,
    /// The frontend's rev-NAT id.
    pub rev_nat_id: u32,
    /// The frontend's IP protocol (TCP and UDP frontends on one port share a rev-NAT id).
    pub proto: u8,
    /// Padding, always zero.
    pub pad: [u8; 3],
}

/// The data of a `SOURCE_RANGES` LPM key (its prefix length is [`SOURCE_RANGE_PREFIX`] plus the
/// network's).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRangeKey {
    /// The frontend's rev-NAT id, network byte order (the trie matches bytes in order).
    pub rev_nat_id: u32,
    /// IP protocol.
    pub proto: u8,
    /// Padding, always zero.
    pub pad: [u8; 3],
    /// Client network address, network byte order.
    pub addr: u32,
}

/// Bits of a [`SourceRangeKey`] before its address (rev-NAT id, protocol, padding): the prefix
/// length of a key is this plus the client network's.
pub const SOURCE_RANGE_PREFIX: u32 = 64;

/// Key of `FRAGS`: a fragmented datagram as its first fragment arrived at a hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address, network byte order.
    pub saddr: u32,
    /// Destination address, network byte order.
    pub daddr: u32,
    /// IPv4 identification, network byte order.
    pub id: u16,
    /// IP protocol.
    pub proto: u8,
    /// Padding, always zero.
    pub pad: u8,
}

/// Value of `FRAGS`: the addresses the first fragment left the hook with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragValue {
    /// Source address, network byte order.
    pub saddr: u32,
    /// Destination address, network byte order.
    pub daddr: u32,
}

/// The source address hairpin connections get (a pod reaching its own Service and balanced
/// to itself): a link-local address no real peer uses, as Cilium's service loopback address,
/// so the pod's reply comes back through the datapath (kube-proxy masquerades these to the
/// node's bridge address instead).
pub const SERVICE_LOOPBACK: [u8; 4] = [169, 254, 42, 1];

/// The VXLAN network identifier of the overlay.
pub const OVERLAY_VNI: u32 = 1;

/// Value of `CONFIG[0]`: what the datapath needs to know about its node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeConfig {
    /// Node underlay IPv4 address, network byte order.
    pub node_addr: u32,
    /// Node podCIDR network address, network byte order.
    pub pod_cidr: u32,
    /// Cluster pod CIDR network address, network byte order.
    pub cluster_cidr: u32,
    /// Service CIDR network address, network byte order.
    pub service_cidr: u32,
    /// Prefix lengths: pod, cluster, service.
    pub pod_prefix: u8,
    /// Cluster CIDR prefix length.
    pub cluster_prefix: u8,
    /// Service CIDR prefix length.
    pub service_prefix: u8,
    /// Padding, always zero.
    pub pad: u8,
    /// Ifindex of `vxlan0` (0 when there is no overlay).
    pub vxlan_ifindex: u32,
    /// Ifindex of the node's uplink (`eth0`), where NodePort replies leave (0 when unknown).
    pub uplink_ifindex: u32,
    /// Lowest NodePort (host byte order).
    pub nodeport_min: u16,
    /// Highest NodePort (host byte order).
    pub nodeport_max: u16,
    /// Cookie of the node's network namespace (`SO_NETNS_COOKIE`): socket programs attached to
    /// a shared cgroup act only on sockets of this namespace. 0: socket load balancing off.
    pub netns_cookie: u64,
    /// First port (host byte order) masquerade and NodePort SNAT allocate.
    pub snat_port_min: u16,
    /// Last port (host byte order) they allocate.
    pub snat_port_max: u16,
    /// Ports tried before a new translated flow is dropped (at most [`SNAT_MAX_ATTEMPTS`]).
    pub snat_attempts: u16,
    /// UDP destination port of `vxlan0` (network byte order), for `xdp_nodeport`, which
    /// encapsulates by itself. 0 (an agent without NodePort acceleration): `xdp_nodeport`
    /// passes every packet. Was padding: an older agent writes 0.
    pub vxlan_port: u16,
}

/// The most ports SNAT tries for one new flow.
pub const SNAT_MAX_ATTEMPTS: u16 = 64;

/// Indexes into `STATS` (per-CPU `u64` counters).
pub mod stat {
    /// IPv4 packets seen by `from_pod`.
    pub const PACKETS: u32 = 0;
    /// New connections load-balanced to a backend.
    pub const LB_NEW: u32 = 1;
    /// Packets of an existing connection DNATed via conntrack.
    pub const LB_ESTABLISHED: u32 = 2;
    /// Reply packets reverse-NATed.
    pub const REV_NAT: u32 = 3;
    /// Packets redirected straight to a local pod's veth.
    pub const REDIRECT_LOCAL: u32 = 4;
    /// Rejected (ICMP unreachable sent): the service has no ready backend.
    pub const DROP_NO_BACKEND: u32 = 5;
    /// Dropped: a service slot or backend entry was missing (map being updated).
    pub const DROP_STALE_SLOT: u32 = 6;
    /// Dropped: a packet rewrite helper failed.
    pub const DROP_REWRITE: u32 = 7;
    /// Dropped: the packet was too short or malformed.
    pub const DROP_MALFORMED: u32 = 8;
    /// Non-first IPv4 fragments seen by `from_pod`.
    pub const FRAGMENT: u32 = 9;
    /// Packets encapsulated towards another node.
    pub const TUNNEL_TX: u32 = 10;
    /// Packets received from the overlay.
    pub const TUNNEL_RX: u32 = 11;
    /// New flows masqueraded to the node address.
    pub const SNAT_NEW: u32 = 12;
    /// Replies restored from a source NAT entry.
    pub const SNAT_REVERSE: u32 = 13;
    /// Dropped: no free SNAT port for the destination.
    pub const DROP_SNAT_EXHAUSTED: u32 = 14;
    /// Packets to a NodePort frontend.
    pub const NODEPORT: u32 = 15;
    /// Dropped: NodePort with `externalTrafficPolicy: Local` and no local backend.
    pub const DROP_NO_LOCAL_BACKEND: u32 = 16;
    /// Dropped: a remote backend's node has no overlay route.
    pub const DROP_NO_ROUTE: u32 = 17;
    /// Hairpin connections (a pod balanced to itself), source translated to the service
    /// loopback address.
    pub const HAIRPIN: u32 = 18;
    /// Sockets in the node's namespace balanced at connect/sendmsg time.
    pub const SOCK_LB: u32 = 19;
    /// Sockets refused at connect time: their frontend has no backend.
    pub const SOCK_REJECT: u32 = 20;
    /// Replies from endpoints in the node's namespace reverse-NATed on their way to a pod.
    pub const HOST_REV_NAT: u32 = 21;
    /// Packets the node's stack sent into the overlay.
    pub const HOST_TUNNEL_TX: u32 = 22;
    /// Later fragments of a translated datagram, translated like its first.
    pub const FRAG_TRANSLATED: u32 = 23;
    /// ICMP errors about a translated flow, translated back for its client.
    pub const ICMP_TRANSLATED: u32 = 24;
    /// New connections sent to the backend their client's affinity names.
    pub const AFFINITY_HIT: u32 = 25;
    /// Dropped: the client is outside the frontend's `loadBalancerSourceRanges`.
    pub const DROP_SOURCE_RANGE: u32 = 26;
    /// Packets to an external IP or load balancer frontend from outside the node.
    pub const EXTERNAL: u32 = 27;
    /// Dropped by `from_pod`: the IPv4 source is not the address of the pod whose veth the
    /// packet arrived on (`LOCAL_PODS`).
    pub const DROP_SOURCE_SPOOFED: u32 = 28;
    /// NodePort (or external IP / load balancer) packets `xdp_nodeport` balanced, translated,
    /// encapsulated and sent back out of the uplink it arrived on (`XDP_TX`).
    pub const XDP_TX: u32 = 29;
    /// The same, sent out of another device the FIB named (`XDP_REDIRECT`).
    pub const XDP_REDIRECT: u32 = 30;
    /// Packets `xdp_nodeport` would have sent but passed to the TC path because the FIB
    /// lookup of the remote node did not succeed (no neighbour entry yet, no route).
    pub const XDP_PASS_FIB: u32 = 31;
    /// Human-readable names, indexed by counter id.
    pub const NAMES: [&str; 32] = [
        "packets",
        "lb_new",
        "lb_established",
        "rev_nat",
        "redirect_local",
        "drop_no_backend",
        "drop_stale_slot",
        "drop_rewrite",
        "drop_malformed",
        "fragment",
        "tunnel_tx",
        "tunnel_rx",
        "snat_new",
        "snat_reverse",
        "drop_snat_exhausted",
        "nodeport",
        "drop_no_local_backend",
        "drop_no_route",
        "hairpin",
        "sock_lb",
        "sock_reject",
        "host_rev_nat",
        "host_tunnel_tx",
        "frag_translated",
        "icmp_translated",
        "affinity_hit",
        "drop_source_range",
        "external",
        "drop_source_spoofed",
        "xdp_tx",
        "xdp_redirect",
        "xdp_pass_fib",
    ];
}

/// An IPv4 address as stored in maps (network byte order in memory).
pub const fn ip_be(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// An [`Ipv4Addr`](core::net::Ipv4Addr) as stored in maps (network byte order in memory).
pub const fn addr_be(ip: core::net::Ipv4Addr) -> u32 {
    ip_be(ip.octets())
}

/// The address a map value in network byte order holds (the inverse of [`addr_be`]).
pub const fn addr_from_be(value: u32) -> core::net::Ipv4Addr {
    let o = value.to_ne_bytes();
    core::net::Ipv4Addr::new(o[0], o[1], o[2], o[3])
}

/// A port as stored in maps (network byte order in memory).
pub const fn port_be(port: u16) -> u16 {
    port.to_be()
}

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: all these types are #[repr(C)], Copy, made only of integers and byte arrays, and
    // have explicit padding fields, so every bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::RevNat {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtValue {}
    unsafe impl aya::Pod for super::LocalPod {}
    unsafe impl aya::Pod for super::NodeConfig {}
    unsafe impl aya::Pod for super::NatEntry {}
    unsafe impl aya::Pod for super::SockRevKey {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragValue {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityValue {}
    unsafe impl aya::Pod for super::AffinityMatchKey {}
    unsafe impl aya::Pod for super::SourceRangeKey {}
    unsafe impl aya::Pod for super::SvcCounters {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 12);
        assert_eq!(size_of::<ServiceValue>(), 16);
        assert_eq!(size_of::<Backend>(), 12);
        assert_eq!(size_of::<RevNat>(), 8);
        assert_eq!(size_of::<CtKey>(), 16);
        assert_eq!(size_of::<CtValue>(), 40);
        assert_eq!(size_of::<LocalPod>(), 16);
        assert_eq!(size_of::<NodeConfig>(), 48);
        assert_eq!(size_of::<SockRevKey>(), 16);
        assert_eq!(size_of::<FragKey>(), 12);
        assert_eq!(size_of::<FragValue>(), 8);
        assert_eq!(size_of::<AffinityKey>(), 12);
        assert_eq!(size_of::<AffinityValue>(), 16);
        assert_eq!(size_of::<AffinityMatchKey>(), 12);
        assert_eq!(size_of::<SourceRangeKey>(), 12);
        assert_eq!(
            SOURCE_RANGE_PREFIX as usize,
            8 * (size_of::<SourceRangeKey>() - size_of::<u32>())
        );
        assert_eq!(size_of::<SvcCounters>(), 24);
        assert_eq!(size_of::<NatEntry>(), 16);
    }

    #[test]
    fn byte_order_helpers_match_the_wire() {
        let ip = ip_be([10, 96, 0, 1]);
        assert_eq!(ip.to_ne_bytes(), [10, 96, 0, 1]);
        assert_eq!(port_be(8080).to_ne_bytes(), [0x1f, 0x90]);
        let addr = core::net::Ipv4Addr::new(10, 96, 0, 1);
        assert_eq!(addr_be(addr), ip);
        assert_eq!(addr_from_be(ip), addr);
    }

    #[test]
    fn a_service_key_has_its_reserved_bytes_zero() {
        let k = ServiceKey::new(ip_be([10, 96, 0, 1]), port_be(80), proto::TCP, 2);
        assert_eq!((k.scope, k.pad, k.slot), (0, [0, 0], 2));
    }

    #[test]
    fn only_other_versions_of_our_maps_are_superseded() {
        assert!(names::superseded("SERVICES_V1"));
        assert!(names::superseded("REV_NAT_V1"));
        assert!(names::superseded("NAT_V1"));
        assert!(names::superseded("CONFIG_V2"));
        for current in names::ALL {
            assert!(!names::superseded(current), "{current}");
        }
        for other in [
            "links",
            "SERVICES",
            "SERVICES_V",
            "SERVICES_Vx",
            "OTHER_V1",
            "_V1",
        ] {
            assert!(!names::superseded(other), "{other}");
        }
    }

    #[test]
    fn stat_names_cover_every_counter() {
        assert_eq!(stat::NAMES.len() as u32, stat::XDP_PASS_FIB + 1);
        assert!(stat::NAMES.len() as u32 <= capacity::STATS);
    }
}
