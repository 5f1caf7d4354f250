"""Real model backends through libcurl, against the fake upstream on loopback
(tests/fake_upstream): OpenAI-compatible, Gemini and Ollama wire formats, multi-turn
context, system prompts, usage, and faults turned into a clean end of the turn."""

import asyncio
import json
import os
import socket
import sys
import tempfile

import pytest

from conftest import Client, answer_text, http, run, run_turn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fake_upstream"))
from fake_upstream import FakeUpstream  # noqa: E402

KEY = "sk-parley-test-0123456789"


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def upstream():
    up = FakeUpstream(api_key=KEY, delay_ms=2)
    up.start()
    yield up
    up.stop()


@pytest.fixture
def llm_server(upstream, make_server):
    models = [
        {"name": "fake-openai", "backend": "openai", "base_url": upstream.url + "/v1",
         "model": "gpt-fake", "api_key_env": "FAKE_KEY", "price_in": 1.0, "price_out": 2.0},
        {"name": "fake-gemini", "backend": "gemini", "base_url": upstream.url,
         "model": "gemini-fake", "api_key_env": "FAKE_KEY"},
        {"name": "fake-ollama", "backend": "ollama", "base_url": upstream.url,
         "model": "llama-fake", "api_key_env": "FAKE_KEY"},
        {"name": "wrong-key", "backend": "openai", "base_url": upstream.url + "/v1",
         "model": "gpt-fake", "api_key_env": "WRONG_KEY"},
        {"name": "nokey", "backend": "openai", "base_url": upstream.url + "/v1",
         "model": "gpt-fake", "api_key_env": "PARLEY_TEST_UNSET_KEY"},
        {"name": "badkey", "backend": "openai", "base_url": upstream.url + "/v1",
         "model": "gpt-fake", "api_key_env": "BAD_KEY"},
        {"name": "nowhere", "backend": "openai", "base_url": f"http://127.0.0.1:{_closed_port()}/v1",
         "model": "gpt-fake", "api_key_env": "FAKE_KEY"},
    ]
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(models, f)
    srv = make_server("--models", path, "--upstream-idle-ms", "3000", "--upstream-connect-ms", "2000",
                      env={"FAKE_KEY": KEY, "WRONG_KEY": "sk-wrong", "BAD_KEY": "abc\r\nX-Injected: yes"})
    yield srv
    os.unlink(path)


BACKENDS = ["fake-openai", "fake-gemini", "fake-ollama"]


