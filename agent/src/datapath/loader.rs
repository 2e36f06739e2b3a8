//! Loads the embedded eBPF object with its maps pinned under `/sys/fs/bpf/switchyard/<node>/`.
//!
//! Maps declared with by-name pinning are reused when their pin exists, so an agent restart sees
//! the same services, conntrack and counters the previous agent left; programs are freshly loaded
//! and swapped into the pinned TCX links (see [`super::attach`]).
use std::path::{Path, PathBuf};

use aya::{
    maps::{lpm_trie::LpmTrie, Array, HashMap, MapData},
    programs::SchedClassifier,
    Ebpf, EbpfLoader,
};
use switchyard_abi::{
    names, programs, Backend, LocalPod, NodeConfig, RevNat, ServiceKey, ServiceValue,
};

use super::DatapathError;

/// The eBPF object built from `ebpf/programs` by `agent/build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/switchyard.bpf.o"));

/// The loaded object and the maps the agent writes.
pub struct Loaded {
    /// The object; owns the programs.
    pub ebpf: Ebpf,
    /// `SERVICES`.
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    /// `BACKENDS`.
    pub backends: HashMap<MapData, u32, Backend>,
    /// `REV_NAT`.
    pub rev_nat: HashMap<MapData, u16, RevNat>,
    /// `LOCAL_PODS`.
    pub local_pods: HashMap<MapData, u32, LocalPod>,
    /// `CONFIG`.
    pub config: Array<MapData, NodeConfig>,
    /// `TUNNEL`.
    pub tunnel: LpmTrie<MapData, u32, u32>,
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Fails with an actionable error unless `/sys/fs/bpf` is a mounted bpffs.
pub fn check_bpffs() -> Result<(), DatapathError> {
    let stat = nix::sys::statfs::statfs("/sys/fs/bpf")
        .map_err(|e| DatapathError::NoBpffs(e.to_string()))?;
    if stat.filesystem_type().0 as i64 != BPF_FS_MAGIC {
        return Err(DatapathError::NoBpffs(
            "/sys/fs/bpf is not a bpf file system".into(),
        ));
    }
    Ok(())
}

/// Loads the object with maps pinned in `pin_dir` (created if missing) and loads its programs.
pub fn load(pin_dir: &Path) -> Result<Loaded, DatapathError> {
    check_bpffs()?;
    std::fs::create_dir_all(pin_dir).map_err(|e| DatapathError::Io(pin_dir.to_path_buf(), e))?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(OBJECT)
        .map_err(|e| DatapathError::Load(format!("{e}")))?;
    for name in [
        programs::FROM_POD,
        programs::FROM_OVERLAY,
        programs::FROM_NETDEV,
        programs::TO_NETDEV,
    ] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| DatapathError::Load(format!("program {name} missing from the object")))?
            .try_into()
            .map_err(|e| DatapathError::Load(format!("{e}")))?;
        prog.load().map_err(|e| {
            DatapathError::Load(format!(
                "verifier rejected {name}: {}",
                tail(&format!("{e:?}"), 1500)
            ))
        })?;
    }
    Ok(Loaded {
        services: take(&mut ebpf, names::SERVICES)?,
        backends: take(&mut ebpf, names::BACKENDS)?,
        rev_nat: take(&mut ebpf, names::REV_NAT)?,
        local_pods: take(&mut ebpf, names::LOCAL_PODS)?,
        config: take(&mut ebpf, names::CONFIG)?,
        tunnel: take(&mut ebpf, names::TUNNEL)?,
        ebpf,
    })
}

/// The last `n` bytes of a (long) verifier log: where it failed is at the end.
fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| DatapathError::Load(format!("map {name} missing from the object")))?;
    T::try_from(map).map_err(|e| DatapathError::Map(name.to_string(), e.to_string()))
}

/// Path of the pinned TCX link of a container's veth (`links/pods/<id>`; with an empty id, the
/// directory of all of them).
pub fn pod_link_pin(pin_dir: &Path, container_id: &str) -> PathBuf {
    pin_dir.join("links").join("pods").join(container_id)
}

/// Path of a pinned TCX link of a node device (`links/dev/<name>`).
pub fn device_link_pin(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join("links").join("dev").join(name)
}
