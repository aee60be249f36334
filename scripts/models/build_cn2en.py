#!/usr/bin/env python3
"""Convert the GRU seq2seq zh->en model of PyPI cn2en==0.0.118 into
<out>/cn2en-gru/{encoder.onnx, decoder.onnx, source_tokenizer.json,
target_tokenizer.json, reference.json, manifest.json} following
docs/SEQ2SEQ_MANIFEST.md (decoder state "recurrent").

Uses only onnx and numpy (no torch): the PyTorch checkpoint and the pickled
vocabularies are read by restricted unpicklers (cn2en_package.py).
reference.json holds greedy decodes of a fixed list of inputs computed by the
numpy re-implementation of cn2en/model.py (not by onnxruntime). Output bytes
are deterministic for the same wheel and the same pinned onnx/numpy versions.

Usage: build_cn2en.py --wheel WHEEL --out-dir MODELS_DIR
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
import cn2en_package as cp  # noqa: E402

MODEL_NAME = "cn2en-gru"
OPSET = 17
IR_VERSION = 8  # minimum IR for opset 17; loads in any onnxruntime >= 1.13
UNK_TOKEN = "<unk>"
PRODUCER = "gatehouse scripts/models/build_cn2en.py"
PRODUCER_VERSION = "1"

# model.py has no source length limit and caps greedy decoding at 1000 steps
# (a runaway guard, not a training length); the manifest uses the contract's
# defaults instead.
MAX_SOURCE_TOKENS = 64
MAX_NEW_TOKENS = 40

FILES = ["encoder.onnx", "decoder.onnx", "source_tokenizer.json", "target_tokenizer.json", "reference.json"]

# [^a-z'" ] : every char that model.py's normalize() surrounds with spaces.
SOURCE_SPLIT_REGEX = "[^a-z'\" ]"

MANIFEST_TEMPLATE = {
    "schema_version": 1,
    "name": MODEL_NAME,
    "task": "translation",
    "source_lang": "zh",
    "target_lang": "en",
    "description": (
        "Chinese to English GRU encoder-decoder without attention (Embedding 256 + GRU 256, "
        "greedy decoding), word-level: one token per CJK character/punctuation mark, "
        "ASCII letter runs as words; output tokens are lowercase English words and punctuation"
    ),
    "source": f"PyPI {cp.PACKAGE}=={cp.VERSION}",
    "license": "MIT per package metadata (LICENSE file is a template); training data appears to be Tatoeba, CC-BY 2.0 FR",
    "tokenizers": {"source": "source_tokenizer.json", "target": "target_tokenizer.json"},
    "source_unknown": "drop",
    "append_eos_to_source": True,
    "detokenize": "join_spaces",
    "tokens": {"decoder_start": cp.SOS_TOKEN, "eos": cp.EOS_TOKEN, "pad": cp.EOS_TOKEN},
    "max_source_tokens": MAX_SOURCE_TOKENS,
    "max_new_tokens": MAX_NEW_TOKENS,
    "encoder": {
        "file": "encoder.onnx",
        "inputs": {"input_ids": "input_ids", "attention_mask": None, "sequence_lengths": "sequence_lens"},
        "outputs": {"hidden_states": "encoder_outputs"},
    },
    "decoder": {
        "state": "recurrent",
        "file": "decoder.onnx",
        "with_past_file": None,
        "merged_file": None,
        "inputs": {"input_ids": "input_ids", "encoder_hidden_states": None,
                   "encoder_attention_mask": None, "use_cache_branch": None},
        "outputs": {"logits": "logits"},
        "logits": "log_probs",
        "recurrent": {"initial": "encoder_final_state", "input": "hidden", "output": "hidden_out"},
        "past": None,
    },
    # "files_sha256" appended last
}

# Fixed reference inputs (reference.json). Every one stays well below
# MAX_SOURCE_TOKENS so truncation semantics never matter.
REFERENCE_TEXTS = [
    # very short everyday sentences
    "我不知道。",
    "你好。",
    "谢谢你。",
    "我很高兴。",
    "他是我的朋友。",
    "我爱你。",
    "我饿了。",
    "我累了。",
    "今天很冷。",
    "我喜欢猫。",
    "你叫什么名字？",
    "我是学生。",
    "请坐。",
    "我们走吧。",
    "这是我的书。",
    "他很高。",
    "再见！",
    "我想回家。",
    "汤姆在哪里？",
    "你几岁？",
    "湯姆不在床上。",  # package README example (traditional characters)
    # longer
    "我昨天在图书馆看了一本很有意思的书。",
    "如果明天下雨的话，我们就不去公园了。",
    "汤姆和玛丽上个星期去了北京，他们在那里住了三天。",
    "你能告诉我去火车站怎么走吗？",
    # unknown characters, digits, emoji, punctuation, Latin letters, whitespace
    "我有3个苹果和12本书。",
    "我很喜欢这个😀！",
    "他在用iPad和Facebook。",
    "Tom是我的朋友。",
    "HELLO 你好 World",
    "  我  不  知  道  ",
    "我不知道\n你知道吗？",
    "“你好”，他说。",
    "龘龘龘。",  # rare characters (out of vocabulary)
    "。。。！？",
    "1234567890",
    "abc xyz",
    "😀🎉",  # nothing left after dropping unknown characters
    "Ｔｏｍ是医生。",  # fullwidth Latin (out of vocabulary)
    "妈妈，我回来了！",
]


def log(msg: str) -> None:
    print(f"[build_cn2en] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# ONNX graphs
# --------------------------------------------------------------------------

def torch_gru_to_onnx(g: cp.GruWeights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch GRU (gates r, z, n) -> ONNX GRU W [1,3H,E], R [1,3H,H], B [1,6H]
    (gates z, r, h; linear_before_reset=1 matches PyTorch's n-gate)."""

    def reorder(m: np.ndarray) -> np.ndarray:
        r, z, n = np.split(m, 3, axis=0)
        return np.concatenate([z, r, n], axis=0)

    W = reorder(g.w_ih)[None]
    R = reorder(g.w_hh)[None]
    B = np.concatenate([reorder(g.b_ih), reorder(g.b_hh)])[None]
    return W, R, B


