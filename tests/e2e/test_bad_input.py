"""Bad input on /ws: an error frame with the right code, and the connection stays usable
(docs/protocol.md §1.4). Only a frame over --max-frame-hard closes it (1009)."""

import asyncio
import json

import pytest

from conftest import Client, connect, http, module_server, run, run_turn

# Small limits so that the size checks are cheap to hit.
small_server = module_server("--max-frame", "1024", "--max-frame-hard", "4096",
                             "--max-message", "256", "--max-pending", "1")


async def _error_then_usable(c, frame, code):
    err = await c.expect_error(frame, code)
    assert err["type"] == "error"
    frames = await c.ping(id_="after")
    assert frames[-1] == {"type": "pong", "id": "after"}
    return err


CASES = [
    # (name, frame as sent, expected code)
    ("invalid json", "{not json", "BAD_JSON"),
    ("truncated json", '{"type":"ping"', "BAD_JSON"),
    ("trailing garbage", '{"type":"ping"} x', "BAD_JSON"),
    ("empty frame", "", "BAD_JSON"),
    ("array", "[1,2,3]", "BAD_FRAME"),
    ("number", "42", "BAD_FRAME"),
    ("string", '"ping"', "BAD_FRAME"),
    ("null", "null", "BAD_FRAME"),
    ("no type", '{"message":"hi"}', "BAD_FRAME"),
    ("type not a string", '{"type":5}', "BAD_FRAME"),
    ("type null", '{"type":null}', "BAD_FRAME"),
    ("type object", '{"type":{"x":1}}', "BAD_FRAME"),
    ("unknown type", '{"type":"dance"}', "UNKNOWN_TYPE"),
    ("envelope type on /ws", '{"type":"join_room","data":{}}', "UNKNOWN_TYPE"),
    ("join without session_id", '{"type":"join_session"}', "MISSING_FIELD"),
    ("join session_id number", '{"type":"join_session","session_id":5}', "BAD_FRAME"),
    ("chat without message", '{"type":"chat"}', "MISSING_FIELD"),
    ("chat message number", '{"type":"chat","message":5}', "BAD_FRAME"),
    ("temperature string", '{"type":"chat","message":"hi","temperature":"hot"}', "BAD_FRAME"),
    ("temperature too high", '{"type":"chat","message":"hi","temperature":9}', "BAD_FRAME"),
    ("temperature negative", '{"type":"chat","message":"hi","temperature":-0.5}', "BAD_FRAME"),
    ("max_tokens zero", '{"type":"chat","message":"hi","max_tokens":0}', "BAD_FRAME"),
    ("max_tokens negative", '{"type":"chat","message":"hi","max_tokens":-3}', "BAD_FRAME"),
    ("max_tokens fraction", '{"type":"chat","message":"hi","max_tokens":1.5}', "BAD_FRAME"),
    ("max_tokens string", '{"type":"chat","message":"hi","max_tokens":"10"}', "BAD_FRAME"),
    ("session_id number", '{"type":"chat","message":"hi","session_id":12}', "BAD_FRAME"),
    ("empty message", '{"type":"chat","message":""}', "EMPTY_MESSAGE"),
    ("whitespace message", '{"type":"chat","message":" \\t\\n  "}', "EMPTY_MESSAGE"),
    ("create kind unknown", '{"type":"create_session","kind":"public"}', "BAD_FRAME"),
    ("create name number", '{"type":"create_session","name":3}', "BAD_FRAME"),
    ("id array", '{"type":"ping","id":[1]}', "BAD_FRAME"),
    ("id object", '{"type":"ping","id":{"a":1}}', "BAD_FRAME"),
    ("join last_seq negative", '{"type":"join_session","session_id":"x","last_seq":-1}',
     "BAD_FRAME"),
]


