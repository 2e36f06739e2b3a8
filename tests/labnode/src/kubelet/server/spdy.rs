//! SPDY/3.1 framing — the subset the Kubernetes port-forward protocol uses (client-go speaks it
//! through moby/spdystream): SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS,
//! WINDOW_UPDATE and DATA frames, with name/value header blocks compressed by one zlib stream per
//! direction that starts from SPDY/3's predefined dictionary.
//!
//! Written here rather than taken from crates.io because no maintained, permissively licensed
//! Rust crate implements SPDY/3.1 (the only one found, `spdy-mux`, is GPL-3.0-only and a
//! client); SPDY is frozen, so the subset stays small. Flow control is not implemented: the
//! peer, spdystream, neither sends nor honours WINDOW_UPDATE, and TCP carries the back-pressure.
//!
//! Invariants: [`Encoder`] and [`Decoder`] are inverse, frame by frame, as long as each is used
//! for one direction of one connection (the header compression state spans the connection);
//! a header block never decompresses to more than [`MAX_HEADER_BLOCK`] bytes.
use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::sync::OnceLock;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// Flag of SYN_STREAM, SYN_REPLY, HEADERS and DATA: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: the stream is not wanted.
pub const CANCEL: u32 = 5;
/// RST_STREAM status: the stream is malformed.
pub const PROTOCOL_ERROR: u32 = 1;
/// The largest decompressed header block accepted.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Name/value pairs of a header block; names are lower case.
pub type Headers = Vec<(String, String)>;

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// Odd for client-initiated streams.
        stream_id: u32,
        /// The stream it belongs to (0: none).
        associated: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// `FLAG_FIN`, 0x02 unidirectional.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why (e.g. [`CANCEL`]).
        status: u32,
    },
    /// Settings (their values are not used).
    Settings,
    /// Asks for (or answers) a round trip.
    Ping {
        /// Odd from clients, even from servers.
        id: u32,
    },
    /// The sender stops accepting streams.
    GoAway {
        /// The last stream it processed.
        last_good: u32,
        /// 0 OK, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow control credit (not used).
    WindowUpdate {
        /// The stream (0: the connection).
        stream_id: u32,
        /// Bytes.
        delta: u32,
    },
    /// Data of a stream.
    Data {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// The bytes.
        data: Bytes,
    },
    /// A control frame of a type this subset ignores.
    Unknown {
        /// Its type.
        kind: u16,
    },
}

/// Why a byte stream is not SPDY/3.1.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    /// A control frame of another version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A frame too short for its type or a broken header block.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The header compression failed.
    #[error("header block compression: {0}")]
    Compression(String),
}

/// The header names of SPDY/3's predefined dictionary (spec section 2.6.10.1), each stored
/// after its length as a 32-bit big-endian number.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's closing text, stored as it is.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 ",
    "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 ",
    "Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, ",
    "Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// SPDY/3's zlib dictionary for header blocks (1423 bytes).
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut d = Vec::with_capacity(1423);
        for word in DICTIONARY_WORDS {
            d.extend_from_slice(&(word.len() as u32).to_be_bytes());
            d.extend_from_slice(word.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        d
    })
}