def _init(name: str, arr, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr, dtype=dtype), name)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def build_encoder(w: cp.Cn2enWeights) -> onnx.ModelProto:
    H = cp.HIDDEN
    W, R, B = torch_gru_to_onnx(w.encoder)
    inits = [
        _init("embedding.weight", w.encoder.embedding),
        _init("gru.W", W),
        _init("gru.R", R),
        _init("gru.B", B),
        _init("axis1", [1], np.int64),
    ]
    nodes = [
        helper.make_node("Gather", ["embedding.weight", "input_ids"], ["embedded"], name="embedding", axis=0),
        helper.make_node("Transpose", ["embedded"], ["embedded_tbh"], name="to_time_major", perm=[1, 0, 2]),
        # No initial_h: zero state like EncoderRNN.initHidden(). sequence_lens
        # makes Y_h the state after each row's last valid token (the PyTorch
        # model sees no padding) and zeroes Y at padded steps.
        helper.make_node(
            "GRU", ["embedded_tbh", "gru.W", "gru.R", "gru.B", "sequence_lens"], ["gru_y", "encoder_final_state"],
            name="gru", hidden_size=H, linear_before_reset=1,
        ),
        helper.make_node("Squeeze", ["gru_y", "axis1"], ["gru_y_tbh"], name="drop_direction_axis"),
        helper.make_node("Transpose", ["gru_y_tbh"], ["encoder_outputs"], name="to_batch_major", perm=[1, 0, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "cn2en_encoder",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["batch"]),
        ],
        outputs=[
            helper.make_tensor_value_info("encoder_outputs", TensorProto.FLOAT, ["batch", "sequence", H]),
            helper.make_tensor_value_info("encoder_final_state", TensorProto.FLOAT, [1, "batch", H]),
        ],
        initializer=inits,
        doc_string=(
            f"cn2en encoder (PyPI {cp.PACKAGE}=={cp.VERSION}): Embedding({w.encoder.embedding.shape[0]}, {H}) -> GRU({H}). "
            "input_ids: source word ids + EOS(1), right-padded; sequence_lens: valid lengths (>= 1). "
            "encoder_final_state seeds the decoder's hidden state; encoder_outputs (zero at padding) "
            "are not used by this attention-free model."
        ),
    )
    return _finish(graph)


