//! Running a command inside a running container, as `kubectl exec` does: in the container
//! process's network and mount namespaces (`/proc/<pid>/ns/{net,mnt}`, the latter holding the
//! service-account volume), with its environment (`/proc/<pid>/environ`) and working directory
//! (`/proc/<pid>/cwd`), in a session of its own (so the whole command can be signalled).
//!
//! Invariant: the namespaces are entered in the forked child before exec; the node runtime's own
//! threads never change namespace.
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// What a command run in a container gets from it.
#[derive(Debug)]
pub struct Container {
    net: File,
    mnt: File,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
}

/// The `KEY=VALUE` pairs of a NUL-separated environment block.
pub fn parse_environ(block: &[u8]) -> Vec<(OsString, OsString)> {
    block
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let i = kv.iter().position(|b| *b == b'=')?;
            (i > 0).then(|| {
                (
                    OsString::from_vec(kv[..i].to_vec()),
                    OsString::from_vec(kv[i + 1..].to_vec()),
                )
            })
        })
        .collect()
}

impl Container {
    /// The namespaces, environment and working directory of process `pid`.
    pub fn of(pid: i32) -> io::Result<Container> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        Ok(Container {
            net: File::open(proc.join("ns/net"))?,
            mnt: File::open(proc.join("ns/mnt"))?,
            env: parse_environ(&std::fs::read(proc.join("environ"))?),
            cwd: std::fs::read_link(proc.join("cwd")).unwrap_or_else(|_| PathBuf::from("/")),
        })
    }

    /// A command running `argv` in the container; with `tty`, its standard input must be the
    /// terminal that becomes its controlling terminal.
    pub fn command(&self, argv: &[String], tty: bool) -> io::Result<tokio::process::Command> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())))
            .kill_on_drop(true);
        let (net, mnt) = (self.net.try_clone()?, self.mnt.try_clone()?);
        let cwd =
            CString::new(self.cwd.as_os_str().as_bytes()).unwrap_or_else(|_| CString::from(c"/"));
        // SAFETY: runs in the forked child before exec; only async-signal-safe calls (setns,
        // chdir, setsid, ioctl) on descriptors and a string prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                crate::kubelet::process::check(libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET))?;
                crate::kubelet::process::check(libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS))?;
                if libc::chdir(cwd.as_ptr()) < 0 {
                    crate::kubelet::process::check(libc::chdir(c"/".as_ptr()))?;
                }
                crate::kubelet::process::check(libc::setsid())?;
                if tty {
                    crate::kubelet::process::check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
                }
                Ok(())
            });
        }
        Ok(cmd)
    }
}

/// A pseudo-terminal: the controlling side for the node runtime, the terminal for the command.
pub struct Pty {
    /// The node runtime's side.
    pub master: OwnedFd,
    /// The command's terminal.
    pub slave: OwnedFd,
}

impl Pty {
    /// A new pseudo-terminal.
    pub fn open() -> io::Result<Pty> {
        let p = nix::pty::openpty(None, None).map_err(io::Error::from)?;
        for fd in [&p.master, &p.slave] {
            // SAFETY: setting close-on-exec on descriptors we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Ok(Pty {
            master: p.master,
            slave: p.slave,
        })
    }
}

/// Sets the size of the terminal whose controlling side is `master`.
pub fn resize(master: &impl AsRawFd, width: u16, height: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_block_is_split_into_variables() {
        let env = parse_environ(b"PATH=/bin:/usr/bin\0EMPTY=\0A=b=c\0junk\0=x\0");
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/bin:/usr/bin".into()),
                ("EMPTY".into(), "".into()),
                ("A".into(), "b=c".into())
            ]
        );
    }

    #[test]
    fn this_process_is_a_container_with_its_own_environment_and_directory() {
        let me = Container::of(std::process::id() as i32).unwrap();
        let path = me.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v);
        assert_eq!(path, std::env::var_os("PATH").as_ref());
        assert_eq!(me.cwd, std::env::current_dir().unwrap());
    }
}
