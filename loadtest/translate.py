#!/usr/bin/env python3
"""Gatehouse translate load test and decode benchmark (zh→en, models/cn2en-gru).

Two modes:

--bench  (run by `make bench-translate`, after `cargo bench -p gatehouse-worker --bench translate`)
    Reads the Rust bench's output (loadtest/results/translate-bench-rust.json: its sentences,
    source ids, output ids, batch size, thread count and tokens/s), tokenizes the same
    sentences with Python `tokenizers` (<unk> dropped, truncated, EOS appended — checked equal
    to the Rust source ids), then decodes them with a plain Python onnxruntime greedy loop over
    the same encoder.onnx/decoder.onnx: same batches (right-padded with `pad`, sequence_lens),
    one decoder step per token, a row stops at EOS (finished rows are fed EOS, the loop ends
    when all rows are done or after max_new_tokens), same intra-op threads, spinning off.
    Clock: the decode loop only, after one untimed warm-up batch (as the Rust side).
    Tokens = generated ids excluding the final EOS (as the Rust side). Every output sequence
    must equal the Rust one (exit 1 otherwise). Prints both tokens/s and rust/python, writes
    loadtest/results/translate-bench.json.

--job    (run by loadtest/translate.sh, which creates the tenant + key)
    Submits ONE translate job of --items (default 10,000) short Chinese texts, generated
    deterministically (seeded) from everyday sentences (one to three sentences per item, some
    with emoji), polls GET /v1/jobs/{id} until `completed` (timeout 600 s), checks that every
    item succeeded and has an English translation, and prints items/s and the time to
    completion plus the worker's translate metrics and CPU split over the run. Writes
    loadtest/results/translate-latest.json.

Exit status: 0 ok; 1 the run failed (mismatch, failed items, timeout); 2 setup error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
RESULTS = HERE / "results"
MODEL = "cn2en-gru"

sys.path.insert(0, str(HERE))
from moderation import (  # noqa: E402  (shared HTTP / metrics / CPU helpers)
    _SAMPLE,
    HttpError,
    check_loopback,
    cpu_delta,
    cpu_snapshot,
    default_worker_metrics,
    http,
)


def fail(message: str, status: int = 2):
    print(f"translate.py: {message}", file=sys.stderr)
    raise SystemExit(status)


def models_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("GATEHOUSE_MODELS_DIR") or REPO_ROOT / "models")


# =========================================================================== --bench

def run_bench(args) -> int:
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    rust_path = Path(args.rust_json)
    if not rust_path.is_file():
        fail(f"{rust_path} not found: run `cargo bench -p gatehouse-worker --bench translate` first")
    rust = json.loads(rust_path.read_text(encoding="utf-8"))
    rs = rust["summary"]
    texts: list[str] = rust["texts"]
    batch, threads = int(rs["batch"]), int(rs["threads"])

    mdir = models_dir(args.models_dir) / MODEL
    manifest = json.loads((mdir / "manifest.json").read_text(encoding="utf-8"))
    tokens = manifest["tokens"]
    sos, eos, pad = tokens["decoder_start"], tokens["eos"], tokens["pad"]
    max_new = int(manifest["max_new_tokens"])
    max_src = int(manifest["max_source_tokens"])

    # Source ids, Python side: the manifest's rule (drop <unk>, truncate, append EOS).
    tok = Tokenizer.from_file(str(mdir / manifest["tokenizers"]["source"]))
    unk = tok.token_to_id("<unk>")
    t = time.perf_counter()
    sources = []
    for text in texts:
        ids = [i for i in tok.encode(text, add_special_tokens=True).ids if i != unk]
        sources.append(ids[: max_src - 1] + [eos])
    tokenize_s = time.perf_counter() - t
    bad_src = sum(1 for a, b in zip(sources, rust["source_ids"]) if a != b)
    if bad_src:
        fail(f"{bad_src}/{len(texts)} source id sequences differ from the Rust ones", 1)

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads  # 0 = ORT default, as the Rust side
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the worker
    prov = ["CPUExecutionProvider"]
    enc = ort.InferenceSession(str(mdir / manifest["encoder"]["file"]), so, providers=prov)
    dec = ort.InferenceSession(str(mdir / manifest["decoder"]["file"]), so, providers=prov)

    def greedy(srcs: list[list[int]]) -> list[list[int]]:
        b, length = len(srcs), max(len(s) for s in srcs)
        ids = np.full((b, length), pad, dtype=np.int64)
        for r, s in enumerate(srcs):
            ids[r, : len(s)] = s
        lens = np.array([max(1, len(s)) for s in srcs], dtype=np.int32)
        h = enc.run(["encoder_final_state"], {"input_ids": ids, "sequence_lens": lens})[0]
        cur = np.full((b, 1), sos, dtype=np.int64)
        done = np.zeros(b, dtype=bool)
        outs: list[list[int]] = [[] for _ in range(b)]
        for _ in range(max_new):
            logits, h = dec.run(["logits", "hidden_out"], {"input_ids": cur, "hidden": h})
            nxt = logits[:, 0, :].argmax(axis=-1)
            for r in np.flatnonzero(~done):
                if nxt[r] == eos:
                    done[r] = True
                else:
                    outs[r].append(int(nxt[r]))
            if done.all():
                break
            cur = np.where(done, eos, nxt).astype(np.int64)[:, None]
        return outs

    greedy(sources[:batch])  # warm-up, untimed (as the Rust side)
    outputs: list[list[int]] = []
    t = time.perf_counter()
    for lo in range(0, len(sources), batch):
        outputs.extend(greedy(sources[lo: lo + batch]))
    decode_s = time.perf_counter() - t

    mismatch = [i for i, (a, b) in enumerate(zip(outputs, rust["output_ids"])) if a != b]
    n_tokens = sum(len(o) for o in outputs)
    py_tps = n_tokens / decode_s
    rust_tps = float(rs["tokens_per_s"])
    result = {
        "model": MODEL,
        "sentences": len(texts),
        "batch": batch,
        "threads": threads,
        "token_rule": "generated ids excluding the final EOS (both sides)",
        "tokens": n_tokens,
        "rust_tokens": int(rs["tokens"]),
        "rust_tokens_per_s": round(rust_tps, 1),
        "python_tokens_per_s": round(py_tps, 1),
        "ratio_rust_vs_python": round(rust_tps / py_tps, 3),
        "rust_decode_s": round(float(rs["decode_s"]), 3),
        "python_decode_s": round(decode_s, 3),
        "rust_sentences_per_s": round(float(rs["sentences_per_s"]), 1),
        "python_sentences_per_s": round(len(texts) / decode_s, 1),
        "rust_tokenize_s": round(float(rs["tokenize_s"]), 4),
        "python_tokenize_s": round(tokenize_s, 4),
        "mismatched_outputs": len(mismatch),
        "onnxruntime_python": ort.__version__,
    }
    print(f"translate bench: {MODEL}, {len(texts)} sentences, batch {batch}, "
          f"intra-op threads {threads}, greedy; tokens = generated ids excl. EOS")
    print(f"  {'':8} {'tokens':>8} {'decode s':>9} {'tokens/s':>10} {'sent/s':>8}")
    print(f"  {'rust':8} {rs['tokens']:>8} {rs['decode_s']:>9.3f} {rust_tps:>10.1f} "
          f"{rs['sentences_per_s']:>8.1f}")
    print(f"  {'python':8} {n_tokens:>8} {decode_s:>9.3f} {py_tps:>10.1f} "
          f"{len(texts) / decode_s:>8.1f}")
    print(f"  ratio rust/python = {rust_tps / py_tps:.3f}   "
          f"outputs identical: {len(texts) - len(mismatch)}/{len(texts)}")
    line = json.dumps(result, separators=(",", ":"))
    print(line)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "translate-bench.json").write_text(line + "\n", encoding="utf-8")
    if mismatch or n_tokens != int(rs["tokens"]):
        i = mismatch[0] if mismatch else 0
        print(f"translate.py: {len(mismatch)} output sequences differ from the Rust ones "
              f"(first: #{i} {texts[i]!r}: python {outputs[i]} rust {rust['output_ids'][i]})",
              file=sys.stderr)
        return 1
    return 0


# =========================================================================== --job

# Everyday sentences (Tatoeba register, which is what the model was trained on).
SENTENCES = [
    "我不知道。", "你好。", "谢谢你。", "我很高兴。", "他是我的朋友。", "我爱你。", "我饿了。",
    "我累了。", "今天很冷。", "我喜欢猫。", "你叫什么名字？", "我是学生。", "请坐。", "我们走吧。",
    "这是我的书。", "他很高。", "再见！", "我想回家。", "汤姆在哪里？", "你几岁？", "我很忙。",
    "今天天气很好。", "我喜欢喝茶。", "你会说英语吗？", "我住在北京。", "她是老师。", "我明天去学校。",
    "这个多少钱？", "我不喜欢咖啡。", "他昨天生病了。", "我们是朋友。", "你在做什么？", "我在看书。",
    "请帮我。", "我没有时间。", "外面下雨了。", "我想喝水。", "她很漂亮。", "你喜欢音乐吗？",
    "我每天早上跑步。", "这是我的房子。", "他不在家。", "我可以进来吗？", "我忘了。", "别担心。",
    "我们去吃饭吧。", "你饿了吗？", "我很抱歉。", "这本书很有意思。", "汤姆是医生。",
    "我的猫很可爱。", "他开车去上班。", "我喜欢这首歌。", "你住在哪里？", "我会游泳。",
    "现在几点了？", "我们明天见。", "她在厨房里。", "我有一个妹妹。", "你累吗？",
]
EMOJI = ["😀", "🎉", "👍", "❤️", "😂", "🙏", "☕", "🐱"]


def generate_texts(n: int, seed: int) -> list[str]:
    """n items: 60 % one sentence, 30 % two, 10 % three; about 15 % with an emoji somewhere."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        k = 1 if r < 0.6 else 2 if r < 0.9 else 3
        parts = [rng.choice(SENTENCES) for _ in range(k)]
        if rng.random() < 0.15:
            i = rng.randrange(k)
            e = rng.choice(EMOJI)
            parts[i] = parts[i][:-1] + e + parts[i][-1] if rng.random() < 0.5 else parts[i] + e
        out.append("".join(parts))
    return out


