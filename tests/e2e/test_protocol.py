"""Session protocol at /ws, one or two clients: docs/protocol.md §1."""

import asyncio

from conftest import (Client, answer_text, check_seq, collect_turn, connect, echo_answer,
                      http, is_int, is_number, module_server, of_type, one, run, run_turn)

# A server whose answers stream slowly enough to queue chats and type while streaming.
slow_server = module_server("--echo-delay-ms", "50")


# --------------------------------------------------------------------------- connect & sessions


def test_connected_on_connect(server):
    async def body():
        c = await connect(server)
        f = c.connected
        assert f["type"] == "connected"
        assert isinstance(f["connection_id"], str) and f["connection_id"]
        assert f["message"] == "Connected!"
        info = f["server_info"]
        assert info["name"] == "parley"
        assert isinstance(info["version"], str) and info["version"]
        assert info["model"] == "echo"
        assert info["auth"] == "off"
        await c.close()
    run(body())


def test_connection_ids_are_distinct(server):
    async def body():
        cs = await connect(server, 5)
        ids = {c.connection_id for c in cs}
        assert len(ids) == 5
        for c in cs:
            await c.close()
    run(body())


def test_create_session_defaults(server):
    async def body():
        c = await connect(server)
        f = await c.create_session()
        assert isinstance(f["session_id"], str) and f["session_id"]
        assert f["model"] == "echo"
        assert f["kind"] == "private"
        assert f["name"] == ""
        assert is_int(f["seq"])
        await c.close()
    run(body())


def test_create_session_with_kind_name_prompt(server):
    async def body():
        c = await connect(server)
        f = await c.create_session(kind="group", name="design review",
                                   system_prompt="You are terse.")
        assert f["kind"] == "group"
        assert f["name"] == "design review"
        assert f["model"] == "echo"
        g = await c.create_session(kind="shared", model_id="echo")
        assert g["kind"] == "shared"
        assert g["session_id"] != f["session_id"]
        await c.close()
    run(body())


