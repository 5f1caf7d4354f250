"""End-to-end fixtures for parleyd: start the real binary, talk to it over WS and HTTP.

Run with Debian's Python (websockets 10.4 and pytest 7.2 live there, not in pyenv):

    PARLEYD=/path/to/parleyd /usr/bin/python3 -m pytest tests/e2e

What lives here:
- ``ParleyServer``: one parleyd process on a free port; started with the common flags, ready
  once ``GET /health`` answers 200, stopped with SIGTERM and required to exit 0 within 10 s
  with no sanitizer report on stderr.
- fixtures ``server`` (one per session) and ``make_server(*extra_args, env=None)``
  (function scoped, stopped at the end of the test).
- ``Client``: an asyncio WebSocket client for the session protocol at ``/ws``.
- ``run(coro, timeout)``: runs a coroutine from a plain test function under a deadline.
- ``http(server, method, path, ...)``: one HTTP request through http.client.
- helpers to check a streamed turn (``run_turn``, ``answer_text``, ``check_seq``).

No test may take longer than ``TEST_DEADLINE`` seconds: an autouse watchdog fails it.
"""

import asyncio
import http.client as httplib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

DEFAULT_PARLEYD = "/work/main/build/parleyd"
PARLEYD = os.environ.get("PARLEYD") or DEFAULT_PARLEYD

BASE_ARGS = ["--echo-delay-ms", "2", "--workers", "2", "--shutdown-grace", "3"]
READY_TIMEOUT = 10.0      # s until GET /health answers 200
STOP_TIMEOUT = 10.0       # s from SIGTERM to exit
TEST_DEADLINE = 60        # s, hard per-test watchdog (each test aims for < 30 s)

# Session events whose seq advances (docs/protocol.md §1.2). user_typing and
# member_joined/member_left (presence) do not: they carry the current seq.
PERSISTENT_UPDATES = {"message_added", "history_cleared", "session_deleted"}
PERSISTENT_TYPES = {"status", "response_start", "chunk", "response_complete"}

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "WARNING: ThreadSanitizer")

_live_servers = []        # servers in use by the running test, for failure reports


# --------------------------------------------------------------------------- server


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parleyd_binary():
    if not (os.path.isfile(PARLEYD) and os.access(PARLEYD, os.X_OK)):
        pytest.fail(
            f"parleyd binary not found or not executable at {PARLEYD!r}. Build it "
            f"(cmake -S . -B build && cmake --build build) or set PARLEYD=/path/to/parleyd.",
            pytrace=False)
    return PARLEYD


