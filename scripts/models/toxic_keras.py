"""Read the Keras artifacts of the PyPI package toxic-comment-classifier==0.3.0
without TensorFlow/Keras, and re-implement its inference in plain numpy.

Shared by build_toxic_bilstm.py (the converter) and verify_toxic_bilstm.py
(the verification, which uses the numpy forward pass as an independent
reference for the ONNX graph).

Package layout (wheel members):
  toxic_classifier/model/model.weights.h5   Keras 3 ".weights.h5" file
  toxic_classifier/model/tokenizer.pickle   pickled keras Tokenizer (legacy)

Model (toxic_classifier/model.py):
  Input(100) -> Embedding(20000, 50) -> Bidirectional(LSTM(50, seq)) ->
  GlobalMaxPooling1D -> Dense(50, relu) -> Dropout -> Dense(6, sigmoid)
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass

import h5py
import numpy as np

LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
MAXLEN = 100
VOCAB_SIZE = 20000  # Embedding input_dim in model.py
EMBEDDING_DIM = 50
LSTM_UNITS = 50
DENSE_UNITS = 50

WEIGHTS_MEMBER = "toxic_classifier/model/model.weights.h5"
TOKENIZER_MEMBER = "toxic_classifier/model/tokenizer.pickle"


# --------------------------------------------------------------------------
# Wheel access
# --------------------------------------------------------------------------

def read_wheel_member(wheel_path: str, member: str) -> bytes:
    with zipfile.ZipFile(wheel_path) as zf:
        return zf.read(member)


# --------------------------------------------------------------------------
# Tokenizer (restricted unpickling, no keras import)
# --------------------------------------------------------------------------

class _KerasTokenizerStandIn:
    """Plain object that receives the pickled Tokenizer's __dict__."""


_TOKENIZER_CLASSES = {
    ("keras.src.legacy.preprocessing.text", "Tokenizer"),
    ("keras.preprocessing.text", "Tokenizer"),
    ("keras_preprocessing.text", "Tokenizer"),
    ("tensorflow.keras.preprocessing.text", "Tokenizer"),
}
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "int"): int,  # defaultdict(int) factory
    ("builtins", "list"): list,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # noqa: D401 - pickle API
        if (module, name) in _TOKENIZER_CLASSES:
            return _KerasTokenizerStandIn
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")


@dataclass
class KerasTokenizerConfig:
    num_words: int | None
    filters: str
    lower: bool
    split: str
    oov_token: str | None
    char_level: bool
    word_index: dict  # word -> index (1-based, by frequency)
    document_count: int


def load_tokenizer(pickle_bytes: bytes) -> KerasTokenizerConfig:
    obj = _RestrictedUnpickler(io.BytesIO(pickle_bytes)).load()
    if not isinstance(obj, _KerasTokenizerStandIn):
        raise ValueError(f"tokenizer pickle holds {type(obj).__name__}, not a Keras Tokenizer")
    d = obj.__dict__
    cfg = KerasTokenizerConfig(
        num_words=d.get("num_words"),
        filters=d.get("filters", ""),
        lower=bool(d.get("lower", True)),
        split=d.get("split", " "),
        oov_token=d.get("oov_token"),
        char_level=bool(d.get("char_level", False)),
        word_index=dict(d["word_index"]),
        document_count=int(d.get("document_count", 0)),
    )
    if d.get("analyzer") is not None:
        raise ValueError("tokenizer uses a custom analyzer; not supported")
    return cfg


def keras_text_to_word_sequence(text: str, cfg: KerasTokenizerConfig) -> list[str]:
    """keras.src.legacy.preprocessing.text.text_to_word_sequence."""
    if cfg.lower:
        text = text.lower()
    text = text.translate(str.maketrans({c: cfg.split for c in cfg.filters}))
    return [w for w in text.split(cfg.split) if w]


def keras_text_to_ids(text: str, cfg: KerasTokenizerConfig) -> list[int]:
    """Tokenizer.texts_to_sequences([text])[0] (word-level, no analyzer)."""
    if cfg.char_level:
        raise ValueError("char_level tokenizers are not supported")
    oov_index = cfg.word_index.get(cfg.oov_token) if cfg.oov_token is not None else None
    ids = []
    for w in keras_text_to_word_sequence(text, cfg):
        i = cfg.word_index.get(w)
        if i is not None:
            if cfg.num_words and i >= cfg.num_words:
                if oov_index is not None:
                    ids.append(oov_index)
            else:
                ids.append(i)
        elif oov_index is not None:
            ids.append(oov_index)
    return ids


def pad_pre(ids: list[int], maxlen: int = MAXLEN, value: int = 0) -> list[int]:
    """keras pad_sequences defaults: padding='pre', truncating='pre'."""
    ids = list(ids)[-maxlen:] if ids else []
    return [value] * (maxlen - len(ids)) + ids


