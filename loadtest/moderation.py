#!/usr/bin/env python3
"""Gatehouse moderation load test: pipeline items/s against raw ONNX Runtime items/s.

One run does, in order, on the same machine:

  1. baseline  raw ONNX Runtime (Python) on the same model.onnx with the same preprocessing
               as the worker (tokenizer.json, [UNK] dropped, last max_length ids kept,
               left-padded), batch --batch, --threads intra-op threads, over the same N
               texts. Tokenization is inside the timed loop (the worker does it too).
               Warmed up first.
  2. pipeline  the same N texts end to end through the running Gatehouse: one job (or
               --jobs K concurrent jobs splitting N) submitted with POST /v1/jobs, polled
               every --poll seconds until every job is completed/failed. Reports the items/s
               from the first POST to the poll that saw the last job finish, the POST /v1/jobs
               latency (202) and the time to the first finished item.
  3. check     downloads the results and compares every item's scores with the baseline's
               (the two must agree: same model, same preprocessing).

Prints a table and one JSON line, and writes that JSON to loadtest/results/latest.json.
When the worker's /metrics is reachable, the model/chunk histograms are diffed over the
pipeline run to show where the worker spent its time.

Talks only to loopback addresses. Every wait is bounded. Exit status: 0 ok, 1 the run
failed (a job failed, scores disagree, timeout), 2 usage/setup error.

Python 3.9+; stdlib urllib for HTTP; numpy, onnxruntime and tokenizers for the baseline.
The API key comes from --key or, better (not visible in `ps`), the GATEHOUSE_KEY env var.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import random
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
SCORE_TOLERANCE = 1e-3  # results carry 6 decimals; thread count changes float sums a little

# --------------------------------------------------------------------------- texts

# A small, varied English corpus in the register of user comments. Mostly benign; some
# sentences are toxic (insults, obscenity, threats) so the model has work on both sides.
BENIGN = [
    "Thanks for the quick reply, that fixed my problem.",
    "I think the second paragraph needs a citation before it can stay.",
    "Has anyone tried this recipe with almond flour instead of wheat?",
    "The update broke the login page on my phone, but the desktop site still works.",
    "Great article, I learned a lot about the history of the canal.",
    "Please keep the discussion on topic and assume good faith.",
    "We moved the meeting to Thursday afternoon because of the holiday.",
    "My order arrived two days late and the box was slightly damaged.",
    "Could you share the source for those numbers?",
    "I respectfully disagree, the data from last year points the other way.",
    "This is the best tutorial on the subject that I have found so far.",
    "The hotel staff were friendly and the room was clean.",
    "I reverted the edit because it removed sourced content without explanation.",
    "Does the library support streaming responses or only full downloads?",
    "Happy birthday, hope you have a wonderful day with your family!",
    "The battery lasts about six hours with the screen at half brightness.",
    "Interesting point, although the study only had forty participants.",
    "I'll be out of the office next week with limited access to email.",
    "The park near the river is lovely in the early morning.",
    "Can we add a section about the environmental impact?",
    "Welcome to the project, feel free to ask questions on the talk page.",
    "The new version is faster, but it uses noticeably more memory.",
    "I followed the instructions exactly and it still will not compile.",
    "Lovely photos, the colours of the sunset are amazing.",
    "Please do not add external links to commercial sites.",
    "According to the census the town had about twelve thousand residents.",
    "The customer service team resolved my issue within an hour.",
    "I'm not sure this counts as a reliable source, it looks like a personal blog.",
    "We should merge these two articles since they cover the same topic.",
    "Thank you all for the feedback, I will revise the draft tonight.",
    "The trail was muddy after the rain but the view from the top was worth it.",
    "What time does the store open on Sundays?",
    "This game gets better after the first few levels, keep going.",
    "I appreciate the detailed explanation, it makes much more sense now.",
    "The conference talks will be recorded and posted online later.",
    "Honestly the sequel was not as good as the original film.",
]
TOXIC = [
    "You are an idiot and nobody wants you here.",
    "Shut up, you stupid moron.",
    "What a pathetic loser, go away.",
    "You're so dumb it hurts to read your comments.",
    "This is the most worthless garbage I have ever seen, you clown.",
    "Go to hell, you ignorant fool.",
    "I hate you and everything you write.",
    "You are disgusting and your edits are trash.",
    "Stop vandalizing the page, you pathetic idiot.",
    "Nobody cares about your stupid opinion, moron.",
    "Fuck off and never come back.",
    "What a load of bullshit, you absolute jerk.",
    "I will find you and make you regret this.",
    "You should be ashamed, you worthless piece of crap.",
]
FILLER = [
    "honestly", "anyway", "also", "by the way", "in my opinion", "to be fair",
    "as I said", "frankly", "well", "for what it's worth", "again", "seriously",
]
TOXIC_SHARE = 0.15  # about one comment in seven gets a toxic sentence


def word_count_for(rng: random.Random) -> int:
    """5..60 words, skewed towards short comments (most comments are short)."""
    return min(60, max(5, int(round(rng.triangular(5, 60, 14)))))


def generate_texts(n: int, seed: int) -> list[str]:
    """n deterministic comments of 5-60 words built from the corpus above."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        target = word_count_for(rng)
        sentences: list[str] = []
        words = 0
        while words < target:
            s = rng.choice(BENIGN)
            if rng.random() < 0.2:
                f = rng.choice(FILLER)
                head = s if re.match(r"I\b", s) else s[0].lower() + s[1:]
                s = f[0].upper() + f[1:] + ", " + head
            sentences.append(s)
            words += len(s.split())
        toxic_at = None
        if rng.random() < TOXIC_SHARE:
            pos = rng.randrange(len(sentences))
            sentences[pos] = rng.choice(TOXIC)
            toxic_at = sum(len(s.split()) for s in sentences[:pos])
        all_words = " ".join(sentences).split()
        start = 0
        if toxic_at is not None and toxic_at > target - 4:
            # The cut would lose the toxic sentence: move the window onto it.
            start = max(0, min(toxic_at, len(all_words) - target))
        text = " ".join(all_words[start: start + target])
        if rng.random() < 0.03:
            text = text.upper()
        texts.append(text)
    return texts