async def wait_upstream_closed(upstream, marker, timeout=5):
    """Waits until the fake upstream saw parleyd close the request whose body holds
    `marker` before its response ended (how an aborted transfer looks upstream)."""
    deadline = asyncio.get_event_loop().time() + timeout
    while asyncio.get_event_loop().time() < deadline:
        recs = [r for r in upstream.requests if marker in json.dumps(r.get("body"))]
        if recs and recs[-1].get("client_closed_early"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the upstream did not see its connection closed ({marker})")


@pytest.mark.parametrize("model", BACKENDS)
def test_backend_streams_multi_turn_answers(llm_server, model):
    async def body():
        c = await Client.connect(llm_server)
        created = await c.create_session(model_id=model)
        assert created["model"] == model
        first = await run_turn(c, "hello there")
        assert answer_text(first) == "Fake turn 1 (1 messages, system: no): hello there"
        chunks = [f for f in first if f["type"] == "chunk"]
        assert len(chunks) >= 5  # streamed word by word, not in one piece
        second = await run_turn(c, "and again")
        assert answer_text(second) == "Fake turn 2 (3 messages, system: no): and again"
        done = second[-1]
        assert done["type"] == "response_complete"
        assert done["finish_reason"] == "stop"
        assert done["model"] == model
        assert done["usage"]["completion_tokens"] > 0
        await c.close()
    run(body(), timeout=30)


@pytest.mark.parametrize("model", BACKENDS)
def test_backend_gets_system_prompt(llm_server, model):
    async def body():
        c = await Client.connect(llm_server)
        await c.create_session(model_id=model, system_prompt="Be brief.")
        frames = await run_turn(c, "hi")
        assert answer_text(frames) == "Fake turn 1 (1 messages, system: yes): hi"
        await c.close()
    run(body(), timeout=30)


@pytest.mark.parametrize("model", BACKENDS)
def test_max_tokens_gives_length(llm_server, model):
    async def body():
        c = await Client.connect(llm_server)
        await c.create_session(model_id=model)
        frames = await run_turn(c, "one two three four five six", max_tokens=3)
        assert frames[-1]["finish_reason"] == "length"
        await c.close()
    run(body(), timeout=30)


def _error_turn(srv, model, text):
    async def body():
        c = await Client.connect(srv)
        await c.create_session(model_id=model)
        frames = await run_turn(c, text, model_errors=True)
        done = frames[-1]
        # the session goes on working after a failed turn
        ok = await run_turn(c, "still there?") if model in BACKENDS else None
        await c.close()
        return done, frames, ok
    return run(body(), timeout=40)


@pytest.mark.parametrize("model", BACKENDS)
@pytest.mark.parametrize("fault,status,retry", [("status:500", 500, None), ("status:503:1", 503, 1),
                                                ("status:429:7", 429, 7), ("status:404", 404, None),
                                                ("status:403", 403, None)])
def test_upstream_error_status_ends_turn_cleanly(llm_server, model, fault, status, retry):
    done, frames, ok = _error_turn(llm_server, model, f"boom [[fault:{fault}]]")
    assert done["finish_reason"] == "error"
    assert str(status) in done["error"]
    err = [f for f in frames if f["type"] == "error"]
    assert len(err) == 1 and err[0]["code"] == "MODEL_ERROR", err
    assert err[0]["status"] == status
    assert err[0].get("retry_after") == retry
    assert err[0]["response_id"] == done["response_id"]
    assert ok[-1]["finish_reason"] == "stop"


def test_cost_from_the_price_table(llm_server):
    async def body():
        c = await Client.connect(llm_server)
        await c.create_session(model_id="fake-openai")   # price_in 1.0, price_out 2.0 per million
        done = (await run_turn(c, "what does it cost"))[-1]
        u = done["usage"]
        assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
        assert done["cost_usd"] == pytest.approx((u["prompt_tokens"] * 1.0 + u["completion_tokens"] * 2.0) / 1e6)
        await c.create_session(model_id="fake-gemini")   # no prices: no cost
        done = (await run_turn(c, "free"))[-1]
        assert "cost_usd" not in done
        await c.close()
    run(body(), timeout=30)


def test_wrong_key_is_an_error_and_key_never_leaks(llm_server):
    done, _, _ = _error_turn(llm_server, "wrong-key", "hi")
    assert done["finish_reason"] == "error" and "401" in done["error"]
    stats = http(llm_server, "GET", "/stats").body.decode()
    assert KEY not in stats and "sk-wrong" not in stats
    log = llm_server.stderr_text()
    assert KEY not in log and "sk-wrong" not in log


@pytest.mark.parametrize("model,var", [("nokey", "PARLEY_TEST_UNSET_KEY"), ("badkey", "BAD_KEY")])
def test_missing_or_malformed_key_fails_fast(llm_server, upstream, model, var):
    before = len(upstream.requests)
    done, frames, _ = _error_turn(llm_server, model, "hi")
    assert done["finish_reason"] == "error"
    assert f"API key variable {var} is not set or not valid" in done["error"]
    assert "X-Injected" not in json.dumps(frames)
    assert len(upstream.requests) == before   # nothing was sent upstream


def test_connection_refused_is_an_error(llm_server):
    done, frames, _ = _error_turn(llm_server, "nowhere", "hi")
    assert done["finish_reason"] == "error"
    assert "upstream" in done["error"]
    err = [f for f in frames if f["type"] == "error"]
    assert err and err[0]["code"] == "MODEL_ERROR" and "status" not in err[0]


def test_tls_to_a_plain_http_server_is_an_error(upstream, make_server, tmp_path):
    models = tmp_path / "models.json"
    models.write_text(json.dumps([{"name": "tls", "backend": "openai",
                                   "base_url": upstream.url.replace("http://", "https://") + "/v1"}]))
    srv = make_server("--models", str(models), "--upstream-connect-ms", "2000")
    done, _, _ = _error_turn(srv, "tls", "hi")
    assert done["finish_reason"] == "error" and "upstream" in done["error"]


@pytest.mark.parametrize("model", BACKENDS)
def test_stream_dying_mid_answer_keeps_partial_text(llm_server, model):
    async def body():
        c = await Client.connect(llm_server)
        sid = (await c.create_session(model_id=model))["session_id"]
        frames = await run_turn(c, "tell me [[fault:die_mid:3]]", model_errors=True)
        assert frames[-1]["finish_reason"] == "error"
        partial = answer_text(frames)
        assert partial.startswith("Fake turn 1")
        hist = http(llm_server, "GET", f"/sessions/{sid}").json()
        assert hist["messages"][-1]["role"] == "assistant"
        assert hist["messages"][-1]["content"] == partial
        await c.close()
    run(body(), timeout=30)


@pytest.mark.parametrize("model", BACKENDS)
def test_malformed_stream_lines_are_skipped_and_counted(llm_server, model):
    async def body():
        c = await Client.connect(llm_server)
        await c.create_session(model_id=model)
        frames = await run_turn(c, "odd lines [[fault:malformed]]")
        assert frames[-1]["finish_reason"] == "stop"
        assert answer_text(frames) == "Fake turn 1 (1 messages, system: no): odd lines [[fault:malformed]]"
        await c.close()
        # one malformed item after every word
        assert http(llm_server, "GET", "/stats").json()["models"][model]["malformed_items"] >= 5
    run(body(), timeout=30)


def test_shutdown_aborts_upstream_streams(upstream, make_server, tmp_path):
    """SIGTERM while answers stream: exit 0, clients closed with 1001, and the upstream sees
    every one of its connections closed."""
    models = tmp_path / "models.json"
    models.write_text(json.dumps([{"name": "m", "backend": "openai", "base_url": upstream.url + "/v1",
                                   "api_key_env": "FAKE_KEY"}]))
    srv = make_server("--models", str(models), env={"FAKE_KEY": KEY})

    async def body():
        clients = []
        for i in range(5):
            c = await Client.connect(srv)
            await c.create_session(model_id="m")
            await c.send({"type": "chat", "message": f"shutdown-{i} [[fault:slow:500]] a b c d e f"})
            await c.recv_until("chunk", timeout=10)
            clients.append(c)
        srv.stop()          # SIGTERM; asserts exit status 0
        for c in clients:
            assert await c.closed_code(timeout=10) == 1001
        for i in range(5):
            recs = [r for r in upstream.requests if f"shutdown-{i}" in json.dumps(r.get("body"))]
            assert recs and recs[-1]["client_closed_early"], recs
    run(body(), timeout=40)


def test_stalled_upstream_times_out(llm_server):
    done, _, _ = _error_turn(llm_server, "fake-openai", "wait [[fault:stall_mid:8]]")
    assert done["finish_reason"] == "error"


N_CONCURRENT = int(os.environ.get("PARLEY_TEST_STREAMS", "500"))


def test_concurrent_streams(llm_server, upstream):
    """N_CONCURRENT chats (default 500) streaming from the fake upstream at once, each
    answer complete and its own."""
    async def one(i):
        c = await Client.connect(llm_server)
        await c.create_session(model_id=BACKENDS[i % 3])
        # slow streams (50 ms a word) so that all of them are open at once
        frames = await run_turn(c, f"client {i} [[fault:slow:50]]", timeout=90)
        await c.close()
        return answer_text(frames)

    async def body():
        texts = await asyncio.gather(*(one(i) for i in range(N_CONCURRENT)))
        for i, t in enumerate(texts):
            assert t == f"Fake turn 1 (1 messages, system: no): client {i} [[fault:slow:50]]"
        assert upstream.peak_streams >= N_CONCURRENT * 8 // 10, upstream.peak_streams
    run(body(), timeout=120)


@pytest.mark.parametrize("model", BACKENDS)
def test_cancel_aborts_the_upstream_transfer(llm_server, upstream, model):
    """cancel stops the answer at once, members get finish_reason "cancelled" with the
    partial text kept, and the upstream sees its connection closed."""
    async def body():
        c = await Client.connect(llm_server)
        sid = (await c.create_session(model_id=model))["session_id"]
        marker = f"cancel-me-{model}"
        await c.send({"type": "chat", "message": f"{marker} [[fault:slow:300]] a b c d e f g h"})
        frames = await c.recv_until("chunk", timeout=10)
        await c.send({"type": "cancel"})
        frames += await c.recv_until("response_complete", timeout=10)
        assert frames[-1]["finish_reason"] == "cancelled"
        partial = answer_text(frames)
        assert partial.startswith("Fake")
        hist = http(llm_server, "GET", f"/sessions/{sid}").json()
        assert hist["messages"][-1]["role"] == "assistant"
        assert hist["messages"][-1]["content"] == partial
        await wait_upstream_closed(upstream, marker)
        await c.close()
    run(body(), timeout=30)


def test_deleting_a_session_aborts_its_upstream_transfer(llm_server, upstream):
    async def body():
        c = await Client.connect(llm_server)
        sid = (await c.create_session(model_id="fake-openai"))["session_id"]
        marker = "delete-me-now"
        await c.send({"type": "chat", "message": f"{marker} [[fault:slow:300]] a b c d e f"})
        await c.recv_until("chunk", timeout=10)
        assert http(llm_server, "DELETE", f"/sessions/{sid}").status == 200
        frames = await c.recv_until("session_update", update_type="session_deleted", timeout=10)
        assert any(f["type"] == "response_complete" and f["finish_reason"] == "cancelled" for f in frames)
        await wait_upstream_closed(upstream, marker)
        await c.close()
    run(body(), timeout=30)


def test_first_byte_timeout(upstream, make_server, tmp_path):
    models = tmp_path / "models.json"
    models.write_text(json.dumps([{"name": "slowstart", "backend": "ollama", "base_url": upstream.url,
                                   "api_key_env": "FAKE_KEY"}]))
    srv = make_server("--models", str(models), "--upstream-first-byte-ms", "1000",
                      "--upstream-idle-ms", "20000", env={"FAKE_KEY": KEY})
    done, frames, _ = _error_turn(srv, "slowstart", "hello [[fault:stall_first:6]]")
    assert done["finish_reason"] == "error"
    assert "did not start answering within 1000 ms" in done["error"]
    assert done["processing_time"] < 5


def test_unresolvable_host_is_an_error(make_server, tmp_path):
    models = tmp_path / "models.json"
    models.write_text(json.dumps([{"name": "nxdomain", "backend": "openai",
                                   "base_url": "http://no-such-host.invalid/v1"}]))
    srv = make_server("--models", str(models), "--upstream-connect-ms", "2000",
                      "--upstream-first-byte-ms", "3000")
    done, frames, _ = _error_turn(srv, "nxdomain", "hi")
    assert done["finish_reason"] == "error"
    assert "model upstream failed" in done["error"] or "did not start answering" in done["error"], done["error"]


def test_stats_per_model(llm_server):
    async def body():
        c = await Client.connect(llm_server)
        await c.create_session(model_id="fake-openai")
        await run_turn(c, "count this")
        await run_turn(c, "and fail [[fault:status:500]]", model_errors=True)
        await c.close()
        models = http(llm_server, "GET", "/stats").json()["models"]
        m = models["fake-openai"]
        assert m["backend"] == "openai"
        assert m["requests"] == 2 and m["failures"] == 1
        assert m["first_chunks"] == 1 and m["ttfc_ms_avg"] >= 0
        assert m["prompt_tokens"] > 0 and m["completion_tokens"] > 0
        assert models["echo"]["requests"] == 0
    run(body(), timeout=30)
