"""Marian (opus-mt) encoder / decoder ONNX graphs in the layout of a Hugging Face
Optimum export, built with onnx.helper from numpy weights, plus a plain numpy
forward pass of the same maths used to verify the graphs.

The maths is transformers' MarianMTModel (post-LayerNorm transformer):

  embed   = shared[ids] * sqrt(d_model) + sinusoidal[positions]   (positions start at past_len)
  layer   = h = LN(h + SelfAttn(h));  [decoder: h = LN(h + CrossAttn(h, enc))];  h = LN(h + FFN(h))
  attn    = softmax((q * head_dim^-0.5) k^T + mask) v, heads split as [batch, heads, seq, head_dim]
  FFN     = fc2(silu(fc1(h)))                                     (activation_function = "swish")
  logits  = h @ lm_head + final_logits_bias                       (opus-mt ties lm_head = shared^T)

Masks are additive, float32 min where masked (like transformers): the encoder
attention_mask masks keys of the encoder self-attention and of the decoder
cross-attention; the decoder self-attention is causal over past + new tokens.

Optimum conventions reproduced (optimum/exporters/onnx: TextSeq2SeqOnnxConfig,
OnnxSeq2SeqConfigWithPast.add_past_key_values; optimum/onnx/graph_transformations.merge_decoders):
  * decoder_model:            encoder_attention_mask, input_ids, encoder_hidden_states
                              -> logits, present.{i}.{decoder,encoder}.{key,value}
  * decoder_with_past_model:  encoder_attention_mask, input_ids, past_key_values.{i}.{decoder,encoder}.{key,value}
                              -> logits, present.{i}.decoder.{key,value} only (cross-attention K/V are constant;
                              encoder_hidden_states is not an input: unused once the cross K/V are cached)
  * decoder_model_merged:     union of the inputs (decoder's first) + use_cache_branch bool[1]; one `If`
                              (then = with past, else = no past). In the with-past branch the
                              present.{i}.encoder.* outputs are EMPTY constants of shape [0, heads, 1, head_dim]
                              (merge_decoders(strict=False) fills outputs missing from decoder_with_past that way),
                              so a caller must keep the encoder K/V of the first (no-cache) step.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto, helper, numpy_helper

F32_MIN = float(np.finfo(np.float32).min)
KINDS = ("decoder.key", "decoder.value", "encoder.key", "encoder.value")


@dataclass(frozen=True)
class MarianDims:
    vocab: int
    d_model: int
    heads: int
    ffn: int
    encoder_layers: int
    decoder_layers: int
    max_positions: int
    ln_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


def sinusoidal_positions(n_pos: int, dim: int) -> np.ndarray:
    """transformers MarianSinusoidalPositionalEmbedding._init_weight: sin in the first half, cos in the second."""
    j = np.arange(dim)
    enc = np.arange(n_pos)[:, None] / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    out = np.empty((n_pos, dim), dtype=np.float64)
    sentinel = dim // 2 if dim % 2 == 0 else dim // 2 + 1
    out[:, :sentinel] = np.sin(enc[:, 0::2])
    out[:, sentinel:] = np.cos(enc[:, 1::2])
    return out.astype(np.float32)


# --------------------------------------------------------------------------
# Weight names (transformers parameter names; linear weights stored [in, out]
# for MatMul, i.e. the transpose of torch's nn.Linear.weight)
# --------------------------------------------------------------------------

def attn_names(prefix: str) -> dict:
    return {p: (f"{prefix}.{p}.weight", f"{prefix}.{p}.bias") for p in ("q_proj", "k_proj", "v_proj", "out_proj")}


def weight_names(dims: MarianDims) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every weight, in a fixed order."""
    D, F = dims.d_model, dims.ffn
    out: list[tuple[str, tuple[int, ...]]] = [
        ("model.shared.weight", (dims.vocab, D)),
        ("model.encoder.embed_positions.weight", (dims.max_positions, D)),
        ("model.decoder.embed_positions.weight", (dims.max_positions, D)),
    ]

    def attn(prefix):
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out.append((f"{prefix}.{p}.weight", (D, D)))
            out.append((f"{prefix}.{p}.bias", (D,)))

    def ln(prefix):
        out.append((f"{prefix}.weight", (D,)))
        out.append((f"{prefix}.bias", (D,)))

    def ffn(prefix):
        out.append((f"{prefix}.fc1.weight", (D, F)))
        out.append((f"{prefix}.fc1.bias", (F,)))
        out.append((f"{prefix}.fc2.weight", (F, D)))
        out.append((f"{prefix}.fc2.bias", (D,)))

    for i in range(dims.encoder_layers):
        p = f"model.encoder.layers.{i}"
        attn(f"{p}.self_attn")
        ln(f"{p}.self_attn_layer_norm")
        ffn(p)
        ln(f"{p}.final_layer_norm")
    for i in range(dims.decoder_layers):
        p = f"model.decoder.layers.{i}"
        attn(f"{p}.self_attn")
        ln(f"{p}.self_attn_layer_norm")
        attn(f"{p}.encoder_attn")
        ln(f"{p}.encoder_attn_layer_norm")
        ffn(p)
        ln(f"{p}.final_layer_norm")
    out.append(("lm_head.weight_T", (D, dims.vocab)))  # [d_model, vocab]; = shared^T when tied
    out.append(("final_logits_bias", (dims.vocab,)))
    return out


