"""The guard model's head on the frozen e5-small embedding, and its calibration.

  * ``mlp``: 384 -> HIDDEN (ReLU) -> 9 logits, trained full-batch with Adam on
    a class-weighted, L2-regularised sum of the per-category log-losses
    (fixed seed: the same data gives the same weights); MEMBERS of them from
    consecutive seeds, logits averaged (less variance from the initialisation,
    which the per-category thresholds would otherwise chase), written as one
    MLP of MEMBERS x HIDDEN hidden units;
  * ``logreg``: one L2-regularised logistic regression per category (Newton);
  * class weights (per category, summing to 1): the category's positives
    POS_SHARE, clean texts (benign + hard negatives) CLEAN_SHARE, the other
    categories' positives the rest; hard negatives count HARD_WEIGHT times a
    benign text inside the clean share;
  * calibration: per-category thresholds chosen on out-of-fold predictions of
    the training set (k-fold, variants in their original's fold), maximising
    flagged-F1 minus HN_PENALTY x the hard-negative flag rate (averaged over the
    languages) plus CAT_WEIGHT x the mean category F1; they are folded into the
    last bias so that 0.5 is each category's calibrated operating point.

A head is a list of (W, b) layers in embedding space: logits = relu(...)W + b.
"""

from __future__ import annotations

import numpy as np

from guard_data import CATEGORIES, Example

POS_SHARE = 0.3
CLEAN_SHARE = 0.4
HARD_WEIGHT = 3.0
HIDDEN = 64
MEMBERS = 5
MLP_L2 = 3e-4
MLP_STEPS = 300
MLP_LR = 3e-3
LOGREG_L2 = 1e-2
HN_PENALTY = 1.0
CAT_WEIGHT = 0.2
GRID = np.round(np.arange(0.30, 0.901, 0.025), 3)  # 0.30 .. 0.90

Head = list[tuple[np.ndarray, np.ndarray]]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def targets(examples: list[Example]) -> np.ndarray:
    return np.array([[c in ex.labels for c in CATEGORIES] for ex in examples], dtype=np.float64)


def sample_weights(y: np.ndarray, examples: list[Example]) -> np.ndarray:
    """[n, 9] weights, each column summing to 1 (see the module doc)."""
    clean = np.array([ex.kind != "positive" for ex in examples])
    hard = np.array([ex.kind == "hard_negative" for ex in examples])
    base = np.where(hard, HARD_WEIGHT, 1.0)
    s = np.zeros_like(y)
    for j in range(y.shape[1]):
        pos, other = y[:, j] == 1, (y[:, j] == 0) & ~clean
        s[pos, j] = POS_SHARE / max(pos.sum(), 1)
        s[clean, j] = CLEAN_SHARE * base[clean] / max(base[clean].sum(), 1e-12)
        s[other, j] = (1.0 - POS_SHARE - CLEAN_SHARE) / max(other.sum(), 1)
        s[:, j] /= s[:, j].sum()
    return s


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu, sd = x.mean(0), x.std(0) + 1e-12
    return (x - mu) / sd, mu, sd


def _fit_logreg_one(z: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, float]:
    n, d = z.shape
    zb = np.hstack([z, np.ones((n, 1))])
    reg = np.full(d + 1, LOGREG_L2)
    reg[-1] = 0.0
    theta = np.zeros(d + 1)
    for _ in range(100):
        p = sigmoid(zb @ theta)
        grad = zb.T @ (s * (p - y)) + reg * theta
        hess = (zb * (s * p * (1 - p))[:, None]).T @ zb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta[:-1], float(theta[-1])


def fit_logreg(emb: np.ndarray, examples: list[Example]) -> Head:
    z, mu, sd = _standardise(emb.astype(np.float64))
    y = targets(examples)
    s = sample_weights(y, examples)
    ws, bs = [], []
    for j in range(len(CATEGORIES)):
        w, b = _fit_logreg_one(z, y[:, j], s[:, j])
        ws.append(w / sd)
        bs.append(b - float(mu @ (w / sd)))
    return [(np.stack(ws, axis=1), np.array(bs))]


