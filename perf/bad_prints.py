"""Recall and precision of the 1-minute bad-print rule; prints one JSON line.

Synthetic regular-session minutes (`quantivista.testing.minutes`: fat tails, U-shaped
volatility, real long wicks on extra volume, news jumps) for `QV_PERF_SYMBOLS` symbols over
the full sessions of 2024-01..03. For each robust z in `Z_VALUES`:
- clean_flag_rate: share of minutes flagged on the data as generated (no injected prints);
- real_wicks_flagged: share of the real long wicks flagged (the rule's false alarms);
- recall / precision: after injecting bad prints into `RATE` of the minutes (one high, low
  or close moved 1-10% for one minute), against the injected rows.
"""

from __future__ import annotations

import json
import os

import numpy as np

from quantivista.config import IntradaySettings
from quantivista.model.flags import QualityFlag
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import get_calendar
from quantivista.testing.minutes import inject_bad_prints, session_minutes_with_events

SYMBOLS = int(os.environ.get("QV_PERF_SYMBOLS", "50"))
RATE = 0.001
Z_VALUES = (8.0, 10.0, 12.0, 16.0)
_BIT = int(QualityFlag.BAD_PRINT)


def _flags(validator: Validator, bars: object) -> np.ndarray:
    clean = validator.validate(bars, job_id="perf").clean  # type: ignore[arg-type]
    out: np.ndarray = (clean["quality_flags"].to_numpy() & _BIT) != 0
    return out


def main() -> None:
    cal = get_calendar("XNYS")
    bars, wicks, _ = session_minutes_with_events(cal, "2024-01-02", "2024-03-28", SYMBOLS)
    dirty, hit = inject_bad_prints(bars, RATE)
    rows = []
    for z in Z_VALUES:
        v = Validator(cal, intraday=IntradaySettings(bad_print_z=z))
        clean = _flags(v, bars)
        flagged = _flags(v, dirty)
        tp = int((flagged & hit).sum())
        rows.append(
            {
                "z": z,
                "clean_flag_rate": round(float(clean.mean()), 6),
                "real_wicks_flagged": round(float(clean[wicks].mean()), 4),
                "recall": round(tp / max(1, int(hit.sum())), 4),
                "precision": round(tp / max(1, int(flagged.sum())), 4),
            }
        )
    print(
        json.dumps(
            {
                "benchmark": "bad_prints",
                "minutes": bars.height,
                "symbols": SYMBOLS,
                "injected": int(hit.sum()),
                "real_wicks": int(wicks.sum()),
                "default_z": IntradaySettings().bad_print_z,
                "by_z": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