def weight_initializers(weights: dict[str, np.ndarray], dims: MarianDims) -> list[TensorProto]:
    return [
        numpy_helper.from_array(np.ascontiguousarray(weights[name], dtype=np.float32), name)
        for name, _ in weight_names(dims)
    ]


# --------------------------------------------------------------------------
# Graph builder
# --------------------------------------------------------------------------

@dataclass
class _Builder:
    prefix: str
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    n: int = 0

    def _name(self, base: str) -> str:
        self.n += 1
        return f"{self.prefix}{base}_{self.n}"

    def op(self, op_type: str, inputs: list[str], base: str, output: str | None = None, **attrs) -> str:
        out = output or self._name(base)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self._name(f"{op_type}/{base}"), **attrs))
        return out

    def const(self, value, dtype, base: str) -> str:
        name = self._name(f"const/{base}")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name


def _linear(b: _Builder, x: str, w: tuple[str, str], base: str) -> str:
    return b.op("Add", [b.op("MatMul", [x, w[0]], base + "/matmul"), w[1]], base)


def _split_heads(b: _Builder, x: str, dims: MarianDims, base: str, output: str | None = None) -> str:
    shape = b.const([0, 0, dims.heads, dims.head_dim], np.int64, "heads_shape")
    r = b.op("Reshape", [x, shape], base + "/reshape")
    return b.op("Transpose", [r], base + "/transpose", output=output, perm=[0, 2, 1, 3])


def _merge_heads(b: _Builder, x: str, dims: MarianDims, base: str) -> str:
    t = b.op("Transpose", [x], base + "/transpose", perm=[0, 2, 1, 3])
    shape = b.const([0, 0, dims.d_model], np.int64, "model_shape")
    return b.op("Reshape", [t, shape], base + "/reshape")


def _attend(b: _Builder, q: str, k: str, v: str, mask: str, base: str) -> str:
    kt = b.op("Transpose", [k], base + "/kt", perm=[0, 1, 3, 2])
    scores = b.op("Add", [b.op("MatMul", [q, kt], base + "/qk"), mask], base + "/masked")
    probs = b.op("Softmax", [scores], base + "/softmax", axis=-1)
    return b.op("MatMul", [probs, v], base + "/ctx")


def _layer_norm(b: _Builder, x: str, prefix: str, dims: MarianDims, base: str) -> str:
    return b.op("LayerNormalization", [x, f"{prefix}.weight", f"{prefix}.bias"], base, axis=-1, epsilon=dims.ln_eps)


