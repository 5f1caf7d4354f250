#!/usr/bin/env python3
"""A fake model-API server for Parley's tests (Python standard library only).

It speaks three vendors' chat APIs on one loopback port, streams a deterministic answer
word by word, injects faults on demand and records every request.

Endpoints
---------
``POST /v1/chat/completions`` (also ``/chat/completions``)
    OpenAI chat completions. ``stream: true`` gives ``text/event-stream``: ``data: <chunk>``
    events (``object: "chat.completion.chunk"``): a role chunk
    (``delta: {"role":"assistant","content":"","refusal":null}``), one chunk per word
    (``delta: {"content": ...}``), a chunk with ``delta: {}`` and ``finish_reason``
    ``"stop"``/``"length"``, then with ``stream_options.include_usage`` a chunk with
    ``choices: []`` and ``usage`` (every earlier chunk then carries ``"usage": null``), then
    ``data: [DONE]``. Events end with ``\\n\\n``. Without ``stream`` one
    ``chat.completion`` object. Auth: ``Authorization: Bearer KEY``.
``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` (also ``/v1/``)
    Gemini. One ``data: <GenerateContentResponse>`` event per word; the last carries
    ``finishReason`` ``"STOP"``/``"MAX_TOKENS"``; every event carries cumulative
    ``usageMetadata``, ``modelVersion`` and ``responseId``. Events end with ``\\r\\n\\r\\n``
    like Google's servers (``gemini_crlf=False`` for ``\\n\\n``); JSON uses Python's default
    ``", "``/``": "`` separators, like Google's. Without ``alt=sse`` the stream is a JSON
    array (``[{..}\\r\\n,{..}]``). ``:generateContent`` gives one object. Auth:
    ``x-goog-api-key`` header or ``?key=``; a missing key is 403 PERMISSION_DENIED and a
    wrong one 400 INVALID_ARGUMENT (reason API_KEY_INVALID), as Google answers.
``POST /api/chat``
    Ollama. ``application/x-ndjson``: one line per word
    ``{"model","created_at","message":{"role":"assistant","content"},"done":false}`` and
    a final line with ``done: true``, ``done_reason`` ``"stop"``/``"length"`` and the
    duration/count fields. ``stream: false`` gives one object. Auth (only when a key is
    configured): ``Authorization: Bearer KEY``. ``GET /``, ``GET /api/version`` also answer.

The answer is ``Fake turn T (N messages, system: yes|no): <last user text>`` where T counts
user messages and N all messages except system ones (Gemini: ``systemInstruction`` is the
system prompt). It is split into words (each piece keeps its leading whitespace, so the
pieces concatenate to the exact text) and sent one piece per event, ``delay_ms`` apart.
A max-token limit (``max_tokens``/``max_completion_tokens``, ``maxOutputTokens``,
``options.num_predict``) cuts the answer to that many pieces.

Faults: a marker ``[[fault:NAME]]`` or ``[[fault:NAME:ARG]]`` in the last user message, or a
global fault set with ``POST /_control {"fault": "NAME[:ARG]", "arg": ..., "times": N}`` (the
marker wins; ``times`` limits the global fault to the next N model requests) and cleared with
``DELETE /_control``. Names:

``status:CODE[:RETRY]``  answer CODE with the vendor's error body; 429 adds
                         ``Retry-After: RETRY`` (default 2), 503 only when RETRY is given.
``die_mid[:N]``          send N word events (default 2), then close the connection (FIN)
                         without finishing the body.
``reset_mid[:N]``        the same, but with a TCP RST.
``error_mid[:N]``        send N word events (default 1), then the vendor's in-band error
                         event, then end the body cleanly.
``malformed``            after every word event, a malformed one (``data: {not json`` for
                         SSE, ``{broken`` for NDJSON).
``stall_first[:S]``      wait S seconds (default 3) before the response headers.
``stall_mid[:S]``        after 2 word events, wait S seconds (default 3), then go on.
``slow[:MS]``            MS milliseconds (default 200) between events.
``hang_headers[:S]``     never send response headers (close after S seconds if given).

``GET /_requests`` lists the records (``DELETE`` clears them); each has ``path``, ``query``,
``method``, ``vendor``, ``model``, ``body`` (parsed JSON or None), ``headers`` (lower-case
names, credentials replaced by ``"***"``), ``auth_ok``, ``stream``, ``fault``, ``status``,
``chunks_sent``, ``completed``, ``server_aborted``, ``client_closed_early`` (the client
closed or reset the connection before the response ended: EOF/ECONNRESET on read or
EPIPE/ECONNRESET on write), ``started`` and ``ended`` (``time.time()`` floats). A client that
half-closes its sending side after the request counts as closed.

Python: ``with FakeUpstream(api_key="k") as up: ... up.url ... up.requests``.
Script: ``python3 fake_upstream.py --port 9999 --api-key k --delay-ms 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import email.utils
import http
import ipaddress
import json
import random
import re
import signal
import socket
import string
import struct
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
SENSITIVE_HEADERS = {"authorization", "proxy-authorization", "x-goog-api-key", "x-api-key",
                     "api-key", "cookie"}
FAULT_RE = re.compile(r"\[\[fault:([^\]]*)\]\]")
FAULT_NAMES = {"status", "die_mid", "reset_mid", "error_mid", "malformed", "stall_first",
               "stall_mid", "slow", "hang_headers"}
DEFAULT_RETRY_AFTER = 2
GEMINI_PATH_RE = re.compile(
    r"^/(v1beta|v1|v1alpha)/models/([^/:]+):(streamGenerateContent|generateContent)$")


# --------------------------------------------------------------------------- helpers


def answer_text(turn, n_messages, system, last_user_text):
    """The deterministic answer for a conversation."""
    return "Fake turn %d (%d messages, system: %s): %s" % (
        turn, n_messages, "yes" if system else "no", last_user_text)


def split_words(text):
    """Word pieces that concatenate to exactly ``text`` (leading whitespace kept)."""
    pieces = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)):]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces = [rest]
    return pieces


class Fault:
    """A parsed fault: ``name``, ``code`` (status only) and ``arg`` (a string or None)."""

    def __init__(self, name, code=None, arg=None):
        self.name, self.code, self.arg = name, code, arg

    def num(self, default):
        if self.arg is None or str(self.arg).strip() == "":
            return default
        return float(self.arg)

    def describe(self):
        parts = [self.name] + ([str(self.code)] if self.code is not None else []) + \
            ([str(self.arg)] if self.arg is not None else [])
        return ":".join(parts)

    @classmethod
    def parse(cls, spec, arg=None):
        """``"die_mid:3"``, ``"status:429:5"``, or ``("status", 429)`` etc. ValueError if bad."""
        parts = [p.strip() for p in str(spec).split(":")]
        name, rest = parts[0].lower(), parts[1:]
        if name not in FAULT_NAMES:
            raise ValueError("unknown fault %r" % name)
        if arg is not None:
            arg = str(arg)
        if name == "status":
            if rest:
                code_s, farg = rest[0], (rest[1] if len(rest) > 1 else arg)
            else:
                code_s, farg = arg, None
            try:
                code = int(code_s)
            except (TypeError, ValueError):
                raise ValueError("status fault needs a code") from None
            if not 400 <= code <= 599:
                raise ValueError("status code must be 4xx or 5xx")
            fault = cls(name, code, farg)
        else:
            fault = cls(name, None, ":".join(rest) if rest else arg)
        if fault.arg is not None and name != "status" and name != "malformed":
            float(fault.arg)      # validate now: ValueError if not a number
        return fault


def _now_rfc3339():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rand_id(n):
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


def _compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _text_of(content):
    """Text of an OpenAI/Ollama message content: a string, a list of parts, or None."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
        return "".join(out)
    return ""


