#!/usr/bin/env python3
"""Gatehouse moderation load test: pipeline items/s against raw ONNX Runtime items/s.

One run does, in order, on the same machine:

  1. baseline  raw ONNX Runtime (Python) running every moderation model the worker runs
               (--models, default GATEHOUSE_MODERATION_MODELS: guard-e5-small and
               toxic-bilstm), the way the worker does: each model on its own thread,
               concurrently, over the same N texts; the worker's preprocessing (manifest:
               prefix, bos/eos, windows of max_length for long texts, [UNK] dropping,
               fixed-length padding for the BiLSTM); texts taken in groups of --chunk (the
               worker's chunks), windows sorted by length and cut into batches of at most
               --batch-items rows and --batch-tokens tokens (rows x longest row), each padded
               only to its own longest row (attention_mask 0 on padding); --threads intra-op
               threads per session, spinning off (as the worker). Tokenization is inside the
               timed loop. Warmed up first.
  2. pipeline  the same N texts end to end through the running Gatehouse: one job (or
               --jobs K concurrent jobs splitting N) submitted with POST /v1/jobs, polled
               every --poll seconds until every job is completed/failed. Reports the items/s
               from the first POST to the poll that saw the last job finish, the POST /v1/jobs
               latency (202) and the time to the first finished item.
  3. alone     each model alone (raw ORT, same loop), for context (not part of the ratio).
  4. check     downloads the results and compares them with the baseline: `toxicity` (the
               BiLSTM's own labels) always; `scores` (every category: the highest of the
               guard's probability and the toxicity labels mapped onto the taxonomy) where no
               rule (PII, blocklist) fired; `windows`. Same models, same preprocessing: they
               must agree to 1e-3.

Prints a table and one JSON line, and writes that JSON to loadtest/results/latest.json.
When the worker's /metrics is reachable, the per-model batch/inference histograms are
diffed over the pipeline run to show where the worker spent its time.

The texts: a deterministic (seeded) mix of English and Chinese user comments, mostly benign,
some insults and threats; most under 60 tokens, about 2 % long (several model windows).

Talks only to loopback addresses. Every wait is bounded. Exit status: 0 ok, 1 the run
failed (a job failed, scores disagree, timeout), 2 usage/setup error.

Python 3.9+; stdlib urllib for HTTP; numpy, onnxruntime and tokenizers for the baseline.
The API key comes from --key or, better (not visible in `ps`), the GATEHOUSE_KEY env var.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import random
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
SCORE_TOLERANCE = 1e-3  # results carry 6 decimals; thread count changes float sums a little
DEFAULT_MODELS = "guard-e5-small,toxic-bilstm"  # the worker's default (common/src/config.rs)

# Qwen3Guard's categories (common/src/moderation.rs), and where the English toxicity model's
# labels land in them.
CATEGORIES = (
    "violent", "non_violent_illegal_acts", "sexual_content", "pii", "suicide_self_harm",
    "unethical_acts", "politically_sensitive", "copyright_violation", "jailbreak",
)
TOXICITY_CATEGORY = {
    "toxic": "unethical_acts", "severe_toxic": "unethical_acts", "obscene": "unethical_acts",
    "insult": "unethical_acts", "identity_hate": "unethical_acts", "threat": "violent",
}
FLAG_AT = 0.5  # the default policy's `controversial` threshold


# --------------------------------------------------------------------------- texts

# Small, varied corpora in the register of user comments, English and Chinese. Mostly
# benign; some sentences are toxic (insults, obscenity, threats) so the models have work on
# both sides.
BENIGN = [
    "Thanks for the quick reply, that fixed my problem.",
    "I think the second paragraph needs a citation before it can stay.",
    "Has anyone tried this recipe with almond flour instead of wheat?",
    "The update broke the login page on my phone, but the desktop site still works.",
    "Great article, I learned a lot about the history of the canal.",
    "Please keep the discussion on topic and assume good faith.",
    "We moved the meeting to Thursday afternoon because of the holiday.",
    "My order arrived two days late and the box was slightly damaged.",
    "Could you share the source for those numbers?",
    "I respectfully disagree, the data from last year points the other way.",
    "This is the best tutorial on the subject that I have found so far.",
    "The hotel staff were friendly and the room was clean.",
    "I reverted the edit because it removed sourced content without explanation.",
    "Does the library support streaming responses or only full downloads?",
    "Happy birthday, hope you have a wonderful day with your family!",
    "The battery lasts about six hours with the screen at half brightness.",
    "Interesting point, although the study only had forty participants.",
    "I'll be out of the office next week with limited access to email.",
    "The park near the river is lovely in the early morning.",
    "Can we add a section about the environmental impact?",
    "Welcome to the project, feel free to ask questions on the talk page.",
    "The new version is faster, but it uses noticeably more memory.",
    "I followed the instructions exactly and it still will not compile.",
    "Lovely photos, the colours of the sunset are amazing.",
    "Please do not add external links to commercial sites.",
    "According to the census the town had about twelve thousand residents.",
    "The customer service team resolved my issue within an hour.",
    "I'm not sure this counts as a reliable source, it looks like a personal blog.",
    "We should merge these two articles since they cover the same topic.",
    "Thank you all for the feedback, I will revise the draft tonight.",
    "The trail was muddy after the rain but the view from the top was worth it.",
    "What time does the store open on Sundays?",
    "This game gets better after the first few levels, keep going.",
    "I appreciate the detailed explanation, it makes much more sense now.",
    "The conference talks will be recorded and posted online later.",
    "Honestly the sequel was not as good as the original film.",
]
TOXIC = [
    "You are an idiot and nobody wants you here.",
    "Shut up, you stupid moron.",
    "What a pathetic loser, go away.",
    "You're so dumb it hurts to read your comments.",
    "This is the most worthless garbage I have ever seen, you clown.",
    "Go to hell, you ignorant fool.",
    "I hate you and everything you write.",
    "You are disgusting and your edits are trash.",
    "Stop vandalizing the page, you pathetic idiot.",
    "Nobody cares about your stupid opinion, moron.",
    "Fuck off and never come back.",
    "What a load of bullshit, you absolute jerk.",
    "I will find you and make you regret this.",
    "You should be ashamed, you worthless piece of crap.",
]
FILLER = [
    "honestly", "anyway", "also", "by the way", "in my opinion", "to be fair",
    "as I said", "frankly", "well", "for what it's worth", "again", "seriously",
]
BENIGN_ZH = [
    "谢谢你的耐心解答，问题已经解决了。",
    "这家店的牛肉面味道很好，就是排队的人有点多。",
    "第二段的数据需要注明出处，不然很难让人信服。",
    "有人试过用空气炸锅做这道菜吗？",
    "更新之后手机上的登录页面打不开了，电脑上倒是正常。",
    "这篇文章写得很用心，学到了不少运河的历史。",
    "请大家就事论事，不要跑题。",
    "会议改到周四下午了，因为周一放假。",
    "快递晚了两天才到，箱子也有点压坏了。",
    "能分享一下这些数字的来源吗？",
    "我不太同意这个观点，去年的数据显示的是另一种趋势。",
    "这是我目前看到的讲得最清楚的教程。",
    "酒店的服务员很热情，房间也很干净。",
    "周末带孩子去公园放风筝，天气特别好。",
    "祝你生日快乐，和家人度过美好的一天！",
    "电池续航大概六个小时，屏幕亮度开一半。",
    "有意思的观点，不过这个研究只有四十个参与者。",
    "下周我休假，邮件可能回复得比较慢。",
    "河边的那个公园早上散步特别舒服。",
    "建议增加一个关于环境影响的章节。",
    "欢迎加入项目，有问题随时在讨论区提问。",
    "新版本速度快了不少，但是内存占用明显变高了。",
    "我完全按照步骤操作了，还是编译不通过。",
    "照片拍得真好看，夕阳的颜色太美了。",
    "客服一个小时内就帮我解决了问题，点赞。",
    "这个来源不太可靠吧，看起来像是个人博客。",
    "这两篇文章内容重复，建议合并。",
    "感谢大家的反馈，我今晚修改一下草稿。",
    "雨后山路有点滑，但是山顶的风景值得一去。",
    "请问这家店周日几点开门？",
    "这个游戏前几关有点无聊，后面越来越好玩。",
    "讲解得很详细，现在终于弄明白了。",
    "讲座会录像，之后会上传到网上。",
    "续集没有第一部好看，剧情太拖沓了。",
    "楼主的分享很实用，先收藏了。",
    "这款耳机降噪效果不错，戴久了耳朵也不疼。",
    "今天地铁又晚点了，上班差点迟到。",
    "有没有人知道这个软件怎么导出数据？",
    "这道题的第二种解法更简洁，学习了。",
    "妈妈做的红烧肉永远是最好吃的。",
]
TOXIC_ZH = [
    "你就是个白痴，这里没人欢迎你。",
    "闭嘴吧，蠢货。",
    "真是个可怜的废物，赶紧滚。",
    "你脑子有病吧，看你的评论都觉得恶心。",
    "这是我见过最垃圾的东西，你这个小丑。",
    "滚开，你这个无知的傻瓜。",
    "我讨厌你，讨厌你写的每一个字。",
    "你真让人恶心，你改的东西全是垃圾。",
    "别再破坏页面了，你这个白痴。",
    "没人在乎你那愚蠢的看法，傻子。",
    "去死吧，永远别回来。",
    "我会找到你，让你为此后悔。",
    "再让我看到你，我就打断你的腿。",
    "你应该感到羞耻，你这个没用的东西。",
]
FILLER_ZH = ["说实话，", "顺便说一句，", "个人觉得", "其实", "讲真，", "总之，", "我觉得", "老实说，"]
EMOJI = ["😂", "👍", "🙏", "😅", "🤔", "❤️", "😡", "🔥"]
# Contact details some comments end with: the worker's PII rules fire on these (the check
# then compares only `toxicity`, as a rule raises `scores.pii`).
CONTACT = [" Email me at alex.chen@example.com if you want the file.", " My number is 415-555-0134."]
CONTACT_ZH = ["有问题可以打我电话13812345678。", "资料发我邮箱 wang.li@example.cn 吧。"]

ZH_SHARE = 0.5  # half the comments are Chinese
TOXIC_SHARE = 0.15  # about one comment in seven gets a toxic sentence
LONG_SHARE = 0.02  # long comments: several hundred words / characters, often > 1 window
CONTACT_SHARE = 0.01  # comments with an e-mail address or phone number


def english_comment(rng: random.Random, target: int) -> str:
    """About `target` words of English comment, sometimes with one toxic sentence."""
    sentences: list[str] = []
    words = 0
    while words < target:
        s = rng.choice(BENIGN)
        if rng.random() < 0.2:
            f = rng.choice(FILLER)
            head = s if re.match(r"I\b", s) else s[0].lower() + s[1:]
            s = f[0].upper() + f[1:] + ", " + head
        sentences.append(s)
        words += len(s.split())
    toxic_at = None
    if rng.random() < TOXIC_SHARE:
        pos = rng.randrange(len(sentences))
        sentences[pos] = rng.choice(TOXIC)
        toxic_at = sum(len(s.split()) for s in sentences[:pos])
    all_words = " ".join(sentences).split()
    start = 0
    if toxic_at is not None and toxic_at > target - 4:
        # The cut would lose the toxic sentence: move the window onto it.
        start = max(0, min(toxic_at, len(all_words) - target))
    text = " ".join(all_words[start: start + target])
    if rng.random() < 0.03:
        text = text.upper()
    return text


def chinese_comment(rng: random.Random, target: int) -> str:
    """Whole sentences up to about `target` characters of Chinese comment, sometimes with
    one toxic sentence, sometimes an emoji."""
    sentences: list[str] = []
    chars = 0
    while chars < target:
        s = rng.choice(BENIGN_ZH)
        if rng.random() < 0.2:
            s = rng.choice(FILLER_ZH) + s
        sentences.append(s)
        chars += len(s)
    if rng.random() < TOXIC_SHARE:
        sentences[rng.randrange(len(sentences))] = rng.choice(TOXIC_ZH)
    text = "".join(sentences)
    if rng.random() < 0.1:
        text += rng.choice(EMOJI)
    return text


def generate_texts(n: int, seed: int) -> list[str]:
    """n deterministic comments: ZH_SHARE Chinese, the rest English; most short (English
    5-60 words, mode 14; Chinese 6-90 characters, mode 20: under 60 tokens), LONG_SHARE long
    (English 250-900 words, Chinese 400-1,500 characters), CONTACT_SHARE with contact details."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        chinese = rng.random() < ZH_SHARE
        long = rng.random() < LONG_SHARE
        if chinese:
            target = rng.randint(400, 1500) if long else int(round(rng.triangular(6, 90, 20)))
            text = chinese_comment(rng, target)
        else:
            target = rng.randint(250, 900) if long else int(round(rng.triangular(5, 60, 14)))
            text = english_comment(rng, target)
        if rng.random() < CONTACT_SHARE:
            text += rng.choice(CONTACT_ZH if chinese else CONTACT)
        texts.append(text)
    return texts


