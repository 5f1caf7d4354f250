"""HTTP endpoints on the same port: docs/protocol.md §3."""

import asyncio
import json
import re
import time

import pytest

from conftest import (Client, collect_turn, connect, http, is_int, is_number, run, run_turn)

SESSION_KEYS = {"session_id", "model", "kind", "name", "created_at", "message_count", "members"}


def _json_error(resp, status, code):
    assert resp.status == status, resp
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert body.get("code") == code, body
    return body


def _check_session_obj(obj):
    assert SESSION_KEYS <= set(obj), f"missing keys {SESSION_KEYS - set(obj)} in {obj}"
    assert isinstance(obj["session_id"], str) and obj["session_id"]
    assert isinstance(obj["model"], str)
    assert obj["kind"] in ("private", "shared", "group")
    assert isinstance(obj["name"], str)
    assert is_number(obj["created_at"]) or isinstance(obj["created_at"], str)
    assert is_int(obj["message_count"]) and obj["message_count"] >= 0
    assert is_int(obj["members"]) and obj["members"] >= 0


# --------------------------------------------------------------------------- info


def test_root(server):
    r = http(server, "GET", "/")
    assert r.status == 200
    body = r.json()
    assert body["name"] == "parley"
    assert isinstance(body["version"], str) and body["version"]
    assert body["model"] == "echo"
    assert body["websocket"] == "/ws"
    assert isinstance(body["endpoints"], list) and body["endpoints"]


def test_health_shape(server):
    r = http(server, "GET", "/health")
    assert r.status == 200
    body = r.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str)
    assert is_number(body["uptime"]) and body["uptime"] >= 0
    assert is_int(body["connections"]) and body["connections"] >= 0
    assert is_int(body["sessions"]) and body["sessions"] >= 0


def test_health_counts_follow_clients(make_server):
    srv = make_server()

    def health():
        r = http(srv, "GET", "/health")
        assert r.status == 200
        return r.json()

    before = health()
    assert before["connections"] == 0
    assert before["sessions"] == 0

    async def body():
        c = await Client.connect(srv)
        await c.ping()
        mid = health()
        assert mid["connections"] == 1, mid
        assert mid["sessions"] == 0, mid
        await c.create_session()
        await c.ping()
        after = health()
        assert after["connections"] == 1, after
        assert after["sessions"] == 1, after
        d = await Client.connect(srv)
        await d.ping()
        assert health()["connections"] == 2
        await d.close()
        await c.close()
    run(body())

    # Closed connections are no longer counted (allow the server a moment to notice).
    deadline = time.monotonic() + 5
    while health()["connections"] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health()["connections"] == 0


STATS_SHAPE = {
    "uptime": None, "workers": None, "shards": None,
    "connections": {"current", "total"},
    "frames": {"in", "out"},
    "errors": dict,
    "sessions": {"active", "members"},
    "messages": {"user", "model"},
    "turns": {"started", "completed", "queued", "rejected"},
    "model": {"streams", "chunks"},
    "mailbox": {"dropped"},
}


def test_stats_shape(server):
    r = http(server, "GET", "/stats")
    assert r.status == 200
    body = r.json()
    for key, sub in STATS_SHAPE.items():
        assert key in body, f"/stats lacks {key!r}: {body}"
        if sub is None:
            assert is_number(body[key]), (key, body[key])
        elif sub is dict:
            assert isinstance(body[key], dict), (key, body[key])
            assert all(is_int(v) for v in body[key].values()), body[key]
        else:
            assert isinstance(body[key], dict), (key, body[key])
            assert sub <= set(body[key]), f"/stats.{key} lacks {sub - set(body[key])}"
            for k in sub:
                assert is_int(body[key][k]), (key, k, body[key][k])
    assert body["workers"] == 2


def test_stats_count_activity(make_server):
    srv = make_server("--echo-delay-ms", "30")

    def check(stats):
        assert stats["connections"]["current"] == 1
        assert stats["connections"]["total"] >= 1
        assert stats["frames"]["in"] >= 4
        assert stats["frames"]["out"] >= 8
        assert stats["errors"].get("UNKNOWN_TYPE", 0) >= 1
        assert stats["sessions"]["active"] == 1
        assert stats["sessions"]["members"] == 1
        assert stats["messages"]["user"] == 1
        assert stats["messages"]["model"] == 1
        assert stats["turns"]["started"] == 1
        assert stats["turns"]["completed"] == 1
        assert stats["model"]["chunks"] >= 2

    async def body():
        c = await Client.connect(srv)
        await c.create_session()
        await run_turn(c, "count me")
        await c.expect_error({"type": "nope"}, "UNKNOWN_TYPE")
        await c.ping()
        # Shards report their counters asynchronously: allow them a few seconds to converge.
        deadline = time.monotonic() + 5
        while True:
            stats = http(srv, "GET", "/stats").json()
            try:
                check(stats)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    print("final /stats:", stats)
                    raise
            await asyncio.sleep(0.2)
        # model.streams counts upstream streams (open ones at least): one is open mid-answer.
        await c.send({"type": "chat", "message": " ".join(["w"] * 60)})
        await c.recv_until("chunk")
        deadline = time.monotonic() + 1.5
        while http(srv, "GET", "/stats").json()["model"]["streams"] < 1:
            assert time.monotonic() < deadline, "model.streams is 0 while an answer streams"
            await asyncio.sleep(0.1)
        await c.recv_until("response_complete")
        await c.close()
    run(body())


