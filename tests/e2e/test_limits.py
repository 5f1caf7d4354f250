"""Connection limits and slow requests (docs/operations.md "Connection limits").

- Past --max-connections, past --max-per-address from one IP address, and while the server
  stops, an upgrade is refused before the 101 with a real HTTP 503: a JSON body
  {"error","code":"BUSY"} and Retry-After. Each refusal is counted by reason in /stats.
- Refusals take nothing from the clients already connected, and a freed slot is reusable.
- Headers, handshakes and request bodies that trickle in are cut off after
  --handshake-timeout seconds, while everyone else is served.
- A reconnect storm (2000 connects at once) is absorbed: everything under the limits is
  accepted, exactly the excess is refused with 503, nothing else fails.
"""

import asyncio
import base64
import json
import os
import resource
import signal
import socket
import time

import pytest
import websockets

from conftest import Client, RawWS, connect, http, run, run_turn, answer_text


def stats(srv):
    return http(srv, "GET", "/stats").json()


def wait_connections(srv, n, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = http(srv, "GET", "/health").json()["connections"]
        if got == n:
            return
        time.sleep(0.05)
    assert http(srv, "GET", "/health").json()["connections"] == n


def raw_upgrade_response(srv, source=None, path="/ws"):
    """The server's whole answer to an upgrade request that it refuses (it closes after)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        s.bind((source, 0))
    s.settimeout(5)
    s.connect((srv.host, srv.port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {srv.host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk or data.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in data:
            break                 # refused: read to the end; accepted: the head is enough
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return lines[0], headers, body


def check_503(status_line, headers, body):
    assert status_line.startswith("HTTP/1.1 503"), status_line
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert int(headers["retry-after"]) >= 1, headers
    assert int(headers["content-length"]) == len(body)
    obj = json.loads(body)
    assert obj["code"] == "BUSY" and isinstance(obj["error"], str) and obj["error"], obj


# ----------------------------------------------------------------- caps


def test_total_cap_refuses_with_503_and_counts(make_server):
    srv = make_server("--max-connections", "3")

    async def body():
        cs = [await Client.connect(srv, name=f"c{i}") for i in range(3)]
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(srv.ws_url, open_timeout=5)
        assert e.value.status_code == 503
        assert e.value.headers.get("Retry-After")
        check_503(*raw_upgrade_response(srv))

        st = stats(srv)["connections"]
        assert st["current"] == 3
        assert st["rejected"] == 2
        assert st["rejected_by"] == {"max_connections": 2, "per_address": 0, "stopping": 0}

        # The refusals took nothing from those connected.
        sid = (await cs[0].create_session(kind="shared"))["session_id"]
        await cs[1].join(sid)
        frames = await run_turn(cs[0], "still here")
        assert answer_text(frames).endswith("still here")
        for c in cs:
            await c.ping()

        # A slot freed is a slot reusable; the cap holds again after.
        await cs[2].close()
        wait_connections(srv, 2)
        again = await Client.connect(srv)
        with pytest.raises(websockets.exceptions.InvalidStatusCode):
            await websockets.connect(srv.ws_url, open_timeout=5)
        await again.ping()
        for c in (cs[0], cs[1], again):
            await c.close()
    run(body())
    assert "reason=max_connections" in srv.stderr_text()


def test_open_file_limit_caps_connections_with_a_warning(make_server):
    """A parleyd whose open-file limit is lower than --max-connections asks for says so at
    start, with the numbers, and refuses the connection past what the files allow with a
    503 BUSY: it never accepts a connection it has no file for, and stays healthy."""
    srv = make_server("--max-connections", "100000", "--fd-reserve", "100", start=False)
    srv.args = ["prlimit", "--nofile=400:400", *srv.args]   # soft and hard: not raisable
    srv.start()
    log = srv.stderr_text()
    limit = stats(srv)["connections"]["limit"]
    assert 100 < limit < 400 - 100, limit
    assert "reason=open_file_limit" in log and "asked=100000" in log, log
    assert f"(ulimit -n 400) allows {limit} WebSockets; past that an upgrade gets 503 BUSY" in log

    async def body():
        cs = []
        for i in range(limit):
            cs.append(await websockets.connect(srv.ws_url, open_timeout=5, ping_interval=None))
        for ws in cs:
            assert json.loads(await ws.recv())["type"] == "connected"
        check_503(*raw_upgrade_response(srv))
        st = stats(srv)["connections"]
        assert st["current"] == limit and st["rejected_by"]["max_connections"] == 1, st
        assert http(srv, "GET", "/health").status == 200
        await cs[0].send(json.dumps({"type": "ping"}))
        assert json.loads(await cs[0].recv())["type"] == "pong"
        for ws in cs:
            await ws.close()
    run(body(), timeout=40)
    assert f"reason=max_connections peer=127.0.0.1 limit={limit}" in srv.stderr_text()


def test_default_cap_is_the_open_file_limit(make_server):
    srv = make_server()            # --max-connections 0: the file limit decides, and says so
    limit = stats(srv)["connections"]["limit"]
    assert 1000 < limit, limit
    assert f"allows {limit} WebSockets" in srv.stderr_text()


def test_per_address_cap_refuses_with_503_and_counts(make_server):
    srv = make_server("--max-per-address", "2", "--max-connections", "100")

    async def body():
        mine = [await Client.connect(srv) for _ in range(2)]
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(srv.ws_url, open_timeout=5)
        assert e.value.status_code == 503
        check_503(*raw_upgrade_response(srv))
        # Another address is not affected (127.0.0.2 reaches the server over loopback).
        other = await websockets.connect(srv.ws_url, local_addr=("127.0.0.2", 0), open_timeout=5)
        assert json.loads(await other.recv())["type"] == "connected"
        st = stats(srv)["connections"]
        assert st["rejected_by"] == {"max_connections": 0, "per_address": 2, "stopping": 0}
        assert st["rejected"] == 2 and st["current"] == 3
        # Closing one frees a place for that address.
        await mine[0].close()
        wait_connections(srv, 2)
        back = await Client.connect(srv)
        await back.ping()
        await mine[1].ping()
        for c in (mine[1], back):
            await c.close()
        await other.close()
    run(body())
    assert "reason=max_per_address" in srv.stderr_text()


def test_upgrade_to_unknown_path_gets_404(make_server):
    srv = make_server()
    status, headers, body = raw_upgrade_response(srv, path="/no/such/ws")
    assert status.startswith("HTTP/1.1 404"), status
    assert json.loads(body)["code"] == "NOT_FOUND"


def test_refused_while_stopping(make_server):
    """During the shutdown grace a new upgrade gets 503, not a dropped connection."""
    srv = make_server("--ws-sndbuf", "16384", "--echo-delay-ms", "1")
    # A member that reads nothing while an answer streams: its socket is full, so it cannot
    # take its close frame and the server stays in its shutdown grace (2 s) for a while.
    async def fill():
        a = await Client.connect(srv)
        sid = (await a.create_session(kind="shared"))["session_id"]
        stuck = RawWS.connect(srv, rcvbuf=4096)
        stuck.send_json({"type": "join_session", "session_id": sid})
        await a.send({"type": "chat", "message": " ".join(f"w{i:04d}" for i in range(3000))})
        for _ in range(600):
            await a.recv_until("chunk")
        await a.close()
        return stuck
    stuck = run(fill())
    srv.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 3
    status = None
    while time.monotonic() < deadline:
        try:
            status, headers, body = raw_upgrade_response(srv)
        except OSError:
            break                 # the listener is gone: too late to see it
        if status.startswith("HTTP/1.1 503"):
            check_503(status, headers, body)
            break
        time.sleep(0.02)
    stuck.close()
    assert status and status.startswith("HTTP/1.1 503"), status
    assert srv.wait() == 0
    assert "reason=stopping" in srv.stderr_text()


# ----------------------------------------------------------------- slow requests


async def trickle(srv, head, data, interval=1.0):
    """Send ``head`` at once, then ``data`` a byte per ``interval``; seconds until the
    server closed the connection (measured from the first trickled byte)."""
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(head)
    await writer.drain()
    start = time.monotonic()

    async def feed():
        for b in data:
            writer.write(bytes([b]))
            await writer.drain()
            await asyncio.sleep(interval)

    feeder = asyncio.ensure_future(feed())
    try:
        got = b""
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                break
            got += chunk
        return time.monotonic() - start, got
    except ConnectionResetError:
        return time.monotonic() - start, b""
    finally:
        feeder.cancel()
        writer.close()


TIMEOUT = 2          # --handshake-timeout in these tests
SLACK = 2.5          # lws checks its timeouts about once a second


@pytest.mark.parametrize("what", ["http-headers", "ws-handshake", "http-body"])
def test_trickling_request_is_cut_off_while_others_are_served(make_server, what):
    srv = make_server("--handshake-timeout", str(TIMEOUT))
    key = base64.b64encode(os.urandom(16)).decode()
    if what == "http-headers":
        head, data = b"GET /health HTTP/1.1\r\n", b"Host: x\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    elif what == "ws-handshake":
        head = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        data = (f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
    else:
        head = (b"POST /sessions/new HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 60\r\n\r\n")
        data = b'{"name":"' + b"n" * 48 + b'"}'

    async def body():
        slow = asyncio.ensure_future(trickle(srv, head, data))
        # Meanwhile, everyone else is served at once.
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        c = await Client.connect(srv)
        await c.create_session()
        frames = await run_turn(c, "not waiting for the slow one")
        assert answer_text(frames).endswith("not waiting for the slow one")
        assert http(srv, "GET", "/health").status == 200
        await c.close()
        assert time.monotonic() - t0 < 2, "a normal client waited"
        closed_after, got = await slow
        return closed_after, got
    closed_after, got = run(body(), timeout=25)
    assert closed_after <= TIMEOUT + SLACK, f"{what}: closed only after {closed_after:.1f}s"
    assert closed_after >= TIMEOUT - 0.5, f"{what}: closed too early ({closed_after:.1f}s)"
    assert b"101 Switching" not in got and b"session_id" not in got, got[:200]


def test_idle_connection_without_request_is_closed(make_server):
    """A connection that sends nothing at all holds no slot for long either."""
    srv = make_server("--handshake-timeout", str(TIMEOUT))
    s = socket.create_connection((srv.host, srv.port))
    s.settimeout(TIMEOUT + SLACK + 2)
    t0 = time.monotonic()
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    assert time.monotonic() - t0 <= TIMEOUT + SLACK
    s.close()


# ----------------------------------------------------------------- reconnect storm


SOURCES = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


async def storm_client(srv, i, hold):
    """One raw upgrade; returns ("accepted", None), (status, body) or ("error", why)."""
    key = base64.b64encode(os.urandom(16)).decode()
    try:
        reader, writer = await asyncio.open_connection(
            srv.host, srv.port, local_addr=(SOURCES[i % len(SOURCES)], 0))
    except OSError as e:
        return "error", f"connect: {e!r}"
    try:
        writer.write((f"GET /ws HTTP/1.1\r\nHost: {srv.host}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            rest = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return status, rest
        b0, b1 = await asyncio.wait_for(reader.readexactly(2), 20)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        frame = json.loads(await asyncio.wait_for(reader.readexactly(n), 20))
        if frame.get("type") != "connected":
            return "error", f"first frame {frame}"
        hold.append(writer)
        return "accepted", None
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
        writer.close()
        return "error", repr(e)


def storm(srv, n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    hold = []

    async def body():
        t0 = time.monotonic()
        results = await asyncio.gather(*[storm_client(srv, i, hold) for i in range(n)])
        took = time.monotonic() - t0
        summary = {}
        for kind, _ in results:
            summary[kind] = summary.get(kind, 0) + 1
        bodies = [b for k, b in results if k == 503]
        errors = [b for k, b in results if k == "error"][:5]
        st = stats(srv)
        for w in hold:
            w.close()
        return summary, bodies, errors, took, st
    return run(body(), timeout=45)


def test_reconnect_storm_under_the_limits_is_fully_accepted(make_server):
    srv = make_server("--max-connections", "2500", "--log-level", "warn")
    summary, _, errors, took, st = storm(srv, 2000)
    assert summary == {"accepted": 2000}, (summary, errors)
    assert st["connections"]["current"] == 2000
    assert st["connections"]["rejected"] == 0
    print(f"2000 simultaneous upgrades accepted in {took:.2f}s")
    wait_connections(srv, 0, timeout=10)


def test_reconnect_storm_past_the_limit_refuses_exactly_the_excess(make_server):
    srv = make_server("--max-connections", "1500", "--log-level", "error")
    summary, bodies, errors, took, st = storm(srv, 2000)
    assert summary == {"accepted": 1500, 503: 500}, (summary, errors)
    assert all(json.loads(b)["code"] == "BUSY" for b in bodies)
    assert st["connections"]["current"] == 1500
    assert st["connections"]["rejected_by"]["max_connections"] == 500
    print(f"2000 simultaneous upgrades, limit 1500: {summary} in {took:.2f}s")
    wait_connections(srv, 0, timeout=10)
    # and afterwards the server is as good as new
    async def again():
        cs = await connect(srv, 20)
        for c in cs:
            await c.close()
    run(again())
