//! Loads the embedded eBPF object with its maps pinned under `/sys/fs/bpf/switchyard/<node>/`.
//!
//! Maps declared with by-name pinning are reused when their pin exists, so an agent restart sees
//! the same services, conntrack and counters the previous agent left; programs are freshly loaded
//! and swapped into the pinned TCX links (see [`super::attach`]).
//!
//! Invariant: a pinned map is only reused when its name (with its version suffix) and size are
//! the programs'; pins of a map's other versions (an older agent's layout) are removed before
//! the load, never read, and a map pinned at another size is recreated.
use std::path::{Path, PathBuf};

use aya::{
    maps::{lpm_trie::LpmTrie, Array, HashMap, MapData},
    programs::{CgroupSockAddr, Program, ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use switchyard_abi::{
    names, programs, AffinityMatchKey, Backend, LocalPod, NodeConfig, RevNat, ServiceKey,
    ServiceValue, SourceRangeKey,
};

use super::maps::Named;
use super::DatapathError;

/// The eBPF object built from `ebpf/programs` by `agent/build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/switchyard.bpf.o"));

/// The loaded object and the maps the agent writes.
pub struct Loaded {
    /// The object; owns the programs.
    pub ebpf: Ebpf,
    /// `SERVICES`.
    pub services: Named<HashMap<MapData, ServiceKey, ServiceValue>>,
    /// `BACKENDS`.
    pub backends: Named<HashMap<MapData, u32, Backend>>,
    /// `REV_NAT`.
    pub rev_nat: Named<HashMap<MapData, u32, RevNat>>,
    /// `LOCAL_PODS`.
    pub local_pods: Named<HashMap<MapData, u32, LocalPod>>,
    /// `POD_NETNS`.
    pub pod_netns: Named<HashMap<MapData, u64, u32>>,
    /// `CONFIG`.
    pub config: Array<MapData, NodeConfig>,
    /// `TUNNEL`.
    pub tunnel: Named<LpmTrie<MapData, u32, u32>>,
    /// `AFFINITY_MATCH`.
    pub affinity_match: Named<HashMap<MapData, AffinityMatchKey, u8>>,
    /// `SOURCE_RANGES`.
    pub source_ranges: Named<LpmTrie<MapData, SourceRangeKey, u8>>,
    /// `UPLINKS`.
    pub uplinks: Named<HashMap<MapData, u32, u32>>,
}

/// Sizes of the maps a node's load decides (`switchyard agent --ct-max …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// `CT`.
    pub ct: u32,
    /// `NAT`.
    pub nat: u32,
    /// `SERVICES`.
    pub services: u32,
    /// `BACKENDS`.
    pub backends: u32,
}

impl Default for MapSizes {
    /// The sizes the programs declare.
    fn default() -> Self {
        use switchyard_abi::capacity;
        MapSizes {
            ct: capacity::CT,
            nat: capacity::NAT,
            services: capacity::SERVICES,
            backends: capacity::BACKENDS,
        }
    }
}

impl MapSizes {
    fn by_name(&self) -> [(&'static str, u32); 4] {
        [
            (names::CT, self.ct),
            (names::NAT, self.nat),
            (names::SERVICES, self.services),
            (names::BACKENDS, self.backends),
        ]
    }
}

/// Removes the pin of every sized map whose pinned size differs from the wanted one, so the
/// load creates it anew at that size (a map cannot be resized in place). What the old map held
/// is lost: conntrack entries of a resized `CT` or `NAT` (their connections are balanced anew),
/// the agent rewrites `SERVICES` and `BACKENDS` from the API.
fn drop_resized(pin_dir: &Path, sizes: &MapSizes) -> Result<(), DatapathError> {
    for (name, wanted) in sizes.by_name() {
        let path = pin_dir.join(name);
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            continue;
        };
        if info.max_entries() != wanted {
            tracing::warn!(
                map = name,
                pinned = info.max_entries(),
                wanted,
                "resizing a pinned map: its entries are dropped"
            );
            std::fs::remove_file(&path).map_err(DatapathError::io(&path))?;
        }
    }
    Ok(())
}

/// Removes the pins in `pin_dir` of our maps' other versions ([`names::superseded`]): an
/// upgrade that changed a map's layout leaves the old map pinned under its old name, which
/// nothing reads any more. Programs still attached keep their maps alive until they are
/// replaced; the new maps start empty (conntrack of the old layout is lost, so established
/// flows are balanced anew) and the agent rewrites the service maps from the API.
fn drop_superseded(pin_dir: &Path) -> Result<(), DatapathError> {
    let entries = std::fs::read_dir(pin_dir).map_err(DatapathError::io(pin_dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if names::superseded(name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            tracing::warn!(map = name, "removing the pin of a superseded map version");
            std::fs::remove_file(&path).map_err(DatapathError::io(&path))?;
        }
    }
    Ok(())
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Fails with an actionable error unless `/sys/fs/bpf` is a mounted bpffs.
pub fn check_bpffs() -> Result<(), DatapathError> {
    let stat = nix::sys::statfs::statfs("/sys/fs/bpf").map_err(DatapathError::NoBpffs)?;
    if stat.filesystem_type().0 as i64 != BPF_FS_MAGIC {
        return Err(DatapathError::NotBpffs);
    }
    Ok(())
}

/// Loads the object with maps pinned in `pin_dir` (created if missing), at the programs' own
/// sizes, and loads its programs.
pub fn load(pin_dir: &Path) -> Result<Loaded, DatapathError> {
    load_sized(pin_dir, &MapSizes::default())
}

/// [`load`] with the sized maps at `sizes`.
pub fn load_sized(pin_dir: &Path, sizes: &MapSizes) -> Result<Loaded, DatapathError> {
    check_bpffs()?;
    std::fs::create_dir_all(pin_dir).map_err(DatapathError::io(pin_dir))?;
    drop_superseded(pin_dir)?;
    drop_resized(pin_dir, sizes)?;
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin_dir);
    for (name, size) in sizes.by_name() {
        loader.map_max_entries(name, size);
    }
    let mut ebpf = loader.load(OBJECT).map_err(DatapathError::Load)?;
    for name in programs::CLASSIFIERS {
        let prog = classifier(&mut ebpf, name)?;
        prog.load().map_err(|e| DatapathError::program(name, e))?;
    }
    for name in programs::SOCKET {
        let prog = socket_program(&mut ebpf, name)?;
        prog.load().map_err(|e| DatapathError::program(name, e))?;
    }
    Ok(Loaded {
        services: take(&mut ebpf, names::SERVICES)?,
        backends: take(&mut ebpf, names::BACKENDS)?,
        rev_nat: take(&mut ebpf, names::REV_NAT)?,
        local_pods: take(&mut ebpf, names::LOCAL_PODS)?,
        pod_netns: take(&mut ebpf, names::POD_NETNS)?,
        config: take::<Array<MapData, NodeConfig>>(&mut ebpf, names::CONFIG)?.into_inner(),
        tunnel: take(&mut ebpf, names::TUNNEL)?,
        affinity_match: take(&mut ebpf, names::AFFINITY_MATCH)?,
        source_ranges: take(&mut ebpf, names::SOURCE_RANGES)?,
        uplinks: take(&mut ebpf, names::UPLINKS)?,
        ebpf,
    })
}

/// The classifier program `name` of the object.
pub fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    program(ebpf, name)
}

/// The XDP program `name` of the object, loaded (programs that are attached only on request,
/// `--nodeport-acceleration native`, are loaded then, not with the rest).
pub fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, DatapathError> {
    let prog: &mut Xdp = program(ebpf, name)?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| DatapathError::program(name, e))?;
    }
    Ok(prog)
}

