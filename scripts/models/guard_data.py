"""The guard model's data: the training seed set, the held-out set, and the
obfuscated training variants (spaced letters, leetspeak, masked letters,
homophones / pinyin, mixed zh/en).

  * training: scripts/models/moderation_seed/<lang>[-<source>].jsonl
  * held-out: scripts/models/moderation_heldout/<lang>.jsonl, written
    separately (other scenarios, other phrasing) and never used for training,
    calibration or model selection;
  * one {"text", "labels", "kind", "tag"?} object per line (kind: positive |
    benign | hard_negative; labels empty unless positive; tag: the kind of
    hard negative, e.g. news, fiction, help, condemn, hyperbole, profanity);
    the language is the file name up to the first "-" or ".".
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass

import numpy as np

CATEGORIES = ["violent", "non_violent_illegal_acts", "sexual_content", "pii", "suicide_self_harm",
              "unethical_acts", "politically_sensitive", "copyright_violation", "jailbreak"]
KINDS = ("positive", "benign", "hard_negative")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SEED_DIR = os.path.join(HERE, "moderation_seed")
DEFAULT_HELDOUT_DIR = os.path.join(HERE, "moderation_heldout")


@dataclass
class Example:
    text: str
    labels: list[str]
    kind: str
    lang: str
    source: str  # file name, or "<file>+<augmentation>"
    tag: str = ""
    group: int = -1  # the original text's index: a text and its variants share it

    @property
    def stratum(self) -> tuple[str, str]:
        return self.lang, self.labels[0] if self.labels else self.kind


def data_files(*dirs: str) -> list[str]:
    files = [f for d in dirs for f in sorted(glob.glob(os.path.join(d, "*.jsonl")))]
    if not files:
        raise SystemExit(f"no *.jsonl files in {', '.join(dirs)}")
    return files


def data_sha256(*dirs: str) -> str:
    """sha256 of ``sha256sum <dir>/*.jsonl`` over the dirs, in order (what
    build-guard-model.sh compares)."""
    lines = ""
    for path in data_files(*dirs):
        with open(path, "rb") as f:
            rel = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
            lines += f"{hashlib.sha256(f.read()).hexdigest()}  {rel}\n"
    return hashlib.sha256(lines.encode()).hexdigest()


def load(data_dir: str) -> list[Example]:
    """All examples of a dir, validated."""
    out = []
    for path in data_files(data_dir):
        name = os.path.basename(path)
        lang = re.split(r"[-.]", name, maxsplit=1)[0]
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                d = json.loads(line)
                ex = Example(d["text"], list(d["labels"]), d["kind"], lang, name, d.get("tag", ""))
                bad = [lab for lab in ex.labels if lab not in CATEGORIES]
                if ex.kind not in KINDS or bad or (ex.kind == "positive") != bool(ex.labels) or not ex.text:
                    raise SystemExit(f"{path}:{n}: invalid example {d!r}")
                ex.group = len(out)
                out.append(ex)
    return out


# --------------------------------------------------------------------------
# obfuscated variants (training only)
# --------------------------------------------------------------------------

LEET = str.maketrans({"a": "@", "e": "3", "i": "1", "o": "0", "s": "$", "t": "7"})
# Chinese words and how people write around filters: homophones, pinyin, initials, English.
ZH_SWAPS = {
    "自杀": ["紫砂", "zisha", "自sha", "suicide"], "杀": ["sha", "刹", "kill"], "死": ["si", "s", "die"],
    "炸弹": ["炸dan", "zha弹", "bomb"], "炸": ["zha", "炸"], "毒品": ["du品", "drugs"], "毒": ["du", "毒"],
    "色情": ["se情", "涩情", "porn"], "裸": ["luo", "果"], "傻逼": ["sb", "傻b", "煞笔"], "操": ["草", "cao"],
    "你妈": ["nm", "尼玛"], "枪": ["qiang", "gun"], "刀": ["dao", "knife"], "砍": ["kan", "看"],
    "密码": ["mima", "password"], "身份证": ["sfz", "ID card"], "破解": ["po解", "crack"],
    "盗版": ["dao版", "pirated"], "约炮": ["约p", "yp"], "性": ["xing", "x"], "忽略": ["hu略", "ignore"],
    "指令": ["zhi令", "instructions"], "跳楼": ["tiao楼", "jump"], "割腕": ["ge腕", "cut wrist"],
    "诈骗": ["zha骗", "scam"], "黑客": ["hacker", "hei客"], "赌": ["du", "bet"], "贱": ["jian", "剑"],
}
CJK = re.compile(r"[\u4e00-\u9fff]")


def _rng(text: str, salt: str) -> np.random.Generator:
    digest = hashlib.sha256((salt + "\0" + text).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _words(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"[A-Za-z]{4,}", text)]


def _en_variant(text: str, rng: np.random.Generator) -> tuple[str, str] | None:
    spans = _words(text)
    if not spans:
        return None
    # the longest words carry the meaning more often than the short ones
    spans = sorted(spans, key=lambda s: s[0] - s[1])[: max(1, min(3, len(spans)))]
    kind = ["spaced", "leet", "masked"][int(rng.integers(3))]
    pick = [spans[int(i)] for i in sorted(rng.choice(len(spans), size=min(len(spans), 2), replace=False))]
    out, last = [], 0
    for a, b in sorted(pick):
        w = text[a:b]
        if kind == "spaced":
            w = " ".join(w)
        elif kind == "leet":
            w = w.lower().translate(LEET)
        else:
            vowels = [i for i, c in enumerate(w) if c in "aeiou" and 0 < i < len(w) - 1] or [len(w) // 2]
            i = vowels[int(rng.integers(len(vowels)))]
            w = w[:i] + "*" + w[i + 1:]
        out += [text[last:a], w]
        last = b
    return "".join(out + [text[last:]]), kind


def _zh_variant(text: str, rng: np.random.Generator) -> tuple[str, str] | None:
    hits = [k for k in ZH_SWAPS if k in text]
    kind = "homophone" if hits and rng.random() < 0.7 else "spaced"
    if kind == "homophone":
        out = text
        for k in sorted(hits, key=len, reverse=True)[:2]:
            if k in out:
                options = ZH_SWAPS[k]
                out = out.replace(k, options[int(rng.integers(len(options)))], 1)
        return (out, kind) if out != text else None
    chars = [m.start() for m in CJK.finditer(text)]
    if len(chars) < 4:
        return None
    start = int(rng.integers(0, max(1, len(chars) - 6)))
    a, b = chars[start], chars[min(len(chars) - 1, start + 5)] + 1
    sep = [" ", "*", ".", "/"][int(rng.integers(4))]
    return text[:a] + sep.join(text[a:b]) + text[b:], kind


def augment(examples: list[Example], share: dict[str, float]) -> list[Example]:
    """One obfuscated variant for a deterministic `share[kind]` of the texts
    (positives and negatives alike, so obfuscation itself is no signal)."""
    out = []
    for ex in examples:
        rng = _rng(ex.text, "augment")
        if rng.random() >= share.get(ex.kind, 0.0):
            continue
        made = (_zh_variant if ex.lang == "zh" else _en_variant)(ex.text, rng)
        if made and made[0] != ex.text:
            out.append(Example(made[0], ex.labels, ex.kind, ex.lang, f"{ex.source}+{made[1]}", ex.tag, ex.group))
    return out


def folds(examples: list[Example], k: int, seed: int) -> np.ndarray:
    """Fold index per example: stratified by (language, label or kind) over the
    original texts; variants go with their original (no leak across folds)."""
    rng = np.random.default_rng(seed)
    groups: dict[int, Example] = {}
    for ex in examples:
        groups.setdefault(ex.group, ex)
    strata: dict[tuple[str, str], list[int]] = {}
    for g, ex in sorted(groups.items()):
        strata.setdefault(ex.stratum, []).append(g)
    fold_of: dict[int, int] = {}
    offset = 0
    for key in sorted(strata):
        for j, g in enumerate(rng.permutation(strata[key])):
            fold_of[int(g)] = (j + offset) % k
        offset += len(strata[key])
    return np.array([fold_of[ex.group] for ex in examples])
