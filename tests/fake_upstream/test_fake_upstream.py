"""Tests for the fake model-API server (fake_upstream.py).

Run with Debian's interpreter:  /usr/bin/python3 -m pytest -q tests/fake_upstream
Clients are http.client and raw sockets only, so the tests see the exact bytes on the wire.
"""

import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from fake_upstream import FakeUpstream, answer_text, split_words  # noqa: E402

KEY = "sk-test-key-0123456789"
VENDORS = ["openai", "gemini", "ollama"]
MODELS = {"openai": "gpt-4o-mini", "gemini": "gemini-2.0-flash", "ollama": "llama3.2"}
SEP = {"openai": b"\n\n", "gemini": b"\r\n\r\n"}


@pytest.fixture(scope="module")
def up():
    with FakeUpstream(api_key=KEY, delay_ms=2) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_global_fault(request):
    if "up" in request.fixturenames:
        request.getfixturevalue("up").clear_fault()
    yield


def tag():
    return "t" + uuid.uuid4().hex[:10]


# --------------------------------------------------------------------------- requests


def build(vendor, turns, system=None, max_tokens=None, stream=True, key=KEY,
          include_usage=True, gemini_sse=True):
    """(path, body dict, headers) for a conversation ``turns`` = [(role, text), ...]."""
    if vendor == "openai":
        msgs = ([{"role": "system", "content": system}] if system is not None else [])
        msgs += [{"role": r, "content": t} for r, t in turns]
        body = {"model": MODELS[vendor], "messages": msgs, "stream": stream,
                "temperature": 0.2}
        if stream and include_usage:
            body["stream_options"] = {"include_usage": True}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        headers = {"Authorization": "Bearer " + key} if key is not None else {}
        return "/v1/chat/completions", body, headers
    if vendor == "gemini":
        body = {"contents": [{"role": "model" if r == "assistant" else "user",
                              "parts": [{"text": t}]} for r, t in turns]}
        if system is not None:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        body["generationConfig"] = {"temperature": 0.2}
        if max_tokens is not None:
            body["generationConfig"]["maxOutputTokens"] = max_tokens
        method = "streamGenerateContent" if stream else "generateContent"
        path = "/v1beta/models/%s:%s" % (MODELS[vendor], method)
        if stream and gemini_sse:
            path += "?alt=sse"
        headers = {"x-goog-api-key": key} if key is not None else {}
        return path, body, headers
    msgs = ([{"role": "system", "content": system}] if system is not None else [])
    msgs += [{"role": r, "content": t} for r, t in turns]
    body = {"model": MODELS[vendor], "messages": msgs, "options": {"temperature": 0.2}}
    if not stream:
        body["stream"] = False
    if max_tokens is not None:
        body["options"]["num_predict"] = max_tokens
    headers = {"Authorization": "Bearer " + key} if key is not None else {}
    return "/api/chat", body, headers


