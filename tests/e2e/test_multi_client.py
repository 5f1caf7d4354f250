"""Many clients: shared sessions see the same stream; many sessions run side by side."""

import asyncio
import time

from conftest import (answer_text, check_seq, collect_turn, connect, echo_answer, of_type, one,
                      run, run_turn)


async def _shared_session(server, n):
    """n connected clients, all members of one shared session created by the first."""
    clients = await connect(server, n)
    owner = clients[0]
    sid = (await owner.create_session(kind="shared", name=f"room of {n}"))["session_id"]
    for i, c in enumerate(clients[1:], start=2):
        joined = await c.join(sid)
        assert joined["members"] == i
    # Everyone already in the room saw each later join; consume those.
    for i, c in enumerate(clients[:-1]):
        for _ in range(n - 1 - i):
            await c.recv_until("session_update", "member_joined")
    return clients, sid


def _stream_signature(frames):
    """What every member must see identically: the turn's events from message_added on."""
    sig = []
    for f in frames:
        if f["type"] == "session_update" and f.get("update_type") == "message_added":
            sig.append(("message_added", f["message"]["id"], f["message"]["content"], f["seq"]))
        elif f["type"] in ("status", "response_start", "response_complete"):
            sig.append((f["type"], f.get("response_id"), f["seq"]))
        elif f["type"] == "chunk":
            sig.append(("chunk", f["response_id"], f["chunk_number"], f["text"], f["is_final"], f["seq"]))
    return sig


async def _turn_seen_by_all(clients, sid, sender_index, text, turn, context):
    sender = clients[sender_index]
    sent = await run_turn(sender, text)
    rid = one(sent, "response_start")["response_id"]
    expected = _stream_signature(sent)
    assert answer_text(sent) == echo_answer(turn, context, text)
    others = [c for i, c in enumerate(clients) if i != sender_index]
    seen = await asyncio.gather(*[collect_turn(c, response_id=rid) for c in others])
    for c, frames in zip(others, seen):
        assert not of_type(frames, "delivery_confirmation"), "only the sender is confirmed"
        ma = one(frames, "session_update", "message_added")
        assert ma["session_id"] == sid
        assert ma["message"]["connection_id"] == sender.connection_id
        assert ma["message"]["content"] == text
        assert one(frames, "response_start")["response_id"] == rid
        assert _stream_signature(frames) == expected, f"client {c.name} saw a different stream"
        assert answer_text(frames, rid) == echo_answer(turn, context, text)
        rc = frames[-1]
        assert rc["response_id"] == rid and rc["finish_reason"] == "stop"
        check_seq(frames, session_id=sid)


def test_two_clients_share_a_stream(server):
    async def body():
        clients, sid = await _shared_session(server, 2)
        await _turn_seen_by_all(clients, sid, 0, "hello from a", 1, 1)
        await _turn_seen_by_all(clients, sid, 1, "hello from b", 2, 3)
        for c in clients:
            await c.close()
    run(body())


def test_ten_clients_share_a_stream(server):
    async def body():
        clients, sid = await _shared_session(server, 10)
        await _turn_seen_by_all(clients, sid, 0, "first words", 1, 1)
        await _turn_seen_by_all(clients, sid, 7, "from member seven", 2, 3)
        await _turn_seen_by_all(clients, sid, 9, "and the last one", 3, 5)
        for c in clients:
            await c.close()
    run(body(), timeout=40)


def test_typing_reaches_all_others(server):
    async def body():
        clients, sid = await _shared_session(server, 10)
        typer = clients[3]
        others = [c for c in clients if c is not typer]
        for flag, kind in ((True, "typing_start"), (False, "typing_stop")):
            await typer.send({"type": kind, "session_id": sid})
            got = await asyncio.gather(*[c.recv_until("session_update", "user_typing")
                                         for c in others])
            for frames in got:
                t = frames[-1]
                assert t["typing"] is flag
                assert t["connection_id"] == typer.connection_id
                assert t["session_id"] == sid
        extra = await typer.drain(0.3)
        assert not of_type(extra, "session_update", "user_typing"), extra
        for c in clients:
            await c.close()
    run(body())


