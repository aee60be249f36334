#!/usr/bin/env python3
"""Gatehouse fairness benchmark: does one tenant's bulk job slow another tenant down?

One run, on the running stack, measures tenant B twice — idle, then while tenant A's big job
runs — and reports the ratios:

  1. idle   B sends --sync sync moderations (POST /v1/moderations, one short text each, one
            after the other) and submits a --b-items job (POST /v1/jobs), polled every 50 ms.
  2. load   A submits one --a-items job. Once it is running, B repeats exactly what it did.
  3. A      A's progress when B was done (and, with --wait-a, A's completion time).

Reported: B's sync p50/p99 idle and under load, their ratio (target: p99 under load at most
3x idle), B's job completion time idle and under load, and how far A had got when B's job
was done ("long before A's": A far from done). Writes loadtest/results/fairness.json.

Keys: GATEHOUSE_KEY (tenant A) and GATEHOUSE_KEY_B (tenant B), from loadtest/run.sh
(LOADTEST_KIND=fairness) which creates both tenants. Talks only to loopback addresses.
Exit status: 0 ok, 1 a request failed, 2 setup error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
EN = ["thanks for the help with my order", "the update broke my login again",
      "what a lovely photo of the harbour", "you are an idiot and a liar",
      "is the store open on sundays?", "I will find you and hurt you"]
ZH = ["今天的天气真好", "这个产品质量很差，退货", "谢谢你的帮助", "你这个傻瓜", "明天几点开会？"]


def call(api: str, key: str, method: str, path: str, body=None, timeout: float = 60.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(EN + ZH)} #{i}" for i in range(n)]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1)))))
    return ordered[k]


def sync_latencies(api: str, key: str, n: int, seed: int) -> list[float]:
    out = []
    for text in texts(n, seed):
        started = time.perf_counter()
        status, body = call(api, key, "POST", "/v1/moderations", {"input": text})
        if status != 200:
            raise SystemExit(f"fairness.py: sync moderation answered {status}: {body}")
        out.append(time.perf_counter() - started)
    return out


def submit(api: str, key: str, n: int, seed: int) -> str:
    items = [{"custom_id": str(i), "text": t} for i, t in enumerate(texts(n, seed))]
    status, body = call(api, key, "POST", "/v1/jobs", {"kind": "moderate", "items": items}, timeout=300)
    if status != 202:
        raise SystemExit(f"fairness.py: submit answered {status}: {body}")
    return body["id"]


def job(api: str, key: str, job_id: str) -> dict:
    status, body = call(api, key, "GET", f"/v1/jobs/{job_id}")
    if status != 200:
        raise SystemExit(f"fairness.py: job read answered {status}: {body}")
    return body


def wait_done(api: str, key: str, job_id: str, timeout: float) -> float:
    started = time.perf_counter()
    while True:
        state = job(api, key, job_id)
        if state["status"] in ("completed", "failed", "cancelled"):
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"fairness.py: job {job_id} not done after {timeout:.0f}s: {state}")
        time.sleep(0.05)


def phase(api: str, key_b: str, args, seed: int) -> dict:
    lat = sync_latencies(api, key_b, args.sync, seed)
    started = time.perf_counter()
    b_job = submit(api, key_b, args.b_items, seed + 1)
    b_time = wait_done(api, key_b, b_job, args.timeout) + 0.0
    return {
        "sync_p50_ms": round(statistics.median(lat) * 1000, 1),
        "sync_p99_ms": round(percentile(lat, 99) * 1000, 1),
        "sync_max_ms": round(max(lat) * 1000, 1),
        "b_job_s": round(time.perf_counter() - started, 2),
        "b_job_wait_s": round(b_time, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", default="http://127.0.0.1:8080")
    ap.add_argument("--a-items", type=int, default=20_000, help="tenant A's bulk job")
    ap.add_argument("--b-items", type=int, default=200, help="tenant B's job")
    ap.add_argument("--sync", type=int, default=30, help="B's sync moderations per phase")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--wait-a", action="store_true", help="also wait for A's job and report its time")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "fairness.json")
    args = ap.parse_args()
    key_a, key_b = os.environ.get("GATEHOUSE_KEY"), os.environ.get("GATEHOUSE_KEY_B")
    if not key_a or not key_b:
        print("fairness.py: GATEHOUSE_KEY and GATEHOUSE_KEY_B are required (use loadtest/run.sh)", file=sys.stderr)
        return 2
    host = args.api.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        print("fairness.py: loopback addresses only", file=sys.stderr)
        return 2

    # Warm up both lanes (first sessions, connections, caches).
    sync_latencies(args.api, key_b, 3, 1)
    print("idle: B alone ...", file=sys.stderr)
    idle = phase(args.api, key_b, args, 100)

    print(f"load: A submits {args.a_items} items ...", file=sys.stderr)
    a_started = time.perf_counter()
    a_job = submit(args.api, key_a, args.a_items, 7)
    while job(args.api, key_a, a_job)["status"] == "queued":
        time.sleep(0.05)
    load = phase(args.api, key_b, args, 200)
    a_state = job(args.api, key_a, a_job)
    counts = a_state["counts"]
    a_done_share = (counts["succeeded"] + counts["failed"]) / max(1, counts["total"])
    a_time = None
    if args.wait_a:
        print("waiting for A's job ...", file=sys.stderr)
        wait_done(args.api, key_a, a_job, args.timeout * 4)
        a_time = round(time.perf_counter() - a_started, 2)

    result = {
        "a_items": args.a_items, "b_items": args.b_items, "sync_calls": args.sync,
        "idle": idle, "load": load,
        "sync_p99_ratio": round(load["sync_p99_ms"] / max(idle["sync_p99_ms"], 0.1), 2),
        "sync_p50_ratio": round(load["sync_p50_ms"] / max(idle["sync_p50_ms"], 0.1), 2),
        "b_job_ratio": round(load["b_job_wait_s"] / max(idle["b_job_wait_s"], 0.01), 2),
        "a_done_share_when_b_done": round(a_done_share, 3),
        "a_job_s": a_time,
        "a_job_id": a_job,
    }
    print()
    print(f"{'measure':<34} {'idle':>10} {'under A':>10} {'ratio':>7}")
    print(f"{'B sync p50 (ms)':<34} {idle['sync_p50_ms']:>10} {load['sync_p50_ms']:>10} {result['sync_p50_ratio']:>7}")
    print(f"{'B sync p99 (ms)':<34} {idle['sync_p99_ms']:>10} {load['sync_p99_ms']:>10} {result['sync_p99_ratio']:>7}  (target <= 3)")
    print(f"{'B 200-item job (s)':<34} {idle['b_job_wait_s']:>10} {load['b_job_wait_s']:>10} {result['b_job_ratio']:>7}")
    print(f"{'A done when B was done':<34} {'':>10} {a_done_share:>10.1%}")
    if a_time is not None:
        print(f"{'A 20,000-item job (s)':<34} {'':>10} {a_time:>10}")
    line = json.dumps(result)
    print(line)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