def post(up, path, body, headers=None, timeout=10):
    """One request through http.client: (status, headers dict lower-case, body bytes)."""
    conn = http.client.HTTPConnection(up.host, up.port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        conn.request("POST", path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Incomplete(Exception):
    """The connection ended before the chunked body's last chunk."""


class RawStream:
    """A raw-socket HTTP/1.1 client: sends one request, then reads the head and the
    chunked body chunk by chunk (with arrival times)."""

    def __init__(self, up, path, body, headers=None, timeout=10):
        self.sock = socket.create_connection((up.host, up.port), timeout=timeout)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Host": "%s:%d" % (up.host, up.port), "Content-Type": "application/json",
                "Content-Length": str(len(data))}
        hdrs.update(headers or {})
        head = "POST %s HTTP/1.1\r\n" % path + "".join("%s: %s\r\n" % kv for kv in
                                                         hdrs.items()) + "\r\n"
        self.sent_at = time.monotonic()
        self.sock.sendall(head.encode() + data)
        self.buf = b""
        self.status = None
        self.headers = {}

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            raise Incomplete("EOF")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        for line in lines[1:]:
            k, v = line.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        self.head_at = time.monotonic()
        return self.status

    def chunks(self):
        """Yield (monotonic time, payload) per HTTP chunk; stop at the last chunk; raise
        Incomplete if the connection ends first."""
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                self._line()
                return
            while len(self.buf) < size + 2:
                self._more()
            payload, self.buf = self.buf[:size], self.buf[size + 2:]
            yield time.monotonic(), payload

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------- parsing


def events(vendor, raw):
    """Split a streamed body into its events (bytes, without separators)."""
    if vendor == "ollama":
        assert raw.endswith(b"\n")
        return raw[:-1].split(b"\n")
    sep = SEP[vendor]
    assert raw.endswith(sep), raw[-40:]
    out = raw[:-len(sep)].split(sep)
    for ev in out:
        assert ev.startswith(b"data: "), ev
    return out


def decode(vendor, ev):
    """The JSON of one event, '[DONE]', or None when malformed."""
    s = ev.decode()
    if vendor != "ollama":
        s = s[len("data: "):]
        if s == "[DONE]":
            return "[DONE]"
    try:
        return json.loads(s)
    except ValueError:
        return None


def text_of(vendor, objs):
    out = []
    for o in objs:
        if not isinstance(o, dict):
            continue
        if vendor == "openai" and o.get("choices"):
            out.append(o["choices"][0]["delta"].get("content") or "")
        elif vendor == "gemini" and "candidates" in o:
            out.extend(p.get("text", "") for p in o["candidates"][0]["content"]["parts"])
        elif vendor == "ollama" and "message" in o:
            out.append(o["message"]["content"])
    return "".join(out)


def stream_text(up, vendor, turns, **kw):
    path, body, headers = build(vendor, turns, **kw)
    status, hdrs, raw = post(up, path, body, headers)
    assert status == 200, raw
    objs = [decode(vendor, ev) for ev in events(vendor, raw)]
    return text_of(vendor, objs), objs, hdrs, raw


# --------------------------------------------------------------------------- helpers


def test_split_words_concatenates_exactly():
    for text in ["Fake turn 1 (1 messages, system: no): hi", "a  b\n c ", "  x", "", "   "]:
        assert "".join(split_words(text)) == text
    assert split_words("a b  c") == ["a", " b", "  c"]


# --------------------------------------------------------------------------- OpenAI


def test_openai_stream_exact_shapes(up):
    t = tag()
    path, body, headers = build("openai", [("user", "hello " + t)], system="be brief")
    s = RawStream(up, path, body, headers)
    try:
        assert s.read_head() == 200
        assert s.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert s.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in s.headers
        chunks = [p for _, p in s.chunks()]
    finally:
        s.close()
    # every HTTP chunk is exactly one SSE event, flushed on its own
    for c in chunks:
        assert c.startswith(b"data: ") and c.endswith(b"\n\n") and c.count(b"\n\n") == 1
    objs = [decode("openai", c[:-2]) for c in chunks]
    assert objs[-1] == "[DONE]"
    first, *content, finish, usage, done = objs
    expected = answer_text(1, 1, True, "hello " + t)
    cid = first["id"]
    assert cid.startswith("chatcmpl-")
    for o in [first, *content, finish, usage]:
        assert o["id"] == cid and o["object"] == "chat.completion.chunk"
        assert isinstance(o["created"], int) and o["model"] == "gpt-4o-mini"
    assert first["choices"] == [{"index": 0, "logprobs": None, "finish_reason": None,
                                 "delta": {"role": "assistant", "content": "",
                                           "refusal": None}}]
    assert first["usage"] is None
    assert [o["choices"][0]["delta"]["content"] for o in content] == split_words(expected)
    for o in content:
        assert o["choices"][0]["finish_reason"] is None and o["usage"] is None
        assert set(o["choices"][0]["delta"]) == {"content"}
    assert finish["choices"] == [{"index": 0, "delta": {}, "logprobs": None,
                                  "finish_reason": "stop"}]
    assert usage["choices"] == []
    u = usage["usage"]
    assert u["completion_tokens"] == len(content)
    assert u["prompt_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    rec = up.wait_for(lambda rs: any(t in json.dumps(r["body"]) and r["ended"]
                                     for r in rs))
    rec = [r for r in rec if t in json.dumps(r["body"])][0]
    assert rec["completed"] and not rec["client_closed_early"]
    assert rec["model"] == "gpt-4o-mini" and rec["auth_ok"] is True
    assert rec["headers"]["authorization"] == "***"