def test_late_joiner_sees_rest_of_stream(make_server):
    srv = make_server("--echo-delay-ms", "40")

    async def body():
        a = await connect(srv, name="a")
        sid = (await a.create_session(kind="shared"))["session_id"]
        words = " ".join(f"w{i}" for i in range(30))
        await a.send({"type": "chat", "message": words})
        await a.recv_until("chunk", timeout=10)
        b = await connect(srv, name="b")
        joined = await b.join(sid)
        assert joined["members"] == 2
        a_frames = await a.recv_until("response_complete", timeout=20)
        b_frames = await b.recv_until("response_complete", timeout=20)
        assert a_frames[-1]["response_id"] == b_frames[-1]["response_id"]
        b_chunks = of_type(b_frames, "chunk")
        assert b_chunks, "a member who joined mid-answer sees the rest of the stream"
        assert b_chunks[-1]["is_final"] is True
        # Chunks the late joiner got are a suffix of the stream, numbered consecutively.
        nums = [ch["chunk_number"] for ch in b_chunks]
        assert nums == list(range(nums[0], nums[0] + len(nums)))
        assert nums[-1] == b_frames[-1]["total_chunks"]
        await a.close()
        await b.close()
    run(body())


def test_two_hundred_clients_three_turns_each(server):
    n = 200

    async def conversation(c, i):
        created = await c.create_session()
        last = created["seq"]
        for k in range(1, 4):
            text = f"client {i} says {k}"
            frames = await run_turn(c, text, timeout=45)
            got = answer_text(frames)
            assert got == echo_answer(k, 2 * k - 1, text), f"client {i} turn {k}: {got!r}"
            assert all(f.get("session_id") == created["session_id"]
                       for f in frames if f["type"] in ("chunk", "response_complete"))
            last = check_seq(frames, after=last)
        return True

    async def body():
        t0 = time.monotonic()
        clients = await connect(server, n, name="load", batch=50)
        t_connected = time.monotonic() - t0
        results = await asyncio.gather(*[conversation(c, i) for i, c in enumerate(clients)])
        assert all(results)
        await asyncio.gather(*[c.close() for c in clients])
        elapsed = time.monotonic() - t0
        assert elapsed < 55, f"200 clients x 3 turns took {elapsed:.1f}s (connect {t_connected:.1f}s)"
        print(f"200 clients x 3 turns: {elapsed:.2f}s (connect {t_connected:.2f}s)")

    run(body(), timeout=58)


def test_two_members_chat_at_once(make_server):
    srv = make_server("--echo-delay-ms", "10")

    async def body():
        clients, sid = await _shared_session(srv, 3)
        a, b, watcher = clients
        await asyncio.gather(a.send({"type": "chat", "message": "from a"}),
                             b.send({"type": "chat", "message": "from b"}))
        seen = await asyncio.gather(*[_two_turns(c) for c in clients])
        orders = []
        for c, frames in zip(clients, seen):
            assert not of_type(frames, "error"), of_type(frames, "error")
            starts = of_type(frames, "response_start")
            assert len(starts) == 2
            texts = [answer_text(frames, s["response_id"]) for s in starts]
            orders.append(texts)
            # Whichever came first is turn 1; the other sees it in its context.
            first, second = texts
            assert first.startswith("Echo turn 1 (1 context messages): from ")
            assert second.startswith("Echo turn 2 (3 context messages): from ")
            assert {first[-6:], second[-6:]} == {"from a", "from b"}
            check_seq(frames, session_id=sid)
        assert orders[0] == orders[1] == orders[2], "members saw the turns in different orders"
        for c in clients:
            await c.close()
    run(body())


async def _two_turns(c):
    frames = await c.recv_until("response_complete", timeout=15)
    frames += await c.recv_until("response_complete", timeout=15)
    return frames


def test_slow_reader_does_not_delay_others(make_server):
    """A member that stops reading must not hold up the stream for the others."""
    srv = make_server("--echo-delay-ms", "1", "--out-queue", "256")

    async def body():
        clients, sid = await _shared_session(srv, 2)
        fast, slow = clients
        text = " ".join(f"word{i}" for i in range(3000))
        t0 = time.monotonic()
        frames = await run_turn(fast, text, timeout=30)
        elapsed = time.monotonic() - t0
        assert frames[-1]["finish_reason"] == "stop"
        assert frames[-1]["total_chunks"] == len(of_type(frames, "chunk"))
        assert elapsed < 20, f"the fast reader waited {elapsed:.1f}s"
        # The server is still responsive to everyone else.
        other = await connect(srv)
        await other.ping()
        await other.close()
        await fast.close()
        try:
            await slow.close()
        except Exception:
            pass
    run(body(), timeout=40)
