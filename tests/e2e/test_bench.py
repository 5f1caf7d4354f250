"""parley-bench against a real parleyd: small runs of each scenario, each checked through
the bench's own accounting (its --json object), a refusal, and bad arguments.

The bench says whether a run passed (exit 0, "ok"); these tests check that verdict and
the counts behind it: every frame of a measured turn received, none lost, the split over
worker processes exact (whole sessions, counts that add up), refusals counted as such,
turns the drain cut short accounted as unfinished. ``FakeParley`` stands in for parleyd
where a real server will not do what a test needs (answer after the drain, send bad
frames).
"""

import asyncio
import json
import os
import subprocess
import threading

import websockets

from conftest import PARLEYD, stats

BENCH = os.environ.get("PARLEY_BENCH") or os.path.join(os.path.dirname(PARLEYD), "tools", "parley-bench")


def bench(srv, *args, check=None, timeout=30, common=()):
    """Runs parley-bench against ``srv``; returns (CompletedProcess, the JSON object or None).
    ``args``: the scenario and its options; ``common``: options before it."""
    cmd = [BENCH, "--url", srv.ws_url, "--quiet", "--json", *map(str, common), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert p.returncode == check, f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    out = json.loads(p.stdout) if p.stdout.strip() else None
    return p, out


def check_turns(r):
    """The accounting a passing fanout or stream run must show."""
    f, t = r["frames"], r["turns"]
    assert r["ok"] is True and r["failed"] is None, r
    assert r["errors"] == [], r["errors"]
    assert t["sent"] > 0 and t["completed"] == t["sent"] and t["refused"] == 0 and t["unfinished"] == 0, t
    assert f["received"] == f["expected"] > 0, f
    assert f["lost"] == 0 and f["coalesced"] == 0, f
    assert f["chunks_received"] == f["chunks_expected"] > 0, f
    assert f["total_received"] >= f["received"], f
    c = r["connections"]
    assert c["opened"] == c["planned"] == c["pinged"] == c["ponged"], c
    assert c["refused"] == c["failed"] == c["dropped"] == 0, c
    lat = r["latency_us"]
    assert lat["count"] > 0 and 0 <= lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"], lat


def test_connect_spreads_over_source_addresses(make_server):
    # The server refuses a 51st connection from one address: a bench that did not spread
    # its 200 connections over at least 4 source addresses would be refused.
    srv = make_server("--max-per-address", "50")
    p, r = bench(srv, "connect", "--connections", 200, "--hold", 0.2,
                 common=("--per-address", 50, "--procs", 3, "--pid", srv.proc.pid), check=0)
    assert r["ok"] is True, r
    c = r["connections"]
    assert c == {"planned": 200, "opened": 200, "refused": 0, "failed": 0, "dropped": 0,
                 "pinged": 200, "ponged": 200}, c
    assert r["server"]["rss_per_conn_bytes"] > 0, r["server"]
    assert r["server"]["rss_after_kib"] > r["server"]["rss_before_kib"] > 0, r["server"]
    assert r["rates"]["connections_per_s"] > 0
    assert r["bench"]["procs"] == 3 and r["config"]["per_address"] == 50
    assert r["frames"]["sent"] == 200  # one ping each
    conns = stats(srv)["connections"]
    assert conns["total"] >= 200 and conns["rejected_by"]["per_address"] == 0, conns


def test_fanout_accounting_over_two_processes(make_server):
    srv = make_server()
    p, r = bench(srv, "fanout", "--sessions", 4, "--members", 3, "--rate", 5, "--duration", 2,
                 "--warmup", 0.5, common=("--procs", 2), check=0)
    check_turns(r)
    assert r["bench"]["procs"] == 2
    assert r["connections"]["planned"] == 12 and r["turns"]["sessions_ready"] == 4
    # 4 sessions at 5 chats/s for 2 s: 40 measured turns (the open-loop timer may land
    # one either side of the window's edges).
    assert 36 <= r["turns"]["sent"] <= 44, r["turns"]
    # Each turn: every member gets message_added, status, response_start, the chunks and
    # response_complete; the sender also delivery_confirmation.
    f = r["frames"]
    assert f["expected"] == r["turns"]["sent"] * (3 * 4 + 1) + f["chunks_expected"], f
    assert r["ttfc_us"]["count"] == 3 * r["turns"]["sent"]
    assert r["rates"]["frames_per_s"] > 0 and r["rates"]["chunks_per_s"] > 0
    # setup (4 create + 8 join) + every chat + a ping per connection
    assert f["sent"] >= 4 + 8 + r["turns"]["sent"] + 12, f


def test_stream_chunks_and_time_to_first_chunk(make_server):
    srv = make_server("--echo-delay-ms", "5")
    p, r = bench(srv, "stream", "--chats", 8, "--chunks", 10, "--chunk-interval-ms", 5,
                 "--duration", 2, "--warmup", 0.5, "--idle", 6, check=0)
    check_turns(r)
    t, f = r["turns"], r["frames"]
    # max_tokens = --chunks: every answer has exactly 10 chunks
    assert f["chunks_expected"] == 10 * t["completed"], (f, t)
    assert f["expected"] == t["sent"] * (4 + 1) + f["chunks_expected"], f
    assert r["ttfc_us"]["count"] == t["sent"] and r["ttfc_us"]["p50"] > 0, r["ttfc_us"]
    assert r["connections"]["planned"] == 14  # 8 streaming + 6 idle, all answered the ping
    assert r["latency_us"]["count"] == f["chunks_received"]


def test_turns_the_drain_cuts_short_are_unfinished_and_fail_the_run(make_server):
    # Answers of 30 chunks 200 ms apart (6 s) against a 1 s window and a 1 s drain: when the
    # drain ends, the first turn has part of its chunks and the second none (the server
    # answers a session's turns in order). Received and expected cover the same turns: an
    # unfinished turn expects the chunks its furthest member got, never fewer than arrived.
    srv = make_server("--echo-delay-ms", "200")
    args = ("fanout", "--sessions", 1, "--members", 3, "--rate", 2, "--words", 30, "--duration", 1,
            "--warmup", 0, "--drain", 1)
    p, r = bench(srv, *args, check=1)
    f, t = r["frames"], r["turns"]
    assert r["ok"] is False and r["config"]["drain"] == 1, r
    assert t["sent"] >= 1 and t["completed"] == 0 and t["unfinished"] == t["sent"], t
    assert 0 < f["chunks_received"] <= f["chunks_expected"], f
    assert 0 < f["received"] <= f["expected"], f
    # the same shape as a finished turn's: M x 4 + 1 frames per turn, plus the chunks
    assert f["expected"] == t["sent"] * (3 * 4 + 1) + f["chunks_expected"], f
    assert f["lost"] == 0, f
    assert f"{t['sent']} measured turns did not complete before the drain ended (--drain 1 s)" in r["failed"], r
    # the human summary says it too
    p = subprocess.run([BENCH, "--url", srv.ws_url, "--quiet", *map(str, args)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1, p
    assert "FAILED: " in p.stdout and "measured turns did not complete before the drain ended" in p.stdout, p.stdout
    assert " unfinished, " in p.stdout, p.stdout


def wire(frame):
    """A frame as parleyd writes it: compact JSON (the bench finds a turn's tag by
    ``"content":"t``)."""
    return json.dumps(frame, separators=(",", ":"))


class FakeParley:
    """A scripted stand-in for parleyd's /ws on a thread of its own: greets each connection
    with ``connected``, then hands every frame a client sends to ``await script(fake, ws,
    msg)``. ``members`` and ``state`` are the script's to keep."""

    def __init__(self, script):
        self.script = script
        self.members = []
        self.state = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        self.ws_url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/ws"

    async def _serve(self):
        return await websockets.serve(self._handler, "127.0.0.1", 0)

    async def _handler(self, ws, path):
        await ws.send(wire({"type": "connected"}))
        try:
            async for raw in ws:
                await self.script(self, ws, json.loads(raw))
        except websockets.ConnectionClosed:
            pass

    async def send_all(self, *frames):
        for ws in self.members:
            for f in frames:
                await ws.send(wire(f))

    def close(self):
        async def stop():
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def ev(seq, type_, **kw):
    return {"type": type_, "session_id": "s1", "seq": seq, **kw}


def test_a_turn_finishing_after_the_drain_is_accounted_once():
    # The server holds the rest of the answer until the final ping, which comes after the
    # drain ended: the turn was accounted then, unfinished, and must not be again (nor its
    # late frames counted in received) when it completes during the ping.
    async def script(fake, ws, m):
        t = m["type"]
        if t in ("create_session", "join_session"):
            fake.members.append(ws)
            kind = "session_created" if t == "create_session" else "session_joined"
            await ws.send(wire({"type": kind, "session_id": "s1", "seq": 0}))
        elif t == "chat":
            await fake.send_all(ev(1, "session_update", update_type="message_added",
                                   message={"role": "user", "content": m["message"]}))
            await ws.send(wire({"type": "delivery_confirmation", "id": m["id"], "status": "stored"}))
            await fake.send_all(ev(2, "status", status="thinking"), ev(3, "response_start"),
                                ev(4, "chunk", text="a", chunk_number=1))
        elif t == "ping":
            if not fake.state.get("rest"):
                fake.state["rest"] = True
                await fake.send_all(ev(5, "chunk", text="b", chunk_number=2),
                                    ev(6, "response_complete", total_chunks=2))
            await ws.send(wire({"type": "pong"}))

    fake = FakeParley(script)
    try:
        p, r = bench(fake, "fanout", "--sessions", 1, "--members", 2, "--rate", 1, "--words", 2,
                     "--duration", 1, "--warmup", 0, "--drain", 0, check=1)
    finally:
        fake.close()
    f, t = r["frames"], r["turns"]
    assert t == {"sessions_ready": 1, "sent": 1, "completed": 0, "unfinished": 1, "refused": 0, "behind": 0}, t
    # each member: message_added, status, response_start, chunk 1; the sender's confirmation
    assert f["received"] == 2 * 4 + 1 and f["expected"] == 2 * (4 + 1) + 1, f
    assert f["chunks_received"] == f["chunks_expected"] == 2, f
    assert f["total_received"] >= f["received"] + 4, f  # the late frames: counted there only
    assert r["errors"] == ["a measured turn did not finish (every member's response_complete and the "
                           "delivery_confirmation) before the drain ended: 1"], r["errors"]


def test_hostile_frames_are_errors_not_crashes():
    # A frame that is not JSON (shorter than what the error quotes), a session_created whose
    # seq no int64_t holds, a chunk_number near 10^18 in a stream (chunk_number x interval
    # would overflow): each is counted as an error; no worker dies, nothing is read past a
    # frame.
    async def script(fake, ws, m):
        t = m["type"]
        if t == "create_session":
            await ws.send("nope")
            fake.state["n"] = n = fake.state.get("n", 0) + 1
            await ws.send('{"type":"session_created","session_id":"s%d","seq":%s}' % (n, "1e400" if n == 1 else "0"))
        elif t == "chat":
            sid = m["session_id"]
            for f in (ev(1, "session_update", update_type="message_added",
                         message={"role": "user", "content": m["message"]}),
                      {"type": "delivery_confirmation", "id": m["id"], "status": "stored"},
                      ev(2, "status", status="thinking"), ev(3, "response_start"),
                      ev(4, "chunk", text="a", chunk_number=999999999999999999)):
                await ws.send(wire({**f, "session_id": sid}))
        elif t == "ping":
            await ws.send(wire({"type": "pong"}))

    fake = FakeParley(script)
    try:
        p, r = bench(fake, "stream", "--chats", 2, "--chunks", 2, "--chunk-interval-ms", 1,
                     "--duration", 1, "--warmup", 0, "--drain", 0, check=1)
    finally:
        fake.close()
    errors = set(r["errors"])
    assert "a server frame that is not a JSON object with a type: nope: 2" in errors, errors
    assert "a malformed session_created: 1" in errors, errors
    assert "a chunk_number over 1000000000: 1" in errors, errors
    assert not any("worker" in e for e in errors), errors
    assert r["turns"]["sessions_ready"] == 1 and r["connections"]["ponged"] == 2, r


def test_refused_connections_are_counted_as_refused(make_server):
    srv = make_server("--max-connections", "20")
    p, r = bench(srv, "connect", "--connections", 30, "--hold", 0.1, check=1)
    c = r["connections"]
    assert c["refused"] == 10 and c["opened"] == 20 and c["failed"] == 0, c
    assert r["ok"] is False and "refused by the server (503 BUSY)" in r["failed"], r
    assert "refused by the server (503 BUSY): 10" in r["errors"], r["errors"]
    # the human summary says it in words
    p = subprocess.run([BENCH, "--url", srv.ws_url, "--quiet", "connect", "--connections", "30",
                        "--hold", "0.1"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p
    assert "refused by the server (503 BUSY): 10" in p.stdout, p.stdout
    assert "FAILED" in p.stdout and "10 connections were refused by the server" in p.stdout, p.stdout


def test_no_server_is_a_failure_not_a_hang(tmp_path):
    class Nowhere:
        ws_url = "ws://127.0.0.1:1/ws"
    p, r = bench(Nowhere, "connect", "--connections", 3, check=1)
    assert r["connections"]["failed"] == 3 and r["ok"] is False, r


def test_bad_arguments_exit_2_with_a_message():
    cases = [
        [],                                                 # no scenario
        ["dance"],                                          # unknown scenario
        ["connect"],                                        # --connections missing
        ["connect", "--connections", "ten"],                # not a number
        ["connect", "--connections", "0"],                  # out of range
        ["connect", "--connections", "5", "--bogus"],       # unknown option
        ["connect", "--connections", "5", "--members", "2"],  # another scenario's option
        ["--hold", "1", "connect", "--connections", "5"],   # a scenario option before it
        ["fanout", "--sessions", "2"],                      # --members missing
        ["--procs", "3", "fanout", "--sessions", "2", "--members", "2"],  # more procs than sessions
        ["--url", "http://x", "connect", "--connections", "1"],           # not ws://
        ["fanout", "--sessions", "1", "--members", "30000"],              # over one process's files
    ]
    for args in cases:
        p = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert p.stderr.startswith("parley-bench: ") and len(p.stderr) > 20, (args, p.stderr)
        assert p.stdout == "", (args, p.stdout)
    p = subprocess.run([BENCH, "stream", "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "--chunk-interval-ms" in p.stdout and "--chats" in p.stdout, p