def test_openai_without_include_usage_has_no_usage(up):
    text, objs, _, _ = stream_text(up, "openai", [("user", "x")], include_usage=False)
    assert objs[-1] == "[DONE]"
    assert all("usage" not in o for o in objs[:-1])
    assert objs[-2]["choices"][0]["finish_reason"] == "stop"
    assert text == answer_text(1, 1, False, "x")


def test_openai_non_streaming(up):
    path, body, headers = build("openai", [("user", "one two")], stream=False)
    status, hdrs, raw = post(up, path, body, headers)
    assert status == 200 and hdrs["content-type"].startswith("application/json")
    obj = json.loads(raw)
    assert obj["object"] == "chat.completion"
    assert obj["choices"][0]["message"]["content"] == answer_text(1, 1, False, "one two")
    assert obj["choices"][0]["finish_reason"] == "stop"
    assert obj["usage"]["completion_tokens"] == len(split_words(
        answer_text(1, 1, False, "one two")))


# --------------------------------------------------------------------------- Gemini


def test_gemini_stream_exact_shapes(up):
    t = tag()
    path, body, headers = build("gemini", [("user", "hi " + t)])
    s = RawStream(up, path, body, headers)
    try:
        assert s.read_head() == 200
        assert s.headers["content-type"] == "text/event-stream"
        assert s.headers["transfer-encoding"] == "chunked"
        chunks = [p for _, p in s.chunks()]
    finally:
        s.close()
    for c in chunks:
        assert c.startswith(b"data: ") and c.endswith(b"\r\n\r\n")
    objs = [json.loads(c[6:-4]) for c in chunks]
    expected = answer_text(1, 1, False, "hi " + t)
    words = split_words(expected)
    assert len(objs) == len(words)
    rid = objs[0]["responseId"]
    for i, o in enumerate(objs):
        assert set(o) == {"candidates", "usageMetadata", "modelVersion", "responseId"}
        assert o["modelVersion"] == "gemini-2.0-flash" and o["responseId"] == rid
        cand = o["candidates"][0]
        assert len(o["candidates"]) == 1 and cand["index"] == 0
        assert cand["content"] == {"parts": [{"text": words[i]}], "role": "model"}
        um = o["usageMetadata"]
        assert um["candidatesTokenCount"] == i + 1
        assert um["totalTokenCount"] == um["promptTokenCount"] + i + 1
        if i < len(objs) - 1:
            assert "finishReason" not in cand
    assert objs[-1]["candidates"][0]["finishReason"] == "STOP"
    rec = [r for r in up.requests if t in json.dumps(r["body"])][0]
    assert rec["model"] == "gemini-2.0-flash" and rec["vendor"] == "gemini"
    assert rec["headers"]["x-goog-api-key"] == "***"
    assert rec["query"] == {"alt": "sse"}


def test_gemini_lf_option_and_key_in_query():
    with FakeUpstream(api_key="k", delay_ms=0, gemini_crlf=False) as u:
        path, body, _ = build("gemini", [("user", "q")])
        status, _, raw = post(u, path + "&key=k", body)
        assert status == 200
        assert b"\r" not in raw and raw.endswith(b"}\n\n")
        assert u.requests[0]["query"] == {"alt": "sse", "key": "***"}
        assert u.requests[0]["auth_ok"] is True


