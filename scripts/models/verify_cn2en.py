#!/usr/bin/env python3
"""Verify <models>/cn2en-gru/ against the original package cn2en==0.0.118.

1. reference.json equals a fresh numpy decode (numpy re-implementation of
   cn2en/model.py from the PyTorch weights, float32, no onnxruntime).
2. encoder.onnx + decoder.onnx step loop under onnxruntime give the same
   greedy output ids as the numpy reference for every reference input, one at
   a time and batched (right-padded with tokens.pad + sequence_lens; also with
   random padding ids, which sequence_lens must make irrelevant); log-prob and
   hidden-state differences are reported and bounded. Also a seeded set of
   random inputs (near-tie divergences are reported, not failed).
3. source_tokenizer.json (Python `tokenizers`, <unk> dropped, EOS appended)
   gives the same source ids as model.py's rule for all reference inputs and
   a few thousand seeded random strings; target_tokenizer.json maps every id
   to index2word.
Also checks manifest.json (exact content, files_sha256) and the ONNX I/O
signatures, then prints input -> output and a plausibility count.

Exit status 0 = all checks passed. Usage:
  verify_cn2en.py --wheel WHEEL --model-dir MODELS_DIR/cn2en-gru
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cn2en_package as cp  # noqa: E402
from build_cn2en import FILES, MANIFEST_TEMPLATE, REFERENCE_TEXTS, UNK_TOKEN, reference_cases  # noqa: E402

TOL_LOGP = 1e-3  # onnx vs numpy log-probs along the greedy path (float32, 256-dim GRU)
TOL_STATE = 1e-4  # encoder final state / outputs
TIE_TOL = 1e-3  # fuzz decodes may diverge only where numpy's top-2 gap is below this

FUZZ_SEED = 20251124
FUZZ_TEXTS = 4000  # token-id equality
FUZZ_MODEL_TEXTS = 96  # of those, also onnx vs numpy decode (batched)
FUZZ_MODEL_MAX_IDS = 64

# ~20 very short everyday sentences and what a plausible English rendering
# looks like (judgement: a correct, if terse, translation; no garbage or
# repeated words). Informational: does not fail the build.
PLAUSIBLE = [
    ("我不知道。", r"i (don't|do not) know"),
    ("你好。", r"(hello|hi)( there)?"),
    ("谢谢你。", r"thank (you|s)( very much| so much)?"),
    ("我很高兴。", r"i('m| am) (very |so |really )?(happy|glad)"),
    ("他是我的朋友。", r"(he's|he is) (my|a) friend( of mine)?"),
    ("我爱你。", r"i love you"),
    ("我饿了。", r"i('m| am) (very |so )?hungry"),
    ("我累了。", r"i('m| am) (very |so )?tired"),
    ("今天很冷。", r"(it('s| is) (very |really |so )?cold( today)?|today is (very )?cold)"),
    ("我喜欢猫。", r"i (like|love) cats"),
    ("你叫什么名字？", r"what('s| is) your name"),
    ("我是学生。", r"i('m| am) a student"),
    ("请坐。", r"(please )?(sit down|have a seat|take a seat|be seated)( please)?"),
    ("我们走吧。", r"(let's|let us) go"),
    ("这是我的书。", r"(this|it) is my book"),
    ("他很高。", r"(he's|he is) (very |really |so )?tall"),
    ("再见！", r"(good ?bye|bye|see you( later| again| soon)?)"),
    ("我想回家。", r"i (want to|would like to|'d like to|wanna) go (back )?home"),
    ("汤姆在哪里？", r"where('s| is) tom"),
    ("你几岁？", r"how old are you"),
]


def fuzz_texts(lang: cp.Lang, n: int, seed: int) -> list[str]:
    """Deterministic random strings mixing in-vocabulary CJK characters and
    words (also upper-cased), out-of-vocabulary CJK, ASCII letters/digits/
    punctuation, full-width forms, odd whitespace, case-mapping traps, emoji."""
    rng = random.Random(seed)
    words = sorted(w for w in lang.word2index if w)
    oov_cjk = [chr(c) for c in range(0x4E00, 0x9FA6) if chr(c) not in lang.word2index]
    alphabet = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
        + list("，。？！：；、“”‘’「」《》（）－％＂·•﹐…—～")
        + [" ", " ", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000",
           "\u200b", "\ufeff", "\u200e"]
        + ["\u0130", "\u212a", "\u03a3", "\u1e9e", "\u01c5", "\uff21", "\uff54", "\u00c9", "\u0301", "\u2126"]
        + ["\U0001F600", "\U0001F389", "\U00021861", "\u3943", "\ud7a3", "\u0410", "\u05d0"]
    )
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 24)):
            r = rng.random()
            if r < 0.45:
                w = rng.choice(words)
                parts.append(w.upper() if rng.random() < 0.2 else w.title() if rng.random() < 0.1 else w)
            elif r < 0.55:
                parts.append(rng.choice(oov_cjk))
            else:
                parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))))
        out.append("".join(parts) if rng.random() < 0.6 else " ".join(parts))
    return out


def short(s: str, n: int) -> str:
    r = repr(s)[1:-1]
    return r if len(r) <= n else r[: n - 1] + "…"


def pad_to(s: str, width: int) -> str:
    # CJK characters take two terminal columns
    w = sum(2 if ord(c) >= 0x1100 and not (0xFE00 <= ord(c) <= 0xFE0F) else 1 for c in s)
    return s + " " * max(0, width - w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True)
    ap.add_argument("--model-dir", required=True, help=".../models/cn2en-gru")
    args = ap.parse_args()

    import onnxruntime as ort
    from tokenizers import Tokenizer

    failures: list[str] = []

    def check(ok: bool, msg: str) -> bool:
        if not ok:
            failures.append(msg)
            print(f"FAIL: {msg}")
        return ok

    mdir = args.model_dir
    pkg = cp.load_package(args.wheel)
    W = pkg.weights
    n_in, n_out = pkg.input_lang.n_words, pkg.output_lang.n_words

    # ---------------- manifest ----------------
    with open(os.path.join(mdir, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    expected_keys = list(MANIFEST_TEMPLATE) + ["files_sha256"]
    check(list(manifest) == expected_keys, f"manifest keys {list(manifest)} != {expected_keys}")
    for k, v in MANIFEST_TEMPLATE.items():
        check(manifest.get(k) == v, f"manifest[{k!r}] = {manifest.get(k)!r}, expected {v!r}")
    hashes = manifest.get("files_sha256", {})
    check(sorted(hashes) == sorted(FILES), f"files_sha256 lists {sorted(hashes)}, expected {sorted(FILES)}")
    for name in FILES:
        with open(os.path.join(mdir, name), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        check(hashes.get(name) == digest, f"files_sha256[{name}] {hashes.get(name)} != actual {digest}")
    tokens = manifest["tokens"]
    sos, eos, pad = tokens["decoder_start"], tokens["eos"], tokens["pad"]
    max_new = manifest["max_new_tokens"]

    # ---------------- 1. reference.json vs fresh numpy decode ----------------
    with open(os.path.join(mdir, "reference.json"), encoding="utf-8") as f:
        reference = json.load(f)
    fresh = reference_cases(pkg)
    check(reference.get("cases") == fresh, "reference.json cases differ from a fresh numpy decode")
    check(reference.get("max_new_tokens") == max_new, "reference.json max_new_tokens != manifest")
    cases = reference["cases"]
    texts = [c["text"] for c in cases]
    check(texts == REFERENCE_TEXTS, "reference.json texts differ from REFERENCE_TEXTS")
    for c in cases:
        check(c["source_ids"] == cp.source_ids(pkg.input_lang, c["text"]), f"source_ids for {c['text']!r}")
        check(c["output_text"] == " ".join(c["output_tokens"]), f"output_text for {c['text']!r}")
        check(c["output_tokens"] == cp.output_tokens(pkg.output_lang, c["output_ids"]), f"output_tokens {c['text']!r}")
    ref_decodes = [cp.greedy_decode(W, c["source_ids"], max_new) for c in cases]

    # ---------------- 2. onnxruntime ----------------
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    enc = ort.InferenceSession(os.path.join(mdir, manifest["encoder"]["file"]), so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(mdir, manifest["decoder"]["file"]), so, providers=["CPUExecutionProvider"])

    def sig(sess):
        return ([(i.name, i.type, i.shape) for i in sess.get_inputs()],
                [(o.name, o.type, o.shape) for o in sess.get_outputs()])

    H = cp.HIDDEN
    want_enc = ([("input_ids", "tensor(int64)", ["batch", "sequence"]), ("sequence_lens", "tensor(int32)", ["batch"])],
                [("encoder_outputs", "tensor(float)", ["batch", "sequence", H]),
                 ("encoder_final_state", "tensor(float)", [1, "batch", H])])
    want_dec = ([("input_ids", "tensor(int64)", ["batch", 1]), ("hidden", "tensor(float)", [1, "batch", H])],
                [("logits", "tensor(float)", ["batch", 1, n_out]), ("hidden_out", "tensor(float)", [1, "batch", H])])
    check(sig(enc) == want_enc, f"encoder signature {sig(enc)} != {want_enc}")
    check(sig(dec) == want_dec, f"decoder signature {sig(dec)} != {want_dec}")

    def ort_decode(srcs: list[list[int]], pad_ids=None):
        """Batched greedy decode exactly like the engine: right-pad, sequence_lens,
        one decoder step per token; finished rows are fed EOS and ignored."""
        B, T = len(srcs), max(len(s) for s in srcs)
        ids = np.full((B, T), pad, dtype=np.int64)
        if pad_ids is not None:
            ids[:] = pad_ids[:, :T]
        for b, s in enumerate(srcs):
            ids[b, : len(s)] = s
        lens = np.array([len(s) for s in srcs], dtype=np.int32)
        enc_out, h = enc.run(["encoder_outputs", "encoder_final_state"], {"input_ids": ids, "sequence_lens": lens})
        tok = np.full((B, 1), sos, dtype=np.int64)
        done = np.zeros(B, dtype=bool)
        outs: list[list[int]] = [[] for _ in range(B)]
        steps: list[list[np.ndarray]] = [[] for _ in range(B)]
        for _ in range(max_new):
            logits, h = dec.run(["logits", "hidden_out"], {"input_ids": tok, "hidden": h})
            lp = logits[:, 0, :]
            nxt = lp.argmax(axis=-1)
            for b in range(B):
                if done[b]:
                    continue
                steps[b].append(lp[b].copy())
                if nxt[b] == eos:
                    done[b] = True
                else:
                    outs[b].append(int(nxt[b]))
            if done.all():
                break
            tok = np.where(done, eos, nxt).astype(np.int64)[:, None]
        return outs, steps, enc_out, h, lens

    def compare(srcs, decodes, outs, steps, enc_out, label, allow_ties=False):
        n_mismatch = n_ties = 0
        d_logp = d_enc = 0.0
        for b, (src, d) in enumerate(zip(srcs, decodes)):
            # steps up to the first diverging one see identical inputs
            k = next((i for i, (x, y) in enumerate(zip(outs[b], d.output_ids)) if x != y),
                     min(len(outs[b]), len(d.output_ids)))
            for t in range(min(k + 1, len(d.log_probs), len(steps[b]))):
                d_logp = max(d_logp, float(np.abs(steps[b][t] - d.log_probs[t]).max()))
            np_out, _ = cp.encode(W, src)
            d_enc = max(d_enc, float(np.abs(enc_out[b, : len(src)] - np_out).max()))
            if outs[b] != d.output_ids:
                # a near-tie in the reference at the first diverging step is tolerated for fuzz
                lp = d.log_probs[k]
                top2 = np.sort(lp)[-2:]
                if allow_ties and float(top2[1] - top2[0]) < TIE_TOL:
                    n_ties += 1
                else:
                    n_mismatch += 1
                    check(False, f"{label}: onnx ids {outs[b]} != numpy {d.output_ids} for source {src}")
        return n_mismatch, n_ties, d_logp, d_enc

    srcs = [c["source_ids"] for c in cases]
    # one at a time
    single_outs, single_dlogp, single_denc, single_dfinal = [], 0.0, 0.0, 0.0
    n_mm_single = 0
    for src, d in zip(srcs, ref_decodes):
        outs, steps, enc_out, _, _ = ort_decode([src])
        mm, _, dl, de = compare([src], [d], outs, steps, enc_out, "single")
        n_mm_single += mm
        single_dlogp, single_denc = max(single_dlogp, dl), max(single_denc, de)
        single_outs.append(outs[0])
        _, h0 = enc.run(None, {"input_ids": np.array([src], np.int64), "sequence_lens": np.array([len(src)], np.int32)})[0:2]
        single_dfinal = max(single_dfinal, float(np.abs(h0[0, 0] - cp.encode(W, src)[1]).max()))
    check(single_dlogp <= TOL_LOGP, f"single: onnx vs numpy log-probs differ by {single_dlogp:.2e}")
    check(single_denc <= TOL_STATE and single_dfinal <= TOL_STATE,
          f"single: encoder outputs/final state differ by {single_denc:.2e}/{single_dfinal:.2e}")

    # batched, right-padded with tokens.pad
    b_outs, b_steps, b_enc, _, b_lens = ort_decode(srcs)
    n_mm_batch, _, batch_dlogp, batch_denc = compare(srcs, ref_decodes, b_outs, b_steps, b_enc, "batched")
    check(batch_dlogp <= TOL_LOGP, f"batched: onnx vs numpy log-probs differ by {batch_dlogp:.2e}")
    check(batch_denc <= TOL_STATE, f"batched: encoder outputs differ by {batch_denc:.2e}")
    pad_zero = all(float(np.abs(b_enc[b, b_lens[b]:]).max(initial=0.0)) == 0.0 for b in range(len(srcs)))
    # batched, padded with random ids: sequence_lens must make padding irrelevant
    rng = np.random.default_rng(FUZZ_SEED)
    r_outs, r_steps, r_enc, _, _ = ort_decode(srcs, pad_ids=rng.integers(0, n_in, size=(len(srcs), 128)))
    n_mm_rand, _, rand_dlogp, _ = compare(srcs, ref_decodes, r_outs, r_steps, r_enc, "batched/random-pad")
    check(rand_dlogp <= TOL_LOGP, f"batched/random-pad: log-probs differ by {rand_dlogp:.2e}")
    # batched in uneven chunks (batch composition must not matter)
    n_mm_chunks = 0
    for lo, hi in [(0, 7), (7, 8), (8, 21), (21, 40)]:
        c_outs, c_steps, c_enc, _, _ = ort_decode(srcs[lo:hi])
        mm, _, dl, _ = compare(srcs[lo:hi], ref_decodes[lo:hi], c_outs, c_steps, c_enc, f"chunk {lo}:{hi}")
        n_mm_chunks += mm
        check(dl <= TOL_LOGP, f"chunk {lo}:{hi}: log-probs differ by {dl:.2e}")
    ref_margin = min(d.min_margin for d in ref_decodes)
    max_len_out = max(len(d.output_ids) for d in ref_decodes)
    n_hit_max = sum(d.stop == "max_new_tokens" for d in ref_decodes)

    # ---------------- 3. tokenizers ----------------
    src_tok = Tokenizer.from_file(os.path.join(mdir, manifest["tokenizers"]["source"]))
    tgt_tok = Tokenizer.from_file(os.path.join(mdir, manifest["tokenizers"]["target"]))
    unk_id = src_tok.token_to_id(UNK_TOKEN)
    check(unk_id == n_in, f"source {UNK_TOKEN} id {unk_id} != n_words {n_in}")
    check(tgt_tok.token_to_id(UNK_TOKEN) == n_out, f"target {UNK_TOKEN} id != n_words {n_out}")
    bad_tgt = [i for i in range(n_out) if tgt_tok.id_to_token(i) != pkg.output_lang.index2word[i]]
    check(not bad_tgt, f"target id_to_token differs from index2word at {bad_tgt[:10]}")
    bad_src = [w for w, i in pkg.input_lang.word2index.items() if w and src_tok.token_to_id(w) != i]
    check(not bad_src, f"source token_to_id differs from word2index for {bad_src[:10]}")
    # the source tokenizer applied to each vocabulary word yields exactly that word
    vocab_roundtrip = [w for w, i in pkg.input_lang.word2index.items()
                       if w and src_tok.encode(w, add_special_tokens=False).ids != [i]]
    check(not vocab_roundtrip, f"vocabulary words not tokenized to themselves: {vocab_roundtrip[:10]}")

    def hf_source_ids(text: str) -> list[int]:
        return [i for i in src_tok.encode(text, add_special_tokens=False).ids if i != unk_id] + [eos]

    n_tok_ref = 0
    for c in cases:
        if not check(hf_source_ids(c["text"]) == c["source_ids"], f"tokenizer ids differ for {c['text']!r}"):
            n_tok_ref += 1
    fuzz = fuzz_texts(pkg.input_lang, FUZZ_TEXTS, FUZZ_SEED)
    n_fuzz_mm = 0
    fuzz_tokens = 0
    for t in fuzz:
        a, b = cp.source_ids(pkg.input_lang, t), hf_source_ids(t)
        fuzz_tokens += len(a) - 1
        if a != b:
            n_fuzz_mm += 1
            if n_fuzz_mm <= 5:
                check(False, f"fuzz: token ids differ for {t!r}: rule {a} tokenizer.json {b}")
    check(n_fuzz_mm == 0, f"fuzz: {n_fuzz_mm}/{len(fuzz)} strings with differing source ids")

    # fuzz decodes: numpy vs onnxruntime, batched
    fz_srcs = [s for s in (hf_source_ids(t) for t in fuzz) if len(s) <= FUZZ_MODEL_MAX_IDS][:FUZZ_MODEL_TEXTS]
    fz_dec = [cp.greedy_decode(W, s, max_new) for s in fz_srcs]
    f_outs, f_steps, f_enc, _, _ = ort_decode(fz_srcs)
    n_mm_fuzz, n_ties_fuzz, fuzz_dlogp, fuzz_denc = compare(fz_srcs, fz_dec, f_outs, f_steps, f_enc, "fuzz",
                                                            allow_ties=True)
    check(fuzz_dlogp <= TOL_LOGP, f"fuzz: log-probs differ by {fuzz_dlogp:.2e}")
    n_fz_max = sum(d.stop == "max_new_tokens" for d in fz_dec)

    # ---------------- report ----------------
    print()
    print(f"{'input':34} {'#src':>4}  output (onnxruntime, batched)")
    print("-" * 96)
    for c, o in zip(cases, b_outs):
        out_text = " ".join(cp.output_tokens(pkg.output_lang, o))
        flag = "" if o == c["output_ids"] else "   <-- MISMATCH"
        print(f"{pad_to(short(c['text'], 32), 34)} {len(c['source_ids']):4d}  {out_text}{flag}")
    print("-" * 96)
    by_text = {c["text"]: c["output_text"] for c in cases}
    n_plaus = 0
    print("plausibility (very short everyday sentences):")
    for text, pattern in PLAUSIBLE:
        out = by_text.get(text)
        if out is None:
            out = " ".join(cp.output_tokens(pkg.output_lang, cp.greedy_decode(
                W, cp.source_ids(pkg.input_lang, text), max_new).output_ids))
        ok = re.fullmatch(rf"{pattern}( ?[.!?])*", out.strip()) is not None
        n_plaus += ok
        print(f"  {'ok ' if ok else ' - '} {pad_to(text, 16)} {out}")
    print("-" * 96)
    print(f"reference inputs:                               {len(cases)} (longest output {max_len_out} tokens, "
          f"{n_hit_max} hit max_new_tokens={max_new})")
    print(f"onnx vs numpy greedy ids, one at a time:        {len(cases) - n_mm_single}/{len(cases)} identical")
    print(f"onnx vs numpy greedy ids, batched (pad={pad}):      {len(cases) - n_mm_batch}/{len(cases)} identical")
    print(f"onnx vs numpy greedy ids, batched random pad:   {len(cases) - n_mm_rand}/{len(cases)} identical")
    print(f"onnx vs numpy greedy ids, uneven batches:       {len(cases) - n_mm_chunks}/{len(cases)} identical")
    print(f"log-prob max |diff| single / batched / rndpad:  {single_dlogp:.3e} / {batch_dlogp:.3e} / "
          f"{rand_dlogp:.3e}  (tol {TOL_LOGP:g})")
    print(f"encoder outputs / final state max |diff|:       {max(single_denc, batch_denc):.3e} / {single_dfinal:.3e}"
          f"  (tol {TOL_STATE:g}); padded encoder_outputs zero: {pad_zero}")
    print(f"smallest top-1/top-2 log-prob gap (reference):  {ref_margin:.3e}")
    print(f"fuzz decodes ({len(fz_srcs)}, batched): ids identical {len(fz_srcs) - n_mm_fuzz - n_ties_fuzz}, "
          f"near-tie divergences {n_ties_fuzz}, mismatches {n_mm_fuzz}; log-prob max |diff| {fuzz_dlogp:.3e}; "
          f"{n_fz_max} hit max_new_tokens")
    print(f"source tokenizer vs model.py rule:              {len(cases) - n_tok_ref}/{len(cases)} reference inputs, "
          f"{len(fuzz) - n_fuzz_mm}/{len(fuzz)} fuzz strings ({fuzz_tokens} in-vocab tokens, seed {FUZZ_SEED})")
    print(f"vocab: source n_words {n_in} (+{UNK_TOKEN} {unk_id}), target n_words {n_out} (+{UNK_TOKEN} {n_out})")
    print(f"plausible outputs:                              {n_plaus}/{len(PLAUSIBLE)} very short sentences")
    print(f"我不知道。 -> {by_text['我不知道。']!r}")
    if failures:
        print(f"\nVERIFICATION FAILED: {len(failures)} problem(s)")
        return 1
    print("\nverification OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