def build_decoder(w: cp.Cn2enWeights) -> onnx.ModelProto:
    H = cp.HIDDEN
    V = w.out_weight.shape[0]
    W, R, B = torch_gru_to_onnx(w.decoder)
    inits = [
        _init("embedding.weight", w.decoder.embedding),
        _init("gru.W", W),
        _init("gru.R", R),
        _init("gru.B", B),
        _init("out.weight", w.out_weight),
        _init("out.bias", w.out_bias),
        _init("axis0", [0], np.int64),
        _init("axis1", [1], np.int64),
    ]
    nodes = [
        helper.make_node("Gather", ["embedding.weight", "input_ids"], ["embedded"], name="embedding", axis=0),
        helper.make_node("Relu", ["embedded"], ["embedded_relu"], name="relu"),
        helper.make_node("Transpose", ["embedded_relu"], ["embedded_tbh"], name="to_time_major", perm=[1, 0, 2]),
        helper.make_node(
            "GRU", ["embedded_tbh", "gru.W", "gru.R", "gru.B", "", "hidden"], ["", "hidden_out"],
            name="gru", hidden_size=H, linear_before_reset=1,
        ),
        # one step: the GRU output equals the new hidden state
        helper.make_node("Squeeze", ["hidden_out", "axis0"], ["gru_out"], name="drop_layer_axis"),
        helper.make_node("Gemm", ["gru_out", "out.weight", "out.bias"], ["scores"], name="out", transB=1),
        helper.make_node("LogSoftmax", ["scores"], ["log_probs"], name="log_softmax", axis=-1),
        helper.make_node("Unsqueeze", ["log_probs", "axis1"], ["logits"], name="add_step_axis"),
    ]
    graph = helper.make_graph(
        nodes,
        "cn2en_decoder_step",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 1]),
            helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, "batch", H]),
        ],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, V]),
            helper.make_tensor_value_info("hidden_out", TensorProto.FLOAT, [1, "batch", H]),
        ],
        initializer=inits,
        doc_string=(
            f"cn2en decoder, one greedy step (PyPI {cp.PACKAGE}=={cp.VERSION}): Embedding({V}, {H}) -> ReLU -> "
            f"GRU({H}) -> Linear({H}, {V}) -> LogSoftmax. input_ids: previous token (SOS=0 first); "
            "hidden: encoder_final_state first, then hidden_out. logits are log-probabilities."
        ),
    )
    return _finish(graph)


# --------------------------------------------------------------------------
# tokenizer.json files (Hugging Face tokenizers format, written by hand so
# the bytes are deterministic)
# --------------------------------------------------------------------------

def _dump_json(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def build_source_tokenizer(lang: cp.Lang) -> bytes:
    vocab = {}
    for i in range(2, lang.n_words):
        w = lang.index2word[i]
        if w == "":
            continue  # model.py drops empty words; can never be produced
        if w.lower() != w or (len(w) > 1 and any(c not in cp.KEEP_CHARS or c == " " for c in w)) or w == " ":
            raise SystemExit(f"source word {w!r} can never be produced by normalize()")
        vocab[w] = i
    if UNK_TOKEN in vocab:
        raise SystemExit(f"{UNK_TOKEN} collides with a source word")
    vocab[UNK_TOKEN] = lang.n_words  # out of the embedding range; dropped by consumers
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": SOURCE_SPLIT_REGEX}, "behavior": "Isolated", "invert": False},
                {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False},
            ],
        },
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK_TOKEN},
    }
    return _dump_json(tok)


def build_target_tokenizer(lang: cp.Lang) -> bytes:
    # Every id of index2word, incl. SOS (0), EOS (1) and the empty word, so
    # id_to_token covers the whole logits range.
    vocab = {lang.index2word[i]: i for i in range(lang.n_words)}
    if len(vocab) != lang.n_words:
        raise SystemExit("target index2word has duplicate words")
    if UNK_TOKEN in vocab:
        raise SystemExit(f"{UNK_TOKEN} collides with a target word")
    vocab[UNK_TOKEN] = lang.n_words
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK_TOKEN},
    }
    return _dump_json(tok)


# --------------------------------------------------------------------------
# reference.json (numpy decode)
# --------------------------------------------------------------------------

