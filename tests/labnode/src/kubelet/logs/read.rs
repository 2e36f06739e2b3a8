//! Reading a container's log file as the kubelet answers `GET /containerLogs/...`: the lines'
//! contents (with a newline after each complete line), optionally prefixed by their time, from
//! the last `tailLines` lines and from `sinceTime` on, cut after `limitBytes`, and with `follow`
//! going on with what the container writes until its log shim has finished.
//!
//! Invariant: the output is exactly what the container wrote to stdout and stderr (interleaved as
//! the shim recorded them), selected by the options; a line is never cut except by `limitBytes`.
use super::cri::{self, Entry};
use super::shim;
use bytes::Bytes;
use k8s_openapi::jiff::Timestamp;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// What to read (the kubelet's subset of `PodLogOptions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Keep streaming what the container writes.
    pub follow: bool,
    /// Start this many lines before the end.
    pub tail_lines: Option<u64>,
    /// Skip lines older than this.
    pub since: Option<Timestamp>,
    /// Prefix each line with its RFC 3339 time (nine fraction digits) and a space.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Turns entries into output bytes under the options; stateful across entries.
#[derive(Debug)]
pub struct Render {
    since: Option<Timestamp>,
    timestamps: bool,
    remaining: Option<u64>,
    line_start: bool,
}

impl Render {
    /// A renderer for `opts`.
    pub fn new(opts: &Options) -> Render {
        Render {
            since: opts.since,
            timestamps: opts.timestamps,
            remaining: opts.limit_bytes,
            line_start: true,
        }
    }

    /// The output for `entry`, and whether the byte limit is reached (nothing more to write).
    pub fn entry(&mut self, entry: &Entry) -> (Vec<u8>, bool) {
        if self.since.is_some_and(|since| entry.time < since) {
            return (Vec::new(), false);
        }
        let mut out = Vec::with_capacity(entry.content.len() + 32);
        if self.timestamps && self.line_start {
            out.extend_from_slice(cri::format_time(entry.time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&entry.content);
        if !entry.partial {
            out.push(b'\n');
        }
        self.line_start = !entry.partial;
        match &mut self.remaining {
            None => (out, false),
            Some(left) => {
                out.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= out.len() as u64;
                (out, *left == 0)
            }
        }
    }
}

/// The offset of the first of the last `lines` lines of `file` (0 when it has fewer).
pub fn tail_offset(file: &mut File, lines: u64) -> io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    let mut pos = len;
    // The newline ending the last line does not start a line.
    let mut seen: u64 = 0;
    let mut skip_last = true;
    let mut buf = vec![0u8; 64 * 1024];
    while pos > 0 {
        let n = buf.len().min(usize::try_from(pos).unwrap_or(usize::MAX));
        pos -= n as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..n])?;
        for i in (0..n).rev() {
            if buf[i] != b'\n' {
                continue;
            }
            if skip_last && pos + i as u64 + 1 == len {
                skip_last = false;
                continue;
            }
            skip_last = false;
            seen += 1;
            if seen == lines {
                return Ok(pos + i as u64 + 1);
            }
        }
    }
    Ok(0)
}

