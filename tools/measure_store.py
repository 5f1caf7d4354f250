#!/usr/bin/python3
"""Measure the store: group commits and acknowledgement latency.

Starts parleyd itself (a temporary database, --echo-delay-ms 0), opens K WebSocket
clients, each in a session of its own, and has each send chats back to back: the next
one as soon as the previous one's delivery_confirmation ("stored") arrives. After a
warm-up it measures for T seconds and reports, per --db-sync mode and K:

- messages confirmed per second (acknowledgements received in the window);
- store commits per second, mean batch size (rows per commit) and commit time (mean
  from /stats store.commit_us_total / commits over the window; max since start);
- acknowledgement latency (chat sent -> delivery_confirmation received): median, p90,
  p99, max.

Each chat asks for a one-chunk answer (max_tokens 1) and the model context is kept
small (--max-message and --max-context 1024), so a turn costs the same all run long and
the client (one Python process) is not flooded with answer chunks. The client shares the
machine with the server: on a small machine it is part of what is measured, so the CPU
both used in the window is reported too (100 % = one core).

Stdlib + websockets only. Run with Debian's interpreter:

    /usr/bin/python3 tools/measure_store.py build/parleyd --clients 50,200 --seconds 10
"""

import argparse
import asyncio
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import websockets


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        c.close()


def wait_healthy(proc, port, seconds=10.0):
    """True once parleyd (the process `proc`, on `port`) answers GET /health; False if it
    exited first or `seconds` passed. Every measuring script starts its servers this way."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            get_json(port, "/health")
            return True
        except (OSError, RuntimeError):
            time.sleep(0.05)
    return False


class Server:
    def __init__(self, binary, sync, dbdir, extra):
        self.port = free_port()
        self.dbdir = tempfile.mkdtemp(prefix="measure-store-", dir=dbdir)
        self.args = [binary, "--host", "127.0.0.1", "--port", str(self.port),
                     "--db", os.path.join(self.dbdir, "parley.db"), "--db-sync", sync,
                     "--echo-delay-ms", "0", "--max-message", "1024", "--max-context", "1024",
                     "--max-pending", "1000",
                     "--log-level", "warn", *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "WEBSOCKET_"))}
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.err, env=env)
        if not wait_healthy(self.proc, self.port):
            self.stop()
            raise RuntimeError("parleyd did not start:\n" + self.stderr())

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dbdir, ignore_errors=True)
        return self.proc.returncode


class Sender:
    """One connection in its own session, sending chats back to back."""

    def __init__(self, ws, sid):
        self.ws = ws
        self.sid = sid
        self.lat = []          # (time the ack came, latency in s)
        self.errors = {}

    async def run(self, stop_at):
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            t0 = time.monotonic()
            await self.ws.send(json.dumps({"type": "chat", "message": f"message {n}", "id": n,
                                           "max_tokens": 1}))
            while True:
                raw = await self.ws.recv()
                if '"delivery_confirmation"' in raw:
                    f = json.loads(raw)
                    if f.get("status") == "stored" and f.get("id") == n:
                        t1 = time.monotonic()
                        self.lat.append((t1, t1 - t0))
                        break
                elif '"error"' in raw:
                    f = json.loads(raw)
                    if f.get("type") == "error" and f.get("id") == n:
                        self.errors[f.get("code")] = self.errors.get(f.get("code"), 0) + 1
                        break


async def connect_all(port, k):
    async def one():
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None, compression=None,
                                      ping_interval=None, max_queue=None, open_timeout=20)
        json.loads(await ws.recv())                     # connected
        await ws.send(json.dumps({"type": "create_session"}))
        while True:
            f = json.loads(await ws.recv())
            if f["type"] == "session_created":
                return Sender(ws, f["session_id"])
    out = []
    for i in range(0, k, 50):
        out += await asyncio.gather(*[one() for _ in range(min(50, k - i))])
    return out


def cpu_seconds(pid):
    """utime + stime of a process, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def pct(sorted_v, p):
    if not sorted_v:
        return float("nan")
    i = min(len(sorted_v) - 1, max(0, int(round(p / 100 * len(sorted_v) + 0.5)) - 1))
    return sorted_v[i]


