//! Attaching programs (`from_pod` to pod veths, `from_overlay` to `vxlan0`, `from_netdev` /
//! `to_netdev` to the uplink) through TCX, and `xdp_nodeport` to the uplink in native XDP mode,
//! with the link pinned so it outlives the agent.
//!
//! A restarted agent finds the pinned link and atomically swaps its freshly loaded program in,
//! so packets of established flows are never left without a program.
use std::{io, path::Path};

use aya::{
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::TcAttachOptions,
        xdp::XdpLink,
        CgroupAttachMode, LinkOrder, TcAttachType, XdpMode,
    },
    sys::SyscallError,
    Ebpf,
};

use super::{loader, AttachError, DatapathError};

/// Attaches (or re-takes) program `program` on `ifname` (ingress or egress) and pins the link
/// at `pin`.
pub fn attach(
    ebpf: &mut Ebpf,
    program: &str,
    ifname: &str,
    direction: TcAttachType,
    pin: &Path,
) -> Result<(), DatapathError> {
    let prog = loader::classifier(ebpf, program)?;
    let link_id = match pinned_link(program, ifname, pin)? {
        Some(old) => {
            let link = old.try_into().map_err(failed(
                program,
                ifname,
                "taking over the pinned link".into(),
            ))?;
            prog.attach_to_link(link).map_err(failed(
                program,
                ifname,
                "replacing the program in the pinned link".into(),
            ))?
        }
        None => prog
            .attach_with_options(
                ifname,
                direction,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(failed(program, ifname, "attaching through TCX".into()))?,
    };
    let link =
        prog.take_link(link_id)
            .map_err(failed(program, ifname, "taking the new link".into()))?;
    pin_link(link, program, ifname, pin)
}

/// Attaches (or re-takes) XDP program `program` on `ifname` in native (driver) mode and pins
/// the link at `pin`. A driver without native XDP is an error: no fallback to generic mode,
/// which runs after the skb is built and would be slower than the TC path it replaces.
pub fn attach_xdp(
    ebpf: &mut Ebpf,
    program: &str,
    ifname: &str,
    pin: &Path,
) -> Result<(), DatapathError> {
    let prog = loader::xdp(ebpf, program)?;
    let link_id = match pinned_link(program, ifname, pin)? {
        Some(old) => {
            let link: XdpLink = old.try_into().map_err(failed(
                program,
                ifname,
                "taking over the pinned link".into(),
            ))?;
            prog.attach_to_link(link).map_err(failed(
                program,
                ifname,
                "replacing the program in the pinned link".into(),
            ))?
        }
        None => prog.attach(ifname, XdpMode::Driver).map_err(failed(
            program,
            ifname,
            "attaching in native (driver) mode; if the driver has no native XDP, run \
                 without --nodeport-acceleration native"
                .into(),
        ))?,
    };
    let link =
        prog.take_link(link_id)
            .map_err(failed(program, ifname, "taking the new link".into()))?;
    pin_link(link, program, ifname, pin)
}

/// The link a previous agent pinned at `pin` for `program` on `ifname`, if any.
fn pinned_link(program: &str, ifname: &str, pin: &Path) -> Result<Option<FdLink>, DatapathError> {
    match PinnedLink::from_pin(pin) {
        Ok(old) => Ok(Some(FdLink::from(old))),
        Err(LinkError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(failed(
            program,
            ifname,
            format!("reading pinned link {}", pin.display()),
        )(e)),
    }
}

/// Pins `link`, just attached or taken over for `program` on `ifname`, at `pin`.
fn pin_link<L>(link: L, program: &str, ifname: &str, pin: &Path) -> Result<(), DatapathError>
where
    L: TryInto<FdLink>,
    L::Error: Into<AttachError>,
{
    let fd_link: FdLink =
        link.try_into()
            .map_err(failed(program, ifname, "converting the new link".into()))?;
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir).map_err(DatapathError::io(dir))?;
    }
    // Re-pinning over an existing pin fails with EEXIST: remove the old one first; the link stays
    // attached because we hold its fd until the new pin exists.
    let _ = std::fs::remove_file(pin);
    fd_link.pin(pin).map_err(failed(
        program,
        ifname,
        format!("pinning the link at {}", pin.display()),
    ))?;
    Ok(())
}

/// The error of a failed `step` attaching `program` to `ifname`.
fn failed<E: Into<AttachError>>(
    program: &str,
    ifname: &str,
    step: String,
) -> impl FnOnce(E) -> DatapathError {
    let (program, ifname) = (program.to_string(), ifname.to_string());
    move |e| DatapathError::Attach {
        program,
        ifname,
        step,
        source: Box::new(e.into()),
    }
}

/// Removes the pinned link (the veth is gone or the pod deleted). Missing pins are fine.
pub fn detach(pin: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DatapathError::io(pin)(e)),
    }
}

/// Attaches socket program `program` to the cgroup (v2) directory `cgroup` and pins the link
/// at `pin`. A link a previous agent pinned there is replaced: the new program is attached
/// first, so sockets are never without one.
pub fn attach_cgroup(
    ebpf: &mut Ebpf,
    program: &str,
    cgroup: &Path,
    pin: &Path,
) -> Result<(), DatapathError> {
    let ifname = cgroup.display().to_string();
    let old = PinnedLink::from_pin(pin).ok();
    let dir = std::fs::File::open(cgroup).map_err(DatapathError::io(cgroup))?;
    let prog = loader::socket_program(ebpf, program)?;
    let id = prog.attach(&dir, CgroupAttachMode::Single).map_err(failed(
        program,
        &ifname,
        "attaching to the cgroup".into(),
    ))?;
    let link: FdLink = prog
        .take_link(id)
        .map_err(failed(program, &ifname, "taking the new link".into()))?
        .try_into()
        .map_err(failed(program, &ifname, "converting the new link".into()))?;
    if let Some(parent) = pin.parent() {
        std::fs::create_dir_all(parent).map_err(DatapathError::io(parent))?;
    }
    let _ = std::fs::remove_file(pin);
    link.pin(pin).map_err(failed(
        program,
        &ifname,
        format!("pinning the link at {}", pin.display()),
    ))?;
    // The old link's pin is gone; closing its last descriptor detaches it.
    drop(old);
    Ok(())
}