class ParleyServer:
    """One parleyd process. ``start()`` returns once GET /health is 200."""

    def __init__(self, extra_args=(), env=None, base_args=BASE_ARGS):
        self.binary = parleyd_binary()
        self.port = free_port()
        self.host = "127.0.0.1"
        extra = [str(a) for a in extra_args]
        # Each server has a database of its own, kept across restart() and
        # removed by cleanup(), unless the test names one with --db.
        self._dbdir = None
        if "--db" in extra:
            self.db = extra[extra.index("--db") + 1]
        else:
            self._dbdir = tempfile.mkdtemp(prefix=f"parleyd-{self.port}-db-")
            self.db = os.path.join(self._dbdir, "parley.db")
            extra = ["--db", self.db, *extra]
        self.args = [self.binary, "--port", str(self.port), "--host", self.host, *base_args, *extra]
        # The flags given here decide; settings inherited from the caller's environment do not.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PARLEY_", "WEBSOCKET_")) and k != "GENAI_MODEL_ID"}
        if env:
            self.env.update(env)
        self.proc = None
        self.returncode = None
        self._err = tempfile.NamedTemporaryFile(prefix=f"parleyd-{self.port}-",
                                                suffix=".stderr", delete=False)
        self._out = tempfile.NamedTemporaryFile(prefix=f"parleyd-{self.port}-",
                                                suffix=".stdout", delete=False)

    # -- addresses
    @property
    def ws_url(self):
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def base_url(self):
        return f"http://{self.host}:{self.port}"

    # -- output
    def stderr_text(self):
        with open(self._err.name, "r", encoding="utf-8", errors="replace") as f:
            return f.read()

    def stdout_text(self):
        with open(self._out.name, "r", encoding="utf-8", errors="replace") as f:
            return f.read()

    def stderr_tail(self, n=60):
        lines = self.stderr_text().splitlines()
        return "\n".join(lines[-n:])

    # -- lifecycle
    def start(self):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, env=self.env)
        _live_servers.append(self)
        deadline = time.monotonic() + READY_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"parleyd exited with {self.proc.returncode} before it was ready\n"
                            f"command: {' '.join(self.args)}\nstderr:\n{self.stderr_tail()}",
                            pytrace=False)
            try:
                conn = httplib.HTTPConnection(self.host, self.port, timeout=1.0)
                conn.request("GET", "/health")
                r = conn.getresponse()
                r.read()
                conn.close()
                if r.status == 200:
                    return self
                last = f"status {r.status}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        pytest.fail(f"parleyd not ready within {READY_TIMEOUT}s (last: {last})\n"
                    f"command: {' '.join(self.args)}\nstderr:\n{self.stderr_tail()}",
                    pytrace=False)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: no clean-up of any kind, as in a crash."""
        self.proc.kill()
        self.returncode = self.proc.wait()
        if self in _live_servers:
            _live_servers.remove(self)

    def restart(self):
        """Starts the same command again (same port, same database)."""
        assert not self.running()
        return self.start()

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=STOP_TIMEOUT):
        """Wait for exit; returns the exit code, or kills and fails after ``timeout``."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"parleyd did not exit within {timeout}s of the signal\n"
                        f"stderr:\n{self.stderr_tail()}", pytrace=False)
        return self.returncode

    def stop(self, sig=signal.SIGTERM, check=True):
        """Signal, wait, and (``check``) require exit code 0 and no sanitizer report."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.send_signal(sig)
        code = self.wait()
        if self in _live_servers:
            _live_servers.remove(self)
        if check:
            self.check_exit(code)
        return code

    def check_exit(self, code):
        err = self.stderr_text()
        assert code == 0, (f"parleyd exited with {code} (expected 0 after signal)\n"
                           f"stderr:\n{self.stderr_tail()}")
        for marker in SANITIZER_MARKERS:
            assert marker not in err, f"sanitizer report in parleyd stderr:\n{self.stderr_tail(200)}"

    def cleanup(self):
        if self in _live_servers:
            _live_servers.remove(self)
        for f in (self._err, self._out):
            try:
                f.close()
                os.unlink(f.name)
            except OSError:
                pass
        if self._dbdir:
            shutil.rmtree(self._dbdir, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    """One shared parleyd for the tests that need no special flags."""
    srv = ParleyServer().start()
    yield srv
    srv.stop()
    srv.cleanup()


@pytest.fixture
def make_server():
    """Factory: ``make_server("--max-pending", "1", env={...})`` → a started ParleyServer."""
    made = []

    def factory(*extra_args, env=None, start=True):
        srv = ParleyServer(extra_args, env=env)
        made.append(srv)
        return srv.start() if start else srv

    yield factory
    errors = []
    for srv in made:
        if srv.proc is not None and srv.proc.poll() is None:
            try:
                srv.stop()
            except AssertionError as e:          # report but stop the others too
                errors.append(str(e))
        srv.cleanup()
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


def module_server(*extra_args, env=None):
    """Build a module-scoped fixture around one ParleyServer (used for special flags)."""
    @pytest.fixture(scope="module")
    def _fixture():
        srv = ParleyServer(extra_args, env=env).start()
        yield srv
        srv.stop()
        srv.cleanup()
    return _fixture


# --------------------------------------------------------------------------- watchdog & reports


class TestDeadline(Exception):
    pass


@pytest.fixture(autouse=True)
def _deadline():
    """Fail any test that runs past TEST_DEADLINE seconds (no pytest-timeout available)."""
    def on_alarm(signum, frame):
        raise TestDeadline(f"test exceeded {TEST_DEADLINE}s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_DEADLINE)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in list(_live_servers):
            try:
                tail = srv.stderr_tail()
            except OSError as e:
                tail = f"(stderr unavailable: {e})"
            report.sections.append((f"parleyd :{srv.port} stderr (tail)", tail))


# --------------------------------------------------------------------------- asyncio


def run(coro, timeout=25):
    """Run ``coro`` to completion from a sync test, failing after ``timeout`` seconds."""
    async def guarded():
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"async part of the test exceeded {timeout}s") from None
    return asyncio.run(guarded())


# --------------------------------------------------------------------------- WS client


class Client:
    """A session-protocol client. ``frames`` keeps every JSON frame received."""

    def __init__(self, ws, name=""):
        self.ws = ws
        self.name = name
        self.frames = []
        self.connected = None
        self.connection_id = None
        self._pending = []     # frames read ahead by drain()/recv_until that were not consumed

    @classmethod
    async def connect(cls, srv, path="/ws", name="", timeout=10):
        url = f"ws://{srv.host}:{srv.port}{path}"
        ws = await websockets.connect(url, max_size=None, compression=None,
                                      ping_interval=None, open_timeout=timeout,
                                      close_timeout=5, max_queue=4096)
        c = cls(ws, name)
        c.connected = await c.recv(timeout=timeout)
        assert c.connected.get("type") == "connected", c.connected
        c.connection_id = c.connected.get("connection_id")
        return c

    async def close(self):
        await self.ws.close()

    async def send(self, obj):
        await self.ws.send(json.dumps(obj))

    async def send_raw(self, data):
        """Send a raw text (str) or binary (bytes) frame."""
        await self.ws.send(data)

    async def recv(self, timeout=5):
        """Next frame as a dict (fails on a binary frame or a timeout)."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"client {self.name}: no frame within {timeout}s; "
                                 f"last frames: {self.frames[-5:]}") from None
        assert isinstance(raw, str), f"server sent a binary frame: {raw[:80]!r}"
        obj = json.loads(raw)
        assert isinstance(obj, dict) and isinstance(obj.get("type"), str), raw
        self.frames.append(obj)
        return obj

    async def recv_until(self, type_, update_type=None, timeout=15, pred=None):
        """Frames up to and including the first matching one (all of them, in order)."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"client {self.name}: no {type_}/{update_type} within {timeout}s; got "
                    f"{[(f['type'], f.get('update_type'), f.get('code')) for f in got]}")
            f = await self.recv(timeout=left)
            got.append(f)
            if f["type"] == type_ and (update_type is None or f.get("update_type") == update_type) \
                    and (pred is None or pred(f)):
                return got

    async def drain(self, duration=0.3):
        """Every frame that arrives within ``duration`` seconds."""
        got = []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                return got
            obj = json.loads(raw)
            self.frames.append(obj)
            got.append(obj)

    async def ping(self, id_=None, timeout=5):
        """ping → the frames up to the pong (checks the connection is still usable)."""
        msg = {"type": "ping"}
        if id_ is not None:
            msg["id"] = id_
        await self.send(msg)
        return await self.recv_until("pong", timeout=timeout)

    async def request(self, obj, expect, update_type=None, timeout=10):
        """Send ``obj``, return the first frame of type ``expect`` (failing on an error frame)."""
        await self.send(obj)
        frames = await self.recv_until(expect, update_type, timeout=timeout)
        errs = [f for f in frames[:-1] if f["type"] == "error"]
        assert not errs, f"unexpected error before {expect}: {errs}"
        return frames[-1]

    async def expect_error(self, obj_or_raw, code, timeout=10):
        """Send and return the error frame; asserts its code."""
        if isinstance(obj_or_raw, (str, bytes)):
            await self.send_raw(obj_or_raw)
        else:
            await self.send(obj_or_raw)
        frames = await self.recv_until("error", timeout=timeout)
        err = frames[-1]
        assert err.get("code") == code, f"expected error {code}, got {err}"
        assert isinstance(err.get("message"), str) and err["message"], err
        return err

    async def create_session(self, **fields):
        f = await self.request({"type": "create_session", **fields}, "session_created")
        return f

    async def join(self, session_id, **fields):
        return await self.request({"type": "join_session", "session_id": session_id, **fields},
                                  "session_joined")

    async def closed_code(self, timeout=10):
        """Read until the server closes the connection; return the close code."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"connection not closed within {timeout}s")
                try:
                    await asyncio.wait_for(self.ws.recv(), left)
                except asyncio.TimeoutError:
                    raise AssertionError(f"connection not closed within {timeout}s") from None
        except ConnectionClosed:
            pass
        await self.ws.wait_closed()
        return self.ws.close_code


