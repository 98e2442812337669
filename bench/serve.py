"""Throughput and latency of ``arlm serve`` under 1, 4 and 16 concurrent clients.

Each client sends completion requests one after another (a closed loop) for
``--seconds`` per level; the script reports the aggregate generated tokens per
second (``usage.completion_tokens`` summed over all finished requests, divided
by the wall time of the level), requests per second, and the p50 / p99 request
latency, then the ratio of the 16-client to the 1-client throughput (the
server's dynamic batching should make it well above 1).

Against a running server::

    arlm serve runs/gpt --port 8000 &
    python bench/serve.py --url http://127.0.0.1:8000 --model gpt

or let the script start one (on a free port) for a model directory::

    python bench/serve.py --model-dir runs/gpt
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


async def run_level(url: str, model: str, clients: int, seconds: float, max_tokens: int, prompt: str,
                    headers: dict) -> dict:
    latencies: list[float] = []
    tokens = 0
    stop_at = time.perf_counter() + seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        seed = 1000 * i
        while time.perf_counter() < stop_at:
            body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 1.0, "seed": seed}
            seed += 1
            t0 = time.perf_counter()
            r = await http.post(url + "/v1/completions", json=body, headers=headers)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)
            tokens += r.json()["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(latencies), "tokens": tokens, "wall_s": wall,
            "tokens_per_s": tokens / wall, "requests_per_s": len(latencies) / wall,
            "p50_s": statistics.median(latencies) if latencies else float("nan"),
            "p99_s": percentile(latencies, 99)}


def start_server(model_dir: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "arlm", "serve", model_dir, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("arlm serve exited before it was ready")
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("arlm serve did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--url", help="base URL of a running arlm serve")
    ap.add_argument("--model", help="model id on that server (default: the first one listed)")
    ap.add_argument("--model-dir", help="start a server for this model directory instead of --url")
    ap.add_argument("--clients", default="1,4,16", help="comma-separated concurrency levels")
    ap.add_argument("--seconds", type=float, default=15.0, help="duration of each level")
    ap.add_argument("--max-tokens", type=int, default=64, help="max_tokens of each request")
    ap.add_argument("--prompt", default="ROMEO:", help="prompt of every request")
    ap.add_argument("--api-key", default=os.environ.get("ARLM_API_KEY"), help="bearer key, if the server needs one")
    args = ap.parse_args()
    proc = None
    if args.model_dir:
        proc, url = start_server(args.model_dir)
    elif args.url:
        url = args.url.rstrip("/")
    else:
        ap.error("give --url or --model-dir")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        model = args.model or httpx.get(url + "/v1/models", headers=headers).json()["data"][0]["id"]
        levels = [int(x) for x in args.clients.split(",")]
        asyncio.run(run_level(url, model, 1, 2.0, args.max_tokens, args.prompt, headers))  # warm-up
        rows = []
        print(f"model {model}, max_tokens {args.max_tokens}, {args.seconds:g} s per level, closed-loop clients")
        print(f"{'clients':>7} {'requests':>8} {'tokens/s':>9} {'req/s':>7} {'p50 s':>7} {'p99 s':>7}")
        for c in levels:
            r = asyncio.run(run_level(url, model, c, args.seconds, args.max_tokens, args.prompt, headers))
            rows.append(r)
            print(f"{c:>7} {r['requests']:>8} {r['tokens_per_s']:>9.1f} {r['requests_per_s']:>7.2f} "
                  f"{r['p50_s']:>7.3f} {r['p99_s']:>7.3f}", flush=True)
        base = rows[0]["tokens_per_s"]
        for r in rows[1:]:
            print(f"throughput {r['clients']} clients / {rows[0]['clients']} client: {r['tokens_per_s'] / base:.2f}x")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
