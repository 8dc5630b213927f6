"""Instructions of one warm `validate()` of a streaming micro-batch (callgrind; load-independent).

The 500-bar one-minute batch of `perf/validate_small.py` with its hour of history: a
fresh process under `valgrind --tool=callgrind` warms the validator up with 3 calls,
then runs `QV_PERF_IR_CALLS` calls (default 3) between two `os.getppid()` markers, which
`--dump-before=getppid` turns into dump boundaries; the dump between them is all
threads' instructions, reported per call. Each run also measures the peer (one select of
the row rules' flag bits, `Validator.flags`) the same way.
Usage: python perf/validate_small_ir.py   (needs valgrind; ~1-3 minutes)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from _common import callgrind_totals

CALLS = int(os.environ.get("QV_PERF_IR_CALLS", "3"))


def child() -> None:
    """Warm up, then each measured part between two dump markers."""
    sys.path.insert(0, str(Path(__file__).parent))
    import validate_small
    from quantivista.quality.validate import Validator
    from quantivista.reference.calendars import get_calendar

    batch, history = validate_small.cases()["500x1"]
    v = Validator(get_calendar("XNYS"))
    for _ in range(3):
        v.validate(batch, job_id="ir", history=history)
        v.flags(batch)
    os.getppid()
    for _ in range(CALLS):
        v.validate(batch, job_id="ir", history=history)
    os.getppid()
    for _ in range(CALLS):
        v.flags(batch)
    os.getppid()


def measure() -> dict[str, Any]:
    """Run the child under callgrind; return instructions per call of each part."""
    totals = callgrind_totals([__file__, "--child"])
    # dumps: set-up, the validate calls, the peer calls (the rest is exit)
    return {
        "validate_per_call": totals[1] // CALLS,
        "peer_flags_select_per_call": totals[2] // CALLS,
    }


def main() -> None:
    if "--child" in sys.argv:
        child()
        return
    out = {"bench": "validate_small_ir", "calls": CALLS, **measure()}
    out["polars_max_threads"] = os.environ.get("POLARS_MAX_THREADS", "default")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