async def connect(srv, n=None, name="c", batch=50):
    """One Client, or a list of ``n`` Clients opened ``batch`` at a time."""
    if n is None:
        return await Client.connect(srv, name=name)
    clients = []
    for start in range(0, n, batch):
        clients += await asyncio.gather(*[Client.connect(srv, name=f"{name}{i}")
                                          for i in range(start, min(n, start + batch))])
    return clients


async def run_turn(client, text, timeout=20, model_errors=False, **fields):
    """Send a chat and return every frame up to and including response_complete,
    with the sender's delivery_confirmation. That comes once the store has
    committed the message, which may be after the answer: then it (and anything
    that came between) is waited for and placed just before response_complete,
    so frames[-1] is always the completion. Error frames fail
    the turn, except MODEL_ERROR ones when ``model_errors``."""
    await client.send({"type": "chat", "message": text, **fields})
    frames = await client.recv_until("response_complete", timeout=timeout)
    if not of_type(frames, "delivery_confirmation") and not of_type(frames, "error"):
        late = await client.recv_until("delivery_confirmation", timeout=timeout)
        frames = frames[:-1] + late + frames[-1:]
    errs = [f for f in frames if f["type"] == "error" and not (model_errors and f["code"] == "MODEL_ERROR")]
    assert not errs, f"error frames during turn: {errs}"
    return frames