def reference_cases(pkg: cp.Cn2enPackage) -> list[dict]:
    cases = []
    for text in REFERENCE_TEXTS:
        src = cp.source_ids(pkg.input_lang, text)
        if len(src) > MAX_SOURCE_TOKENS:
            raise SystemExit(f"reference input too long ({len(src)} ids): {text!r}")
        d = cp.greedy_decode(pkg.weights, src, MAX_NEW_TOKENS)
        toks = cp.output_tokens(pkg.output_lang, d.output_ids)
        cases.append({
            "text": text,
            "source_ids": src,
            "output_ids": d.output_ids,
            "output_tokens": toks,
            "output_text": " ".join(toks),
            "stop": d.stop,
        })
    return cases


def build_reference(pkg: cp.Cn2enPackage) -> bytes:
    head = {
        "schema_version": 1,
        "model": MODEL_NAME,
        "description": (
            "Greedy decodes by a numpy re-implementation of cn2en/model.py (float32), independent of "
            "the ONNX files. source_ids: ids after dropping unknown words, with EOS appended. "
            "output_ids: greedy from decoder_start until EOS (not included) or max_new_tokens. "
            "output_text: output_tokens joined with single spaces. stop: 'eos' | 'max_new_tokens'."
        ),
        "max_new_tokens": MAX_NEW_TOKENS,
    }
    lines = [json.dumps(head, ensure_ascii=False, indent=2)[:-2] + ",", '  "cases": [']
    cases = reference_cases(pkg)
    for i, c in enumerate(cases):
        lines.append("    " + json.dumps(c, ensure_ascii=False) + ("," if i + 1 < len(cases) else ""))
    lines += ["  ]", "}", ""]
    data = "\n".join(lines).encode("utf-8")
    json.loads(data)  # well-formed
    return data


# --------------------------------------------------------------------------

def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True, help=cp.WHEEL_NAME)
    ap.add_argument("--out-dir", required=True, help=f"models directory; writes <out-dir>/{MODEL_NAME}/")
    args = ap.parse_args()

    out = os.path.join(os.path.abspath(args.out_dir), MODEL_NAME)
    os.makedirs(out, exist_ok=True)
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # written last: no manifest == incomplete build

    log(f"reading {os.path.basename(args.wheel)}")
    model_py = cp.read_wheel_member(args.wheel, cp.MODEL_PY_MEMBER).decode("utf-8")
    for needle in ("SOS_token = 0", "EOS_token = 1", "self.hidden_size = 256", "for i in range(1000)",
                   "'abcdefghijklmnopqrstuvwxyz\\'\" '", "output = F.relu(output)"):
        if needle not in model_py:
            raise SystemExit(f"cn2en/model.py no longer contains {needle!r}; re-check the conversion")
    pkg = cp.load_package(args.wheel)
    log(
        f"vocab: source n_words={pkg.input_lang.n_words} target n_words={pkg.output_lang.n_words} "
        f"(pickled class {pkg.input_lang.pickled_class}); checkpoint learning_rate="
        f"{pkg.checkpoint_info.get('learning_rate')} loss={pkg.checkpoint_info.get('loss')}; storages "
        + ", ".join(f"{k}:{n}@{loc}" for k, _, loc, n in pkg.checkpoint_info["__storages__"])
    )

    blobs = {
        "encoder.onnx": build_encoder(pkg.weights).SerializeToString(),
        "decoder.onnx": build_decoder(pkg.weights).SerializeToString(),
        "source_tokenizer.json": build_source_tokenizer(pkg.input_lang),
        "target_tokenizer.json": build_target_tokenizer(pkg.output_lang),
    }
    log(f"numpy reference decode of {len(REFERENCE_TEXTS)} inputs")
    blobs["reference.json"] = build_reference(pkg)
    assert list(blobs) == FILES

    for name, data in blobs.items():
        _write_atomic(os.path.join(out, name), data)

    manifest = json.loads(json.dumps(MANIFEST_TEMPLATE))
    manifest["files_sha256"] = {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()}
    _write_atomic(manifest_path, _dump_json(manifest))

    log(f"wrote {out}/ (" + ", ".join(f"{n} {len(b)} B" for n, b in blobs.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