def _ffn(b: _Builder, x: str, prefix: str, base: str) -> str:
    h = _linear(b, x, (f"{prefix}.fc1.weight", f"{prefix}.fc1.bias"), base + "/fc1")
    h = b.op("Mul", [h, b.op("Sigmoid", [h], base + "/sigmoid")], base + "/silu")
    return _linear(b, h, (f"{prefix}.fc2.weight", f"{prefix}.fc2.bias"), base + "/fc2")


def _scalar_dim(b: _Builder, x: str, axis: int, base: str) -> str:
    s = b.op("Shape", [x], base + "/shape", start=axis, end=axis + 1)
    return b.op("Squeeze", [s, b.const([0], np.int64, "axis0")], base + "/scalar")


def _embed(b: _Builder, ids: str, positions: str, table: str, dims: MarianDims, base: str) -> str:
    tok = b.op("Gather", ["model.shared.weight", ids], base + "/tokens", axis=0)
    tok = b.op("Mul", [tok, b.const(math.sqrt(dims.d_model), np.float32, "embed_scale")], base + "/scaled")
    pos = b.op("Gather", [table, positions], base + "/positions", axis=0)
    return b.op("Add", [tok, pos], base + "/embedded")


def _key_padding_mask(b: _Builder, mask: str, base: str) -> str:
    """int64 [batch, src] (1 = token) -> float [batch, 1, 1, src], 0 or float32 min."""
    m = b.op("Cast", [mask], base + "/float", to=TensorProto.FLOAT)
    inv = b.op("Sub", [b.const(1.0, np.float32, "one_f"), m], base + "/inverted")
    add = b.op("Mul", [inv, b.const(F32_MIN, np.float32, "f32_min")], base + "/additive")
    return b.op("Unsqueeze", [add, b.const([1, 2], np.int64, "axes12")], base)


def _encoder_nodes(b: _Builder, dims: MarianDims) -> None:
    seq = _scalar_dim(b, "input_ids", 1, "enc/seq_len")
    zero = b.const(0, np.int64, "zero")
    one = b.const(1, np.int64, "one")
    positions = b.op("Range", [zero, seq, one], "enc/positions")
    h = _embed(b, "input_ids", positions, "model.encoder.embed_positions.weight", dims, "enc/embed")
    mask = _key_padding_mask(b, "attention_mask", "enc/mask")
    for i in range(dims.encoder_layers):
        p = f"model.encoder.layers.{i}"
        base = f"enc/layer{i}"
        w = attn_names(f"{p}.self_attn")
        q = _linear(b, h, w["q_proj"], base + "/q")
        q = b.op("Mul", [q, b.const(dims.head_dim ** -0.5, np.float32, "scaling")], base + "/q_scaled")
        q = _split_heads(b, q, dims, base + "/q_heads")
        k = _split_heads(b, _linear(b, h, w["k_proj"], base + "/k"), dims, base + "/k_heads")
        v = _split_heads(b, _linear(b, h, w["v_proj"], base + "/v"), dims, base + "/v_heads")
        ctx = _merge_heads(b, _attend(b, q, k, v, mask, base + "/attn"), dims, base + "/ctx")
        a = _linear(b, ctx, w["out_proj"], base + "/out")
        h = _layer_norm(b, b.op("Add", [h, a], base + "/res1"), f"{p}.self_attn_layer_norm", dims, base + "/ln1")
        f = _ffn(b, h, p, base + "/ffn")
        out = "last_hidden_state" if i == dims.encoder_layers - 1 else None
        h = b.op(
            "LayerNormalization", [b.op("Add", [h, f], base + "/res2"), f"{p}.final_layer_norm.weight",
                                   f"{p}.final_layer_norm.bias"],
            base + "/ln2", output=out, axis=-1, epsilon=dims.ln_eps,
        )