def is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


# --------------------------------------------------------------------------- http

class HttpError(Exception):
    def __init__(self, status: int, body: str, url: str):
        super().__init__(f"HTTP {status} from {url}: {body[:300]}")
        self.status = status


def fail(message: str, status: int = 2):
    print(f"moderation.py: {message}", file=sys.stderr)
    raise SystemExit(status)


def check_loopback(url: str, what: str) -> None:
    host = urllib.parse.urlparse(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    fail(f"{what} {url!r} is not a loopback address; refusing")


# No proxies, whatever the environment says: all traffic stays on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, *, key: str | None = None, body: bytes | None = None,
         timeout: float = 30.0, content_type: str = "application/json") -> tuple[int, bytes]:
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if body is not None:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        raise HttpError(e.code, e.read().decode("utf-8", "replace"), url) from None


# --------------------------------------------------------------------------- baseline

def default_models() -> str:
    """As the worker: GATEHOUSE_MODERATION_MODELS, else GATEHOUSE_MODERATION_MODEL, else both."""
    plural = os.environ.get("GATEHOUSE_MODERATION_MODELS", "").strip()
    if any(m.strip() for m in plural.split(",")):
        return plural
    return os.environ.get("GATEHOUSE_MODERATION_MODEL", "").strip() or DEFAULT_MODELS


def load_manifest(models_dir: Path, name: str) -> tuple[Path, dict]:
    mdir = models_dir / name
    manifest_path = mdir / "manifest.json"
    if not manifest_path.is_file():
        fail(f"{manifest_path} not found: build the model (`make models`, "
             f"`bash scripts/build-guard-model.sh`) or pass --models-dir / --models")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    extra = set(manifest.get("inputs", {})) - {"input_ids", "attention_mask"}
    if "input_ids" not in manifest.get("inputs", {}) or extra:
        fail(f"{name}: the baseline supports input_ids (+ attention_mask) only, not {manifest.get('inputs')}")
    if manifest.get("activation", "none") not in ("sigmoid", "softmax", "none"):
        fail(f"{name}: unknown activation {manifest.get('activation')!r}")
    return mdir, manifest


