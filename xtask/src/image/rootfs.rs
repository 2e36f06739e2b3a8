//! The image's file system, gathered from this build machine (no base image can be pulled):
//! the agent at `/usr/local/bin/switchyard`, the programs it runs (`TOOLS`), and everything
//! they load — their shared-library closure as `ldd` reports it, the dynamic loader, and the
//! xtables extensions iptables opens at run time.
//!
//! Invariant: every path a program or the loader opens resolves inside the tree as it does on
//! this machine. Host paths are added component by component and every symbolic link met on
//! the way (`/lib` → `usr/lib`, `/usr/sbin/iptables-nft-save` → `xtables-nft-multi`) is
//! recorded as a link with its own target, which is added in turn; so each entry's parent
//! directories and each link's target are in the tree.
use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use super::ImageError;

/// The programs the agent runs (agent/src/cleanup/tools.rs: kube-proxy's rules are read and
/// removed with the iptables backends' -save/-restore and nft); each is included with its
/// library closure when this machine has it. The agent runs nothing else.
pub const TOOLS: [&str; 9] = [
    "iptables-nft-save",
    "iptables-nft-restore",
    "ip6tables-nft-save",
    "ip6tables-nft-restore",
    "iptables-legacy-save",
    "iptables-legacy-restore",
    "ip6tables-legacy-save",
    "ip6tables-legacy-restore",
    "nft",
];

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory with its mode.
    Dir(u32),
    /// A regular file: where its content is read from, and its mode.
    File {
        /// The file on this machine.
        source: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link to `target` (exactly as written: relative or absolute).
    Symlink(PathBuf),
}

/// The tree: paths relative to the image's root (`usr/local/bin/switchyard`), in order.
#[derive(Clone, Debug, Default)]
pub struct Rootfs {
    entries: BTreeMap<PathBuf, Entry>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_path_buf()
}

impl Rootfs {
    /// The skeleton every image has: `/tmp` (sticky, world-writable), `/run`, and `/var/run`
    /// linked to it as on Debian (a pod's service-account mount goes to `/var/run/secrets`).
    pub fn new() -> Rootfs {
        let mut r = Rootfs::default();
        r.entries.insert("tmp".into(), Entry::Dir(0o1777));
        r.entries.insert("run".into(), Entry::Dir(0o755));
        r.entries.insert("var".into(), Entry::Dir(0o755));
        r.entries
            .insert("var/run".into(), Entry::Symlink("../run".into()));
        r
    }

    /// Every entry, parents before children.
    pub fn entries(&self) -> impl Iterator<Item = (&Path, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_path(), e))
    }

    /// The entry at `path` (absolute or relative to the image's root).
    #[cfg(test)]
    pub fn get(&self, path: &Path) -> Option<&Entry> {
        self.entries.get(&relative(path))
    }

    /// `source` at `dest` (absolute) with `mode`, its parent directories created (0755).
    pub fn add_file_as(&mut self, source: &Path, dest: &Path, mode: u32) {
        let dest = relative(dest);
        for dir in dest.ancestors().skip(1) {
            if !dir.as_os_str().is_empty() {
                self.entries
                    .entry(dir.to_path_buf())
                    .or_insert(Entry::Dir(0o755));
            }
        }
        self.entries.insert(
            dest,
            Entry::File {
                source: source.to_path_buf(),
                mode,
            },
        );
    }

    /// This machine's `path` (absolute), with every directory and link on the way to it;
    /// returns where the file really is (no links left).
    pub fn add_host_path(&mut self, path: &Path) -> Result<PathBuf, ImageError> {
        let mut real = PathBuf::from("/");
        let mut todo: VecDeque<PathBuf> = path
            .components()
            .map(|c| PathBuf::from(c.as_os_str()))
            .collect();
        let mut links = 0;
        while let Some(part) = todo.pop_front() {
            match part.components().next() {
                Some(Component::RootDir) => real = PathBuf::from("/"),
                Some(Component::ParentDir) => {
                    real.pop();
                }
                Some(Component::Normal(name)) => {
                    let here = real.join(name);
                    let meta = std::fs::symlink_metadata(&here).map_err(io(&here))?;
                    let mode = meta.permissions().mode() & 0o7777;
                    if meta.file_type().is_symlink() {
                        links += 1;
                        if links > 40 {
                            return Err(ImageError::LinkLoop(path.to_path_buf()));
                        }
                        let target = std::fs::read_link(&here).map_err(io(&here))?;
                        self.entries
                            .insert(relative(&here), Entry::Symlink(target.clone()));
                        // Resolve the target from the link's directory (or the root).
                        for c in target.components().rev() {
                            todo.push_front(PathBuf::from(c.as_os_str()));
                        }
                    } else if meta.is_dir() {
                        self.entries
                            .entry(relative(&here))
                            .or_insert(Entry::Dir(mode));
                        real = here;
                    } else {
                        if !todo.is_empty() {
                            return Err(ImageError::NotADirectory(here));
                        }
                        self.entries.insert(
                            relative(&here),
                            Entry::File {
                                source: here.clone(),
                                mode,
                            },
                        );
                        real = here;
                    }
                }
                Some(Component::CurDir | Component::Prefix(_)) | None => {}
            }
        }
        Ok(real)
    }

    /// The shared libraries `program` loads and the dynamic loader, as `ldd` lists them; returns
    /// their real paths.
    pub fn add_libraries(&mut self, program: &Path) -> Result<Vec<PathBuf>, ImageError> {
        let libs = ldd(program)?;
        libs.iter().map(|lib| self.add_host_path(lib)).collect()
    }

    /// Program `name` found on this machine's `path` (`PATH`-style list), with its links and
    /// library closure; iptables' xtables extensions come with `libxtables`. `None` when this
    /// machine does not have it.
    pub fn add_program(&mut self, name: &str, path: &str) -> Result<Option<PathBuf>, ImageError> {
        let Some(found) = path
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.exists())
        else {
            return Ok(None);
        };
        let real = self.add_host_path(&found)?;
        for lib in self.add_libraries(&real)? {
            let is_xtables = lib
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libxtables.so"));
            let extensions = lib.with_file_name("xtables");
            if is_xtables && extensions.is_dir() {
                self.add_extensions(&extensions)?;
            }
        }
        Ok(Some(found))
    }

    /// Every `*.so` of `dir` (loaded with dlopen, so `ldd` does not list them), with closures.
    fn add_extensions(&mut self, dir: &Path) -> Result<(), ImageError> {
        let mut sos: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "so"))
            .collect();
        sos.sort();
        for so in sos {
            let real = self.add_host_path(&so)?;
            self.add_libraries(&real)?;
        }
        Ok(())
    }
}

