"""Durability (docs/protocol.md §1.2–1.5, docs/architecture.md "Durability"): history across
restarts, resuming with last_seq (from the ring, from the store, across a restart), gaps,
SIGTERM with running answers, eviction and loading, read receipts.

Every test starts its own parleyd (conftest gives each its own database)."""

import asyncio
import signal

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import (SEQ_CRASH_SKIP, Client, answer_text, connect, echo_answer, echo_prefix, get_json,
                      is_number, is_seq_event, of_type, one, resume, run, run_turn,
                      seq_events, session_info, stats, wait_until)


def words(n, tag="w"):
    return " ".join(f"{tag}{i}" for i in range(n))


def seqs(frames):
    return [f["seq"] for f in frames]


def assert_contiguous(frames, first):
    got = seqs(frames)
    assert got == list(range(first, first + len(got))), f"seqs not contiguous from {first}: {got}"


def by_seq(client, session_id):
    """Every persistent event ``client`` received in ``session_id``, by seq (each once)."""
    out = {}
    for f in seq_events(client.frames, session_id):
        assert f["seq"] not in out, f"{client.name} got seq {f['seq']} twice"
        out[f["seq"]] = f
    return out


def user_texts(info):
    return [m["content"] for m in info["messages"] if m["role"] == "user"]


def check_pairs(info):
    """Each answer directly follows the question it answers (the echo model repeats it)."""
    msgs = info["messages"]
    for i, m in enumerate(msgs):
        if m["role"] == "assistant":
            assert i > 0 and msgs[i - 1]["role"] == "user", f"answer without its question at {i}: {msgs}"
            # an answer a kill cut short is stored "interrupted" with the words it had
            ok = (echo_prefix(m["content"], msgs[i - 1]["content"]) if m.get("finish_reason") == "interrupted"
                  else m["content"].endswith(": " + msgs[i - 1]["content"]))
            assert ok, f"answer {m['content']!r} does not answer {msgs[i - 1]['content']!r}"


# --------------------------------------------------------------------------- 1. restarts


def test_history_survives_sigterm_restart(make_server):
    """A clean stop keeps every session and message (ids, texts, timestamps, finish
    reasons); seq continues where it was (no jump); the model sees the old history."""
    srv = make_server()
    questions = [f"first session question {i}" for i in range(3)]
    queued = [f"queued question {i}" for i in range(3)]

    async def before():
        a = await connect(srv, name="a")
        s1 = (await a.create_session(name="one"))["session_id"]
        for i, q in enumerate(questions):
            frames = await run_turn(a, q, id=f"q{i}")
            assert answer_text(frames) == echo_answer(i + 1, 2 * i + 1, q)
            ack = one(frames, "delivery_confirmation")
            added = one(frames, "session_update", "message_added")
            assert ack == {"type": "delivery_confirmation", "message_id": added["message"]["id"],
                           "id": f"q{i}", "status": "stored", "session_id": s1}, ack
        b = await connect(srv, name="b")
        s2 = (await b.create_session(system_prompt="be brief"))["session_id"]
        for i, q in enumerate(queued):          # sent back to back: the turns queue
            await b.send({"type": "chat", "message": q, "id": i})
        frames = []
        while len(of_type(frames, "response_complete")) < 3 or \
                len(of_type(frames, "delivery_confirmation")) < 3:
            frames += await b.recv_until("response_complete" if len(of_type(frames, "response_complete")) < 3
                                         else "delivery_confirmation")
        last = {s1: seq_events(a.frames, s1)[-1]["seq"], s2: seq_events(b.frames, s2)[-1]["seq"]}
        await a.close()
        await b.close()
        return s1, s2, last

    s1, s2, last = run(before())
    st = stats(srv)["store"]
    assert st["acks"] == 6 and st["errors"] == 0 and st["sessions"] == 2, st
    assert st["commits"] >= 1 and st["rows"] >= st["commits"] and 1 <= st["batch_max"] <= st["rows"], st
    assert 0 < st["commit_us_max"] <= st["commit_us_total"], st
    saved = {sid: session_info(srv, sid) for sid in (s1, s2)}
    assert user_texts(saved[s1]) == questions and user_texts(saved[s2]) == queued
    srv.stop()
    srv.restart()

    health = get_json(srv, "/health")
    assert health["sessions_stored"] == 2 and health["sessions"] == 0, health
    listed = {s["session_id"]: s for s in get_json(srv, "/sessions")["sessions"]}
    assert listed[s1]["message_count"] == 6 and listed[s1]["name"] == "one", listed
    assert listed[s2]["message_count"] == 6, listed
    for sid in (s1, s2):
        info = session_info(srv, sid)
        assert info["messages"] == saved[sid]["messages"], f"history of {sid} changed across the restart"
        assert info["message_count"] == 6 and info["truncated"] is False, info
        assert [m["role"] for m in info["messages"]] == ["user", "assistant"] * 3
        assert all(m["finish_reason"] == "stop" for m in info["messages"] if m["role"] == "assistant")
        check_pairs(info)
    assert stats(srv)["sessions"]["loaded"] >= 2

    async def after():
        c = await connect(srv, name="c")
        joined = await c.join(s1)
        assert joined["seq"] == last[s1], f"seq moved across a clean restart: {joined} vs {last[s1]}"
        assert joined["message_count"] == 6
        frames = await run_turn(c, "fourth")
        added = one(frames, "session_update", "message_added")
        assert added["seq"] == last[s1] + 1 and added["message_count"] == 7, added
        assert answer_text(frames) == echo_answer(4, 7, "fourth")
        await c.close()
    run(after())