# --------------------------------------------------------------------------- http

class HttpError(Exception):
    def __init__(self, status: int, body: str, url: str):
        super().__init__(f"HTTP {status} from {url}: {body[:300]}")
        self.status = status


def fail(message: str, status: int = 2):
    print(f"moderation.py: {message}", file=sys.stderr)
    raise SystemExit(status)


def check_loopback(url: str, what: str) -> None:
    host = urllib.parse.urlparse(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    fail(f"{what} {url!r} is not a loopback address; refusing")


# No proxies, whatever the environment says: all traffic stays on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, *, key: str | None = None, body: bytes | None = None,
         timeout: float = 30.0) -> tuple[int, bytes]:
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        raise HttpError(e.code, e.read().decode("utf-8", "replace"), url) from None


# --------------------------------------------------------------------------- baseline

def load_model(models_dir: Path, model: str):
    mdir = models_dir / model
    manifest_path = mdir / "manifest.json"
    if not manifest_path.is_file():
        fail(f"{manifest_path} not found: run `make models` or pass --models-dir")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if set(manifest.get("inputs", {})) != {"input_ids"}:
        fail(f"the baseline only supports models with input_ids only, not {manifest.get('inputs')}")
    if manifest.get("activation") != "sigmoid":
        fail(f"the baseline only supports sigmoid models, not {manifest.get('activation')}")
    return mdir, manifest


class RawOrt:
    """The worker's OnnxClassifier, in Python: same files, same preprocessing."""

    def __init__(self, mdir: Path, manifest: dict, threads: int):
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.np = np
        self.tokenizer = Tokenizer.from_file(str(mdir / manifest["files"]["tokenizer"]))
        unk = manifest.get("unk_token")
        self.unk_id = self.tokenizer.token_to_id(unk) if unk and manifest.get("drop_unknown_tokens") else None
        self.maxlen = int(manifest["max_length"])
        self.pad = int(manifest.get("pad_token_id", 0))
        self.left_trunc = manifest.get("truncation_side", "right") == "left"
        self.left_pad = manifest.get("padding_side", "right") == "left"
        self.input_name = manifest["inputs"]["input_ids"]
        self.output_name = manifest["output"]
        self.labels = manifest["labels"]
        so = ort.SessionOptions()
        # The worker: GraphOptimizationLevel::Level3 (= ORT_ENABLE_ALL), with_intra_threads(n).
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(mdir / manifest["files"]["model"]), so, providers=["CPUExecutionProvider"]
        )
        self.ort_version = ort.__version__

    def encode(self, text: str) -> list[int]:
        # One text at a time, like the worker (encode_batch would fan out over cores).
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if self.unk_id is not None:
            ids = [i for i in ids if i != self.unk_id]
        n = self.maxlen
        if len(ids) > n:
            ids = ids[-n:] if self.left_trunc else ids[:n]
        padding = [self.pad] * (n - len(ids))
        return padding + ids if self.left_pad else ids + padding

    def classify(self, texts: list[str]):
        np = self.np
        batch = np.array([self.encode(t) for t in texts], dtype=np.int64)
        logits = self.session.run([self.output_name], {self.input_name: batch})[0]
        return 1.0 / (1.0 + np.exp(-logits))