async def collect_turn(client, timeout=20, response_id=None):
    """Frames a (non-sending) member gets up to response_complete."""
    pred = None if response_id is None else (lambda f: f.get("response_id") == response_id)
    return await client.recv_until("response_complete", timeout=timeout, pred=pred)


def of_type(frames, type_, update_type=None):
    return [f for f in frames if f["type"] == type_ and
            (update_type is None or f.get("update_type") == update_type)]


def one(frames, type_, update_type=None):
    got = of_type(frames, type_, update_type)
    assert len(got) == 1, f"expected exactly one {type_}/{update_type}, got {len(got)}: {frames}"
    return got[0]


def answer_text(frames, response_id=None):
    chunks = [f for f in frames if f["type"] == "chunk" and
              (response_id is None or f.get("response_id") == response_id)]
    return "".join(c["text"] for c in chunks)


def echo_answer(turn, context, message, system_prompt=None):
    text = f"Echo turn {turn} ({context} context messages): {message}"
    if system_prompt is not None:
        text = f"[system prompt: {len(system_prompt)} chars] " + text
    return text


def is_persistent(f):
    if f["type"] == "session_update":
        return f.get("update_type") in PERSISTENT_UPDATES
    return f["type"] in PERSISTENT_TYPES


def check_seq(frames, session_id=None, after=None):
    """Every persistent session event has session_id and an int seq, strictly increasing.

    Returns the last seq seen (or ``after`` when there were none)."""
    last = after
    for f in frames:
        if not is_persistent(f):
            continue
        if session_id is not None and f.get("session_id") != session_id:
            continue
        assert isinstance(f.get("session_id"), str) and f["session_id"], f"no session_id: {f}"
        seq = f.get("seq")
        assert isinstance(seq, int) and not isinstance(seq, bool), f"no integer seq: {f}"
        if last is not None:
            assert seq > last, f"seq not strictly increasing ({last} then {seq}): {f}"
        last = seq
    return last


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --------------------------------------------------------------------------- HTTP


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        ctype = self.header("Content-Type") or ""
        assert ctype.startswith("application/json"), \
            f"Content-Type {ctype!r} is not application/json (status {self.status}): {self.text[:200]}"
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"body is not JSON (status {self.status}): {self.text[:300]!r}")

    def __repr__(self):
        return f"<Response {self.status} {self.text[:200]!r}>"


