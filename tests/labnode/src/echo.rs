//! A tiny TCP/UDP/HTTP echo server used as the demo and test workload.
//!
//! Every answer names the pod (env `HOSTNAME`, which the kubelet sets to the pod name) and the
//! peer address the server saw, so tests can tell which backend answered and whether the client
//! address was preserved or NATed:
//! - TCP, HTTP request (`GET / HTTP/1.1` …): `200 OK` with body `pod=<name> peer=<ip>:<port>\n`,
//!   then the connection closes.
//! - TCP, anything else: line mode; each line gets `pod=<name> peer=<ip>:<port> line=<line>\n`
//!   on the same connection until the client closes it.
//! - UDP: each datagram gets `pod=<name> peer=<ip>:<port> line=<payload>\n`.
//!
//! With `--drain-seconds N` it shuts down as a well-behaved server behind a Service does (the
//! `preStop: sleep` pattern): on SIGTERM it keeps accepting for N seconds — while the Service
//! stops sending it new connections —, then stops accepting and exits once its open
//! connections have ended. Without it, SIGTERM ends it at once.
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Command-line options of `switchyard-labnode echo`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Port to listen on (TCP and UDP).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Name to report; defaults to env `HOSTNAME` (the pod name).
    #[arg(long)]
    pub name: Option<String>,
    /// On SIGTERM, keep serving new connections this long, then finish the open ones and exit.
    #[arg(long)]
    pub drain_seconds: Option<u64>,
}

/// Longest line (or HTTP header block line) accepted before the connection is dropped.
const MAX_LINE: usize = 64 * 1024;

/// HTTP methods that switch a connection to HTTP mode.
const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// Serves until killed.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let name = opts
        .name
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".to_string());
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, opts.port));
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on tcp {addr}: {e}"))?;
    let udp = UdpSocket::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on udp {addr}: {e}"))?;
    tracing::info!(%addr, pod = %name, "echo listening on tcp and udp");
    let Some(drain) = opts.drain_seconds else {
        return serve(tcp, udp, name).await;
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // The listeners live in their own task; each connection in one of its own, so aborting the
    // listeners' task after the drain leaves the accepted connections running.
    let mut serving = tokio::spawn(serve_with(tcp, udp, name, Some(open.clone())));
    tokio::select! {
        r = &mut serving => return r.map_err(|e| anyhow::anyhow!("echo task failed: {e}"))?,
        _ = term.recv() => {}
    }
    tracing::info!(
        drain,
        "SIGTERM: serving on while the Service lets go of this pod"
    );
    tokio::time::sleep(std::time::Duration::from_secs(drain)).await;
    serving.abort();
    tracing::info!("no longer accepting; waiting for the open connections");
    while open.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Serves TCP connections from `tcp` and datagrams on `udp` as pod `name`, until an I/O error
/// on a listening socket.
pub async fn serve(tcp: TcpListener, udp: UdpSocket, name: String) -> anyhow::Result<()> {
    serve_with(tcp, udp, name, None).await
}

async fn serve_with(
    tcp: TcpListener,
    udp: UdpSocket,
    name: String,
    open: Option<Arc<std::sync::atomic::AtomicUsize>>,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let name: Arc<str> = name.into();
    let udp_name = name.clone();
    let udp_task = tokio::spawn(async move { serve_udp(udp, &udp_name).await });
    let tcp_task = async {
        loop {
            let (stream, peer) = tcp.accept().await?;
            let name = name.clone();
            let open = open.clone();
            if let Some(open) = &open {
                open.fetch_add(1, Ordering::SeqCst);
            }
            tokio::spawn(async move {
                let span = tracing::debug_span!("echo_conn", %peer);
                let _e = span.enter();
                if let Err(e) = handle_tcp(stream, peer, &name).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                if let Some(open) = open {
                    open.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        r = tcp_task => r.map_err(|e| anyhow::anyhow!("tcp accept failed: {e}")),
        r = udp_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("udp socket failed: {e}")),
            Err(e) => Err(anyhow::anyhow!("udp task failed: {e}")),
        },
    }
}

async fn serve_udp(udp: UdpSocket, name: &str) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = udp.recv_from(&mut buf).await?;
        let reply = line_reply(name, peer, &buf[..n]);
        if let Err(e) = udp.send_to(reply.as_bytes(), peer).await {
            tracing::debug!(%peer, error = %e, "udp reply failed");
        }
    }
}

/// `pod=<name> peer=<ip>:<port> line=<line>\n`, with the line's trailing `\r\n` removed.
pub fn line_reply(name: &str, peer: SocketAddr, line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    format!("pod={name} peer={peer} line={text}\n")
}

/// The HTTP answer to a request with `method`: status line, headers and (except for HEAD) body
/// `pod=<name> peer=<ip>:<port>\n`.
pub fn http_reply(name: &str, peer: SocketAddr, method: &str) -> String {
    let body = format!("pod={name} peer={peer}\n");
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(&body);
    }
    out
}

