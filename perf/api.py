"""API benchmarks (not tests): latency and throughput of `qv serve`, with the stack's limit.

- json: 1 symbol x 1 year of daily bars as JSON at 32 concurrent connections (wrk, 2 threads),
  against a bare uvicorn app returning the same pre-serialized bytes in the same run (the
  physical limit of the stack on this machine): p50/p95/p99 and requests/s of both, and
  each server's CPU per request (`cpu_ratio_to_bare`: the throughput ratio the two would
  have with a core each, which other processes on a shared machine sway less);
- bulk: 500 symbols x 10 years (1.26 M bars) as one Arrow IPC stream over loopback from a
  fresh server (its own process, started for this): bars/s to the last byte of the first
  request (read from the store) and of the repeats (settled history, from the cache), the
  seconds to the response's head (the first byte: what is read before it is sent), the
  server's CPU per request, and the client's CPU apart (http.client reading into one
  buffer; pyarrow's decode after the last byte, from that buffer);
- ws: 100 WebSocket clients x 50 symbols each, bars published at 5,000/s into the server's
  bus (a publisher thread in the server process): publish -> receive latency p50/p99 and
  the number of bars lost.

Each server is its own process (uvicorn, 1 worker); the API's per-client rate limits live in
Redis (`--limiter redis`, the default: shared by API processes, tokens leased a block per
call) or in the process (`--limiter memory`). `json_summary` holds the done-criteria over the
runs (throughput ratio range, worst p95, CPU per request of both servers). Needs `wrk` (Debian
package) and, with `--limiter redis`, Redis at QV_SERVICES__REDIS_URL. Prints one
JSON line. Usage: python perf/api.py [--runs 3] [--seconds 10] [--limiter redis|memory]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pyarrow as pa
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quantivista.config import Settings
from quantivista.platform import Platform
from storage import universe

_WRK_LUA = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %f %f %f %f\\n", summary.requests,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, summary.duration / 1e6))
end
"""

_BARE = """
import sys, uvicorn
body = open(sys.argv[1], "rb").read()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""

_WS_SERVER = """
import sys, threading, time, json
from datetime import UTC, datetime
import uvicorn
from quantivista.api.app import create_app
from quantivista.bus.events import BarsStreamed
from quantivista.config import Settings

rate, symbols, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
app = create_app(Settings())

def publish():
    while not getattr(app.state, "qv", None):
        time.sleep(0.05)
    bus = app.state.qv.runtime.bus
    time.sleep(float(sys.argv[4]))  # clients connect and subscribe first
    tick, sent, start = 0.01, 0, time.perf_counter()
    per_tick = max(1, int(rate * tick))
    for n in range(int(float(sys.argv[5]) / tick)):
        rows = [{"symbol": f"S{(sent + i) % symbols:04d}", "timeframe": "1m",
                 "ts": "2026-11-23T15:00:00+00:00", "close": 1.0,
                 "sent_at": time.time()} for i in range(per_tick)]
        bus.publish(BarsStreamed(occurred_at=datetime.now(UTC), source="perf",
                                 timeframe="1m", rows=rows))
        sent += per_tick
        delay = start + (n + 1) * tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"published": sent}), flush=True)

threading.Thread(target=publish, daemon=True).start()
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "quantivista.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait(f"http://127.0.0.1:{port}/healthz")
    return proc


