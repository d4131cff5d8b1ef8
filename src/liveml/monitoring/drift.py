"""Drift statistics: is a window of served inputs drawn from the same distribution as a reference?

Task-free and torch-free. A `Profile` holds per-input monitored quantities (numeric features,
categorical features, model embeddings); `compare(reference, window)` tests each of them
(KS, chi-squared, an MMD permutation test), corrects the p-values of the window for multiple
testing (Benjamini-Hochberg) and returns a JSON-ready report. `windows()` cuts a stream of
inputs into windows by count or by time.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from liveml.core.atomic import atomic_path

__all__ = ["Profile", "compare", "parse_every", "summary", "windows"]

# The report's "features" section names the MMD test "embedding": no feature may take it.
EMBEDDING = "embedding"
HISTOGRAM_BINS = 20
# The MMD's projection and kernel: at most this many PCA dims, this many random Fourier
# features, and at most this many rows per side (cost stays bounded whatever the window).
MMD_DIMS = 16
MMD_FEATURES = 256
MMD_MAX_ROWS = 2000
# Rows used for the median-distance bandwidth (pairwise distances grow quadratically).
BANDWIDTH_ROWS = 500
# Above this many pairs the exact one-sided KS p-value gets slow (50 ms at 2400 x 1000) or
# fails; the asymptotic one is then accurate to well under a percent.
EXACT_ONE_SIDED_PAIRS = 100_000

_MARKER = "__liveml_drift_profile__"
_PROFILE_VERSION = 1
_NUMERIC = "numeric:"
_CATEGORICAL = "categorical:"


@dataclass
class Profile:
    """Monitored quantities of a sample of inputs: one row per input.

    `numeric` maps a name to float64 values (e.g. brightness, confidence), `categorical` a name
    to strings (e.g. predicted_class), `embedding` is the model's (n, d) float32 embeddings or
    None. Every array has the same n; numeric values must be finite.
    """

    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    embedding: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.numeric = {str(k): _numeric_column(k, v) for k, v in self.numeric.items()}
        self.categorical = {str(k): _categorical_column(k, v) for k, v in self.categorical.items()}
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ValueError(
                f"profile feature(s) {both} are both numeric and categorical; "
                "fix: give each feature one kind (rename one of them)"
            )
        if EMBEDDING in self.numeric or EMBEDDING in self.categorical:
            raise ValueError(
                f"a profile feature may not be named {EMBEDDING!r} (the report uses it for the "
                "embedding test); fix: rename the feature"
            )
        if self.embedding is not None:
            emb = np.asarray(self.embedding, dtype=np.float32)
            if emb.ndim != 2:
                raise ValueError(
                    f"profile embedding must be 2-D (rows, dims), got shape {emb.shape}; "
                    "fix: stack one embedding vector per input"
                )
            if not np.isfinite(emb).all():
                raise ValueError(
                    "profile embedding has non-finite values; fix: check the model's outputs"
                )
            self.embedding = emb
        lengths = {f"numeric {k!r}": len(v) for k, v in self.numeric.items()}
        lengths |= {f"categorical {k!r}": len(v) for k, v in self.categorical.items()}
        if self.embedding is not None:
            lengths["embedding"] = len(self.embedding)
        if len(set(lengths.values())) > 1:
            first = next(iter(lengths))
            odd = [name for name, n in lengths.items() if n != lengths[first]]
            raise ValueError(
                f"profile arrays differ in length: {first} has {lengths[first]} rows but "
                + ", ".join(f"{name} has {lengths[name]}" for name in odd)
                + "; fix: give every feature one value per input"
            )

    def __len__(self) -> int:
        for values in (*self.numeric.values(), *self.categorical.values()):
            return len(values)
        return 0 if self.embedding is None else len(self.embedding)

    def take(self, index: Any) -> Profile:
        """The rows at `index` (int array, boolean mask or slice) as a new profile."""
        if isinstance(index, int | np.integer):
            index = [index]
        if not isinstance(index, slice):
            index = np.asarray(index)
        return Profile(
            numeric={k: v[index] for k, v in self.numeric.items()},
            categorical={k: v[index] for k, v in self.categorical.items()},
            embedding=None if self.embedding is None else self.embedding[index],
        )

    @classmethod
    def concat(cls, profiles: list[Profile]) -> Profile:
        """The rows of `profiles` one after the other; they must have the same features."""
        if not profiles:
            raise ValueError("Profile.concat needs at least one profile")
        first = profiles[0]
        for i, other in enumerate(profiles[1:], start=1):
            problem = _mismatch(first, other)
            if problem:
                raise ValueError(
                    f"cannot concatenate profile {i} with profile 0: {problem}; "
                    "fix: build every profile with the same monitor and model"
                )
        embedding = None
        if first.embedding is not None:
            embedding = np.concatenate([p.embedding for p in profiles])  # type: ignore[misc]
        return cls(
            numeric={k: np.concatenate([p.numeric[k] for p in profiles]) for k in first.numeric},
            categorical={
                k: np.concatenate([p.categorical[k] for p in profiles]) for k in first.categorical
            },
            embedding=embedding,
        )

    @classmethod
    def from_rows(cls, rows: list[dict], embedding: np.ndarray | None = None) -> Profile:
        """A profile from one dict per input: float/int values are numeric, str categorical.

        A bool is categorical ("True"/"False"): a chi-squared test suits a two-level feature.
        """
        keys = list(rows[0]) if rows else []
        kinds: dict[str, str] = {}
        for i, row in enumerate(rows):
            if set(row) != set(keys):
                missing = sorted(set(keys) - set(row))
                extra = sorted(set(row) - set(keys))
                raise ValueError(
                    f"profile row {i} has different keys from row 0 (missing {missing}, "
                    f"extra {extra}); fix: give every input the same features"
                )
            for key, value in row.items():
                kind = _kind_of(value)
                if kind is None:
                    raise ValueError(
                        f"profile row {i}, feature {key!r}: value {value!r} of type "
                        f"{type(value).__name__} is neither a number nor a string; "
                        "fix: store a float, an int or a str"
                    )
                if kinds.setdefault(key, kind) != kind:
                    raise ValueError(
                        f"profile feature {key!r} is {kinds[key]} in an earlier row but {kind} "
                        f"in row {i} ({value!r}); fix: give each feature one kind"
                    )
        return cls(
            numeric={k: [float(r[k]) for r in rows] for k in keys if kinds[k] == "numeric"},
            categorical={k: [str(r[k]) for r in rows] for k in keys if kinds[k] == "categorical"},
            embedding=embedding,
        )

    def save(self, path: str | Path) -> None:
        """Write the profile to one .npz file (no pickled objects), atomically."""
        arrays: dict[str, np.ndarray] = {_MARKER: np.array(_PROFILE_VERSION)}
        arrays |= {_NUMERIC + k: v for k, v in self.numeric.items()}
        arrays |= {_CATEGORICAL + k: v for k, v in self.categorical.items()}
        if self.embedding is not None:
            arrays[EMBEDDING] = self.embedding
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            # A file object, not a name: np.savez would append ".npz" to the temp name.
            np.savez(f, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read a profile written by `save`; ValueError when the file is not one."""
        fix = "fix: rebuild it with Profile.save (the drift reference or a window profile)"
        try:
            data = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            # numpy reads an unknown file as a pickle and refuses it: say what it really is.
            raise ValueError(f"{path} is not a liveml drift profile ({exc}); {fix}") from exc
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} is a single .npy array, not a liveml drift profile; {fix}")
        with data:
            if _MARKER not in data.files:
                raise ValueError(f"{path} is an .npz file but not a liveml drift profile; {fix}")
            try:
                version = int(data[_MARKER])
                arrays = {name: data[name] for name in data.files}
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise ValueError(f"{path}: unreadable drift profile ({exc}); {fix}") from exc
        if version != _PROFILE_VERSION:
            raise ValueError(
                f"{path} is a drift profile of format version {version}, this liveml reads "
                f"version {_PROFILE_VERSION}; {fix}"
            )
        return cls(
            numeric={k[len(_NUMERIC) :]: v for k, v in arrays.items() if k.startswith(_NUMERIC)},
            categorical={
                k[len(_CATEGORICAL) :]: v for k, v in arrays.items() if k.startswith(_CATEGORICAL)
            },
            embedding=arrays.get(EMBEDDING),
        )


