"""WebSocket-level liveness: idle peers are pinged every --heartbeat seconds; a peer that
never answers is dropped after about two intervals; one that answers stays."""

import asyncio
import base64
import os
import socket
import time

import websockets

from conftest import run


def _raw_upgrade(port):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    return s


def test_silent_peer_is_pinged_then_dropped(make_server):
    srv = make_server("--heartbeat", "1")
    s = _raw_upgrade(srv.port)
    s.settimeout(10)
    start = time.monotonic()
    seen_ping = None
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
        # server frames are unmasked: a ping is 0x89 followed by its length
        if seen_ping is None and b"\x89\x00" in data:
            seen_ping = time.monotonic() - start
    closed_after = time.monotonic() - start
    s.close()
    assert b"101 Switching Protocols" in data
    assert seen_ping is not None and 0.5 <= seen_ping <= 2.5, seen_ping
    assert 1.5 <= closed_after <= 6, closed_after


def test_answering_peer_stays_connected(make_server):
    srv = make_server("--heartbeat", "1")

    async def body():
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/ws", ping_interval=None) as ws:
            await ws.recv()  # connected
            await asyncio.sleep(4)  # the client library answers the server's pings
            await ws.send('{"type":"ping"}')
            assert '"pong"' in await asyncio.wait_for(ws.recv(), 5)
    run(body(), timeout=20)
