"""run_daemon: the start-up heap is frozen before `main` runs."""

from __future__ import annotations

import asyncio
import gc

from quantivista.config import ProbeSettings
from quantivista.services.daemon import run_daemon


def test_run_daemon_freezes_the_start_up_heap_before_main() -> None:
    gc.unfreeze()
    start_up = {"runtime": [1, 2, 3]}  # what a service builds before run_daemon

    async def main(stop: asyncio.Event) -> tuple[int, bool]:
        # frozen objects are in no generation: a full collection does not walk them
        collected = any(o is start_up for o in gc.get_objects())
        return gc.get_freeze_count(), collected

    try:
        frozen, walked = run_daemon("stream", ProbeSettings(ports={"stream": 0}), main)
    finally:
        gc.unfreeze()
    assert frozen > 0
    assert not walked