def _decoder_nodes(b: _Builder, dims: MarianDims, with_past: bool, present_encoder: str) -> None:
    """present_encoder: "compute" (emit the cross K/V computed from encoder_hidden_states),
    "none" (do not emit), "empty" (emit empty constants, merged with-past branch)."""
    zero = b.const(0, np.int64, "zero")
    one = b.const(1, np.int64, "one")
    if with_past:
        past_len = _scalar_dim(b, "past_key_values.0.decoder.key", 2, "dec/past_len")
    else:
        past_len = zero
    new_len = _scalar_dim(b, "input_ids", 1, "dec/new_len")
    total = b.op("Add", [past_len, new_len], "dec/total_len")
    positions = b.op("Range", [past_len, total, one], "dec/positions")
    h = _embed(b, "input_ids", positions, "model.decoder.embed_positions.weight", dims, "dec/embed")

    # causal mask [new, past + new]: query at absolute position p sees keys 0..=p
    key_pos = b.op("Range", [zero, total, one], "dec/key_positions")
    q_col = b.op("Unsqueeze", [positions, b.const([1], np.int64, "axis1")], "dec/query_col")
    k_row = b.op("Unsqueeze", [key_pos, b.const([0], np.int64, "axis0")], "dec/key_row")
    future = b.op("Greater", [k_row, q_col], "dec/future")
    causal = b.op("Where", [future, b.const(F32_MIN, np.float32, "f32_min"), b.const(0.0, np.float32, "zero_f")],
                  "dec/causal_mask")
    cross_mask = _key_padding_mask(b, "encoder_attention_mask", "dec/cross_mask")
    scaling = b.const(dims.head_dim ** -0.5, np.float32, "scaling")

    for i in range(dims.decoder_layers):
        p = f"model.decoder.layers.{i}"
        base = f"dec/layer{i}"
        # self-attention (cached)
        w = attn_names(f"{p}.self_attn")
        q = b.op("Mul", [_linear(b, h, w["q_proj"], base + "/q"), scaling], base + "/q_scaled")
        q = _split_heads(b, q, dims, base + "/q_heads")
        k_new = _split_heads(b, _linear(b, h, w["k_proj"], base + "/k"), dims, base + "/k_heads",
                             output=None if with_past else f"present.{i}.decoder.key")
        v_new = _split_heads(b, _linear(b, h, w["v_proj"], base + "/v"), dims, base + "/v_heads",
                             output=None if with_past else f"present.{i}.decoder.value")
        if with_past:
            k = b.op("Concat", [f"past_key_values.{i}.decoder.key", k_new], base + "/k_cat",
                     output=f"present.{i}.decoder.key", axis=2)
            v = b.op("Concat", [f"past_key_values.{i}.decoder.value", v_new], base + "/v_cat",
                     output=f"present.{i}.decoder.value", axis=2)
        else:
            k, v = k_new, v_new
        ctx = _merge_heads(b, _attend(b, q, k, v, causal, base + "/self"), dims, base + "/self_ctx")
        a = _linear(b, ctx, w["out_proj"], base + "/self_out")
        h = _layer_norm(b, b.op("Add", [h, a], base + "/res1"), f"{p}.self_attn_layer_norm", dims, base + "/ln1")

        # cross-attention
        w = attn_names(f"{p}.encoder_attn")
        q = b.op("Mul", [_linear(b, h, w["q_proj"], base + "/cq"), scaling], base + "/cq_scaled")
        q = _split_heads(b, q, dims, base + "/cq_heads")
        if with_past:
            ck, cv = f"past_key_values.{i}.encoder.key", f"past_key_values.{i}.encoder.value"
        else:
            emit = present_encoder == "compute"
            ck = _split_heads(b, _linear(b, "encoder_hidden_states", w["k_proj"], base + "/ck"), dims,
                              base + "/ck_heads", output=f"present.{i}.encoder.key" if emit else None)
            cv = _split_heads(b, _linear(b, "encoder_hidden_states", w["v_proj"], base + "/cv"), dims,
                              base + "/cv_heads", output=f"present.{i}.encoder.value" if emit else None)
        ctx = _merge_heads(b, _attend(b, q, ck, cv, cross_mask, base + "/cross"), dims, base + "/cross_ctx")
        a = _linear(b, ctx, w["out_proj"], base + "/cross_out")
        h = _layer_norm(b, b.op("Add", [h, a], base + "/res2"), f"{p}.encoder_attn_layer_norm", dims, base + "/ln2")

        f = _ffn(b, h, p, base + "/ffn")
        h = _layer_norm(b, b.op("Add", [h, f], base + "/res3"), f"{p}.final_layer_norm", dims, base + "/ln3")

        if with_past and present_encoder == "empty":
            for kind in ("key", "value"):
                empty = helper.make_tensor("const_tensor", TensorProto.FLOAT, [0, dims.heads, 1, dims.head_dim], [])
                b.nodes.append(helper.make_node("Constant", [], [f"present.{i}.encoder.{kind}"],
                                                name=f"{b.prefix}Constant_present_{i}_encoder_{kind}", value=empty))

    logits = b.op("MatMul", [h, "lm_head.weight_T"], "dec/lm_head")
    b.op("Add", [logits, "final_logits_bias"], "dec/logits", output="logits")


