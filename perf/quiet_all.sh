#!/usr/bin/env bash
# Every open issue's benchmark in one go, for a quiet machine (nothing else running).
# Usage: bash perf/quiet_all.sh [OUT_DIR]   (default: perf/out/quiet-<UTC timestamp>)
# Each benchmark prints one JSON line into OUT_DIR/<name>.json (stderr beside it); the
# 1-minute load average is printed before each so a disturbed run can be told apart.
# Takes ~14 minutes on 2 cores (QV_QUIET_ALL=all: the resolved issues' benchmarks too).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-perf/out/quiet-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
run() {
  local name=$1; shift
  echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg) -> $name: $*"
  "$PY" "$@" >"$OUT/$name.json" 2>"$OUT/$name.err" || echo "  $name failed (see $OUT/$name.err)"
}
run machine_probe_before perf/machine_probe.py  # how fast the machine is now (compare passes)
run stream_1 perf/stream.py
run stream_nats_lake_1 perf/stream.py nats lake
run stream_nats_lake_2 perf/stream.py nats lake
run stream_nats_lake_3 perf/stream.py nats lake
run append_stream perf/append.py --symbols 500,5000 --batches 300
run append_stream_recent_1 perf/append.py --symbols "" --batches 1000 --recent
run append_stream_recent_2 perf/append.py --symbols "" --batches 1000 --recent
run append_stream_recent_3 perf/append.py --symbols "" --batches 1000 --recent
# paced: a micro-batch every 100 ms (a live stream's arrive 1,000 ms apart), ~100 s each
run append_stream_paced_1 perf/append.py --symbols "" --batches 1000 --recent --interval-ms 100
run append_stream_paced_2 perf/append.py --symbols "" --batches 1000 --recent --interval-ms 100
run append_years perf/append.py --symbols 2000,5000 --years 10,20 --no-stream
if [ "${QV_QUIET_ALL:-}" = "all" ]; then  # the resolved issues' benchmarks too (~12 min more)
  run cold_read_1 perf/cold_read.py --runs 5
  run cold_read_2 perf/cold_read.py --runs 5
  run cold_read_3 perf/cold_read.py --runs 5
  run storage_1 perf/storage.py
  run workers perf/workers.py 200 60 2
  run api perf/api.py --runs 3
  run validate_small perf/validate_small.py
fi
run machine_probe_after perf/machine_probe.py
echo "$(date -u +%H:%M:%S) done: $OUT"