class RawModel:
    """One of the worker's OnnxClassifiers, in Python: the same files, the same windows
    (worker/src/model/onnx.rs `TextEncoder::windows`), the same batch padding (`run`)."""

    def __init__(self, mdir: Path, manifest: dict, threads: int):
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.np = np
        self.name = manifest["name"]
        self.sha256 = str(manifest.get("sha256", "")).lower()
        self.labels = list(manifest["labels"])
        self.tokenizer = Tokenizer.from_file(str(mdir / manifest["files"]["tokenizer"]))
        unk = manifest.get("unk_token")
        self.unk_id = self.tokenizer.token_to_id(unk) if unk and manifest.get("drop_unknown_tokens") else None
        self.max_length = int(manifest["max_length"])
        self.left_trunc = manifest.get("truncation_side", "right") == "left"
        self.left_pad = manifest.get("padding_side", "right") == "left"
        self.pad_to_max = manifest.get("pad_to", "max_length") == "max_length"
        self.chunk_long = manifest.get("long_text", "truncate") == "chunk"
        self.pad = int(manifest.get("pad_token_id", 0))
        self.bos = manifest.get("bos_token_id")
        self.eos = manifest.get("eos_token_id")
        self.prefix = manifest.get("prefix", "")
        self.room = self.max_length - (self.bos is not None) - (self.eos is not None)
        trimmed = self.prefix.rstrip()
        self.prefix_ids = self.ids(trimmed) if trimmed else []
        self.activation = manifest.get("activation", "none")
        self.ids_input = manifest["inputs"]["input_ids"]
        self.mask_input = manifest["inputs"].get("attention_mask")
        self.output = manifest["output"]
        so = ort.SessionOptions()
        # The worker: GraphOptimizationLevel::Level3 (= ORT_ENABLE_ALL), intra-op spinning
        # off, with_intra_threads(n).
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(mdir / manifest["files"]["model"]), so, providers=["CPUExecutionProvider"]
        )
        self.ort_version = ort.__version__

    def ids(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ids if self.unk_id is None else [i for i in ids if i != self.unk_id]

    def wrap(self, content: list[int]) -> list[int]:
        return ([self.bos] if self.bos is not None else []) + content + ([self.eos] if self.eos is not None else [])

    def windows(self, text: str) -> list[list[int]]:
        """One text's model inputs: one window (truncated) or, for long_text "chunk", one per
        `room` ids, each repeating the prefix ids; unpadded unless pad_to is max_length."""
        ids = self.ids(self.prefix + text)
        if not self.chunk_long:
            if len(ids) > self.room:
                ids = ids[-self.room:] if self.left_trunc else ids[:self.room]
            windows = [self.wrap(ids)]
        else:
            head = len(self.prefix_ids) if ids[:len(self.prefix_ids)] == self.prefix_ids else 0
            prefix, body = ids[:head], ids[head:]
            step = self.room - len(prefix)
            windows = [self.wrap(prefix + body[i: i + step]) for i in range(0, len(body), step)] \
                or [self.wrap(prefix)]
        if self.pad_to_max:
            n = self.max_length
            windows = [self.fit(w, n) for w in windows]
        return windows

    def fit(self, ids: list[int], n: int) -> list[int]:
        if len(ids) > n:
            ids = ids[-n:] if self.left_trunc else ids[:n]
        padding = [self.pad] * (n - len(ids))
        return padding + ids if self.left_pad else ids + padding

    def run(self, rows: list[list[int]]):
        """Probabilities for a batch of windows, padded to its longest row."""
        np = self.np
        n = max(1, max(len(r) for r in rows))
        ids = np.full((len(rows), n), self.pad, dtype=np.int64)
        mask = np.zeros((len(rows), n), dtype=np.int64)
        for i, r in enumerate(rows):
            if self.left_pad:
                ids[i, n - len(r):] = r
                mask[i, n - len(r):] = 1
            else:
                ids[i, :len(r)] = r
                mask[i, :len(r)] = 1
        feeds = {self.ids_input: ids}
        if self.mask_input:
            feeds[self.mask_input] = mask * (ids != self.pad)  # the worker masks pad ids too
        logits = self.session.run([self.output], feeds)[0]
        if self.activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        if self.activation == "softmax":
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return logits


def plan_batches(lengths: list[int], max_items: int, max_tokens: int) -> list[tuple[int, int]]:
    """worker/src/batcher.rs `plan_batches`: cuts sorted lengths into consecutive [start, end)
    batches; a batch grows while rows <= max_items and rows x longest <= max_tokens."""
    batches, start, longest = [], 0, 0
    for i, n in enumerate(lengths):
        rows = i - start + 1
        wider = max(longest, n, 1)
        if rows > 1 and (rows > max_items or rows * wider > max_tokens):
            batches.append((start, i))
            start, longest = i, max(n, 1)
        else:
            longest = wider
    if start < len(lengths):
        batches.append((start, len(lengths)))
    return batches


def chunk_ranges(n: int, jobs: int, chunk: int) -> list[tuple[int, int]]:
    """The worker's queue messages: each job's items in chunks of `chunk`."""
    return [(s, min(s + chunk, b)) for a, b in split(n, jobs) for s in range(a, b, chunk)]


def score_texts(model: RawModel, texts: list[str], limits: dict, deadline: float | None = None) -> dict:
    """Scores every text like the worker's model thread: one chunk of texts (one queue
    message) at a time, its windows sorted by length, token-budgeted batches, per text the
    highest probability per label over its windows. Returns the probabilities and counters."""
    np = model.np
    out: list = []
    st = {"windows": 0, "tokens": 0, "padded": 0, "batches": 0, "encode_s": 0.0, "run_s": 0.0, "per_text": []}
    t_start = time.perf_counter()
    for first, end in chunk_ranges(len(texts), limits.get("jobs", 1), limits["chunk"]):
        t = time.perf_counter()
        encoded = [model.windows(x) for x in texts[first:end]]
        st["encode_s"] += time.perf_counter() - t
        owner = [i for i, ws in enumerate(encoded) for _ in ws]
        windows = [w for ws in encoded for w in ws]
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        lengths = [len(windows[i]) for i in order]
        scores = [None] * len(windows)
        for a, b in plan_batches(lengths, limits["items"], limits["tokens"]):
            rows = [windows[i] for i in order[a:b]]
            t = time.perf_counter()
            probs = model.run(rows)
            st["run_s"] += time.perf_counter() - t
            st["batches"] += 1
            st["padded"] += len(rows) * lengths[b - 1]
            for i, p in zip(order[a:b], probs):
                scores[i] = p
        st["windows"] += len(windows)
        st["per_text"].extend(len(ws) for ws in encoded)
        st["tokens"] += sum(lengths)
        worst = [None] * len(encoded)
        for i, p in zip(owner, scores):
            worst[i] = p if worst[i] is None else np.maximum(worst[i], p)
        out.extend(worst)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"baseline ({model.name}) did not finish within the --timeout")
    st["seconds"] = time.perf_counter() - t_start
    st["probs"] = out
    return st


def warm_up(models: list[RawModel], texts: list[str], limits: dict, seconds: float) -> None:
    """Untimed: the first groups of texts through each model, at least 3 batches and
    `seconds` (thread pools, arenas, caches, CPU clocks)."""
    for m in models:
        end = time.perf_counter() + seconds
        g = batches = 0
        while time.perf_counter() < end or batches < 3:
            first = (g * limits["chunk"]) % len(texts)
            batches += score_texts(m, texts[first: first + limits["chunk"]], {**limits, "jobs": 1})["batches"]
            g += 1


def run_concurrently(models: list[RawModel], texts: list[str], limits: dict, timeout: float) -> dict:
    """Every model over all texts, each on its own thread (as the worker's model threads;
    ORT releases the GIL while it runs). Wall time from start to the last model's end."""
    deadline = time.monotonic() + timeout
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def one(m: RawModel) -> None:
        try:
            results[m.name] = score_texts(m, texts, limits, deadline)
        except BaseException as e:  # noqa: BLE001 -- re-raised in the caller
            errors.append(e)

    threads = [threading.Thread(target=one, args=(m,), name=f"baseline-{m.name}", daemon=True) for m in models]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    if len(results) != len(models):
        raise TimeoutError(f"baseline did not finish within {timeout:.0f}s")
    return {"seconds": seconds, "per_model": results}


