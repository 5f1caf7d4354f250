"""Crash recovery under load: clients chat continuously in a few sessions while parleyd is
killed with SIGKILL at random moments and restarted; the clients reconnect, resume with
last_seq and carry on.

Afterwards, for every session: every message acknowledged "stored" is in the history,
in each client's send order, exactly once; nothing appears that was not sent; every answer
follows its question; what each client shows (message_added since its last history
frame) is in the history. During the run: the seqs a client sees never go back or repeat,
except through the gap path (a history frame), and a resume replays what session_joined
says it replayed.

PARLEY_CRASH_CYCLES (default 3) sets the number of kills; PARLEY_CRASH_SEED the random seed
(printed, so a failing run can be repeated)."""

import asyncio
import json
import os
import random
import time

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from conftest import Client, echo_prefix, is_seq_event, run, session_info

CYCLES = int(os.environ.get("PARLEY_CRASH_CYCLES", "3"))
SEED = int(os.environ.get("PARLEY_CRASH_SEED", str(int(time.time() * 1000) % 1000000)))
SESSIONS = 3
PER_SESSION = 2              # clients in each session


class Chatter:
    """One client: sends "c{k}-m{n}" (the next once the previous is acknowledged or
    refused), tracks seqs, reconnects and resumes after the server dies."""

    def __init__(self, srv, k, rng):
        self.srv = srv
        self.k = k
        self.rng = rng
        self.sid = None
        self.c = None
        self.joined = False
        self.last = None            # newest seq seen in the session (None: none yet)
        self.n = 0
        self.outstanding = None     # (n, text) sent, not yet acknowledged or refused
        self.next_send = 0.0
        self.sent = []              # texts, in send order
        self.acked = []
        self.refused = []           # error answers (e.g. BUSY): not stored
        self.replay_count = 0       # persistent events since join_session was sent
        self.in_gap = False         # between a history frame and its session_joined
        self.gaps = 0
        self.resumes = 0
        self.replayed = 0
        self.reconnects = 0
        self.violations = []
        self.view = set()           # ids of the user messages this client shows

    # -- connection
    async def connect(self, deadline):
        while True:
            try:
                self.c = await Client.connect(self.srv, name=f"c{self.k}", timeout=2)
                break
            except (OSError, InvalidHandshake, ConnectionClosed, AssertionError, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"c{self.k}: could not reconnect")
                await asyncio.sleep(0.05)
        self.joined = False
        self.replay_count = 0
        self.in_gap = False
        msg = {"type": "join_session", "session_id": self.sid}
        if self.last is not None:
            msg["last_seq"] = self.last
            self.resumes += 1
        await self.c.send(msg)

    def dropped(self):
        self.c = None
        self.joined = False
        if self.outstanding is not None:
            self.outstanding = None         # its fate is unknown: the history will tell
        self.reconnects += 1

    # -- frames
    def handle(self, f):
        t = f["type"]
        if t == "history":
            assert f["session_id"] == self.sid
            self.in_gap = True
            self.gaps += 1
            self.last = f["seq"]            # the gap path may move the view anywhere
            self.view = {m["id"] for m in f["messages"] if m["role"] == "user"}
            return
        if t == "session_joined":
            if f.get("gap"):
                if f["seq"] != self.last:
                    self.violations.append(f"gap join seq {f['seq']} != history seq {self.last}")
            elif "replayed" in f:
                if f["replayed"] != self.replay_count:
                    self.violations.append(f"replayed {f['replayed']} but {self.replay_count} frames came")
                if self.last is not None and f["seq"] != self.last:
                    self.violations.append(f"joined seq {f['seq']} != last replayed {self.last}")
                self.replayed += self.replay_count
            self.last = f["seq"] if self.last is None else self.last
            self.in_gap = False
            self.joined = True
            return
        if is_seq_event(f) and f.get("session_id") == self.sid:
            if self.in_gap:                 # the running answer so far, before session_joined
                return
            if self.last is not None and f["seq"] <= self.last:
                self.violations.append(f"seq went back or repeated: {f['seq']} after {self.last} ({t})")
            self.last = f["seq"]
            if not self.joined:
                self.replay_count += 1
            if f.get("update_type") == "message_added":
                self.view.add(f["message"]["id"])
        if t == "delivery_confirmation" and f.get("status") == "stored":
            if self.outstanding and f.get("id") == self.outstanding[0]:
                self.acked.append(self.outstanding[1])
                self.outstanding = None
                self.next_send = time.monotonic() + self.rng.uniform(0.0, 0.02)
            else:
                self.violations.append(f"unexpected confirmation {f}")
        elif t == "error":
            if self.outstanding and f.get("id") == self.outstanding[0]:
                self.refused.append((self.outstanding[1], f.get("code")))
                self.outstanding = None
                self.next_send = time.monotonic() + 0.05
            elif f.get("code") != "MODEL_ERROR":
                self.violations.append(f"unexpected error {f}")

    async def step(self):
        """Sends when it is time, then handles what arrives within 50 ms."""
        if self.joined and self.outstanding is None and time.monotonic() >= self.next_send:
            text = f"c{self.k}-m{self.n}"
            self.outstanding = (self.n, text)
            self.sent.append(text)
            self.n += 1
            await self.c.send({"type": "chat", "message": text, "id": self.outstanding[0]})
        try:
            raw = await asyncio.wait_for(self.c.ws.recv(), 0.05)
        except asyncio.TimeoutError:
            return
        self.handle(json.loads(raw))

    async def loop(self, stop, deadline):
        while not stop.is_set():
            try:
                if self.c is None:
                    await self.connect(deadline)
                await self.step()
            except (ConnectionClosed, OSError):
                self.dropped()
                # clients come back at different moments: some resume after others
                # have already chatted in the restarted server
                await asyncio.sleep(self.rng.uniform(0.02, 0.4))

    async def settle(self, seconds):
        """No new chats: handle what comes for ``seconds`` (late acknowledgements)."""
        end = time.monotonic() + seconds
        while self.c is not None and time.monotonic() < end and self.outstanding is not None:
            try:
                raw = await asyncio.wait_for(self.c.ws.recv(), 0.05)
                self.handle(json.loads(raw))
            except asyncio.TimeoutError:
                pass
            except ConnectionClosed:
                self.dropped()