# --------------------------------------------------------------------------
# Weights (Keras 3 .weights.h5)
# --------------------------------------------------------------------------

@dataclass
class BiLstmWeights:
    embedding: np.ndarray  # [V, E]
    fwd_kernel: np.ndarray  # [E, 4H]   gate order i, f, c, o
    fwd_recurrent: np.ndarray  # [H, 4H]
    fwd_bias: np.ndarray  # [4H]
    bwd_kernel: np.ndarray
    bwd_recurrent: np.ndarray
    bwd_bias: np.ndarray
    dense_kernel: np.ndarray  # [2H, 50]
    dense_bias: np.ndarray  # [50]
    out_kernel: np.ndarray  # [50, 6]
    out_bias: np.ndarray  # [6]


def _expect(arr: np.ndarray, shape: tuple, what: str) -> np.ndarray:
    if tuple(arr.shape) != shape:
        raise ValueError(f"{what}: expected shape {shape}, got {arr.shape}")
    if arr.dtype != np.float32:
        raise ValueError(f"{what}: expected float32, got {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: contains non-finite values")
    return np.ascontiguousarray(arr)


def load_weights(h5_bytes: bytes) -> BiLstmWeights:
    H, E, V = LSTM_UNITS, EMBEDDING_DIM, VOCAB_SIZE
    with h5py.File(io.BytesIO(h5_bytes), "r") as f:
        L = f["layers"]

        def var(path: str, idx: int, shape: tuple) -> np.ndarray:
            return _expect(L[f"{path}/vars/{idx}"][()], shape, f"layers/{path}/vars/{idx}")

        bi = "bidirectional"
        return BiLstmWeights(
            embedding=var("embedding", 0, (V, E)),
            fwd_kernel=var(f"{bi}/forward_layer/cell", 0, (E, 4 * H)),
            fwd_recurrent=var(f"{bi}/forward_layer/cell", 1, (H, 4 * H)),
            fwd_bias=var(f"{bi}/forward_layer/cell", 2, (4 * H,)),
            bwd_kernel=var(f"{bi}/backward_layer/cell", 0, (E, 4 * H)),
            bwd_recurrent=var(f"{bi}/backward_layer/cell", 1, (H, 4 * H)),
            bwd_bias=var(f"{bi}/backward_layer/cell", 2, (4 * H,)),
            dense_kernel=var("dense", 0, (2 * H, DENSE_UNITS)),
            dense_bias=var("dense", 1, (DENSE_UNITS,)),
            out_kernel=var("dense_1", 0, (DENSE_UNITS, len(LABELS))),
            out_bias=var("dense_1", 1, (len(LABELS),)),
        )


# --------------------------------------------------------------------------
# numpy reference forward pass (mirrors Keras semantics, float64 accumulate)
# --------------------------------------------------------------------------

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _lstm_keras(x: np.ndarray, kernel, recurrent, bias, reverse: bool) -> np.ndarray:
    """x: [B, T, E] -> outputs [B, T, H] aligned with input time steps.

    Keras LSTM cell, gates i, f, c, o; recurrent_activation sigmoid,
    activation tanh; no masking (Embedding has mask_zero=False, so padding
    zeros are real time steps). go_backwards + Bidirectional re-flip means the
    backward output at step t is the state after consuming x[T-1..t].
    """
    B, T, _ = x.shape
    H = recurrent.shape[0]
    W = kernel.astype(np.float64)
    U = recurrent.astype(np.float64)
    b = bias.astype(np.float64)
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    out = np.zeros((B, T, H))
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        z = x[:, t, :] @ W + h @ U + b
        i = _sigmoid(z[:, 0:H])
        f = _sigmoid(z[:, H:2 * H])
        g = np.tanh(z[:, 2 * H:3 * H])
        o = _sigmoid(z[:, 3 * H:4 * H])
        c = f * c + i * g
        h = o * np.tanh(c)
        out[:, t, :] = h
    return out


def reference_logits(w: BiLstmWeights, ids: np.ndarray) -> np.ndarray:
    """ids: int [B, T] -> pre-sigmoid logits [B, 6] (float64)."""
    x = w.embedding[np.asarray(ids, dtype=np.int64)].astype(np.float64)  # [B, T, E]
    fwd = _lstm_keras(x, w.fwd_kernel, w.fwd_recurrent, w.fwd_bias, reverse=False)
    bwd = _lstm_keras(x, w.bwd_kernel, w.bwd_recurrent, w.bwd_bias, reverse=True)
    seq = np.concatenate([fwd, bwd], axis=-1)  # [B, T, 2H]
    pooled = seq.max(axis=1)  # GlobalMaxPooling1D
    hidden = np.maximum(pooled @ w.dense_kernel.astype(np.float64) + w.dense_bias, 0.0)
    return hidden @ w.out_kernel.astype(np.float64) + w.out_bias  # Dropout = identity


def sigmoid(x):
    return _sigmoid(np.asarray(x, dtype=np.float64))
