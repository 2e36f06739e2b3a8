//! Attaching programs (`from_pod` to pod veths, `from_overlay` to `vxlan0`, `from_netdev` /
//! `to_netdev` to the uplink) through TCX, with the link pinned so it outlives the agent.
//!
//! A restarted agent finds the pinned link and atomically swaps its freshly loaded program in,
//! so packets of established flows are never left without a program.
use std::{io, path::Path};

use aya::{
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::TcAttachOptions,
        LinkOrder, SchedClassifier, TcAttachType,
    },
    sys::SyscallError,
    Ebpf,
};

use super::DatapathError;

/// Attaches (or re-takes) program `program` on `ifname` (ingress or egress) and pins the link
/// at `pin`.
pub fn attach(
    ebpf: &mut Ebpf,
    program: &str,
    ifname: &str,
    direction: TcAttachType,
    pin: &Path,
) -> Result<(), DatapathError> {
    let err = |e: String| DatapathError::Attach(format!("{program} to {ifname}"), e);
    let prog: &mut SchedClassifier = ebpf
        .program_mut(program)
        .ok_or_else(|| err("program missing".into()))?
        .try_into()
        .map_err(|e| err(format!("{e}")))?;
    let link_id = match PinnedLink::from_pin(pin) {
        Ok(old) => {
            let link = FdLink::from(old)
                .try_into()
                .map_err(|e: LinkError| err(e.to_string()))?;
            prog.attach_to_link(link)
                .map_err(|e| err(format!("replacing the pinned link: {e}")))?
        }
        Err(LinkError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == io::ErrorKind::NotFound =>
        {
            prog.attach_with_options(
                ifname,
                direction,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| err(format!("{e}")))?
        }
        Err(e) => return Err(err(format!("reading pinned link {}: {e}", pin.display()))),
    };
    let link = prog.take_link(link_id).map_err(|e| err(e.to_string()))?;
    let fd_link: FdLink = link.try_into().map_err(|e: LinkError| err(e.to_string()))?;
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DatapathError::Io(dir.to_path_buf(), e))?;
    }
    // Re-pinning over an existing pin fails with EEXIST: remove the old one first; the link stays
    // attached because we hold its fd until the new pin exists.
    let _ = std::fs::remove_file(pin);
    fd_link
        .pin(pin)
        .map_err(|e| err(format!("pinning the link at {}: {e}", pin.display())))?;
    Ok(())
}

/// Removes the pinned link (the veth is gone or the pod deleted). Missing pins are fine.
pub fn detach(pin: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DatapathError::Io(pin.to_path_buf(), e)),
    }
}
