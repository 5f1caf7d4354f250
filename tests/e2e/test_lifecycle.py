"""Process lifecycle: flags, signals, model id from the environment, logging."""

import asyncio
import json
import signal
import subprocess
import uuid

import pytest

from conftest import Client, ParleyServer, http, parleyd_binary, run, run_turn


def _run_binary(*args, timeout=10):
    return subprocess.run([parleyd_binary(), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_help_exits_zero_and_lists_flags():
    p = _run_binary("--help")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "--port" in out
    for flag in ("--host", "--workers", "--echo-delay-ms", "--max-frame", "--max-message",
                 "--max-pending", "--log-format"):
        assert flag in out, f"--help does not mention {flag}"


@pytest.mark.parametrize("args", [["--no-such-flag"], ["--port", "notanumber"],
                                  ["--port"], ["--log-format", "xml"], ["--workers", "-1"]],
                         ids=["unknown flag", "bad number", "missing value", "bad enum",
                              "negative workers"])
def test_bad_flag_exits_nonzero(args):
    p = _run_binary(*args)
    assert p.returncode != 0, f"{args} exited 0:\n{p.stdout}{p.stderr}"
    assert p.stderr.strip(), f"{args}: no error message on stderr"


def test_sigterm_idle_exits_zero(make_server):
    srv = make_server()
    assert srv.stop(signal.SIGTERM) == 0


def test_sigint_exits_zero(make_server):
    srv = make_server()

    async def body():
        c = await Client.connect(srv)
        await c.create_session()
        await run_turn(c, "before sigint")
        srv.send_signal(signal.SIGINT)
        code = await c.closed_code(timeout=10)
        assert code == 1001, f"close code {code}"
    run(body())
    code = srv.wait()
    srv.check_exit(code)


def test_sigterm_mid_answer_closes_clients_1001(make_server):
    srv = make_server("--echo-delay-ms", "50")

    async def body():
        clients = [await Client.connect(srv, name=f"c{i}") for i in range(3)]
        sid = (await clients[0].create_session(kind="shared"))["session_id"]
        for c in clients[1:]:
            await c.join(sid)
        await clients[0].send({"type": "chat", "message": " ".join(["word"] * 100)})
        await clients[0].recv_until("chunk", timeout=10)
        srv.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*[c.closed_code(timeout=10) for c in clients])
        assert codes == [1001] * len(clients), codes
    run(body())
    code = srv.wait()
    srv.check_exit(code)


def test_sigterm_with_many_idle_clients(make_server):
    srv = make_server()

    async def body():
        clients = await asyncio.gather(*[Client.connect(srv) for _ in range(50)])
        srv.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*[c.closed_code(timeout=10) for c in clients])
        assert set(codes) == {1001}, codes
    run(body())
    srv.check_exit(srv.wait())


def test_genai_model_id_env(make_server):
    srv = make_server(env={"GENAI_MODEL_ID": "my-model"})

    async def body():
        c = await Client.connect(srv)
        assert c.connected["server_info"]["model"] == "my-model"
        created = await c.create_session()
        assert created["model"] == "my-model"
        await c.close()
    run(body())
    assert http(srv, "GET", "/").json()["model"] == "my-model"


def test_model_flag(make_server):
    srv = make_server("--model", "flag-model")

    async def body():
        c = await Client.connect(srv)
        assert c.connected["server_info"]["model"] == "flag-model"
        assert (await c.create_session())["model"] == "flag-model"
        await c.close()
    run(body())


def _exercise(srv, secret):
    """connect, chat (with ``secret`` in the message), a bad frame, disconnect."""
    async def body():
        c = await Client.connect(srv)
        await c.create_session()
        frames = await run_turn(c, f"please keep {secret} private")
        assert frames[-1]["finish_reason"] == "stop"
        await c.expect_error(f'{{"type":"chat","message":"{secret}", oops', "BAD_JSON")
        await c.close()
        # Let the server log the disconnect before it is stopped.
        await asyncio.sleep(0.3)
    run(body())


