#!/usr/bin/env python3
"""Independent reference decode of a past_key_values translation model directory
(docs/SEQ2SEQ_MANIFEST.md), with Python onnxruntime on the same files the worker runs,
to prove the worker's Rust decoding engine token for token.

For a fixed list of source texts, greedy and beam search (beam 4, length penalty 1.0
and 0.6) are run
  * batched (all texts in one right-padded batch with attention masks) and singly, and
  * with each decoder variant the directory has: "prefix" (decoder_model over the whole
    growing prefix, no cache), "with_past" (decoder_model for the first step, then
    decoder_with_past_model), "merged" (decoder_model_merged: use_cache_branch=false with
    Optimum-style dummy past [rows, heads, 1, head_dim] zeros for the first step, then true;
    the encoder K/V of the first step are kept, the merged model's with-past branch emits
    empty present.*.encoder.* tensors);
and all of them must give identical token ids (checked; exit 1 otherwise).

Output ids EXCLUDE the decoder start token and the final EOS. A sequence that hits
max_new_tokens without EOS has exactly max_new_tokens ids.

Greedy: argmax of the logits (ties: lowest id), stop at EOS.

Beam search (== transformers >= 4.50 `_beam_search` with early_stopping=False,
num_return_sequences=1, no logits processors; the best hypothesis is returned):
  * per source, at most K live hypotheses (ids without start token, sum of log-probs);
    at the first step only one (the start token).
  * each step: log-softmax of every live hypothesis' logits, candidates = (sum + logp[v])
    for every live hypothesis h and token v, sorted best first (ties: lower h, then lower v),
    and the first 2K are scanned in order:
      - an EOS candidate at rank < K finishes hypothesis h: it joins the finished set
        with score = sum / len ** length_penalty, len = len(ids of h) + 1 (the EOS counts);
        EOS candidates at rank >= K are dropped;
      - a non-EOS candidate becomes a live hypothesis of the next step, until K are taken.
  * the finished set keeps the best K by score (ties: earlier-added first).
  * a source is closed (no more finished hypotheses are added, its live ones are dropped)
    when it has K finished and  worst finished score >= best live sum / n ** length_penalty,
    n = the live hypotheses' length (= steps done). This check runs after each step.
  * after max_new_tokens steps, the live hypotheses of a source that is not closed join
    its finished set with score = sum / len(ids) ** length_penalty (no EOS to count).
  * result: the finished hypothesis with the best score (ties: earlier-added); "score" is
    that normalised score, "logprob" its sum of log-probs (including the EOS's, if any).
  Log-softmax and sums are computed in float64 from the float32 logits; "min_margin"
  fields give the smallest gap between competing quantities behind any decision (an
  implementation in float32 should agree as long as its rounding error stays below it).

Usage: reference_seq2seq.py MODEL_DIR OUT.json [--max-new-tokens N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

TEXTS = [
    "我爱中国",
    "你好",
    "今天我们去吃饭。",
    "他是学生",
    "她很喜欢这个大学",
    "我不要去",
    "中国人很好，你说呢？",
    "我们是好人",
    "天天",
    "I love China.",
    "你是不是学生？",
    "大家好",
]
MAX_NEW_TOKENS = 16
BEAMS = [(4, 1.0), (4, 0.6)]
KINDS = ("decoder.key", "decoder.value", "encoder.key", "encoder.value")
MARGIN_WARN = 1e-4


def log(msg: str) -> None:
    print(f"[reference_seq2seq] {msg}", file=sys.stderr, flush=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


# --------------------------------------------------------------------------
# model + decoder step variants
# --------------------------------------------------------------------------

class Model:
    def __init__(self, directory: str):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.dir = directory
        with open(os.path.join(directory, "manifest.json"), encoding="utf-8") as f:
            self.m = json.load(f)
        m = self.m
        if m["decoder"]["state"] != "past_key_values":
            raise SystemExit("reference_seq2seq.py handles decoder.state = past_key_values only")
        for rel, want in m["files_sha256"].items():
            with open(os.path.join(directory, rel), "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
            if got != want:
                raise SystemExit(f"{rel}: sha256 {got} != manifest {want}")
        self.start = m["tokens"]["decoder_start"]
        self.eos = m["tokens"]["eos"]
        self.pad = m["tokens"]["pad"]
        p = m["decoder"]["past"]
        self.layers, self.heads, self.head_dim = p["layers"], p["heads"], p["head_dim"]
        self.in_prefix, self.out_prefix = p["input_prefix"], p["output_prefix"]
        self.src_tok = Tokenizer.from_file(os.path.join(directory, m["tokenizers"]["source"]))
        self.tgt_tok = Tokenizer.from_file(os.path.join(directory, m["tokenizers"]["target"]))

        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 1

        def session(rel):
            return None if rel is None else ort.InferenceSession(
                os.path.join(directory, rel), so, providers=["CPUExecutionProvider"])

        self.encoder = session(m["encoder"]["file"])
        self.decoder = session(m["decoder"]["file"])
        self.with_past = session(m["decoder"].get("with_past_file"))
        self.merged = session(m["decoder"].get("merged_file"))
        self.din = m["decoder"]["inputs"]
        self.modes = ["prefix"] + (["with_past"] if self.with_past else []) + (["merged"] if self.merged else [])

    def encode_source(self, text: str) -> list[int]:
        m = self.m
        ids = self.src_tok.encode(text, add_special_tokens=True).ids
        if m["source_unknown"] == "drop":
            unk = self.src_tok.token_to_id("<unk>")
            ids = [i for i in ids if i != unk]
        room = m["max_source_tokens"] - (1 if m["append_eos_to_source"] else 0)
        if len(ids) > room:
            ends_with_eos = ids[-1] == self.eos
            ids = ids[:room]
            if ends_with_eos and not m["append_eos_to_source"]:
                ids[-1] = self.eos
        if m["append_eos_to_source"]:
            ids.append(self.eos)
        return ids

    def detokenize(self, ids: list[int]) -> str:
        return self.tgt_tok.decode(ids, skip_special_tokens=True)

    def run_encoder(self, sources: list[list[int]]):
        B, S = len(sources), max(len(s) for s in sources)
        ids = np.full((B, S), self.pad, np.int64)
        mask = np.zeros((B, S), np.int64)
        for r, s in enumerate(sources):
            ids[r, :len(s)] = s
            mask[r, :len(s)] = 1
        ein = self.m["encoder"]["inputs"]
        feed = {ein["input_ids"]: ids}
        if ein.get("attention_mask"):
            feed[ein["attention_mask"]] = mask
        out = self.m["encoder"]["outputs"]["hidden_states"]
        (hidden,) = self.encoder.run([out], feed)
        return hidden, mask


def _feed(session, values: dict) -> dict:
    names = {i.name for i in session.get_inputs()}
    missing = names - set(values)
    if missing:
        raise SystemExit(f"no value for decoder inputs {sorted(missing)}")
    return {k: v for k, v in values.items() if k in names}


class Stepper:
    """One decoder step for R rows; rows keep their encoder row, the cache follows select()."""

    def __init__(self, model: Model, mode: str, hidden: np.ndarray, mask: np.ndarray):
        self.model, self.mode, self.hidden, self.mask = model, mode, hidden, mask
        self.past: dict[str, np.ndarray] | None = None  # keyed by input name

    def _base(self, ids):
        d = self.model.din
        v = {d["input_ids"]: ids, d["encoder_hidden_states"]: self.hidden}
        if d.get("encoder_attention_mask"):
            v[d["encoder_attention_mask"]] = self.mask
        return v

    def _run(self, session, values):
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, _feed(session, values))))

    def _keep(self, out, kinds):
        mdl = self.model
        for i in range(mdl.layers):
            for kind in kinds:
                self.past[f"{mdl.in_prefix}.{i}.{kind}"] = out[f"{mdl.out_prefix}.{i}.{kind}"]

    def step(self, prefixes: list[list[int]]) -> np.ndarray:
        mdl = self.model
        full = np.array(prefixes, np.int64)
        last = full[:, -1:]
        logits_name = mdl.m["decoder"]["outputs"]["logits"]
        if self.mode == "prefix":
            out = self._run(mdl.decoder, self._base(full))
        elif self.mode == "with_past":
            if self.past is None:
                out = self._run(mdl.decoder, self._base(full))
                self.past = {}
                self._keep(out, KINDS)
            else:
                out = self._run(mdl.with_past, {**self._base(last), **self.past})
                self._keep(out, KINDS[:2])  # cross-attention K/V are constant: keep the first step's
        elif self.mode == "merged":
            flag = mdl.din["use_cache_branch"]
            if self.past is None:
                dummy = np.zeros((full.shape[0], mdl.heads, 1, mdl.head_dim), np.float32)
                past = {f"{mdl.in_prefix}.{i}.{k}": dummy for i in range(mdl.layers) for k in KINDS}
                out = self._run(mdl.merged, {**self._base(full), **past, flag: np.array([False])})
                self.past = {}
                self._keep(out, KINDS)
            else:
                out = self._run(mdl.merged, {**self._base(last), **self.past, flag: np.array([True])})
                self._keep(out, KINDS[:2])
                enc0 = out.get(f"{mdl.out_prefix}.0.encoder.key")
                if enc0 is not None and enc0.shape[0] != 0:
                    raise SystemExit(f"merged with-past branch: present.0.encoder.key has shape {enc0.shape}; "
                                     "Optimum emits an empty tensor there")
        else:
            raise ValueError(self.mode)
        return out[logits_name][:, -1, :]

    def select(self, rows: list[int]) -> None:
        if self.past is not None:
            self.past = {k: v[rows] for k, v in self.past.items()}


# --------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------

def greedy(model: Model, mode: str, sources: list[list[int]], max_new: int) -> list[dict]:
    hidden, mask = model.run_encoder(sources)
    st = Stepper(model, mode, hidden, mask)
    B = len(sources)
    prefixes = [[model.start] for _ in range(B)]
    res = [{"ids": [], "logprob": 0.0, "eos": False, "margin": float("inf")} for _ in range(B)]
    done = [False] * B
    for _ in range(max_new):
        lp = log_softmax(st.step(prefixes))
        for r in range(B):
            if done[r]:
                prefixes[r].append(model.pad)
                continue
            tok = int(np.argmax(lp[r]))  # first maximum
            top2 = np.sort(lp[r])[-2:]
            res[r]["margin"] = min(res[r]["margin"], float(top2[1] - top2[0]))
            res[r]["logprob"] += float(lp[r, tok])
            if tok == model.eos:
                done[r] = True
                res[r]["eos"] = True
            else:
                res[r]["ids"].append(tok)
            prefixes[r].append(tok)
        if all(done):
            break
    return res


def beam_search(model: Model, mode: str, sources: list[list[int]], max_new: int, K: int, lp_pen: float) -> list[dict]:
    hidden, mask = model.run_encoder(sources)
    B = len(sources)
    rows = [b for b in range(B) for _ in range(K)]
    st = Stepper(model, mode, hidden[rows], mask[rows])
    eos = model.eos

    def norm(s: float, n: int) -> float:
        return s / (max(n, 1) ** lp_pen)

    live = [[([], 0.0)] for _ in range(B)]  # (ids, sum logp); hypothesis j of source b is at row b*K + j
    done: list[list[tuple]] = [[] for _ in range(B)]  # (score, ids, sum logp, ended_with_eos)
    closed = [False] * B
    margin = [float("inf")] * B
    for step in range(max_new):
        prefixes = []
        for b in range(B):
            for j in range(K):
                ids, _ = live[b][min(j, len(live[b]) - 1)]
                # a closed source's rows are still run (and ignored): pad them to the common length
                prefixes.append([model.start] + ids + [model.pad] * (step - len(ids)))
        lp = log_softmax(st.step(prefixes))
        V = lp.shape[1]
        next_rows: list[int] = []
        for b in range(B):
            if closed[b]:
                next_rows += [b * K + j for j in range(K)]
                continue
            scores = np.concatenate([s + lp[b * K + h] for h, (_, s) in enumerate(live[b])])
            # best first; ties: lower (h, v), i.e. lower flat index
            order = np.lexsort((np.arange(scores.size), -scores))
            cand = [(float(scores[i]), int(i) // V, int(i) % V) for i in order[:2 * K + 1]]
            if eos in (cand[K - 1][2], cand[K][2]):
                margin[b] = min(margin[b], cand[K - 1][0] - cand[K][0])
            non_eos = [float(scores[i]) for i in order if int(i) % V != eos][:K + 1]
            margin[b] = min(margin[b], non_eos[K - 1] - non_eos[K])
            chosen = []
            for rank, (s, h, v) in enumerate(cand[:2 * K]):
                ids = live[b][h][0]
                if v == eos:
                    if rank < K:
                        done[b].append((norm(s, len(ids) + 1), ids, s, True))
                    continue
                chosen.append((ids + [v], s, b * K + h))
                if len(chosen) == K:
                    break
            done[b].sort(key=lambda d: -d[0])  # stable: earlier-added first among ties
            if len(done[b]) > K:
                margin[b] = min(margin[b], done[b][K - 1][0] - done[b][K][0])
                done[b] = done[b][:K]
            if len(done[b]) == K:
                best_live = norm(chosen[0][1], step + 1)
                margin[b] = min(margin[b], abs(done[b][-1][0] - best_live))
                if done[b][-1][0] >= best_live:
                    closed[b] = True
            live[b] = [(ids, s) for ids, s, _ in chosen]
            next_rows += [row for _, _, row in chosen]
        st.select(next_rows)
        if all(closed):
            break
    out = []
    for b in range(B):
        if not closed[b]:
            for ids, s in live[b]:
                done[b].append((norm(s, len(ids)), ids, s, False))
            done[b].sort(key=lambda d: -d[0])
        if len(done[b]) > 1:
            margin[b] = min(margin[b], done[b][0][0] - done[b][1][0])
        score, ids, s, ended = done[b][0]
        out.append({"ids": ids, "score": score, "logprob": s, "eos": ended, "margin": margin[b]})
    return out


# --------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("out_json")
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    args = ap.parse_args()
    import onnxruntime as ort

    t0 = time.monotonic()
    model = Model(os.path.abspath(args.model_dir))
    N = args.max_new_tokens
    sources = [model.encode_source(t) for t in TEXTS]
    log(f"{len(TEXTS)} texts, max_new_tokens {N}, decoder variants {model.modes}, onnxruntime {ort.__version__}")

    # runs[(search, mode, batched)] = list of per-text results
    searches = [("greedy", None)] + [(f"beam{k}_lp{lp}", (k, lp)) for k, lp in BEAMS]
    runs: dict[tuple, list[dict]] = {}
    for name, params in searches:
        for mode in model.modes:
            for batched in (True, False):
                t = time.monotonic()

                def run(srcs):
                    if params is None:
                        return greedy(model, mode, srcs, N)
                    return beam_search(model, mode, srcs, N, params[0], params[1])

                res = run(sources) if batched else [run([s])[0] for s in sources]
                runs[(name, mode, batched)] = res
                log(f"{name:<14} {mode:<9} {'batched' if batched else 'single '} {time.monotonic() - t:6.3f}s")

    # all variants must agree token for token (and on scores up to float noise)
    failures = 0
    for name, _ in searches:
        ref = runs[(name, "with_past" if "with_past" in model.modes else "prefix", False)]
        for key, res in runs.items():
            if key[0] != name:
                continue
            for i, (a, b) in enumerate(zip(ref, res)):
                score_key = "logprob"
                if a["ids"] != b["ids"] or abs(a[score_key] - b[score_key]) > 1e-3:
                    failures += 1
                    log(f"MISMATCH {key} text {i}: {b['ids']} ({b[score_key]:.5f}) vs {a['ids']} ({a[score_key]:.5f})")
    if failures:
        log(f"{failures} mismatches between decoder variants")
        return 1

    ref_mode = "with_past" if "with_past" in model.modes else "prefix"
    cases = []
    min_margin = float("inf")
    for i, text in enumerate(TEXTS):
        g = runs[("greedy", ref_mode, False)][i]
        case = {
            "text": text,
            "source_ids": sources[i],
            "greedy_ids": g["ids"],
            "greedy_text": model.detokenize(g["ids"]),
            "greedy_hit_eos": g["eos"],
            "greedy_logprob": round(g["logprob"], 6),
            "greedy_min_margin": round(g["margin"], 6),
            "beam": [],
        }
        min_margin = min(min_margin, g["margin"])
        for (k, lp), (name, _) in zip(BEAMS, searches[1:]):
            r = runs[(name, ref_mode, False)][i]
            case["beam"].append({
                "beam_size": k,
                "length_penalty": lp,
                "ids": r["ids"],
                "text": model.detokenize(r["ids"]),
                "score": round(r["score"], 6),
                "logprob": round(r["logprob"], 6),
                "ended_with_eos": r["eos"],
                "min_margin": round(r["margin"], 6),
            })
            min_margin = min(min_margin, r["margin"])
        cases.append(case)

    greedy_ids = [tuple(c["greedy_ids"]) for c in cases]
    hit = sum(c["greedy_hit_eos"] for c in cases)
    log(f"greedy: {len(set(greedy_ids))} distinct outputs of {len(cases)}; {hit} end with EOS before "
        f"{N} tokens, {len(cases) - hit} hit max_new_tokens")
    beam_eos = sum(b["ended_with_eos"] for c in cases for b in c["beam"])
    log(f"beam: {beam_eos} of {len(cases) * len(BEAMS)} results end with EOS; "
        f"smallest decision margin {min_margin:.2e}")
    if min_margin < MARGIN_WARN:
        log(f"WARNING: a decision margin is below {MARGIN_WARN}: float32 implementations may disagree")
    if len(set(greedy_ids)) < len(cases) // 2 or hit == 0 or hit == len(cases):
        log("WARNING: greedy outputs are not varied enough (all / none hit EOS, or few distinct outputs)")

    result = {
        "model": model.m["name"],
        "files_sha256": model.m["files_sha256"],
        "onnxruntime": ort.__version__,
        "decoder_variants_checked": model.modes,
        "tokens": model.m["tokens"],
        "ids_exclude": "decoder_start token and the final EOS",
        "beam_algorithm": (
            "transformers>=4.50 _beam_search, early_stopping=False, num_return_sequences=1: per step take the "
            "best 2K of (live sum + logp), ties lower (hyp, token) first; EOS at rank < K finishes "
            "(score = sum / (len(ids)+1)^lp), EOS at rank >= K dropped; first K non-EOS are the next live set; "
            "finished set keeps best K; close a source when it has K finished and worst finished >= best live "
            "sum / steps^lp; at max_new_tokens live ones finish with score = sum / len(ids)^lp; best score wins"),
        "texts": TEXTS,
        "max_new_tokens": N,
        "cases": cases,
    }
    tmp = args.out_json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=2)
        f.write("\n")
    os.replace(tmp, args.out_json)
    log(f"wrote {args.out_json} in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
