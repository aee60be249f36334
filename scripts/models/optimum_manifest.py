#!/usr/bin/env python3
"""Write manifest.json (docs/SEQ2SEQ_MANIFEST.md, decoder.state = "past_key_values") for a
Hugging Face Optimum ONNX export of an encoder-decoder translation model, e.g.

    optimum-cli export onnx --model Helsinki-NLP/opus-mt-zh-en --task text2text-generation-with-past DIR
    optimum_manifest.py DIR --source-lang zh --target-lang en

Reads DIR/config.json and whichever of encoder_model.onnx, decoder_model.onnx,
decoder_with_past_model.onnx, decoder_model_merged.onnx exist (in DIR, or in DIR/onnx/
as in transformers.js-style repositories), checks their input/output names and
past key/value shapes against config.json, and records the files' sha256.

Tokenizer: the engine needs a Hugging Face tokenizer.json. NOTE: Optimum copies a
Marian model's *slow* tokenizer files (source.spm, target.spm, vocab.json) and no
tokenizer.json, because transformers has no fast Marian tokenizer; a tokenizer.json
must be supplied separately (e.g. the one in the Xenova/opus-mt-* repositories),
or pointed at with --tokenizer / --source-tokenizer / --target-tokenizer.
Whether the tokenizer's post-processor already appends </s> is detected
(append_eos_to_source is set to the opposite).

Usage: optimum_manifest.py DIR --source-lang zh --target-lang en [--name NAME] [options]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys

ENCODER = "encoder_model.onnx"
DECODER = "decoder_model.onnx"
WITH_PAST = "decoder_with_past_model.onnx"
MERGED = "decoder_model_merged.onnx"
INPUT_PREFIX = "past_key_values"
OUTPUT_PREFIX = "present"
KINDS = ("decoder.key", "decoder.value", "encoder.key", "encoder.value")
# Inputs the engine knows how to feed (anything else is refused rather than silently omitted).
DECODER_INPUTS = {"input_ids", "encoder_attention_mask", "encoder_hidden_states", "use_cache_branch"}
PAST_RE = re.compile(r"^past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)$")


class ManifestError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[optimum_manifest] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# ONNX signatures
# --------------------------------------------------------------------------

class Signature:
    def __init__(self, directory: str, rel: str):
        import onnx

        self.rel = rel
        path = os.path.join(directory, rel)
        model = onnx.load(path, load_external_data=False)
        g = model.graph
        init_names = {i.name for i in g.initializer}

        def dims(vi):
            out = []
            for d in vi.type.tensor_type.shape.dim:
                out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
            return out

        # graph inputs that are not initializers (old IR versions list initializers as inputs)
        self.inputs = {vi.name: (vi.type.tensor_type.elem_type, dims(vi)) for vi in g.input if vi.name not in init_names}
        self.outputs = {vi.name: (vi.type.tensor_type.elem_type, dims(vi)) for vi in g.output}
        # external data files (models > 2 GB)
        self.external = set()
        for t in g.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                for entry in t.external_data:
                    if entry.key == "location":
                        self.external.add(os.path.normpath(os.path.join(os.path.dirname(rel), entry.value)))

    def need_input(self, name: str) -> None:
        if name not in self.inputs:
            raise ManifestError(f"{self.rel}: no input `{name}` (inputs: {sorted(self.inputs)})")

    def need_output(self, name: str) -> None:
        if name not in self.outputs:
            raise ManifestError(f"{self.rel}: no output `{name}` (outputs: {sorted(self.outputs)[:8]} ...)")


def _check_kv_shape(sig: Signature, name: str, shape: list, heads: int, head_dim: int) -> None:
    if len(shape) != 4:
        raise ManifestError(f"{sig.rel}: `{name}` has rank {len(shape)}, expected [batch, heads, seq, head_dim]")
    for axis, want in ((1, heads), (3, head_dim)):
        got = shape[axis]
        if isinstance(got, int) and got != want:
            raise ManifestError(f"{sig.rel}: `{name}` axis {axis} is {got}, config.json says {want}")


def _check_decoder(sig: Signature, kind: str, layers: int, heads: int, head_dim: int) -> None:
    """kind: "decoder" (no cache), "with_past" or "merged"."""
    sig.need_input("input_ids")
    sig.need_output("logits")
    if kind in ("decoder", "merged"):
        sig.need_input("encoder_hidden_states")
    if kind == "merged":
        sig.need_input("use_cache_branch")
    for name in sig.inputs:
        if name in DECODER_INPUTS:
            continue
        m = PAST_RE.match(name)
        if m and kind != "decoder" and int(m.group(1)) < layers:
            continue
        raise ManifestError(f"{sig.rel}: unexpected input `{name}` (the engine feeds only {sorted(DECODER_INPUTS)} "
                            f"and {INPUT_PREFIX}.{{0..{layers - 1}}}.{{decoder,encoder}}.{{key,value}})")
    if kind != "decoder":
        for i in range(layers):
            for k in KINDS:
                name = f"{INPUT_PREFIX}.{i}.{k}"
                sig.need_input(name)
                _check_kv_shape(sig, name, sig.inputs[name][1], heads, head_dim)
    wanted = [f"{OUTPUT_PREFIX}.{i}.{k}" for i in range(layers)
              for k in (KINDS if kind != "with_past" else KINDS[:2])]
    for name in wanted:
        sig.need_output(name)
        _check_kv_shape(sig, name, sig.outputs[name][1], heads, head_dim)
    extra = [n for n in sig.outputs if n.startswith(OUTPUT_PREFIX + ".") and n not in wanted]
    if kind == "with_past" and extra:
        log(f"note: {sig.rel} also outputs {len(extra)} cross-attention presents (pre-1.7.3 Optimum export); "
            "they equal the past ones")


# --------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------

def _tokenizer_appends_eos(path: str, eos: int) -> bool:
    """Whether encoding with special tokens ends in eos (i.e. the post-processor appends </s>)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        Tokenizer = None
    if Tokenizer is not None:
        tok = Tokenizer.from_file(path)
        ids = tok.encode("a b", add_special_tokens=True).ids
        plain = tok.encode("a b", add_special_tokens=False).ids
        return len(ids) > len(plain) and ids[-1] == eos
    # fallback: inspect the JSON (TemplateProcessing "$A </s>")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    post = cfg.get("post_processor") or {}
    processors = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for p in processors:
        if p.get("type") == "TemplateProcessing" and p.get("single"):
            last = p["single"][-1]
            if "SpecialToken" in last:
                tid = last["SpecialToken"]["id"]
                ids = (p.get("special_tokens", {}).get(tid) or {}).get("ids", [])
                if ids and ids[-1] == eos:
                    return True
    return False


