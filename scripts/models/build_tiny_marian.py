#!/usr/bin/env python3
"""Build a TINY random-weight Marian (opus-mt) translation model laid out exactly like
a Hugging Face Optimum export (`optimum-cli export onnx --model Helsinki-NLP/opus-mt-zh-en`),
to prove the worker's decoding engine token for token without downloading real weights.

Writes OUT_DIR/{encoder_model.onnx, decoder_model.onnx, decoder_with_past_model.onnx,
decoder_model_merged.onnx, tokenizer.json, config.json, manifest.json}.

  * ONNX opset 17 / IR 8, built with onnx.helper (no torch); same input/output names,
    dtypes, dynamic axis names and cache conventions as Optimum (see marian_graph.py).
  * Weights: numpy PCG64 with a fixed seed; output bytes are deterministic for the
    same seed and the same pinned onnx / numpy versions.
  * tokenizer.json: SentencePiece-style Unigram over a made-up zh + en vocabulary
    (NFKC, Metaspace, TemplateProcessing "$A </s>"); no regex anywhere, so it loads
    in the Rust `tokenizers` crate without onig.
  * Token ids follow Marian: eos = 0, unk = 1, pad = decoder_start = vocab_size - 1.
  * Verified before the manifest is written: graphs vs an independent numpy forward
    pass, cache vs no-cache vs merged consistency, tokenizer round trip.
  * manifest.json is written last, by optimum_manifest.py (the same script users run
    on a real Optimum export).

Usage: build_tiny_marian.py OUT_DIR [--seed N] [--no-verify]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import marian_graph as mg  # noqa: E402
import optimum_manifest  # noqa: E402

MODEL_NAME = "tiny-marian-zh-en"
OPSET = 17
IR_VERSION = 8  # minimum IR for opset 17; loads in any onnxruntime >= 1.13
PRODUCER = "gatehouse scripts/models/build_tiny_marian.py"
PRODUCER_VERSION = "1"
DEFAULT_SEED = 9

EOS, UNK = 0, 1
# Weight recipe, chosen (with the seed) by a sweep so that, for the reference texts, greedy outputs
# all differ, about half end with EOS before 16 new tokens and half do not, beam search differs from
# greedy and length penalty 0.6 from 1.0 in places, and every search decision has a margin > 1e-3.
# A separate random output projection (opus-mt ties it to the embeddings): tied random weights make
# the decoder repeat its input token forever.
EOS_LOGIT_BIAS = 5.0
# The pad / decoder-start token is never generated (real Marian configs say bad_words_ids [[pad]]).
PAD_LOGIT_BIAS = -1.0e4
SHARED_STD = 0.25  # token embedding std (before the sqrt(d_model) scale)
LM_HEAD_STD = 1.0  # separate output projection std (None: tied to the embeddings, as in opus-mt)

UNDERLINE = "\u2581"
# Made-up SentencePiece vocabulary, ids 2 .. vocab-2 (0 = </s>, 1 = <unk>, last = <pad>).
PIECES_ZH = list("我你他她们是的不好人爱中国有在这大学生天今说要来去吃饭很喜欢")
PIECES_PUNCT = ["\u3002", ",", "?"]  # NFKC maps full-width ，？ to , ?
PIECES_EN = [UNDERLINE + w for w in (
    "I you he she we is are the a not good love like China people today go eat student very big have in this say"
).split()] + ["s", "."]
PIECES = [UNDERLINE] + PIECES_ZH + PIECES_PUNCT + PIECES_EN

DIMS = mg.MarianDims(
    vocab=len(PIECES) + 3, d_model=32, heads=4, ffn=64, encoder_layers=2, decoder_layers=2, max_positions=256,
)
PAD = DIMS.vocab - 1
MAX_LENGTH = 64  # config.json max_length (HF counts the decoder start token)


def log(msg: str) -> None:
    print(f"[build_tiny_marian] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------

def make_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    W: dict[str, np.ndarray] = {}
    pos = mg.sinusoidal_positions(DIMS.max_positions, DIMS.d_model)
    for name, shape in mg.weight_names(DIMS):
        if name == "model.shared.weight":
            w = rng.normal(0.0, SHARED_STD, shape)
            w[PAD] = 0.0  # nn.Embedding(padding_idx=pad) keeps the pad row at zero
        elif name.endswith("embed_positions.weight"):
            w = pos
        elif name == "lm_head.weight_T":
            if LM_HEAD_STD is None:
                w = W["model.shared.weight"].T  # tied
            else:
                w = rng.normal(0.0, LM_HEAD_STD, shape)
        elif name == "final_logits_bias":
            w = rng.normal(0.0, 0.5, shape)
            w[EOS] += EOS_LOGIT_BIAS
            w[PAD] = PAD_LOGIT_BIAS
        elif "layer_norm" in name:
            w = (1.0 if name.endswith(".weight") else 0.0) + rng.normal(0.0, 0.1, shape)
        elif name.endswith(".bias"):
            w = rng.normal(0.0, 0.1, shape)
        else:  # [in, out] projection
            w = rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape)
        W[name] = np.ascontiguousarray(w, dtype=np.float32)
    return W


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------

def make_model(graph) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def build_models(W, seed: int) -> dict[str, bytes]:
    doc = (f"Tiny random-weight Marian (opus-mt layout, Optimum export conventions), seed {seed}. "
           "Junk translations; for engine parity tests only.")
    graphs = {
        "encoder_model.onnx": mg.encoder_graph(W, DIMS, doc),
        "decoder_model.onnx": mg.decoder_graph(W, DIMS, with_past=False, doc=doc),
        "decoder_with_past_model.onnx": mg.decoder_graph(W, DIMS, with_past=True, doc=doc),
        "decoder_model_merged.onnx": mg.merged_decoder_graph(W, DIMS, doc),
    }
    return {name: make_model(g).SerializeToString() for name, g in graphs.items()}


def build_tokenizer_json() -> bytes:
    specials = {EOS: "</s>", UNK: "<unk>", PAD: "<pad>"}
    vocab: list[list] = [["</s>", 0.0], ["<unk>", 0.0]]
    for i, piece in enumerate(PIECES):
        # longer pieces score higher, so "▁I" beats "▁" + "I" like a trained unigram LM would
        vocab.append([piece, round(-3.0 - 0.01 * i + 0.5 * (len(piece) - 1), 4)])
    vocab.append(["<pad>", 0.0])
    assert len(vocab) == DIMS.vocab and len({p for p, _ in vocab}) == DIMS.vocab
    metaspace = {"type": "Metaspace", "replacement": UNDERLINE, "prepend_scheme": "always", "split": True}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, c in sorted(specials.items())
        ],
        "normalizer": {"type": "NFKC"},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [EOS], "tokens": ["</s>"]}},
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": UNK, "vocab": vocab, "byte_fallback": False},
    }
    return (json.dumps(tok, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def build_config_json() -> bytes:
    cfg = {
        "_name_or_path": MODEL_NAME,
        "architectures": ["MarianMTModel"],
        "model_type": "marian",
        "activation_function": "swish",
        "activation_dropout": 0.0,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "d_model": DIMS.d_model,
        "encoder_layers": DIMS.encoder_layers,
        "decoder_layers": DIMS.decoder_layers,
        "num_hidden_layers": DIMS.encoder_layers,
        "encoder_attention_heads": DIMS.heads,
        "decoder_attention_heads": DIMS.heads,
        "encoder_ffn_dim": DIMS.ffn,
        "decoder_ffn_dim": DIMS.ffn,
        "vocab_size": DIMS.vocab,
        "decoder_vocab_size": DIMS.vocab,
        "max_position_embeddings": DIMS.max_positions,
        "scale_embedding": True,
        "static_position_embeddings": True,
        "normalize_before": False,
        "share_encoder_decoder_embeddings": True,
        "tie_word_embeddings": LM_HEAD_STD is None,
        "is_encoder_decoder": True,
        "bos_token_id": EOS,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        "decoder_start_token_id": PAD,
        "bad_words_ids": [[PAD]],
        "max_length": MAX_LENGTH,
        "num_beams": 4,
        "transformers_version": "4.46.0",
    }
    return (json.dumps(cfg, indent=2) + "\n").encode("utf-8")


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------

def verify(out: str, W) -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = {n: ort.InferenceSession(os.path.join(out, n), so, providers=["CPUExecutionProvider"])
            for n in ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx",
                      "decoder_model_merged.onnx")}
    rng = np.random.default_rng(7)
    B, S, T = 3, 7, 5
    ids = rng.integers(2, PAD, (B, S)).astype(np.int64)
    lens = [7, 4, 1]
    mask = np.zeros((B, S), np.int64)
    for r, n in enumerate(lens):
        mask[r, :n] = 1
        ids[r, n - 1] = EOS
        ids[r, n:] = PAD
    dec = rng.integers(2, PAD, (B, T)).astype(np.int64)
    dec[:, 0] = PAD

    def close(a, b, what):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            raise SystemExit(f"verification failed: {what}: shape {a.shape} != {b.shape}")
        err = float(np.max(np.abs(a - b)))
        tol = 1e-4 + 3e-5 * float(np.max(np.abs(b)))  # float32 rounding, relative to the values' scale
        if not err <= tol:
            raise SystemExit(f"verification failed: {what}: max abs err {err:.3g} > {tol}")
        return err

    worst = 0.0
    (enc,) = sess["encoder_model.onnx"].run(None, {"input_ids": ids, "attention_mask": mask})
    worst = max(worst, close(enc, mg.np_encoder(W, DIMS, ids, mask), "encoder vs numpy"))

    names = [o.name for o in sess["decoder_model.onnx"].get_outputs()]
    full = dict(zip(names, sess["decoder_model.onnx"].run(
        None, {"input_ids": dec, "encoder_hidden_states": enc, "encoder_attention_mask": mask})))
    ref_logits, ref_presents = mg.np_decoder(W, DIMS, dec, enc.astype(np.float64), mask)
    worst = max(worst, close(full["logits"], ref_logits, "decoder logits vs numpy"))
    for i, layer in enumerate(ref_presents):
        for kind, arr in zip(mg.KINDS, layer):
            worst = max(worst, close(full[f"present.{i}.{kind}"], arr, f"present.{i}.{kind} vs numpy"))

    # cache: decoder on the first t tokens, then with_past / merged one token at a time
    first = dict(zip(names, sess["decoder_model.onnx"].run(
        None, {"input_ids": dec[:, :2], "encoder_hidden_states": enc, "encoder_attention_mask": mask})))
    past = {f"past_key_values.{k[len('present.'):]}": v for k, v in first.items() if k.startswith("present.")}
    merged_past = dict(past)
    wp_names = [o.name for o in sess["decoder_with_past_model.onnx"].get_outputs()]
    mg_names = [o.name for o in sess["decoder_model_merged.onnx"].get_outputs()]
    for t in range(2, T):
        o = dict(zip(wp_names, sess["decoder_with_past_model.onnx"].run(
            None, {"input_ids": dec[:, t:t + 1], "encoder_attention_mask": mask, **past})))
        worst = max(worst, close(o["logits"][:, 0], full["logits"][:, t], f"with_past logits step {t}"))
        for k, v in o.items():
            if k.startswith("present."):
                past[f"past_key_values.{k[len('present.'):]}"] = v
        m = dict(zip(mg_names, sess["decoder_model_merged.onnx"].run(
            None, {"input_ids": dec[:, t:t + 1], "encoder_attention_mask": mask, "encoder_hidden_states": enc,
                   "use_cache_branch": np.array([True]), **merged_past})))
        worst = max(worst, close(m["logits"][:, 0], full["logits"][:, t], f"merged(cache) logits step {t}"))
        for i in range(DIMS.decoder_layers):
            for kind in ("key", "value"):
                shape = m[f"present.{i}.encoder.{kind}"].shape
                if shape != (0, DIMS.heads, 1, DIMS.head_dim):
                    raise SystemExit(f"merged with-past present.{i}.encoder.{kind} shape {shape}, expected empty")
                merged_past[f"past_key_values.{i}.decoder.{kind}"] = m[f"present.{i}.decoder.{kind}"]
    dummy = {f"past_key_values.{i}.{kind}": np.zeros((B, DIMS.heads, 1, DIMS.head_dim), np.float32)
             for i in range(DIMS.decoder_layers) for kind in mg.KINDS}
    m = dict(zip(mg_names, sess["decoder_model_merged.onnx"].run(
        None, {"input_ids": dec, "encoder_attention_mask": mask, "encoder_hidden_states": enc,
               "use_cache_branch": np.array([False]), **dummy})))
    for k in names:
        worst = max(worst, close(m[k], full[k], f"merged(no cache) {k}"))

    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    for text in ("我爱中国", "I love China.", "今天我们去吃饭。"):
        enc_ids = tok.encode(text).ids
        if enc_ids[-1] != EOS or UNK in enc_ids:
            raise SystemExit(f"tokenizer: {text!r} -> {enc_ids}")
        back = tok.decode(enc_ids, skip_special_tokens=True)
        if back != text:
            raise SystemExit(f"tokenizer round trip: {text!r} -> {enc_ids} -> {back!r}")
    if UNK not in tok.encode("大家好").ids:
        raise SystemExit("tokenizer: unknown character did not map to <unk>")
    log(f"verified: graphs vs numpy, cache / merged consistency (max abs err {worst:.2e}); tokenizer round trip")


# --------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", help="output directory, e.g. models/tiny-marian-zh-en")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime / numpy verification")
    args = ap.parse_args()

    start = time.monotonic()
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # written last: no manifest == incomplete build

    log(f"d_model={DIMS.d_model} heads={DIMS.heads} ffn={DIMS.ffn} layers={DIMS.encoder_layers}+"
        f"{DIMS.decoder_layers} vocab={DIMS.vocab} (eos={EOS} unk={UNK} pad=decoder_start={PAD}) seed={args.seed}")
    W = make_weights(args.seed)
    files = build_models(W, args.seed)
    files["tokenizer.json"] = build_tokenizer_json()
    files["config.json"] = build_config_json()
    for name, data in files.items():
        _write_atomic(os.path.join(out, name), data)
        log(f"wrote {name} ({len(data)} B)")

    if not args.no_verify:
        verify(out, W)

    optimum_manifest.write_manifest(
        out,
        source_lang="zh",
        target_lang="en",
        name=MODEL_NAME,
        description="Tiny random-weight Marian (opus-mt-zh-en layout, Optimum ONNX export conventions); "
                    "junk output, for decoding-engine parity tests only",
        source=f"generated by scripts/models/build_tiny_marian.py (seed {args.seed})",
        license="Apache-2.0 (generated test fixture)",
    )
    log(f"done in {time.monotonic() - start:.1f}s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
