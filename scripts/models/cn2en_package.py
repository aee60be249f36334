"""Read the artifacts of the PyPI package cn2en==0.0.118 without torch, and
re-implement its inference (tokenization + GRU seq2seq greedy decoding) in
plain numpy.

Shared by build_cn2en.py (the converter, which also writes reference.json
from the numpy decode) and verify_cn2en.py (which checks the ONNX graphs and
tokenizer.json files against this independent numpy reference).

Wheel members:
  cn2en/model.py          the package's own inference code (the spec below)
  cn2en/model.pth         PyTorch zip checkpoint: {'encoder': state_dict,
                          'decoder': state_dict, 'learning_rate', 'loss'}
  cn2en/input_lang.pkl    pickled Lang (word2index, index2word, n_words)
  cn2en/output_lang.pkl   same for the English side

Model (cn2en/model.py):
  encoder: Embedding(n_in, 256) -> GRU(256), one token at a time from a zero
           state over the source ids (+ EOS); its final hidden state seeds
  decoder: Embedding(n_out, 256) -> ReLU -> GRU(256) -> Linear(256, n_out)
           -> LogSoftmax; greedy from SOS=0 until EOS=1 (model.py caps the
           loop at 1000 steps). No attention: encoder outputs are unused.
  source:  normalize(s) = each char of s.lower().strip() not in [a-z'" ]
           becomes ' c ', then strip; split on ' ', drop empty and
           out-of-vocabulary words, append EOS.
  output:  ' '.join(index2word[i] for i in ids).strip()
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass

import numpy as np

PACKAGE = "cn2en"
VERSION = "0.0.118"
WHEEL_NAME = f"{PACKAGE}-{VERSION}-py3-none-any.whl"

CHECKPOINT_MEMBER = "cn2en/model.pth"
INPUT_LANG_MEMBER = "cn2en/input_lang.pkl"
OUTPUT_LANG_MEMBER = "cn2en/output_lang.pkl"
MODEL_PY_MEMBER = "cn2en/model.py"

HIDDEN = 256
SOS_TOKEN = 0
EOS_TOKEN = 1
KEEP_CHARS = "abcdefghijklmnopqrstuvwxyz'\" "  # model.py normalize()
MODEL_PY_MAX_STEPS = 1000  # model.py translate(): for i in range(1000)


def read_wheel_member(wheel_path: str, member: str) -> bytes:
    with zipfile.ZipFile(wheel_path) as zf:
        return zf.read(member)


# --------------------------------------------------------------------------
# Lang pickles (restricted unpickling)
# --------------------------------------------------------------------------

class _LangStandIn:
    """Receives the pickled Lang's __dict__ (model.py maps any 'Lang')."""


_LANG_MODULES = {"__main__", "cn2en.model", "model"}


class _LangUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # noqa: D401
        if name == "Lang" and module in _LANG_MODULES:
            return _LangStandIn
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


@dataclass
class Lang:
    word2index: dict[str, int]
    index2word: dict[int, str]
    n_words: int
    pickled_class: str


def load_lang(data: bytes) -> Lang:
    found: list[str] = []

    class U(_LangUnpickler):
        def find_class(self, module, name):
            cls = super().find_class(module, name)
            found.append(f"{module}.{name}")
            return cls

    obj = U(io.BytesIO(data)).load()
    if not isinstance(obj, _LangStandIn):
        raise ValueError(f"expected a pickled Lang, got {type(obj)}")
    d = obj.__dict__
    w2i, i2w, n = d.get("word2index"), d.get("index2word"), d.get("n_words")
    if not (isinstance(w2i, dict) and isinstance(i2w, dict) and isinstance(n, int)):
        raise ValueError(f"unexpected Lang fields {sorted(d)}")
    if sorted(i2w) != list(range(n)):
        raise ValueError("index2word does not cover 0..n_words-1")
    if i2w[SOS_TOKEN] != "SOS" or i2w[EOS_TOKEN] != "EOS":
        raise ValueError(f"index2word[0,1] = {i2w[0]!r}, {i2w[1]!r}; expected SOS, EOS")
    for w, i in w2i.items():
        if not (isinstance(w, str) and isinstance(i, int) and 2 <= i < n and i2w[i] == w):
            raise ValueError(f"word2index entry {w!r}: {i!r} inconsistent with index2word")
    if len(w2i) != n - 2:
        raise ValueError(f"word2index has {len(w2i)} entries, expected n_words-2 = {n - 2}")
    return Lang(dict(w2i), dict(i2w), n, found[0] if found else "?")