def test_json_log_format(make_server):
    srv = make_server("--log-format", "json")
    secret = "sk-" + uuid.uuid4().hex
    _exercise(srv, secret)
    srv.stop()
    err = srv.stderr_text()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "no log output at all"
    events = set()
    for ln in lines:
        try:
            rec = json.loads(ln)
        except ValueError:
            raise AssertionError(f"stderr line is not JSON: {ln!r}")
        assert isinstance(rec, dict), ln
        assert "ts" in rec and "event" in rec, ln
        events.add(rec["event"])
    for ev in ("connect", "disconnect", "message", "generate", "complete"):
        assert ev in events, f"no {ev!r} event in the JSON log; events: {sorted(events)}"
    assert secret not in err, "message content leaked into the log"


def test_text_log_has_no_message_content(make_server):
    srv = make_server()
    secret = "sk-" + uuid.uuid4().hex
    _exercise(srv, secret)
    srv.stop()
    err = srv.stderr_text()
    assert err.strip(), "the text log is empty"
    assert secret not in err, "message content leaked into the log"
    assert secret[3:] not in err


def test_server_info_consistent(make_server):
    """The version is the same on /, /health and the connected frame."""
    srv = make_server()
    root = http(srv, "GET", "/").json()
    health = http(srv, "GET", "/health").json()

    async def body():
        c = await Client.connect(srv)
        await c.close()
        return c.connected
    connected = run(body())
    assert root["version"] == health["version"] == connected["server_info"]["version"]


def test_max_connections(make_server):
    srv = make_server("--max-connections", "3")

    async def body():
        cs = [await Client.connect(srv) for _ in range(3)]
        try:
            extra = await Client.connect(srv)
        except Exception:
            extra = None        # refused at the handshake (or closed before "connected")
        if extra is not None:
            # Accepted at the WebSocket level: it must then be closed by the server.
            code = await extra.closed_code(timeout=5)
            assert code is not None
        for c in cs:
            await c.ping()
            await c.close()
    run(body())


def test_restart_on_same_port(make_server):
    srv = make_server()
    port = srv.port
    srv.stop()
    again = ParleyServer()
    again.port = port
    again.args[again.args.index("--port") + 1] = str(port)
    again.start()
    try:
        assert http(again, "GET", "/health").status == 200
    finally:
        again.stop()
        again.cleanup()


def _raw_ws_handshake(srv):
    """A bare TCP WebSocket client: handshake done, nothing answered afterwards."""
    import base64
    import os
    import socket
    s = socket.create_connection((srv.host, srv.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, "closed during the handshake"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s, rest


def _read_frames(s, rest, seconds):
    """Opcodes of the frames received until the peer closes or ``seconds`` pass.
    Returns (opcodes, closed)."""
    import time as _t
    ops, buf = [], rest
    deadline = _t.monotonic() + seconds
    while True:
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            hdr = 2 + (2 if n == 126 else 8 if n == 127 else 0)
            if len(buf) < hdr:
                break
            if n == 126:
                n = int.from_bytes(buf[2:4], "big")
            elif n == 127:
                n = int.from_bytes(buf[2:10], "big")
            if len(buf) < hdr + n:
                break
            ops.append(buf[0] & 0x0F)
            buf = buf[hdr + n:]
        left = deadline - _t.monotonic()
        if left <= 0:
            return ops, False
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            return ops, False
        except OSError:
            return ops, True
        if not chunk:
            return ops, True
        buf += chunk


def test_heartbeat_keeps_live_idle_client(make_server):
    srv = make_server("--heartbeat", "1")

    async def body():
        c = await Client.connect(srv)       # websockets answers pings by itself
        await asyncio.sleep(3.5)
        frames = await c.ping()
        assert frames[-1]["type"] == "pong"
        await c.close()
    run(body())


def test_heartbeat_pings_and_drops_silent_peer(make_server):
    srv = make_server("--heartbeat", "1")
    s, rest = _raw_ws_handshake(srv)
    try:
        ops, closed = _read_frames(s, rest, 8)
    finally:
        s.close()
    assert 0x1 in ops, f"no connected text frame: {ops}"
    assert 0x9 in ops, f"the server sent no WebSocket ping to an idle peer: {ops}"
    assert closed, f"a peer silent for 8 s (heartbeat 1 s) was not dropped: {ops}"
    assert http(srv, "GET", "/health").json()["connections"] == 0