def test_sigkill_under_load_loses_no_acknowledged_message(make_server):
    rng = random.Random(SEED)
    srv = make_server("--max-history", "100000", "--max-pending", "100")
    t0 = time.monotonic()
    print(f"\ncrash test: cycles={CYCLES} seed={SEED}")

    async def body():
        chatters = [Chatter(srv, k, random.Random(rng.random())) for k in range(SESSIONS * PER_SESSION)]
        for s in range(SESSIONS):
            owner = chatters[s * PER_SESSION]
            owner.c = await Client.connect(srv, name=f"c{owner.k}")
            created = await owner.c.create_session(kind="shared")
            sid = created["session_id"]
            owner.last, owner.joined = created["seq"], True
            for ch in chatters[s * PER_SESSION:(s + 1) * PER_SESSION]:
                ch.sid = sid
                if ch is not owner:
                    ch.c = await Client.connect(srv, name=f"c{ch.k}")
                    joined = await ch.c.join(sid)
                    ch.last, ch.joined = joined["seq"], True
        await asyncio.sleep(0.05)      # the sessions' rows commit before the first kill
        stop = asyncio.Event()
        deadline = time.monotonic() + 30 + 3 * CYCLES
        tasks = [asyncio.create_task(ch.loop(stop, deadline)) for ch in chatters]
        kills = []
        try:
            for cycle in range(CYCLES):
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                srv.kill()
                kills.append(sum(len(ch.acked) for ch in chatters))
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                await asyncio.get_running_loop().run_in_executor(None, srv.restart)
            await asyncio.sleep(rng.uniform(0.3, 0.6))     # traffic after the last restart
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            if t.exception():
                raise t.exception()
        await asyncio.gather(*[ch.settle(1.0) for ch in chatters])
        for ch in chatters:
            if ch.c is not None:
                await ch.c.close()
        return chatters, kills

    chatters, kills = run(body(), timeout=40 + 3 * CYCLES)

    report = []
    problems = []
    for s in range(SESSIONS):
        group = chatters[s * PER_SESSION:(s + 1) * PER_SESSION]
        sid = group[0].sid
        info = session_info(srv, sid)
        msgs = info["messages"]
        assert info["truncated"] is False, "history truncated: raise --max-history"
        ids = [m["id"] for m in msgs]
        if len(ids) != len(set(ids)):
            problems.append(f"{sid}: duplicate message ids")
        texts = [m["content"] for m in msgs if m["role"] == "user"]
        if len(texts) != len(set(texts)):
            dups = sorted({t for t in texts if texts.count(t) > 1})
            problems.append(f"{sid}: duplicate messages {dups[:10]}")
        sent_here = {t for ch in group for t in ch.sent}
        unknown = [t for t in texts if t not in sent_here]
        if unknown:
            problems.append(f"{sid}: messages nobody sent {unknown[:10]}")
        for i, m in enumerate(msgs):
            if m["role"] == "assistant":
                q = msgs[i - 1] if i > 0 else None
                # an answer a kill cut short is stored "interrupted" with the words it had
                ok = q and q["role"] == "user" and (
                    echo_prefix(m["content"], q["content"]) if m.get("finish_reason") == "interrupted"
                    else m["content"].endswith(": " + q["content"]))
                if not ok:
                    problems.append(f"{sid}: answer at {i} does not follow its question: {m['content']!r}")
        for ch in group:
            mine = [t for t in texts if t.startswith(f"c{ch.k}-m")]
            order = [int(t.split("-m")[1]) for t in mine]
            if order != sorted(order):
                problems.append(f"c{ch.k}: history out of send order: {mine}")
            lost = [t for t in ch.acked if t not in mine]
            if lost:
                problems.append(f"c{ch.k}: acknowledged but not stored: {lost}")
            ghosts = ch.view - set(ids)
            if ghosts:
                problems.append(f"c{ch.k}: shows {len(ghosts)} messages the history does not have "
                                f"(resumed past lost events without a gap)")
            if ch.violations:
                problems.append(f"c{ch.k}: {ch.violations[:5]}")
            report.append(f"c{ch.k}: sent {len(ch.sent)} acked {len(ch.acked)} found {len(mine)} "
                          f"refused {len(ch.refused)} reconnects {ch.reconnects} resumes {ch.resumes} "
                          f"replayed {ch.replayed} gaps {ch.gaps}")
    total = {k: sum(len(getattr(ch, k)) for ch in chatters) for k in ("sent", "acked", "refused")}
    found = sum(len([m for m in session_info(srv, ch.sid)["messages"]
                     if m["content"].startswith(f"c{ch.k}-m")]) for ch in chatters)
    summary = (f"crash test: cycles={CYCLES} seed={SEED} took {time.monotonic() - t0:.1f}s; "
               f"sent {total['sent']} acked {total['acked']} found {found} refused {total['refused']}; "
               f"acked at each kill {kills}")
    print(summary)
    print("\n".join(report))
    assert not problems, summary + "\n" + "\n".join(problems)
    assert total["acked"] >= 10 * (CYCLES + 1) // 2, f"too little traffic: {summary}"
    assert kills == sorted(kills) and len(kills) == CYCLES
