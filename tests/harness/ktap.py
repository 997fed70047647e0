# SPDX-License-Identifier: GPL-2.0
"""A small KTAP parser (Documentation/dev-tools/ktap.rst) for KUnit results."""

import re
from dataclasses import dataclass, field

_RESULT = re.compile(r"^(?P<indent>\s*)(?P<ok>ok|not ok) (?P<num>\d+)(?: (?:- )?(?P<name>[^#]*?))?\s*(?:# (?P<directive>.*))?$")
_PLAN = re.compile(r"^\s*1\.\.(\d+)$")


@dataclass
class Result:
    name: str
    ok: bool
    skipped: bool
    depth: int
    children: list = field(default_factory=list)


def parse(text):
    """Returns the top-level results (suites) of KTAP `text`, each with its subtests. Lines may
    carry a printk prefix; `# ` diagnostics are ignored. Subtest results come before the result
    of their parent, one indentation level (4 spaces or a tab) deeper."""
    lines = []
    for raw in text.splitlines():
        line = re.sub(r"^\s*\[\s*\d+\.\d+\]\s?", "", raw.rstrip())
        lines.append(line.replace("\t", "    "))
    pending = {}  # depth -> results waiting for their parent
    top = []
    for line in lines:
        m = _RESULT.match(line)
        if not m:
            continue
        depth = len(m["indent"]) // 4
        directive = (m["directive"] or "").strip()
        r = Result(
            name=(m["name"] or "").strip(),
            ok=m["ok"] == "ok",
            skipped=directive.upper().startswith("SKIP"),
            depth=depth,
            children=pending.pop(depth + 1, []),
        )
        if depth == 0:
            top.append(r)
        else:
            pending.setdefault(depth, []).append(r)
    return top


def flatten(results, prefix=""):
    """Yields (path, result) for every leaf test."""
    for r in results:
        path = f"{prefix}{r.name}"
        if r.children:
            yield from flatten(r.children, path + ".")
        else:
            yield path, r