def fit_mlp(emb: np.ndarray, examples: list[Example], seed: int) -> Head:
    """One hidden ReLU layer, Adam on the weighted log-loss (full batch)."""
    z, mu, sd = _standardise(emb.astype(np.float64))
    y = targets(examples)
    s = sample_weights(y, examples).astype(np.float32)
    z, y = z.astype(np.float32), y.astype(np.float32)
    rng = np.random.default_rng(seed)
    d, k = z.shape[1], y.shape[1]
    params = [rng.normal(0, np.sqrt(2.0 / d), (d, HIDDEN)), np.zeros(HIDDEN),
              rng.normal(0, np.sqrt(1.0 / HIDDEN), (HIDDEN, k)), np.zeros(k)]
    params = [p.astype(np.float32) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, MLP_STEPS + 1):
        w1, c1, w2, c2 = params
        pre = z @ w1 + c1
        h = np.maximum(pre, 0.0)
        p = sigmoid(h @ w2 + c2)
        g_out = s * (p - y)  # d(sum_j sum_i s_ij * logloss_ij) / d logits
        grads = [None, None, h.T @ g_out + MLP_L2 * w2, g_out.sum(0)]
        g_h = (g_out @ w2.T) * (pre > 0)
        grads[0] = z.T @ g_h + MLP_L2 * w1
        grads[1] = g_h.sum(0)
        lr = MLP_LR * min(1.0, t / 50)
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            params[i] = params[i] - lr * (m[i] / (1 - b1 ** t)) / (np.sqrt(v[i] / (1 - b2 ** t)) + eps)
    w1, c1, w2, c2 = (p.astype(np.float64) for p in params)
    # fold the standardisation into the first layer
    return [(w1 / sd[:, None], c1 - (mu / sd) @ w1), (w2, c2)]


def fit_ensemble(emb: np.ndarray, examples: list[Example], seed: int) -> Head:
    """MEMBERS MLPs from seeds seed, seed + 1, ... with their logits averaged,
    written as one MLP: hidden layers side by side, output weights / MEMBERS."""
    heads = [fit_mlp(emb, examples, seed + i) for i in range(MEMBERS)]
    if len(heads) == 1:
        return heads[0]
    w1 = np.hstack([h[0][0] for h in heads])
    c1 = np.concatenate([h[0][1] for h in heads])
    w2 = np.vstack([h[1][0] for h in heads]) / len(heads)
    c2 = np.mean([h[1][1] for h in heads], axis=0)
    return [(w1, c1), (w2, c2)]


def fit(kind: str, emb: np.ndarray, examples: list[Example], seed: int) -> Head:
    if kind == "mlp":
        return fit_ensemble(emb, examples, seed)
    if kind == "logreg":
        return fit_logreg(emb, examples)
    raise SystemExit(f"unknown head {kind!r}")


def logits(head: Head, emb: np.ndarray) -> np.ndarray:
    x = emb.astype(np.float64)
    for i, (w, b) in enumerate(head):
        x = x @ w + b
        if i < len(head) - 1:
            x = np.maximum(x, 0.0)
    return x


def shifted(head: Head, thresholds: np.ndarray) -> Head:
    """The head whose sigmoid crosses 0.5 where the original crosses `thresholds`."""
    w, b = head[-1]
    return head[:-1] + [(w, b - np.array([logit(float(t)) for t in thresholds]))]


def _f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp = float((truth & pred).sum())
    fp = float((~truth & pred).sum())
    fn = float((truth & ~pred).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


class Scorer:
    """The calibration objective over fixed examples (truth and groups precomputed)."""

    def __init__(self, examples: list[Example]) -> None:
        self.truth = targets(examples).astype(bool)
        langs = np.array([ex.lang for ex in examples])
        hard = np.array([ex.kind == "hard_negative" for ex in examples])
        self.langs = [(langs == lang, hard & (langs == lang)) for lang in sorted(set(langs.tolist()))]
        self.any_truth = self.truth.any(1)

    def __call__(self, probs: np.ndarray, thresholds: np.ndarray) -> float:
        pred = probs >= thresholds
        flagged = pred.any(1)
        per_lang = []
        for sel, hard in self.langs:
            hn = flagged[hard].mean() if hard.any() else 0.0
            per_lang.append(_f1(self.any_truth[sel], flagged[sel]) - HN_PENALTY * hn)
        cat = np.mean([_f1(self.truth[:, j], pred[:, j]) for j in range(self.truth.shape[1])])
        return float(np.mean(per_lang) + CAT_WEIGHT * cat)


def calibrate(probs: np.ndarray, examples: list[Example]) -> np.ndarray:
    """Per-category thresholds by coordinate ascent over GRID (from 0.5)."""
    objective = Scorer(examples)
    t = np.full(probs.shape[1], 0.5)
    best = objective(probs, t)
    for _ in range(4):
        improved = False
        for j in range(len(t)):
            for g in GRID:
                trial = t.copy()
                trial[j] = g
                score = objective(probs, trial)
                if score > best + 1e-9:
                    best, t, improved = score, trial, True
        if not improved:
            break
    return t


def out_of_fold(kind: str, emb: np.ndarray, examples: list[Example], fold: np.ndarray, seed: int) -> np.ndarray:
    """Probabilities of each training example from a head trained without its fold."""
    probs = np.zeros((len(examples), len(CATEGORIES)))
    for f in sorted(set(fold.tolist())):
        tr = np.flatnonzero(fold != f)
        te = np.flatnonzero(fold == f)
        head = fit(kind, emb[tr], [examples[i] for i in tr], seed)
        probs[te] = sigmoid(logits(head, emb[te]))
    return probs
