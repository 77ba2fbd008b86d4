"""``lowbit doctor``: is every tool installed and working?"""

import sys

from ..cli import emit
from ..doctor import run_checks

NAME = "doctor"
HELP = "check every tool lowbit uses, and run a tiny UP5K build and a Verilator/cocotb simulation"


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="skip the two end-to-end flows")


def run(args) -> int:
    progress = (lambda msg: None) if args.json else (lambda msg: sys.stderr.write(f"[lowbit] {msg}\n"))
    checks = run_checks(progress, flows=not args.quick)
    ok = all(c.ok for c in checks)
    width = max(len(c.name) for c in checks)
    lines = [f"{'ok ' if c.ok else 'BAD'}  {c.name:<{width}}  {c.detail}" + (f"\n     -> {c.fix}" if c.fix else "")
             for c in checks]
    lines.append("all tools work" if ok else "some checks failed: see '->' lines for what to do")
    emit({"ok": ok, "checks": [c.as_dict() for c in checks]}, args.json, "\n".join(lines))
    return 0 if ok else 1
