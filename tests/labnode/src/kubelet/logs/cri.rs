//! One line of a container log file in the CRI format, as containerd and CRI-O write them and
//! the kubelet reads them: `<RFC 3339 time, nanoseconds> <stdout|stderr> <F|P> <content>\n`, e.g.
//! `2026-12-02T01:02:03.123456789Z stdout F hello`.
//!
//! Invariant: [`encode`] and [`parse`] are inverse: every entry written is read back with the
//! same time, stream, tag and content. `F` ends a line of the container's output; `P` is a piece
//! of a longer line that the next entries of the same stream continue (so a content never holds a
//! newline).
use k8s_openapi::jiff::Timestamp;

/// The longest content of one entry; longer lines are split into `P` entries (containerd's
/// default `max_container_log_line_size`).
pub const MAX_CONTENT: usize = 16 * 1024;

/// Which output of the container a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The stream's name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// When the runtime read it.
    pub time: Timestamp,
    /// Which output.
    pub stream: Stream,
    /// `P`: the line goes on in the next entry; `F`: it ends here.
    pub partial: bool,
    /// The bytes of the line (without the newline).
    pub content: Vec<u8>,
}

/// The kubelet's output time format: RFC 3339 with exactly nine fraction digits, UTC.
pub fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%NZ").to_string()
}

/// The file line of an entry, newline included.
pub fn encode(time: Timestamp, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut line = format!(
        "{} {} {} ",
        format_time(time),
        stream.name(),
        if partial { 'P' } else { 'F' }
    )
    .into_bytes();
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// Parses one file line (with or without its newline); `None` if it is not a CRI entry.
pub fn parse(line: &[u8]) -> Option<Entry> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Entry {
        time,
        stream,
        partial,
        content: fields.next().unwrap_or_default().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Timestamp {
        "2026-12-02T01:02:03.12345Z".parse().unwrap()
    }

    #[test]
    fn a_line_is_written_with_nine_fraction_digits_stream_and_tag() {
        assert_eq!(
            encode(t(), Stream::Stdout, false, b"hello world"),
            b"2026-12-02T01:02:03.123450000Z stdout F hello world\n"
        );
        assert_eq!(
            encode(t(), Stream::Stderr, true, b""),
            b"2026-12-02T01:02:03.123450000Z stderr P \n"
        );
    }

    #[test]
    fn what_is_written_is_read_back() {
        for (stream, partial, content) in [
            (Stream::Stdout, false, &b"a b  c"[..]),
            (Stream::Stderr, true, b""),
            (Stream::Stdout, false, b"\xff\xfe binary"),
        ] {
            let e = parse(&encode(t(), stream, partial, content)).unwrap();
            assert_eq!(
                e,
                Entry {
                    time: t(),
                    stream,
                    partial,
                    content: content.to_vec()
                }
            );
        }
    }

    #[test]
    fn lines_of_other_runtimes_and_garbage() {
        // containerd trims trailing zeros of the fraction.
        let e = parse(b"2026-12-02T01:02:03.5Z stderr F oops").unwrap();
        assert_eq!(e.time, "2026-12-02T01:02:03.500Z".parse().unwrap());
        assert_eq!((e.stream, e.partial), (Stream::Stderr, false));
        assert_eq!(e.content, b"oops");
        for bad in [
            &b"hello"[..],
            b"2026-12-02T01:02:03Z stdin F x",
            b"2026-12-02T01:02:03Z stdout X x",
            b"yesterday stdout F x",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