def test_gemini_without_alt_sse_streams_json_array(up):
    path, body, headers = build("gemini", [("user", "arr")], gemini_sse=False)
    status, hdrs, raw = post(up, path, body, headers)
    assert status == 200 and hdrs["content-type"].startswith("application/json")
    arr = json.loads(raw)
    assert isinstance(arr, list)
    assert text_of("gemini", arr) == answer_text(1, 1, False, "arr")
    assert arr[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_non_streaming(up):
    path, body, headers = build("gemini", [("user", "whole")], stream=False,
                                system="sys")
    status, _, raw = post(up, path, body, headers)
    assert status == 200
    obj = json.loads(raw)
    assert obj["candidates"][0]["content"]["parts"][0]["text"] == \
        answer_text(1, 1, True, "whole")
    assert obj["candidates"][0]["finishReason"] == "STOP"


# --------------------------------------------------------------------------- Ollama


def test_ollama_stream_exact_shapes(up):
    t = tag()
    path, body, headers = build("ollama", [("user", "yo " + t)])
    s = RawStream(up, path, body, headers)
    try:
        assert s.read_head() == 200
        assert s.headers["content-type"] == "application/x-ndjson"
        assert s.headers["transfer-encoding"] == "chunked"
        chunks = [p for _, p in s.chunks()]
    finally:
        s.close()
    for c in chunks:
        assert c.endswith(b"\n") and c.count(b"\n") == 1
    objs = [json.loads(c) for c in chunks]
    *content, final = objs
    expected = answer_text(1, 1, False, "yo " + t)
    assert [o["message"]["content"] for o in content] == split_words(expected)
    for o in content:
        assert set(o) == {"model", "created_at", "message", "done"}
        assert o["model"] == "llama3.2" and o["done"] is False
        assert o["message"]["role"] == "assistant"
        assert o["created_at"].endswith("Z") and "T" in o["created_at"]
    assert set(final) == {"model", "created_at", "message", "done", "done_reason",
                          "total_duration", "load_duration", "prompt_eval_count",
                          "prompt_eval_duration", "eval_count", "eval_duration"}
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == len(content)
    for k in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration",
              "prompt_eval_count"):
        assert isinstance(final[k], int) and final[k] > 0


def test_ollama_non_streaming(up):
    path, body, headers = build("ollama", [("user", "flat")], stream=False)
    status, _, raw = post(up, path, body, headers)
    assert status == 200
    obj = json.loads(raw)
    assert obj["done"] is True and obj["done_reason"] == "stop"
    assert obj["message"]["content"] == answer_text(1, 1, False, "flat")


def test_ollama_extra_endpoints(up):
    conn = http.client.HTTPConnection(up.host, up.port, timeout=5)
    conn.request("GET", "/api/version")
    r = conn.getresponse()
    assert r.status == 200 and "version" in json.loads(r.read())
    conn.close()


# --------------------------------------------------------------------------- all vendors


@pytest.mark.parametrize("vendor", VENDORS)
def test_context_counts_and_system_detection(up, vendor):
    turns = [("user", "first"), ("assistant", "reply one"), ("user", "second"),
             ("assistant", "reply two"), ("user", "third question here")]
    text, _, _, _ = stream_text(up, vendor, turns)
    assert text == answer_text(3, 5, False, "third question here")
    text, _, _, _ = stream_text(up, vendor, turns, system="you are a test")
    assert text == "Fake turn 3 (5 messages, system: yes): third question here"