# --------------------------------------------------------------------------
# PyTorch zip checkpoint (restricted unpickling, no torch import)
# --------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}


@dataclass(frozen=True)
class _StorageType:
    name: str


class _Storage:
    def __init__(self, array: np.ndarray, key: str, location: str):
        self.array = array  # 1-D, read-only
        self.key = key
        self.location = location


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or storage_offset < 0 or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"bad tensor geometry size={size} stride={stride}")
    numel = storage.array.size
    if any(s == 0 for s in size):
        return np.zeros(size, dtype=storage.array.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= numel:
        raise pickle.UnpicklingError(f"tensor exceeds storage {storage.key} ({last} >= {numel})")
    base = storage.array[storage_offset:]
    item = storage.array.itemsize
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.array(view, dtype=view.dtype.newbyteorder("="), copy=True)


class _CheckpointUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._zf = zf
        self._prefix = prefix
        self._storages: dict[str, _Storage] = {}
        self.storage_log: list[tuple[str, str, str, int]] = []

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, stype, key, location, numel = pid
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {stype!r}")
        key = str(key)
        if key not in self._storages:
            dtype = _STORAGE_DTYPES[stype.name]
            raw = self._zf.read(f"{self._prefix}data/{key}")
            if len(raw) < numel * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key}: {len(raw)} B < {numel} x {dtype.itemsize}")
            arr = np.frombuffer(raw, dtype=dtype, count=numel)  # device tag ignored
            self._storages[key] = _Storage(arr, key, str(location))
            self.storage_log.append((key, stype.name, str(location), int(numel)))
        return self._storages[key]


def load_checkpoint(pth_bytes: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(pth_bytes)) as zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ValueError(f"expected one <dir>/data.pkl in the checkpoint, found {pkls}")
        prefix = pkls[0][: -len("data.pkl")]
        u = _CheckpointUnpickler(zf.read(pkls[0]), zf, prefix)
        obj = u.load()
        obj_storages = u.storage_log
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint root is {type(obj)}, expected dict")
    obj = dict(obj)
    obj["__storages__"] = obj_storages
    return obj


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------

ENCODER_KEYS = {
    "embedding.weight": lambda n_in: (n_in, HIDDEN),
    "gru.weight_ih_l0": lambda _: (3 * HIDDEN, HIDDEN),
    "gru.weight_hh_l0": lambda _: (3 * HIDDEN, HIDDEN),
    "gru.bias_ih_l0": lambda _: (3 * HIDDEN,),
    "gru.bias_hh_l0": lambda _: (3 * HIDDEN,),
}
DECODER_KEYS = dict(ENCODER_KEYS, **{
    "out.weight": lambda n_out: (n_out, HIDDEN),
    "out.bias": lambda n_out: (n_out,),
})


@dataclass
class GruWeights:
    """PyTorch layout: gates stacked (r, z, n) along the first axis."""
    embedding: np.ndarray  # [V, H]
    w_ih: np.ndarray  # [3H, H]
    w_hh: np.ndarray  # [3H, H]
    b_ih: np.ndarray  # [3H]
    b_hh: np.ndarray  # [3H]


@dataclass
class Cn2enWeights:
    encoder: GruWeights
    decoder: GruWeights
    out_weight: np.ndarray  # [V_out, H]
    out_bias: np.ndarray  # [V_out]


def _check_state_dict(sd, keys, vocab: int, which: str) -> None:
    if not isinstance(sd, dict):
        raise ValueError(f"{which} state dict is {type(sd)}")
    if sorted(sd) != sorted(keys):
        raise ValueError(f"{which} state dict keys {sorted(sd)} != {sorted(keys)}")
    for k, shape in keys.items():
        a = sd[k]
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != shape(vocab):
            raise ValueError(f"{which}.{k}: {getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}, "
                             f"expected float32 {shape(vocab)}")
        if not np.isfinite(a).all():
            raise ValueError(f"{which}.{k} has non-finite values")