/// The cgroup socket-address program `name` of the object.
pub fn socket_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut CgroupSockAddr, DatapathError> {
    program(ebpf, name)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let missing = || DatapathError::Missing {
        kind: "program",
        name: name.to_string(),
    };
    ebpf.program_mut(name)
        .ok_or_else(missing)?
        .try_into()
        .map_err(|e| DatapathError::program(name, e))
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<Named<T>, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| DatapathError::Missing {
        kind: "map",
        name: name.to_string(),
    })?;
    T::try_from(map)
        .map(|m| Named::new(name, m))
        .map_err(DatapathError::map(name))
}

/// Path of the pinned TCX link of a container's veth (`links/pods/<id>`; with an empty id, the
/// directory of all of them).
pub fn pod_link_pin(pin_dir: &Path, container_id: &str) -> PathBuf {
    pin_dir.join("links").join("pods").join(container_id)
}

/// Path of the pinned cgroup link of socket program `program` (`links/cgroup/<program>`).
pub fn cgroup_link_pin(pin_dir: &Path, program: &str) -> PathBuf {
    pin_dir.join("links").join("cgroup").join(program)
}

/// Path of a pinned TCX link of a node device (`links/dev/<name>`).
pub fn device_link_pin(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join("links").join("dev").join(name)
}