def _count_tokens(texts):
    return max(1, sum(len(t.split()) for t in texts))


class _ClientGone(Exception):
    pass


class _BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class _ApiError(Exception):
    """A vendor-format error answer (status, message, extra fields for the vendor body)."""

    def __init__(self, status, message=None, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


# --------------------------------------------------------------------------- vendors


class _OpenAI:
    name = "openai"
    content_type = "text/event-stream; charset=utf-8"
    sep = "\n\n"

    def __init__(self, model, include_usage):
        self.model, self.include_usage = model, include_usage
        self.id = "chatcmpl-" + _rand_id(29)
        self.created = int(time.time())
        self.fingerprint = "fp_fake0001"

    def _chunk(self, choices, usage=None):
        d = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
             "model": self.model, "service_tier": "default",
             "system_fingerprint": self.fingerprint, "choices": choices}
        if self.include_usage:
            d["usage"] = usage
        return ("data: " + _compact(d) + self.sep).encode()

    @staticmethod
    def _choice(delta, finish=None):
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    @staticmethod
    def _usage(prompt, completion):
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}

    def head(self):
        return [self._chunk(self._choice({"role": "assistant", "content": "",
                                          "refusal": None}))]

    def piece(self, text, index, last, finish, prompt):
        return self._chunk(self._choice({"content": text}))

    def tail(self, finish, prompt, completion):
        out = [self._chunk(self._choice({}, finish))]
        if self.include_usage:
            out.append(self._chunk([], self._usage(prompt, completion)))
        out.append(("data: [DONE]" + self.sep).encode())
        return out

    def end(self):
        return b""

    def malformed(self):
        return ("data: {not json" + self.sep).encode()

    def error_event(self):
        body = {"error": {"message": "The server had an error while processing your "
                          "request. Sorry about that!", "type": "server_error",
                          "param": None, "code": None}}
        return ("data: " + _compact(body) + self.sep).encode()

    def full(self, text, finish, prompt, completion):
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0,
                             "message": {"role": "assistant", "content": text,
                                         "refusal": None, "annotations": []},
                             "logprobs": None, "finish_reason": finish}],
                "usage": self._usage(prompt, completion), "service_tier": "default",
                "system_fingerprint": self.fingerprint}

    @staticmethod
    def finish_reason(cut):
        return "length" if cut else "stop"

    @staticmethod
    def error_body(status, message, model="", retry=None, **extra):
        defaults = {
            400: ("Bad request.", "invalid_request_error", None),
            401: ("Incorrect API key provided. You can find your API key at "
                  "https://platform.openai.com/account/api-keys.",
                  "invalid_request_error", "invalid_api_key"),
            403: ("Country, region, or territory not supported", "request_forbidden",
                  "unsupported_country_region_territory"),
            404: ("The model `%s` does not exist or you do not have access to it." % model,
                  "invalid_request_error", "model_not_found"),
            429: ("Rate limit reached for %s: requests per min (RPM). Please try again in "
                  "%ss." % (model, retry if retry is not None else DEFAULT_RETRY_AFTER),
                  "requests", "rate_limit_exceeded"),
            500: ("The server had an error while processing your request. Sorry about "
                  "that!", "server_error", None),
            503: ("The engine is currently overloaded, please try again later",
                  "server_error", None),
        }
        dmsg, dtype, dcode = defaults.get(
            status, (http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_
                     else "Error", "server_error" if status >= 500 else
                     "invalid_request_error", None))
        err = {"message": message or dmsg, "type": extra.get("type", dtype),
               "param": extra.get("param"), "code": extra.get("code", dcode)}
        return _compact({"error": err}).encode(), "application/json; charset=utf-8"