# --------------------------------------------------------------------------
# Value infos (Optimum's dynamic axis names)
# --------------------------------------------------------------------------

def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def encoder_io(dims: MarianDims):
    inputs = [
        _vi("input_ids", TensorProto.INT64, ["batch_size", "encoder_sequence_length"]),
        _vi("attention_mask", TensorProto.INT64, ["batch_size", "encoder_sequence_length"]),
    ]
    outputs = [_vi("last_hidden_state", TensorProto.FLOAT, ["batch_size", "encoder_sequence_length", dims.d_model])]
    return inputs, outputs


def decoder_io(dims: MarianDims, with_past: bool):
    H, hd = dims.heads, dims.head_dim
    inputs = [
        _vi("encoder_attention_mask", TensorProto.INT64, ["batch_size", "encoder_sequence_length"]),
        _vi("input_ids", TensorProto.INT64, ["batch_size", "decoder_sequence_length"]),
    ]
    if with_past:
        for i in range(dims.decoder_layers):
            for kind in KINDS:
                seq = "past_decoder_sequence_length" if kind.startswith("decoder") else "encoder_sequence_length_out"
                inputs.append(_vi(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, ["batch_size", H, seq, hd]))
    else:
        inputs.append(_vi("encoder_hidden_states", TensorProto.FLOAT,
                          ["batch_size", "encoder_sequence_length", dims.d_model]))
    outputs = [_vi("logits", TensorProto.FLOAT, ["batch_size", "decoder_sequence_length", dims.vocab])]
    for i in range(dims.decoder_layers):
        for kind in KINDS:
            if kind.startswith("decoder"):
                seq = "past_decoder_sequence_length + 1" if with_past else "decoder_sequence_length"
            elif with_past:
                continue  # decoder_with_past does not re-emit the constant cross-attention K/V
            else:
                seq = "encoder_sequence_length_out"
            outputs.append(_vi(f"present.{i}.{kind}", TensorProto.FLOAT, ["batch_size", H, seq, hd]))
    return inputs, outputs


# --------------------------------------------------------------------------
# Graphs
# --------------------------------------------------------------------------

def encoder_graph(weights, dims: MarianDims, doc: str):
    b = _Builder("/model/encoder/")
    _encoder_nodes(b, dims)
    inputs, outputs = encoder_io(dims)
    enc_weights = [n for n, _ in weight_names(dims) if n.startswith("model.encoder.") or n == "model.shared.weight"]
    inits = [numpy_helper.from_array(np.ascontiguousarray(weights[n], dtype=np.float32), n) for n in enc_weights]
    return helper.make_graph(b.nodes, "encoder", inputs, outputs, initializer=inits + b.inits, doc_string=doc)