# --------------------------------------------------------------------------- sessions


def test_post_sessions_new_without_body(server):
    r = http(server, "POST", "/sessions/new")
    assert r.status == 201, r
    body = r.json()
    _check_session_obj(body)
    assert body["model"] == "echo"
    assert body["kind"] == "private"
    assert body["name"] == ""
    assert body["message_count"] == 0
    assert body["members"] == 0


def test_post_sessions_new_with_body(server):
    r = http(server, "POST", "/sessions/new",
             {"kind": "shared", "name": "from http", "system_prompt": "Be brief.",
              "model_id": "echo"})
    assert r.status == 201, r
    body = r.json()
    _check_session_obj(body)
    assert body["kind"] == "shared"
    assert body["name"] == "from http"
    assert body["model"] == "echo"


def test_post_sessions_new_empty_object(server):
    r = http(server, "POST", "/sessions/new", {})
    assert r.status == 201, r
    _check_session_obj(r.json())


@pytest.mark.parametrize("raw", ['{"kind":', "not json", "[1,2]", '"str"',
                                 '{"kind":"public"}', '{"name":5}', '{"system_prompt":[]}'],
                         ids=["truncated", "garbage", "array", "string", "bad kind",
                              "name number", "prompt array"])
def test_post_sessions_new_bad_body(server, raw):
    r = http(server, "POST", "/sessions/new", raw)
    assert r.status == 400, r
    body = r.json()
    assert isinstance(body.get("error"), str) and isinstance(body.get("code"), str), body


def test_post_sessions_new_unknown_model(server):
    r = http(server, "POST", "/sessions/new", {"model_id": "no-such-model"})
    assert r.status in (400, 404), r
    r.json()


def test_list_sessions(server):
    created = http(server, "POST", "/sessions/new", {"name": "listed"}).json()
    r = http(server, "GET", "/sessions")
    assert r.status == 200
    body = r.json()
    assert isinstance(body["sessions"], list)
    assert body["count"] == len(body["sessions"])
    mine = [s for s in body["sessions"] if s["session_id"] == created["session_id"]]
    assert len(mine) == 1
    for s in body["sessions"]:
        _check_session_obj(s)
    assert mine[0]["name"] == "listed"


def test_get_session_with_messages(server):
    async def body():
        c = await connect(server)
        sid = (await c.create_session(name="with history"))["session_id"]
        frames = await run_turn(c, "remember this")
        msg_id = next(f for f in frames if f["type"] == "delivery_confirmation")["message_id"]
        r = http(server, "GET", f"/sessions/{sid}")
        assert r.status == 200
        s = r.json()
        _check_session_obj(s)
        assert s["session_id"] == sid
        assert s["name"] == "with history"
        assert s["message_count"] == 2
        assert s["members"] == 1
        msgs = s["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"]
        assert msgs[0]["id"] == msg_id
        assert msgs[0]["content"] == "remember this"
        assert msgs[1]["content"] == "Echo turn 1 (1 context messages): remember this"
        for m in msgs:
            assert {"id", "role", "content", "timestamp"} <= set(m)
            assert is_number(m["timestamp"])
        assert msgs[0]["timestamp"] <= msgs[1]["timestamp"]
        await c.close()
    run(body())


def test_http_session_joinable_over_ws(server):
    sid = http(server, "POST", "/sessions/new", {"kind": "shared", "name": "h"}).json()["session_id"]

    async def body():
        c = await connect(server)
        joined = await c.join(sid)
        assert joined["members"] == 1
        assert joined["message_count"] == 0
        assert joined["name"] == "h"
        frames = await run_turn(c, "hi")
        assert frames[-1]["session_id"] == sid
        assert http(server, "GET", f"/sessions/{sid}").json()["members"] == 1
        await c.close()
    run(body())


def test_http_session_system_prompt_applies(server):
    sid = http(server, "POST", "/sessions/new",
               {"kind": "shared", "system_prompt": "abc"}).json()["session_id"]

    async def body():
        c = await connect(server)
        await c.join(sid)
        frames = await run_turn(c, "hi")
        assert "".join(f["text"] for f in frames if f["type"] == "chunk") == \
            "[system prompt: 3 chars] Echo turn 1 (1 context messages): hi"
        await c.close()
    run(body())


