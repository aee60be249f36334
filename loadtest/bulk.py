#!/usr/bin/env python3
"""Gatehouse bulk benchmark: a 100,000-line JSONL file → job → results, on the running stack.

Measured in one run (all against the same stack, one after the other):

  1. upload     POST /v1/files (multipart, streamed from a generator: the script never holds
                the file) of --lines JSONL items → MB/s; the api's RSS sampled every 10 ms.
  2. accept     POST /v1/jobs {"input_file_id"} → 202: items/s accepted (the api reads the
                file back part by part, validates every line, inserts the items).
  3. run        poll GET /v1/jobs/{id} until completed: end-to-end items/s (upload start →
                completed) and worker items/s (accepted → completed).
  4. results    GET /v1/jobs/{id}/results streamed and counted (--lines rows): rows/s, and
                the api's RSS while it streams.
  5. baseline   the same items as one JSON body (POST /v1/jobs {"items": [...]}), the path
                that existed before files: accept items/s and end-to-end items/s. Reported
                ratios: file ÷ JSON for acceptance and end to end.
  6. big file   a --big-mb MB upload (lines of ~2 KB, generated on the fly): MB/s and the
                api's peak RSS over its idle RSS — memory must not grow with the file.

The api's pid comes from .cache/demo/api.pid (the demo stack) or --api-pid. Writes
loadtest/results/bulk.json. Key: GATEHOUSE_KEY (from loadtest/run.sh, LOADTEST_KIND=bulk).
Exit status: 0 ok, 1 a request failed, 2 setup error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EN = ["thanks for the help with my order", "the update broke my login again",
      "what a lovely photo of the harbour", "you are an idiot and a liar",
      "is the store open on sundays?", "I will find you and hurt you"]
ZH = ["今天的天气真好", "这个产品质量很差，退货", "谢谢你的帮助", "你这个傻瓜", "明天几点开会？"]
BOUNDARY = "gatehouse-bulk-benchmark"


def fail(message: str, code: int = 1):
    print(f"bulk.py: {message}", file=sys.stderr)
    sys.exit(code)


class Api:
    def __init__(self, base: str, key: str):
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.key = key

    def conn(self, timeout: float = 600.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, headers=None, timeout: float = 600.0):
        conn = self.conn(timeout)
        h = {"authorization": f"Bearer {self.key}"}
        h.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["content-type"] = "application/json"
        chunked = body is not None and not isinstance(body, (bytes, str))
        conn.request(method, path, body=body, headers=h, encode_chunked=chunked)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode(errors="replace")
        return resp.status, parsed

    def stream(self, path: str):
        """(status, iterator of raw lines) for a streamed GET."""
        conn = self.conn()
        conn.request("GET", path, headers={"authorization": f"Bearer {self.key}"})
        resp = conn.getresponse()
        return resp, conn


class RssSampler:
    """Samples a process's resident set (VmRSS) every 10 ms in a thread."""

    def __init__(self, pid: int | None):
        self.pid, self.peak, self.samples = pid, 0, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss_kb(pid: int | None) -> int:
        if pid is None:
            return 0
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return 0
        return 0

    def __enter__(self):
        self.peak = self.rss_kb(self.pid)

        def run():
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, self.rss_kb(self.pid))
                self.samples += 1

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()


def items(n: int, seed: int):
    rng = random.Random(seed)
    for i in range(n):
        yield {"custom_id": f"row-{i}", "text": f"{rng.choice(EN + ZH)} #{i}"}


def jsonl(n: int, seed: int):
    for item in items(n, seed):
        yield (json.dumps(item, ensure_ascii=False) + "\n").encode()


def big_lines(megabytes: int):
    """~megabytes MB of ~2 KB lines (within the default line and line-count limits)."""
    filler = ("The quick brown fox jumps over the lazy dog. " * 45)[:2000]
    total, i = megabytes * 1_000_000, 0
    sent = 0
    while sent < total:
        line = (json.dumps({"custom_id": f"big-{i}", "text": f"{i} {filler}"}) + "\n").encode()
        sent += len(line)
        i += 1
        yield line