TRANSLATE_METRICS = ("gatehouse_translate_decode_seconds", "gatehouse_translate_generated_tokens_total",
                     "gatehouse_translate_segments_total", "gatehouse_translate_decode_steps_total",
                     "gatehouse_worker_chunk_seconds")


def scrape(url: str | None) -> dict | None:
    """{series: value} for the translate metrics (summed over labels; histograms: _sum, _count)."""
    if not url:
        return None
    try:
        _, raw = http("GET", url, timeout=5)
    except (OSError, HttpError):
        return None
    out: dict[str, float] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1).endswith("_bucket"):
            continue
        name = m.group(1)
        if any(name.startswith(base) for base in TRANSLATE_METRICS):
            out[name] = out.get(name, 0.0) + float(m.group(3))
    return out


def ts(s: str) -> float:
    s = re.sub(r"(\.\d{6})\d+", r"\1", s.replace("Z", "+00:00"))
    return datetime.fromisoformat(s).timestamp()


def run_job(args) -> int:
    api = args.api.rstrip("/")
    check_loopback(api, "--api")
    key = args.key or os.environ.get("GATEHOUSE_KEY")
    if not key:
        fail("no API key: pass --key or set GATEHOUSE_KEY (loadtest/translate.sh does)")
    metrics_url = args.worker_metrics
    if metrics_url:
        check_loopback(metrics_url, "--worker-metrics")

    texts = generate_texts(args.items, args.seed)
    items = [{"custom_id": f"tr-{i:06d}", "text": t} for i, t in enumerate(texts)]
    body = json.dumps({"kind": "translate", "items": items,
                       "options": {"source_lang": "zh", "target_lang": "en"}},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    n_sent = sum(len(re.findall(r"[。！？]", t)) for t in texts)
    print(f"translate job: {len(texts)} items ({n_sent} sentences, {len(body) / 1e6:.2f} MB body), "
          f"zh→en, timeout {args.timeout:.0f}s")

    m0, c0 = scrape(metrics_url), cpu_snapshot()
    t0 = time.perf_counter()
    status, raw = http("POST", f"{api}/v1/jobs", key=key, body=body, timeout=120)
    submit_s = time.perf_counter() - t0
    if status not in (200, 202):
        fail(f"POST /v1/jobs: HTTP {status}: {raw[:300]!r}", 1)
    jid = json.loads(raw)["id"]
    print(f"  job {jid} accepted in {submit_s * 1000:.0f} ms; polling every {args.poll}s")

    first_result = None
    last_print = 0.0
    job = None
    while True:
        try:
            _, raw = http("GET", f"{api}/v1/jobs/{jid}", key=key, timeout=10)
            job = json.loads(raw)
        except (OSError, HttpError) as e:
            print(f"  poll: {e}", file=sys.stderr)
        now = time.perf_counter()
        if job is not None:
            c = job["counts"]
            if first_result is None and c["succeeded"] + c["failed"] > 0:
                first_result = now - t0
            if now - last_print >= 15:
                last_print = now
                print(f"  {now - t0:6.1f}s  {job['status']:10} succeeded {c['succeeded']} failed {c['failed']}")
            if job["status"] in ("completed", "failed", "cancelled"):
                break
        if now - t0 > args.timeout:
            c = job["counts"] if job else {}
            fail(f"timeout after {args.timeout:.0f}s: {c} (see .cache/demo/worker.log)", 1)
        time.sleep(args.poll)
    wall_s = time.perf_counter() - t0
    m1, c1 = scrape(metrics_url), cpu_snapshot()
    server_s = (ts(job["completed_at"]) - ts(job["created_at"])) if job.get("completed_at") else None

    # Results: every item succeeded, with some English in it.
    _, raw = http("GET", f"{api}/v1/jobs/{jid}/results", key=key, timeout=120)
    lines = [json.loads(x) for x in raw.splitlines() if x.strip()]
    by_id = {r.get("custom_id"): r for r in lines}
    ok = [r for r in lines if r.get("status") == "succeeded"]
    english = sum(1 for r in ok if re.search(r"[a-z]", json.dumps(r.get("result", r), ensure_ascii=False)))
    counts = job["counts"]
    problems = []
    if job["status"] != "completed":
        problems.append(f"job status {job['status']}")
    if counts.get("succeeded") != len(texts):
        problems.append(f"counts {counts}, want {len(texts)} succeeded")
    if len(by_id) != len(texts) or len(ok) != len(texts):
        problems.append(f"results: {len(lines)} lines, {len(ok)} succeeded, want {len(texts)}")
    if english != len(ok):
        problems.append(f"{len(ok) - english} succeeded results without any English")

    metrics = None
    if m0 is not None and m1 is not None:
        d = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in m1}
        dec_s = d.get("gatehouse_translate_decode_seconds_sum", 0.0)
        calls = d.get("gatehouse_translate_decode_seconds_count", 0.0)
        toks = d.get("gatehouse_translate_generated_tokens_total", 0.0)
        segs = d.get("gatehouse_translate_segments_total", 0.0)
        metrics = {
            "decode_s": round(dec_s, 2),
            "generate_calls": int(calls),
            "segments": int(segs),
            "mean_sentences_per_generate": round(segs / calls, 2) if calls else None,
            "generated_tokens": int(toks),
            "decode_steps": int(d.get("gatehouse_translate_decode_steps_total", 0.0)),
            "tokens_per_decode_s": round(toks / dec_s, 1) if dec_s else None,
            "chunks": int(d.get("gatehouse_worker_chunk_seconds_count", 0.0)),
            "chunk_s_sum": round(d.get("gatehouse_worker_chunk_seconds_sum", 0.0), 2),
            "decode_share_of_wall": round(dec_s / wall_s, 3),
        }
    cpu = cpu_delta(c0, c1)

    sample = [(texts[i], (by_id.get(f"tr-{i:06d}", {}).get("result") or {}).get("text")) for i in (0, 1, 2, 3)]
    result = {
        "items": len(texts),
        "sentences": n_sent,
        "succeeded": counts.get("succeeded"),
        "failed": counts.get("failed"),
        "status": job["status"],
        "time_to_completion_s": round(wall_s, 2),
        "items_per_s": round(len(texts) / wall_s, 1),
        "sentences_per_s": round(n_sent / wall_s, 1),
        "server_s": round(server_s, 2) if server_s is not None else None,
        "submit_ms": round(submit_s * 1000, 1),
        "first_result_ms": round(first_result * 1000, 1) if first_result is not None else None,
        "worker": metrics,
        "cpu_s": {k: round(v, 1) for k, v in (cpu or {}).get("procs", {}).items()},
        "worker_threads_cpu_s": {k: round(v, 1) for k, v in (cpu or {}).get("threads", {}).items() if v >= 0.05},
        "machine_busy_share": round(cpu["busy"] / cpu["total"], 3) if cpu and cpu["total"] else None,
        "seed": args.seed,
        "job_id": jid,
    }
    print(f"  completed: {counts}  in {wall_s:.1f}s (server {result['server_s']}s) "
          f"-> {result['items_per_s']} items/s, {result['sentences_per_s']} sentences/s")
    if metrics:
        print(f"  worker: {metrics['generate_calls']} generate calls for {metrics['segments']} sentences "
              f"(mean {metrics['mean_sentences_per_generate']} per call), decode {metrics['decode_s']}s "
              f"= {metrics['decode_share_of_wall'] * 100:.0f}% of wall, {metrics['tokens_per_decode_s']} tokens/decode-s")
    if cpu:
        print("  cpu-s: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu["procs"].items(), key=lambda kv: -kv[1])))
        print("  worker threads cpu-s: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(
            result["worker_threads_cpu_s"].items(), key=lambda kv: -kv[1])))
    for src, out in sample:
        print(f"  {src!r} -> {out!r}")
    line = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    print(line)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "translate-latest.json").write_text(line + "\n", encoding="utf-8")
    if problems:
        print("translate.py: FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--bench", action="store_true", help="Python onnxruntime greedy loop vs the Rust bench")
    mode.add_argument("--job", action="store_true", help="one translate job through the running stack")
    ap.add_argument("--rust-json", default=str(RESULTS / "translate-bench-rust.json"),
                    help="--bench: the Rust bench's output file (GATEHOUSE_BENCH_OUT)")
    ap.add_argument("--models-dir", default=None, help="default GATEHOUSE_MODELS_DIR or models/")
    ap.add_argument("--api", default="http://127.0.0.1:8080", help="--job: api base URL (loopback only)")
    ap.add_argument("--key", default=None, help="--job: API key (default env GATEHOUSE_KEY)")
    ap.add_argument("--items", type=int, default=10000, help="--job: items in the job (default 10000)")
    ap.add_argument("--seed", type=int, default=20251124, help="--job: text generator seed")
    ap.add_argument("--poll", type=float, default=0.25, help="--job: poll interval, s")
    ap.add_argument("--timeout", type=float, default=600.0, help="--job: give up after this many s")
    ap.add_argument("--worker-metrics", default=default_worker_metrics(),
                    help="--job: worker /metrics URL ('' to skip)")
    args = ap.parse_args()
    if args.items <= 0:
        fail("--items must be > 0")
    try:
        return run_bench(args) if args.bench else run_job(args)
    except HttpError as e:
        fail(str(e), 1)
    return 2


if __name__ == "__main__":
    sys.exit(main())