@pytest.mark.parametrize("vendor", VENDORS)
def test_max_tokens_cuts_with_length(up, vendor):
    text, objs, _, _ = stream_text(up, vendor, [("user", "a b c d e f")], max_tokens=3)
    assert text == "Fake turn 1"
    if vendor == "openai":
        assert objs[-3]["choices"][0]["finish_reason"] == "length"
        assert objs[-2]["usage"]["completion_tokens"] == 3
    elif vendor == "gemini":
        assert objs[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
        assert objs[-1]["usageMetadata"]["candidatesTokenCount"] == 3
    else:
        assert objs[-1]["done_reason"] == "length" and objs[-1]["eval_count"] == 3
    # a limit above the answer length does not cut
    text, objs, _, _ = stream_text(up, vendor, [("user", "z")], max_tokens=500)
    assert text == answer_text(1, 1, False, "z")


@pytest.mark.parametrize("vendor", VENDORS)
def test_auth_failures(up, vendor):
    for key in (None, "wrong-key"):
        path, body, headers = build(vendor, [("user", "hi")], key=key)
        status, hdrs, raw = post(up, path, body, headers)
        err = json.loads(raw)
        assert hdrs["content-type"].startswith("application/json")
        if vendor == "openai":
            assert status == 401
            assert set(err["error"]) == {"message", "type", "param", "code"}
            assert err["error"]["type"] == "invalid_request_error"
            assert err["error"]["param"] is None
            assert err["error"]["code"] == "invalid_api_key"
            if key:
                assert "wrong-key" not in err["error"]["message"]
        elif vendor == "gemini":
            # what Google answers: no key -> 403 PERMISSION_DENIED, bad key -> 400
            # INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID
            if key is None:
                assert status == 403 and err["error"]["status"] == "PERMISSION_DENIED"
            else:
                assert status == 400 and err["error"]["status"] == "INVALID_ARGUMENT"
                assert err["error"]["details"][0]["reason"] == "API_KEY_INVALID"
            assert err["error"]["code"] == status and err["error"]["message"]
        else:
            assert status == 401 and err == {"error": "unauthorized"}
    recs = [r for r in up.requests if r["vendor"] == vendor and r["auth_ok"] is False]
    assert len(recs) >= 2 and all(r["status"] in (400, 401, 403) for r in recs)


def test_no_key_configured_accepts_anything():
    with FakeUpstream(delay_ms=0) as u:
        for vendor in VENDORS:
            path, body, _ = build(vendor, [("user", "free")], key=None)
            status, _, _ = post(u, path, body)
            assert status == 200


@pytest.mark.parametrize("vendor", VENDORS)
def test_bad_json_is_400_in_vendor_format(up, vendor):
    path, _, headers = build(vendor, [("user", "x")])
    status, _, raw = post(up, path, b"{nope", headers)
    assert status == 400
    err = json.loads(raw)["error"]
    if vendor == "openai":
        assert err["type"] == "invalid_request_error"
    elif vendor == "gemini":
        assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT"
    else:
        assert isinstance(err, str)


# --------------------------------------------------------------------------- faults


def fault_turns(marker, text="please answer"):
    return [("user", "earlier [[fault:status:500]]"), ("assistant", "ok"),
            ("user", text + " " + marker)]


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("code", [401, 403, 404, 429, 500, 503])
def test_status_fault(up, vendor, code):
    path, body, headers = build(vendor, fault_turns("[[fault:status:%d]]" % code))
    status, hdrs, raw = post(up, path, body, headers)
    assert status == code
    err = json.loads(raw)["error"]
    if vendor == "openai":
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        if code == 401:
            assert err["code"] == "invalid_api_key"
        if code == 429:
            assert err["code"] == "rate_limit_exceeded"
        if code == 404:
            assert err["code"] == "model_not_found"
    elif vendor == "gemini":
        want = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}[code]
        assert err["code"] == code and err["status"] == want and err["message"]
    else:
        assert isinstance(err, str) and err
    if code == 429:
        assert hdrs["retry-after"] == "2"
    else:
        assert "retry-after" not in hdrs


@pytest.mark.parametrize("vendor", VENDORS)
def test_status_429_retry_after_arg(up, vendor):
    path, body, headers = build(vendor, fault_turns("[[fault:status:429:7]]"))
    status, hdrs, _ = post(up, path, body, headers)
    assert status == 429 and hdrs["retry-after"] == "7"


def collect(s):
    """Read a raw stream to its end: (payloads, complete?, error)."""
    out = []
    try:
        for _, p in s.chunks():
            out.append(p)
        return out, True, None
    except Incomplete as e:
        return out, False, e
    except ConnectionResetError as e:
        return out, False, e


@pytest.mark.parametrize("vendor", VENDORS)
def test_die_mid(up, vendor):
    t = tag()
    path, body, headers = build(vendor, fault_turns("[[fault:die_mid:3]]", t))
    s = RawStream(up, path, body, headers)
    try:
        assert s.read_head() == 200
        payloads, complete, err = collect(s)
    finally:
        s.close()
    assert not complete and isinstance(err, Incomplete)
    objs = [decode(vendor, p.rstrip(b"\r\n")) if vendor != "ollama"
            else json.loads(p) for p in payloads]
    assert text_of(vendor, objs) == "Fake turn 2"
    assert len(payloads) == 3 + (1 if vendor == "openai" else 0)
    rec = up.wait_for(lambda rs: any(t in json.dumps(r["body"]) and r["ended"]
                                     for r in rs))
    rec = [r for r in rec if t in json.dumps(r["body"])][0]
    assert rec["server_aborted"] and not rec["completed"]
    assert rec["client_closed_early"] is False and rec["chunks_sent"] == 3