def test_join_and_leave(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        created = await a.create_session(kind="shared", name="room")
        sid = created["session_id"]

        joined = await b.join(sid)
        assert joined["session_id"] == sid
        assert joined["message_count"] == 0
        assert is_int(joined["seq"]) and joined["seq"] >= created["seq"]
        assert joined["members"] == 2
        assert joined["model"] == "echo"
        assert joined["kind"] == "shared"
        assert joined["name"] == "room"

        mj = (await a.recv_until("session_update", "member_joined"))[-1]
        assert mj["session_id"] == sid
        assert mj["connection_id"] == b.connection_id
        assert mj["members"] == 2
        assert is_int(mj["seq"]) and mj["seq"] == created["seq"]  # presence: seq not advanced

        # The joiner itself is not told about its own join.
        extra = await b.ping()
        assert not of_type(extra, "session_update", "member_joined"), extra

        left = await b.request({"type": "leave_session", "session_id": sid}, "session_left")
        assert left["session_id"] == sid
        ml = (await a.recv_until("session_update", "member_left"))[-1]
        assert ml["session_id"] == sid
        assert ml["connection_id"] == b.connection_id
        assert ml["members"] == 1
        assert ml["seq"] == mj["seq"]
        await a.close()
        await b.close()
    run(body())


def test_leave_defaults_to_current_session(server):
    async def body():
        a = await connect(server)
        sid = (await a.create_session())["session_id"]
        left = await a.request({"type": "leave_session"}, "session_left")
        assert left["session_id"] == sid
        # No current session any more.
        err = await a.expect_error({"type": "leave_session", "id": 3}, "NOT_FOUND")
        assert err["id"] == 3
        await a.close()
    run(body())


def test_join_reports_history_and_seq(server):
    async def body():
        a = await connect(server, name="a")
        sid = (await a.create_session(kind="shared"))["session_id"]
        frames = await run_turn(a, "hello")
        last_seq = check_seq(frames)
        b = await connect(server, name="b")
        joined = await b.join(sid)
        assert joined["message_count"] == 2
        assert joined["seq"] == last_seq
        mj = (await a.recv_until("session_update", "member_joined"))[-1]
        assert mj["seq"] == last_seq  # presence does not advance seq
        await a.close()
        await b.close()
    run(body())


def test_ping_pong(server):
    async def body():
        c = await connect(server)
        await c.send({"type": "ping"})
        pong = await c.recv()
        assert pong == {"type": "pong"}
        for id_ in (7, "abc-1", 2.5):
            await c.send({"type": "ping", "id": id_})
            pong = await c.recv()
            assert pong == {"type": "pong", "id": id_}
        await c.close()
    run(body())


# --------------------------------------------------------------------------- a turn


def test_chat_without_session_creates_one(server):
    async def body():
        c = await connect(server)
        frames = await run_turn(c, "hello", id=1)
        types = [f["type"] for f in frames]
        assert types[0] == "session_created", types
        assert types.index("session_created") < types.index("delivery_confirmation")
        created = frames[0]
        assert created["kind"] == "private"
        assert created["model"] == "echo"
        sid = created["session_id"]
        assert frames[-1]["session_id"] == sid
        assert answer_text(frames) == echo_answer(1, 1, "hello")
        # The new session is now current: a second chat continues it.
        frames2 = await run_turn(c, "again")
        assert not of_type(frames2, "session_created")
        assert frames2[-1]["session_id"] == sid
        assert answer_text(frames2) == echo_answer(2, 3, "again")
        await c.close()
    run(body())


def test_full_turn_shapes_and_order(server):
    async def body():
        c = await connect(server)
        created = await c.create_session()
        sid = created["session_id"]
        frames = await run_turn(c, "hello", id=42)
        types = [f["type"] for f in frames]

        # Order: message_added, status, response_start, chunk…, complete; the
        # delivery_confirmation comes once the message is committed, anywhere among them.
        dc = one(frames, "delivery_confirmation")
        frames = [f for f in frames if f is not dc]
        types = [f["type"] for f in frames]
        assert frames[0]["type"] == "session_update" and frames[0]["update_type"] == "message_added", types
        assert types[1] == "status", types
        assert types[2] == "response_start", types
        n = len(types) - 4
        assert n >= 1
        assert types[3:3 + n] == ["chunk"] * n, types
        assert types[-1] == "response_complete"

        assert isinstance(dc["message_id"], str) and dc["message_id"]
        assert dc["id"] == 42
        assert dc["status"] == "stored"
        assert dc["session_id"] == sid

        ma = frames[0]
        assert ma["session_id"] == sid
        assert ma["message_count"] == 1
        msg = ma["message"]
        assert msg["id"] == dc["message_id"]
        assert msg["role"] == "user"
        assert msg["content"] == "hello"
        assert msg["connection_id"] == c.connection_id
        assert is_number(msg["timestamp"]) and msg["timestamp"] > 1.6e9

        st = frames[1]
        assert st["message"] == "Generating response..."
        assert st["context_messages"] == 1
        assert st["session_id"] == sid

        rs = frames[2]
        assert "total_length" in rs and rs["total_length"] is None
        rid = rs["response_id"]
        assert isinstance(rid, str) and rid
        assert rs["model"] == "echo"
        assert rs["session_id"] == sid

        chunks = frames[3:3 + n]
        assert [ch["chunk_number"] for ch in chunks] == list(range(1, n + 1))
        assert all(ch["response_id"] == rid for ch in chunks)
        assert all(ch["session_id"] == sid for ch in chunks)
        assert all(ch["is_final"] is False for ch in chunks[:-1])
        assert chunks[-1]["is_final"] is True
        assert "".join(ch["text"] for ch in chunks) == "Echo turn 1 (1 context messages): hello"
        assert n > 1, "the echo model streams word by word"

        rc = frames[-1]
        assert rc["total_chunks"] == n
        assert rc["finish_reason"] == "stop"
        assert rc["model"] == "echo"
        assert rc["response_id"] == rid
        assert rc["message_count"] == 2
        assert rc["session_id"] == sid
        assert is_number(rc["processing_time"]) and 0 <= rc["processing_time"] < 20
        usage = rc["usage"]
        assert is_int(usage["prompt_tokens"]) and usage["prompt_tokens"] >= 0
        assert is_int(usage["completion_tokens"]) and usage["completion_tokens"] >= 0

        check_seq(frames, after=created["seq"])
        await c.close()
    run(body())


def test_seq_strictly_increasing_over_turns(server):
    async def body():
        c = await connect(server)
        created = await c.create_session()
        last = created["seq"]
        for i in range(3):
            frames = await run_turn(c, f"message {i}")
            last = check_seq(frames, after=last)
        await c.close()
    run(body())


def test_multi_turn_context(server):
    async def body():
        c = await connect(server)
        await c.create_session()
        for k, text in enumerate(["one", "two words", "three more words"], start=1):
            frames = await run_turn(c, text)
            assert answer_text(frames) == echo_answer(k, 2 * k - 1, text)
            assert one(frames, "status")["context_messages"] == 2 * k - 1
            assert one(frames, "session_update", "message_added")["message_count"] == 2 * k - 1
            assert frames[-1]["message_count"] == 2 * k
        await c.close()
    run(body())


def test_session_system_prompt_prefix(server):
    async def body():
        prompt = "You are a pirate. Answer briefly."
        c = await connect(server)
        await c.create_session(system_prompt=prompt)
        frames = await run_turn(c, "hello")
        assert answer_text(frames) == echo_answer(1, 1, "hello", system_prompt=prompt)
        frames = await run_turn(c, "again")
        assert answer_text(frames) == echo_answer(2, 3, "again", system_prompt=prompt)
        await c.close()
    run(body())


def test_chat_system_prompt_prefix(server):
    async def body():
        prompt = "Be kind."
        c = await connect(server)
        await c.create_session()
        frames = await run_turn(c, "hello", system_prompt=prompt)
        text = answer_text(frames)
        assert text.startswith(f"[system prompt: {len(prompt)} chars] "), text
        assert text.endswith("Echo turn 1 (1 context messages): hello"), text
        await c.close()
    run(body())


def test_max_tokens_caps_chunks(server):
    async def body():
        c = await connect(server)
        await c.create_session()
        frames = await run_turn(c, "a long message with many words in it", max_tokens=3)
        chunks = of_type(frames, "chunk")
        assert len(chunks) == 3
        assert [ch["chunk_number"] for ch in chunks] == [1, 2, 3]
        rc = frames[-1]
        assert rc["total_chunks"] == 3
        assert rc["finish_reason"] == "length"
        full = echo_answer(1, 1, "a long message with many words in it")
        assert full.startswith(answer_text(frames))
        await c.close()
    run(body())


def test_chat_with_model_and_temperature(server):
    async def body():
        c = await connect(server)
        await c.create_session()
        frames = await run_turn(c, "hi", model_id="echo", temperature=0.7, max_tokens=100)
        assert answer_text(frames) == echo_answer(1, 1, "hi")
        assert frames[-1]["finish_reason"] == "stop"
        await c.close()
    run(body())


def test_unicode_message_round_trip(server):
    async def body():
        c = await connect(server)
        await c.create_session()
        text = "héllo wörld ☃ 日本語 \"quoted\" back\\slash"
        frames = await run_turn(c, text)
        assert one(frames, "session_update", "message_added")["message"]["content"] == text
        assert answer_text(frames) == echo_answer(1, 1, text)
        await c.close()
    run(body())


# --------------------------------------------------------------------------- typing


def test_typing_reaches_other_member_only(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.join(sid)
        mj = (await a.recv_until("session_update", "member_joined"))[-1]

        await a.send({"type": "typing_start"})
        t = (await b.recv_until("session_update", "user_typing"))[-1]
        assert t["typing"] is True
        assert t["connection_id"] == a.connection_id
        assert t["session_id"] == sid
        assert t["seq"] == mj["seq"], "user_typing carries the current seq without advancing it"

        await a.send({"type": "typing_stop", "session_id": sid})
        t = (await b.recv_until("session_update", "user_typing"))[-1]
        assert t["typing"] is False
        assert t["connection_id"] == a.connection_id

        # b types: a sees it, b does not.
        await b.send({"type": "typing_start"})
        t = (await a.recv_until("session_update", "user_typing"))[-1]
        assert t["connection_id"] == b.connection_id and t["typing"] is True

        extra_a = await a.drain(0.4)
        await b.drain(0.1)
        assert not of_type(extra_a, "session_update", "user_typing"), extra_a
        assert not [f for f in of_type(b.frames, "session_update", "user_typing")
                    if f["connection_id"] == b.connection_id], "sender got its own typing"
        assert not [f for f in of_type(a.frames, "session_update", "user_typing")
                    if f["connection_id"] == a.connection_id], "sender got its own typing"
        await a.close()
        await b.close()
    run(body())


def test_typing_does_not_advance_seq(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.join(sid)
        await a.recv_until("session_update", "member_joined")
        frames = await run_turn(a, "hi")
        last = check_seq(frames)
        await collect_turn(b)
        await b.send({"type": "typing_start"})
        t = (await a.recv_until("session_update", "user_typing"))[-1]
        assert t["seq"] == last
        await b.send({"type": "typing_stop"})
        await a.recv_until("session_update", "user_typing")
        frames = await run_turn(a, "next")
        assert check_seq(frames, after=last) > last
        await a.close()
        await b.close()
    run(body())


def test_chat_stops_senders_typing(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.join(sid)
        await a.send({"type": "typing_start"})
        t = (await b.recv_until("session_update", "user_typing"))[-1]
        assert t["typing"] is True
        await run_turn(a, "done typing")
        frames = await collect_turn(b)
        stops = [f for f in of_type(frames, "session_update", "user_typing")
                 if f["connection_id"] == a.connection_id and f["typing"] is False]
        assert stops, f"b never saw a's typing stop: {frames}"
        await a.close()
        await b.close()
    run(body())


def test_typing_in_session_not_joined_is_forbidden(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.expect_error({"type": "typing_start", "session_id": sid}, "FORBIDDEN")
        await b.ping()
        await a.close()
        await b.close()
    run(body())


# --------------------------------------------------------------------------- queued turns


def test_queued_chats_answered_in_order(slow_server):
    async def body():
        c = await Client.connect(slow_server)
        sid = (await c.create_session())["session_id"]
        await c.send({"type": "chat", "message": "first question", "id": 1})
        await c.send({"type": "chat", "message": "second question", "id": 2})
        frames = await c.recv_until("response_complete", timeout=20)
        frames += await c.recv_until("response_complete", timeout=20)
        assert not of_type(frames, "error"), of_type(frames, "error")

        confirmations = of_type(frames, "delivery_confirmation")
        assert [d["id"] for d in confirmations] == [1, 2]
        starts = of_type(frames, "response_start")
        assert len(starts) == 2
        r1, r2 = starts[0]["response_id"], starts[1]["response_id"]
        assert r1 != r2
        assert answer_text(frames, r1) == echo_answer(1, 1, "first question")
        # The second turn sees the first question, its answer and the second question.
        assert answer_text(frames, r2) == echo_answer(2, 3, "second question")

        # Streams do not interleave: all of r1 before r2 starts.
        idx = {id(f): i for i, f in enumerate(frames)}
        last_r1 = max(idx[id(f)] for f in frames if f.get("response_id") == r1)
        first_r2 = min(idx[id(f)] for f in frames if f.get("response_id") == r2)
        assert last_r1 < first_r2
        completes = of_type(frames, "response_complete")
        assert [x["response_id"] for x in completes] == [r1, r2]
        assert completes[1]["message_count"] == 4
        check_seq(frames, session_id=sid)
        await c.close()
    run(body())


def test_busy_when_too_many_pending(make_server):
    srv = make_server("--echo-delay-ms", "50", "--max-pending", "1")

    async def body():
        c = await Client.connect(srv)
        await c.create_session()
        long_text = " ".join(f"w{i}" for i in range(40))    # ~2 s of streaming
        for i in range(6):
            await c.send({"type": "chat", "message": long_text, "id": i})
        # Chat 0 streams, chat 1 waits (max-pending 1), chats 2..5 are refused with BUSY.
        frames = await c.recv_until("response_complete", timeout=15)
        frames += await c.recv_until("response_complete", timeout=15)
        frames += await c.ping()
        errors = of_type(frames, "error")
        assert errors, "no BUSY error"
        assert {e["code"] for e in errors} == {"BUSY"}, errors
        assert sorted(e["id"] for e in errors) == [2, 3, 4, 5], errors
        assert sorted(d["id"] for d in of_type(frames, "delivery_confirmation")) == [0, 1]
        completes = of_type(frames, "response_complete")
        assert [x["finish_reason"] for x in completes] == ["stop", "stop"]
        assert completes[1]["message_count"] == 4
        await c.close()
    run(body())


# --------------------------------------------------------------------------- current session & errors


def test_session_id_omitted_after_join_uses_current(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.join(sid)
        frames = await run_turn(b, "from b")
        assert not of_type(frames, "session_created")
        assert frames[-1]["session_id"] == sid
        af = await collect_turn(a)
        ma = one(af, "session_update", "message_added")
        assert ma["session_id"] == sid
        assert ma["message"]["connection_id"] == b.connection_id
        assert ma["message"]["content"] == "from b"
        await a.close()
        await b.close()
    run(body())


def test_join_makes_session_current(server):
    async def body():
        a = await connect(server, name="a")
        s1 = (await a.create_session())["session_id"]
        s2 = (await a.create_session())["session_id"]
        frames = await run_turn(a, "to s2")
        assert frames[-1]["session_id"] == s2
        await a.join(s1)
        frames = await run_turn(a, "to s1")
        assert frames[-1]["session_id"] == s1
        frames = await run_turn(a, "explicit s2", session_id=s2)
        assert frames[-1]["session_id"] == s2
        assert answer_text(frames) == echo_answer(2, 3, "explicit s2")
        await a.close()
    run(body())


def test_chat_in_session_not_joined_is_forbidden(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        err = await b.expect_error({"type": "chat", "message": "hi", "session_id": sid, "id": 9},
                                   "FORBIDDEN")
        assert err["id"] == 9
        await b.ping()
        # Nothing reached the session.
        extra = await a.drain(0.3)
        assert not of_type(extra, "session_update", "message_added")
        await a.close()
        await b.close()
    run(body())


def test_chat_in_unknown_session_not_found(server):
    async def body():
        c = await connect(server)
        await c.expect_error({"type": "chat", "message": "hi", "session_id": "no-such-session"},
                             "NOT_FOUND")
        await c.ping()
        await c.close()
    run(body())


def test_join_unknown_session_not_found(server):
    async def body():
        c = await connect(server)
        err = await c.expect_error({"type": "join_session", "session_id": "nope", "id": "j1"},
                                   "NOT_FOUND")
        assert err["id"] == "j1"
        await c.ping()
        await c.close()
    run(body())


def test_create_with_unknown_model_not_found(server):
    async def body():
        c = await connect(server)
        await c.expect_error({"type": "create_session", "model_id": "no-such-model"}, "NOT_FOUND")
        await c.ping()
        await c.close()
    run(body())


def test_chat_with_unknown_model_not_found(server):
    async def body():
        c = await connect(server)
        await c.create_session()
        await c.expect_error({"type": "chat", "message": "hi", "model_id": "no-such-model"},
                             "NOT_FOUND")
        await c.ping()
        await c.close()
    run(body())


def test_leave_without_session_not_found(server):
    async def body():
        c = await connect(server)
        await c.expect_error({"type": "leave_session"}, "NOT_FOUND")
        await c.expect_error({"type": "leave_session", "session_id": "nope"}, "NOT_FOUND")
        await c.ping()
        await c.close()
    run(body())


def test_create_with_bad_kind(server):
    async def body():
        c = await connect(server)
        await c.expect_error({"type": "create_session", "kind": "public"}, "BAD_FRAME")
        await c.ping()
        await c.close()
    run(body())


def test_too_many_sessions_on_connection_busy(make_server):
    srv = make_server("--max-conn-sessions", "2")

    async def body():
        c = await Client.connect(srv)
        await c.create_session()
        await c.create_session()
        await c.expect_error({"type": "create_session"}, "BUSY")
        await c.ping()
        await c.close()
    run(body())


def test_member_left_on_disconnect(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.join(sid)
        await a.recv_until("session_update", "member_joined")
        await b.close()
        ml = (await a.recv_until("session_update", "member_left", timeout=10))[-1]
        assert ml["connection_id"] == b.connection_id
        assert ml["members"] == 1
        await a.close()
    run(body())


def test_many_connections_and_closes_do_not_disturb(server):
    async def body():
        keep = await connect(server, name="keep")
        await keep.create_session()
        for _ in range(3):
            cs = await connect(server, 20)
            await asyncio.gather(*[c.close() for c in cs])
        frames = await run_turn(keep, "still here")
        assert answer_text(frames) == echo_answer(1, 1, "still here")
        await keep.close()
    run(body())


def test_pipelined_pings_answered_in_order(server):
    async def body():
        c = await connect(server)
        for i in range(100):
            await c.send({"type": "ping", "id": i})
        pongs = [await c.recv() for _ in range(100)]
        assert pongs == [{"type": "pong", "id": i} for i in range(100)]
        await c.close()
    run(body())


def test_chat_after_leave_is_forbidden(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.join(sid)
        await b.request({"type": "leave_session"}, "session_left")
        await b.expect_error({"type": "chat", "message": "hi", "session_id": sid}, "FORBIDDEN")
        # b no longer receives the session's events.
        await run_turn(a, "b is gone")
        extra = await b.drain(0.3)
        assert not [f for f in extra if f.get("session_id") == sid], extra
        await a.close()
        await b.close()
    run(body())


def test_connection_in_two_sessions_gets_both_streams(server):
    async def body():
        a = await connect(server, name="a")
        b = await connect(server, name="b")
        c = await connect(server, name="c")
        s1 = (await a.create_session(kind="shared", name="one"))["session_id"]
        s2 = (await a.create_session(kind="shared", name="two"))["session_id"]
        await b.join(s1)
        await c.join(s2)
        await a.recv_until("session_update", "member_joined", pred=lambda f: f["session_id"] == s1)
        await a.recv_until("session_update", "member_joined", pred=lambda f: f["session_id"] == s2)
        await b.send({"type": "chat", "message": "in one"})
        await c.send({"type": "chat", "message": "in two"})
        frames = await a.recv_until("response_complete")
        frames += await a.recv_until("response_complete")
        by_session = {s1: [f for f in frames if f.get("session_id") == s1],
                      s2: [f for f in frames if f.get("session_id") == s2]}
        assert answer_text(by_session[s1]) == echo_answer(1, 1, "in one")
        assert answer_text(by_session[s2]) == echo_answer(1, 1, "in two")
        check_seq(by_session[s1])
        check_seq(by_session[s2])
        for x in (a, b, c):
            await x.close()
    run(body())


def test_disconnect_mid_stream_does_not_disturb_others(make_server):
    srv = make_server("--echo-delay-ms", "20")

    async def body():
        a = await Client.connect(srv, name="a")
        b = await Client.connect(srv, name="b")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await b.join(sid)
        text = " ".join(f"w{i}" for i in range(30))
        await a.send({"type": "chat", "message": text})
        await a.recv_until("chunk")
        await a.ws.close()
        frames = await b.recv_until("response_complete", timeout=15)
        assert answer_text(frames) == echo_answer(1, 1, text)
        assert frames[-1]["finish_reason"] == "stop"
        # The session lives on with b.
        frames = await run_turn(b, "still here")
        assert answer_text(frames) == echo_answer(2, 3, "still here")
        await b.close()
    run(body())


def test_join_with_last_seq_is_accepted(server):
    """§1.1: last_seq is accepted (replay is not served yet): the join itself succeeds."""
    async def body():
        a = await connect(server, name="a")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await run_turn(a, "before")
        b = await connect(server, name="b")
        joined = await b.join(sid, last_seq=0)
        assert joined["session_id"] == sid
        assert joined["message_count"] == 2
        await a.close()
        await b.close()
    run(body())


def test_processing_time_is_seconds(slow_server):
    async def body():
        c = await Client.connect(slow_server)
        await c.create_session()
        frames = await run_turn(c, "one two three four five six seven eight")
        n = frames[-1]["total_chunks"]
        pt = frames[-1]["processing_time"]
        # n chunks 50 ms apart: at least (n-1) * 50 ms, and certainly not milliseconds.
        assert 0.8 * (n - 1) * 0.05 <= pt < 10, f"processing_time {pt} for {n} chunks at 50 ms"
        await c.close()
    run(body())


# ----------------------------------------------------------------- review regressions


def test_queued_turns_answer_each_message_in_order(make_server):
    """Chats sent while an answer streams are each answered, in order, with the history
    up to their own message; each answer is stored right after its question."""
    srv = make_server("--echo-delay-ms", "20")

    async def body():
        c = await Client.connect(srv)
        created = await c.create_session()
        sid = created["session_id"]
        for text in ("first one", "SECOND", "THIRD"):
            await c.send({"type": "chat", "message": text})
        answers = []
        while len(answers) < 3:
            frames = await c.recv_until("response_complete", timeout=20)
            answers.append("".join(f["text"] for f in frames if f["type"] == "chunk"))
        assert answers == ["Echo turn 1 (1 context messages): first one",
                           "Echo turn 2 (3 context messages): SECOND",
                           "Echo turn 3 (5 context messages): THIRD"]
        hist = http(srv, "GET", f"/sessions/{sid}").json()
        assert [(m["role"], m["content"]) for m in hist["messages"]] == [
            ("user", "first one"), ("assistant", answers[0]),
            ("user", "SECOND"), ("assistant", answers[1]),
            ("user", "THIRD"), ("assistant", answers[2])]
        assert hist["truncated"] is False
        await c.close()
    run(body(), timeout=40)


def test_context_budget_drops_oldest_messages(make_server):
    srv = make_server("--max-context", "1024", "--max-message", "1000")

    async def body():
        c = await Client.connect(srv)
        await c.create_session()
        first = await run_turn(c, "a" * 600)
        assert answer_text(first).startswith("Echo turn 1 (1 context messages)")
        frames = await run_turn(c, "b" * 600)
        status = next(f for f in frames if f["type"] == "status")
        # the 600-byte question fits; the older question and answer do not
        assert status["context_messages"] == 1
        assert answer_text(frames).startswith("Echo turn 1 (1 context messages): bbb")
        await c.close()
    run(body())


def test_repeated_typing_start_is_broadcast_once(server):
    async def body():
        a = await Client.connect(server)
        b = await Client.connect(server)
        sid = (await a.create_session())["session_id"]
        await b.send({"type": "join_session", "session_id": sid})
        await b.recv_until("session_joined")
        await a.recv_until("session_update", update_type="member_joined")
        for _ in range(5):
            await a.send({"type": "typing_start"})
        await a.send({"type": "typing_stop"})
        await a.ping()
        frames = await b.ping()
        frames += await b.drain(0.5)
        typing = [f for f in frames if f.get("update_type") == "user_typing"]
        assert [f["typing"] for f in typing] == [True, False]
        await a.close()
        await b.close()
    run(body())


def test_rejoin_at_session_cap_keeps_broadcasts(make_server):
    """With one session per connection, leave X then join Y must deliver Y's events even
    when Y's shard answers before X's."""
    srv = make_server("--max-conn-sessions", "1", "--shards", "4")

    async def body():
        sids = [http(srv, "POST", "/sessions/new").json()["session_id"] for _ in range(30)]
        c = await Client.connect(srv)
        cur = sids[0]
        await c.send({"type": "join_session", "session_id": cur})
        await c.recv_until("session_joined")
        for sid in sids[1:]:
            await c.send({"type": "leave_session", "session_id": cur})
            await c.send({"type": "join_session", "session_id": sid})
            await c.recv_until("session_joined", pred=lambda f: f.get("session_id") == sid)
            cur = sid
            o = await Client.connect(srv)
            await o.send({"type": "join_session", "session_id": sid})
            await o.recv_until("session_joined")
            await o.send({"type": "chat", "message": "hello " + sid})
            frames = await c.recv_until("response_complete", timeout=10)
            assert any(f.get("update_type") == "message_added" for f in frames)
            await o.close()
        await c.close()
    run(body(), timeout=40)


def test_unknown_multibyte_type_gets_valid_utf8_error(server):
    async def body():
        c = await Client.connect(server)
        await c.expect_error({"type": "a" + "é" * 20}, "UNKNOWN_TYPE")
        await c.ping()
        await c.close()
    run(body())