async def _chat_until_killed(srv, c, sid, tag, state, stop):
    """Chats "tag-mN" back to back (the next when the previous is confirmed stored) until
    the connection dies. state: sent, acked (texts, in order), last (newest seq seen)."""
    n = 0
    try:
        while not stop.is_set():
            text = f"{tag}-m{n}"
            await c.send({"type": "chat", "message": text, "id": n})
            state["sent"].append(text)
            while True:
                f = await c.recv(timeout=10)
                if is_seq_event(f) and f.get("session_id") == sid:
                    assert f["seq"] > state["last"], f"seq went back: {f} after {state['last']}"
                    state["last"] = f["seq"]
                if f["type"] == "error":
                    raise AssertionError(f"error while chatting: {f}")
                if f["type"] == "delivery_confirmation" and f.get("status") == "stored":
                    assert f["id"] == n and f["session_id"] == sid, f
                    state["acked"].append(text)
                    break
            n += 1
    except (ConnectionClosed, OSError):          # the kill
        if not stop.is_set():
            raise


def test_history_survives_sigkill(make_server):
    """SIGKILL mid-traffic: after the restart every message confirmed "stored" is in the
    history, in send order, exactly once; nothing unknown appears; each answer follows its
    question; seq jumps past anything the dead process may have sent."""
    srv = make_server("--max-pending", "1000")
    tags = ["k0", "k1"]

    async def traffic():
        clients = await connect(srv, 2, name="k")
        sids = [(await c.create_session())["session_id"] for c in clients]
        states = [{"sent": [], "acked": [], "last": 0} for _ in clients]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_chat_until_killed(srv, c, sid, tag, st, stop))
                 for c, sid, tag, st in zip(clients, sids, tags, states)]
        await asyncio.sleep(0.7)
        stop.set()
        srv.kill()
        await asyncio.gather(*tasks)
        return sids, states

    sids, states = run(traffic())
    srv.restart()
    for sid, tag, st in zip(sids, tags, states):
        assert len(st["acked"]) >= 5, f"too little traffic before the kill: {st}"
        info = session_info(srv, sid)
        texts = user_texts(info)
        ids = [m["id"] for m in info["messages"]]
        assert len(ids) == len(set(ids)), "duplicate message ids"
        assert len(texts) == len(set(texts)), f"duplicate messages: {texts}"
        assert set(texts) <= set(st["sent"]), f"unknown messages: {set(texts) - set(st['sent'])}"
        missing = [t for t in st["acked"] if t not in texts]
        assert not missing, f"acknowledged but lost: {missing}"
        order = [int(t.split("-m")[1]) for t in texts]
        assert order == sorted(order), f"history out of send order: {texts}"
        # what is stored is a prefix of what was sent (the store writes in order)
        assert texts == st["sent"][:len(texts)], (texts, st["sent"])
        check_pairs(info)
        assert info["message_count"] == len(info["messages"])

    async def after():
        for sid, st in zip(sids, states):
            c = await connect(srv, name="after")
            joined = await c.join(sid)
            assert joined["seq"] > st["last"] and joined["seq"] >= SEQ_CRASH_SKIP, \
                f"seq did not jump past the crash: {joined} (last seen {st['last']})"
            frames = await run_turn(c, "after the crash")
            added = one(frames, "session_update", "message_added")
            assert added["seq"] == joined["seq"] + 1
            await c.close()
    run(after())