def test_get_unknown_session_404(server):
    _json_error(http(server, "GET", "/sessions/does-not-exist"), 404, "NOT_FOUND")


def test_delete_session(server):
    async def body():
        c = await connect(server)
        sid = (await c.create_session())["session_id"]
        await run_turn(c, "soon gone")
        r = http(server, "DELETE", f"/sessions/{sid}")
        assert r.status == 200, r
        assert r.json() == {"deleted": True, "session_id": sid}
        upd = (await c.recv_until("session_update", "session_deleted"))[-1]
        assert upd["session_id"] == sid
        assert is_int(upd["seq"])
        _json_error(http(server, "GET", f"/sessions/{sid}"), 404, "NOT_FOUND")
        _json_error(http(server, "DELETE", f"/sessions/{sid}"), 404, "NOT_FOUND")
        listed = http(server, "GET", "/sessions").json()["sessions"]
        assert sid not in [s["session_id"] for s in listed]
        # The session is gone for ws too.
        await c.expect_error({"type": "join_session", "session_id": sid}, "NOT_FOUND")
        await c.ping()
        await c.close()
    run(body())


def test_delete_reaches_every_member(server):
    async def body():
        cs = await connect(server, 3)
        sid = (await cs[0].create_session(kind="shared"))["session_id"]
        for c in cs[1:]:
            await c.join(sid)
        assert http(server, "DELETE", f"/sessions/{sid}").status == 200
        for c in cs:
            upd = (await c.recv_until("session_update", "session_deleted"))[-1]
            assert upd["session_id"] == sid
        for c in cs:
            await c.close()
    run(body())