def http(srv, method, path, body=None, headers=None, timeout=10):
    """One request. ``body``: dict/list (sent as JSON), str/bytes (sent raw) or None."""
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
            hdrs.setdefault("Content-Type", "application/json")
        else:
            data = body
    conn = httplib.HTTPConnection(srv.host, srv.port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


# --------------------------------------------------------------------------- durability helpers
# (test_durability.py, test_crash.py)

SEQ_CRASH_SKIP = 1 << 20  # every session's seq jumps by this after an unclean stop


def is_seq_event(f):
    """A persistent session event (docs/protocol.md §1.2): it advances seq, is stored and
    is replayed on a resume. Wider than ``is_persistent``: the MODEL_ERROR error and read
    receipts too."""
    if is_persistent(f):
        return True
    if f["type"] == "error" and f.get("code") == "MODEL_ERROR":
        return True
    return f["type"] == "delivery_confirmation" and f.get("status") == "read"


def seq_events(frames, session_id=None):
    return [f for f in frames if is_seq_event(f) and
            (session_id is None or f.get("session_id") == session_id)]


def get_json(srv, path, status=200):
    r = http(srv, "GET", path)
    assert r.status == status, f"GET {path}: {r}"
    return r.json()


def stats(srv):
    return get_json(srv, "/stats")


def session_info(srv, session_id):
    """GET /sessions/{id}: the session with its history (``messages``)."""
    return get_json(srv, f"/sessions/{session_id}")


async def wait_until(cond, timeout=10, interval=0.05, what="condition"):
    """Polls ``cond()`` (a plain function) until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(interval)


async def resume(client, session_id, last_seq, timeout=15):
    """join_session with last_seq → (frames before session_joined, session_joined).
    Fails on an error frame."""
    await client.send({"type": "join_session", "session_id": session_id, "last_seq": last_seq})
    frames = await client.recv_until("session_joined", timeout=timeout,
                                     pred=lambda f: f.get("session_id") == session_id)
    errs = [f for f in frames if f["type"] == "error"]
    assert not errs, f"error while resuming: {errs}"
    return frames[:-1], frames[-1]

# --------------------------------------------------------------------------- raw WebSocket


class RawWS:
    """A bare-socket WebSocket client of /ws, for clients the websockets library will not
    imitate: one that stops reading (its kernel buffers fill, the server's queue grows), one
    that never answers pings, one that resets its connection. Blocking, one thread.

    ``RawWS.connect(srv, rcvbuf=4096)`` does the upgrade by hand (a small SO_RCVBUF, set
    before connecting, makes the window small so the server sees the socket full early).
    Frames it sends are masked text frames; frames it reads are the server's (unmasked,
    never fragmented by parleyd)."""

    def __init__(self, sock, leftover=b""):
        self.sock = sock
        self.buf = leftover
        self.frames = []          # every JSON frame read, in order
        self.close_code = None
        self.close_reason = None

    @classmethod
    def connect(cls, srv, rcvbuf=None, path="/ws", timeout=10, source=None):
        import base64
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.connect((srv.host, srv.port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {buf!r}")
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            s.close()
            raise ConnectionError(f"upgrade refused: {head[:200]!r}")
        return cls(s, rest)

    def send_json(self, obj):
        data = json.dumps(obj).encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = bytes([0x81, 0x80 | n])
        elif n < 65536:
            head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + body)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buf += chunk

    def recv_frame(self, timeout=10):
        """(opcode, payload) of the next frame."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        at = 2
        if n == 126:
            self._need(4, deadline)
            n, at = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            self._need(10, deadline)
            n, at = int.from_bytes(self.buf[2:10], "big"), 10
        self._need(at + n, deadline)
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return op, payload

    def recv_json(self, timeout=10):
        """The next JSON frame, or None once the server's close frame arrives."""
        while True:
            op, payload = self.recv_frame(timeout)
            if op == 0x8:
                if len(payload) >= 2:
                    self.close_code = int.from_bytes(payload[:2], "big")
                    self.close_reason = payload[2:].decode("utf-8", "replace")
                return None
            if op == 0x1:
                obj = json.loads(payload)
                self.frames.append(obj)
                return obj

    def recv_until(self, type_, timeout=10):
        got = []
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_json(max(0.01, deadline - time.monotonic()))
            if f is None:
                raise ConnectionError(f"closed ({self.close_code} {self.close_reason!r}) before {type_}")
            got.append(f)
            if f["type"] == type_:
                return got

    def reset(self):
        """Close with an RST (SO_LINGER on, zero timeout)."""
        import struct
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()


def proc_status(srv, field):
    """A /proc/PID/status field of the server, in kB for sizes (VmRSS, VmHWM)."""
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def proc_fds(srv):
    return len(os.listdir(f"/proc/{srv.proc.pid}/fd"))


def is_sanitized(srv):
    """True when the server runs under AddressSanitizer (its quarantine keeps freed memory
    resident, so RSS says nothing about our own bounds there)."""
    with open(f"/proc/{srv.proc.pid}/maps") as f:
        return "libasan" in f.read()


def echo_prefix(content, question):
    """True when `content` is the first words of an echo answer to `question`:
    "Echo turn T (C context messages): <question>"."""
    want = ["Echo", "turn", None, None, "context", "messages):", *question.split()]
    got = content.split()
    if not got or len(got) > len(want):
        return False
    for k, (w, g) in enumerate(zip(want, got)):
        if k == 2 and not g.isdigit():
            return False
        if k == 3 and not (g.startswith("(") and g[1:].isdigit()):
            return False
        if w is not None and w != g:
            return False
    return True