def test_reset_mid(up):
    path, body, headers = build("openai", fault_turns("[[fault:reset_mid:1]]"))
    s = RawStream(up, path, body, headers)
    try:
        s.read_head()
        _, complete, err = collect(s)
    finally:
        s.close()
    assert not complete and isinstance(err, ConnectionResetError)


@pytest.mark.parametrize("vendor", VENDORS)
def test_malformed_interleaved(up, vendor):
    path, body, headers = build(vendor, fault_turns("[[fault:malformed]]", "mal"))
    status, _, raw = post(up, path, body, headers)
    assert status == 200
    evs = events(vendor, raw)
    objs = [decode(vendor, ev) for ev in evs]
    bad = [ev for ev, o in zip(evs, objs) if o is None]
    good = [o for o in objs if o is not None]
    expected = answer_text(2, 3, False, "mal [[fault:malformed]]")
    assert text_of(vendor, good) == expected
    assert len(bad) == len(split_words(expected))
    assert all(ev == (b"{broken" if vendor == "ollama" else b"data: {not json")
               for ev in bad)
    # malformed events sit between good ones: never two in a row, never first
    flags = [o is None for o in objs]
    assert not flags[0] and not any(a and b for a, b in zip(flags, flags[1:]))
    if vendor == "openai":
        assert objs[-1] == "[DONE]"


@pytest.mark.parametrize("vendor", VENDORS)
def test_error_mid(up, vendor):
    path, body, headers = build(vendor, fault_turns("[[fault:error_mid:2]]"))
    status, _, raw = post(up, path, body, headers)
    assert status == 200
    objs = [decode(vendor, ev) for ev in events(vendor, raw)]
    assert text_of(vendor, objs) == "Fake turn"
    assert "error" in objs[-1]
    assert "[DONE]" not in objs


def test_stall_first(up):
    path, body, headers = build("ollama", fault_turns("[[fault:stall_first:0.5]]"))
    s = RawStream(up, path, body, headers)
    try:
        s.read_head()
        waited = s.head_at - s.sent_at
        _, complete, _ = collect(s)
    finally:
        s.close()
    assert 0.45 <= waited < 3 and complete


@pytest.mark.parametrize("vendor", VENDORS)
def test_stall_mid(up, vendor):
    path, body, headers = build(vendor, fault_turns("[[fault:stall_mid:0.5]]"))
    s = RawStream(up, path, body, headers)
    try:
        s.read_head()
        times = [t for t, _ in s.chunks()]
    finally:
        s.close()
    first = 1 if vendor == "openai" else 0       # skip OpenAI's role chunk
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[first + 1] >= 0.45                 # between word 2 and word 3
    assert max(gaps[:first + 1] + gaps[first + 2:]) < 0.3


def test_slow(up):
    path, body, headers = build("gemini", fault_turns("[[fault:slow:60]]", "s"))
    t0 = time.monotonic()
    status, _, raw = post(up, path, body, headers)
    elapsed = time.monotonic() - t0
    n = len(split_words(answer_text(2, 3, False, "s [[fault:slow:60]]")))
    assert status == 200 and elapsed >= n * 0.06 * 0.9


def test_hang_headers_then_client_closes(up):
    t = tag()
    path, body, headers = build("openai", fault_turns("[[fault:hang_headers]]", t))
    s = RawStream(up, path, body, headers, timeout=0.4)
    with pytest.raises(socket.timeout):
        s.read_head()
    assert s.buf == b""
    s.close()
    closed = time.time()
    recs = up.wait_for(lambda rs: any(t in json.dumps(r["body"]) and r["ended"]
                                      for r in rs))
    rec = [r for r in recs if t in json.dumps(r["body"])][0]
    assert rec["client_closed_early"] is True and rec["status"] is None
    assert rec["ended"] - closed < 1.0