def _decoder_weight_names(dims: MarianDims) -> list[str]:
    return [n for n, _ in weight_names(dims)
            if n.startswith("model.decoder.") or n in ("model.shared.weight", "lm_head.weight_T", "final_logits_bias")]


def decoder_graph(weights, dims: MarianDims, with_past: bool, doc: str):
    b = _Builder("/model/decoder/")
    _decoder_nodes(b, dims, with_past, present_encoder="none" if with_past else "compute")
    inputs, outputs = decoder_io(dims, with_past)
    names = _decoder_weight_names(dims)
    if with_past:  # cross-attention K/V come from the cache: their projections are unused
        names = [n for n in names if not re.search(r"\.encoder_attn\.[kv]_proj\.", n)]
    inits = [numpy_helper.from_array(np.ascontiguousarray(weights[n], dtype=np.float32), n) for n in names]
    name = "decoder_with_past" if with_past else "decoder"
    return helper.make_graph(b.nodes, name, inputs, outputs, initializer=inits + b.inits, doc_string=doc)


def merged_decoder_graph(weights, dims: MarianDims, doc: str):
    """Like optimum.onnx.merge_decoders(decoder, decoder_with_past, strict=False)."""
    no_past = _Builder("/no_past/model/decoder/")
    _decoder_nodes(no_past, dims, with_past=False, present_encoder="compute")
    with_past = _Builder("/with_past/model/decoder/")
    _decoder_nodes(with_past, dims, with_past=True, present_encoder="empty")
    np_inputs, np_outputs = decoder_io(dims, with_past=False)
    wp_inputs, _ = decoder_io(dims, with_past=True)

    seen, inputs = set(), []
    for vi in np_inputs + wp_inputs:  # _get_all_inputs([decoder, decoder_with_past])
        if vi.name not in seen:
            seen.add(vi.name)
            inputs.append(vi)
    inputs.append(_vi("use_cache_branch", TensorProto.BOOL, [1]))

    else_branch = helper.make_graph(no_past.nodes, "no_past", [], np_outputs, initializer=no_past.inits)
    then_branch = helper.make_graph(with_past.nodes, "with_past", [], np_outputs, initializer=with_past.inits)
    if_node = helper.make_node("If", ["use_cache_branch"], [o.name for o in np_outputs], name="optimum::if",
                               then_branch=then_branch, else_branch=else_branch)
    inits = [numpy_helper.from_array(np.ascontiguousarray(weights[n], dtype=np.float32), n)
             for n in _decoder_weight_names(dims)]
    return helper.make_graph([if_node], "merged", inputs, np_outputs, initializer=inits, doc_string=doc)


# --------------------------------------------------------------------------
# numpy reference (float64), written independently of the graph code above
# --------------------------------------------------------------------------

def _np_ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _np_softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _np_mha(W, prefix, dims, x_q, x_kv=None, k=None, v=None, add_mask=None):
    """Returns (output, k, v) with k, v as [batch, heads, seq, head_dim]."""
    H, hd = dims.heads, dims.head_dim

    def proj(x, p):
        return x @ W[f"{prefix}.{p}.weight"] + W[f"{prefix}.{p}.bias"]

    def heads(x):
        B, T, _ = x.shape
        return x.reshape(B, T, H, hd).transpose(0, 2, 1, 3)

    q = heads(proj(x_q, "q_proj") * hd ** -0.5)
    if k is None:
        k = heads(proj(x_kv, "k_proj"))
        v = heads(proj(x_kv, "v_proj"))
    s = np.einsum("bhtd,bhsd->bhts", q, k)
    if add_mask is not None:
        s = s + add_mask
    ctx = np.einsum("bhts,bhsd->bhtd", _np_softmax(s), v)
    B, _, T, _ = ctx.shape
    ctx = ctx.transpose(0, 2, 1, 3).reshape(B, T, H * hd)
    return proj(ctx, "out_proj"), k, v