def multipart(lines, filename: str, purpose: str, counter: list[int]):
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    yield head
    buf = bytearray()
    for line in lines:
        buf += line
        counter[0] += len(line)
        if len(buf) >= 256 * 1024:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def upload(api: Api, lines, filename: str, pid: int | None):
    counter = [0]
    with RssSampler(pid) as rss:
        started = time.perf_counter()
        status, body = api.request(
            "POST", "/v1/files", body=multipart(lines, filename, "jobs", counter),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        seconds = time.perf_counter() - started
    if status != 200:
        fail(f"upload answered {status}: {body}")
    return body, counter[0], seconds, rss.peak


def wait_done(api: Api, job_id: str, timeout: float) -> tuple[dict, float]:
    deadline = time.time() + timeout
    while True:
        status, job = api.request("GET", f"/v1/jobs/{job_id}")
        if status != 200:
            fail(f"GET job answered {status}: {job}")
        if job["status"] in ("completed", "failed", "cancelled"):
            return job, time.perf_counter()
        if time.time() > deadline:
            fail(f"job {job_id} not done after {timeout:.0f} s: {job['counts']}")
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", required=True)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--big-mb", type=int, default=200, help="0 skips the big-file upload")
    ap.add_argument("--no-baseline", action="store_true", help="skip the JSON-body baseline job")
    ap.add_argument("--api-pid", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    key = os.environ.get("GATEHOUSE_KEY") or fail("GATEHOUSE_KEY is not set", 2)
    pid = args.api_pid
    if pid is None:
        pidfile = ROOT / ".cache/demo/api.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().strip())
    api = Api(args.api, key)
    idle_rss = RssSampler.rss_kb(pid)
    report: dict = {"lines": args.lines, "api_pid": pid, "api_idle_rss_mb": round(idle_rss / 1024, 1)}

    # 1. upload
    file, nbytes, up_s, up_rss = upload(api, jsonl(args.lines, args.seed), "bench.jsonl", pid)
    report["upload"] = {
        "bytes": nbytes, "seconds": round(up_s, 3), "mb_per_s": round(nbytes / 1e6 / up_s, 1),
        "api_peak_rss_mb": round(up_rss / 1024, 1),
    }
    print(f"upload: {nbytes / 1e6:.1f} MB in {up_s:.2f} s = {nbytes / 1e6 / up_s:.1f} MB/s", file=sys.stderr)
    t_upload_start = time.perf_counter() - up_s

    # 2. accept
    started = time.perf_counter()
    with RssSampler(pid) as rss:
        status, job = api.request("POST", "/v1/jobs", {"kind": "moderate", "input_file_id": file["id"]})
    accept_s = time.perf_counter() - started
    if status != 202:
        fail(f"POST /v1/jobs answered {status}: {job}")
    report["accept"] = {
        "seconds": round(accept_s, 3), "items_per_s": round(args.lines / accept_s),
        "api_peak_rss_mb": round(rss.peak / 1024, 1),
    }
    print(f"accept: {args.lines} items in {accept_s:.2f} s = {args.lines / accept_s:,.0f} items/s", file=sys.stderr)
    accepted_at = time.perf_counter()

    # 3. run
    done, finished_at = wait_done(api, job["id"], args.timeout)
    if done["counts"]["succeeded"] != args.lines:
        fail(f"job ended {done['status']} with {done['counts']}")
    e2e_s = finished_at - t_upload_start
    report["run"] = {
        "worker_seconds": round(finished_at - accepted_at, 2),
        "worker_items_per_s": round(args.lines / (finished_at - accepted_at)),
        "end_to_end_seconds": round(e2e_s, 2),
        "end_to_end_items_per_s": round(args.lines / e2e_s),
    }
    print(f"run: end to end {args.lines / e2e_s:,.0f} items/s", file=sys.stderr)

    # 4. results
    with RssSampler(pid) as rss:
        started = time.perf_counter()
        resp, conn = api.stream(f"/v1/jobs/{job['id']}/results")
        if resp.status != 200:
            fail(f"results answered {resp.status}")
        rows, nbytes = 0, 0
        for line in resp:
            rows += 1
            nbytes += len(line)
        conn.close()
        results_s = time.perf_counter() - started
    if rows != args.lines:
        fail(f"results streamed {rows} rows, expected {args.lines}")
    report["results"] = {
        "rows": rows, "bytes": nbytes, "seconds": round(results_s, 2),
        "rows_per_s": round(rows / results_s), "api_peak_rss_mb": round(rss.peak / 1024, 1),
    }
    print(f"results: {rows} rows in {results_s:.2f} s = {rows / results_s:,.0f} rows/s", file=sys.stderr)

    # 5. baseline: the same items as one JSON body
    if not args.no_baseline:
        body = {"kind": "moderate", "items": list(items(args.lines, args.seed))}
        started = time.perf_counter()
        status, base = api.request("POST", "/v1/jobs", body)
        base_accept = time.perf_counter() - started
        if status != 202:
            fail(f"baseline POST /v1/jobs answered {status}: {base}")
        base_done, base_finished = wait_done(api, base["id"], args.timeout)
        base_e2e = base_finished - started
        report["baseline_json"] = {
            "accept_seconds": round(base_accept, 3),
            "accept_items_per_s": round(args.lines / base_accept),
            "end_to_end_items_per_s": round(args.lines / base_e2e),
        }
        report["ratios"] = {
            "accept_file_vs_json": round(base_accept / accept_s, 2),
            "end_to_end_file_vs_json": round(base_e2e / e2e_s, 2),
        }
        print(f"baseline JSON body: accept {args.lines / base_accept:,.0f} items/s, "
              f"end to end {args.lines / base_e2e:,.0f} items/s", file=sys.stderr)

    # 6. big file
    if args.big_mb > 0:
        idle = RssSampler.rss_kb(pid)
        big, nbytes, big_s, big_rss = upload(api, big_lines(args.big_mb), "big.jsonl", pid)
        report["big_upload"] = {
            "bytes": nbytes, "lines": big["lines"], "seconds": round(big_s, 2),
            "mb_per_s": round(nbytes / 1e6 / big_s, 1),
            "api_idle_rss_mb": round(idle / 1024, 1),
            "api_peak_rss_mb": round(big_rss / 1024, 1),
            "api_rss_growth_mb": round((big_rss - idle) / 1024, 1),
            "rss_growth_per_upload_mb": round((big_rss - idle) / 1024 / (nbytes / 1e6), 4),
        }
        print(f"big upload: {nbytes / 1e6:.0f} MB in {big_s:.1f} s = {nbytes / 1e6 / big_s:.1f} MB/s; "
              f"api RSS {idle / 1024:.0f} → peak {big_rss / 1024:.0f} MB", file=sys.stderr)
        api.request("DELETE", f"/v1/files/{big['id']}")

    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "bulk.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
