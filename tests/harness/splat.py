# SPDX-License-Identifier: GPL-2.0
"""Finds kernel reports (WARN, BUG, Oops, KASAN, lockdep, hung task, kmemleak, ...) in guest logs."""

import re
from dataclasses import dataclass

# printk prefixes: "[    5.123456] " with PRINTK_TIME, possibly with a caller id "[T123]".
_PREFIX = re.compile(r"^\s*(?:<\d+>)?(?:\[\s*\d+\.\d+\]\s*)?(?:\[\s*[TC]\d+\]\s*)?")

# (kind, regex matched against a line with its printk prefix removed). Anchored
# at the start of the message so that a harmless line that merely mentions a
# word ("lkdtm: Performing direct entry WARNING") is not a report.
PATTERNS = [
    ("warn", re.compile(r"^WARNING: (?:CPU: \d+ PID: \d+ at |possible |suspicious |inconsistent |bad unlock|held lock freed|lock held |.*locking)")),
    ("warn", re.compile(r"^-+\[ cut here \]-+$")),
    ("bug", re.compile(r"^BUG: ")),
    ("bug", re.compile(r"^kernel BUG at ")),
    ("oops", re.compile(r"^Oops: ")),
    ("oops", re.compile(r"^(?:general protection fault|stack segment|invalid opcode)\b")),
    ("kasan", re.compile(r"^(?:BUG: )?KASAN: ")),
    ("ubsan", re.compile(r"^UBSAN: ")),
    ("lockdep", re.compile(r"^INFO: (?:possible|trying to register non-static key|lockdep is turned off)")),
    ("lockdep", re.compile(r"^DEBUG_LOCKS_WARN_ON")),
    ("hung-task", re.compile(r"^INFO: task \S+ blocked for more than \d+ seconds")),
    ("rcu-stall", re.compile(r"^rcu: INFO: \S+ (?:self-)?detected stalls?")),
    ("soft-lockup", re.compile(r"^watchdog: BUG: soft lockup")),
    ("kmemleak", re.compile(r"^kmemleak: \d+ new suspected memory leaks")),
    ("kmemleak", re.compile(r"^unreferenced object 0x[0-9a-f]+")),
    ("debugobjects", re.compile(r"^ODEBUG: ")),
    ("list-corruption", re.compile(r"^list_(?:add|del) corruption")),
    ("refcount", re.compile(r"^refcount_t: ")),
    ("panic", re.compile(r"^Kernel panic - not syncing")),
]


@dataclass(frozen=True)
class Report:
    """One kernel report: what kind, the line that gave it away, and the lines after it."""

    kind: str
    line: str
    context: str

    def __str__(self):
        return f"[{self.kind}] {self.line}\n{self.context}"


def strip_prefix(line):
    """Returns a log line without its printk level and timestamp prefix."""
    return _PREFIX.sub("", line, count=1).rstrip("\r\n")


def find_reports(text, context_lines=25):
    """Returns the kernel reports found in `text`, one per report (a report's own
    follow-up lines, such as the call trace, are not counted again)."""
    lines = text.splitlines()
    reports = []
    skip_until = -1
    for i, raw in enumerate(lines):
        line = strip_prefix(raw)
        for kind, regex in PATTERNS:
            if regex.search(line):
                break
        else:
            continue
        if i <= skip_until and kind != "panic":
            continue
        if line.endswith("[ cut here ]------------"):
            # Name the splat by its headline (WARNING: CPU: ... at ..., kernel BUG at ...).
            for nxt in lines[i + 1 : i + 4]:
                head = strip_prefix(nxt)
                if head.startswith(("WARNING:", "kernel BUG at", "BUG:")):
                    line = head
                    break
        ctx = "\n".join(lines[i : i + context_lines])
        reports.append(Report(kind, line, ctx))
        # The lines of the same splat (cut here, WARNING, trace) make one report.
        skip_until = i + 8
    return reports