def _numeric_column(name: Any, values: Any) -> np.ndarray:
    try:
        column = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"numeric profile feature {name!r} has non-numeric values ({exc}); "
            "fix: store numbers, or make it a categorical feature"
        ) from exc
    if column.ndim != 1:
        raise ValueError(
            f"numeric profile feature {name!r} must be 1-D (one value per input), "
            f"got shape {column.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(column))
    if bad.size:
        raise ValueError(
            f"numeric profile feature {name!r} has {bad.size} non-finite value(s) (first at "
            f"row {bad[0]}: {column[bad[0]]}); fix: clip or floor it where it is computed "
            "(e.g. a dB floor for silence)"
        )
    return column


def _categorical_column(name: Any, values: Any) -> np.ndarray:
    column = np.asarray(values)
    if column.ndim != 1:
        raise ValueError(
            f"categorical profile feature {name!r} must be 1-D (one value per input), "
            f"got shape {column.shape}"
        )
    # A fixed-width str array: it saves without pickle, unlike an object array.
    return column.astype(str) if column.size else np.zeros(0, dtype="<U1")


def _kind_of(value: Any) -> str | None:
    if isinstance(value, bool | np.bool_ | str | np.str_):
        return "categorical"
    if isinstance(value, int | float | np.integer | np.floating):
        return "numeric"
    return None


def _mismatch(a: Profile, b: Profile) -> str | None:
    """What differs between the features of two profiles, or None."""
    problems = []
    for kind in ("numeric", "categorical"):
        names_a, names_b = set(getattr(a, kind)), set(getattr(b, kind))
        if names_a - names_b:
            problems.append(f"{kind} only in the first: {sorted(names_a - names_b)}")
        if names_b - names_a:
            problems.append(f"{kind} only in the second: {sorted(names_b - names_a)}")
    if (a.embedding is None) != (b.embedding is None):
        problems.append(
            "only the " + ("first" if b.embedding is None else "second") + " has an embedding"
        )
    elif a.embedding is not None and a.embedding.shape[1] != b.embedding.shape[1]:  # type: ignore[union-attr]
        problems.append(
            f"embedding dims differ ({a.embedding.shape[1]} vs {b.embedding.shape[1]})"  # type: ignore[union-attr]
        )
    return "; ".join(problems) or None


# -- the tests ------------------------------------------------------------------------------


def summary(values: np.ndarray) -> dict:
    """Mean, standard deviation (population) and 5/50/95th percentiles of `values`."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("summary of no values; fix: pass at least one value")
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p5": float(p5),
        "p50": float(p50),
        "p95": float(p95),
    }


def _ks(x: np.ndarray, y: np.ndarray, alternative: str = "two-sided") -> tuple[float, float]:
    from scipy import stats

    method = "auto"
    if alternative != "two-sided" and len(x) * len(y) > EXACT_ONE_SIDED_PAIRS:
        method = "asymp"
    with warnings.catch_warnings():
        # scipy falls back to the asymptotic p-value by itself; its warning says nothing more.
        warnings.filterwarnings("ignore", message=".*Exact calculation unsuccessful.*")
        res = stats.ks_2samp(x, y, alternative=alternative, method=method)
    return float(res.statistic), float(res.pvalue)


def _scale(reference: np.ndarray, window: np.ndarray) -> float:
    """The unit of effect sizes: the reference's std; for a constant reference, the pooled one."""
    for values in (reference, np.concatenate([reference, window])):
        std = float(values.std())
        if std > 0:
            return std
    return 1.0  # both sides one and the same constant: every effect is 0 anyway


def _histogram(reference: np.ndarray, window: np.ndarray) -> dict:
    """Shares in 20 bins between the reference's 1% and 99% quantiles; outliers in end bins."""
    lo, hi = (float(q) for q in np.quantile(reference, [0.01, 0.99]))
    if hi <= lo:  # a (nearly) constant reference: span the pooled values, or a unit around it
        both = np.concatenate([reference, window])
        lo, hi = float(both.min()), float(both.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)

    def shares(values: np.ndarray) -> list[float]:
        counts, _ = np.histogram(np.clip(values, lo, hi), bins=edges)
        return (counts / len(values)).tolist()

    return {"edges": edges.tolist(), "reference": shares(reference), "window": shares(window)}


def _numeric_test(reference: np.ndarray, window: np.ndarray) -> dict:
    from scipy import stats

    statistic, p_value = _ks(reference, window)
    scale = _scale(reference, window)
    return {
        "kind": "numeric",
        "test": "ks",
        "statistic": statistic,
        "p_value": p_value,
        "p_adjusted": None,
        "drifted": None,
        "shift_sd": float((window.mean() - reference.mean()) / scale),
        "wasserstein_sd": float(stats.wasserstein_distance(reference, window) / scale),
        "reference": summary(reference),
        "window": summary(window),
        "histogram": _histogram(reference, window),
    }


def _categorical_test(reference: np.ndarray, window: np.ndarray, seed: int = 0) -> dict:
    from scipy import stats

    categories = np.union1d(reference, window)
    table = np.stack(
        [
            np.array([np.count_nonzero(side == c) for c in categories])
            for side in (reference, window)
        ]
    )
    if len(categories) < 2:
        statistic, p_value = 0.0, 1.0  # one category on both sides: nothing can differ
    else:
        res = stats.chi2_contingency(table)
        statistic, p_value = float(res.statistic), float(res.pvalue)
        if res.expected_freq.min() < MIN_EXPECTED:
            codes = [np.searchsorted(categories, side) for side in (reference, window)]
            p_value = _permutation_chi2_p(table, codes, seed)
    ref_share, win_share = (row / row.sum() for row in table)
    return {
        "kind": "categorical",
        "test": "chi2",  # p by permutation when counts are small
        "statistic": statistic,
        "p_value": p_value,
        "p_adjusted": None,
        "drifted": None,
        "reference": {str(c): float(s) for c, s in zip(categories, ref_share, strict=True)},
        "window": {str(c): float(s) for c, s in zip(categories, win_share, strict=True)},
    }


# Cochran's rule: the chi-squared distribution fits the statistic only when every category is
# expected about 5 times or more in each sample.
MIN_EXPECTED = 5.0
CATEGORICAL_RESAMPLES = 1999


def _permutation_chi2_p(table: np.ndarray, codes: list[np.ndarray], seed: int) -> float:
    """p-value of the chi-squared statistic from a permutation test: valid at any count, where
    its chi-squared distribution is not (a window of 50 photos expects 1.4 without a detection,
    far below Cochran's 5). `codes`: each side's category indices (columns of `table`)."""
    from scipy import stats

    totals = table.sum(axis=0).astype(float)  # per category: fixed under relabelling
    sizes = table.sum(axis=1).astype(float)

    def chi2(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        # The window's counts decide the whole table: the reference row is totals - window.
        win = np.stack([(y == c).sum(axis=-1) for c in range(table.shape[1])], axis=-1)
        observed = np.stack([totals - win, win], axis=-2)  # (..., 2, K)
        e = sizes[:, None] * totals / totals.sum()
        return ((observed - e) ** 2 / e).sum(axis=(-2, -1))

    res = stats.permutation_test(
        codes,
        chi2,
        permutation_type="independent",
        vectorized=True,
        n_resamples=CATEGORICAL_RESAMPLES,
        alternative="greater",
        random_state=seed,
    )
    return float(res.pvalue)


def _mmd_test(reference: np.ndarray, window: np.ndarray, permutations: int, seed: int) -> dict:
    """Gaussian-kernel MMD^2 between the two embeddings, with a permutation p-value.

    The projection (standardize, PCA to <= 16 dims) and the median-distance bandwidth are
    fitted on the POOLED rows, not on the reference alone: then the statistic is a symmetric
    function of the pool and relabelling it is an exact permutation test. (PCA fitted on the
    reference overfits it: its top sample directions carry more of its variance than of a fresh
    window's, so a window from the same distribution would look drifted.) The kernel is
    approximated by random Fourier features, which turns MMD^2 into the squared distance of two
    feature means and all the permutations into one matrix product.
    """
    from scipy.spatial.distance import pdist

    rng = np.random.default_rng(seed)
    ref = _subsample(reference, rng)
    win = _subsample(window, rng)
    m, n = len(ref), len(win)
    pool = np.concatenate([ref, win]).astype(np.float64)
    pool -= pool.mean(axis=0)
    std = pool.std(axis=0)
    pool /= np.where(std > 0, std, 1.0)
    # PCA by the eigen-decomposition of the d x d scatter matrix: cheaper than an SVD of the
    # rows, and the rows' singular vectors are not needed.
    eigvals, eigvecs = np.linalg.eigh(pool.T @ pool)
    order = np.argsort(eigvals)[::-1]
    keep = [i for i in order[:MMD_DIMS] if eigvals[i] > 1e-9 * max(eigvals[order[0]], 1e-300)]
    result = {
        "kind": "multivariate",
        "test": "mmd",
        "statistic": 0.0,
        "p_value": 1.0,
        "p_adjusted": None,
        "drifted": None,
        "permutations": int(permutations),
        "dims": len(keep),
    }
    if not keep:  # every row the same point: nothing can differ
        return result
    z = pool @ eigvecs[:, keep]
    sample = z if len(z) <= BANDWIDTH_ROWS else z[rng.choice(len(z), BANDWIDTH_ROWS, replace=False)]
    distances = pdist(sample)
    bandwidth = float(np.median(distances[distances > 0])) if np.any(distances > 0) else 1.0
    # Random Fourier features of exp(-|x - y|^2 / (2 bandwidth^2)) (Rahimi & Recht).
    # float32 from here on: 2-3x faster, and MMD^2 needs nowhere near float64's precision.
    omega = rng.normal(scale=1.0 / bandwidth, size=(z.shape[1], MMD_FEATURES))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=MMD_FEATURES)
    phi = z.astype(np.float32) @ omega.astype(np.float32)
    phi += phase.astype(np.float32)
    np.cos(phi, out=phi)
    phi *= np.float32(np.sqrt(2.0 / MMD_FEATURES))
    total = phi.sum(axis=0, dtype=np.float64)

    def mmd2(window_sums: np.ndarray) -> np.ndarray:
        diff = window_sums / n - (total - window_sums) / m
        return np.einsum("...i,...i->...", diff, diff)

    # Row 0 of `labels` marks the true window rows; each other row the n rows one random
    # relabelling calls the window. One product computes them all the same way.
    keys = rng.random((permutations, m + n), dtype=np.float32)
    picks = np.argpartition(keys, n - 1, axis=1)[:, :n]
    labels = np.zeros((1 + permutations, m + n), dtype=np.float32)
    labels[0, m:] = 1.0
    np.put_along_axis(labels[1:], picks, 1.0, axis=1)
    values = mmd2((labels @ phi).astype(np.float64))
    observed, null = float(values[0]), values[1:]
    result["statistic"] = observed
    result["p_value"] = float((1 + np.count_nonzero(null >= observed)) / (1 + permutations))
    return result


def _subsample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= MMD_MAX_ROWS:
        return rows
    return rows[np.sort(rng.choice(len(rows), MMD_MAX_ROWS, replace=False))]


def _check_comparable(reference: Profile, window: Profile) -> None:
    only_ref, only_win = [], []
    for kind in ("numeric", "categorical"):
        ref_names, win_names = set(getattr(reference, kind)), set(getattr(window, kind))
        only_ref += [f"{name} ({kind})" for name in sorted(ref_names - win_names)]
        only_win += [f"{name} ({kind})" for name in sorted(win_names - ref_names)]
    if reference.embedding is not None and window.embedding is None:
        only_ref.append(EMBEDDING)
    if window.embedding is not None and reference.embedding is None:
        only_win.append(EMBEDDING)
    if only_ref or only_win:
        raise ValueError(
            f"reference and window have different features: only in the reference "
            f"{only_ref or 'none'}, only in the window {only_win or 'none'}. The reference was "
            "built by another model version or monitor; fix: rebuild the reference with the "
            "current model"
        )
    if reference.embedding is not None and window.embedding is not None:
        d_ref, d_win = reference.embedding.shape[1], window.embedding.shape[1]
        if d_ref != d_win:
            raise ValueError(
                f"reference embeddings have {d_ref} dims but the window's have {d_win}: another "
                "model version made the reference; fix: rebuild the reference with the "
                "current model"
            )


def compare(
    reference: Profile,
    window: Profile,
    *,
    alpha: float = 0.05,
    permutations: int = 500,
    seed: int = 0,
    confidence: str = "confidence",
) -> dict:
    """Test every monitored quantity of `window` against `reference`; a JSON-ready report.

    Numeric features: two-sided KS; categorical: chi-squared on the 2 x K count table;
    embeddings: MMD permutation test. All the window's p-values are adjusted together by
    Benjamini-Hochberg, so a window from the reference distribution is flagged with probability
    at most `alpha`. The numeric feature named `confidence`, when present, also gets a
    one-sided KS test for a LOWER window confidence (a label-free sign of worse predictions);
    its `drifted` is that unadjusted one-sided p <= alpha.
    """
    from scipy import stats

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations!r}")
    if len(window) < 2:
        raise ValueError(
            f"a window needs at least 2 inputs, got {len(window)}; fix: wait for more inputs "
            "or use a larger window"
        )
    if len(reference) < 2:
        raise ValueError(
            f"the reference needs at least 2 inputs, got {len(reference)}; "
            "fix: rebuild the reference with more inputs"
        )
    _check_comparable(reference, window)
    if confidence in reference.categorical:
        raise ValueError(
            f"the confidence feature {confidence!r} is categorical; fix: profile it as a number "
            "or pass the name of the numeric confidence feature"
        )

    has_mmd = reference.embedding is not None and window.embedding is not None
    family = len(reference.numeric) + len(reference.categorical) + has_mmd
    if has_mmd and family / (1 + permutations) > alpha:
        # The smallest permutation p-value is 1/(1 + permutations); BH multiplies it by up to
        # the family size, so below this many permutations the MMD alone can never flag.
        raise ValueError(
            f"{permutations} permutations are too few for {family} tests at alpha={alpha}: an "
            "embedding drift could never be flagged; fix: use at least "
            f"{int(np.ceil(family / alpha)) - 1} permutations"
        )

    features: dict[str, dict] = {}
    for name, ref in reference.numeric.items():
        features[name] = _numeric_test(ref, window.numeric[name])
    for name, ref in reference.categorical.items():
        features[name] = _categorical_test(ref, window.categorical[name], seed)
    if has_mmd:
        features[EMBEDDING] = _mmd_test(reference.embedding, window.embedding, permutations, seed)

    drifted = []
    if features:
        adjusted = stats.false_discovery_control([f["p_value"] for f in features.values()])
        for (name, result), p_adj in zip(features.items(), np.atleast_1d(adjusted), strict=True):
            result["p_adjusted"] = float(p_adj)
            result["drifted"] = bool(p_adj <= alpha)
            if result["drifted"]:
                drifted.append(name)

    confidence_report = None
    if confidence in reference.numeric:
        ref, win = reference.numeric[confidence], window.numeric[confidence]
        # scipy's "greater": the alternative is CDF(window) > CDF(reference) somewhere, i.e.
        # the window's confidence is stochastically LOWER.
        statistic, p_value = _ks(win, ref, alternative="greater")
        confidence_report = {
            "feature": confidence,
            "reference_mean": float(ref.mean()),
            "window_mean": float(win.mean()),
            "drop": float(ref.mean() - win.mean()),
            "statistic": statistic,
            "p_value": p_value,
            "drifted": bool(p_value <= alpha),
        }

    return {
        "n": len(window),
        "n_reference": len(reference),
        "alpha": float(alpha),
        "correction": "benjamini-hochberg",
        "drift": bool(drifted),
        "drifted": drifted,
        "features": features,
        "confidence": confidence_report,
    }