/// An uncompressed header block: the number of pairs, then each name and value after its
/// length (32-bit big-endian numbers). Names are lower-cased.
pub fn header_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(value.len() as u32).to_be_bytes());
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// Parses an uncompressed header block; a value holding NUL bytes is several values.
pub fn parse_header_block(mut b: &[u8]) -> Result<Headers, SpdyError> {
    let bad = SpdyError::Malformed("header block");
    let take = |b: &mut &[u8]| -> Result<Vec<u8>, SpdyError> {
        if b.len() < 4 {
            return Err(bad.clone());
        }
        let n = b.get_u32() as usize;
        if b.len() < n {
            return Err(bad.clone());
        }
        let (s, rest) = b.split_at(n);
        *b = rest;
        Ok(s.to_vec())
    };
    if b.len() < 4 {
        return Err(SpdyError::Malformed("header block"));
    }
    let count = b.get_u32();
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = String::from_utf8_lossy(&take(&mut b)?).to_ascii_lowercase();
        let value = take(&mut b)?;
        for v in value.split(|c| *c == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(headers)
}

/// The first value of header `name` (names compare case-insensitively).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Writes frames of one direction of a connection.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// A fresh encoder (its compression stream starts with the dictionary).
    pub fn new() -> Encoder {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .expect("a fresh zlib stream takes a dictionary");
        Encoder { deflate }
    }

    fn compress(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() + 64);
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(4096);
        }
    }

    /// The bytes of `frame`.
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let (kind, flags, payload) = match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let mut b = Vec::with_capacity(8 + data.len());
                b.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                b.extend_from_slice(&length_word(*flags, data.len()));
                b.extend_from_slice(data);
                return Ok(b);
            }
            Frame::SynStream {
                stream_id,
                associated,
                priority,
                flags,
                headers,
            } => {
                let mut p = Vec::new();
                p.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                p.extend_from_slice(&(associated & 0x7fff_ffff).to_be_bytes());
                p.push((priority & 0x07) << 5);
                p.push(0);
                p.extend(self.compress(&header_block(headers))?);
                (SYN_STREAM, *flags, p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend(self.compress(&header_block(headers))?);
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                (kind, *flags, p)
            }
            Frame::RstStream { stream_id, status } => {
                (RST_STREAM, 0, two_words(*stream_id, *status))
            }
            Frame::Settings => (SETTINGS, 0, 0u32.to_be_bytes().to_vec()),
            Frame::Ping { id } => (PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last_good, status } => (GOAWAY, 0, two_words(*last_good, *status)),
            Frame::WindowUpdate { stream_id, delta } => {
                (WINDOW_UPDATE, 0, two_words(*stream_id, *delta))
            }
            Frame::Unknown { kind } => (*kind, 0, Vec::new()),
        };
        let mut b = Vec::with_capacity(8 + payload.len());
        b.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&length_word(flags, payload.len()));
        b.extend(payload);
        Ok(b)
    }
}

fn length_word(flags: u8, len: usize) -> [u8; 4] {
    ((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff)).to_be_bytes()
}

fn two_words(a: u32, b: u32) -> Vec<u8> {
    let mut p = (a & 0x7fff_ffff).to_be_bytes().to_vec();
    p.extend_from_slice(&b.to_be_bytes());
    p
}

