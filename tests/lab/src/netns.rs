//! Network namespaces, in one place for the lab, the benchmark and the tests: creating and
//! removing `sy-*` namespaces, a [`Scratch`] guard that removes everything a test made (also when
//! it fails), commands ([`in_ns`], [`sysctl`]) and closures ([`run_in`]) inside a namespace.
//!
//! Only namespaces whose names start with [`PREFIX`] are created or entered: all lab traffic stays
//! inside namespaces the project made itself.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::cmd::{quiet, run};
use crate::LabError;

/// Prefix of every network namespace the project makes.
pub const PREFIX: &str = "sy-";

/// Whether `name` is one of the project's namespaces.
pub fn is_lab(name: &str) -> bool {
    name.starts_with(PREFIX)
}

fn check(name: &str) -> Result<(), LabError> {
    if is_lab(name) {
        Ok(())
    } else {
        Err(LabError::NotLabNamespace(name.into()))
    }
}

/// Where `ip netns` keeps namespace `name`: `/run/netns/<name>`.
pub fn path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Creates network namespace `name` (`sy-*` only) with `lo` up.
pub fn add(name: &str) -> Result<(), LabError> {
    add_bare(name)?;
    run(&["ip", "-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Creates network namespace `name` (`sy-*` only) as `ip netns add` leaves it: `lo` down.
pub fn add_bare(name: &str) -> Result<(), LabError> {
    check(name)?;
    run(&["ip", "netns", "add", name]).map(|_| ())
}

/// Removes network namespace `name`; a missing one is fine.
pub fn del(name: &str) {
    quiet(&["ip", "netns", "del", name]);
}

/// `ip netns exec <ns> <argv…>`, to add to and run. The namespace must exist (`ip` fails
/// otherwise); callers name only namespaces they made.
pub fn in_ns(ns: &str, argv: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(argv);
    c
}

/// Sets kernel parameters inside network namespace `ns` (`sy-*` only), e.g.
/// `sysctl("sy-n1", &["net.ipv4.ip_forward=1"])`.
pub fn sysctl(ns: &str, settings: &[&str]) -> Result<(), LabError> {
    check(ns)?;
    let mut argv = vec!["ip", "netns", "exec", ns, "sysctl", "-qw"];
    argv.extend_from_slice(settings);
    run(&argv).map(|_| ())
}

/// Runs `f` on a new thread inside network namespace `name` (which must start with `sy-`), so the
/// caller stays where it is (setns applies to the calling thread only); threads `f` spawns are in
/// that namespace too. Sockets `f` opens stay in it wherever they are used later.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LabError> {
    check(name)?;
    let p = path(name);
    let file = File::open(&p).map_err(|e| LabError::Io(p, e))?;
    let owned = name.to_string();
    let handle = std::thread::spawn(move || -> Result<T, LabError> {
        // SAFETY: setns on a valid namespace descriptor; it affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(LabError::Setns(owned, std::io::Error::last_os_error()));
        }
        Ok(f())
    });
    handle.join().map_err(|_| LabError::Panicked(name.into()))?
}

/// Runs `argv`, panicking with its stderr if it fails; returns stdout. For tests.
#[track_caller]
pub fn sh(argv: &[&str]) -> String {
    run(argv).unwrap_or_else(|e| panic!("{e}"))
}

/// What a test made: network namespaces, processes and directories, all removed when it is
/// dropped — also when the test fails half-way.
#[derive(Default)]
pub struct Scratch {
    namespaces: Vec<String>,
    children: Vec<Child>,
    dirs: Vec<PathBuf>,
}

impl Scratch {
    /// Creates network namespace `ns` (`sy-*` only; a leftover of the same name is removed
    /// first) with `lo` up. Panics if it cannot.
    #[track_caller]
    pub fn netns(&mut self, ns: &str) {
        self.bare_netns(ns);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }

    /// Like [`Scratch::netns`], but leaves `lo` down, as `ip netns add` does (for tests of what
    /// sets it up).
    #[track_caller]
    pub fn bare_netns(&mut self, ns: &str) {
        check(ns).unwrap_or_else(|e| panic!("{e}"));
        del(ns);
        self.namespaces.push(ns.to_string());
        add_bare(ns).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Removes namespace `ns` now rather than on drop.
    pub fn del_netns(&mut self, ns: &str) {
        del(ns);
        self.namespaces.retain(|n| n != ns);
    }

    /// Kills and reaps `child` on drop.
    pub fn child(&mut self, child: Child) {
        self.children.push(child);
    }

    /// Removes directory `dir` (a leftover) now and again on drop.
    pub fn dir(&mut self, dir: impl Into<PathBuf>) {
        let dir = dir.into();
        let _ = std::fs::remove_dir_all(&dir);
        self.dirs.push(dir);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            del(ns);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lab_namespaces_are_made_or_entered() {
        for name in ["default", "n1", "", "pod-sy-x"] {
            assert!(matches!(add(name), Err(LabError::NotLabNamespace(_))));
            assert!(matches!(add_bare(name), Err(LabError::NotLabNamespace(_))));
            assert!(matches!(
                run_in(name, || ()),
                Err(LabError::NotLabNamespace(_))
            ));
            assert!(matches!(
                sysctl(name, &["net.ipv4.ip_forward=1"]),
                Err(LabError::NotLabNamespace(_))
            ));
        }
        assert!(is_lab("sy-n1"));
        assert_eq!(path("sy-n1"), Path::new("/run/netns/sy-n1"));
    }
}