def _find(directory: str, rel: str | None, default: str) -> str | None:
    """A file relative to directory: the given one (must exist), else default in DIR or DIR/onnx/."""
    if rel is not None:
        if not os.path.isfile(os.path.join(directory, rel)):
            raise ManifestError(f"{os.path.join(directory, rel)} does not exist")
        return rel
    for cand in (default, os.path.join("onnx", default)):
        if os.path.isfile(os.path.join(directory, cand)):
            return cand
    return None


# --------------------------------------------------------------------------

def build_manifest(
    directory: str,
    source_lang: str,
    target_lang: str,
    name: str | None = None,
    description: str | None = None,
    source: str | None = None,
    license: str | None = None,
    source_tokenizer: str | None = None,
    target_tokenizer: str | None = None,
    encoder: str | None = None,
    decoder: str | None = None,
    with_past: str | None = None,
    merged: str | None = None,
    use_with_past: bool = True,
    use_merged: bool = True,
    max_source_tokens: int | None = None,
    max_new_tokens: int | None = None,
) -> dict:
    directory = os.path.abspath(directory)
    cfg_path = os.path.join(directory, "config.json")
    if not os.path.isfile(cfg_path):
        raise ManifestError(f"{cfg_path} does not exist (not an Optimum export directory?)")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)

    def need(key):
        if key not in cfg or cfg[key] is None:
            raise ManifestError(f"config.json has no `{key}`")
        return cfg[key]

    d_model = int(need("d_model"))
    layers = int(cfg.get("decoder_layers") or need("num_hidden_layers"))
    heads = int(cfg.get("decoder_attention_heads") or need("num_attention_heads"))
    if d_model % heads:
        raise ManifestError(f"d_model {d_model} is not a multiple of decoder_attention_heads {heads}")
    head_dim = d_model // heads
    eos = int(need("eos_token_id") if not isinstance(cfg.get("eos_token_id"), list) else cfg["eos_token_id"][0])
    pad = int(need("pad_token_id"))
    start = cfg.get("decoder_start_token_id")
    if start is None:
        log(f"config.json has no decoder_start_token_id; using pad_token_id {pad} (Marian convention)")
        start = pad
    start = int(start)
    max_pos = int(cfg.get("max_position_embeddings") or 512)
    if max_source_tokens is None:
        max_source_tokens = max_pos
    if max_new_tokens is None:
        max_length = int(cfg.get("max_length") or 256)
        max_new_tokens = max(1, min(max_length - 1, max_pos))  # HF max_length counts the decoder start token

    # --- ONNX files ---
    enc_rel = _find(directory, encoder, ENCODER)
    if enc_rel is None:
        raise ManifestError(f"no {ENCODER} in {directory}")
    dec_rel = _find(directory, decoder, DECODER)
    wp_rel = _find(directory, with_past, WITH_PAST) if use_with_past else None
    mg_rel = _find(directory, merged, MERGED) if use_merged else None
    if dec_rel is None and mg_rel is None:
        raise ManifestError(f"neither {DECODER} nor {MERGED} in {directory}")

    enc = Signature(directory, enc_rel)
    enc.need_input("input_ids")
    unexpected = set(enc.inputs) - {"input_ids", "attention_mask"}
    if unexpected:
        raise ManifestError(f"{enc_rel}: unexpected inputs {sorted(unexpected)}")
    enc_out = "last_hidden_state" if "last_hidden_state" in enc.outputs else next(iter(enc.outputs))
    hidden = enc.outputs[enc_out][1]
    if len(hidden) != 3 or (isinstance(hidden[2], int) and hidden[2] != d_model):
        raise ManifestError(f"{enc_rel}: `{enc_out}` is {hidden}, expected [batch, seq, {d_model}]")

    sigs = [enc]
    dec_sig = None
    if dec_rel is not None:
        dec_sig = Signature(directory, dec_rel)
        _check_decoder(dec_sig, "decoder", layers, heads, head_dim)
        sigs.append(dec_sig)
    if wp_rel is not None:
        s = Signature(directory, wp_rel)
        _check_decoder(s, "with_past", layers, heads, head_dim)
        sigs.append(s)
    mg_sig = None
    if mg_rel is not None:
        mg_sig = Signature(directory, mg_rel)
        _check_decoder(mg_sig, "merged", layers, heads, head_dim)
        sigs.append(mg_sig)
    if dec_rel is None:
        log(f"WARNING: no {DECODER}; decoder.file is set to the merged decoder {mg_rel}, which needs "
            "use_cache_branch and dummy past inputs even without a cache")
    main_sig = dec_sig or mg_sig
    has_mask = "encoder_attention_mask" in main_sig.inputs

    # --- tokenizers ---
    src_tok = source_tokenizer or "tokenizer.json"
    tgt_tok = target_tokenizer or src_tok
    for rel in {src_tok, tgt_tok}:
        if not os.path.isfile(os.path.join(directory, rel)):
            hint = ""
            if os.path.isfile(os.path.join(directory, "source.spm")):
                hint = (" — this export has the slow Marian tokenizer (source.spm / target.spm / vocab.json), "
                        "which Optimum copies as is; transformers has no fast Marian tokenizer. Supply a "
                        "tokenizer.json (e.g. from the Xenova/opus-mt-* repositories) and pass --tokenizer")
            raise ManifestError(f"{os.path.join(directory, rel)} does not exist{hint}")
    appends = _tokenizer_appends_eos(os.path.join(directory, src_tok), eos)
    log(f"source tokenizer {'appends' if appends else 'does not append'} eos {eos}: "
        f"append_eos_to_source = {str(not appends).lower()}")

    # --- hashes ---
    files = [s.rel for s in sigs]
    externals = sorted({e for s in sigs for e in s.external})
    toks = [src_tok] + ([tgt_tok] if tgt_tok != src_tok else [])
    hashes = {}
    for rel in files + externals + toks:
        hashes[rel] = sha256_file(os.path.join(directory, rel))

    model_id = cfg.get("_name_or_path") or os.path.basename(directory)
    return {
        "schema_version": 1,
        "name": name or os.path.basename(directory.rstrip(os.sep)),
        "task": "translation",
        "source_lang": source_lang,
        "target_lang": target_lang,
        "description": description if description is not None else
        f"{model_id} ({cfg.get('model_type', 'seq2seq')}), Hugging Face Optimum ONNX export",
        "source": source if source is not None else model_id,
        "license": license if license is not None else "",
        "tokenizers": {"source": src_tok, "target": tgt_tok},
        "source_unknown": "keep",
        "append_eos_to_source": not appends,
        "detokenize": "tokenizer",
        "tokens": {"decoder_start": start, "eos": eos, "pad": pad},
        "max_source_tokens": int(max_source_tokens),
        "max_new_tokens": int(max_new_tokens),
        "encoder": {
            "file": enc_rel,
            "inputs": {
                "input_ids": "input_ids",
                "attention_mask": "attention_mask" if "attention_mask" in enc.inputs else None,
                "sequence_lengths": None,
            },
            "outputs": {"hidden_states": enc_out},
        },
        "decoder": {
            "state": "past_key_values",
            "file": dec_rel or mg_rel,
            "with_past_file": wp_rel,
            "merged_file": mg_rel,
            "inputs": {
                "input_ids": "input_ids",
                "encoder_hidden_states": "encoder_hidden_states",
                "encoder_attention_mask": "encoder_attention_mask" if has_mask else None,
                "use_cache_branch": "use_cache_branch" if mg_rel else None,
            },
            "outputs": {"logits": "logits"},
            "logits": "raw",
            "past": {
                "layers": layers,
                "heads": heads,
                "head_dim": head_dim,
                "input_prefix": INPUT_PREFIX,
                "output_prefix": OUTPUT_PREFIX,
            },
        },
        "files_sha256": hashes,
    }