def run_baseline(clf: RawOrt, texts: list[str], batch: int, warmup_s: float,
                 timeout: float) -> tuple[float, list]:
    """(seconds, probabilities per text) for all texts in batches of `batch`, after
    warming up for `warmup_s` seconds (thread pool, arena, caches, CPU clocks)."""
    end = time.perf_counter() + warmup_s
    i = 0
    while True:
        start = (i * batch) % len(texts)
        clf.classify(texts[start: start + batch])
        i += 1
        if time.perf_counter() >= end and i >= 3:
            break
    out = []
    deadline = time.monotonic() + timeout
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        out.extend(clf.classify(texts[start: start + batch]))
        if time.monotonic() > deadline:
            raise TimeoutError(f"baseline did not finish within {timeout:.0f}s")
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------- pipeline

def job_body(texts: list[str], first_index: int) -> bytes:
    items = [{"custom_id": f"lt-{first_index + i:06d}", "text": t} for i, t in enumerate(texts)]
    return json.dumps({"kind": "moderate", "items": items}, separators=(",", ":")).encode("utf-8")


def split(n: int, k: int) -> list[tuple[int, int]]:
    """k contiguous [start, end) ranges covering n."""
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def run_pipeline(api: str, key: str, texts: list[str], jobs: int, poll: float,
                 timeout: float, submit_timeout: float) -> dict:
    ranges = split(len(texts), jobs)
    bodies = [job_body(texts[a:b], a) for a, b in ranges]  # encoded before the clock starts
    submit_lat = [0.0] * jobs
    job_ids: list[str | None] = [None] * jobs

    t0 = time.perf_counter()

    def submit(i: int) -> None:
        s = time.perf_counter()
        status, raw = http("POST", f"{api}/v1/jobs", key=key, body=bodies[i], timeout=submit_timeout)
        submit_lat[i] = time.perf_counter() - s
        if status not in (200, 202):
            raise HttpError(status, raw.decode("utf-8", "replace"), f"{api}/v1/jobs")
        job_ids[i] = json.loads(raw)["id"]

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in [pool.submit(submit, i) for i in range(jobs)]:
            f.result()
    submitted = time.perf_counter()

    first_result = None
    done: dict[str, dict] = {}
    last: dict[str, dict] = {}
    deadline = t0 + timeout
    while True:
        for jid in job_ids:
            if jid in done:
                continue
            try:
                _, raw = http("GET", f"{api}/v1/jobs/{jid}", key=key, timeout=10)
            except (OSError, HttpError) as e:  # a slow poll is not fatal; the deadline is
                print(f"  poll {jid}: {e}", file=sys.stderr)
                continue
            job = json.loads(raw)
            last[jid] = job
            now = time.perf_counter()
            c = job["counts"]
            if first_result is None and c["succeeded"] + c["failed"] > 0:
                first_result = now
            if job["status"] in ("completed", "failed", "cancelled"):
                done[jid] = job
        now = time.perf_counter()
        if len(done) == jobs:
            break
        if now > deadline:
            progress = sum(j["counts"]["succeeded"] + j["counts"]["failed"] for j in last.values())
            raise TimeoutError(
                f"pipeline: only {len(done)}/{jobs} jobs finished, {progress}/{len(texts)} items, "
                f"after {timeout:.0f}s (raise --timeout, or check .cache/demo/worker.log)"
            )
        time.sleep(poll)
    end = time.perf_counter()

    # Server-side span: earliest created_at to latest completed_at (no poll granularity).
    def ts(s: str) -> float:
        s = re.sub(r"(\.\d{6})\d+", r"\1", s.replace("Z", "+00:00"))
        return datetime.fromisoformat(s).timestamp()

    created = [ts(j["created_at"]) for j in done.values()]
    completed = [ts(j["completed_at"]) for j in done.values() if j.get("completed_at")]
    server_s = (max(completed) - min(created)) if len(completed) == jobs else None

    return {
        "job_ids": job_ids,
        "jobs": list(done.values()),
        "seconds": end - t0,
        "submit_s": submitted - t0,
        "submit_each_s": submit_lat,
        "first_result_s": (first_result - t0) if first_result is not None else None,
        "server_s": server_s,
    }


def fetch_results(api: str, key: str, job_ids: list[str], timeout: float) -> dict[str, dict]:
    """custom_id -> result line, for every job."""
    out = {}
    for jid in job_ids:
        _, raw = http("GET", f"{api}/v1/jobs/{jid}/results", key=key, timeout=timeout)
        for line in raw.splitlines():
            if line.strip():
                r = json.loads(line)
                out[r.get("custom_id")] = r
    return out


# --------------------------------------------------------------------------- worker metrics