async def measure(port, pid, k, warmup, seconds):
    senders = await connect_all(port, k)
    start = time.monotonic()
    t_begin = start + warmup
    t_end = t_begin + seconds
    tasks = [asyncio.create_task(s.run(t_end)) for s in senders]
    await asyncio.sleep(max(0, t_begin - time.monotonic()))
    st0 = get_json(port, "/stats")["store"]
    cpu0, mine0 = cpu_seconds(pid), time.process_time()
    await asyncio.sleep(max(0, t_end - time.monotonic()))
    st1 = get_json(port, "/stats")["store"]
    cpu1, mine1 = cpu_seconds(pid), time.process_time()
    await asyncio.gather(*tasks)
    for s in senders:
        await s.ws.close()
    lats = sorted(l for s in senders for (t, l) in s.lat if t_begin <= t < t_end)
    errors = {}
    for s in senders:
        for c, n in s.errors.items():
            errors[c] = errors.get(c, 0) + n
    commits = st1["commits"] - st0["commits"]
    rows = st1["rows"] - st0["rows"]
    us = st1["commit_us_total"] - st0["commit_us_total"]
    return {
        "clients": k,
        "acks_per_s": len(lats) / seconds,
        "commits_per_s": commits / seconds,
        "batch_mean": rows / commits if commits else float("nan"),
        "batch_max": st1["batch_max"],
        "commit_ms_mean": us / commits / 1000 if commits else float("nan"),
        "commit_ms_max": st1["commit_us_max"] / 1000,
        "lat_ms": [1000 * pct(lats, p) for p in (50, 90, 99)] + [1000 * (lats[-1] if lats else float("nan"))],
        "store_errors": st1["errors"],
        "server_cpu": 100 * (cpu1 - cpu0) / seconds,
        "client_cpu": 100 * (mine1 - mine0) / seconds,
        "client_errors": errors,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("parleyd", help="path to the parleyd binary")
    ap.add_argument("--clients", default="50,200", help="comma-separated K values (default 50,200)")
    ap.add_argument("--seconds", type=float, default=10, help="measured window per run (default 10)")
    ap.add_argument("--warmup", type=float, default=1, help="seconds before the window (default 1)")
    ap.add_argument("--sync", default="full,normal", help="--db-sync modes (default full,normal)")
    ap.add_argument("--dir", default=None, help="where the temporary database goes (default: $TMPDIR)")
    ap.add_argument("--commit-ms", default=None, help="passed to parleyd as --commit-ms")
    ap.add_argument("--workers", default=None, help="passed to parleyd as --workers")
    a = ap.parse_args()
    extra = []
    if a.commit_ms is not None:
        extra += ["--commit-ms", a.commit_ms]
    if a.workers is not None:
        extra += ["--workers", a.workers]

    results = []
    for sync in a.sync.split(","):
        for k in [int(x) for x in a.clients.split(",")]:
            srv = Server(a.parleyd, sync, a.dir, extra)
            try:
                r = asyncio.run(measure(srv.port, srv.proc.pid, k, a.warmup, a.seconds))
            finally:
                code = srv.stop()
            if code != 0:
                print(f"warning: parleyd exited {code}:\n{srv.stderr()}", file=sys.stderr)
            r["sync"] = sync
            results.append(r)
            print(f"sync={sync} clients={k}: {r['acks_per_s']:.0f} acks/s, {r['commits_per_s']:.0f} commits/s, "
                  f"batch {r['batch_mean']:.1f}, p50 {r['lat_ms'][0]:.1f} ms", file=sys.stderr)

    flags = " ".join(["--db-sync MODE --echo-delay-ms 0 --max-message 1024 --max-context 1024",
                      "--max-pending 1000"] + extra)
    print(f"\nCommand: `{' '.join(['/usr/bin/python3'] + sys.argv)}` (parleyd runs with {flags}; "
          f"{a.warmup:g} s warm-up, {a.seconds:g} s measured; {platform.node()}, {os.cpu_count()} CPUs)\n")
    print("| db-sync | clients | confirmed msg/s | commits/s | rows/commit (mean, max) | commit ms (mean, max) "
          "| ack p50 ms | p90 | p99 | max | CPU parleyd / client | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        p50, p90, p99, mx = r["lat_ms"]
        errs = ", ".join(f"{c} {n}" for c, n in r["client_errors"].items()) or "none"
        if r["store_errors"]:
            errs += f"; store.errors {r['store_errors']}"
        print(f"| {r['sync']} | {r['clients']} | {r['acks_per_s']:.0f} | {r['commits_per_s']:.0f} "
              f"| {r['batch_mean']:.1f}, {r['batch_max']} | {r['commit_ms_mean']:.2f}, {r['commit_ms_max']:.1f} "
              f"| {p50:.1f} | {p90:.1f} | {p99:.1f} | {mx:.1f} "
              f"| {r['server_cpu']:.0f} % / {r['client_cpu']:.0f} % | {errs} |")


if __name__ == "__main__":
    main()