class _Gemini:
    name = "gemini"

    def __init__(self, model, sse=True, crlf=True):
        self.model, self.sse = model, sse
        self.sep = "\r\n\r\n" if crlf else "\n\n"
        self.content_type = "text/event-stream" if sse else "application/json; charset=UTF-8"
        self.response_id = _rand_id(22)
        self.first = True

    def _frame(self, obj):
        s = json.dumps(obj, ensure_ascii=False)
        if self.sse:
            return ("data: " + s + self.sep).encode()
        lead = "[" if self.first else "\r\n,"
        self.first = False
        return (lead + s).encode()

    @staticmethod
    def _usage(prompt, completion):
        return {"promptTokenCount": prompt, "candidatesTokenCount": completion,
                "totalTokenCount": prompt + completion,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}

    def _response(self, text, finish, prompt, completion):
        cand = {"content": {"parts": [{"text": text}], "role": "model"}}
        if finish:
            cand["finishReason"] = finish
        cand["index"] = 0
        return {"candidates": [cand], "usageMetadata": self._usage(prompt, completion),
                "modelVersion": self.model, "responseId": self.response_id}

    def head(self):
        return []

    def piece(self, text, index, last, finish, prompt):
        return self._frame(self._response(text, finish if last else None, prompt, index + 1))

    def tail(self, finish, prompt, completion):
        return []

    def end(self):
        if self.sse:
            return b""
        return b"]" if not self.first else b"[]"

    def malformed(self):
        return ("data: {not json" + self.sep).encode() if self.sse else b""

    def error_event(self):
        return self._frame({"error": {"code": 500, "message": "An internal error has "
                                      "occurred. Please retry or report in "
                                      "https://developers.generativeai.google/guide/"
                                      "troubleshooting", "status": "INTERNAL"}})

    def full(self, text, finish, prompt, completion):
        return self._response(text, finish, prompt, completion)

    @staticmethod
    def finish_reason(cut):
        return "MAX_TOKENS" if cut else "STOP"

    @staticmethod
    def error_body(status, message, model="", retry=None, **extra):
        defaults = {
            400: ("Request contains an invalid argument.", "INVALID_ARGUMENT"),
            401: ("Request had invalid authentication credentials. Expected OAuth 2 access "
                  "token, login cookie or other valid authentication credential.",
                  "UNAUTHENTICATED"),
            403: ("The caller does not have permission", "PERMISSION_DENIED"),
            404: ("models/%s is not found for API version v1beta, or is not supported for "
                  "generateContent. Call ListModels to see the list of available models "
                  "and their supported methods." % model, "NOT_FOUND"),
            409: ("Aborted.", "ABORTED"),
            429: ("You exceeded your current quota, please check your plan and billing "
                  "details.", "RESOURCE_EXHAUSTED"),
            499: ("The operation was cancelled.", "CANCELLED"),
            500: ("An internal error has occurred. Please retry or report in "
                  "https://developers.generativeai.google/guide/troubleshooting",
                  "INTERNAL"),
            501: ("Not implemented.", "UNIMPLEMENTED"),
            503: ("The model is overloaded. Please try again later.", "UNAVAILABLE"),
            504: ("Deadline expired before operation could complete.", "DEADLINE_EXCEEDED"),
        }
        dmsg, dstatus = defaults.get(status, ("Error.", "INTERNAL" if status >= 500
                                              else "FAILED_PRECONDITION"))
        err = {"code": status, "message": message or dmsg,
               "status": extra.get("rpc_status", dstatus)}
        details = list(extra.get("details", []))
        if status == 429:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": "%ss" % (retry if retry is not None
                                                   else DEFAULT_RETRY_AFTER)})
        if details:
            err["details"] = details
        return (json.dumps({"error": err}, indent=2) + "\n").encode(), \
            "application/json; charset=UTF-8"


