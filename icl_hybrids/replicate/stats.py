"""Scores and intervals: a run's ICL score against any baseline in its results.json, the 95% t-interval of a
cell's mean over seeds, Welch's interval for a difference of two cells, and the yes / no / unclear checks."""
from __future__ import annotations

import math

CONF = 0.95


def score_against(res: dict, baseline: str) -> float | None:
    """The ICL regression score of a run against any baseline in its results.json (paper eq. 1 over the
    scored positions): sum_i (e_model - e_zero) / sum_i (e_base - e_zero)."""
    if baseline == res.get("baseline") and res.get("icl_score") is not None:
        return float(res["icl_score"])
    errs = res.get("baseline_errors") or {}
    if baseline not in errs or "zero" not in errs or not res.get("model_errors"):
        return None
    k = list(res["context_lengths"])
    pos = [k.index(p) for p in (res.get("score_positions") or k) if p in k]
    m, b, z = res["model_errors"], errs[baseline], errs["zero"]
    den = sum(b[i] - z[i] for i in pos)
    return sum(m[i] - z[i] for i in pos) / den if den else None


def baseline_score(res: dict, estimator: str, baseline: str) -> float | None:
    """The ICL score an estimator of the run's results.json would get against another one (e.g. Lasso vs least squares)."""
    errs = res.get("baseline_errors") or {}
    if estimator not in errs:
        return None
    return score_against({**res, "model_errors": errs[estimator], "baseline": None}, baseline)


def t_interval(xs: list[float]) -> tuple[float, float, float] | None:
    """(mean, lo, hi): the 95% t-interval of the mean over seeds; None with fewer than 2 values."""
    from scipy import stats

    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    if len(xs) < 2:
        return None
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = float(stats.t.ppf(0.5 + CONF / 2, n - 1)) * sd / math.sqrt(n)
    return m, m - h, m + h


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float] | None:
    """(mean(a) - mean(b), lo, hi): Welch's 95% interval for the difference of two cells' means."""
    from scipy import stats

    a, b = [float(x) for x in a if x is not None], [float(x) for x in b if x is not None]
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    d = ma - mb
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    h = float(stats.t.ppf(0.5 + CONF / 2, df)) * se
    return d, d - h, d + h


def above(iv, thr: float, strict: bool = False) -> str:
    """yes: the whole interval is >= thr (> with strict); no: the whole interval is on the other side."""
    if iv is None:
        return "unclear"
    _, lo, hi = iv
    if (lo > thr) if strict else (lo >= thr):
        return "yes"
    if (hi <= thr) if strict else (hi < thr):
        return "no"
    return "unclear"


def below(iv, thr: float) -> str:
    if iv is None:
        return "unclear"
    _, lo, hi = iv
    if hi < thr:
        return "yes"
    if lo >= thr:
        return "no"
    return "unclear"


def combine(outcomes: list[str]) -> str:
    if not outcomes:
        return "inconclusive at this scale"
    if any(o == "no" for o in outcomes):
        return "not replicated"
    if all(o == "yes" for o in outcomes):
        return "replicated"
    return "inconclusive at this scale"

