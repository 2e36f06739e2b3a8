//! A do-nothing XDP program (`XDP_PASS`) for the underlay end of a node's veth. A veth sends a
//! frame that native XDP returns with `XDP_TX`/`XDP_REDIRECT` into its peer's XDP ring, and
//! schedules the peer's NAPI poll only when the peer has an XDP program of its own (GRO on the
//! peer gives it a ring, but nothing then polls it); without one the frames sit there. So each
//! node's bridge port gets this program when the agents run with `--nodeport-acceleration
//! native`. Loaded and attached (native mode, a BPF link) with three `bpf(2)` calls — two
//! instructions need no object file, compiler or crate — and the link pinned under
//! [`PIN_DIR`], which `lab down` removes; deleting the namespace detaches it with the veth.
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use crate::{netns, LabError};

/// Where the links are pinned (`lab down` removes it).
pub const PIN_DIR: &str = "/sys/fs/bpf/sy-lab";

/// `BPF_PROG_LOAD`.
const PROG_LOAD: libc::c_long = 5;
/// `BPF_OBJ_PIN`.
const OBJ_PIN: libc::c_long = 6;
/// `BPF_LINK_CREATE`.
const LINK_CREATE: libc::c_long = 28;
/// `BPF_XDP` (attach type).
const ATTACH_XDP: u32 = 37;
/// `XDP_FLAGS_DRV_MODE`.
const XDP_DRV_MODE: u32 = 4;
/// `BPF_PROG_TYPE_XDP`.
const PROG_TYPE_XDP: u32 = 6;
/// `r0 = XDP_PASS (2); exit`, as `struct bpf_insn`s.
const PROGRAM: [[u8; 8]; 2] = [[0xb7, 0, 0, 0, 2, 0, 0, 0], [0x95, 0, 0, 0, 0, 0, 0, 0]];

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`, zero-padded to its size.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    rest: [u8; 104],
}

/// `union bpf_attr` for `BPF_OBJ_PIN`, zero-padded.
#[repr(C)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    rest: [u8; 112],
}

/// `union bpf_attr` for `BPF_LINK_CREATE`, zero-padded.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    rest: [u8; 112],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix of its exact size, alive here.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// Attaches the `XDP_PASS` program in native mode to `ifname` in namespace `ns` (`sy-*`).
pub fn attach(ns: &str, ifname: &str) -> Result<(), LabError> {
    let dir = PathBuf::from(PIN_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| LabError::Io(dir.clone(), e))?;
    let pin = dir.join(format!("{ns}-{ifname}"));
    let name = CString::new(ifname).map_err(|_| LabError::Unexpected(format!("{ifname:?}")))?;
    let path = CString::new(pin.to_string_lossy().as_bytes()).expect("no NUL in the pin path");
    let _ = std::fs::remove_file(&pin);
    let what = pin.clone();
    netns::run_in(ns, move || load_and_attach(&name, &path))?.map_err(|e| LabError::Io(what, e))
}

/// Loads the program, links it to `ifname` (in the calling thread's namespace) and pins the
/// link at `pin`.
fn load_and_attach(ifname: &CString, pin: &CString) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let license = CString::new("GPL").expect("no NUL");
    let mut load = ProgLoad {
        prog_type: PROG_TYPE_XDP,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        rest: [0; 104],
    };
    // SAFETY (both): fresh descriptors the kernel just returned, owned and closed here.
    let prog = unsafe { OwnedFd::from_raw_fd(bpf(PROG_LOAD, &mut load)? as i32) };
    let mut create = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: ATTACH_XDP,
        flags: XDP_DRV_MODE,
        rest: [0; 112],
    };
    let link = unsafe { OwnedFd::from_raw_fd(bpf(LINK_CREATE, &mut create)? as i32) };
    let mut obj = ObjPin {
        pathname: pin.as_ptr() as u64,
        bpf_fd: link.as_raw_fd() as u32,
        file_flags: 0,
        rest: [0; 112],
    };
    bpf(OBJ_PIN, &mut obj)?;
    Ok(())
}

/// Detaches what [`attach`] attached to `ifname` in namespace `ns` (unpinning its link, the
/// only reference). Nothing attached is fine.
pub fn detach(ns: &str, ifname: &str) -> Result<(), LabError> {
    let pin = PathBuf::from(PIN_DIR).join(format!("{ns}-{ifname}"));
    match std::fs::remove_file(&pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::Io(pin, e)),
    }
}