def expected_result(models: list[RawModel], per_model: dict, i: int) -> dict:
    """What the worker's verdict should hold for text i from the baseline's probabilities
    (before rules): the category scores (highest over models, toxicity labels mapped), the
    toxicity labels, the windows."""
    scores = {c: 0.0 for c in CATEGORIES}
    toxicity = {}
    for m in models:
        probs = per_model[m.name]["probs"][i]
        for label, p in zip(m.labels, probs):
            p = float(p)
            category = label if label in scores else TOXICITY_CATEGORY.get(label)
            if label not in scores:
                toxicity[label] = p
            if category is not None:
                scores[category] = max(scores[category], p)
    windows = max(per_model[m.name]["per_text"][i] for m in models)
    return {"scores": scores, "toxicity": toxicity, "windows": windows}


# --------------------------------------------------------------------------- pipeline

def job_body(texts: list[str], first_index: int) -> tuple[bytes, str]:
    """The job's body and its path: one JSON document while it fits the api's body limit
    (`GATEHOUSE_MAX_BODY_BYTES`, default 16 MiB), else NDJSON lines (one item per line, with
    the kind in the query string; bounded by `GATEHOUSE_MAX_FILE_BYTES` instead), so a
    100,000-item job is one request either way."""
    items = [{"custom_id": f"lt-{first_index + i:06d}", "text": t} for i, t in enumerate(texts)]
    body = json.dumps({"kind": "moderate", "items": items}, separators=(",", ":")).encode("utf-8")
    if len(body) <= env_positive("GATEHOUSE_MAX_BODY_BYTES", 16 * 1024 * 1024):
        return body, "/v1/jobs"
    lines = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items)
    return lines.encode("utf-8"), "/v1/jobs?kind=moderate"


def split(n: int, k: int) -> list[tuple[int, int]]:
    """k contiguous [start, end) ranges covering n."""
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def run_pipeline(api: str, key: str, texts: list[str], jobs: int, poll: float,
                 timeout: float, submit_timeout: float) -> dict:
    ranges = split(len(texts), jobs)
    bodies = [job_body(texts[a:b], a) for a, b in ranges]  # encoded before the clock starts
    submit_lat = [0.0] * jobs
    job_ids: list[str | None] = [None] * jobs

    t0 = time.perf_counter()

    def submit(i: int) -> None:
        s = time.perf_counter()
        body, path = bodies[i]
        status, raw = http("POST", f"{api}{path}", key=key, body=body, timeout=submit_timeout,
                           content_type="application/x-ndjson" if "?" in path else "application/json")
        submit_lat[i] = time.perf_counter() - s
        if status not in (200, 202):
            raise HttpError(status, raw.decode("utf-8", "replace"), f"{api}{path}")
        job_ids[i] = json.loads(raw)["id"]

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in [pool.submit(submit, i) for i in range(jobs)]:
            f.result()
    submitted = time.perf_counter()

    first_result = None
    done: dict[str, dict] = {}
    last: dict[str, dict] = {}
    deadline = t0 + timeout
    while True:
        for jid in job_ids:
            if jid in done:
                continue
            try:
                _, raw = http("GET", f"{api}/v1/jobs/{jid}", key=key, timeout=10)
            except (OSError, HttpError) as e:  # a slow poll is not fatal; the deadline is
                print(f"  poll {jid}: {e}", file=sys.stderr)
                continue
            job = json.loads(raw)
            last[jid] = job
            now = time.perf_counter()
            c = job["counts"]
            if first_result is None and c["succeeded"] + c["failed"] > 0:
                first_result = now
            if job["status"] in ("completed", "failed", "cancelled"):
                done[jid] = job
        now = time.perf_counter()
        if len(done) == jobs:
            break
        if now > deadline:
            progress = sum(j["counts"]["succeeded"] + j["counts"]["failed"] for j in last.values())
            raise TimeoutError(
                f"pipeline: only {len(done)}/{jobs} jobs finished, {progress}/{len(texts)} items, "
                f"after {timeout:.0f}s (raise --timeout, or check .cache/demo/worker.log)"
            )
        time.sleep(poll)
    end = time.perf_counter()

    # Server-side span: earliest created_at to latest completed_at (no poll granularity).
    def ts(s: str) -> float:
        s = re.sub(r"(\.\d{6})\d+", r"\1", s.replace("Z", "+00:00"))
        return datetime.fromisoformat(s).timestamp()

    created = [ts(j["created_at"]) for j in done.values()]
    completed = [ts(j["completed_at"]) for j in done.values() if j.get("completed_at")]
    server_s = (max(completed) - min(created)) if len(completed) == jobs else None

    return {
        "job_ids": job_ids,
        "jobs": list(done.values()),
        "seconds": end - t0,
        "submit_s": submitted - t0,
        "submit_each_s": submit_lat,
        "first_result_s": (first_result - t0) if first_result is not None else None,
        "server_s": server_s,
    }


def fetch_results(api: str, key: str, job_ids: list[str], timeout: float) -> dict[str, dict]:
    """custom_id -> result line, for every job."""
    out = {}
    for jid in job_ids:
        _, raw = http("GET", f"{api}/v1/jobs/{jid}/results", key=key, timeout=timeout)
        for line in raw.splitlines():
            if line.strip():
                r = json.loads(line)
                out[r.get("custom_id")] = r
    return out


# --------------------------------------------------------------------------- worker metrics

WATCHED = ("gatehouse_model_inference_seconds", "gatehouse_model_batch_size",
           "gatehouse_model_batch_tokens", "gatehouse_worker_chunk_seconds")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def _hist() -> dict:
    return {"sum": 0.0, "count": 0.0, "buckets": {}}


def scrape(url: str | None) -> dict | None:
    """{metric: {model label ('' if none): {"sum", "count", "buckets": {le: cumulative}}}},
    other label sets summed."""
    if not url:
        return None
    try:
        _, raw = http("GET", url, timeout=5)
    except (OSError, HttpError):
        return None
    out: dict[str, dict[str, dict]] = {m: {} for m in WATCHED}
    for line in raw.decode("utf-8", "replace").splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        for base in WATCHED:
            suffix = name[len(base):]
            if not name.startswith(base) or suffix not in ("_sum", "_count", "_bucket"):
                continue
            model = re.search(r'model="([^"]*)"', labels)
            h = out[base].setdefault(model.group(1) if model else "", _hist())
            v = float(value)
            if suffix == "_sum":
                h["sum"] += v
            elif suffix == "_count":
                h["count"] += v
            else:
                le = re.search(r'le="([^"]+)"', labels)
                if le:
                    h["buckets"][le.group(1)] = h["buckets"].get(le.group(1), 0.0) + v
    return out