def _cpu_s(pid: int) -> float:
    """Return the user + system CPU seconds process `pid` has used so far (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(url: str, headers: dict[str, str], seconds: int, lua: Path, pid: int) -> dict[str, float]:
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "5s", "-s", str(lua), url]
    for name, value in headers.items():
        cmd[1:1] = ["-H", f"{name}: {value}"]
    cpu = _cpu_s(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu = _cpu_s(pid) - cpu
    match = re.search(r"RESULT (\d+) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", out)
    assert match, out
    requests, p50, p95, p99, duration = (float(g) for g in match.groups())
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    # the server's CPU per request: what its throughput is when it has a core to itself,
    # less swayed by other processes than requests/s on a shared machine
    return {"rps": requests / duration, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            "server_cpu_us": cpu / requests * 1e6,
            "non_2xx": float(errors.group(1)) if errors else 0.0}  # fmt: skip


def bench_json(
    base: str, server_pid: int, key: str, symbol: str, seconds: int, tmp: Path
) -> dict[str, Any]:
    lua = tmp / "report.lua"
    lua.write_text(_WRK_LUA)
    path = f"/api/v1/bars?symbols={symbol}&start=2019-01-01&end=2019-12-31"
    body = httpx.get(base + path, headers={"X-API-Key": key}).content
    (tmp / "body.json").write_bytes(body)
    port = _free_port()
    bare = subprocess.Popen([sys.executable, "-c", _BARE, str(tmp / "body.json"), str(port)])
    try:
        _wait(f"http://127.0.0.1:{port}/")
        limit = _wrk(f"http://127.0.0.1:{port}/", {}, seconds, lua, bare.pid)
    finally:
        bare.terminate()
        bare.wait()
    api = _wrk(base + path, {"X-API-Key": key}, seconds, lua, server_pid)
    return {"bytes": len(body), "api": api, "bare_uvicorn": limit,
            "ratio_to_bare": api["rps"] / limit["rps"],
            "cpu_ratio_to_bare": limit["server_cpu_us"] / api["server_cpu_us"]}  # fmt: skip


def _get_body(port: int, target: str, key: str) -> tuple[bytearray, dict[str, str]]:
    """GET `target` with http.client, reading the body straight into one buffer (the
    seconds to the response's head are in the headers as `x-perf-head-s`)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        started = time.perf_counter()
        conn.request("GET", target, headers={"X-API-Key": key})
        reply = conn.getresponse()
        head_s = time.perf_counter() - started
        assert reply.status == 200, reply.read()[:300]
        headers = {k.lower(): v for k, v in reply.getheaders()}
        headers["x-perf-head-s"] = f"{head_s:.4f}"
        if "content-length" in headers:
            body = bytearray(int(headers["content-length"]))
            view, got = memoryview(body), 0
            while got < len(body):
                n = reply.readinto(view[got:])
                assert n, "the server closed the connection early"
                got += n
        else:  # a chunked stream (bodies over the API's known-length bound)
            body = bytearray(reply.read())
        return body, headers
    finally:
        conn.close()


def bench_bulk(env: dict[str, str], key: str, symbols: list[str], runs: int) -> dict[str, Any]:
    """Bulk Arrow of `symbols` x 10 years from a fresh server: its first request, then repeats.

    The client authenticates first with a small request (its key check runs once per API
    process: a client's first request, not the bulk's cost). Per request: the time to the
    last byte (the server's time: the client only copies bytes into one buffer meanwhile),
    the server's CPU (/proc) and the client's (getrusage), then the client's decode
    (pyarrow, from the buffer, no copy) apart.
    """
    port = _free_port()
    server = _serve(env, port)
    target = "/api/v1/bars?" + urlencode({"symbols": ",".join(symbols), "start": "2014-01-01",
                                          "end": "2023-12-31", "format": "arrow"})  # fmt: skip
    out: dict[str, Any] = {"requests": []}
    try:
        _get_body(port, f"/api/v1/bars?symbols={symbols[0]}&start=2019-01-01&end=2019-12-31", key)
        for _ in range(runs):
            server_cpu, client_cpu = _cpu_s(server.pid), resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            body, headers = _get_body(port, target, key)
            last_byte = time.perf_counter() - started
            server_cpu = _cpu_s(server.pid) - server_cpu
            used = resource.getrusage(resource.RUSAGE_SELF)
            client_cpu_s = used.ru_utime + used.ru_stime - client_cpu.ru_utime - client_cpu.ru_stime
            decode_started = time.process_time()
            table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
            decode_cpu = time.process_time() - decode_started
            out["requests"].append({
                "seconds_to_last_byte": round(last_byte, 3),
                "seconds_to_head": float(headers["x-perf-head-s"]),
                "bars_per_s": table.num_rows / last_byte,
                "server_cpu_s": round(server_cpu, 3), "client_read_cpu_s": round(client_cpu_s, 3),
                "client_decode_cpu_s": round(decode_cpu, 3),
                "content_length": "content-length" in headers,
            })  # fmt: skip
            out["bars"], out["bytes"] = table.num_rows, len(body)
    finally:
        server.terminate()
        server.wait()
    first, repeats = out["requests"][0], out["requests"][1:]
    # the first read streams from the store; repeats of settled history, from the cache
    out["first_request_bars_per_s"] = first["bars_per_s"]
    out["first_request_server_cpu_s"] = first["server_cpu_s"]
    out["repeat_bars_per_s"] = [r["bars_per_s"] for r in repeats]
    return out


async def _ws_clients(url: str, key: str, clients: int, symbols: int, per: int,
                      duration: float) -> tuple[list[float], int]:  # fmt: skip
    latencies: list[float] = []
    received = 0

    async def one(k: int) -> None:
        nonlocal received
        mine = [f"S{(k * per + i) % symbols:04d}" for i in range(per)]
        async with websockets.connect(url, max_queue=None) as ws:
            await ws.send(json.dumps({"action": "auth", "api_key": key}))
            await ws.send(json.dumps({"action": "subscribe", "bars": mine}))
            end = time.monotonic() + duration
            while time.monotonic() < end:
                try:
                    text = await asyncio.wait_for(ws.recv(), 1.0)
                except TimeoutError:
                    continue
                frame = json.loads(text)
                now = time.time()
                for message in frame if isinstance(frame, list) else [frame]:
                    if message["type"] == "bar":
                        latencies.append(now - message["sent_at"])
                        received += 1

    await asyncio.gather(*(one(k) for k in range(clients)))
    return latencies, received


def bench_ws(env: dict[str, str], key: str, clients: int = 100, per: int = 50,
             rate: int = 5000, seconds: float = 10.0) -> dict[str, Any]:  # fmt: skip
    symbols = 500
    port = _free_port()
    warmup = 3.0
    server = subprocess.Popen(
        [sys.executable, "-c", _WS_SERVER, str(rate), str(symbols), str(port), str(warmup),
         str(seconds)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{port}/healthz")
        latencies, received = asyncio.run(
            _ws_clients(
                f"ws://127.0.0.1:{port}/api/v1/stream",
                key,
                clients,
                symbols,
                per,
                warmup + seconds + 3.0,
            )
        )
        assert server.stdout is not None
        published = json.loads(server.stdout.readline())["published"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    # each symbol is watched by clients * per / symbols clients
    expected = published * clients * per // symbols
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 100 else [float("nan")] * 99
    return {
        "clients": clients, "symbols_each": per, "bars_per_s": rate, "published": published,
        "deliveries_expected": expected, "received": received, "lost": expected - received,
        "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000,
    }  # fmt: skip


def main() -> None:
    """Run the API benchmarks and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--skip", nargs="*", default=[], choices=["json", "bulk", "ws"])
    parser.add_argument(
        "--limiter", choices=["redis", "memory"], default="redis",
        help="where the per-client rate limits live (redis: shared by API processes, leased)",
    )  # fmt: skip
    args = parser.parse_args()
    out: dict[str, Any] = {"bench": "api", "load_avg_1m": round(os.getloadavg()[0], 2),
                           "limiter": args.limiter}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        settings = Settings(data_dir=tmp / "qv")
        frame = universe(500, 10)
        with Platform.from_settings(settings) as p:
            p.write_bars(frame, source="perf", timeframe="1d")
            key = p.runtime.auth.create_client("perf", ["read:bars"]).api_key
        symbols = frame["symbol"].unique(maintain_order=True).to_list()
        env = {**os.environ, "QV_DATA_DIR": str(settings.data_dir),
               "QV_API__RATE_LIMITS": '["1000000/second"]', "QV_LOG_LEVEL": "WARNING"}  # fmt: skip
        if args.limiter == "redis":  # the rate limits of every API process in one Redis
            env["QV_RESILIENCE__BACKEND"] = "redis"
            env["QV_RESILIENCE__REDIS_PREFIX"] = f"qv-perf:apiperf:{os.getpid()}"
        port = _free_port()
        server = _serve(env, port)
        base = f"http://127.0.0.1:{port}"
        try:
            if "json" not in args.skip:
                out["json"] = [bench_json(base, server.pid, key, symbols[7], args.seconds, tmp)
                               for _ in range(args.runs)]  # fmt: skip
        finally:
            server.terminate()
            server.wait()
        if "bulk" not in args.skip:  # a fresh server: its first bulk read
            out["bulk"] = bench_bulk(env, key, symbols, args.runs)
        if "ws" not in args.skip:
            out["ws"] = [bench_ws(env, key) for _ in range(args.runs)]
    out["frame_bars"] = frame.height
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    if "json" in out:  # the done-criteria: ranges over the runs
        ratios = [r["ratio_to_bare"] for r in out["json"]]
        out["json_summary"] = {
            "ratio_to_bare_min_max": [min(ratios), max(ratios)],
            "p95_ms_max": max(r["api"]["p95_ms"] for r in out["json"]),
            "api_cpu_us": [r["api"]["server_cpu_us"] for r in out["json"]],
            "bare_cpu_us": [r["bare_uvicorn"]["server_cpu_us"] for r in out["json"]],
        }
    print(json.dumps(out, default=lambda v: round(v, 4) if isinstance(v, float) else str(v)))


if __name__ == "__main__":
    main()
