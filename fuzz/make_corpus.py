#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ (run from anywhere).

Seeds are valid inputs from docs/protocol.md and the vendors' real streams,
plus nasty ones: deep nesting, huge numbers, NULs, invalid UTF-8, overlong
strings, truncations. Envelope seeds are msgpack built from
protocol/pl_envelope.def, so they follow the schema when it grows. The
files are committed; rerun this after changing it (it rewrites only the
files it names; libFuzzer's own finds are never committed here)."""
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def with_truncations(target, name, data, cuts=(0.5,)):
    out(target, name, data)
    raw = data.encode() if isinstance(data, str) else data
    for c in cuts:
        out(target, "%s.cut%d" % (name, int(c * 100)), raw[: int(len(raw) * c)])


# ---- dialect_session: one /ws text frame --------------------------------

SESSION = {
    "create_session": '{"type":"create_session","name":"team","system_prompt":"Be brief."}',
    "create_full": '{"type":"create_session","model_id":"echo","kind":"shared","name":"design review",'
                   '"system_prompt":"You are a terse reviewer.","id":"req-1"}',
    "create_group_null": '{"type":"create_session","kind":"group","name":null,"id":null}',
    "join": '{"type":"join_session","session_id":"s0123456789abcdef"}',
    "join_resume": '{"type":"join_session","session_id":"s4b0c1d2e3f405162","last_seq":41,"id":7}',
    "join_seq_max": '{"type":"join_session","session_id":"s1","last_seq":9007199254740991}',
    "join_seq_over": '{"type":"join_session","session_id":"s1","last_seq":9007199254740992}',
    "join_seq_float": '{"type":"join_session","session_id":"s1","last_seq":1.5}',
    "join_seq_neg": '{"type":"join_session","session_id":"s1","last_seq":-1}',
    "join_bad_id": '{"type":"join_session","session_id":"s/../etc"}',
    "join_long_id": '{"type":"join_session","session_id":"' + "a" * 65 + '"}',
    "leave": '{"type":"leave_session","session_id":"s0123456789abcdef"}',
    "leave_current": '{"type":"leave_session"}',
    "chat": '{"type":"chat","message":"Hello, who are you?","id":"m-1"}',
    "chat_full": '{"type":"chat","message":"Summarise this.","session_id":"s4b0c1d2e3f405162","id":12,'
                 '"model_id":"gpt-4o-mini","temperature":0.7,"max_tokens":256,"system_prompt":"Be brief."}',
    "chat_unicode": '{"type":"chat","message":"caf\\u00e9 \\ud83d\\ude00 \u00e9\u4e2d"}',
    "chat_empty": '{"type":"chat","message":"  \\n\\t "}',
    "chat_missing": '{"type":"chat"}',
    "chat_null_message": '{"type":"chat","message":null}',
    "chat_number_message": '{"type":"chat","message":42}',
    "chat_temp_high": '{"type":"chat","message":"x","temperature":2.0000001}',
    "chat_temp_nan": '{"type":"chat","message":"x","temperature":NaN}',
    "chat_temp_huge": '{"type":"chat","message":"x","temperature":1e309}',
    "chat_maxtok_zero": '{"type":"chat","message":"x","max_tokens":0}',
    "chat_maxtok_big": '{"type":"chat","message":"x","max_tokens":123456789012345678901234567890}',
    "chat_nul_escape": '{"type":"chat","message":"a\\u0000b"}',
    "chat_escaped_backslash_u0000": '{"type":"chat","message":"a\\\\u0000b"}',
    "chat_nul_byte": b'{"type":"chat","message":"a\x00b"}',
    "chat_invalid_utf8": b'{"type":"chat","message":"\xff\xfe\xc0\xaf\xed\xa0\x80"}',
    "chat_lone_surrogate": '{"type":"chat","message":"\\ud800"}',
    "chat_overlong": '{"type":"chat","message":"' + "x" * 600 + '"}',
    "chat_dup_keys": '{"type":"chat","message":"a","message":"b","type":"ping"}',
    "typing_start": '{"type":"typing_start","session_id":"s0123456789abcdef"}',
    "typing_stop": '{"type":"typing_stop"}',
    "cancel": '{"type":"cancel","session_id":"s0123456789abcdef","id":true}',
    "read": '{"type":"read","message_id":"m9a0b1c2d3e4f5061","session_id":"s0123456789abcdef"}',
    "ping": '{"type":"ping"}',
    "ping_id_string": '{"type":"ping","id":"abc-123"}',
    "ping_id_number": '{"type":"ping","id":-1.5e300}',
    "ping_id_object": '{"type":"ping","id":{"a":1}}',
    "ping_id_long": '{"type":"ping","id":"' + "i" * 129 + '"}',
    "ping_id_quotes": '{"type":"ping","id":"a\\"b\\\\c\\u2028"}',
    "unknown_type": '{"type":"subscribe","channel":"x"}',
    "unknown_type_long_utf8": '{"type":"' + "\u00e9" * 40 + '"}',
    "type_number": '{"type":5}',
    "no_type": '{"message":"hi"}',
    "array": '[{"type":"ping"}]',
    "string": '"ping"',
    "empty": "",
    "whitespace": " \r\n\t",
    "trailing": '{"type":"ping"} {"type":"ping"}',
    "trailing_ws": '{"type":"ping"}\r\n',
    "deep_nesting": '{"type":"chat","message":"x","x":' + "[" * 2000 + "]" * 2000 + "}",
    "deep_objects": '{"type":"ping","a":' + '{"a":' * 1000 + "1" + "}" * 1000 + "}",
    "huge_number": '{"type":"join_session","session_id":"s","last_seq":' + "9" * 400 + "}",
    "bom": "\ufeff" + '{"type":"ping"}',
}

# ---- vendor: 1 byte vendor, 2 bytes status, then the item ---------------

OAI_HEAD = ('{"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1725000000,'
            '"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":')
OAI = {
    "first_chunk": OAI_HEAD + '{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}',
    "content": OAI_HEAD + '{"content":"Hel"},"logprobs":null,"finish_reason":null}],"usage":null}',
    "escapes": OAI_HEAD + '{"content":"lo \\u00e9\\n\\"q\\" \\ud83d\\ude00"},"logprobs":null,"finish_reason":null}]}',
    "stop": OAI_HEAD + '{},"logprobs":null,"finish_reason":"stop"}]}',
    "length": OAI_HEAD + '{"content":"!"},"logprobs":null,"finish_reason":"length"}]}',
    "usage": '{"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1725000000,"model":"gpt-4o-mini",'
             '"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,'
             '"prompt_tokens_details":{"cached_tokens":0}}}',
    "usage_huge": '{"choices":[],"usage":{"prompt_tokens":9007199254740993,"completion_tokens":1e308}}',
    "usage_neg": '{"choices":[],"usage":{"prompt_tokens":-1,"completion_tokens":0.5}}',
    "done": "[DONE]",
    "done_ws": " \r\n[DONE]\t",
    "error": '{"error":{"message":"The server had an error while processing your request. Sorry about that!",'
             '"type":"server_error","param":null,"code":null}}',
    "error_key": '{"error":{"message":"Incorrect API key provided: sk-proj-abc123XYZ. You can find your API key '
                 'at https://platform.openai.com/account/api-keys.","type":"invalid_request_error",'
                 '"code":"invalid_api_key"}}',
    "error_controls": '{"error":{"message":"a\\u0001b\\u007fc\\u0085d\\u009fe\\nf\\t\\r  g"}}',
    "error_long": '{"error":{"message":"' + "\u00e9\u4e2d\U0001F600" * 60 + '"}}',
    "null_error": '{"error":null,"choices":[]}',
    "nul_byte": b'{"choices":[]}\x00',
    "invalid_utf8": b'{"choices":[{"delta":{"content":"\xff\xc3\x28\xe2\x82"}}]}',
    "deep": '{"choices":' + "[" * 3000 + "]" * 3000 + "}",
}
GEM_HEAD = '{"candidates": [{"content": {"parts": ['
GEM_USAGE = '"usageMetadata": {"promptTokenCount": 4,"candidatesTokenCount": 5,"totalTokenCount": 9},"modelVersion": "gemini-2.0-flash"}'
GEM = {
    "text": GEM_HEAD + '{"text": "Hello"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 4,"totalTokenCount": 4}}',
    "stop": GEM_HEAD + '{"text": " there"}],"role": "model"},"finishReason": "STOP","index": 0}],' + GEM_USAGE,
    "max_tokens": GEM_HEAD + '{"text": "cut"}],"role": "model"},"finishReason": "MAX_TOKENS","index": 0}],' + GEM_USAGE,
    "thought": GEM_HEAD + '{"text": "thinking...","thought": true},{"text": "Answer","thought": false}],"role": "model"}}]}',
    "safety": '{"candidates": [{"finishReason": "SAFETY","index": 0,"safetyRatings": [{"category": '
              '"HARM_CATEGORY_HARASSMENT","probability": "HIGH"}]}],' + GEM_USAGE,
    "blocked": '{"promptFeedback": {"blockReason": "SAFETY"},"usageMetadata": {"promptTokenCount": 8}}',
    "error": '{"error": {"code": 503,"message": "The model is overloaded. Please try again later.","status": "UNAVAILABLE"}}',
    "error_array": '[{"error": {"code": 400,"message": "API key not valid. Please pass a valid API key. AIzaSyA-1234",'
                   '"status": "INVALID_ARGUMENT"}}]',
}
OLL_HEAD = '{"model":"llama3.2","created_at":"2024-11-02T10:00:01.1Z","message":'
OLL = {
    "content": OLL_HEAD + '{"role":"assistant","content":"The"},"done":false}',
    "done": OLL_HEAD + '{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":4883583458,'
            '"prompt_eval_count":26,"eval_count":298,"eval_duration":4535599000}',
    "length": OLL_HEAD + '{"role":"assistant","content":""},"done_reason":"length","done":true,"eval_count":64}',
    "error": '{"error":"model \\"llama9\\" not found, try pulling it first"}',
    "error_empty": '{"error":""}',
    "not_json": "not json",
}

# ---- models: the --models file -------------------------------------------

MODELS = {
    "readme": '[{"name": "gpt-4o-mini", "backend": "openai", "base_url": "https://api.openai.com/v1", '
              '"model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY", "price_in": 0.15, "price_out": 0.60}]',
    "three": '[{"name":"gemini-flash","backend":"gemini","base_url":"https://generativelanguage.googleapis.com/",'
             '"model":"models/gemini-2.0-flash","api_key_env":"GEMINI_API_KEY"},'
             '{"name":"llama","backend":"ollama","base_url":"http://127.0.0.1:11434"},'
             '{"name":"echo","backend":"echo"}]',
    "empty_array": "[]",
    "not_array": '{"name":"x"}',
    "dup": '[{"name":"a","backend":"echo"},{"name":"a","backend":"echo"}]',
    "bad_backend": '[{"name":"a","backend":"grpc","base_url":"http://x"}]',
    "bad_url": '[{"name":"a","backend":"openai","base_url":"ftp://x"}]',
    "long_url": '[{"name":"a","backend":"openai","base_url":"http://' + "u" * 600 + '"}]',
    "long_name": '[{"name":"' + "n" * 200 + '","backend":"echo"}]',
    "bad_env": '[{"name":"a","backend":"openai","base_url":"http://x","api_key_env":"lower case"}]',
    "prices": '[{"name":"a","backend":"echo","price_in":1e6,"price_out":-0.0},{"name":"b","backend":"echo","price_in":1e999}]',
    "trailing_slashes": '[{"name":"a","backend":"openai","base_url":"https://x////"}]',
    "nul_in_string": '[{"name":"a\\u0000b","backend":"echo"}]',
    "too_many": "[" + ",".join('{"name":"m%d","backend":"echo"}' % i for i in range(257)) + "]",
    "deep": "[" * 5000 + "]" * 5000,
    "invalid_utf8": b'[{"name":"a","backend":"echo","model":"\xff\xfe"}]',
}

# ---- http: 1 byte method, path, LF, body ---------------------------------

HTTP = [
    (0, "/"), (0, "/health"), (0, "/stats"), (0, "/openapi.json"), (0, "/docs"), (0, "/demo"), (0, "/ws"),
    (1, "/sessions/new"), (0, "/sessions"), (0, "/sessions/"), (0, "/sessions/s0123456789abcdef"),
    (2, "/sessions/s0123456789abcdef"), (1, "/sessions/s0123456789abcdef/clear"), (0, "/sessions/s1/clear"),
    (3, "/sessions/s1"), (6, "/health"), (7, "/"), (0, "/sessions//clear"), (0, "/sessions/" + "a" * 64),
    (0, "/sessions/" + "a" * 65), (0, "/sessions/a b"), (0, "/" + "p" * 300), (0, "//"), (0, ""), (0, "health"),
    (0, "/sessions/s1/clear/"), (0, "/sessions/s1/other"), (5, "/sessions/new/"),
]
HTTP_BODIES = [
    "", "  \r\n", '{"name":"team","system_prompt":"Be brief."}', '{"model_id":"echo","kind":"group"}',
    '{"kind":"public"}', '{"type":"chat","message":"ignored type"}', "[]", '{"name":' + "[" * 500, "null",
]


# ---- sse / ndjson: 2 bytes max, 1 byte k, 2k bytes cuts, the stream ------

def framed(max_event, cuts, stream):
    head = struct.pack(">HB", max_event - 1, len(cuts)) + b"".join(struct.pack(">H", c) for c in cuts)
    return head + (stream.encode() if isinstance(stream, str) else stream)


SSE = {
    "openai": "".join("data: %s\n\n" % v for v in (OAI["first_chunk"], OAI["content"], OAI["stop"], OAI["usage"]))
              + "data: [DONE]\n\n",
    "gemini_crlf": "".join("data: %s\r\n\r\n" % v for v in (GEM["text"], GEM["stop"])),
    "whatwg_1": "data: YHOO\ndata: +2\ndata: 10\n\n",
    "whatwg_2": ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
    "whatwg_3": "data\n\ndata\ndata\n\ndata:",
    "events_ids": "event: add\ndata: 73857293\nid: 7\n\nevent: remove\ndata: 2153\n\nretry: 1000\nevent: add\ndata: 113411\n\n",
    "cr_only": "data: a\rdata: b\r\rdata: c\r\r",
    "bom": b"\xef\xbb\xbfdata: x\n\n",
    "bom_partial": b"\xef\xbbdata: x\n\n",
    "nul_and_utf8": b"data: a\x00b\xff\xfe\ndata: \xc3\n\nid: a\x00b\n\ndata: y\n\n",
    "id_nul": b"id: 1\x00\ndata: x\n\n",
    "over_long": "data: " + "x" * 100 + "\n\ndata: ok\n\n",
    "unterminated": "data: never dispatched",
}
NDJSON = {
    "ollama": "\n".join((OLL["content"], OLL["content"], OLL["done"])) + "\n",
    "crlf": OLL["content"] + "\r\n" + OLL["done"] + "\r\n",
    "blank_lines": "\n \n\t\r\n{}\n\r\n",
    "no_final_lf": '{"a":1}\n{"b":2}',
    "cr_cr_lf": '{"a":1}\r\r\n{"b":2}\r',
    "nul_and_utf8": b'{"a":"\x00"}\n\xff\xfe\n',
    "over_long": "x" * 100 + "\n" + '{"ok":true}\n',
}


# ---- envelope: msgpack built from pl_envelope.def -------------------------

def mp(v):
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack(">b", v)
        if v >= 0:
            for fmt, tag, lim in ((">B", 0xCC, 1 << 8), (">H", 0xCD, 1 << 16), (">I", 0xCE, 1 << 32), (">Q", 0xCF, 1 << 64)):
                if v < lim:
                    return bytes([tag]) + struct.pack(fmt, v)
        for fmt, tag, lim in ((">b", 0xD0, 1 << 7), (">h", 0xD1, 1 << 15), (">i", 0xD2, 1 << 31), (">q", 0xD3, 1 << 63)):
            if -lim <= v:
                return bytes([tag]) + struct.pack(fmt, v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        return mp_head(len(b), 0xA0, 32, 0xD9, 0xDA, 0xDB) + b
    if isinstance(v, (bytes, bytearray)):
        return mp_head(len(v), None, 0, 0xC4, 0xC5, 0xC6) + bytes(v)
    if isinstance(v, list):
        return mp_head(len(v), 0x90, 16, None, 0xDC, 0xDD) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return mp_head(len(v), 0x80, 16, None, 0xDE, 0xDF) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


def mp_head(n, fix, fixlim, t8, t16, t32):
    if fix is not None and n < fixlim:
        return bytes([fix | n])
    if t8 is not None and n < 256:
        return bytes([t8, n])
    if n < 65536:
        return bytes([t16]) + struct.pack(">H", n)
    return bytes([t32]) + struct.pack(">I", n)


def schema():
    text = open(os.path.join(ROOT, "protocol", "pl_envelope.def")).read()
    fields = re.findall(r"PL_FIELD\((\w+),\s*(\w+),\s*(\w+),", text)
    fields = [f for f in fields if f[0] != "ID"]  # the macro's own parameter list
    msgs = []
    for line in text.splitlines():  # one row per line; required fields up to the last ')'
        m = re.search(r'PL_MSG\((\w+),\s*"(\w+)",\s*(.*)\)', line)
        if m:
            msgs.append(m.groups())
    return fields, msgs


def value(fid, kind, sample_event=None):
    strs = {"SESSION": "s4b0c1d2e3f405162", "TEXT": "Hello \u00e9 \U0001F600", "CID": '"req-1"', "MODEL": "echo",
            "KIND": "private", "NAME": "team", "SYSTEM": "Be brief.", "MSGID": "m9a0b1c2d3e4f5061",
            "RESPID": "r7700112233445566"}
    return {
        "U64": 12345, "I64": 41, "F64": 1763925000.123, "BOOL": True, "STR": strs.get(fid, "x"),
        "HIST": [["m1", "user", "hi", "c1f0a", 1763925000.123, 82, 0], ["m2", "assistant", "Echo: hi", "", 1763925001.5, 83, 0]],
        "SESSV": [["s1", "echo", "shared", "team", 5, 2, 1763925000.0]],
        "I64V": [1, 2, 3, -4, 9007199254740991],
        "BINV": [sample_event or b"\x81\x00\x01", b""],
    }[kind]


def envelopes():
    fields, msgs = schema()
    num = {f[0]: i + 1 for i, f in enumerate(fields)}
    kind = {f[0]: f[2] for f in fields}
    typ = {m[0]: i + 1 for i, m in enumerate(msgs)}
    chunk = mp({0: typ["EV_CHUNK"], num["SESSION"]: "s1", num["SEQ"]: 7, num["RESPID"]: "r1", num["TEXT"]: "Echo "})
    seeds = {}
    for mid, name, req in msgs:
        env = {0: typ[mid]}
        for fid in re.findall(r"F_\((\w+)\)", req):
            env[num[fid]] = value(fid, kind[fid], chunk)
        seeds["msg_" + name] = mp(env)
    # every field at once, on a type that renders most of them
    full = {0: typ["EV_RESPONSE_DONE"]}
    for fid, _, k in fields:
        full[num[fid]] = value(fid, k, chunk)
    seeds["all_fields"] = mp(full)
    seeds["chunk"] = chunk
    neg = {0: typ["SESSION_JOINED"], num["CONN"]: 2**64 - 1, num["SESSION"]: "", num["SEQ"]: -2**63,
           num["TEMP"]: float("nan"), num["DURATION"]: float("-inf"), num["HIST"]: [], num["SESSV"]: []}
    seeds["extremes"] = mp(neg)
    seeds["i64_over"] = mp({0: typ["EV_STATUS"], num["SESSION"]: "s", num["SEQ"]: 2**63})
    seeds["float32"] = (b"\x84\x00" + mp(typ["EV_STATUS"]) + mp(num["SESSION"]) + mp("s") + mp(num["SEQ"]) + mp(1)
                       + mp(num["TS"])) + b"\xca\x3f\x80\x00\x00"
    seeds["dup_field"] = b"\x83\x00" + mp(typ["TERM"]) + mp(num["TEXT"]) + mp("a") + mp(num["TEXT"]) + mp("b")
    seeds["dup_type"] = b"\x82\x00" + mp(typ["TERM"]) + b"\x00" + mp(typ["TERM"])
    seeds["unknown_field"] = mp({0: typ["TERM"], 99: 1})
    seeds["unknown_type"] = mp({0: 250})
    seeds["type_zero"] = mp({0: 0})
    seeds["no_type"] = mp({num["TEXT"]: "a"})
    seeds["missing_required"] = mp({0: typ["CHAT"], num["CONN"]: 1})
    seeds["wrong_kind"] = mp({0: typ["CHAT"], num["CONN"]: "1", num["TEXT"]: 5})
    seeds["str_nul"] = mp({0: typ["TERM"], num["TEXT"]: "a\x00b"})
    seeds["str_invalid_utf8"] = b"\x82\x00" + mp(typ["TERM"]) + mp(num["TEXT"]) + b"\xa3\xff\xfe\xc0"
    seeds["trailing"] = mp({0: typ["TERM"]}) + b"\xc0"
    seeds["not_map"] = mp([0, 1])
    seeds["nil"] = b"\xc0"
    seeds["hist_short_entry"] = mp({0: typ["ST_MESSAGE"], num["SESSION"]: "s", num["HIST"]: [["m1", "user", "hi"]]})
    seeds["hist_bad_later_entry"] = mp({0: typ["ST_MESSAGE"], num["SESSION"]: "s",
                                        num["HIST"]: [["m", "user", "t", "", 1.0, 2, 0], ["m", "user", 3, "", 1.0, 2, 0]]})
    seeds["binv_not_bin"] = mp({0: typ["ST_CHUNKS"], num["SESSION"]: "s", num["SEQ"]: 1, num["EVENTS"]: ["str"]})
    seeds["array_count_huge"] = b"\x82\x00" + mp(typ["STATS_REPLY"]) + mp(num["STATS"]) + b"\xdd\xff\xff\xff\xff"
    seeds["map_count_huge"] = b"\xdf\xff\xff\xff\xff\x00\x01"
    seeds["str_len_huge"] = b"\x82\x00\x01" + mp(num["TEXT"]) + b"\xdb\xff\xff\xff\xff"
    seeds["deep_nesting"] = b"\x82\x00" + mp(typ["TERM"]) + mp(num["HIST"]) + b"\x91" * 5000 + b"\x90"
    seeds["ext"] = b"\x82\x00" + mp(typ["TERM"]) + mp(num["TEXT"]) + b"\xd4\x01\x00"
    return seeds


# ---- capture: capture files (docs/capture.md) -----------------------------

def cap_header(version=1, extra=None):
    h = {"format": "parley-capture", "version": version, "created_us": 1763942400000000,
         "source": "parleyd tap ipc:///tmp/parley.tap"}
    h.update(extra or {})
    return mp(h)


def cap_records():
    """One record of each kind, then each with the edges of its fields."""
    t = 1763942400000001
    return [
        [0, 1, t, 7, "/ws", "session"],
        [1, 2, t + 1, 7, 0, 1, b'{"type":"chat","message":"hi"}'],
        [1, 3, t + 2, 7, 1, 1, b'{"type":"chunk","text":"h\u0000i","seq":3}'],
        [1, 4, t + 3, 7, 0, 2, b"\x00\xff binary"],
        [1, 5, t + 4, 7, 1, 1, b""],
        [3, 6, t + 5, 0, 12],
        [2, 19, t + 6, 7, 1000, 0],
        [2, 20, t + 7, (1 << 64) - 1, 0, 1],
        [0, 21, t + 8, 8, "/ws/" + "x" * 252, ""],
    ]


def real_frames(direction):
    """Text frames of tests/captures/conversation.cap in one direction (0 client,
    1 server), read with a minimal walk of the records: bin8 payloads that follow
    "dir, opcode 1" (dir 0x01 0xc4 len) and are a JSON object — every frame in
    it but the longest, which need more than bin8."""
    data = open(os.path.join(ROOT, "tests", "captures", "conversation.cap"), "rb").read()
    frames, at = [], 0
    while True:
        at = data.find(bytes([direction]) + b"\x01\xc4", at)
        if at < 0:
            return frames
        n = data[at + 3]
        body = data[at + 4: at + 4 + n]
        if body.startswith(b"{") and body.endswith(b"}"):
            frames.append(body)
        at += 4


BENCH_SCAN = {
    "chunk": '{"type":"chunk","text":"Echo \\"q\\" ","chunk_number":3,"is_final":false,"response_id":"r1",'
             '"session_id":"s1","seq":12}',
    "complete": '{"type":"response_complete","total_chunks":8,"processing_time":0.2,"message_count":2,'
                '"usage":{"prompt_tokens":3,"completion_tokens":8},"session_id":"s1","seq":13}',
    "added": '{"type":"session_update","update_type":"message_added","message_count":1,'
             '"message":{"id":"m1","role":"user","content":"t17 w1 w2","timestamp":1.5},"session_id":"s1","seq":7}',
    "error": '{"type":"error","code":"BUSY","message":"busy","id":42}',
    "deep": '{"a":' + "[" * 40 + "]" * 40 + ',"type":"pong"}',
    "cut_string": '{"type":"chunk","text":"abc',
    "escape_at_end": '{"type":"chunk","text":"abc\\',
    "huge_number": '{"type":"chunk","seq":99999999999999999999999,"chunk_number":-1}',
    "not_object": '["type","chunk"]',
}


def captures():
    recs = b"".join(mp(r) for r in cap_records())
    real = open(os.path.join(ROOT, "tests", "captures", "conversation.cap"), "rb").read()
    yield "conversation.cap", real             # recorded from parleyd's tap
    yield "conversation.cut.cap", real[: len(real) * 2 // 3]
    yield "kinds.cap", cap_header() + recs
    yield "kinds.cut.cap", (cap_header() + recs)[:-5]
    yield "header_only.cap", cap_header()
    yield "header_extra_keys.cap", cap_header(extra={"future": [1, 2, {"x": False}]}) + recs
    yield "version2.cap", cap_header(version=2) + recs
    yield "no_magic.cap", mp({"version": 1}) + recs
    yield "json.cap", b'{"format":"parley-capture","version":1}'
    yield "wrong_arity.cap", cap_header() + mp([0, 1, 2, 3, "/ws"]) + recs
    yield "wrong_kind.cap", cap_header() + mp([9, 1, 2, 3, 4])
    yield "negative_time.cap", cap_header() + mp([2, 1, -5, 3, 1000, 0])
    yield "close_code_5000.cap", cap_header() + mp([2, 1, 5, 3, 5000, 0])
    yield "path_too_long.cap", cap_header() + mp([0, 1, 5, 3, "/" * 257, "session"])
    yield "payload_str_not_bin.cap", cap_header() + mp([1, 1, 5, 3, 0, 1, "text"])
    yield "bin32_huge.cap", cap_header() + b"\x97\x01\x01\x01\x01\x00\x01\xc6\xff\xff\xff\xff"
    yield "array32_huge.cap", cap_header() + b"\xdd\xff\xff\xff\xff\x00"
    yield "nested.cap", cap_header() + b"\x91" * 200 + b"\x00"
    yield "garbage_tail.cap", cap_header() + recs + b"\xc1\xc1"


def main():
    for name, frame in SESSION.items():
        out("dialect_session", name + ".json", frame)
    # pl_session_parse_as: byte 0 picks the type (s_types[] in the harness)
    out("dialect_session", "as_create.bin", b"\x00" + b'{"name":"team","kind":"shared"}')
    out("dialect_session", "as_chat.bin", b"\x03" + b'{"message":"hi","type":"ping"}')
    out("dialect_session", "as_unknown.bin", b"\x0a" + b"{}")
    with_truncations("dialect_session", "chat_full_trunc.json", SESSION["chat_full"], (0.3, 0.7))

    for vi, items in enumerate((OAI, GEM, OLL)):
        vname = ("openai", "gemini", "ollama")[vi]
        for name, item in items.items():
            raw = item.encode() if isinstance(item, str) else item
            status = {"error": 500, "error_key": 401, "error_array": 400}.get(name, 200)
            out("vendor", "%s_%s" % (vname, name), bytes([vi]) + struct.pack(">H", status) + raw)
            if name in ("content", "text", "stop"):
                out("vendor", "%s_%s.cut" % (vname, name), bytes([vi]) + b"\x00\xc8" + raw[: len(raw) // 2])
    out("vendor", "status_only_429", b"\x00\x01\xad")
    out("vendor", "html_502", b"\x01\x01\xf6<html><body>502 Bad Gateway</body></html>")

    for name, text in MODELS.items():
        out("models", name + ".json", text)
    with_truncations("models", "three_trunc.json", MODELS["three"], (0.4,))

    for i, (m, path) in enumerate(HTTP):
        body = HTTP_BODIES[i % len(HTTP_BODIES)]
        out("http", "route_%02d" % i, bytes([m]) + path.encode() + b"\n" + body.encode())
    out("http", "path_nul", b"\x00/health\x00/x\n{}")
    out("http", "body_nul", b"\x01/sessions/new\n{\"name\":\"a\x00\"}")
    out("http", "body_invalid_utf8", b"\x01/sessions/new\n{\"name\":\"\xff\xfe\"}")

    for name, stream in SSE.items():
        for max_event, cuts, tag in ((4096, (), ""), (16, (3, 40, 41), ".small_cut")):
            out("sse", name + tag, framed(max_event, cuts, stream))
    for name, stream in NDJSON.items():
        for max_line, cuts, tag in ((4096, (), ""), (16, (1, 20, 21), ".small_cut")):
            out("ndjson", name + tag, framed(max_line, cuts, stream))

    for name, data in envelopes().items():
        out("envelope", name + ".mp", data)

    for name, data in captures():
        out("capture", name, data)
    for name, frame in BENCH_SCAN.items():
        out("bench_scan", name + ".json", frame)
    for i, frame in enumerate(real_frames(1)):
        out("bench_scan", "captured_%02d.json" % i, frame)
    # the client frames of the committed capture: real traffic for the dialect
    for i, frame in enumerate(real_frames(0)):
        out("dialect_session", "captured_%02d.json" % i, frame)


if __name__ == "__main__":
    main()