def metrics_delta(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    d: dict[str, dict[str, dict]] = {}
    for m in WATCHED:
        d[m] = {}
        for key, a in after[m].items():
            b = before[m].get(key, _hist())
            d[m][key] = {
                "sum": a["sum"] - b["sum"],
                "count": a["count"] - b["count"],
                "buckets": {le: a["buckets"].get(le, 0.0) - b["buckets"].get(le, 0.0) for le in a["buckets"]},
            }
    return d


def bucket_quantile(buckets: dict, q: float) -> str:
    """Upper bound of the bucket holding quantile q (Prometheus-style, coarse)."""
    items = sorted(((math.inf if le == "+Inf" else float(le)), c) for le, c in buckets.items())
    if not items or items[-1][1] <= 0:
        return "-"
    target = q * items[-1][1]
    for le, c in items:
        if c >= target:
            return "+Inf" if le == math.inf else f"<={le:g}"
    return "-"


def size_histogram(buckets: dict) -> str:
    items = sorted(((math.inf if le == "+Inf" else float(le)), c) for le, c in buckets.items())
    prev, parts = 0.0, []
    lower = 0.0
    for le, c in items:
        n = c - prev
        if n > 0:
            label = f"{lower:g}<x<={le:g}" if le != math.inf else f">{lower:g}"
            parts.append(f"{label}:{int(n)}")
        prev, lower = c, le
    return ", ".join(parts) or "-"


# --------------------------------------------------------------------------- cpu accounting

# comm (as in /proc, at most 15 characters) -> component.
CPU_GROUPS = {
    "gatehouse-worke": "worker", "gatehouse-api": "api", "postgres": "postgres",
    "beam.smp": "rabbitmq", "epmd": "rabbitmq", "erl_child_setup": "rabbitmq", "inet_gethost": "rabbitmq",
}


def _read_stat(path: str) -> tuple[str, int] | None:
    """(comm, utime+stime ticks) from a /proc/.../stat file."""
    try:
        with open(path, "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lpar, rpar = raw.find("("), raw.rfind(")")
    fields = raw[rpar + 2:].split()
    return raw[lpar + 1: rpar], int(fields[11]) + int(fields[12])


def cpu_snapshot() -> dict | None:
    """CPU ticks per component (and per thread name inside the worker), plus the machine's
    busy/total ticks. Linux only; None elsewhere."""
    if not os.path.isdir("/proc/self/task"):
        return None
    procs: dict[str, int] = {}
    worker_threads: dict[tuple[int, str], int] = {}
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        st = _read_stat(f"/proc/{pid}/stat")
        if st is None:
            continue
        comm, ticks = st
        group = "loadtest (this script)" if int(pid) == me else CPU_GROUPS.get(comm)
        if group is None:
            continue
        procs[group] = procs.get(group, 0) + ticks
        if group == "worker":
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                tids = []
            for tid in tids:
                ts = _read_stat(f"/proc/{pid}/task/{tid}/stat")
                if ts is not None:
                    worker_threads[(int(tid), ts[0])] = ts[1]
    try:
        with open("/proc/stat", encoding="ascii") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        total, idle = sum(cpu[:8]), cpu[3] + cpu[4]
    except (OSError, ValueError, IndexError):
        total = idle = 0
    return {"procs": procs, "threads": worker_threads, "total": total, "idle": idle}


def cpu_delta(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    procs = {g: (t - before["procs"].get(g, 0)) / hz for g, t in after["procs"].items()}
    threads: dict[str, float] = {}
    for (tid, comm), t in after["threads"].items():
        d = (t - before["threads"].get((tid, comm), 0)) / hz
        # Name the worker's threads by role. ORT's pool threads inherit the process name;
        # tokio's workers and blocking pool (where the worker tokenizes) share one name.
        role = {"gatehouse-worke": "ORT pools + main", "tokio-rt-worker": "tokio (async + tokenizing)",
                "tokio-runtime-w": "tokio (async + tokenizing)", "lapin-io-loop": "amqp io"}.get(comm, comm)
        if comm.startswith("model-"):
            role = f"model thread {comm[len('model-'):]}{'…' if len(comm) == 15 else ''} (ORT caller)"
        threads[role] = threads.get(role, 0.0) + d
    total = (after["total"] - before["total"]) / hz
    busy = total - (after["idle"] - before["idle"]) / hz
    return {"procs": procs, "threads": threads, "busy": busy, "total": total}


# --------------------------------------------------------------------------- main

def env_positive(var: str, default: int) -> int:
    env = os.environ.get(var, "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else default


def default_threads() -> int:
    """GATEHOUSE_ORT_INTRA_THREADS if > 0, else os.cpu_count() (ORT's default, which the
    worker keeps when the variable is 0)."""
    return env_positive("GATEHOUSE_ORT_INTRA_THREADS", os.cpu_count() or 1)


def default_worker_metrics() -> str:
    listen = os.environ.get("GATEHOUSE_WORKER_LISTEN", "127.0.0.1:9091")
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "[::]":
        host = "[::1]"
    return f"http://{host}:{port}/metrics"


def positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def wait_quiet(limit_s: float, threshold: float) -> float | None:
    """Waits (at most limit_s) until everything but this script uses less than `threshold`
    cores, measured over 1 s windows. Returns the last measured load in cores (None: no /proc)."""
    deadline = time.monotonic() + limit_s
    said = False
    while True:
        a = cpu_snapshot()
        time.sleep(1.0)
        d = cpu_delta(a, cpu_snapshot())
        if d is None or d["total"] <= 0:
            return None
        wall = d["total"] / (os.cpu_count() or 1)
        load = (d["busy"] - d["procs"].get("loadtest (this script)", 0.0)) / wall
        if load < threshold or time.monotonic() >= deadline:
            if said:
                print(f"  ... load now {load:.2f} cores", flush=True)
            return load
        if not said:
            print(f"waiting (up to {limit_s:.0f}s) for the machine to settle: other processes use "
                  f"{load:.2f} cores ...", flush=True)
            said = True


def other_share(cpu: dict | None, exclude: tuple[str, ...]) -> float | None:
    """Share of the machine's CPU used by anything not in `exclude`, over a window.
    Windows too short to tell (less than NOISY_FLOOR cpu-s of others) count as 0."""
    if not cpu or cpu["total"] <= 0:
        return None
    mine = sum(v for g, v in cpu["procs"].items() if g in exclude)
    other = max(0.0, cpu["busy"] - mine)
    return other / cpu["total"] if other >= NOISY_FLOOR else 0.0


STACK = ("worker", "api", "postgres", "rabbitmq", "loadtest (this script)")
ME = ("loadtest (this script)",)
NOISY = 0.15  # more than this share of the machine used by others: flag the measurement
NOISY_FLOOR = 0.1  # cpu-s; below this, tick granularity (10 ms) and the kernel dominate


def measure_baseline(models: list[RawModel], texts: list[str], limits: dict, args) -> dict:
    """All models concurrently (the ratio's denominator)."""
    before = cpu_snapshot()
    base = run_concurrently(models, texts, limits, args.timeout)
    base["cpu"] = cpu_delta(before, cpu_snapshot())
    base["other"] = other_share(base["cpu"], ME)
    base["ips"] = len(texts) / base["seconds"]
    return base


def measure_alone(model: RawModel, texts: list[str], limits: dict, args) -> dict:
    before = cpu_snapshot()
    st = score_texts(model, texts, limits, time.monotonic() + args.timeout)
    cpu = cpu_delta(before, cpu_snapshot())
    return {"seconds": st["seconds"], "ips": len(texts) / st["seconds"], "run_s": st["run_s"],
            "encode_s": st["encode_s"], "other": other_share(cpu, ME)}


def check_results(results: dict[str, dict], models: list[RawModel], base: dict, n: int) -> dict:
    """Every item's result against the baseline: `toxicity` always, `scores` where no rule
    (PII, blocklist) could have raised them, `windows`."""
    c = {"score_diff": 0.0, "toxicity_diff": 0.0, "missing": 0, "skipped_rule": 0, "checked": 0,
         "windows_bad": 0, "flagged": 0, "worst": None, "worker_models": set()}

    def diff(kind: str, key: str, got, want: float, cid: str) -> None:
        d = abs(float(got) - want) if isinstance(got, (int, float)) else math.inf
        if d > c[kind]:
            c[kind] = d
            if d > SCORE_TOLERANCE and (c["worst"] is None or d > c["worst"][0]):
                c["worst"] = (d, cid, f"{kind.split('_')[0]}.{key}", got, round(want, 6))

    for i in range(n):
        cid = f"lt-{i:06d}"
        r = (results.get(cid) or {}).get("result")
        if not isinstance(r, dict) or not isinstance(r.get("scores"), dict):
            c["missing"] += 1
            continue
        want = expected_result(models, base["per_model"], i)
        c["flagged"] += bool(r.get("flagged"))
        c["worker_models"].update((m.get("name"), m.get("sha256")) for m in r.get("models") or [])
        got_tox = r.get("toxicity") or {}
        for label, p in want["toxicity"].items():
            diff("toxicity_diff", label, got_tox.get(label), p, cid)
        if any(s.get("detector") != "model" for s in r.get("signals") or []):
            c["skipped_rule"] += 1
        else:
            c["checked"] += 1
            for category, p in want["scores"].items():
                diff("score_diff", category, r["scores"].get(category), p, cid)
        if r.get("windows") != want["windows"]:
            c["windows_bad"] += 1
    return c


def measure_pipeline(api: str, key: str, texts: list[str], args, models: list[RawModel], base: dict) -> dict:
    m_before = scrape(args.worker_metrics)
    cpu_before = cpu_snapshot()
    pipe = run_pipeline(api, key, texts, args.jobs, args.poll, args.timeout,
                        submit_timeout=min(args.timeout, 300))
    cpu = cpu_delta(cpu_before, cpu_snapshot())
    pipe["metrics"] = metrics_delta(m_before, scrape(args.worker_metrics))
    pipe["cpu"] = cpu
    pipe["other"] = other_share(cpu, STACK)
    pipe["ips"] = len(texts) / pipe["seconds"]
    pipe["succeeded"] = sum(j["counts"]["succeeded"] for j in pipe["jobs"])
    pipe["failed"] = sum(j["counts"]["failed"] for j in pipe["jobs"])
    problems = []
    statuses = sorted({j["status"] for j in pipe["jobs"]})
    if statuses != ["completed"] or pipe["failed"]:
        problems.append(f"jobs ended {statuses} with {pipe['failed']} failed item(s)")
    pipe["check"] = None
    if not args.no_verify:
        try:
            results = fetch_results(api, key, pipe["job_ids"], timeout=min(args.timeout, 300))
        except (HttpError, OSError) as e:
            problems.append(f"cannot download the results: {e}")
            results = None
        if results is not None:
            c = check_results(results, models, base, len(texts))
            pipe["check"] = c
            if c["missing"]:
                problems.append(f"{c['missing']} item(s) without a result")
            ours = {(m.name, m.sha256) for m in models}
            if c["worker_models"] != ours:
                # E.g. a model rebuilt after the worker started: scores cannot agree.
                problems.append("the worker ran " + ", ".join(sorted(f"{n}@{h[:12]}" for n, h in c["worker_models"]))
                                + " but the baseline loaded " + ", ".join(sorted(f"{n}@{h[:12]}" for n, h in ours))
                                + ": restart the stack (make stop && make loadtest) or pass the same --models")
            if max(c["score_diff"], c["toxicity_diff"]) > SCORE_TOLERANCE:
                d, cid, field, got, want = c["worst"]
                problems.append(f"pipeline results differ from the baseline: scores by up to "
                                f"{c['score_diff']:.2e}, toxicity by up to {c['toxicity_diff']:.2e} "
                                f"(worst: {cid} {field} = {got}, baseline {want})")
            if c["windows_bad"]:
                problems.append(f"{c['windows_bad']} item(s) with a `windows` count other than the baseline's")
    pipe["problems"] = problems
    return pipe


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def check_api(api: str, key: str) -> int | None:
    """Is the api there, and does the key work? (Fail fast, before the baseline's seconds.)"""
    try:
        http("GET", f"{api}/readyz", timeout=5)
        http("GET", f"{api}/v1/jobs/job_00000000000000000000000000", key=key, timeout=5)
    except HttpError as e:
        if e.status in (401, 403):
            print(f"moderation.py: the API key was rejected ({e})", file=sys.stderr)
            return 2
        if e.status not in (400, 404):
            print(f"moderation.py: api not ready: {e}", file=sys.stderr)
            return 2
    except OSError as e:
        print(f"moderation.py: api {api} unreachable ({e}); start it with `make demo`", file=sys.stderr)
        return 2
    return None


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--api", default="http://127.0.0.1:8080", help="Gatehouse api base URL (loopback only)")
    ap.add_argument("--key", default=None, help="API key; if omitted, env GATEHOUSE_KEY (preferred: not visible in ps)")
    ap.add_argument("--items", type=positive_int, default=1_000, help="N: texts per measurement")
    ap.add_argument("--jobs", type=positive_int, default=1, help="K concurrent jobs splitting N")
    ap.add_argument("--models", default=default_models(),
                    help="comma-separated model directories under --models-dir, as the worker: "
                         "default GATEHOUSE_MODERATION_MODELS, else GATEHOUSE_MODERATION_MODEL, else " + DEFAULT_MODELS)
    ap.add_argument("--models-dir", type=Path,
                    default=Path(os.environ.get("GATEHOUSE_MODELS_DIR", REPO_ROOT / "models")),
                    help="models directory; default GATEHOUSE_MODELS_DIR, else <repo>/models")
    ap.add_argument("--threads", type=positive_int, default=default_threads(),
                    help="baseline intra-op threads per model; default GATEHOUSE_ORT_INTRA_THREADS if > 0, "
                         "else os.cpu_count(), as the worker")
    ap.add_argument("--batch-items", "--batch", type=positive_int,
                    default=env_positive("GATEHOUSE_BATCH_MAX_ITEMS", 64),
                    help="baseline rows per batch; default GATEHOUSE_BATCH_MAX_ITEMS, else 64, as the worker")
    ap.add_argument("--batch-tokens", type=positive_int,
                    default=env_positive("GATEHOUSE_BATCH_MAX_TOKENS", 8192),
                    help="baseline tokens per batch (rows x longest row); default GATEHOUSE_BATCH_MAX_TOKENS, "
                         "else 8192, as the worker")
    ap.add_argument("--chunk", type=positive_int, default=env_positive("GATEHOUSE_CHUNK_ITEMS", 100),
                    help="baseline texts sorted and batched together (the worker's chunk of a job); "
                         "default GATEHOUSE_CHUNK_ITEMS, else 100")
    ap.add_argument("--seed", type=int, default=20240601, help="text generator seed")
    ap.add_argument("--warmup", type=float, default=2.0, help="baseline warm-up per model, seconds (at least 3 batches)")
    ap.add_argument("--repeat", type=positive_int, default=1,
                    help="measure baseline+pipeline R times (alternating); report the medians")
    ap.add_argument("--no-alone", action="store_true", help="skip the per-model raw ORT measurements")
    ap.add_argument("--poll", type=float, default=0.1, help="job poll interval, seconds")
    ap.add_argument("--timeout", type=float, default=900.0, help="bound on each measurement, seconds")
    ap.add_argument("--wait-idle", type=float, default=60.0,
                    help="before each measurement, wait up to this many seconds for other processes "
                         "to use < --idle-cores (0: do not wait)")
    ap.add_argument("--idle-cores", type=float, default=0.25, help="see --wait-idle")
    ap.add_argument("--worker-metrics", default=default_worker_metrics(),
                    help="worker /metrics URL for the histogram breakdown ('' to skip)")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "latest.json", help="where the JSON line goes")
    ap.add_argument("--no-verify", action="store_true", help="skip the results download and the check")
    args = ap.parse_args()
    if args.poll <= 0 or args.timeout <= 0 or args.warmup < 0 or args.wait_idle < 0:
        ap.error("--poll and --timeout must be > 0, --warmup and --wait-idle >= 0")
    args.model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.model_names or len(set(args.model_names)) != len(args.model_names):
        ap.error("--models must name at least one model, each once")
    return args


def main() -> int:
    args = parse_args()
    api = args.api.rstrip("/")
    check_loopback(api, "--api")
    if args.worker_metrics:
        check_loopback(args.worker_metrics, "--worker-metrics")
    key = args.key or os.environ.get("GATEHOUSE_KEY")
    if not key:
        print("moderation.py: no API key: pass --key or set GATEHOUSE_KEY", file=sys.stderr)
        return 2
    max_items = env_positive("GATEHOUSE_MAX_ITEMS_PER_JOB", 100_000)
    if args.items > max_items * args.jobs:
        print(f"moderation.py: {args.items} items in {args.jobs} job(s) exceeds {max_items:,} items/job "
              "(GATEHOUSE_MAX_ITEMS_PER_JOB); raise --jobs",
              file=sys.stderr)
        return 2
    if args.jobs > args.items:
        print("moderation.py: --jobs must not exceed --items", file=sys.stderr)
        return 2
    socket.setdefaulttimeout(args.timeout)  # belt and braces: no socket waits forever
    status = check_api(api, key)
    if status is not None:
        return status

    texts = generate_texts(args.items, args.seed)
    models = [RawModel(*load_manifest(args.models_dir, name), args.threads) for name in args.model_names]
    limits = {"items": args.batch_items, "tokens": args.batch_tokens, "chunk": args.chunk, "jobs": args.jobs}
    n = len(texts)
    zh = sum(is_chinese(t) for t in texts)
    print(f"texts: {n} (seed {args.seed}): {zh} Chinese, {n - zh} English; models "
          f"{', '.join(f'{m.name}@{m.sha256[:12]}' for m in models)} ({args.models_dir})")
    print(f"baseline runtime: onnxruntime {models[0].ort_version} (Python), CPUExecutionProvider")
    warm_up(models, texts, limits, args.warmup)

    bases: list[dict] = []
    pipes: list[dict] = []
    alones: list[dict[str, dict]] = []
    for r in range(args.repeat):
        tag = f"[{r + 1}/{args.repeat}] " if args.repeat > 1 else ""
        if args.wait_idle > 0:
            wait_quiet(args.wait_idle, args.idle_cores)
        print(f"{tag}baseline: raw ONNX Runtime, {len(models)} model(s) each on its own thread, {args.threads} intra-op "
              f"thread(s) each, batches <= {args.batch_items} rows / {args.batch_tokens} tokens ...", flush=True)
        try:
            base = measure_baseline(models, texts, limits, args)
        except TimeoutError as e:
            print(f"moderation.py: {e}", file=sys.stderr)
            return 1
        bases.append(base)
        print(f"{tag}baseline: {base['seconds']:.2f}s, {base['ips']:,.1f} items/s")
        if args.wait_idle > 0:
            wait_quiet(args.wait_idle, args.idle_cores)
        print(f"{tag}pipeline: {args.jobs} job(s), {n} items via {api} ...", flush=True)
        try:
            pipe = measure_pipeline(api, key, texts, args, models, base)
        except (HttpError, OSError, TimeoutError) as e:
            print(f"moderation.py: pipeline failed: {e}", file=sys.stderr)
            return 1
        pipes.append(pipe)
        print(f"{tag}pipeline: {pipe['seconds']:.2f}s, {pipe['ips']:,.1f} items/s")
        alone: dict[str, dict] = {}
        if len(models) > 1 and not args.no_alone:
            for m in models:
                if args.wait_idle > 0:
                    wait_quiet(args.wait_idle, args.idle_cores)
                try:
                    alone[m.name] = measure_alone(m, texts, limits, args)
                except TimeoutError as e:
                    print(f"moderation.py: {e}", file=sys.stderr)
                    return 1
                print(f"{tag}{m.name} alone: {alone[m.name]['seconds']:.2f}s, {alone[m.name]['ips']:,.1f} items/s")
        alones.append(alone)
    return report(args, api, texts, models, bases, pipes, alones)


def report(args, api: str, texts: list[str], models: list[RawModel], bases: list[dict],
           pipes: list[dict], alones: list[dict[str, dict]]) -> int:
    n = len(texts)
    # With --repeat: medians over the runs no other process disturbed (over all runs if every
    # one was). The ratio is the median of the per-run ratios (each pairs a baseline with the
    # pipeline run right after it, so slow drifts of the machine cancel).
    quiet = [i for i in range(len(pipes)) if max(bases[i]["other"] or 0, pipes[i]["other"] or 0) <= NOISY]
    runs = quiet or list(range(len(pipes)))
    base_ips = median([bases[i]["ips"] for i in runs])
    pipe_ips = median([pipes[i]["ips"] for i in runs])
    ratio = median([pipes[i]["ips"] / bases[i]["ips"] for i in runs])
    # The run whose details are shown: the one with the median pipeline items/s.
    order = sorted(runs, key=lambda i: pipes[i]["ips"])
    mid = order[len(order) // 2]
    shown, base_shown = pipes[mid], bases[mid]
    stats = base_shown["per_model"]  # token counts are the same in every run
    # CPU share of other processes in every measurement the numbers rest on.
    others = [x for i in runs for x in (bases[i]["other"], pipes[i]["other"]) if x is not None]
    alone_ips = {}
    for m in models:
        got = [a[m.name] for a in alones if m.name in a]
        if got:
            calm = [g for g in got if (g["other"] or 0) <= NOISY] or got
            alone_ips[m.name] = median([g["ips"] for g in calm])
            others += [g["other"] for g in calm if g["other"] is not None]
    noisy = bool(others) and max(others) > NOISY
    submit_s = median([pipes[i]["submit_s"] for i in runs])
    firsts = [pipes[i]["first_result_s"] for i in runs if pipes[i]["first_result_s"] is not None]
    first_s = median(firsts) if firsts else None
    checks = [p["check"] for p in pipes if p["check"] is not None]
    score_diff = max((c["score_diff"] for c in checks), default=None)
    tox_diff = max((c["toxicity_diff"] for c in checks), default=None)
    problems = list(dict.fromkeys(q for p in pipes for q in p["problems"]))  # each once
    delta = shown["metrics"]

    def per_item(key: str) -> dict[str, float]:
        return {m.name: round(stats[m.name][key] / n, 2) for m in models}

    pipeline_padded = None
    if delta:
        pipeline_padded = {m.name: round(delta["gatehouse_model_batch_tokens"].get(m.name, _hist())["sum"] / n, 2)
                           for m in models}
    summary = {
        "items": n,
        "models": [m.name for m in models],
        "baseline_items_per_s": round(base_ips, 2),
        "pipeline_items_per_s": round(pipe_ips, 2),
        "ratio_pipeline_vs_raw_ort": round(ratio, 3),
        "alone_items_per_s": {k: round(v, 2) for k, v in alone_ips.items()},
        "tokens_per_item": per_item("tokens"),
        "windows_per_item": per_item("windows"),
        "padded_tokens_per_item_baseline": per_item("padded"),
        "padded_tokens_per_item_pipeline": pipeline_padded,
        "chinese_items": sum(is_chinese(t) for t in texts),
        "submit_ms": round(submit_s * 1000, 1),
        "first_result_ms": round(first_s * 1000, 1) if first_s is not None else None,
        "threads": args.threads,
        "batch_items": args.batch_items,
        "batch_tokens": args.batch_tokens,
        "chunk": args.chunk,
        "jobs": args.jobs,
        "repeat": args.repeat,
        "runs_in_medians": len(runs),
        "baseline_s": round(median([b["seconds"] for b in bases]), 3),
        "pipeline_s": round(median([p["seconds"] for p in pipes]), 3),
        "server_s": round(shown["server_s"], 3) if shown["server_s"] is not None else None,
        "max_abs_score_diff": float(f"{score_diff:.2e}") if score_diff is not None else None,
        "max_abs_toxicity_diff": float(f"{tox_diff:.2e}") if tox_diff is not None else None,
        "checked_items": checks[0]["checked"] if checks else None,
        "rule_items_skipped": checks[0]["skipped_rule"] if checks else None,
        "other_cpu_share_max": round(max(others), 3) if others else None,
    }

    # ---- table
    med = (f" (median of {len(runs)} quiet run(s) of {args.repeat})" if quiet else " (median)") if args.repeat > 1 else ""
    detail = " (median run)" if args.repeat > 1 else ""
    multi = [m for m in models if max(stats[m.name]["per_text"]) > 1]
    flagged = sum(1 for i in range(n)
                  if max(expected_result(models, stats, i)["scores"].values()) >= FLAG_AT)
    rows = [
        ("items", f"{n:,}", f"{summary['chinese_items']:,} Chinese; {flagged:,} with a model score >= {FLAG_AT}"
                            + (f"; {checks[0]['flagged']:,} flagged in the results" if checks else "")),
    ]
    for m in models:
        st = stats[m.name]
        long = sum(1 for w in st["per_text"] if w > 1)
        rows.append((f"tokens/item {m.name}", f"{st['tokens'] / n:,.1f}",
                     f"windows {st['windows'] / n:.3f}/item" + (f" ({long} items > 1 window)" if m in multi else "")
                     + f"; padded in batches: baseline {st['padded'] / n:,.1f}"
                     + (f", pipeline {pipeline_padded[m.name]:,.1f}" if pipeline_padded else "")))
    per_model_base = "; ".join(f"{m.name}: ORT {stats[m.name]['run_s']:.2f}s + tokenize {stats[m.name]['encode_s']:.2f}s"
                               f" in {stats[m.name]['batches']} batches" for m in models)
    rows += [
        ("baseline (raw ORT, Python)", f"{base_ips:,.1f} items/s",
         f"{summary['baseline_s']:.2f}s{med}; {'all models concurrently' if len(models) > 1 else models[0].name}, "
         f"{args.threads} thread(s) each; {per_model_base}"),
        ("pipeline (end to end)", f"{pipe_ips:,.1f} items/s",
         f"{summary['pipeline_s']:.2f}s{med} POST -> completed (server {summary['server_s']}s); {args.jobs} job(s)"),
        ("ratio pipeline / raw ORT", f"{ratio:.3f}", f"median of the per-run ratios{med}" if args.repeat > 1 else ""),
    ]
    for name, ips in alone_ips.items():
        rows.append((f"{name} alone (raw ORT)", f"{ips:,.1f} items/s", f"same loop, the other model(s) idle{med}"))
    rows += [
        ("submit (POST -> 202)", f"{summary['submit_ms']:,.0f} ms",
         ("" if args.jobs == 1 else "slowest of the concurrent POSTs") + med),
        ("time to first result", f"{summary['first_result_ms'] or 0:,.0f} ms",
         f"from the POST, poll every {args.poll * 1000:.0f} ms{med}"),
    ]
    if checks:
        c = checks[0]
        rows.append(("results vs baseline", f"max |diff| {max(score_diff, tox_diff):.1e}",
                     f"scores {score_diff:.1e} ({c['checked']:,} items; {c['skipped_rule']:,} with rule signals "
                     f"not compared), toxicity {tox_diff:.1e} (all); windows mismatches {c['windows_bad']}; "
                     f"{sum(p['succeeded'] for p in pipes):,} succeeded, {sum(p['failed'] for p in pipes):,} failed"))
    if args.repeat > 1:
        for i, (b, p) in enumerate(zip(bases, pipes)):
            alone = "".join(f", {k} alone {v['ips']:,.1f}/s (others {pct(v['other'])} cpu)"
                            for k, v in alones[i].items())
            rows.append((f"run {i + 1}", f"ratio {p['ips'] / b['ips']:.3f}",
                         f"baseline {b['ips']:,.1f}/s (others {pct(b['other'])} cpu), "
                         f"pipeline {p['ips']:,.1f}/s (others {pct(p['other'])} cpu){alone}"
                         + ("" if i in runs else " -- disturbed, not in the medians")))
    wall = shown["seconds"]
    if delta:
        for m in models:
            inf = delta["gatehouse_model_inference_seconds"].get(m.name, _hist())
            bs = delta["gatehouse_model_batch_size"].get(m.name, _hist())
            bt = delta["gatehouse_model_batch_tokens"].get(m.name, _hist())
            if inf["count"] <= 0:
                rows.append((f"worker: {m.name}", "-", "no batches recorded"))
                continue
            st = stats[m.name]
            rows.append((f"worker: {m.name}{detail}", f"{int(inf['count']):,} batches",
                         f"{inf['sum']:.2f}s in ORT = {100 * inf['sum'] / wall:.0f}% of the wall time "
                         f"({n / inf['sum']:,.1f} items/s while busy; baseline ORT {st['run_s']:.2f}s in "
                         f"{st['batches']} batches = {n / st['run_s']:,.1f}/s); mean {bs['sum'] / bs['count']:.1f} rows, "
                         f"{bt['sum'] / bt['count']:,.0f} padded tokens per batch; p50 "
                         f"{bucket_quantile(inf['buckets'], 0.5)}s"))
            rows.append((f"worker: {m.name} batch rows", f"mean {bs['sum'] / bs['count']:.1f}",
                         size_histogram(bs["buckets"])))
        ch = delta["gatehouse_worker_chunk_seconds"].get("", _hist())
        if ch["count"] > 0:
            rows.append(("worker: chunks", f"{int(ch['count']):,} chunks",
                         f"mean {ch['sum'] / ch['count'] * 1000:,.0f} ms each (claim -> commit), "
                         f"p50 {bucket_quantile(ch['buckets'], 0.5)}s, p90 {bucket_quantile(ch['buckets'], 0.9)}s"))
    else:
        rows.append(("worker metrics", "-", f"not reachable at {args.worker_metrics or '(skipped)'}"))
    cpu = shown["cpu"]
    if cpu and cpu["total"] > 0:
        ncpu = os.cpu_count() or 1
        rows.append((f"cpu: whole machine{detail}", f"{cpu['busy']:.2f} cpu-s",
                     f"of {cpu['total']:.2f} available ({ncpu} cores x {cpu['total'] / ncpu:.2f}s) = "
                     f"{100 * cpu['busy'] / cpu['total']:.0f}% busy during the pipeline run"))
        for group, sec in sorted(cpu["procs"].items(), key=lambda kv: -kv[1]):
            note = ""
            if group == "worker" and cpu["threads"]:
                note = "; ".join(f"{r} {v:.2f}" for r, v in
                                 sorted(cpu["threads"].items(), key=lambda kv: -kv[1]) if v >= 0.005)
            rows.append((f"cpu: {group}", f"{sec:.2f} cpu-s", note))
        other = cpu["busy"] - sum(cpu["procs"].values())
        rows.append(("cpu: everything else", f"{other:.2f} cpu-s",
                     "kernel, other processes" + (" -- HIGH: something else competed for the CPU"
                                                  if other > max(NOISY * cpu["total"], NOISY_FLOOR) else "")))
    bcpu = base_shown["cpu"]
    if bcpu and bcpu["total"] > 0:
        mine = bcpu["procs"].get("loadtest (this script)", 0.0)
        other = bcpu["busy"] - mine
        rows.append((f"cpu during the baseline{detail}", f"{bcpu['busy']:.2f} cpu-s",
                     f"this script {mine:.2f}, everything else {other:.2f}"
                     + (" -- HIGH: the baseline shared the CPU" if other > max(NOISY * bcpu["total"], NOISY_FLOOR) else "")))

    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print()
    print(f"{'measure':<{w0}}  {'value':>{w1}}  notes")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * 5}")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:>{w1}}  {c}")
    print()
    if noisy:
        print(f"WARNING: other processes used up to {pct(max(others))} of the CPU during a measurement: "
              "the numbers are not representative (re-run on a quiet machine, or with --repeat 3)",
              file=sys.stderr)
    line = json.dumps(summary, ensure_ascii=False)
    print(line)

    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(line + "\n", encoding="utf-8")
    except OSError as e:
        print(f"moderation.py: cannot write {args.output}: {e}", file=sys.stderr)

    for p in problems:
        print(f"moderation.py: PROBLEM: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
