#!/usr/bin/python3
"""Measure what the capture tap costs: the same load with the tap off, and on with a
recorder attached.

Three modes: tap off; tap on with no recorder attached; tap on with `parley-replay record`
writing a capture. The load is real traffic: `parley-replay play --fast --multiply K` of a capture (by
default tests/captures/conversation.cap), against a parleyd started here with a temporary
database and --echo-delay-ms 0. For each run it reports:

- frames the server wrote and read per second of wall time (from /stats frames.out and
  frames.in over the replay);
- the server's CPU time per frame (utime+stime from /proc/PID/stat over the replay, in
  microseconds per frame in+out): the cost the tap adds, less noisy than throughput on a
  machine the load generator shares;
- with the tap on: records published, dropped, and written by the recorder.

Runs alternate between the modes ROUNDS times; the summary gives medians. Run with
Debian's interpreter (it shares measure_store.py's helpers, which import websockets):

    /usr/bin/python3 tools/measure_tap.py build/parleyd build/tools/parley-replay --multiply 200 --rounds 5
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from measure_store import free_port, get_json, wait_healthy  # the same helpers, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(args, mode, tmp):
    tap = mode != "off"
    port = free_port()
    endpoint = f"ipc://{tmp}/tap-{port}.ipc"
    cmd = [args.parleyd, "--port", str(port), "--db", f"{tmp}/db-{port}.db", "--echo-delay-ms", "0",
           "--log-level", "warn", "--max-connections", "19000", "--max-per-address", "19000"]
    if tap:
        cmd += ["--tap", endpoint]
    srv = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    rec = None
    try:
        if not wait_healthy(srv, port):
            sys.exit(f"parleyd did not start: {' '.join(cmd)}")
        if mode == "recording":
            rec = subprocess.Popen([args.replay, "record", endpoint, f"{tmp}/rec-{port}.cap"],
                                   stderr=subprocess.PIPE, text=True)
            while "recording" not in rec.stderr.readline():
                pass
        s0, c0, t0 = get_json(port, "/stats"), cpu_s(srv.pid), time.monotonic()
        p = subprocess.run([args.replay, "play", "--fast", "--multiply", str(args.multiply), args.capture,
                            f"ws://127.0.0.1:{port}"], capture_output=True, text=True)
        t1, c1, s1 = time.monotonic(), cpu_s(srv.pid), get_json(port, "/stats")
        if p.returncode != 0:
            sys.exit(f"play failed: {p.stderr}")
        frames = (s1["frames"]["out"] - s0["frames"]["out"]) + (s1["frames"]["in"] - s0["frames"]["in"])
        out = {"mode": mode, "frames": frames, "seconds": t1 - t0, "frames_per_s": frames / (t1 - t0),
               "cpu_us_per_frame": (c1 - c0) * 1e6 / frames, "published": s1["tap"]["published"],
               "dropped": s1["tap"]["dropped"]}
        if rec:
            time.sleep(0.3)
            rec.send_signal(signal.SIGINT)
            summary = rec.stderr.read()
            rec.wait(10)
            st = json.loads(subprocess.run([args.replay, "stats", "--json", f"{tmp}/rec-{port}.cap"],
                                           capture_output=True, text=True).stdout)
            out["recorded"] = st["records"]
            out["lost"] = st["lost"]
            out["recorder"] = summary.strip().splitlines()[-1] if summary.strip() else ""
        return out
    finally:
        if rec and rec.poll() is None:
            rec.kill()
        srv.send_signal(signal.SIGTERM)
        srv.wait(20)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parleyd")
    ap.add_argument("replay")
    ap.add_argument("--capture", default=os.path.join(HERE, "..", "tests", "captures", "conversation.cap"))
    ap.add_argument("--multiply", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"# {platform.node()} {os.cpu_count()} cpus, {platform.platform()}; capture {args.capture} "
          f"x{args.multiply}")
    modes = ("off", "idle", "recording")
    runs = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for mode in modes:
                o = one_run(args, mode, tmp)
                runs[mode].append(o)
                print(json.dumps(o), flush=True)
    for mode in modes:
        v = runs[mode]
        print(f"tap {mode:9}: frames/s median {statistics.median(x['frames_per_s'] for x in v):,.0f}"
              f" (min {min(x['frames_per_s'] for x in v):,.0f}, max {max(x['frames_per_s'] for x in v):,.0f});"
              f" server CPU per frame median {statistics.median(x['cpu_us_per_frame'] for x in v):.2f} us;"
              f" dropped {sum(x['dropped'] for x in v)} of {sum(x['published'] + x['dropped'] for x in v)}")


if __name__ == "__main__":
    main()