@pytest.mark.parametrize("frame,code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_frame_answered_and_connection_usable(server, frame, code):
    async def body():
        c = await connect(server)
        await _error_then_usable(c, frame, code)
        await c.close()
    run(body())


def test_many_bad_frames_on_one_connection(server):
    """The same connection survives every bad frame in a row and still holds a turn."""
    async def body():
        c = await connect(server)
        for _, frame, code in CASES:
            await _error_then_usable(c, frame, code)
        await c.create_session()
        await c.send({"type": "chat", "message": "still fine"})
        frames = await c.recv_until("response_complete")
        assert frames[-1]["finish_reason"] == "stop"
        await c.close()
    run(body())


def test_null_message_is_an_error(server):
    """A null ``message`` is either absent (MISSING_FIELD) or of the wrong type (BAD_FRAME);
    docs/protocol.md does not say which, so both are accepted."""
    async def body():
        c = await connect(server)
        await c.send({"type": "chat", "message": None})
        err = (await c.recv_until("error"))[-1]
        assert err["code"] in ("MISSING_FIELD", "BAD_FRAME"), err
        await c.ping()
        await c.close()
    run(body())


def test_bad_chat_creates_no_session(server):
    async def body():
        c = await connect(server)
        await c.expect_error({"type": "chat", "message": ""}, "EMPTY_MESSAGE")
        frames = await c.ping()
        assert not [f for f in frames if f["type"] == "session_created"], frames
        await c.expect_error({"type": "leave_session"}, "NOT_FOUND")
        await c.close()
    run(body())


def test_binary_frame_is_bad_frame(server):
    async def body():
        c = await connect(server)
        await _error_then_usable(c, b'{"type":"ping"}', "BAD_FRAME")
        await _error_then_usable(c, bytes(range(256)), "BAD_FRAME")
        await c.close()
    run(body())


@pytest.mark.parametrize("id_", [7, "req-7", 1.5, True])
def test_error_echoes_client_id(server, id_):
    async def body():
        c = await connect(server)
        err = await c.expect_error({"type": "join_session", "id": id_}, "MISSING_FIELD")
        assert "id" in err and err["id"] == id_, err
        err = await c.expect_error({"type": "nope", "id": id_}, "UNKNOWN_TYPE")
        assert err["id"] == id_, err
        err = await c.expect_error({"type": "chat", "message": "  ", "id": id_}, "EMPTY_MESSAGE")
        assert err["id"] == id_, err
        await c.close()
    run(body())


def test_error_without_id_has_no_id(server):
    async def body():
        c = await connect(server)
        err = await c.expect_error({"type": "join_session"}, "MISSING_FIELD")
        assert "id" not in err, err
        await c.close()
    run(body())


def test_cancel_with_nothing_streaming_and_read_of_unknown_message_are_errors(server):
    async def body():
        c = await connect(server)
        await c.create_session()
        err = await _error_then_usable(c, json.dumps({"type": "cancel", "id": 1}), "NOT_FOUND")
        assert err["id"] == 1
        await _error_then_usable(c, json.dumps({"type": "read", "message_id": "m1"}), "NOT_FOUND")  # no such message
        # Still a working session.
        await c.send({"type": "chat", "message": "after cancel"})
        frames = await c.recv_until("response_complete")
        assert frames[-1]["finish_reason"] == "stop"
        await c.close()
    run(body())


def test_cancel_while_streaming_stops_the_answer(make_server):
    srv = make_server("--echo-delay-ms", "30")

    async def body():
        c = await Client.connect(srv)
        sid = (await c.create_session())["session_id"]
        await c.send({"type": "chat", "message": " ".join(["word"] * 20)})
        frames = await c.recv_until("chunk")
        await c.send({"type": "cancel"})
        frames += await c.recv_until("response_complete", timeout=20)
        assert not [f for f in frames if f["type"] == "error"]
        done = frames[-1]
        assert done["finish_reason"] == "cancelled"
        assert done["total_chunks"] < 26
        partial = "".join(f["text"] for f in frames if f["type"] == "chunk")
        hist = http(srv, "GET", f"/sessions/{sid}").json()
        assert hist["messages"][-1]["role"] == "assistant"   # the partial answer is kept
        assert hist["messages"][-1]["content"] == partial
        # the session goes on: the next chat is answered in full
        frames = await run_turn(c, "again")
        assert frames[-1]["finish_reason"] == "stop"
        await c.ping()
        await c.close()
    run(body())


def test_deeply_nested_json(server):
    async def body():
        c = await connect(server)
        for frame in ("[" * 10000, "[" * 10000 + "]" * 10000, '{"a":' * 10000):
            await c.send_raw(frame)
            err = (await c.recv_until("error"))[-1]
            assert err["code"] in ("BAD_JSON", "BAD_FRAME"), err
            await c.ping()
        await c.close()
    run(body())
    assert http(server, "GET", "/health").status == 200


# --------------------------------------------------------------------------- sizes


def test_frame_over_max_frame_too_large_connection_stays(small_server):
    async def body():
        c = await Client.connect(small_server)
        big = json.dumps({"type": "chat", "message": "x" * 2000, "id": 5})
        assert 1024 < len(big) < 4096
        await c.expect_error(big, "TOO_LARGE")
        await c.ping()
        # The oversize frame did nothing: no session was created.
        await c.expect_error({"type": "leave_session"}, "NOT_FOUND")
        await c.close()
    run(body())


def test_message_over_max_message_too_large(small_server):
    async def body():
        c = await Client.connect(small_server)
        await c.create_session()
        frame = {"type": "chat", "message": "y" * 300, "id": "big"}
        assert len(json.dumps(frame)) < 1024
        err = await c.expect_error(frame, "TOO_LARGE")
        assert err["id"] == "big"
        await c.ping()
        # A message at the limit is fine.
        await c.send({"type": "chat", "message": "z" * 256})
        frames = await c.recv_until("response_complete")
        assert not [f for f in frames if f["type"] == "error"], frames
        await c.close()
    run(body())


def test_frame_at_max_frame_accepted(small_server):
    async def body():
        c = await Client.connect(small_server)
        frame = json.dumps({"type": "ping", "id": 1, "pad": ""})
        frame = frame[:-2] + "a" * (1024 - len(frame)) + '"}'
        assert len(frame) == 1024
        await c.send_raw(frame)
        pong = (await c.recv_until("pong"))[-1]
        assert pong["id"] == 1
        await c.close()
    run(body())


def test_frame_over_hard_limit_closes_1009(small_server):
    async def body():
        c = await Client.connect(small_server)
        await c.send_raw(json.dumps({"type": "chat", "message": "x" * 8000}))
        code = await c.closed_code(timeout=10)
        assert code == 1009, f"close code {code}"
        # The server is fine and takes new connections.
        d = await Client.connect(small_server)
        await d.ping()
        await d.close()
    run(body())
    assert http(small_server, "GET", "/health").status == 200


def test_fragmented_frame_over_hard_limit_closes_1009(small_server):
    """The hard limit holds for a message sent in many small fragments too."""
    async def body():
        c = await Client.connect(small_server)

        async def fragments():
            yield '{"type":"chat","message":"'
            for _ in range(10):                  # 5000 bytes: over the 4096 hard limit
                yield "x" * 500
            # Then stay silent, mid-message, until the server has closed the connection
            # (sending more after its close would only race its close frame with a TCP RST).
            await asyncio.sleep(15)
            yield '"}'
        sender = asyncio.ensure_future(c.ws.send(fragments()))
        try:
            code = await c.closed_code(timeout=10)
        finally:
            sender.cancel()
            try:
                await sender
            except BaseException:
                pass
        assert code == 1009, f"close code {code}"
    run(body())


def test_hard_limit_close_code_seen_while_client_keeps_sending(small_server):
    """A client still sending when the hard limit trips must still receive the 1009 close
    frame: the server has to keep reading (and discarding) after it sends its close instead
    of closing the socket with unread input, which makes the kernel send an RST that destroys
    the close frame (the client then sees 1006). Repeated, since it is a race."""
    async def once():
        c = await Client.connect(small_server)

        async def fragments():
            yield '{"type":"chat","message":"'
            for _ in range(20):                  # 10000 bytes against a 4096 hard limit
                yield "x" * 500
            yield '"}'
        try:
            await c.ws.send(fragments())
        except Exception:
            pass
        return await c.closed_code(timeout=10)

    async def body():
        codes = [await once() for _ in range(60)]
        assert set(codes) == {1009}, \
            f"{sum(x != 1009 for x in codes)} of {len(codes)} closes were not 1009: {sorted(set(codes))}"
    run(body())


def test_busy_on_small_server(small_server):
    async def body():
        c = await Client.connect(small_server)
        await c.create_session()
        text = " ".join(["w"] * 100)
        for i in range(8):
            await c.send({"type": "chat", "message": text, "id": i})
        frames = await c.recv_until("error", timeout=10)
        assert frames[-1]["code"] == "BUSY", frames[-1]
        await c.ping()
        await c.close()
    run(body())


def test_default_max_message_boundary(server):
    async def body():
        c = await connect(server)
        await c.create_session()
        await c.expect_error({"type": "chat", "message": "a" * 32769, "id": 1}, "TOO_LARGE")
        await c.ping()
        await c.send({"type": "chat", "message": "a" * 32768})
        frames = await c.recv_until("response_complete")
        assert not [f for f in frames if f["type"] == "error"]
        text = "".join(f["text"] for f in frames if f["type"] == "chunk")
        assert text == "Echo turn 1 (1 context messages): " + "a" * 32768
        await c.close()
    run(body())


def test_typing_without_session_not_found(server):
    async def body():
        c = await connect(server)
        await _error_then_usable(c, '{"type":"typing_start"}', "NOT_FOUND")
        await _error_then_usable(c, '{"type":"typing_stop"}', "NOT_FOUND")
        await c.close()
    run(body())


def test_overlong_session_id(server):
    async def body():
        c = await connect(server)
        await c.send({"type": "join_session", "session_id": "s" * 5000})
        err = (await c.recv_until("error"))[-1]
        assert err["code"] in ("NOT_FOUND", "BAD_FRAME"), err
        await c.ping()
        await c.close()
    run(body())


def test_overlong_client_id(server):
    """A huge correlation id is refused or echoed, never crashes the server."""
    async def body():
        c = await connect(server)
        await c.send({"type": "ping", "id": "i" * 10000})
        f = await c.recv()
        assert f["type"] in ("pong", "error"), f
        await c.ping()
        await c.close()
    run(body())