class _Ollama:
    name = "ollama"
    content_type = "application/x-ndjson"

    def __init__(self, model):
        self.model = model
        self.t0 = time.monotonic_ns()

    def _line(self, obj):
        return (_compact(obj) + "\n").encode()

    def head(self):
        return []

    def piece(self, text, index, last, finish, prompt):
        return self._line({"model": self.model, "created_at": _now_rfc3339(),
                           "message": {"role": "assistant", "content": text}, "done": False})

    def _final(self, text, finish, prompt, completion):
        total = max(1, time.monotonic_ns() - self.t0)
        return {"model": self.model, "created_at": _now_rfc3339(),
                "message": {"role": "assistant", "content": text},
                "done_reason": finish, "done": True, "total_duration": total,
                "load_duration": 1000000, "prompt_eval_count": prompt,
                "prompt_eval_duration": 2000000, "eval_count": completion,
                "eval_duration": max(1, total - 3000000)}

    def tail(self, finish, prompt, completion):
        return [self._line(self._final("", finish, prompt, completion))]

    def end(self):
        return b""

    def malformed(self):
        return b"{broken\n"

    def error_event(self):
        return self._line({"error": "an error was encountered while running the model: "
                                    "unexpected EOF"})

    def full(self, text, finish, prompt, completion):
        return self._final(text, finish, prompt, completion)

    @staticmethod
    def finish_reason(cut):
        return "length" if cut else "stop"

    @staticmethod
    def error_body(status, message, model="", retry=None, **extra):
        defaults = {400: "invalid request", 401: "unauthorized", 403: "forbidden",
                    404: 'model "%s" not found, try pulling it first' % model,
                    429: "too many requests", 500: "internal server error",
                    503: "server busy, please try again.  maximum pending requests exceeded"}
        msg = message or defaults.get(status, "error")
        return _compact({"error": msg}).encode(), "application/json; charset=utf-8"


# --------------------------------------------------------------------------- connection