WATCHED = ("gatehouse_model_inference_seconds", "gatehouse_model_batch_size",
           "gatehouse_worker_chunk_seconds")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(url: str | None) -> dict | None:
    """{metric: {"sum", "count", "buckets": {le: cumulative}}} summed over label sets."""
    if not url:
        return None
    try:
        _, raw = http("GET", url, timeout=5)
    except (OSError, HttpError):
        return None
    out: dict[str, dict] = {m: {"sum": 0.0, "count": 0.0, "buckets": {}} for m in WATCHED}
    for line in raw.decode("utf-8", "replace").splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        for base in WATCHED:
            if not name.startswith(base):
                continue
            v = float(value)
            suffix = name[len(base):]
            if suffix == "_sum":
                out[base]["sum"] += v
            elif suffix == "_count":
                out[base]["count"] += v
            elif suffix == "_bucket":
                le = re.search(r'le="([^"]+)"', labels)
                if le:
                    b = out[base]["buckets"]
                    b[le.group(1)] = b.get(le.group(1), 0.0) + v
    return out


def metrics_delta(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    d = {}
    for m in WATCHED:
        a, b = after[m], before[m]
        d[m] = {
            "sum": a["sum"] - b["sum"],
            "count": a["count"] - b["count"],
            "buckets": {le: a["buckets"].get(le, 0.0) - b["buckets"].get(le, 0.0) for le in a["buckets"]},
        }
    return d


def bucket_quantile(buckets: dict, q: float) -> str:
    """Upper bound of the bucket holding quantile q (Prometheus-style, coarse)."""
    items = sorted(((math.inf if le == "+Inf" else float(le)), c) for le, c in buckets.items())
    if not items or items[-1][1] <= 0:
        return "-"
    target = q * items[-1][1]
    for le, c in items:
        if c >= target:
            return "+Inf" if le == math.inf else f"<={le:g}"
    return "-"


def size_histogram(buckets: dict) -> str:
    items = sorted(((math.inf if le == "+Inf" else float(le)), c) for le, c in buckets.items())
    prev, parts = 0.0, []
    lower = 0.0
    for le, c in items:
        n = c - prev
        if n > 0:
            label = f"{lower:g}<x<={le:g}" if le != math.inf else f">{lower:g}"
            parts.append(f"{label}:{int(n)}")
        prev, lower = c, le
    return ", ".join(parts) or "-"


# --------------------------------------------------------------------------- cpu accounting

# comm (as in /proc, at most 15 characters) -> component.
CPU_GROUPS = {
    "gatehouse-worke": "worker", "gatehouse-api": "api", "postgres": "postgres",
    "beam.smp": "rabbitmq", "epmd": "rabbitmq", "erl_child_setup": "rabbitmq", "inet_gethost": "rabbitmq",
}


def _read_stat(path: str) -> tuple[str, int] | None:
    """(comm, utime+stime ticks) from a /proc/.../stat file."""
    try:
        with open(path, "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lpar, rpar = raw.find("("), raw.rfind(")")
    fields = raw[rpar + 2:].split()
    return raw[lpar + 1: rpar], int(fields[11]) + int(fields[12])


def cpu_snapshot() -> dict | None:
    """CPU ticks per component (and per thread name inside the worker), plus the machine's
    busy/total ticks. Linux only; None elsewhere."""
    if not os.path.isdir("/proc/self/task"):
        return None
    procs: dict[str, int] = {}
    worker_threads: dict[tuple[int, str], int] = {}
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        st = _read_stat(f"/proc/{pid}/stat")
        if st is None:
            continue
        comm, ticks = st
        group = "loadtest (this script)" if int(pid) == me else CPU_GROUPS.get(comm)
        if group is None:
            continue
        procs[group] = procs.get(group, 0) + ticks
        if group == "worker":
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                tids = []
            for tid in tids:
                ts = _read_stat(f"/proc/{pid}/task/{tid}/stat")
                if ts is not None:
                    worker_threads[(int(tid), ts[0])] = ts[1]
    try:
        with open("/proc/stat", encoding="ascii") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        total, idle = sum(cpu[:8]), cpu[3] + cpu[4]
    except (OSError, ValueError, IndexError):
        total = idle = 0
    return {"procs": procs, "threads": worker_threads, "total": total, "idle": idle}


def cpu_delta(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    procs = {g: (t - before["procs"].get(g, 0)) / hz for g, t in after["procs"].items()}
    threads: dict[str, float] = {}
    for (tid, comm), t in after["threads"].items():
        d = (t - before["threads"].get((tid, comm), 0)) / hz
        # Name the worker's threads by role; ORT's pool threads inherit the process name.
        role = {"model-toxic-bil": "model thread (tokenize + ORT caller)",
                "gatehouse-worke": "ORT pool + main", "tokio-rt-worker": "tokio (sqlx, json, amqp)",
                "lapin-io-loop": "amqp io"}.get(comm, comm)
        if comm.startswith("model-"):
            role = "model thread (tokenize + ORT caller)"
        threads[role] = threads.get(role, 0.0) + d
    total = (after["total"] - before["total"]) / hz
    busy = total - (after["idle"] - before["idle"]) / hz
    return {"procs": procs, "threads": threads, "busy": busy, "total": total}


# --------------------------------------------------------------------------- main

def default_threads() -> int:
    env = os.environ.get("GATEHOUSE_ORT_INTRA_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1


def default_batch() -> int:
    env = os.environ.get("GATEHOUSE_BATCH_MAX_ITEMS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else 64


def default_worker_metrics() -> str:
    listen = os.environ.get("GATEHOUSE_WORKER_LISTEN", "127.0.0.1:9091")
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "[::]":
        host = "[::1]"
    return f"http://{host}:{port}/metrics"


def positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def wait_quiet(limit_s: float, threshold: float) -> float | None:
    """Waits (at most limit_s) until everything but this script uses less than `threshold`
    cores, measured over 1 s windows. Returns the last measured load in cores (None: no /proc)."""
    deadline = time.monotonic() + limit_s
    said = False
    while True:
        a = cpu_snapshot()
        time.sleep(1.0)
        d = cpu_delta(a, cpu_snapshot())
        if d is None or d["total"] <= 0:
            return None
        wall = d["total"] / (os.cpu_count() or 1)
        load = (d["busy"] - d["procs"].get("loadtest (this script)", 0.0)) / wall
        if load < threshold or time.monotonic() >= deadline:
            if said:
                print(f"  ... load now {load:.2f} cores", flush=True)
            return load
        if not said:
            print(f"waiting (up to {limit_s:.0f}s) for the machine to settle: other processes use "
                  f"{load:.2f} cores ...", flush=True)
            said = True


def other_share(cpu: dict | None, exclude: tuple[str, ...]) -> float | None:
    """Share of the machine's CPU used by anything not in `exclude`, over a window.
    Windows too short to tell (less than NOISY_FLOOR cpu-s of others) count as 0."""
    if not cpu or cpu["total"] <= 0:
        return None
    mine = sum(v for g, v in cpu["procs"].items() if g in exclude)
    other = max(0.0, cpu["busy"] - mine)
    return other / cpu["total"] if other >= NOISY_FLOOR else 0.0


STACK = ("worker", "api", "postgres", "rabbitmq", "loadtest (this script)")
NOISY = 0.15  # more than this share of the machine used by others: flag the measurement
NOISY_FLOOR = 0.1  # cpu-s; below this, tick granularity (10 ms) and the kernel dominate


def measure_baseline(clf: RawOrt, texts: list[str], args) -> dict:
    before = cpu_snapshot()
    seconds, probs = run_baseline(clf, texts, args.batch, args.warmup, args.timeout)
    cpu = cpu_delta(before, cpu_snapshot())  # includes the warm-up
    t = time.perf_counter()
    for text in texts:  # not timed above: how much of the baseline is tokenization
        clf.encode(text)
    tok_s = time.perf_counter() - t
    return {"seconds": seconds, "ips": len(texts) / seconds, "probs": probs, "cpu": cpu,
            "other": other_share(cpu, ("loadtest (this script)",)), "tok_s": tok_s}


def measure_pipeline(api: str, key: str, texts: list[str], args, manifest: dict,
                     base_probs: list) -> dict:
    m_before = scrape(args.worker_metrics)
    cpu_before = cpu_snapshot()
    pipe = run_pipeline(api, key, texts, args.jobs, args.poll, args.timeout,
                        submit_timeout=min(args.timeout, 300))
    cpu = cpu_delta(cpu_before, cpu_snapshot())
    pipe["metrics"] = metrics_delta(m_before, scrape(args.worker_metrics))
    pipe["cpu"] = cpu
    pipe["other"] = other_share(cpu, STACK)
    pipe["ips"] = len(texts) / pipe["seconds"]
    pipe["succeeded"] = sum(j["counts"]["succeeded"] for j in pipe["jobs"])
    pipe["failed"] = sum(j["counts"]["failed"] for j in pipe["jobs"])
    problems = []
    statuses = sorted({j["status"] for j in pipe["jobs"]})
    if statuses != ["completed"] or pipe["failed"]:
        problems.append(f"jobs ended {statuses} with {pipe['failed']} failed item(s)")
    pipe["max_diff"] = None
    if not args.no_verify:
        try:
            results = fetch_results(api, key, pipe["job_ids"], timeout=min(args.timeout, 300))
        except (HttpError, OSError) as e:
            problems.append(f"cannot download the results: {e}")
            results = None
        if results is not None:
            labels = manifest["labels"]
            max_diff, missing = 0.0, 0
            for i, probs in enumerate(base_probs):
                r = results.get(f"lt-{i:06d}")
                scores = ((r or {}).get("result") or {}).get("scores")
                if not scores:
                    missing += 1
                    continue
                for j, label in enumerate(labels):
                    max_diff = max(max_diff, abs(float(scores[label]) - float(probs[j])))
            pipe["max_diff"] = max_diff
            if missing:
                problems.append(f"{missing} item(s) without scores in the results")
            if max_diff > SCORE_TOLERANCE:
                problems.append(f"pipeline scores differ from the baseline by up to {max_diff:.2e}")
    pipe["problems"] = problems
    return pipe


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--api", default="http://127.0.0.1:8080", help="Gatehouse api base URL (loopback only)")
    ap.add_argument("--key", default=None, help="API key; if omitted, env GATEHOUSE_KEY (preferred: not visible in ps)")
    ap.add_argument("--items", type=positive_int, default=10_000, help="N: texts per measurement")
    ap.add_argument("--jobs", type=positive_int, default=1, help="K concurrent jobs splitting N")
    ap.add_argument("--threads", type=positive_int, default=default_threads(),
                    help="baseline intra-op threads; default from GATEHOUSE_ORT_INTRA_THREADS if > 0, else os.cpu_count(), as the worker")
    ap.add_argument("--batch", type=positive_int, default=default_batch(),
                    help="baseline batch size; default from GATEHOUSE_BATCH_MAX_ITEMS, else 64, as the worker")
    ap.add_argument("--models-dir", type=Path,
                    default=Path(os.environ.get("GATEHOUSE_MODELS_DIR", REPO_ROOT / "models")),
                    help="models directory; default from GATEHOUSE_MODELS_DIR, else <repo>/models")
    ap.add_argument("--model", default=os.environ.get("GATEHOUSE_MODERATION_MODEL", "toxic-bilstm"),
                    help="model directory name under --models-dir")
    ap.add_argument("--seed", type=int, default=20240601, help="text generator seed")
    ap.add_argument("--warmup", type=float, default=1.0, help="baseline warm-up, seconds (at least 3 batches)")
    ap.add_argument("--repeat", type=positive_int, default=1,
                    help="measure baseline+pipeline R times (alternating); report the medians")
    ap.add_argument("--poll", type=float, default=0.1, help="job poll interval, seconds")
    ap.add_argument("--timeout", type=float, default=900.0, help="bound on each measurement, seconds")
    ap.add_argument("--wait-idle", type=float, default=60.0,
                    help="before each measurement, wait up to this many seconds for other processes "
                         "to use < --idle-cores (0: do not wait)")
    ap.add_argument("--idle-cores", type=float, default=0.25, help="see --wait-idle")
    ap.add_argument("--worker-metrics", default=default_worker_metrics(),
                    help="worker /metrics URL for the histogram breakdown ('' to skip)")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "latest.json", help="where the JSON line goes")
    ap.add_argument("--no-verify", action="store_true", help="skip the results download and the score check")
    args = ap.parse_args()

    if args.poll <= 0 or args.timeout <= 0 or args.warmup < 0 or args.wait_idle < 0:
        ap.error("--poll and --timeout must be > 0, --warmup and --wait-idle >= 0")
    api = args.api.rstrip("/")
    check_loopback(api, "--api")
    if args.worker_metrics:
        check_loopback(args.worker_metrics, "--worker-metrics")
    key = args.key or os.environ.get("GATEHOUSE_KEY")
    if not key:
        print("moderation.py: no API key: pass --key or set GATEHOUSE_KEY", file=sys.stderr)
        return 2
    if args.items > 50_000 * args.jobs:
        print(f"moderation.py: {args.items} items in {args.jobs} job(s) exceeds 50,000 items/job; raise --jobs",
              file=sys.stderr)
        return 2
    if args.jobs > args.items:
        print("moderation.py: --jobs must not exceed --items", file=sys.stderr)
        return 2
    socket.setdefaulttimeout(args.timeout)  # belt and braces: no socket waits forever

    # Is the api there, and does the key work? (Fail fast, before the baseline's seconds.)
    try:
        http("GET", f"{api}/readyz", timeout=5)
        http("GET", f"{api}/v1/jobs/job_00000000000000000000000000", key=key, timeout=5)
    except HttpError as e:
        if e.status in (401, 403):
            print(f"moderation.py: the API key was rejected ({e})", file=sys.stderr)
            return 2
        if e.status not in (400, 404):
            print(f"moderation.py: api not ready: {e}", file=sys.stderr)
            return 2
    except OSError as e:
        print(f"moderation.py: api {api} unreachable ({e}); start it with `make demo`", file=sys.stderr)
        return 2

    mdir, manifest = load_model(args.models_dir, args.model)
    texts = generate_texts(args.items, args.seed)
    words = [len(t.split()) for t in texts]
    print(f"texts: {len(texts)} (seed {args.seed}), {min(words)}-{max(words)} words, "
          f"mean {sum(words) / len(words):.1f}; model {manifest['name']} ({mdir})")
    clf = RawOrt(mdir, manifest, args.threads)
    print(f"baseline runtime: onnxruntime {clf.ort_version} (Python), CPUExecutionProvider")

    bases: list[dict] = []
    pipes: list[dict] = []
    for r in range(args.repeat):
        tag = f"[{r + 1}/{args.repeat}] " if args.repeat > 1 else ""
        if args.wait_idle > 0:
            wait_quiet(args.wait_idle, args.idle_cores)
        print(f"{tag}baseline: raw ONNX Runtime, batch {args.batch}, intra-op threads {args.threads} ...", flush=True)
        base = measure_baseline(clf, texts, args)
        bases.append(base)
        print(f"{tag}baseline: {base['seconds']:.2f}s, {base['ips']:,.0f} items/s")
        if args.wait_idle > 0:
            wait_quiet(args.wait_idle, args.idle_cores)
        print(f"{tag}pipeline: {args.jobs} job(s), {len(texts)} items via {api} ...", flush=True)
        try:
            pipe = measure_pipeline(api, key, texts, args, manifest, base["probs"])
        except (HttpError, OSError, TimeoutError) as e:
            print(f"moderation.py: pipeline failed: {e}", file=sys.stderr)
            return 1
        pipes.append(pipe)
        print(f"{tag}pipeline: {pipe['seconds']:.2f}s, {pipe['ips']:,.0f} items/s")

    # With --repeat: medians. The ratio is the median of the per-run ratios (each pairs a
    # baseline with the pipeline run right after it, so slow drifts of the machine cancel).
    base_ips = median([b["ips"] for b in bases])
    pipe_ips = median([p["ips"] for p in pipes])
    ratio = median([p["ips"] / b["ips"] for b, p in zip(bases, pipes)])
    # The run whose details are shown: the one with the median pipeline items/s.
    order = sorted(range(len(pipes)), key=lambda i: pipes[i]["ips"])
    shown = pipes[order[len(order) // 2]]
    base_shown = bases[order[len(order) // 2]]
    submit_s = median([p["submit_s"] for p in pipes])
    firsts = [p["first_result_s"] for p in pipes if p["first_result_s"] is not None]
    first_s = median(firsts) if firsts else None
    diffs = [p["max_diff"] for p in pipes if p["max_diff"] is not None]
    max_diff = max(diffs) if diffs else None
    problems = [q for p in pipes for q in p["problems"]]
    others = [x for x in [b["other"] for b in bases] + [p["other"] for p in pipes] if x is not None]
    noisy = bool(others) and max(others) > NOISY

    summary = {
        "items": len(texts),
        "baseline_items_per_s": round(base_ips, 1),
        "pipeline_items_per_s": round(pipe_ips, 1),
        "ratio_pipeline_vs_raw_ort": round(ratio, 3),
        "submit_ms": round(submit_s * 1000, 1),
        "first_result_ms": round(first_s * 1000, 1) if first_s is not None else None,
        "threads": args.threads,
        "batch": args.batch,
        "jobs": args.jobs,
        "repeat": args.repeat,
        "baseline_s": round(median([b["seconds"] for b in bases]), 3),
        "pipeline_s": round(median([p["seconds"] for p in pipes]), 3),
        "server_s": round(shown["server_s"], 3) if shown["server_s"] is not None else None,
        "max_abs_score_diff": float(f"{max_diff:.2e}") if max_diff is not None else None,
        "other_cpu_share_max": round(max(others), 3) if others else None,
    }

    # ---- report
    flagged = sum(1 for p in bases[0]["probs"] if float(max(p)) >= float(manifest.get("threshold", 0.5)))
    med = " (median)" if args.repeat > 1 else ""
    rows = [
        ("items", f"{len(texts):,}", f"{flagged:,} flagged by the model"),
        ("baseline (raw ORT, Python)", f"{base_ips:,.0f} items/s",
         f"{summary['baseline_s']:.2f}s{med}; batch {args.batch}, {args.threads} thread(s); "
         f"tokenization alone {median([b['tok_s'] for b in bases]):.2f}s"),
        ("pipeline (end to end)", f"{pipe_ips:,.0f} items/s",
         f"{summary['pipeline_s']:.2f}s{med} POST -> completed (server {summary['server_s']}s); {args.jobs} job(s)"),
        ("ratio pipeline / raw ORT", f"{ratio:.3f}", "median of the per-run ratios" if args.repeat > 1 else ""),
        ("submit (POST -> 202)", f"{summary['submit_ms']:,.0f} ms",
         ("" if args.jobs == 1 else "slowest of the concurrent POSTs") + med),
        ("time to first result", f"{summary['first_result_ms'] or 0:,.0f} ms",
         f"from the POST, poll every {args.poll * 1000:.0f} ms{med}"),
        ("results vs baseline", "-" if max_diff is None else f"max |diff| {max_diff:.1e}",
         f"{sum(p['succeeded'] for p in pipes):,} succeeded, {sum(p['failed'] for p in pipes):,} failed"),
    ]
    if args.repeat > 1:
        for i, (b, p) in enumerate(zip(bases, pipes)):
            rows.append((f"run {i + 1}", f"ratio {p['ips'] / b['ips']:.3f}",
                         f"baseline {b['ips']:,.0f}/s (others {pct(b['other'])} cpu), "
                         f"pipeline {p['ips']:,.0f}/s (others {pct(p['other'])} cpu)"))
    detail = " (median run)" if args.repeat > 1 else ""
    delta = shown["metrics"]
    if delta:
        inf = delta["gatehouse_model_inference_seconds"]
        bs = delta["gatehouse_model_batch_size"]
        ch = delta["gatehouse_worker_chunk_seconds"]
        wall = shown["seconds"]
        if inf["count"] > 0:
            rows.append((f"worker: model runs{detail}", f"{int(inf['count']):,} batches",
                         f"{inf['sum']:.2f}s in the model thread = {100 * inf['sum'] / wall:.0f}% of the wall time; "
                         f"{(bs['sum'] or len(texts)) / inf['sum']:,.0f} items/s while busy; "
                         f"p50 {bucket_quantile(inf['buckets'], 0.5)}s per batch"))
        if bs["count"] > 0:
            rows.append(("worker: batch size", f"mean {bs['sum'] / bs['count']:.1f}", size_histogram(bs["buckets"])))
        if ch["count"] > 0:
            rows.append(("worker: chunks", f"{int(ch['count']):,} chunks",
                         f"mean {ch['sum'] / ch['count'] * 1000:.0f} ms each (claim -> commit), "
                         f"p50 {bucket_quantile(ch['buckets'], 0.5)}s, p90 {bucket_quantile(ch['buckets'], 0.9)}s"))
    else:
        rows.append(("worker metrics", "-", f"not reachable at {args.worker_metrics or '(skipped)'}"))
    cpu = shown["cpu"]
    if cpu and cpu["total"] > 0:
        ncpu = os.cpu_count() or 1
        rows.append((f"cpu: whole machine{detail}", f"{cpu['busy']:.2f} cpu-s",
                     f"of {cpu['total']:.2f} available ({ncpu} cores x {cpu['total'] / ncpu:.2f}s) = "
                     f"{100 * cpu['busy'] / cpu['total']:.0f}% busy during the pipeline run"))
        for group, sec in sorted(cpu["procs"].items(), key=lambda kv: -kv[1]):
            note = ""
            if group == "worker" and cpu["threads"]:
                note = "; ".join(f"{r} {v:.2f}" for r, v in
                                 sorted(cpu["threads"].items(), key=lambda kv: -kv[1]) if v >= 0.005)
            rows.append((f"cpu: {group}", f"{sec:.2f} cpu-s", note))
        other = cpu["busy"] - sum(cpu["procs"].values())
        rows.append(("cpu: everything else", f"{other:.2f} cpu-s",
                     "kernel, other processes" + (" -- HIGH: something else competed for the CPU"
                                                  if other > max(NOISY * cpu["total"], NOISY_FLOOR) else "")))
    bcpu = base_shown["cpu"]
    if bcpu and bcpu["total"] > 0:
        mine = bcpu["procs"].get("loadtest (this script)", 0.0)
        other = bcpu["busy"] - mine
        rows.append((f"cpu during the baseline{detail}", f"{bcpu['busy']:.2f} cpu-s",
                     f"this script {mine:.2f}, everything else {other:.2f}"
                     + (" -- HIGH: the baseline shared the CPU" if other > max(NOISY * bcpu["total"], NOISY_FLOOR) else "")))

    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print()
    print(f"{'measure':<{w0}}  {'value':>{w1}}  notes")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * 5}")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:>{w1}}  {c}")
    print()
    if noisy:
        print(f"WARNING: other processes used up to {pct(max(others))} of the CPU during a measurement: "
              "the numbers are not representative (re-run on a quiet machine, or with --repeat 3)",
              file=sys.stderr)
    line = json.dumps(summary)
    print(line)

    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(line + "\n", encoding="utf-8")
    except OSError as e:
        print(f"moderation.py: cannot write {args.output}: {e}", file=sys.stderr)

    for p in problems:
        print(f"moderation.py: PROBLEM: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