def weights_from_checkpoint(ckpt: dict, n_in: int, n_out: int) -> Cn2enWeights:
    enc, dec = ckpt.get("encoder"), ckpt.get("decoder")
    _check_state_dict(enc, ENCODER_KEYS, n_in, "encoder")
    _check_state_dict(dec, DECODER_KEYS, n_out, "decoder")

    def gru(sd):
        return GruWeights(sd["embedding.weight"], sd["gru.weight_ih_l0"], sd["gru.weight_hh_l0"],
                          sd["gru.bias_ih_l0"], sd["gru.bias_hh_l0"])

    return Cn2enWeights(gru(enc), gru(dec), dec["out.weight"], dec["out.bias"])


@dataclass
class Cn2enPackage:
    input_lang: Lang
    output_lang: Lang
    weights: Cn2enWeights
    checkpoint_info: dict


def load_package(wheel_path: str) -> Cn2enPackage:
    with zipfile.ZipFile(wheel_path) as zf:
        inp = load_lang(zf.read(INPUT_LANG_MEMBER))
        out = load_lang(zf.read(OUTPUT_LANG_MEMBER))
        ckpt = load_checkpoint(zf.read(CHECKPOINT_MEMBER))
    w = weights_from_checkpoint(ckpt, inp.n_words, out.n_words)
    info = {k: v for k, v in ckpt.items() if k not in ("encoder", "decoder")}
    return Cn2enPackage(inp, out, w, info)


# --------------------------------------------------------------------------
# Tokenization (model.py normalize + tensorsFromSentence, verbatim logic)
# --------------------------------------------------------------------------

def normalize(s: str) -> str:
    return "".join([c if c in KEEP_CHARS else " " + c + " " for c in s.lower().strip()]).strip()


def source_ids(lang: Lang, text: str) -> list[int]:
    return [lang.word2index[w] for w in normalize(text).split(" ") if w and w in lang.word2index] + [EOS_TOKEN]


def output_tokens(lang: Lang, ids: list[int]) -> list[str]:
    return [lang.index2word[i] for i in ids]


# --------------------------------------------------------------------------
# numpy inference (float32, like the float32 PyTorch model)
# --------------------------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def gru_step(g: GruWeights, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """torch.nn.GRU cell. x: [B, H_in], h: [B, H] -> new h [B, H]."""
    gi = x @ g.w_ih.T + g.b_ih
    gh = h @ g.w_hh.T + g.b_hh
    i_r, i_z, i_n = np.split(gi, 3, axis=-1)
    h_r, h_z, h_n = np.split(gh, 3, axis=-1)
    r = _sigmoid(i_r + h_r)
    z = _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return ((1.0 - z) * n + z * h).astype(np.float32)


def encode(w: Cn2enWeights, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """-> (outputs [T, H], final state [H]) from a zero initial state."""
    h = np.zeros((1, HIDDEN), dtype=np.float32)
    outs = []
    for i in ids:
        h = gru_step(w.encoder, w.encoder.embedding[i][None, :], h)
        outs.append(h[0])
    return np.stack(outs) if outs else np.zeros((0, HIDDEN), np.float32), h[0]


def decoder_step(w: Cn2enWeights, token: int, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (log_probs [V_out], new hidden [H])."""
    x = np.maximum(w.decoder.embedding[token], 0.0)[None, :]
    h = gru_step(w.decoder, x, h[None, :])
    logits = (h @ w.out_weight.T + w.out_bias)[0].astype(np.float32)
    m = logits.max()
    logp = logits - (m + np.log(np.exp(logits - m).sum(dtype=np.float32)))
    return logp.astype(np.float32), h[0]


@dataclass
class Decode:
    output_ids: list[int]
    log_probs: list[np.ndarray]  # per step, incl. the step that produced EOS
    stop: str  # "eos" | "max_new_tokens"
    min_margin: float  # smallest top1 - top2 log-prob gap over the steps


def greedy_decode(w: Cn2enWeights, src: list[int], max_new_tokens: int) -> Decode:
    _, h = encode(w, src)
    tok, out, steps, margin = SOS_TOKEN, [], [], float("inf")
    for _ in range(max_new_tokens):
        logp, h = decoder_step(w, tok, h)
        steps.append(logp)
        top2 = np.partition(logp, -2)[-2:]
        margin = min(margin, float(abs(top2[1] - top2[0])))
        tok = int(np.argmax(logp))
        if tok == EOS_TOKEN:
            return Decode(out, steps, "eos", margin)
        out.append(tok)
    return Decode(out, steps, "max_new_tokens", margin)