def test_clear_session(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.join(sid)
        await run_turn(a, "one")
        await collect_turn(b)
        frames = await run_turn(a, "two")
        last_seq = frames[-1]["seq"]
        await collect_turn(b)
        r = http(server, "POST", f"/sessions/{sid}/clear")
        assert r.status == 200, r
        assert r.json() == {"cleared": True, "session_id": sid, "message_count": 0}
        for c in (a, b):
            upd = (await c.recv_until("session_update", "history_cleared"))[-1]
            assert upd["session_id"] == sid
            assert upd["message_count"] == 0
            assert upd["seq"] > last_seq
        s = http(server, "GET", f"/sessions/{sid}").json()
        assert s["message_count"] == 0
        assert s["messages"] == []
        assert s["members"] == 2
        # History starts over for the model too.
        frames = await run_turn(a, "fresh")
        assert "".join(f["text"] for f in frames if f["type"] == "chunk") == \
            "Echo turn 1 (1 context messages): fresh"
        assert frames[-1]["message_count"] == 2
        await a.close()
        await b.close()
    run(body())


def test_clear_unknown_session_404(server):
    _json_error(http(server, "POST", "/sessions/nope/clear"), 404, "NOT_FOUND")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("path", ["/nope", "/sessions/x/y/z", "/health/extra", "/api/v2"])
def test_unknown_path_404(server, path):
    r = http(server, "GET", path)
    assert r.status == 404, r
    body = r.json()
    assert body["error"] == "not found" and body["code"] == "NOT_FOUND", body


@pytest.mark.parametrize("method,path,allowed", [
    ("DELETE", "/health", {"GET"}),
    ("POST", "/health", {"GET"}),
    ("POST", "/", {"GET"}),
    ("PUT", "/stats", {"GET"}),
    ("GET", "/sessions/new", {"POST"}),
    ("POST", "/sessions", {"GET"}),
    ("PUT", "/sessions/abc", {"GET", "DELETE"}),
    ("GET", "/sessions/abc/clear", {"POST"}),
])
def test_wrong_method_405(server, method, path, allowed):
    r = http(server, method, path, body="" if method in ("POST", "PUT") else None)
    assert r.status == 405, r
    body = r.json()
    assert body["error"] == "method not allowed" and body["code"] == "METHOD_NOT_ALLOWED", body
    allow = r.header("Allow")
    assert allow, f"no Allow header on 405: {r.headers}"
    methods = {m.strip().upper() for m in allow.split(",") if m.strip()}
    assert allowed <= methods, f"Allow: {allow!r}, expected {allowed}"
    assert method not in methods


def test_http_body_too_large_413(make_server):
    srv = make_server("--max-http-body", "1024")
    r = http(srv, "POST", "/sessions/new", {"name": "n" * 4000})
    assert r.status == 413, r
    assert isinstance(r.json().get("code"), str)
    assert http(srv, "POST", "/sessions/new", {"name": "small"}).status == 201


# --------------------------------------------------------------------------- docs


def _norm(path):
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_openapi(server):
    r = http(server, "GET", "/openapi.json")
    assert r.status == 200
    spec = r.json()
    assert isinstance(spec.get("openapi"), str) and spec["openapi"].startswith("3.1"), spec.get("openapi")
    assert "info" in spec and "title" in spec["info"] and "version" in spec["info"]
    paths = {_norm(p): {m.lower() for m in ops} for p, ops in spec["paths"].items()}
    expected = {
        "/": {"get"}, "/health": {"get"}, "/stats": {"get"},
        "/sessions/new": {"post"}, "/sessions": {"get"},
        "/sessions/{}": {"get", "delete"}, "/sessions/{}/clear": {"post"},
        "/openapi.json": {"get"}, "/docs": {"get"}, "/demo": {"get"},
    }
    for p, methods in expected.items():
        assert p in paths, f"openapi.json lacks path {p}: {sorted(paths)}"
        assert methods <= paths[p], f"openapi.json {p} lacks {methods - paths[p]}"
    # It is a JSON document that a renderer can load: round-trips cleanly.
    json.loads(json.dumps(spec))


@pytest.mark.parametrize("path", ["/docs", "/demo"])
def test_html_pages(server, path):
    r = http(server, "GET", path)
    assert r.status == 200, r
    assert (r.header("Content-Type") or "").startswith("text/html")
    assert "<html" in r.text.lower()


def test_docs_references_openapi(server):
    assert "openapi.json" in http(server, "GET", "/docs").text


def test_http_keepalive_and_ws_share_port(server):
    """Several requests on one HTTP/1.1 connection, while a ws client is connected."""
    import http.client as httplib

    async def body():
        c = await connect(server)
        conn = httplib.HTTPConnection(server.host, server.port, timeout=10)
        for path in ("/health", "/stats", "/sessions", "/"):
            conn.request("GET", path)
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200
            json.loads(data)
        conn.close()
        await c.ping()
        await c.close()
    run(body())


def test_members_count_follows_ws(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.join(sid)
        assert http(server, "GET", f"/sessions/{sid}").json()["members"] == 2
        await b.close()
        await a.recv_until("session_update", "member_left")
        assert http(server, "GET", f"/sessions/{sid}").json()["members"] == 1
        await a.close()
    run(body())


def test_health_sessions_follow_delete(make_server):
    srv = make_server()
    sids = [http(srv, "POST", "/sessions/new").json()["session_id"] for _ in range(3)]
    assert http(srv, "GET", "/health").json()["sessions"] == 3
    assert http(srv, "GET", "/sessions").json()["count"] == 3
    assert http(srv, "DELETE", f"/sessions/{sids[1]}").status == 200
    assert http(srv, "GET", "/health").json()["sessions"] == 2
    listed = http(srv, "GET", "/sessions").json()
    assert listed["count"] == 2
    assert {s["session_id"] for s in listed["sessions"]} == {sids[0], sids[2]}


def test_delete_while_streaming(make_server):
    srv = make_server("--echo-delay-ms", "30")

    async def body():
        a = await Client.connect(srv, name="a")
        b = await Client.connect(srv, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.join(sid)
        await a.send({"type": "chat", "message": " ".join(["w"] * 100)})
        await b.recv_until("chunk")
        assert http(srv, "DELETE", f"/sessions/{sid}").status == 200
        for c in (a, b):
            await c.recv_until("session_update", "session_deleted", timeout=10)
        # No more events of the deleted session after a moment; connections still work.
        await a.drain(0.3)
        later = await b.drain(0.5)
        assert not [f for f in later if f.get("session_id") == sid and f["type"] == "chunk"], later
        for c in (a, b):
            await c.ping()
        await a.close()
        await b.close()
    run(body())
    assert http(srv, "GET", "/health").status == 200


def test_clear_while_streaming(make_server):
    srv = make_server("--echo-delay-ms", "30")

    async def body():
        a = await Client.connect(srv)
        sid = (await a.create_session())["session_id"]
        await a.send({"type": "chat", "message": " ".join(["w"] * 20)})
        await a.recv_until("chunk")
        assert http(srv, "POST", f"/sessions/{sid}/clear").status == 200
        frames = await a.recv_until("session_update", "history_cleared", timeout=10)
        if not [f for f in frames if f["type"] == "response_complete"]:
            frames += await a.recv_until("response_complete", timeout=10)
        await a.ping()
        frames = await run_turn(a, "after clear")
        assert frames[-1]["finish_reason"] == "stop"
        await a.close()
    run(body())
    assert http(srv, "GET", "/health").status == 200


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /sessions/new HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 100000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
], ids=["garbage", "negative length", "short body", "long path", "huge header", "tls hello"])
def test_malformed_http_does_not_hurt(server, raw):
    import socket
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            while s.recv(65536):
                pass
        except OSError:
            pass
    r = http(server, "GET", "/health")
    assert r.status == 200
