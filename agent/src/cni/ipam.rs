//! host-local IPAM: addresses of one subnet handed out as files in a directory.
//!
//! Each allocation is a file named by the address (`10.244.1.2`) whose first line is the
//! container id and second line the interface name, as the reference host-local plugin keeps
//! them. Every operation holds an exclusive `flock` on `<dir>/lock`, so concurrent plugin
//! processes never hand out one address twice. Allocation is round-robin from the last address
//! handed out (`<dir>/last_reserved_ip`), so a freed address is not reused at once.
use super::subnet::Subnet;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Why an allocation could not be made or released.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every host address of the subnet is taken.
    #[error("no free address left in {subnet} ({taken} allocated); delete unused pods")]
    Exhausted {
        /// The subnet.
        subnet: Subnet,
        /// How many addresses are allocated.
        taken: usize,
    },
    /// The allocation directory could not be used.
    #[error("IPAM store {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The allocations of one node in one subnet.
#[derive(Clone, Debug)]
pub struct Ipam {
    dir: PathBuf,
    subnet: Subnet,
    gateway: Ipv4Addr,
}

/// Name of the lock file.
const LOCK: &str = "lock";
/// Name of the round-robin cursor file.
const LAST_RESERVED: &str = "last_reserved_ip";

impl Ipam {
    /// Allocations in `dir` for `subnet`, never handing out `gateway`.
    pub fn new(dir: impl Into<PathBuf>, subnet: Subnet, gateway: Ipv4Addr) -> Ipam {
        Ipam {
            dir: dir.into(),
            subnet,
            gateway,
        }
    }

    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> IpamError {
        let path = path.to_path_buf();
        move |source| IpamError::Io { path, source }
    }

    fn lock(&self) -> Result<Flock<File>, IpamError> {
        fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(self.io(&path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| self.io(&path)(errno.into()))
    }

    /// Every allocation in the directory: (address, container id). Includes addresses
    /// outside the current subnet (left over from an earlier podCIDR).
    fn entries(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(self.io(&self.dir)(e)),
        };
        for entry in rd {
            let entry = entry.map_err(self.io(&self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let owner = match fs::read_to_string(&path) {
                Ok(s) => s.lines().next().unwrap_or("").trim().to_string(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(&path)(e)),
            };
            out.push((ip, owner));
        }
        out.sort();
        Ok(out)
    }

    /// The address held by `container_id`, if any.
    pub fn lookup(&self, container_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        self.find(container_id)
    }

    fn find(&self, container_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self
            .entries()?
            .into_iter()
            .find(|(ip, owner)| owner == container_id && self.subnet.contains(*ip))
            .map(|(ip, _)| ip))
    }

    /// Allocates an address for `container_id` (interface `ifname`). A container that already
    /// holds an address in this subnet gets the same one back.
    pub fn allocate(&self, container_id: &str, ifname: &str) -> Result<Ipv4Addr, IpamError> {
        let _lock = self.lock()?;
        let entries = self.entries()?;
        if let Some((ip, _)) = entries
            .iter()
            .find(|(ip, owner)| owner == container_id && self.subnet.contains(*ip))
        {
            return Ok(*ip);
        }
        let taken: std::collections::HashSet<Ipv4Addr> =
            entries.iter().map(|(ip, _)| *ip).collect();
        let candidates: Vec<Ipv4Addr> = self
            .subnet
            .hosts()
            .filter(|ip| *ip != self.gateway)
            .collect();
        let last = fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
        let start = last
            .and_then(|l| candidates.iter().position(|c| *c == l))
            .map_or(0, |i| i + 1);
        let n = candidates.len();
        for offset in 0..n {
            let ip = candidates[(start + offset) % n];
            if taken.contains(&ip) {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io(&path)(e)),
            };
            file.write_all(format!("{container_id}\n{ifname}\n").as_bytes())
                .map_err(self.io(&path))?;
            let cursor = self.dir.join(LAST_RESERVED);
            fs::write(&cursor, ip.to_string()).map_err(self.io(&cursor))?;
            return Ok(ip);
        }
        Err(IpamError::Exhausted {
            subnet: self.subnet,
            taken: taken.iter().filter(|ip| self.subnet.contains(**ip)).count(),
        })
    }

