"""Universe-wide re-validation: Dask (2 local worker processes) vs the single-process validator.

1,258,000 daily bars (500 symbols x 10 years, the generator of `perf/validate.py`, 0.1% of
rows with an inconsistent low) are written to a lake of 64 buckets without the validator,
then `revalidate` checks them all: once in this process (one read, one validation), once
on a LocalCluster of 2 worker processes on 127.0.0.1 with one task per bucket (each task
opens the lake and reads its bucket), both in the same run, alternating, `REPEAT` times.
The cluster's start is timed apart. Prints one JSON line; both must find the same rows.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quantivista.config import Settings
from quantivista.services.revalidation import revalidate
from quantivista.storage import open_backend
from validate import make_bars

REPEAT = 3


def main() -> None:
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "qv")
        bars = make_bars(500)
        backend = open_backend(settings)
        try:
            backend.bars.upsert(bars)
        finally:
            backend.close()
        t0 = time.perf_counter()
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        )
        client = Client(cluster)
        started = time.perf_counter() - t0
        local_s, dask_s = [], []
        try:
            for _ in range(REPEAT):
                local = revalidate(settings, engine="local")
                local_s.append(local.elapsed_s)
                dask = revalidate(settings, engine="dask", client=client)
                dask_s.append(dask.elapsed_s)
        finally:
            client.close()
            cluster.close()
    same = dask.per_symbol.equals(local.per_symbol) and dask.rule_counts == local.rule_counts
    report = {
        "bench": "revalidate",
        "bars": local.bars,
        "rejected": local.rejected,
        "partitions": dask.partitions,
        "same_findings": same,
        "local_s": [round(x, 2) for x in local_s],
        "dask_2_workers_s": [round(x, 2) for x in dask_s],
        "cluster_start_s": round(started, 2),
        "local_bars_per_s": round(local.bars / min(local_s)),
        "dask_bars_per_s": round(dask.bars / min(dask_s)),
        "load": os.getloadavg()[0],
    }
    print(json.dumps(report))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