# -- windows ----------------------------------------------------------------------------------

_EVERY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_every(text: str) -> timedelta:
    """A window span such as "90s", "30m", "1h", "2d" or "1w" as a timedelta."""
    match = _EVERY.fullmatch(text) if isinstance(text, str) else None
    span = timedelta(**{_UNITS[match[2]]: float(match[1])}) if match else None
    if span is None or span <= timedelta(0):
        raise ValueError(
            f"cannot read the window span {text!r}; fix: a positive number and a unit "
            "s/m/h/d/w, e.g. '90s', '30m', '1h', '2d'"
        )
    return span


def _microseconds(timestamps: list[datetime] | np.ndarray) -> np.ndarray:
    """Each timestamp as int64 microseconds since the earliest one."""
    array = np.asarray(timestamps) if isinstance(timestamps, np.ndarray) else None
    if array is not None and np.issubdtype(array.dtype, np.datetime64):
        if np.isnat(array).any():
            raise ValueError("timestamps contain NaT; fix: drop inputs without a capture time")
        array = array.astype("datetime64[us]")
        return (array - array.min()).astype(np.int64)
    values = list(timestamps)
    if not all(isinstance(t, datetime) for t in values):
        raise ValueError(
            "timestamps must be datetimes or a numpy datetime64 array; fix: parse the capture "
            "times (datetime.fromisoformat)"
        )
    # Differences of datetimes, not .timestamp(): exact, and right for naive times across DST.
    try:
        first = min(values)
        return np.array([(t - first) // timedelta(microseconds=1) for t in values], np.int64)
    except TypeError as exc:
        raise ValueError(
            f"timestamps mix timezone-aware and naive datetimes ({exc}); fix: make them all "
            "aware (UTC)"
        ) from exc


def windows(
    timestamps: list[datetime] | np.ndarray,
    *,
    size: int | None = None,
    every: timedelta | None = None,
) -> list[np.ndarray]:
    """Index arrays (into `timestamps`) of consecutive windows, each in time order.

    By count (`size`): full windows only; a trailing partial window waits for more inputs.
    By time (`every`): buckets of that width from the earliest timestamp; empty buckets and
    buckets with fewer than 2 inputs (too few to test) are skipped.
    """
    if (size is None) == (every is None):
        raise ValueError("give exactly one of size (inputs per window) or every (a time span)")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int | np.integer)):
        raise ValueError(f"window size must be an int, got {size!r}")
    if size is not None and size < 2:
        raise ValueError(f"window size must be >= 2 (a test needs 2 inputs), got {size}")
    if every is not None and (not isinstance(every, timedelta) or every <= timedelta(0)):
        raise ValueError(f"every must be a positive timedelta (see parse_every), got {every!r}")
    if len(timestamps) == 0:
        return []
    offsets = _microseconds(timestamps)
    order = np.argsort(offsets, kind="stable")
    if size is not None:
        full = len(order) // size
        return [order[i * size : (i + 1) * size] for i in range(full)]
    width = every // timedelta(microseconds=1)
    if width < 1:
        raise ValueError(f"every must be at least 1 microsecond, got {every!r}")
    buckets = offsets[order] // width
    starts = np.flatnonzero(np.diff(buckets, prepend=-1))
    groups = np.split(order, starts[1:])
    return [group for group in groups if len(group) >= 2]