    /// Frees every address held by `container_id` (in any subnet); returns them. Releasing a
    /// container that holds nothing is not an error.
    pub fn release(&self, container_id: &str) -> Result<Vec<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        let mut freed = Vec::new();
        for (ip, owner) in self.entries()? {
            if owner != container_id {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => freed.push(ip),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&path)(e)),
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("sy-ipam-test-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ipam(dir: &TempDir, cidr: &str) -> Ipam {
        let subnet: Subnet = cidr.parse().unwrap();
        Ipam::new(&dir.0, subnet, subnet.first_host().unwrap())
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let d = TempDir::new("skip");
        let ipam = ipam(&d, "10.0.0.0/29"); // hosts .1-.6, gateway .1
        let got: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("c{i}"), "eth0").unwrap())
            .collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 0, 0, h)).collect();
        assert_eq!(got, want);
        match ipam.allocate("c5", "eth0") {
            Err(IpamError::Exhausted { taken: 5, .. }) => {}
            other => panic!("expected exhaustion, got {other:?}"),
        }
    }

    #[test]
    fn same_container_gets_the_same_address_and_release_is_idempotent() {
        let d = TempDir::new("idem");
        let ipam = ipam(&d, "10.244.1.0/24");
        let a = ipam.allocate("ctr-a", "eth0").unwrap();
        assert_eq!(ipam.allocate("ctr-a", "eth0").unwrap(), a);
        assert_eq!(ipam.lookup("ctr-a").unwrap(), Some(a));
        let content = fs::read_to_string(d.0.join(a.to_string())).unwrap();
        assert_eq!(content.lines().next(), Some("ctr-a"));
        assert_eq!(ipam.release("ctr-a").unwrap(), vec![a]);
        assert!(!d.0.join(a.to_string()).exists());
        assert!(ipam.release("ctr-a").unwrap().is_empty());
        assert!(ipam.release("never-seen").unwrap().is_empty());
        assert_eq!(ipam.lookup("ctr-a").unwrap(), None);
    }

    #[test]
    fn freed_addresses_are_not_reused_at_once() {
        let d = TempDir::new("rr");
        let ipam = ipam(&d, "10.244.1.0/24");
        let a = ipam.allocate("a", "eth0").unwrap();
        ipam.release("a").unwrap();
        let b = ipam.allocate("b", "eth0").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn exhaustion_then_release_frees_room() {
        let d = TempDir::new("exhaust");
        let ipam = ipam(&d, "10.0.0.0/30"); // hosts .1 (gateway) and .2
        let only = ipam.allocate("a", "eth0").unwrap();
        assert_eq!(only, Ipv4Addr::new(10, 0, 0, 2));
        let err = ipam.allocate("b", "eth0").unwrap_err();
        assert!(err.to_string().contains("no free address"), "{err}");
        ipam.release("a").unwrap();
        assert_eq!(ipam.allocate("b", "eth0").unwrap(), only);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let d = TempDir::new("conc");
        let subnet: Subnet = "10.244.7.0/26".parse().unwrap(); // 62 hosts, 61 without gateway
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let ipam = Ipam::new(&d.0, subnet, subnet.first_host().unwrap());
                std::thread::spawn(move || {
                    (0..10)
                        .map(|i| ipam.allocate(&format!("t{t}-c{i}"), "eth0"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let ok: Vec<Ipv4Addr> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        let unique: HashSet<_> = ok.iter().collect();
        assert_eq!(
            ok.len(),
            61,
            "every address handed out once, then exhaustion"
        );
        assert_eq!(unique.len(), ok.len(), "no address handed out twice");
        assert_eq!(
            results
                .iter()
                .filter(|r| matches!(r, Err(IpamError::Exhausted { .. })))
                .count(),
            19
        );
    }
}