class _Conn:
    """One client connection: buffered reads, EOF watch while responding, chunked writes."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.buf = bytearray()
        self.gone = asyncio.Event()
        self.closed = False           # we closed the connection ourselves
        self._watch_task = None

    # ---- reading
    async def _fill(self):
        try:
            data = await self.reader.read(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            return False
        self.buf += data
        return True

    async def read_head(self):
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self.buf[:i])
                del self.buf[:i + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                raise _BadRequest(431, "request header too large")
            if not await self._fill():
                return None

    async def read_exact(self, n):
        while len(self.buf) < n:
            if not await self._fill():
                raise _ClientGone()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def read_line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > MAX_HEAD:
                raise _BadRequest(400, "line too long")
            if not await self._fill():
                raise _ClientGone()

    async def read_chunked(self):
        out = bytearray()
        while True:
            size_line = await self.read_line()
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "bad chunk size") from None
            if size == 0:
                while await self.read_line():      # trailers up to the empty line
                    pass
                return bytes(out)
            out += await self.read_exact(size)
            if len(out) > MAX_BODY:
                raise _BadRequest(413, "body too large")
            await self.read_exact(2)

    # ---- watching for the client going away while we answer
    def watch(self):
        self.gone.clear()
        self._watch_task = asyncio.ensure_future(self._watch())

    async def _watch(self):
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.buf += data                  # pipelined bytes: keep for later
        except (ConnectionError, OSError):
            pass
        self.gone.set()

    async def unwatch(self):
        if self._watch_task is not None:
            task, self._watch_task = self._watch_task, None
            if not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass

    # ---- writing
    async def send(self, data):
        if self.gone.is_set() or self.writer.transport.is_closing():
            self.gone.set()
            raise _ClientGone()
        if not data:
            return
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.gone.set()
            raise _ClientGone() from None

    async def send_chunk(self, data):
        if data:
            await self.send(b"%x\r\n" % len(data) + data + b"\r\n")

    async def sleep(self, secs):
        """Sleep, but raise _ClientGone as soon as the client goes away."""
        if secs <= 0:
            if self.gone.is_set():
                raise _ClientGone()
            return
        try:
            await asyncio.wait_for(self.gone.wait(), secs)
        except asyncio.TimeoutError:
            return
        raise _ClientGone()

    def abort(self, rst=False):
        self.closed = True
        if rst:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                except OSError:
                    pass
        self.writer.transport.abort()


def _head_bytes(status, headers):
    phrase = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ \
        else "Unknown"
    lines = ["HTTP/1.1 %d %s" % (status, phrase),
             "Date: " + email.utils.formatdate(usegmt=True)]
    lines += ["%s: %s" % kv for kv in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --------------------------------------------------------------------------- server


class FakeUpstream:
    """The fake server, run on its own asyncio loop in a background thread."""

    def __init__(self, host="127.0.0.1", port=0, api_key=None, delay_ms=10, gemini_crlf=True):
        try:
            ip = ipaddress.ip_address(socket.gethostbyname(host))
        except (OSError, ValueError):
            raise ValueError("bad host %r" % host) from None
        if not ip.is_loopback:
            raise ValueError("FakeUpstream listens on loopback only, not %r" % host)
        self.host, self.port = str(ip), port
        self.api_key = api_key
        self.delay_ms = float(delay_ms)
        self._default_delay_ms = float(delay_ms)
        self.gemini_crlf = gemini_crlf
        self._lock = threading.Lock()
        self._records = []
        self._fault = None
        self._fault_times = None
        self._active = 0
        self._peak = 0
        self._thread = None
        self._loop = None
        self._ready = threading.Event()
        self._startup_error = None
        self._stop_ev = None
        self._tasks = set()

    # ---- public API
    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    @property
    def requests(self):
        """A snapshot (deep copy) of the request records, oldest first."""
        with self._lock:
            return copy.deepcopy(self._records)

    @property
    def active_streams(self):
        with self._lock:
            return self._active

    @property
    def peak_streams(self):
        """Most responses in progress at once since start (or reset_peak)."""
        with self._lock:
            return self._peak

    def reset_peak(self):
        with self._lock:
            self._peak = self._active

    def clear_requests(self):
        with self._lock:
            self._records.clear()

    def set_fault(self, fault, arg=None, times=None):
        """Set the global fault (``"status:429"``, ``"die_mid"``, ...); None clears."""
        parsed = None if fault is None else Fault.parse(fault, arg)
        with self._lock:
            self._fault, self._fault_times = parsed, (int(times) if times is not None
                                                     else None)

    def clear_fault(self):
        self.set_fault(None)

    def wait_for(self, predicate, timeout=5.0, interval=0.01):
        """Poll ``predicate(self.requests)`` until true; return the records or raise."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.requests
            if predicate(recs):
                return recs
            if time.monotonic() >= deadline:
                raise TimeoutError("condition not met within %.1f s; records: %r"
                                   % (timeout, recs))
            time.sleep(interval)

    def start(self):
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        if self._startup_error is not None:
            self._thread.join(5)
            self._thread = None
            raise self._startup_error
        return self

    def stop(self):
        if self._thread is None:
            return
        loop, ev = self._loop, self._stop_ev
        if loop is not None and ev is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass
        self._thread.join(10)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ---- loop thread
    def _run(self):
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:                      # noqa: BLE001 - reported to start()
            if not self._ready.is_set():
                self._startup_error = e
        finally:
            self._ready.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self):
        self._stop_ev = asyncio.Event()
        server = await asyncio.start_server(self._on_conn, self.host, self.port,
                                            backlog=4096, reuse_address=True)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop_ev.wait()
        finally:
            server.close()
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _on_conn(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        conn = _Conn(reader, writer)
        try:
            await self._serve(conn)
        except (_ClientGone, ConnectionError, OSError, asyncio.CancelledError):
            pass
        except Exception:                               # noqa: BLE001 - a bug here: show it
            traceback.print_exc()
        finally:
            self._tasks.discard(task)
            await conn.unwatch()
            if not writer.transport.is_closing():
                writer.transport.close()

    async def _serve(self, conn):
        while True:
            try:
                head = await conn.read_head()
            except _BadRequest as e:
                await self._plain(conn, e.status, str(e), close=True)
                return
            if head is None:
                return
            try:
                req = await self._parse_request(conn, head)
            except _BadRequest as e:
                await self._plain(conn, e.status, str(e), close=True)
                return
            keep = await self._dispatch(conn, req)
            if not keep or conn.closed:
                return

    async def _parse_request(self, conn, head):
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:
            raise _BadRequest(400, "bad request head") from None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "bad request line")
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            if ":" not in line:
                raise _BadRequest(400, "bad header line")
            k, v = line.split(":", 1)
            k, v = k.strip().lower(), v.strip()
            headers[k] = headers[k] + ", " + v if k in headers else v
        conn_hdr = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep = "close" not in conn_hdr
        else:
            keep = "keep-alive" in conn_hdr
        if headers.get("expect", "").lower() == "100-continue":
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await conn.read_chunked()
        elif "content-length" in headers:
            try:
                n = int(headers["content-length"])
            except ValueError:
                raise _BadRequest(400, "bad content-length") from None
            if n < 0 or n > MAX_BODY:
                raise _BadRequest(413, "body too large")
            body = await conn.read_exact(n)
        else:
            body = b""
        split = urlsplit(target)
        return {"method": method, "target": target, "path": split.path,
                "query": dict(parse_qsl(split.query, keep_blank_values=True)),
                "headers": headers, "body": body, "keep": keep}

    # ---- simple responses
    async def _respond(self, conn, status, body, ctype, keep, extra=()):
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        headers += list(extra)
        if not keep:
            headers.append(("Connection", "close"))
        await conn.send(_head_bytes(status, headers) + body)
        return keep

    async def _plain(self, conn, status, message, close=False, keep=True):
        body = _compact({"error": message}).encode()
        return await self._respond(conn, status, body, "application/json", keep and not close)

    # ---- routing
    async def _dispatch(self, conn, req):
        path, method = req["path"], req["method"]
        if path == "/_control":
            return await self._control(conn, req)
        if path == "/_requests":
            if method == "GET":
                body = json.dumps(self.requests).encode()
                return await self._respond(conn, 200, body, "application/json", req["keep"])
            if method == "DELETE":
                self.clear_requests()
                return await self._respond(conn, 204, b"", "application/json", req["keep"])
            return await self._plain(conn, 405, "method not allowed", keep=req["keep"])
        if path in ("/v1/chat/completions", "/chat/completions"):
            vendor = "openai"
        elif GEMINI_PATH_RE.match(path):
            vendor = "gemini"
        elif path == "/api/chat":
            vendor = "ollama"
        elif method == "GET" and path == "/":
            return await self._respond(conn, 200, b"Ollama is running",
                                       "text/plain; charset=utf-8", req["keep"])
        elif method == "GET" and path == "/api/version":
            return await self._respond(conn, 200, b'{"version":"0.6.0"}',
                                       "application/json; charset=utf-8", req["keep"])
        else:
            return await self._plain(conn, 404, "not found: %s %s" % (method, path),
                                     keep=req["keep"])
        if method != "POST":
            return await self._plain(conn, 405, "method not allowed", keep=req["keep"])
        return await self._model_request(conn, req, vendor)

    async def _control(self, conn, req):
        keep = req["keep"]
        if req["method"] == "DELETE":
            with self._lock:
                self._fault, self._fault_times = None, None
                self.delay_ms = self._default_delay_ms
            return await self._respond(conn, 204, b"", "application/json", keep)
        if req["method"] == "POST":
            try:
                cfg = json.loads(req["body"] or b"{}")
                if not isinstance(cfg, dict):
                    raise ValueError("body must be an object")
                if "fault" in cfg:
                    self.set_fault(cfg["fault"], cfg.get("arg"), cfg.get("times"))
                if "delay_ms" in cfg:
                    with self._lock:
                        self.delay_ms = float(cfg["delay_ms"])
            except (ValueError, TypeError) as e:
                return await self._plain(conn, 400, str(e), keep=keep)
        elif req["method"] != "GET":
            return await self._plain(conn, 405, "method not allowed", keep=keep)
        with self._lock:
            state = {"fault": self._fault.describe() if self._fault else None,
                     "times": self._fault_times, "delay_ms": self.delay_ms}
        return await self._respond(conn, 200, _compact(state).encode(),
                                   "application/json", keep)

    def _take_global_fault(self):
        with self._lock:
            fault = self._fault
            if fault is not None and self._fault_times is not None:
                self._fault_times -= 1
                if self._fault_times <= 0:
                    self._fault, self._fault_times = None, None
            return fault

    # ---- model requests
    def _new_record(self, req, vendor):
        headers = {k: ("***" if k in SENSITIVE_HEADERS else v)
                   for k, v in req["headers"].items()}
        query = {k: ("***" if k == "key" else v) for k, v in req["query"].items()}
        rec = {"path": req["path"], "query": query, "method": req["method"],
               "vendor": vendor, "model": None, "body": None, "headers": headers,
               "auth_ok": None, "stream": None, "fault": None, "status": None,
               "chunks_sent": 0, "completed": False, "server_aborted": False,
               "client_closed_early": False, "started": time.time(), "ended": None}
        with self._lock:
            self._records.append(rec)
        return rec

    def _upd(self, rec, **kw):
        with self._lock:
            rec.update(kw)

    async def _model_request(self, conn, req, vendor):
        rec = self._new_record(req, vendor)
        conn.watch()
        with self._lock:
            self._active += 1
            self._peak = max(self._peak, self._active)
        keep = req["keep"]
        try:
            keep = await self._model_request_inner(conn, req, vendor, rec)
        except _ClientGone:
            if not conn.closed:
                self._upd(rec, client_closed_early=True)
            keep = False
        except asyncio.CancelledError:
            keep = False
            raise
        finally:
            with self._lock:
                self._active -= 1
                if rec["ended"] is None:
                    rec["ended"] = time.time()
            await conn.unwatch()
        return keep and not conn.closed

    async def _model_request_inner(self, conn, req, vendor, rec):
        keep = req["keep"]
        gm = GEMINI_PATH_RE.match(req["path"]) if vendor == "gemini" else None
        model = unquote(gm.group(2)) if gm else None
        try:
            body = json.loads(req["body"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        if vendor != "gemini" and isinstance(body, dict):
            model = body.get("model") if isinstance(body.get("model"), str) else None
        self._upd(rec, body=body, model=model)

        if vendor == "openai":
            fmt = _OpenAI(model or "", False)
        elif vendor == "gemini":
            fmt = _Gemini(model, sse=req["query"].get("alt") == "sse", crlf=self.gemini_crlf)
        else:
            fmt = _Ollama(model or "")

        async def fail(status, message=None, retry=None, **extra):
            payload, ctype = fmt.error_body(status, message, model=model or "", retry=retry,
                                            **extra)
            hdrs = []
            if status == 429 or (status == 503 and retry is not None):
                hdrs.append(("Retry-After", str(retry if retry is not None
                                                else DEFAULT_RETRY_AFTER)))
            self._upd(rec, status=status, completed=True)
            return await self._respond(conn, status, payload, ctype, keep, hdrs)

        # 1. authentication (before looking at the body, like the real services)
        auth = self._check_auth(vendor, req)
        self._upd(rec, auth_ok=auth[0])
        if not auth[0]:
            return await fail(auth[1], auth[2], **auth[3])

        # 2. body validation and the conversation summary
        try:
            if body is None:
                raise _ApiError(400, {
                    "openai": "We could not parse the JSON body of your request. (HINT: "
                              "This likely means you aren't using your HTTP library "
                              "correctly. The OpenAI API expects a JSON payload, but what "
                              "was sent was not valid JSON.)",
                    "gemini": "Invalid JSON payload received.",
                    "ollama": "invalid character looking for beginning of value",
                }[vendor])
            if not isinstance(body, dict):
                raise _ApiError(400, "request body must be a JSON object")
            conv = {"openai": self._openai_conv, "gemini": self._gemini_conv,
                    "ollama": self._ollama_conv}[vendor](body, req)
        except _ApiError as e:
            return await fail(e.status, e.message, **e.extra)
        stream = conv["stream"]
        if vendor == "openai":
            fmt.include_usage = stream and conv["include_usage"]
        self._upd(rec, stream=stream)

        # 3. the fault: marker in the last user message, else the global one
        fault = None
        m = FAULT_RE.search(conv["last_user"])
        if m:
            try:
                fault = Fault.parse(m.group(1))
            except ValueError as e:
                return await fail(400, "fake_upstream: %s" % e)
        else:
            fault = self._take_global_fault()
        self._upd(rec, fault=fault.describe() if fault else None)
        name = fault.name if fault else None

        if name == "status":
            retry = fault.arg if fault.arg not in (None, "") else None
            return await fail(fault.code, None, retry=retry)
        if name == "hang_headers":
            secs = fault.num(None)
            if secs is None:
                await conn.gone.wait()
                raise _ClientGone()
            await conn.sleep(secs)
            conn.abort()
            self._upd(rec, server_aborted=True)
            return False
        if name == "stall_first":
            await conn.sleep(fault.num(3.0))

        # 4. the answer
        text = answer_text(conv["turn"], conv["n"], conv["system"], conv["last_user"])
        pieces = split_words(text)
        limit = conv["max_tokens"]
        cut = limit is not None and limit < len(pieces)
        if cut:
            pieces = pieces[:limit]
        finish = fmt.finish_reason(cut)
        prompt = conv["prompt_tokens"]

        if not stream:
            payload = fmt.full("".join(pieces), finish, prompt, len(pieces))
            if vendor == "gemini":
                data, ctype = (json.dumps(payload, indent=2) + "\n").encode(), \
                    "application/json; charset=UTF-8"
            else:
                data, ctype = _compact(payload).encode(), "application/json; charset=utf-8"
            if name in ("die_mid", "reset_mid"):
                hdr = _head_bytes(200, [("Content-Type", ctype),
                                        ("Content-Length", str(len(data)))])
                await conn.send(hdr + data[:len(data) // 2])
                conn.abort(rst=name == "reset_mid")
                self._upd(rec, status=200, server_aborted=True)
                return False
            self._upd(rec, status=200)
            await self._respond(conn, 200, data, ctype, keep)
            self._upd(rec, completed=True, chunks_sent=len(pieces))
            return keep

        hdrs = [("Content-Type", fmt.content_type), ("Transfer-Encoding", "chunked"),
                ("Cache-Control", "no-cache")]
        if vendor == "openai":
            hdrs.append(("X-Request-Id", "req_" + _rand_id(24)))
        if not keep:
            hdrs.append(("Connection", "close"))
        await conn.send(_head_bytes(200, hdrs))
        self._upd(rec, status=200)
        for ev in fmt.head():
            await conn.send_chunk(ev)

        delay = (fault.num(200.0) if name == "slow" else self.delay_ms) / 1000.0
        stop_at = int(fault.num(2 if name != "error_mid" else 1)) \
            if name in ("die_mid", "reset_mid", "error_mid") else None
        sent = 0
        for i, piece in enumerate(pieces):
            if stop_at is not None and i >= stop_at:
                break
            if name == "stall_mid" and i == 2:
                await conn.sleep(fault.num(3.0))
            await conn.sleep(delay)
            await conn.send_chunk(fmt.piece(piece, i, i == len(pieces) - 1, finish, prompt))
            sent += 1
            self._upd(rec, chunks_sent=sent)
            if name == "malformed":
                await conn.send_chunk(fmt.malformed())
        if name in ("die_mid", "reset_mid"):
            conn.abort(rst=name == "reset_mid")
            self._upd(rec, server_aborted=True)
            return False
        if name == "error_mid":
            await conn.send_chunk(fmt.error_event())
        else:
            for ev in fmt.tail(finish, prompt, sent):
                await conn.send_chunk(ev)
        await conn.send_chunk(fmt.end())
        await conn.send(b"0\r\n\r\n")
        self._upd(rec, completed=True)
        if not keep:
            conn.closed = True
        return keep

    # ---- per vendor: auth and conversations
    def _check_auth(self, vendor, req):
        """(ok, status, message, extra) for this request."""
        key, h = self.api_key, req["headers"]
        if key is None:
            return (True, 0, None, {})
        if vendor == "gemini":
            got = h.get("x-goog-api-key", req["query"].get("key"))
            if got is None or got == "":
                return (False, 403, "Method doesn't allow unregistered callers (callers "
                        "without established identity). Please use API Key or other form "
                        "of API consumer identity to call this API.", {})
            if got != key:
                return (False, 400, "API key not valid. Please pass a valid API key.", {
                    "rpc_status": "INVALID_ARGUMENT", "details": [{
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"}}]})
            return (True, 0, None, {})
        auth = h.get("authorization")
        if auth == "Bearer " + key:
            return (True, 0, None, {})
        if vendor == "ollama":
            return (False, 401, "unauthorized", {})
        if not auth:
            msg = ("You didn't provide an API key. You need to provide your API key in an "
                   "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                   "YOUR_KEY), or as the password field (with blank username) if you're "
                   "accessing the API from your browser and are prompted for a username and "
                   "password. You can obtain an API key from "
                   "https://platform.openai.com/account/api-keys.")
        else:
            msg = ("Incorrect API key provided: %s. You can find your API key at "
                   "https://platform.openai.com/account/api-keys." % _mask(auth))
        return (False, 401, msg, {"code": "invalid_api_key"})

    @staticmethod
    def _openai_conv(body, req):
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _ApiError(400, "you must provide a model parameter", param=None)
        msgs = body.get("messages")
        if msgs is None:
            raise _ApiError(400, "Missing required parameter: 'messages'.", param="messages",
                            code="missing_required_parameter")
        if not isinstance(msgs, list) or not msgs:
            raise _ApiError(400, "Invalid 'messages': empty array. Expected an array with "
                            "minimum length 1, but got an empty array instead.",
                            param="messages", code="empty_array")
        turn = n = 0
        system = False
        last, texts = "", []
        for i, m in enumerate(msgs):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in ("system", "developer", "user", "assistant", "tool", "function"):
                raise _ApiError(400, "Invalid value: %r. Supported values are: 'system', "
                                "'assistant', 'user', 'function', 'tool', and 'developer'."
                                % role, param="messages[%d].role" % i,
                                code="invalid_value")
            t = _text_of(m.get("content"))
            texts.append(t)
            if role in ("system", "developer"):
                system = True
                continue
            n += 1
            if role == "user":
                turn += 1
                last = t
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise _ApiError(400, "Invalid 'max_tokens': integer below minimum value. "
                                "Expected a value >= 1, but got %r instead." % (limit,),
                                param="max_tokens", code="integer_below_min_value")
        stream = body.get("stream") is True
        so = body.get("stream_options")
        include_usage = isinstance(so, dict) and so.get("include_usage") is True
        return {"turn": turn, "n": n, "system": system, "last_user": last,
                "prompt_tokens": _count_tokens(texts), "max_tokens": limit,
                "stream": stream, "include_usage": include_usage}

    @staticmethod
    def _gemini_conv(body, req):
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _ApiError(400, "* GenerateContentRequest.contents: contents is not "
                            "specified\n")
        si = body.get("systemInstruction", body.get("system_instruction"))
        system = False
        texts = []
        if si is not None:
            if not isinstance(si, dict):
                raise _ApiError(400, "Invalid value at 'system_instruction'")
            sparts = si.get("parts") or []
            stext = "".join(p.get("text", "") for p in sparts if isinstance(p, dict))
            system = True
            texts.append(stext)
        turn = n = 0
        last = ""
        for c in contents:
            if not isinstance(c, dict):
                raise _ApiError(400, "Invalid value at 'contents'")
            role = c.get("role", "user")
            if role not in ("user", "model", "function", ""):
                raise _ApiError(400, "Please use a valid role: user, model.")
            parts = c.get("parts")
            if not isinstance(parts, list) or not parts:
                raise _ApiError(400, "* GenerateContentRequest.contents.parts: contents.parts"
                                " must not be empty.\n")
            t = "".join(p.get("text", "") for p in parts
                        if isinstance(p, dict) and isinstance(p.get("text", ""), str))
            texts.append(t)
            n += 1
            if role in ("user", ""):
                turn += 1
                last = t
        gc = body.get("generationConfig", body.get("generation_config")) or {}
        limit = None
        if isinstance(gc, dict):
            limit = gc.get("maxOutputTokens", gc.get("max_output_tokens"))
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            limit = None
        m = GEMINI_PATH_RE.match(req["path"])
        return {"turn": turn, "n": n, "system": system, "last_user": last,
                "prompt_tokens": _count_tokens(texts), "max_tokens": limit,
                "stream": m.group(3) == "streamGenerateContent"}

    @staticmethod
    def _ollama_conv(body, req):
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _ApiError(400, "model is required")
        msgs = body.get("messages")
        if msgs is None:
            msgs = []
        if not isinstance(msgs, list):
            raise _ApiError(400, "json: cannot unmarshal into Go struct field "
                            "ChatRequest.messages of type []api.Message")
        turn = n = 0
        system = False
        last, texts = "", []
        for m in msgs:
            if not isinstance(m, dict):
                raise _ApiError(400, "invalid message format")
            role = m.get("role")
            t = _text_of(m.get("content"))
            texts.append(t)
            if role == "system":
                system = True
                continue
            n += 1
            if role == "user":
                turn += 1
                last = t
        opts = body.get("options") or {}
        limit = opts.get("num_predict") if isinstance(opts, dict) else None
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            limit = None                 # -1 infinite, -2 fill context
        return {"turn": turn, "n": n, "system": system, "last_user": last,
                "prompt_tokens": _count_tokens(texts), "max_tokens": limit,
                "stream": body.get("stream", True) is not False}


def _mask(auth):
    key = auth[7:] if auth.startswith("Bearer ") else auth
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


# --------------------------------------------------------------------------- script


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake OpenAI/Gemini/Ollama streaming server.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--delay-ms", type=float, default=10)
    ap.add_argument("--gemini-lf", action="store_true",
                    help="end Gemini SSE events with \\n\\n instead of \\r\\n\\r\\n")
    args = ap.parse_args(argv)
    up = FakeUpstream(args.host, args.port, args.api_key, args.delay_ms,
                      gemini_crlf=not args.gemini_lf)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    up.start()
    print(up.url, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