def write_manifest(directory: str, **kwargs) -> dict:
    manifest = build_manifest(directory, **kwargs)
    path = os.path.join(os.path.abspath(directory), "manifest.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
    d = manifest["decoder"]
    log(f"wrote {path}: encoder {manifest['encoder']['file']}, decoder {d['file']}, with_past "
        f"{d['with_past_file']}, merged {d['merged_file']}; past {d['past']['layers']} layers x "
        f"{d['past']['heads']} heads x {d['past']['head_dim']}; tokens {manifest['tokens']}")
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="Optimum export directory (config.json + *.onnx + tokenizer.json)")
    ap.add_argument("--source-lang", required=True)
    ap.add_argument("--target-lang", required=True)
    ap.add_argument("--name", help="model name (default: the directory name)")
    ap.add_argument("--description")
    ap.add_argument("--source", help="where the model comes from (default: config.json _name_or_path)")
    ap.add_argument("--license")
    ap.add_argument("--tokenizer", help="tokenizer.json for both sides (default: tokenizer.json)")
    ap.add_argument("--source-tokenizer")
    ap.add_argument("--target-tokenizer")
    ap.add_argument("--encoder", help=f"default: {ENCODER}")
    ap.add_argument("--decoder", help=f"default: {DECODER}")
    ap.add_argument("--with-past", help=f"default: {WITH_PAST} if present")
    ap.add_argument("--merged", help=f"default: {MERGED} if present")
    ap.add_argument("--no-with-past", action="store_true", help="do not list decoder_with_past")
    ap.add_argument("--no-merged", action="store_true", help="do not list the merged decoder")
    ap.add_argument("--max-source-tokens", type=int, help="default: config max_position_embeddings")
    ap.add_argument("--max-new-tokens", type=int, help="default: config max_length - 1 (capped by positions)")
    a = ap.parse_args()
    try:
        write_manifest(
            a.dir,
            source_lang=a.source_lang,
            target_lang=a.target_lang,
            name=a.name,
            description=a.description,
            source=a.source,
            license=a.license,
            source_tokenizer=a.source_tokenizer or a.tokenizer,
            target_tokenizer=a.target_tokenizer or a.tokenizer or a.source_tokenizer,
            encoder=a.encoder,
            decoder=a.decoder,
            with_past=a.with_past,
            merged=a.merged,
            use_with_past=not a.no_with_past,
            use_merged=not a.no_merged,
            max_source_tokens=a.max_source_tokens,
            max_new_tokens=a.max_new_tokens,
        )
    except ManifestError as e:
        print(f"[optimum_manifest] ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
