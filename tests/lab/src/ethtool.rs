//! Transmit checksum offload of a lab veth, through the `SIOCETHTOOL` ioctl: one fixed-layout
//! request, where the `ethtool` binary is not among the lab's dependencies and no crate in the
//! lockfile speaks the interface.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use crate::{netns, LabError};

/// `ETHTOOL_STXCSUM`.
const SET_TX_CSUM: u32 = 0x17;
/// `SIOCETHTOOL`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// `struct ethtool_value`.
#[repr(C)]
struct Value {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with `ifr_data` (the union padded to its 24 bytes).
#[repr(C)]
struct Ifreq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut Value,
    pad: [u8; 16],
}

/// Turns transmit checksum offload of `ifname` in namespace `ns` (`sy-*` only) on or off. Off,
/// the namespace's stack computes every TCP/UDP checksum itself, as a host on a wire does.
pub fn tx_checksum(ns: &str, ifname: &str, on: bool) -> Result<(), LabError> {
    let name = ifname.to_string();
    let what = PathBuf::from(format!("SIOCETHTOOL on {ifname} in {ns}"));
    netns::run_in(ns, move || ioctl(&name, SET_TX_CSUM, on))?.map_err(|e| LabError::Io(what, e))
}

fn ioctl(ifname: &str, cmd: u32, on: bool) -> std::io::Result<()> {
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: plain socket(2); the descriptor is owned and closed on return.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut value = Value {
        cmd,
        data: u32::from(on),
    };
    let mut req = Ifreq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to, both alive here.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