def _np_ffn(W, p, x):
    h = x @ W[f"{p}.fc1.weight"] + W[f"{p}.fc1.bias"]
    h = h / (1.0 + np.exp(-h))
    return h @ W[f"{p}.fc2.weight"] + W[f"{p}.fc2.bias"]


def np_encoder(W, dims: MarianDims, ids, mask):
    W = {k: v.astype(np.float64) for k, v in W.items()}
    B, S = ids.shape
    h = W["model.shared.weight"][ids] * math.sqrt(dims.d_model) + W["model.encoder.embed_positions.weight"][:S][None]
    add = np.where(mask[:, None, None, :] == 1, 0.0, F32_MIN)
    for i in range(dims.encoder_layers):
        p = f"model.encoder.layers.{i}"
        a, _, _ = _np_mha(W, f"{p}.self_attn", dims, h, x_kv=h, add_mask=add)
        h = _np_ln(h + a, W[f"{p}.self_attn_layer_norm.weight"], W[f"{p}.self_attn_layer_norm.bias"], dims.ln_eps)
        h = _np_ln(h + _np_ffn(W, p, h), W[f"{p}.final_layer_norm.weight"], W[f"{p}.final_layer_norm.bias"],
                   dims.ln_eps)
    return h


def np_decoder(W, dims: MarianDims, ids, enc_hidden, enc_mask, past=None):
    """past: list per layer of (dec_k, dec_v, enc_k, enc_v) or None. Returns (logits, presents)."""
    W = {k: v.astype(np.float64) for k, v in W.items()}
    B, T = ids.shape
    past_len = 0 if past is None else past[0][0].shape[2]
    pos = np.arange(past_len, past_len + T)
    h = W["model.shared.weight"][ids] * math.sqrt(dims.d_model) + W["model.decoder.embed_positions.weight"][pos][None]
    keys = np.arange(past_len + T)
    causal = np.where(keys[None, :] > pos[:, None], F32_MIN, 0.0)
    cross = np.where(enc_mask[:, None, None, :] == 1, 0.0, F32_MIN)
    presents = []
    for i in range(dims.decoder_layers):
        p = f"model.decoder.layers.{i}"
        _, k_new, v_new = _np_mha(W, f"{p}.self_attn", dims, h, x_kv=h)
        if past is not None:
            k_all = np.concatenate([past[i][0], k_new], axis=2)
            v_all = np.concatenate([past[i][1], v_new], axis=2)
        else:
            k_all, v_all = k_new, v_new
        a, _, _ = _np_mha(W, f"{p}.self_attn", dims, h, k=k_all, v=v_all, add_mask=causal)
        h = _np_ln(h + a, W[f"{p}.self_attn_layer_norm.weight"], W[f"{p}.self_attn_layer_norm.bias"], dims.ln_eps)
        if past is not None:
            a, ek, ev = _np_mha(W, f"{p}.encoder_attn", dims, h, k=past[i][2], v=past[i][3], add_mask=cross)
        else:
            a, ek, ev = _np_mha(W, f"{p}.encoder_attn", dims, h, x_kv=enc_hidden, add_mask=cross)
        h = _np_ln(h + a, W[f"{p}.encoder_attn_layer_norm.weight"], W[f"{p}.encoder_attn_layer_norm.bias"],
                   dims.ln_eps)
        h = _np_ln(h + _np_ffn(W, p, h), W[f"{p}.final_layer_norm.weight"], W[f"{p}.final_layer_norm.bias"],
                   dims.ln_eps)
        presents.append((k_all, v_all, ek, ev))
    logits = h @ W["lm_head.weight_T"] + W["final_logits_bias"]
    return logits, presents