def test_hang_headers_with_timeout_closes(up):
    path, body, headers = build("ollama", fault_turns("[[fault:hang_headers:0.3]]"))
    s = RawStream(up, path, body, headers, timeout=3)
    with pytest.raises(Incomplete):
        s.read_head()
    assert s.buf == b""
    s.close()


def test_unknown_fault_is_rejected(up):
    path, body, headers = build("openai", fault_turns("[[fault:explode]]"))
    status, _, raw = post(up, path, body, headers)
    assert status == 400 and b"unknown fault" in raw


# --------------------------------------------------------------------------- control


def http_json(up, method, path, obj=None):
    req = urllib.request.Request(up.url + path, method=method,
                                 data=None if obj is None else json.dumps(obj).encode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            data = r.read()
            return r.status, (json.loads(data) if data else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_control_endpoint_global_fault(up):
    path, body, headers = build("openai", [("user", "plain")])
    assert http_json(up, "POST", "/_control", {"fault": "status:503", "arg": 4,
                                               "times": 2})[0] == 200
    assert http_json(up, "GET", "/_control")[1]["fault"] == "status:503:4"
    for _ in range(2):
        status, hdrs, _ = post(up, path, body, headers)
        assert status == 503 and hdrs["retry-after"] == "4"
    assert post(up, path, body, headers)[0] == 200          # times ran out
    # a marker wins over the global fault
    http_json(up, "POST", "/_control", {"fault": "die_mid"})
    p2, b2, h2 = build("openai", [("user", "[[fault:status:404]]")])
    assert post(up, p2, b2, h2)[0] == 404
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        post(up, path, body, headers)
    assert http_json(up, "DELETE", "/_control")[0] == 204
    assert post(up, path, body, headers)[0] == 200
    assert http_json(up, "POST", "/_control", {"fault": "nope"})[0] == 400


def test_control_delay_ms(up):
    try:
        http_json(up, "POST", "/_control", {"delay_ms": 40})
        t0 = time.monotonic()
        stream_text(up, "ollama", [("user", "d")])
        assert time.monotonic() - t0 >= 8 * 0.04 * 0.9
    finally:
        http_json(up, "DELETE", "/_control")
    assert up.delay_ms == 2


def test_requests_endpoint_redacts(up):
    path, body, headers = build("gemini", [("user", "redact me")])
    post(up, path + "&key=" + KEY, body, headers)
    status, recs = http_json(up, "GET", "/_requests")
    assert status == 200 and isinstance(recs, list)
    dumped = json.dumps(recs)
    assert KEY not in dumped
    rec = [r for r in recs if "redact me" in json.dumps(r["body"])][-1]
    for k in ("path", "model", "body", "headers", "client_closed_early", "started",
              "ended"):
        assert k in rec
    assert rec["headers"]["x-goog-api-key"] == "***" and rec["query"]["key"] == "***"
    assert rec["body"]["contents"][0]["parts"][0]["text"] == "redact me"


# --------------------------------------------------------------------------- cancels


@pytest.mark.parametrize("vendor", VENDORS)
def test_client_closed_early_detected(up, vendor):
    t = tag()
    path, body, headers = build(vendor, fault_turns("[[fault:slow:100]]", t))
    s = RawStream(up, path, body, headers)
    it = s.chunks()
    s.read_head()
    next(it)
    next(it)
    s.close()
    closed = time.time()
    recs = up.wait_for(lambda rs: any(t in json.dumps(r["body"]) and r["ended"]
                                      for r in rs))
    rec = [r for r in recs if t in json.dumps(r["body"])][0]
    assert rec["client_closed_early"] is True and rec["completed"] is False
    assert rec["ended"] - closed < 0.5            # the transfer stopped at once
    assert rec["chunks_sent"] < len(split_words(answer_text(2, 3, False, t)))


def test_client_closed_during_stall_detected(up):
    t = tag()
    path, body, headers = build("gemini", fault_turns("[[fault:stall_mid:30]]", t))
    s = RawStream(up, path, body, headers)
    it = s.chunks()
    s.read_head()
    next(it)
    next(it)
    s.close()
    closed = time.time()
    recs = up.wait_for(lambda rs: any(t in json.dumps(r["body"]) and r["ended"]
                                      for r in rs))
    rec = [r for r in recs if t in json.dumps(r["body"])][0]
    assert rec["client_closed_early"] is True and rec["chunks_sent"] == 2
    assert rec["ended"] - closed < 0.5


@pytest.mark.parametrize("vendor", VENDORS)
def test_full_read_is_not_closed_early(up, vendor):
    t = tag()
    stream_text(up, vendor, [("user", t)])
    recs = up.wait_for(lambda rs: any(t in json.dumps(r["body"]) and r["ended"]
                                      for r in rs))
    rec = [r for r in recs if t in json.dumps(r["body"])][0]
    assert rec["client_closed_early"] is False and rec["completed"] is True
    assert rec["started"] <= rec["ended"]


# --------------------------------------------------------------------------- HTTP


def test_keep_alive_reuses_connection(up):
    conn = http.client.HTTPConnection(up.host, up.port, timeout=5)
    try:
        socks = []
        for vendor in VENDORS:
            path, body, headers = build(vendor, [("user", "ka " + vendor)])
            headers["Content-Type"] = "application/json"
            conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
            r = conn.getresponse()
            raw = r.read()
            assert r.status == 200 and r.getheader("Transfer-Encoding") == "chunked"
            objs = [decode(vendor, ev) for ev in events(vendor, raw)]
            assert text_of(vendor, objs) == answer_text(1, 1, False, "ka " + vendor)
            socks.append(conn.sock)
        assert socks[0] is socks[1] is socks[2] and socks[0] is not None
    finally:
        conn.close()


def test_expect_100_continue(up):
    path, body, headers = build("openai", [("user", "x" * 3000)])
    data = json.dumps(body).encode()
    sock = socket.create_connection((up.host, up.port), timeout=5)
    try:
        head = ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: application/json\r\nContent-Length: %d\r\n"
                "Expect: 100-continue\r\n\r\n" % (path, KEY, len(data)))
        sock.sendall(head.encode())
        got = b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(100)
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(data)
        rest = got[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        while b"data: [DONE]" not in rest:
            rest += sock.recv(65536)
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        sock.close()


def test_unknown_path_404(up):
    status, _, _ = post(up, "/v2/whatever", {})
    assert status == 404


# --------------------------------------------------------------------------- scale


def _raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def test_500_concurrent_streams():
    n = 500
    _raise_fd_limit(4 * n + 256)
    barrier = threading.Barrier(n, timeout=30)

    def one(i):
        vendor = VENDORS[i % 3]
        turns = [("user", "q%d" % i), ("assistant", "a"), ("user", "stream %d" % i)]
        barrier.wait()
        text, _, _, _ = stream_text(u, vendor, turns)
        return text == answer_text(2, 3, False, "stream %d" % i)

    t0 = time.monotonic()
    with FakeUpstream(api_key=KEY, delay_ms=30) as u:
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(one, range(n)))
        elapsed = time.monotonic() - t0
        assert all(results), results.count(False)
        recs = u.requests
        assert len(recs) == n
        assert all(r["completed"] and not r["client_closed_early"] for r in recs)
        peak = u.peak_streams
    assert peak >= n // 2, peak                    # they really ran at the same time
    assert elapsed < 30, elapsed


# --------------------------------------------------------------------------- script


def test_script_mode():
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_upstream.py"),
                             "--port", "0", "--api-key", "k", "--delay-ms", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        host, port = url[len("http://"):].split(":")

        class Addr:
            pass
        a = Addr()
        a.host, a.port = host, int(port)
        path, body, _ = build("ollama", [("user", "script")], key="k")
        status, _, raw = post(a, path, body, {"Authorization": "Bearer k"})
        assert status == 200 and b'"done":true' in raw
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        proc.stdout.close()
        proc.stderr.close()
