//! Every map of the datapath. Names and layouts come from `switchyard-abi`; all maps are pinned by
//! name (under the directory the agent passes to the loader) so they outlive the agent.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use switchyard_abi::{
    capacity, AffinityKey, AffinityMatchKey, AffinityValue, Backend, CtKey, CtValue, FragKey,
    FragValue, LocalPod, NatEntry, NatKey, NodeConfig, RevNat, ServiceKey, ServiceValue,
    SockRevKey, SourceRangeKey, SvcCounters,
};

/// `BPF_F_NO_PREALLOC`: entries are allocated as they are written. The service maps are sized
/// for 100,000 Services and written only by the agent, so they take kernel memory for what they
/// hold (as Cilium's maps by default), not ~100 bytes per possible entry up front; lookups cost
/// the same.
const NO_PREALLOC: u32 = 1;

/// Frontend (VIP, port, proto, slot) → service header (slot 0) or backend id (slot n).
#[map(name = "SERVICES_V2")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::pinned(capacity::SERVICES, NO_PREALLOC);

/// Backend id → backend address and state.
#[map(name = "BACKENDS_V2")]
pub static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(capacity::BACKENDS, NO_PREALLOC);

/// Reverse-NAT id → frontend to restore on replies.
#[map(name = "REV_NAT_V2")]
pub static REV_NAT: HashMap<u32, RevNat> = HashMap::pinned(capacity::REV_NAT, NO_PREALLOC);

/// Connection tracking: forward and reply entries of every load-balanced flow.
#[map(name = "CT_V2")]
pub static CT: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(capacity::CT, 0);

/// Pod IP → host veth of the pods on this node.
#[map(name = "LOCAL_PODS_V1")]
pub static LOCAL_PODS: HashMap<u32, LocalPod> = HashMap::pinned(capacity::LOCAL_PODS, 0);

/// Node configuration (one entry).
#[map(name = "CONFIG_V3")]
pub static CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// Per-CPU counters, indexed by `switchyard_abi::stat`.
#[map(name = "STATS_V1")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(capacity::STATS, 0);

/// Overlay routes: podCIDR → node underlay address (network order). LPM tries must be created
/// with `BPF_F_NO_PREALLOC`.
#[map(name = "TUNNEL_V1")]
pub static TUNNEL: LpmTrie<u32, u32> = LpmTrie::pinned(capacity::TUNNEL, 1);

/// Source NAT translations (masquerade, NodePort SNAT), both directions.
#[map(name = "NAT_V2")]
pub static NAT: LruHashMap<NatKey, NatEntry> = LruHashMap::pinned(capacity::NAT, 0);

/// Socket load balancing: (socket cookie, backend) → the frontend the socket addressed.
#[map(name = "SOCK_REV_V1")]
pub static SOCK_REV: LruHashMap<SockRevKey, RevNat> = LruHashMap::pinned(capacity::SOCK_REV, 0);

/// Socket load balancing for pods: netns cookie → pod IPv4 (written by the agent).
#[map(name = "POD_NETNS_V1")]
pub static POD_NETNS: HashMap<u64, u32> = HashMap::pinned(capacity::POD_NETNS, 0);

/// Translated fragmented datagrams: what their later fragments become.
#[map(name = "FRAGS_V1")]
pub static FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::pinned(capacity::FRAGS, 0);

/// ClientIP affinity: (client, frontend, protocol) → backend and when it was last chosen.
#[map(name = "AFFINITY_V2")]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(capacity::AFFINITY, 0);

/// The backends of each affinity frontend (written by the agent).
#[map(name = "AFFINITY_MATCH_V2")]
pub static AFFINITY_MATCH: HashMap<AffinityMatchKey, u8> =
    HashMap::pinned(capacity::AFFINITY_MATCH, 0);

/// `loadBalancerSourceRanges` (written by the agent). LPM tries need `BPF_F_NO_PREALLOC`.
#[map(name = "SOURCE_RANGES_V2")]
pub static SOURCE_RANGES: LpmTrie<SourceRangeKey, u8> = LpmTrie::pinned(capacity::SOURCE_RANGES, 1);

/// The node's uplinks: ifindex → the address traffic leaving through it is masqueraded to.
#[map(name = "UPLINKS_V1")]
pub static UPLINKS: HashMap<u32, u32> = HashMap::pinned(capacity::UPLINKS, 0);

/// Per-CPU counters of each frontend, indexed by rev-NAT id.
#[map(name = "SVC_STATS_V2")]
pub static SVC_STATS: PerCpuArray<SvcCounters> = PerCpuArray::pinned(capacity::SVC_STATS, 0);
