#!/usr/bin/python3
"""Measures parleyd's model-stream relay against the fake upstream on loopback.

    /usr/bin/python3 tools/measure_upstream.py build/parleyd [--turns 200] [--cancels 50]

Prints, with median and p99:
- relay: from the fake upstream accepting a chat request (it streams its first chunk at
  once, delay 0) to the client receiving the first `chunk` frame: parleyd's path
  upstream socket -> curl -> model actor -> session actor -> edge -> WebSocket, plus
  the fake's own response start;
- cancel: from the client sending `cancel` to it receiving `response_complete`
  ("cancelled"), and to the upstream seeing its connection closed;
- concurrency: N clients (--concurrent, default 1000), each streaming a slow answer
  from the upstream at the same time; reports how many upstream streams were open at
  once and how long the whole batch took.
Until parley-bench exists this is the reproducible command behind the figures quoted in
issue notes."""

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fake_upstream"))
from fake_upstream import FakeUpstream  # noqa: E402
import websockets  # noqa: E402
from measure_store import free_port, wait_healthy  # noqa: E402  the same helpers, beside this script


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(name, xs):
    ms = [x * 1000 for x in xs]
    return f"{name}: n={len(ms)} median={statistics.median(ms):.2f} ms p99={pct(ms, 99):.2f} ms max={max(ms):.2f} ms"


async def recv_until(ws, type_):
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if f["type"] == type_:
            return f, time.time()


async def main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # clients and fake server share this process
    up = FakeUpstream(delay_ms=0)
    up.start()
    port = free_port()
    models = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump([{"name": "fake", "backend": "openai", "base_url": up.url + "/v1"}], models)
    models.close()
    proc = subprocess.Popen([args.parleyd, "--port", str(port), "--host", "127.0.0.1", "--models", models.name,
                             "--log-level", "warn"])
    try:
        if not wait_healthy(proc, port):
            sys.exit("parleyd did not start")
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "create_session", "model_id": "fake"}))
            await recv_until(ws, "session_created")
            relay = []
            for i in range(args.turns):
                marker = f"relay-{i}"
                await ws.send(json.dumps({"type": "chat", "message": marker}))
                _, t_chunk = await recv_until(ws, "chunk")
                await recv_until(ws, "response_complete")
                rec = next(r for r in reversed(up.requests) if marker in json.dumps(r.get("body")))
                relay.append(t_chunk - rec["started"])
            cancel_client, cancel_upstream = [], []
            for i in range(args.cancels):
                marker = f"cancel-{i}"
                await ws.send(json.dumps({"type": "chat", "message": f"{marker} [[fault:slow:200]] a b c d e"}))
                await recv_until(ws, "chunk")
                t0 = time.time()
                await ws.send(json.dumps({"type": "cancel"}))
                done, t1 = await recv_until(ws, "response_complete")
                assert done["finish_reason"] == "cancelled", done
                cancel_client.append(t1 - t0)
                for _ in range(200):
                    rec = next(r for r in reversed(up.requests) if marker in json.dumps(r.get("body")))
                    if rec.get("ended"):
                        break
                    await asyncio.sleep(0.01)
                assert rec.get("client_closed_early"), rec
                cancel_upstream.append(rec["ended"] - t0)
        print(summary("relay (upstream accepts -> first chunk at client)", relay))
        print(summary("cancel -> response_complete at client", cancel_client))
        print(summary("cancel -> upstream sees the close", cancel_upstream))
        if args.concurrent:
            async def one(i):
                async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=60) as w:
                    await w.recv()
                    await w.send(json.dumps({"type": "create_session", "model_id": "fake"}))
                    await recv_until(w, "session_created")
                    await w.send(json.dumps({"type": "chat", "message": f"c{i} [[fault:slow:300]] a b c"}))
                    done, _ = await recv_until(w, "response_complete")
                    return done["finish_reason"]
            t0 = time.time()
            results = await asyncio.gather(*(one(i) for i in range(args.concurrent)))
            took = time.time() - t0
            ok = sum(r == "stop" for r in results)
            print(f"concurrency: {ok}/{args.concurrent} answers complete, peak upstream streams open at once "
                  f"{up.peak_streams}, batch {took:.1f} s")
    finally:
        proc.terminate()
        proc.wait(10)
        up.stop()
        os.unlink(models.name)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parleyd")
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--cancels", type=int, default=50)
    ap.add_argument("--concurrent", type=int, default=1000)
    asyncio.run(main(ap.parse_args()))
