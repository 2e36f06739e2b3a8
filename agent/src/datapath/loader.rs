//! Loads the embedded eBPF object with its maps pinned under `/sys/fs/bpf/switchyard/<node>/`.
//!
//! Maps declared with by-name pinning are reused when their pin exists, so an agent restart sees
//! the same services, conntrack and counters the previous agent left; programs are freshly loaded
//! and swapped into the pinned TCX links (see [`super::attach`]).
use std::path::{Path, PathBuf};

use aya::{
    maps::{lpm_trie::LpmTrie, Array, HashMap, MapData},
    programs::{CgroupSockAddr, Program, ProgramError, SchedClassifier},
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
    pub rev_nat: Named<HashMap<MapData, u16, RevNat>>,
    /// `LOCAL_PODS`.
    pub local_pods: Named<HashMap<MapData, u32, LocalPod>>,
    /// `CONFIG`.
    pub config: Array<MapData, NodeConfig>,
    /// `TUNNEL`.
    pub tunnel: Named<LpmTrie<MapData, u32, u32>>,
    /// `AFFINITY_MATCH`.
    pub affinity_match: Named<HashMap<MapData, AffinityMatchKey, u8>>,
    /// `SOURCE_RANGES`.
    pub source_ranges: Named<LpmTrie<MapData, SourceRangeKey, u8>>,
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

/// Loads the object with maps pinned in `pin_dir` (created if missing) and loads its programs.
pub fn load(pin_dir: &Path) -> Result<Loaded, DatapathError> {
    check_bpffs()?;
    std::fs::create_dir_all(pin_dir).map_err(DatapathError::io(pin_dir))?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(OBJECT)
        .map_err(DatapathError::Load)?;
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
        config: take::<Array<MapData, NodeConfig>>(&mut ebpf, names::CONFIG)?.into_inner(),
        tunnel: take(&mut ebpf, names::TUNNEL)?,
        affinity_match: take(&mut ebpf, names::AFFINITY_MATCH)?,
        source_ranges: take(&mut ebpf, names::SOURCE_RANGES)?,
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
