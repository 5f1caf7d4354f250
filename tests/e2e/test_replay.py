"""The capture tap (parleyd --tap) and parley-replay: record, play, diff, stats.

A conversation is recorded from a live server through its tap, replayed
against a fresh server, and the two captures compared; a changed answer
makes diff fail. The committed capture (tests/captures/) is replayed as a
regression test: today's server must answer yesterday's traffic the same way.
"""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import PARLEYD, Client, free_port, run, run_turn, stats

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTURES = os.path.join(HERE, "..", "captures")
REPLAY = os.environ.get("PARLEY_REPLAY") or os.path.join(os.path.dirname(PARLEYD), "tools", "parley-replay")


def replay(*args, check=None, timeout=60):
    """Runs parley-replay; returns the CompletedProcess. ``check``: the exit code expected."""
    p = subprocess.run([REPLAY, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert p.returncode == check, f"parley-replay {args} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def capture_stats(path):
    return json.loads(replay("stats", "--json", path, check=0).stdout)


class Recorder:
    """parley-replay record, started and ready (subscribed) on return."""

    def __init__(self, endpoint, path):
        self.path = path
        self.proc = subprocess.Popen([REPLAY, "record", endpoint, path], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        self.lines = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            self.lines.append(line)
            if "recording" in line:
                return
            assert line, f"recorder exited: {self.lines}"
        raise AssertionError(f"recorder never subscribed: {self.lines}")

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        out = self.proc.stderr.read()
        assert self.proc.wait(10) == 0, out
        return out


def tap_endpoint(tmp_path, name="tap"):
    return f"ipc://{tmp_path}/{name}.ipc"


async def conversation(srv):
    """Two clients: one creates a session, the other joins; typing; two
    streamed answers that both see; a ping; both leave."""
    a = await Client.connect(srv, name="a")
    b = await Client.connect(srv, name="b")
    sid = (await a.create_session(name="replayed"))["session_id"]
    await b.join(sid)
    await a.send({"type": "typing_start"})
    await b.recv_until("session_update", "user_typing")
    await a.send({"type": "typing_stop"})
    await b.recv_until("session_update", "user_typing")
    await run_turn(a, "the first question, streamed to both")
    await b.recv_until("response_complete")
    await run_turn(b, "and a second one from the other client")
    await a.recv_until("response_complete")
    await a.ping()
    await a.close()
    await b.close()


def record_conversation(make_server, tmp_path, name="original"):
    endpoint = tap_endpoint(tmp_path, name)
    srv = make_server("--tap", endpoint)
    path = str(tmp_path / f"{name}.cap")
    rec = Recorder(endpoint, path)
    run(conversation(srv))
    time.sleep(0.5)  # the last close records reach the recorder
    published = stats(srv)["tap"]["published"]
    summary = rec.stop()
    st = capture_stats(path)
    assert st["records"] == published, (st, published, summary)
    assert stats(srv)["tap"]["dropped"] == 0
    return path, st


def test_record_play_diff(make_server, tmp_path):
    original, st = record_conversation(make_server, tmp_path)
    if os.environ.get("PARLEY_SAVE_CAPTURE"):  # how tests/captures/conversation.cap is made
        shutil.copyfile(original, os.environ["PARLEY_SAVE_CAPTURE"])
    assert st["connections"] == 2 and st["opened"] == 2 and st["closed"] == 2, st
    assert st["lost"] == 0 and st["warning"] == "", st
    types = {(t["dir"], t["type"]): t["frames"] for t in st["types"]}
    for want in [("in", "create_session"), ("in", "join_session"), ("in", "typing_start"), ("in", "chat"),
                 ("out", "chunk"), ("out", "response_complete"), ("out", "delivery_confirmation")]:
        assert want in types, (want, types)
    assert types[("in", "chat")] == 2 and types[("out", "response_complete")] == 4, types
    assert st["close_codes"] == {"1000": 2}, st

    fresh = make_server()
    out = str(tmp_path / "replayed.cap")
    p = replay("play", "--fast", "--out", out, original, fresh.ws_url, check=0)
    d = replay("diff", original, out)
    assert d.returncode == 0, d.stdout + d.stderr + p.stderr
    assert "same" in d.stdout

    # One answer changed: a letter of a streamed chunk, so the file stays valid.
    with open(original, "rb") as f:
        data = f.read()
    chunk = data.rfind(b'"type":"chunk"')
    at = data.find(b'"text":"', chunk) + len(b'"text":"')
    assert chunk > 0 and data[at:at + 1].isalnum(), data[chunk:chunk + 200]
    changed = str(tmp_path / "changed.cap")
    with open(changed, "wb") as f:
        f.write(data[:at] + (b"Z" if data[at:at + 1] != b"Z" else b"Y") + data[at + 1:])
    d = replay("diff", original, changed)
    assert d.returncode == 1, d.stdout
    assert "DIFFERENT" in d.stdout and "1 differences" in d.stdout, d.stdout
    assert ".text:" in d.stdout and '"chunk"' in d.stdout, d.stdout


def test_committed_capture_replays_the_same(make_server, tmp_path):
    """tests/captures/conversation.cap, recorded from parleyd and committed:
    every build must answer it as that server did (ids and times aside)."""
    capture = os.path.join(CAPTURES, "conversation.cap")
    srv = make_server()
    out = str(tmp_path / "now.cap")
    p = replay("play", "--fast", "--out", out, capture, srv.ws_url)
    assert p.returncode == 0, p.stderr
    d = replay("diff", capture, out)
    assert d.returncode == 0, d.stdout + d.stderr


def test_play_keeps_timing_and_multiplies(make_server, tmp_path):
    capture = os.path.join(CAPTURES, "conversation.cap")
    st = capture_stats(capture)
    srv = make_server()
    # --speed 4: the replay takes about a quarter of the original's duration.
    t0 = time.monotonic()
    replay("play", "--speed", "4", capture, srv.ws_url, check=0)
    took = time.monotonic() - t0
    assert took >= st["duration_s"] / 4 * 0.8, (took, st["duration_s"])
    # --multiply: K copies of every connection at once, each with its own ids.
    before = stats(srv)
    p = replay("play", "--fast", "--multiply", "20", capture, srv.ws_url, check=0)
    after = stats(srv)
    assert after["connections"]["total"] - before["connections"]["total"] == 20 * st["connections"], p.stderr
    chats = sum(t["frames"] for t in st["types"] if t["type"] == "chat" and t["dir"] == "in")
    assert after["frames"]["in"] - before["frames"]["in"] >= 20 * chats


def test_slow_recorder_costs_drops_not_stalls(make_server, tmp_path):
    """A recorder that stops reading: the tap drops what is past --tap-hwm,
    counts it, and the server keeps serving; the capture marks the loss."""
    endpoint = tap_endpoint(tmp_path)
    srv = make_server("--tap", endpoint, "--tap-hwm", "20")
    path = str(tmp_path / "slow.cap")
    rec = Recorder(endpoint, path)
    rec.proc.send_signal(signal.SIGSTOP)
    try:
        async def chats():
            c = await Client.connect(srv)
            for i in range(10):
                await run_turn(c, f"message {i} while the recorder sleeps " * 4)
            await c.close()
        t0 = time.monotonic()
        run(chats())
        assert time.monotonic() - t0 < 15
    finally:
        rec.proc.send_signal(signal.SIGCONT)

    async def one_more():  # the recorder sees a gap only when a later record comes
        c = await Client.connect(srv)
        await c.close()
    time.sleep(0.3)
    run(one_more())
    time.sleep(0.3)
    tap = stats(srv)["tap"]
    assert tap["dropped"] > 0, tap
    rec.stop()
    st = capture_stats(path)
    # What the kernel and ZeroMQ buffered still arrived; the rest is marked lost.
    assert st["lost"] > 0, st
    assert st["records"] + st["lost"] <= tap["published"] + tap["dropped"] + 1, (st, tap)


def test_tap_is_loopback_only(tmp_path):
    p = subprocess.run([PARLEYD, "--port", str(free_port()), "--db", str(tmp_path / "x.db"), "--tap", "tcp://0.0.0.0:5999"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "loopback" in p.stderr, p.stderr


def test_query_strings_are_not_captured(make_server, tmp_path):
    endpoint = tap_endpoint(tmp_path)
    srv = make_server("--tap", endpoint)
    path = str(tmp_path / "q.cap")
    rec = Recorder(endpoint, path)

    async def go():
        c = await Client.connect(srv, path="/ws?token=sekrit-token-value")
        await c.ping()
        await c.close()
    run(go())
    time.sleep(0.3)
    rec.stop()
    with open(path, "rb") as f:
        data = f.read()
    assert b"sekrit" not in data
    assert capture_stats(path)["connections"] == 1


def test_bad_arguments_and_files(tmp_path):
    assert replay("--help", check=0).stdout.startswith("usage: parley-replay")
    for cmd in ("record", "play", "diff", "stats"):
        h = replay(cmd, "--help", check=0)
        assert h.stdout.startswith(f"usage: parley-replay {cmd}"), h.stdout
        assert replay(cmd).returncode == 2
        p = replay(cmd, "--no-such-option", "x", "y")
        assert p.returncode == 2 and "unknown option" in p.stderr, p.stderr
    p = replay("frobnicate")
    assert p.returncode == 2 and "unknown command" in p.stderr

    missing = str(tmp_path / "missing.cap")
    p = replay("stats", missing)
    assert p.returncode == 2 and "No such file" in p.stderr, p.stderr
    junk = tmp_path / "junk.cap"
    junk.write_bytes(b'{"not": "a capture"}\n')
    p = replay("stats", str(junk))
    assert p.returncode == 2 and "not a Parley capture" in p.stderr, p.stderr
    p = replay("play", str(junk), "ws://127.0.0.1:1")
    assert p.returncode == 2 and "not a Parley capture" in p.stderr, p.stderr
    capture = os.path.join(CAPTURES, "conversation.cap")
    p = replay("play", capture, "gopher://x")
    assert p.returncode == 2, p.stderr
    p = replay("diff", capture, missing)
    assert p.returncode == 2 and "No such file" in p.stderr, p.stderr


def test_truncated_capture_keeps_what_came_before(tmp_path):
    """A recorder killed mid-write loses only its last record."""
    capture = os.path.join(CAPTURES, "conversation.cap")
    whole = capture_stats(capture)
    with open(capture, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.cap"
    cut.write_bytes(data[:-3])
    p = replay("stats", "--json", str(cut))
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["records"] == whole["records"] - 1
    assert "cut short" in st["warning"] and "warning" in p.stderr


def test_play_interrupted_keeps_out(make_server, tmp_path):
    """SIGINT mid-replay: no more events, connections closed with 1001, the
    --out capture flushed whole (stats reads it without a warning), exit 1."""
    capture = os.path.join(CAPTURES, "conversation.cap")
    srv = make_server()
    out = str(tmp_path / "interrupted.cap")
    # --speed 0.01: the capture's events spread over seconds; the signal lands mid-way.
    proc = subprocess.Popen([REPLAY, "play", "--speed", "0.01", "--multiply", "5", "--out", out, capture, srv.ws_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 1, err
    assert "interrupted" in err and "Sanitizer" not in err, err
    st = capture_stats(out)
    assert st["warning"] == "" and st["records"] > 0, st
    assert st["opened"] >= 1 and st["closed"] == st["opened"], st
    assert set(st["close_codes"]) <= {"1001", "1000"}, st
