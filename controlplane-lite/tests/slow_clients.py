"""Slow and silent clients of switchyard-cp, driven by tests/slow_clients.rs.

python3 slow_clients.py MODE URL CA TOKEN: prints one JSON object with what it measured.
Every socket has a time limit, so the script always ends.
- half-header: a TLS client sends half a request header and waits; then one that idles after a
  complete request.
- cap: (server started with --max-connections 2) two idle connections, then a third whose TLS
  handshake must wait until one of the first two closes.
- stalled-watch: a watcher that never reads and one that does while 10,000 changes are written.
"""
import http.client
import json
import socket
import ssl
import sys
import threading
import time
from urllib.parse import urlparse

MODE, URL, CA, TOKEN = sys.argv[1:5]
HOST, PORT = urlparse(URL).hostname, urlparse(URL).port
CTX = ssl.create_default_context(cafile=CA)


def tls(timeout, rcvbuf=None):
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    raw.connect((HOST, PORT))
    return CTX.wrap_socket(raw, server_hostname=HOST)


def seconds_until_closed(sock, limit):
    """Reads until the server closes the connection: the seconds it took, or None at `limit`."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except socket.timeout:
        return None
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    return time.monotonic() - start


def half_header():
    s = tls(5)
    s.sendall(b"GET /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode())
    half = seconds_until_closed(s, 20)
    s = tls(5)
    s.sendall(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    first = s.recv(65536)
    idle = seconds_until_closed(s, 20)
    return {"half_header_closed_after": half, "answered": first.split(b"\r\n")[0].decode(),
            "idle_closed_after": idle}


def cap():
    a, b = tls(5), tls(5)
    third = socket.create_connection((HOST, PORT), timeout=5)
    third.settimeout(1.5)
    try:
        CTX.wrap_socket(third, server_hostname=HOST)
        waited = False
    except (socket.timeout, TimeoutError):
        waited = True
    third.close()
    a.close()
    start = time.monotonic()
    fourth = tls(5)
    admitted_after = time.monotonic() - start
    fourth.close()
    b.close()
    return {"third_waited": waited, "admitted_after_close": admitted_after}


def request(conn, method, path, body=None):
    headers = {"Authorization": "Bearer " + TOKEN}
    if body is not None:
        headers["Content-Type"] = (
            "application/merge-patch+json" if method == "PATCH" else "application/json")
    conn.request(method, path, body=body and json.dumps(body), headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status < 300, (resp.status, data)
    return json.loads(data)


def stalled_watch():
    writes = 10_000
    conn = http.client.HTTPSConnection(HOST, PORT, context=CTX, timeout=30)
    created = request(conn, "POST", "/api/v1/namespaces",
                      {"metadata": {"name": "churn", "annotations": {"pad": "x" * 2048}}})
    rv = created["metadata"]["resourceVersion"]
    path = f"/api/v1/namespaces?watch=1&fieldSelector=metadata.name%3Dchurn&resourceVersion={rv}"

    # The stalled watcher: asks, reads the headers, then reads nothing.
    stalled = http.client.HTTPSConnection(HOST, PORT, context=CTX, timeout=120)
    stalled.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
    stalled_resp = stalled.getresponse()

    seen = {"last": -1, "count": 0}

    def follow():
        c = http.client.HTTPSConnection(HOST, PORT, context=CTX, timeout=120)
        c.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
        r = c.getresponse()
        for line in r:
            ev = json.loads(line)
            n = int(ev["object"]["metadata"].get("labels", {}).get("n", "-1"))
            seen["last"], seen["count"] = n, seen["count"] + 1
            if n == writes - 1:
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    start = time.monotonic()
    for i in range(writes):
        request(conn, "PATCH", "/api/v1/namespaces/churn", {"metadata": {"labels": {"n": str(i)}}})
    wrote = time.monotonic() - start
    reader.join(timeout=10)
    behind_after_10s = writes - 1 - seen["last"]

    # Now read the stalled watch: it must end (the server closed it) short of all the events.
    start = time.monotonic()
    stalled_lines = 0
    ended = True
    try:
        for _ in stalled_resp:
            stalled_lines += 1
    except (socket.timeout, TimeoutError):
        ended = False
    except (http.client.IncompleteRead, ConnectionError, ssl.SSLError):
        pass
    return {"wrote_seconds": wrote, "reader_events": seen["count"],
            "reader_behind_after_10s": behind_after_10s, "stalled_events": stalled_lines,
            "stalled_ended": ended, "stalled_read_seconds": time.monotonic() - start}


print(json.dumps({"half-header": half_header, "cap": cap, "stalled-watch": stalled_watch}[MODE]()))
