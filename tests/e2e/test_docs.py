"""The README's option table is the one `parleyd --help` prints (STYLE.md: one config table)."""

import os
import re
import subprocess

from conftest import parleyd_binary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_readme_lists_every_option_of_help():
    out = subprocess.run([parleyd_binary(), "--help"], capture_output=True, text=True, timeout=10).stdout
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    rows = [line for line in out.splitlines() if line.startswith("  --")]
    assert len(rows) >= 20
    for row in rows:
        assert row in readme, f"README's option table is stale; missing:\n{row}"


def test_protocol_doc_names_every_error_code():
    doc = open(os.path.join(ROOT, "docs", "protocol.md"), encoding="utf-8").read()
    header = open(os.path.join(ROOT, "protocol", "pl_err.h"), encoding="utf-8").read()
    codes = set(re.findall(r'X\(\w+,\s*"([A-Z_]+)"', header))
    served = {"BAD_JSON", "BAD_FRAME", "UNKNOWN_TYPE", "MISSING_FIELD", "EMPTY_MESSAGE",
              "TOO_LARGE", "NOT_FOUND", "FORBIDDEN", "BUSY", "INTERNAL"}
    assert served <= codes
    for code in served:
        assert f"`{code}`" in doc, f"docs/protocol.md does not document {code}"