/// What `ldd` says `program` loads: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` gives
/// the path, `/lib64/ld-linux-x86-64.so.2 (0x…)` the loader; the vDSO has no file. A library
/// `not found` is an error; a static program loads nothing.
pub fn ldd(program: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|source| ImageError::Tool {
            tool: "ldd",
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd exits 1 with "not a dynamic executable" for static programs.
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("statically linked") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(ImageError::Ldd {
            program: program.to_path_buf(),
            message: err.trim().to_string(),
        });
    }
    parse_ldd(program, &text)
}

fn parse_ldd(program: &Path, text: &str) -> Result<Vec<PathBuf>, ImageError> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(ImageError::Ldd {
                        program: program.to_path_buf(),
                        message: format!("{} not found", name.trim()),
                    });
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader_but_not_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f12)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f34)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f56)\n";
        assert_eq!(
            parse_ldd(Path::new("/p"), text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        let missing = "\tlibfoo.so.1 => not found\n";
        assert!(matches!(
            parse_ldd(Path::new("/p"), missing),
            Err(ImageError::Ldd { message, .. }) if message == "libfoo.so.1 not found"
        ));
    }

    #[test]
    fn links_on_the_way_to_a_file_are_kept_as_links_and_their_targets_added() {
        let base = std::env::temp_dir().join(format!("sy-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("usr/lib")).unwrap();
        std::fs::create_dir_all(base.join("usr/sbin")).unwrap();
        std::fs::write(base.join("usr/lib/libz.so.1.3"), b"lib").unwrap();
        symlink("libz.so.1.3", base.join("usr/lib/libz.so.1")).unwrap();
        symlink("usr/lib", base.join("lib")).unwrap();
        std::fs::write(base.join("usr/sbin/multi"), b"prog").unwrap();
        symlink("multi", base.join("usr/sbin/tool-save")).unwrap();

        let mut r = Rootfs::default();
        let real = r.add_host_path(&base.join("lib/libz.so.1")).unwrap();
        let tool = r.add_host_path(&base.join("usr/sbin/tool-save")).unwrap();
        let _ = std::fs::remove_dir_all(&base);

        assert_eq!(real, base.join("usr/lib/libz.so.1.3"));
        assert_eq!(tool, base.join("usr/sbin/multi"));
        let rel = |p: &str| relative(&base).join(p);
        assert_eq!(r.get(&rel("lib")), Some(&Entry::Symlink("usr/lib".into())));
        assert_eq!(
            r.get(&rel("usr/lib/libz.so.1")),
            Some(&Entry::Symlink("libz.so.1.3".into()))
        );
        assert!(matches!(
            r.get(&rel("usr/lib/libz.so.1.3")),
            Some(Entry::File { .. })
        ));
        assert_eq!(
            r.get(&rel("usr/sbin/tool-save")),
            Some(&Entry::Symlink("multi".into()))
        );
        assert!(matches!(r.get(&rel("usr")), Some(Entry::Dir(_))));
        // Parents come before children in the tree's order.
        let order: Vec<&Path> = r.entries().map(|(p, _)| p).collect();
        for (i, p) in order.iter().enumerate() {
            if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
                assert!(order[..i].contains(&parent), "{parent:?} after {p:?}");
            }
        }
    }
}