/// Reads frames of one direction of a connection.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A fresh decoder.
    pub fn new() -> Decoder {
        Decoder {
            inflate: Decompress::new(true),
        }
    }

    fn decompress(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let err = |e: String| SpdyError::Compression(e);
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            let before = self.inflate.total_in();
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match result {
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if used == 0 && out.len() < out.capacity() {
                        return Err(err("truncated header block".into()));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| err(e.to_string()))?;
                }
                Err(e) => return Err(err(e.to_string())),
            }
            if out.len() >= MAX_HEADER_BLOCK {
                return Err(SpdyError::Malformed("header block (too large)"));
            }
            out.reserve(4096);
        }
    }

    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        parse_header_block(&self.decompress(compressed)?)
    }

    /// Takes the first whole frame off `buf`; `None` until one has arrived.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let (flags, len) = ((word >> 24) as u8, (word & 0x00ff_ffff) as usize);
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let mut p = buf.split_to(len).freeze();
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                flags,
                data: p,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = (first & 0xffff) as u16;
        let need = |n: usize, what| {
            if len < n {
                Err(SpdyError::Malformed(what))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                p.advance(1);
                Frame::SynStream {
                    stream_id,
                    associated,
                    priority,
                    flags,
                    headers: self.headers(&p)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4, "SYN_REPLY")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.headers(&p)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            SETTINGS => Frame::Settings,
            PING => {
                need(4, "PING")?;
                Frame::Ping { id: p.get_u32() }
            }
            GOAWAY => {
                need(8, "GOAWAY")?;
                Frame::GoAway {
                    last_good: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            WINDOW_UPDATE => {
                need(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(f) = d.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        frames
    }

    #[test]
    fn the_dictionary_is_the_one_of_the_spec() {
        // 1423 bytes whose Adler-32 (the id a zlib stream names its dictionary by) is
        // 0xe3c6a7c2, as spdystream's and Chromium's.
        assert_eq!(dictionary().len(), 1423);
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(dictionary()).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn fixed_size_frames_have_the_spec_layout() {
        let mut e = Encoder::new();
        // Control bit + version 3, type, flags 0, length, then the payload.
        let cases = [
            (
                Frame::Ping { id: 1 },
                "8003000600000004".to_owned() + "00000001",
            ),
            (
                Frame::RstStream {
                    stream_id: 3,
                    status: CANCEL,
                },
                "800300030000000800000003".to_owned() + "00000005",
            ),
            (
                Frame::GoAway {
                    last_good: 5,
                    status: 0,
                },
                "800300070000000800000005".to_owned() + "00000000",
            ),
            (
                Frame::WindowUpdate {
                    stream_id: 1,
                    delta: 65536,
                },
                "800300090000000800000001".to_owned() + "00010000",
            ),
            (
                Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    data: Bytes::from_static(b"hi"),
                },
                "00000001".to_owned() + "01000002" + "6869",
            ),
        ];
        for (frame, bytes) in cases {
            assert_eq!(e.encode(&frame).unwrap(), hex(&bytes), "{frame:?}");
            assert_eq!(decode_all(&hex(&bytes)), vec![frame]);
        }
    }

    #[test]
    fn header_blocks_count_pairs_and_prefix_lengths() {
        assert_eq!(
            header_block(&h(&[("streamType", "data"), ("port", "8080")])),
            hex(concat!(
                "00000002",
                "0000000a",
                "73747265616d74797065", // streamtype
                "00000004",
                "64617461", // data
                "00000004",
                "706f7274", // port
                "00000004",
                "38303830", // 8080
            ))
        );
        assert_eq!(
            parse_header_block(&hex("00000001000000017800000003610062")).unwrap(),
            h(&[("x", "a"), ("x", "b")]),
            "NUL separates values"
        );
        assert!(parse_header_block(&hex("0000000100000009ab")).is_err());
    }

    #[test]
    fn syn_streams_of_a_client_compressing_as_spdystream_are_read() {
        // Two SYN_STREAMs as client-go opens a forwarded connection's error and data streams:
        // header blocks deflated at level 9 with the SPDY dictionary and a sync flush each, one
        // zlib stream (made with Python's zlib.compressobj(9, zdict=dictionary)).
        let bytes = hex(concat!(
            "800300010000003d0000000100000000000078f9e3c6a7c202253a48f95b044eea16061606409ab308",
            "125f99a074cc68004e892545a989b9d0c2863515141500000000ffff",
            "800300010000001600000003000000000000225333a8a44a04000000ffff",
        ));
        let syn = |stream_id, kind| Frame::SynStream {
            stream_id,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: h(&[("port", "8080"), ("requestid", "0"), ("streamtype", kind)]),
        };
        assert_eq!(decode_all(&bytes), vec![syn(1, "error"), syn(3, "data")]);
    }

    #[test]
    fn what_the_encoder_writes_the_decoder_reads_across_frames() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Vec::new(),
            },
            Frame::SynStream {
                stream_id: 3,
                associated: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::Headers {
                stream_id: 3,
                flags: 0,
                headers: h(&[("x", "y")]),
            },
            Frame::Settings,
        ];
        let mut e = Encoder::new();
        let mut bytes = Vec::new();
        for f in &frames {
            bytes.extend(e.encode(f).unwrap());
        }
        // The first header block starts the zlib stream: FDICT set, the dictionary's id.
        assert_eq!(&bytes[18..20], &[0x78, 0xbb]);
        assert_eq!(&bytes[20..24], &[0xe3, 0xc6, 0xa7, 0xc2]);
        assert_eq!(decode_all(&bytes), frames);
        // Frames arriving a byte at a time come out whole.
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes {
            buf.extend_from_slice(&[b]);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn other_versions_and_short_frames_are_refused() {
        let mut d = Decoder::new();
        let mut v2 = BytesMut::from(&hex("800200060000000400000001")[..]);
        assert_eq!(d.decode(&mut v2), Err(SpdyError::Version(2)));
        let mut short = BytesMut::from(&hex("80030006000000020000")[..]);
        assert_eq!(d.decode(&mut short), Err(SpdyError::Malformed("PING")));
    }
}