# --------------------------------------------------------------------------- 2. resuming


async def _drop_mid_answer(srv, n_words, drop_at, rejoin_at):
    """A and B in a session; A asks for a long answer; B drops after chunk ``drop_at`` and
    rejoins (a new connection, last_seq) once A has seen chunk ``rejoin_at``. Checks the
    exactly-once contract and returns (replayed frames, session_joined)."""
    msg = words(n_words)
    full = echo_answer(1, 1, msg)
    a = await connect(srv, name="a")
    b = await connect(srv, name="b")
    sid = (await a.create_session())["session_id"]
    await b.join(sid)
    await a.send({"type": "chat", "message": msg, "id": 1})
    b_before = await b.recv_until("chunk", pred=lambda f: f["chunk_number"] >= drop_at)
    await b.close()
    last = seq_events(b_before, sid)[-1]["seq"]
    await a.recv_until("chunk", pred=lambda f: f["chunk_number"] >= rejoin_at)

    b2 = await connect(srv, name="b2")
    replayed, joined = await resume(b2, sid, last)
    live = await b2.recv_until("response_complete")
    await a.recv_until("response_complete")
    if not of_type(a.frames, "delivery_confirmation"):
        await a.recv_until("delivery_confirmation")

    a_ev = by_seq(a, sid)
    # the replay: persistent events only, each exactly as first sent, then session_joined
    assert all(is_seq_event(f) for f in replayed), replayed
    assert joined["replayed"] == len(replayed), (joined, len(replayed))
    assert not joined.get("gap"), joined
    assert_contiguous(replayed, last + 1)
    for f in replayed:
        assert f == a_ev[f["seq"]], f"replayed frame differs from the original:\n{f}\n{a_ev[f['seq']]}"
    assert joined["seq"] == (replayed[-1]["seq"] if replayed else last)
    # live events follow with no gap: the rest of the answer
    live_ev = seq_events(live, sid)
    assert of_type(live_ev, "chunk"), "no live chunk after session_joined: rejoined too late"
    assert_contiguous(live_ev, joined["seq"] + 1)
    for f in live_ev:
        assert f == a_ev[f["seq"]]
    # across the drop: every event once, in order; the answer exactly once
    b_all = seq_events(b_before, sid) + replayed + live_ev
    assert_contiguous(b_all, 1)
    assert b_all[-1]["seq"] == max(a_ev), "B did not get up to A's newest event"
    chunks = of_type(b_all, "chunk")
    assert [c["chunk_number"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert "".join(c["text"] for c in chunks) == full == answer_text(a.frames)
    assert b_all[-1]["type"] == "response_complete" and b_all[-1]["finish_reason"] == "stop"
    for c in (a, b2):
        await c.close()
    return replayed, joined


def test_resume_mid_answer_from_the_ring(make_server):
    """B drops mid-answer and rejoins while it still streams: the missed chunks come from the
    in-memory ring, then the rest live; B's text is the whole answer exactly once."""
    srv = make_server("--echo-delay-ms", "20")
    replayed, joined = run(_drop_mid_answer(srv, 60, drop_at=8, rejoin_at=25))
    assert len(replayed) >= 15
    st = stats(srv)["resume"]
    assert st["requests"] == 1 and st["events"] == len(replayed) and st["gaps"] == 0, st


def test_resume_mid_answer_from_the_store(make_server):
    """The same with --replay-ring 16 and a drop early in a long answer: more than 16 events
    were missed, so the replay comes (at least partly) from the store."""
    srv = make_server("--echo-delay-ms", "20", "--replay-ring", "16")
    replayed, joined = run(_drop_mid_answer(srv, 60, drop_at=3, rejoin_at=35))
    assert len(replayed) > 16, "the missed events fit the ring: the store path was not exercised"
    st = stats(srv)["resume"]
    assert st["requests"] == 1 and st["events"] == len(replayed) and st["gaps"] == 0, st


def test_resume_across_a_restart(make_server):
    """B drops mid-answer; A finishes it and asks again; SIGTERM, restart; B resumes with its
    last seq: everything after it is replayed from the store, exactly as first sent, then
    live events continue from the same seq (a clean stop does not jump)."""
    srv = make_server("--echo-delay-ms", "5")
    msg = words(100)

    async def before():
        a = await connect(srv, name="a")
        b = await connect(srv, name="b")
        sid = (await a.create_session())["session_id"]
        await b.join(sid)
        await a.send({"type": "chat", "message": msg, "id": 1})
        b_before = await b.recv_until("chunk", pred=lambda f: f["chunk_number"] >= 5)
        await b.close()
        await a.recv_until("response_complete")
        if not of_type(a.frames, "delivery_confirmation"):
            await a.recv_until("delivery_confirmation")
        await run_turn(a, "second question")
        srv.send_signal(signal.SIGTERM)
        assert await a.closed_code() == 1001
        return sid, seq_events(b_before, sid), by_seq(a, sid)

    sid, b_before, a_ev = run(before())
    srv.stop()
    srv.restart()

    async def after():
        last = b_before[-1]["seq"]
        b2 = await connect(srv, name="b2")
        replayed, joined = await resume(b2, sid, last)
        assert [f["seq"] for f in replayed] == [s for s in sorted(a_ev) if s > last]
        for f in replayed:
            assert f == a_ev[f["seq"]], f"replayed after restart differs:\n{f}\n{a_ev[f['seq']]}"
        assert joined["replayed"] == len(replayed) and not joined.get("gap"), joined
        assert joined["seq"] == max(a_ev), "seq changed across a clean restart"
        chunks = of_type(b_before + replayed, "chunk")
        rid = b_before[-1]["response_id"]
        assert "".join(c["text"] for c in chunks if c["response_id"] == rid) == echo_answer(1, 1, msg)
        # live: A comes back and asks a third question; B sees it, seq continuing
        a2 = await connect(srv, name="a2")
        await a2.join(sid)
        frames = await run_turn(a2, "third question")
        assert answer_text(frames) == echo_answer(3, 5, "third question")
        live = seq_events(await b2.recv_until("response_complete"), sid)
        assert_contiguous(live, joined["seq"] + 1)
        assert live == seq_events(frames, sid)
        st = stats(srv)
        assert st["resume"]["events"] == len(replayed) and st["sessions"]["loaded"] == 1, st
        await a2.close()
        await b2.close()
    run(after())


# --------------------------------------------------------------------------- 3. gaps


def test_resume_gap_when_events_were_pruned(make_server):
    """--replay-events 100 and more than 1024 events: a resume from seq 1 gets the history and
    gap:true; the newest 100 are still replayed (from the store: ring 16); a last_seq the
    server never reached is a gap too; live events follow a gap."""
    srv = make_server("--replay-events", "100", "--replay-ring", "16", "--echo-delay-ms", "0")
    body = words(60)

    async def go():
        a = await connect(srv, name="a")
        sid = (await a.create_session())["session_id"]
        n = 0
        while seq_events(a.frames, sid)[-1:] == [] or seq_events(a.frames, sid)[-1]["seq"] < 1100:
            await run_turn(a, f"q{n} {body}")
            n += 1
        current = seq_events(a.frames, sid)[-1]["seq"]
        a_ev = by_seq(a, sid)
        assert current < 2048
        info = session_info(srv, sid)

        c = await connect(srv, name="c")
        frames, joined = await resume(c, sid, 1)
        assert joined.get("gap") is True and joined["replayed"] == 0 and joined["seq"] == current, joined
        h = one(frames, "history")
        assert h["session_id"] == sid and h["seq"] == current and h["message_count"] == 2 * n, h
        assert h["messages"] == info["messages"] and h["truncated"] is False
        assert not seq_events(frames), "events replayed along with a gap"

        d = await connect(srv, name="d")
        frames, joined = await resume(d, sid, current - 100)
        assert not joined.get("gap") and joined["replayed"] == 100, joined
        assert [f["seq"] for f in frames] == list(range(current - 99, current + 1))
        assert all(f == a_ev[f["seq"]] for f in frames)

        e = await connect(srv, name="e")
        frames, joined = await resume(e, sid, current + 1000)
        assert joined.get("gap") is True and joined["seq"] == current, joined
        assert one(frames, "history")["message_count"] == 2 * n

        st = stats(srv)["resume"]
        assert st["gaps"] == 2 and st["requests"] == 3, st
        # after a gap the connection is a member: live events follow
        frames = await run_turn(a, "live after the gap")
        live = seq_events(await c.recv_until("response_complete"), sid)
        assert_contiguous(live, current + 1)
        assert live == seq_events(frames, sid)
        for x in (a, c, d, e):
            await x.close()
    run(go(), timeout=40)


def test_gap_while_an_answer_streams(make_server):
    """A gap resume during an answer: history (the question, no answer yet), that answer's
    response_start and one chunk with the text so far, session_joined gap, then the rest."""
    srv = make_server("--echo-delay-ms", "20")
    msg = words(40)

    async def go():
        a = await connect(srv, name="a")
        sid = (await a.create_session())["session_id"]
        await a.send({"type": "chat", "message": msg, "id": 1})
        await a.recv_until("chunk", pred=lambda f: f["chunk_number"] >= 8)
        c = await connect(srv, name="c")
        frames, joined = await resume(c, sid, 10 ** 9)
        assert joined.get("gap") is True, joined
        h = one(frames, "history")
        assert [m["content"] for m in h["messages"]] == [msg] and h["message_count"] == 1, h
        start, so_far = one(frames, "response_start"), one(frames, "chunk")
        await a.recv_until("response_complete")
        a_ev = by_seq(a, sid)
        assert start == a_ev[start["seq"]]
        assert so_far["response_id"] == start["response_id"]
        orig = a_ev[so_far["seq"]]
        assert orig["type"] == "chunk" and so_far["chunk_number"] == orig["chunk_number"]
        assert so_far["text"] == "".join(f["text"] for s, f in sorted(a_ev.items())
                                         if f["type"] == "chunk" and s <= so_far["seq"])
        live = seq_events(await c.recv_until("response_complete"), sid)
        assert_contiguous(live, joined["seq"] + 1)
        assert so_far["text"] + "".join(f["text"] for f in of_type(live, "chunk")) == echo_answer(1, 1, msg)
        await a.close()
        await c.close()
    run(go())


def test_resume_from_a_seq_lost_in_a_crash_is_a_gap(make_server):
    """Events the dead process broadcast but never committed are gone. A client that saw
    them resumes from a seq the store never had: it must get the history and gap:true —
    not the new events as if it had missed nothing (its view holds a message that no
    longer exists). --commit-ms 1000 keeps the last events uncommitted until the kill."""
    srv = make_server("--commit-ms", "1000")

    async def before():
        a = await connect(srv, name="a")
        b = await connect(srv, name="b")
        sid = (await a.create_session())["session_id"]
        await b.join(sid)
        await run_turn(a, "kept")
        await b.recv_until("response_complete")
        await asyncio.sleep(1.3)                 # the batch with the answer commits
        await a.send({"type": "chat", "message": "lost", "id": 2})
        await b.recv_until("response_complete")
        srv.kill()                               # well before the next commit
        return sid, seq_events(b.frames, sid)[-1]["seq"]

    sid, last = run(before())
    srv.restart()
    info = session_info(srv, sid)
    assert user_texts(info) == ["kept"], f"precondition: 'lost' must not be stored: {info['messages']}"

    async def after():
        a2 = await connect(srv, name="a2")
        joined = await a2.join(sid)
        assert joined["seq"] > last
        await run_turn(a2, "after the crash")
        b2 = await connect(srv, name="b2")
        frames, joined = await resume(b2, sid, last)
        assert joined.get("gap") is True, \
            f"resumed from lost seq {last} without a gap; replayed {[(f['type'], f['seq']) for f in frames]}"
        h = one(frames, "history")
        assert [m["content"] for m in h["messages"] if m["role"] == "user"] == ["kept", "after the crash"]
        await a2.close()
        await b2.close()
    run(after())


# --------------------------------------------------------------------------- 5. SIGTERM


LONGS = [words(100, tag=f"l{i}x") for i in range(3)]
SHORT = "short answer"


def _sigterm_with_answers_running(srv):
    """Long answers stream in three sessions (--echo-delay-ms 50: ~5 s each) and a short
    one (~0.35 s) has just started when SIGTERM comes (--shutdown-grace 1). New
    connections must be refused meanwhile; exit status 0. Returns, per session (the three
    long ones, then the short one): (sid, what its client saw: (response_complete or None,
    answer text, close code), the stored answer after a restart)."""

    async def observe(c):
        try:
            while True:
                await c.recv(timeout=10)         # keeps every frame in c.frames
        except ConnectionClosed:
            pass
        code = await c.closed_code(timeout=5)
        done = of_type(c.frames, "response_complete")
        return (done[-1] if done else None), answer_text(c.frames), code

    async def go():
        cs = await connect(srv, 3, name="long")
        sids = [(await c.create_session())["session_id"] for c in cs]
        for c, m in zip(cs, LONGS):
            await c.send({"type": "chat", "message": m, "id": 1})
        for c in cs:
            await c.recv_until("chunk", pred=lambda f: f["chunk_number"] >= 3)
        s = await connect(srv, name="short")
        ssid = (await s.create_session())["session_id"]
        await s.send({"type": "chat", "message": SHORT, "id": 1})
        await s.recv_until("response_start")
        srv.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        with pytest.raises(Exception):
            await Client.connect(srv, name="late", timeout=2)
        seen = await asyncio.gather(*[observe(c) for c in cs + [s]])
        return sids + [ssid], seen

    sids, seen = run(go())
    srv.check_exit(srv.wait())
    srv.restart()
    out = []
    for sid, m, saw in zip(sids, LONGS + [SHORT], seen):
        msgs = session_info(srv, sid)["messages"]
        assert [x["role"] for x in msgs] == ["user", "assistant"] and msgs[0]["content"] == m, msgs
        out.append((sid, saw, msgs[1]))
    return out


def test_sigterm_interrupts_long_answers_and_stores_them(make_server):
    """SIGTERM with answers running: exit 0, clients closed with 1001; after the restart the
    history holds the long answers' partial text with finish_reason "interrupted" (at least
    what the clients saw) and the short one, finished within the grace, whole ("stop")."""
    srv = make_server("--echo-delay-ms", "50", "--shutdown-grace", "1")
    got = _sigterm_with_answers_running(srv)
    for i, (sid, (done, text, code), stored) in enumerate(got[:3]):
        assert stored["finish_reason"] == "interrupted", stored
        partial, full = stored["content"], echo_answer(1, 1, LONGS[i])
        assert 0 < len(partial) < len(full) and full.startswith(partial), partial
        assert partial.startswith(text), (partial, text)
        assert code == 1001, code
    sid, (done, text, code), stored = got[3]
    assert stored["finish_reason"] == "stop" and stored["content"] == echo_answer(1, 1, SHORT), stored
    assert code == 1001


def test_sigterm_clients_see_response_complete_before_1001(make_server):
    """The same stop, as clients see it: each gets response_complete ("interrupted" for the
    long answers, "stop" for the short one) before the 1001 close, and the stored partial
    answer is exactly the text it was sent."""
    srv = make_server("--echo-delay-ms", "50", "--shutdown-grace", "1")
    got = _sigterm_with_answers_running(srv)
    for i, (sid, (done, text, code), stored) in enumerate(got):
        want = "stop" if i == 3 else "interrupted"
        assert done is not None and done["finish_reason"] == want, \
            f"session {sid}: closed {code} without response_complete ({want}); text seen ends {text[-30:]!r}"
        assert text == stored["content"]


# --------------------------------------------------------------------------- 6. eviction


def test_idle_session_is_evicted_and_reloaded(make_server):
    """--cleanup-interval 1: a session nobody is in leaves memory; GET loads it with its
    history; a join loads it with seq continuing and the model seeing the old turns; a
    resume of an evicted session replays from the store."""
    srv = make_server("--cleanup-interval", "1")

    def evicted(n):
        return lambda: stats(srv)["sessions"]["evicted"] >= n and get_json(srv, "/health")["sessions"] == 0

    async def go():
        a = await connect(srv, name="a")
        sid = (await a.create_session())["session_id"]
        await run_turn(a, "one")
        await run_turn(a, "two")
        last = seq_events(a.frames, sid)[-1]["seq"]
        await a.close()
        await wait_until(evicted(1), timeout=8, what="first eviction")

        info = session_info(srv, sid)
        assert user_texts(info) == ["one", "two"] and info["message_count"] == 4
        st = stats(srv)["sessions"]
        assert st["loaded"] == 1 and get_json(srv, "/health")["sessions"] == 1, st
        await wait_until(evicted(2), timeout=8, what="second eviction")

        b = await connect(srv, name="b")
        joined = await b.join(sid)
        assert joined["seq"] == last and joined["message_count"] == 4, joined
        frames = await run_turn(b, "three")
        assert one(frames, "session_update", "message_added")["seq"] == last + 1
        assert answer_text(frames) == echo_answer(3, 5, "three")
        assert stats(srv)["sessions"]["loaded"] == 2
        await b.close()
        await wait_until(evicted(3), timeout=8, what="third eviction")

        c = await connect(srv, name="c")
        replayed, joined = await resume(c, sid, last)
        assert replayed == seq_events(b.frames, sid) and joined["replayed"] == len(replayed)
        assert stats(srv)["sessions"]["loaded"] == 3
        await c.close()
    run(go(), timeout=40)


# --------------------------------------------------------------------------- 7. read receipts


def test_read_receipt_is_broadcast_stored_and_replayed(make_server):
    """B reads A's message: every member gets the receipt (a persistent event: it advances
    seq); unknown message → NOT_FOUND; C, away meanwhile, gets it replayed on resume, from
    memory and after a restart from the store."""
    srv = make_server()

    async def go():
        a, b, c = await connect(srv, 3, name="r")
        sid = (await a.create_session())["session_id"]
        await b.join(sid)
        await c.join(sid)
        frames = await run_turn(a, "please read me")
        mid = one(frames, "session_update", "message_added")["message"]["id"]
        await b.recv_until("response_complete")
        await c.recv_until("response_complete")
        last = seq_events(c.frames, sid)[-1]["seq"]
        await c.close()
        await b.send({"type": "read", "message_id": mid})
        is_receipt = lambda f: f.get("status") == "read"  # noqa: E731
        ra = (await a.recv_until("delivery_confirmation", pred=is_receipt))[-1]
        rb = (await b.recv_until("delivery_confirmation", pred=is_receipt))[-1]
        assert ra == rb
        assert ra["message_id"] == mid and ra["reader"] == b.connection_id, ra
        assert ra["session_id"] == sid and ra["seq"] == last + 1 and is_number(ra["timestamp"]), ra
        await b.expect_error({"type": "read", "message_id": "m0000000000000000"}, "NOT_FOUND")
        c2 = await connect(srv, name="c2")
        replayed, joined = await resume(c2, sid, last)
        assert replayed == [ra] and joined["replayed"] == 1, (replayed, joined)
        # the receipt advanced seq: the next event follows it
        frames = await run_turn(a, "next")
        assert one(frames, "session_update", "message_added")["seq"] == ra["seq"] + 1
        for x in (a, b, c2):
            await x.close()
        return sid, last, ra

    sid, last, ra = run(go())
    srv.stop()
    srv.restart()

    async def after():
        d = await connect(srv, name="d")
        replayed, joined = await resume(d, sid, last)
        assert replayed[0] == ra and joined["replayed"] == len(replayed)
        await d.close()
    run(after())


def test_answer_cut_by_sigkill_is_closed_as_interrupted_after_restart(make_server):
    """An answer streaming when the server is killed: after the restart its stored text
    is in the history as an "interrupted" answer, and a client resuming from inside it
    gets the stored chunks and then response_complete with finish_reason "interrupted"."""
    srv = make_server("--echo-delay-ms", "5")
    question = words(300)

    async def body():
        a = await Client.connect(srv, name="a")
        sid = (await a.create_session(kind="shared"))["session_id"]
        await a.send({"type": "chat", "message": question})
        start = (await a.recv_until("response_start", timeout=10))[-1]
        seen = await a.recv_until("chunk", timeout=10, pred=lambda f: f["chunk_number"] >= 150)
        streamed = "".join(f["text"] for f in of_type(seen, "chunk"))
        await asyncio.sleep(0.1)     # the first two rows of 64 chunks are committed
        srv.kill()
        srv.restart()

        info = session_info(srv, sid)
        answer = info["messages"][-1]
        assert answer["role"] == "assistant" and answer["finish_reason"] == "interrupted", answer
        assert len(answer["content"]) > 0 and streamed.startswith(answer["content"])
        assert info["messages"][-2]["content"] == question

        b = await Client.connect(srv, name="b")
        replay, joined = await resume(b, sid, start["seq"])
        assert "gap" not in joined, joined
        chunks = of_type(replay, "chunk")
        assert "".join(c["text"] for c in chunks) == answer["content"]
        done = replay[-1]
        assert done["type"] == "response_complete" and done["finish_reason"] == "interrupted", done
        assert done["response_id"] == start["response_id"]
        assert done["seq"] > start["seq"] + SEQ_CRASH_SKIP - 1
        assert joined["seq"] == done["seq"]
        # The session goes on: a new turn sees the interrupted answer in its context.
        frames = await run_turn(b, "after the crash")
        assert answer_text(frames) == echo_answer(2, 3, "after the crash")
        await a.close()
        await b.close()
    run(body())