/// The method if `line` is an HTTP request line (`GET /path HTTP/1.1`).
pub fn http_method(line: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\n', '\r']);
    let mut parts = text.split(' ');
    let method = parts.next()?;
    let _target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/") {
        return None;
    }
    HTTP_METHODS.iter().copied().find(|m| *m == method)
}

async fn read_line(
    reader: &mut BufReader<tokio::net::tcp::ReadHalf<'_>>,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    buf.clear();
    let n = reader.read_until(b'\n', buf).await?;
    if buf.len() > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long",
        ));
    }
    Ok(n)
}

async fn handle_tcp(mut stream: TcpStream, peer: SocketAddr, name: &str) -> std::io::Result<()> {
    let (read, mut write) = stream.split();
    let mut reader = BufReader::with_capacity(MAX_LINE, read);
    let mut line = Vec::new();
    if read_line(&mut reader, &mut line).await? == 0 {
        return Ok(());
    }
    if let Some(method) = http_method(&line) {
        // Consume the header block so the client sees a clean close, then answer.
        loop {
            if read_line(&mut reader, &mut line).await? == 0 || line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        write
            .write_all(http_reply(name, peer, method).as_bytes())
            .await?;
        write.shutdown().await?;
        return Ok(());
    }
    loop {
        write
            .write_all(line_reply(name, peer, &line).as_bytes())
            .await?;
        if read_line(&mut reader, &mut line).await? == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn start() -> SocketAddr {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).await.unwrap();
        tokio::spawn(serve(tcp, udp, "echo-1".into()));
        addr
    }

    #[test]
    fn recognises_http_request_lines_only() {
        assert_eq!(http_method(b"GET / HTTP/1.1\r\n"), Some("GET"));
        assert_eq!(http_method(b"HEAD /x HTTP/1.0\n"), Some("HEAD"));
        assert_eq!(http_method(b"GET me a coffee\n"), None);
        assert_eq!(http_method(b"hello\n"), None);
        assert_eq!(http_method(b"FETCH / HTTP/1.1\n"), None);
    }

    #[tokio::test]
    async fn line_mode_answers_every_line_on_one_connection() {
        let addr = start().await;
        let c = TcpStream::connect(addr).await.unwrap();
        let me = c.local_addr().unwrap();
        let (rd, mut wr) = c.into_split();
        let mut r = BufReader::new(rd);
        for (sent, seen) in [
            ("one\n", "one"),
            ("two\r\n", "two"),
            ("GET me a coffee\n", "GET me a coffee"),
        ] {
            wr.write_all(sent.as_bytes()).await.unwrap();
            let mut got = String::new();
            r.read_line(&mut got).await.unwrap();
            assert_eq!(got, format!("pod=echo-1 peer={me} line={seen}\n"));
        }
    }

    #[tokio::test]
    async fn http_gets_a_full_response_and_a_close() {
        let addr = start().await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let me = c.local_addr().unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        let body = format!("pod=echo-1 peer={me}\n");
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(
            resp.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{resp}"
        );
        assert!(resp.ends_with(&format!("\r\n\r\n{body}")), "{resp}");
    }

    #[tokio::test]
    async fn udp_answers_each_datagram() {
        let addr = start().await;
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = s.local_addr().unwrap();
        s.send_to(b"ping\n", addr).await.unwrap();
        let mut buf = [0u8; 256];
        let (n, from) =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(from, addr);
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            format!("pod=echo-1 peer={me} line=ping\n")
        );
    }
}