/// The whole log at `path` as `kubectl logs` prints it (no options).
pub fn text(path: &std::path::Path) -> io::Result<String> {
    let raw = std::fs::read(path)?;
    let mut render = Render::new(&Options::default());
    let mut out = Vec::new();
    for entry in raw.split_inclusive(|b| *b == b'\n').filter_map(cri::parse) {
        out.extend(render.entry(&entry).0);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Streams the log at `path` under `opts` from a blocking thread; the receiver ends when
/// everything asked for is sent (or the first error). Dropping the receiver stops the reader.
pub fn stream(path: PathBuf, opts: Options) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let mut render = Render::new(&opts);
        let sent = pump(&path, &opts, &|| tx.is_closed(), |batch| {
            let mut out = Vec::new();
            let mut done = false;
            for entry in batch {
                let (bytes, limit) = render.entry(&entry);
                out.extend_from_slice(&bytes);
                if limit {
                    done = true;
                    break;
                }
            }
            (out.is_empty() || tx.blocking_send(Ok(Bytes::from(out))).is_ok()) && !done
        });
        if let Err(e) = sent {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// Streams the entries of the log at `path` from `tail_lines` on, following it with `follow`
/// (times and byte limits are not applied), in batches; as [`stream`] otherwise.
pub fn entries(path: PathBuf, opts: Options) -> mpsc::Receiver<io::Result<Vec<Entry>>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let sent = pump(&path, &opts, &|| tx.is_closed(), |batch| {
            tx.blocking_send(Ok(batch)).is_ok()
        });
        if let Err(e) = sent {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// Reads the log at `path` from `tail_lines` on and hands the entries of each read to `sink`
/// until it returns false, the file is read (or, with `follow`, its writer has gone and it is
/// read), or `gone` says nobody listens any more.
fn pump(
    path: &PathBuf,
    opts: &Options,
    gone: &dyn Fn() -> bool,
    mut sink: impl FnMut(Vec<Entry>) -> bool,
) -> io::Result<()> {
    let mut file = File::open(path)?;
    let start = match opts.tail_lines {
        Some(n) => tail_offset(&mut file, n)?,
        None => 0,
    };
    file.seek(SeekFrom::Start(start))?;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut writer_gone = false;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            if !opts.follow || writer_gone || gone() {
                return Ok(());
            }
            // A last read after the writer has gone picks up what it wrote before exiting.
            writer_gone = !shim::has_writer(path);
            if !writer_gone {
                std::thread::sleep(FOLLOW_POLL);
            }
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let batch: Vec<Entry> = pending[..=end]
            .split_inclusive(|b| *b == b'\n')
            .filter_map(cri::parse)
            .collect();
        pending.drain(..=end);
        if !batch.is_empty() && !sink(batch) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::logs::cri::Stream;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn entry(s: i64, partial: bool, content: &str) -> Entry {
        Entry {
            time: at(s),
            stream: Stream::Stdout,
            partial,
            content: content.as_bytes().to_vec(),
        }
    }

    fn render(opts: &Options, entries: &[Entry]) -> String {
        let mut r = Render::new(opts);
        let mut out = Vec::new();
        for e in entries {
            let (bytes, done) = r.entry(e);
            out.extend(bytes);
            if done {
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn full_lines_end_with_a_newline_and_pieces_are_joined() {
        let entries = [
            entry(0, false, "one"),
            entry(1, true, "tw"),
            entry(2, false, "o"),
        ];
        assert_eq!(render(&Options::default(), &entries), "one\ntwo\n");
        let stamped = Options {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            render(&stamped, &entries),
            "2027-01-15T08:00:00.000000000Z one\n2027-01-15T08:00:01.000000000Z two\n"
        );
    }

    #[test]
    fn since_skips_older_lines_and_the_limit_cuts_the_output() {
        let entries = [
            entry(0, false, "old"),
            entry(5, false, "new"),
            entry(6, false, "newer"),
        ];
        let since = Options {
            since: Some(at(5)),
            ..Default::default()
        };
        assert_eq!(render(&since, &entries), "new\nnewer\n");
        let limit = Options {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(render(&limit, &entries), "old\nne");
    }

    #[test]
    fn the_tail_starts_at_the_nth_line_from_the_end() {
        let path = std::env::temp_dir().join(format!("sy-tail-{}", std::process::id()));
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let mut f = File::open(&path).unwrap();
        let tail = |f: &mut File, n| {
            let off = tail_offset(f, n).unwrap() as usize;
            text[off..].to_string()
        };
        assert_eq!(tail(&mut f, 2), "line 4998\nline 4999\n");
        assert_eq!(tail(&mut f, 0), "");
        assert_eq!(tail(&mut f, 5000), text);
        assert_eq!(tail(&mut f, 9999), text);
        let _ = std::fs::remove_file(&path);
    }
}
