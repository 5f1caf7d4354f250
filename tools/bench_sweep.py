#!/usr/bin/python3
"""Latency against load: parley-bench at several loads, a table and a gnuplot PNG.

For every point it starts a fresh parleyd (temporary database, --log-level warn, the
flags below), waits for GET /health, runs `parley-bench --json --quiet --pid PID`, stops
the server with SIGTERM and keeps the JSON. Two sweeps:

- stream: C concurrent streaming answers (50 chunks, echo model at 20 ms a chunk) among
  10,000 open connections (10,000 - C idle): chunk lateness p50/p99 against C.
- fanout: 1,000 sessions x 10 members, 100-word answers from the echo model at 0 ms,
  chats at R per second per session: chunk latency p50/p99 against frames delivered/s.

Writes DIR/stream.dat, DIR/fanout.dat, DIR/sweep.json and, with gnuplot installed,
DIR/latency.png. Run from the repository root after `cmake --build build`:

    /usr/bin/python3 tools/bench_sweep.py build/parleyd build/tools/parley-bench docs/bench

Each point takes 20-40 s (10,000 connections are opened for every one).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from measure_store import free_port, wait_healthy  # the same helpers, beside this script

STREAM_ARGS = ["--echo-delay-ms", "20"]
FANOUT_ARGS = ["--echo-delay-ms", "0", "--db-sync", "normal"]


def run_point(args, server_args, bench_args, tmp, tries=3):
    """One server, one bench run. A server that exits at start is retried on another port:
    after a point's 10,000 client sockets, the port free_port() found can be taken again."""
    port = free_port()
    cmd = [args.parleyd, "--port", str(port), "--db", f"{tmp}/db-{port}.db", "--log-level", "warn",
           *server_args]
    errpath = f"{tmp}/parleyd-{port}.stderr"
    with open(errpath, "w") as err:
        srv = subprocess.Popen(cmd, stderr=err)
    try:
        if not wait_healthy(srv, port):
            with open(errpath) as f:
                why = f.read()[-2000:]
            if tries > 1:
                print(f"parleyd did not start ({srv.poll()}), trying another port: {why[-300:]}", flush=True)
                return run_point(args, server_args, bench_args, tmp, tries - 1)
            sys.exit(f"parleyd did not start ({srv.poll()}): {why}")
        bench = [args.bench, "--url", f"ws://127.0.0.1:{port}/ws", "--pid", str(srv.pid), "--json", "--quiet",
                 *bench_args]
        out = subprocess.run(bench, capture_output=True, text=True, timeout=600)
        if not out.stdout.strip():
            with open(errpath) as f:
                sys.exit(f"parley-bench printed nothing (exit {out.returncode}): {out.stderr[-2000:]}\n"
                         f"parleyd ({srv.poll()}): {f.read()[-2000:]}")
        res = json.loads(out.stdout)
        res["exit"] = out.returncode
        res["command"] = " ".join(bench)
        res["server_command"] = " ".join(cmd)
        return res
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=30)


def ms(us):
    return us / 1000.0 if us is not None else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parleyd")
    ap.add_argument("bench")
    ap.add_argument("out_dir")
    ap.add_argument("--streams", default="100,200,300,500,700,1000", help="stream sweep: concurrent answers")
    ap.add_argument("--rates", default="0.1,0.2,0.3,0.4,0.5,0.55,0.6", help="fanout sweep: chats/s per session")
    ap.add_argument("--duration", default="10", help="seconds measured per point")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    results = {"stream": [], "fanout": []}
    with tempfile.TemporaryDirectory(prefix="parley-sweep-") as tmp:
        for c in [int(x) for x in args.streams.split(",") if x]:
            r = run_point(args, STREAM_ARGS,
                          ["stream", "--chats", str(c), "--idle", str(10000 - c), "--chunks", "50",
                           "--chunk-interval-ms", "20", "--duration", args.duration], tmp)
            results["stream"].append(r)
            lat = r["latency_us"]
            print(f"stream {c:5d}: {r['rates']['chunks_per_s']:9.0f} chunks/s  lateness p50 {ms(lat['p50']):8.2f} ms"
                  f"  p99 {ms(lat['p99']):8.2f} ms  ok={r['ok']}", flush=True)
        for rate in [x for x in args.rates.split(",") if x]:
            r = run_point(args, FANOUT_ARGS,
                          ["fanout", "--sessions", "1000", "--members", "10", "--rate", rate, "--words", "100",
                           "--duration", args.duration], tmp)
            results["fanout"].append(r)
            lat = r["latency_us"]
            print(f"fanout {rate:>5}: {r['rates']['frames_per_s']:9.0f} frames/s  latency p50 {ms(lat['p50']):8.2f} ms"
                  f"  p99 {ms(lat['p99']):8.2f} ms  ok={r['ok']}", flush=True)
    with open(os.path.join(args.out_dir, "sweep.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out_dir, "stream.dat"), "w") as f:
        f.write("# streams chunks_per_s p50_ms p99_ms p999_ms server_cpu_s bench_cpu_s\n")
        for r in results["stream"]:
            lat = r["latency_us"]
            f.write(f"{r['config']['chats']} {r['rates']['chunks_per_s']:.0f} {ms(lat['p50']):.3f} "
                    f"{ms(lat['p99']):.3f} {ms(lat['p999']):.3f} {r['server']['cpu_s']:.2f} {r['bench']['cpu_s']:.2f}\n")
    with open(os.path.join(args.out_dir, "fanout.dat"), "w") as f:
        f.write("# rate frames_per_s p50_ms p99_ms p999_ms server_cpu_s bench_cpu_s coalesced\n")
        for r in results["fanout"]:
            lat = r["latency_us"]
            f.write(f"{r['config']['rate']} {r['rates']['frames_per_s']:.0f} {ms(lat['p50']):.3f} "
                    f"{ms(lat['p99']):.3f} {ms(lat['p999']):.3f} {r['server']['cpu_s']:.2f} {r['bench']['cpu_s']:.2f} "
                    f"{r['frames']['coalesced']}\n")
    if not shutil.which("gnuplot"):
        print("gnuplot not found: no PNG (apt-get install gnuplot-nox)")
        return
    plot = f"""
set terminal pngcairo size 1200,480 font ",10"
set output "{args.out_dir}/latency.png"
set multiplot layout 1,2 title "parleyd chunk latency against load (2 vCPU, parley-bench on the same machine)"
set logscale y
set grid
set key top left
set ylabel "ms"
set title "stream: answers among 10,000 connections (50 chunks, 20 ms apart)"
set xlabel "concurrent streaming answers"
plot "{args.out_dir}/stream.dat" using 1:3 with linespoints title "lateness p50", \\
     "" using 1:4 with linespoints title "lateness p99", 2 with lines dt 2 title "target p99 2 ms"
set title "fanout: 1,000 sessions x 10 members (100-word answers)"
set xlabel "frames delivered per second"
plot "{args.out_dir}/fanout.dat" using 2:3 with linespoints title "latency p50", \\
     "" using 2:4 with linespoints title "latency p99"
unset multiplot
"""
    subprocess.run(["gnuplot"], input=plot, text=True, check=True)
    print(f"wrote {args.out_dir}/latency.png")


if __name__ == "__main__":
    main()
