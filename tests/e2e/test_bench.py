"""parley-bench against a real parleyd: small runs of each scenario, each checked through
the bench's own accounting (its --json object), a refusal, and bad arguments.

The bench says whether a run passed (exit 0, "ok"); these tests check that verdict and
the counts behind it: every frame of a measured turn received, none lost, the split over
worker processes exact (whole sessions, counts that add up), refusals counted as such.
"""

import json
import os
import subprocess

from conftest import PARLEYD, stats

BENCH = os.environ.get("PARLEY_BENCH") or os.path.join(os.path.dirname(PARLEYD), "tools", "parley-bench")


def bench(srv, *args, check=None, timeout=30, common=()):
    """Runs parley-bench against ``srv``; returns (CompletedProcess, the JSON object or None).
    ``args``: the scenario and its options; ``common``: options before it."""
    cmd = [BENCH, "--url", srv.ws_url, "--quiet", "--json", *map(str, common), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert p.returncode == check, f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    out = json.loads(p.stdout) if p.stdout.strip() else None
    return p, out


def check_turns(r):
    """The accounting a passing fanout or stream run must show."""
    f, t = r["frames"], r["turns"]
    assert r["ok"] is True and r["failed"] is None, r
    assert r["errors"] == [], r["errors"]
    assert t["sent"] > 0 and t["completed"] == t["sent"] and t["refused"] == 0, t
    assert f["received"] == f["expected"] > 0, f
    assert f["lost"] == 0 and f["coalesced"] == 0, f
    assert f["chunks_received"] == f["chunks_expected"] > 0, f
    assert f["total_received"] >= f["received"], f
    c = r["connections"]
    assert c["opened"] == c["planned"] == c["pinged"] == c["ponged"], c
    assert c["refused"] == c["failed"] == c["dropped"] == 0, c
    lat = r["latency_us"]
    assert lat["count"] > 0 and 0 <= lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"], lat


def test_connect_spreads_over_source_addresses(make_server):
    # The server refuses a 51st connection from one address: a bench that did not spread
    # its 200 connections over at least 4 source addresses would be refused.
    srv = make_server("--max-per-address", "50")
    p, r = bench(srv, "connect", "--connections", 200, "--hold", 0.2,
                 common=("--per-address", 50, "--procs", 3, "--pid", srv.proc.pid), check=0)
    assert r["ok"] is True, r
    c = r["connections"]
    assert c == {"planned": 200, "opened": 200, "refused": 0, "failed": 0, "dropped": 0,
                 "pinged": 200, "ponged": 200}, c
    assert r["server"]["rss_per_conn_bytes"] > 0, r["server"]
    assert r["server"]["rss_after_kib"] > r["server"]["rss_before_kib"] > 0, r["server"]
    assert r["rates"]["connections_per_s"] > 0
    assert r["bench"]["procs"] == 3 and r["config"]["per_address"] == 50
    assert r["frames"]["sent"] == 200  # one ping each
    conns = stats(srv)["connections"]
    assert conns["total"] >= 200 and conns["rejected_by"]["per_address"] == 0, conns


def test_fanout_accounting_over_two_processes(make_server):
    srv = make_server()
    p, r = bench(srv, "fanout", "--sessions", 4, "--members", 3, "--rate", 5, "--duration", 2,
                 "--warmup", 0.5, common=("--procs", 2), check=0)
    check_turns(r)
    assert r["bench"]["procs"] == 2
    assert r["connections"]["planned"] == 12 and r["turns"]["sessions_ready"] == 4
    # 4 sessions at 5 chats/s for 2 s: 40 measured turns (the open-loop timer may land
    # one either side of the window's edges).
    assert 36 <= r["turns"]["sent"] <= 44, r["turns"]
    # Each turn: every member gets message_added, status, response_start, the chunks and
    # response_complete; the sender also delivery_confirmation.
    f = r["frames"]
    assert f["expected"] == r["turns"]["sent"] * (3 * 4 + 1) + f["chunks_expected"], f
    assert r["ttfc_us"]["count"] == 3 * r["turns"]["sent"]
    assert r["rates"]["frames_per_s"] > 0 and r["rates"]["chunks_per_s"] > 0
    # setup (4 create + 8 join) + every chat + a ping per connection
    assert f["sent"] >= 4 + 8 + r["turns"]["sent"] + 12, f


def test_stream_chunks_and_time_to_first_chunk(make_server):
    srv = make_server("--echo-delay-ms", "5")
    p, r = bench(srv, "stream", "--chats", 8, "--chunks", 10, "--chunk-interval-ms", 5,
                 "--duration", 2, "--warmup", 0.5, "--idle", 6, check=0)
    check_turns(r)
    t, f = r["turns"], r["frames"]
    # max_tokens = --chunks: every answer has exactly 10 chunks
    assert f["chunks_expected"] == 10 * t["completed"], (f, t)
    assert f["expected"] == t["sent"] * (4 + 1) + f["chunks_expected"], f
    assert r["ttfc_us"]["count"] == t["sent"] and r["ttfc_us"]["p50"] > 0, r["ttfc_us"]
    assert r["connections"]["planned"] == 14  # 8 streaming + 6 idle, all answered the ping
    assert r["latency_us"]["count"] == f["chunks_received"]


def test_refused_connections_are_counted_as_refused(make_server):
    srv = make_server("--max-connections", "20")
    p, r = bench(srv, "connect", "--connections", 30, "--hold", 0.1, check=1)
    c = r["connections"]
    assert c["refused"] == 10 and c["opened"] == 20 and c["failed"] == 0, c
    assert r["ok"] is False and "refused by the server (503 BUSY)" in r["failed"], r
    assert "refused by the server (503 BUSY): 10" in r["errors"], r["errors"]
    # the human summary says it in words
    p = subprocess.run([BENCH, "--url", srv.ws_url, "--quiet", "connect", "--connections", "30",
                        "--hold", "0.1"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p
    assert "refused by the server (503 BUSY): 10" in p.stdout, p.stdout
    assert "FAILED" in p.stdout and "10 connections were refused by the server" in p.stdout, p.stdout


def test_no_server_is_a_failure_not_a_hang(tmp_path):
    class Nowhere:
        ws_url = "ws://127.0.0.1:1/ws"
    p, r = bench(Nowhere, "connect", "--connections", 3, check=1)
    assert r["connections"]["failed"] == 3 and r["ok"] is False, r


def test_bad_arguments_exit_2_with_a_message():
    cases = [
        [],                                                 # no scenario
        ["dance"],                                          # unknown scenario
        ["connect"],                                        # --connections missing
        ["connect", "--connections", "ten"],                # not a number
        ["connect", "--connections", "0"],                  # out of range
        ["connect", "--connections", "5", "--bogus"],       # unknown option
        ["connect", "--connections", "5", "--members", "2"],  # another scenario's option
        ["--hold", "1", "connect", "--connections", "5"],   # a scenario option before it
        ["fanout", "--sessions", "2"],                      # --members missing
        ["--procs", "3", "fanout", "--sessions", "2", "--members", "2"],  # more procs than sessions
        ["--url", "http://x", "connect", "--connections", "1"],           # not ws://
        ["fanout", "--sessions", "1", "--members", "30000"],              # over one process's files
    ]
    for args in cases:
        p = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert p.stderr.startswith("parley-bench: ") and len(p.stderr) > 20, (args, p.stderr)
        assert p.stdout == "", (args, p.stdout)
    p = subprocess.run([BENCH, "stream", "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "--chunk-interval-ms" in p.stdout and "--chats" in p.stdout, p
