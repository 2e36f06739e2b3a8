//! The log shim: the process between a container and its log file, as containerd's shim is.
//! `switchyard-labnode container-log` reads the container's stdout on its fd 0 and its stderr on
//! fd 3 and appends every line to fd 1, the log file, in the CRI format ([`super::cri`]).
//!
//! It is a process of its own (a session of its own, too) so that container output keeps flowing
//! while the kubelet restarts: the pipes' read ends live in the shim, not in the kubelet.
//! Invariants: each entry is one `write` to a file opened with `O_APPEND`, so the two streams'
//! entries never interleave inside a line; a line longer than [`MAX_CONTENT`] is split into `P`
//! entries; the last bytes before end of file without a newline are written as an `F` entry (as
//! containerd does). The kubelet takes an exclusive `flock` on the log file's open file
//! description before handing it to the shim, so the lock is held exactly as long as a writer
//! of that file exists: readers following the log ([`super::read`]) know the output is complete
//! once they can take the lock.
use super::cri::{self, Stream, MAX_CONTENT};
use k8s_openapi::jiff::Timestamp;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

/// The subcommand the kubelet starts.
pub const SUBCOMMAND: &str = "container-log";
/// The shim's descriptor for the container's stderr (0 is its stdout).
const STDERR_FD: i32 = 3;

/// Reads `input` to its end and hands each piece of a line to `emit(partial, content)`: whole
/// lines (without the newline) as `F`, pieces of lines longer than `max` as `P` followed by the
/// rest.
pub fn split_lines(
    input: &mut impl BufRead,
    max: usize,
    mut emit: impl FnMut(bool, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if !line.is_empty() {
                emit(false, &line)?;
            }
            return Ok(());
        }
        let room = max - line.len();
        match buf.iter().take(room + 1).position(|b| *b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                input.consume(i + 1);
                emit(false, &line)?;
                line.clear();
            }
            None => {
                let n = buf.len().min(room);
                line.extend_from_slice(&buf[..n]);
                input.consume(n);
                if line.len() == max {
                    emit(true, &line)?;
                    line.clear();
                }
            }
        }
    }
}

/// Copies one stream into the shared log file.
fn pump(input: File, stream: Stream, out: &Mutex<File>) -> io::Result<()> {
    let mut input = BufReader::with_capacity(MAX_CONTENT, input);
    split_lines(&mut input, MAX_CONTENT, |partial, content| {
        let line = cri::encode(Timestamp::now(), stream, partial, content);
        out.lock()
            .map_err(|_| io::Error::other("log writer poisoned"))?
            .write_all(&line)
    })
}

/// The shim's main: copies fd 0 (stdout) and fd 3 (stderr) into fd 1 until both end.
pub fn run() -> anyhow::Result<()> {
    // SAFETY: the kubelet starts the shim with exactly these descriptors open for it; each is
    // owned here once.
    let (stdout, stderr, out) = unsafe {
        (
            File::from_raw_fd(0),
            File::from_raw_fd(STDERR_FD),
            File::from_raw_fd(1),
        )
    };
    let out = Arc::new(Mutex::new(out));
    let err_out = out.clone();
    let errors = std::thread::spawn(move || pump(stderr, Stream::Stderr, &err_out));
    let outputs = pump(stdout, Stream::Stdout, &out);
    let errors = errors
        .join()
        .map_err(|_| anyhow::anyhow!("the stderr copier panicked"))?;
    outputs?;
    errors?;
    Ok(())
}

/// A pipe whose both ends are closed on exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Opens (appending to) the log file `path`, locks it and starts a shim writing to it; returns
/// the write ends of the pipes for the container's stdout and stderr.
pub fn start(path: &Path) -> io::Result<(Stdio, Stdio)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // Held by the open file description, which only the shim keeps: released when it exits.
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(log.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .stdin(Stdio::from(out_read))
        .stdout(Stdio::from(log))
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    let err_fd = err_read.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, setsid) in the forked child, on a descriptor
    // that stays open until spawn returns.
    unsafe {
        cmd.as_std_mut().pre_exec(move || {
            if libc::dup2(err_fd, STDERR_FD) < 0 || libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The shim is reaped by tokio once it exits (the handle is dropped).
    cmd.spawn()?;
    drop(err_read);
    Ok((Stdio::from(out_write), Stdio::from(err_write)))
}

/// Whether a writer (a running shim) still holds the log file at `path`.
pub fn has_writer(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; closing it releases a lock we got.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) < 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(input: &[u8], max: usize) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        split_lines(&mut BufReader::with_capacity(3, input), max, |p, c| {
            out.push((p, String::from_utf8_lossy(c).into_owned()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn lines_are_split_at_newlines_and_at_the_maximum() {
        assert_eq!(
            pieces(b"one\n\ntwo\n", 8),
            vec![
                (false, "one".into()),
                (false, "".into()),
                (false, "two".into())
            ]
        );
        assert_eq!(
            pieces(b"abcdefghij\nxy", 4),
            vec![
                (true, "abcd".into()),
                (true, "efgh".into()),
                (false, "ij".into()),
                (false, "xy".into())
            ]
        );
        // Exactly the maximum before the newline is one full line.
        assert_eq!(pieces(b"abcd\n", 4), vec![(false, "abcd".into())]);
        assert!(pieces(b"", 4).is_empty());
    }
}
