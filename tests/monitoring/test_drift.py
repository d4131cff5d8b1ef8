"""Drift statistics: calibration under no drift, power against each kind of drift, the BH
correction, the report format, Profile files and windowing."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats

from liveml.monitoring.drift import Profile, compare, parse_every, summary, windows

NUMERIC = [f"f{i}" for i in range(5)]
UNTOUCHED = {"cls", "embedding"}
CLASSES = np.array(["scratch", "crack", "none"])
SHARES = np.array([0.5, 0.3, 0.2])


def population(
    rng: np.random.Generator,
    n: int,
    *,
    shift: dict[str, float] | None = None,
    shares: np.ndarray = SHARES,
    embedding_shift: float = 0.0,
) -> Profile:
    """n inputs: 5 correlated normal features, a 3-class feature and an 8-d embedding."""
    cov = 0.5 * np.eye(5) + 0.5  # unit variances, correlation 0.5
    values = rng.multivariate_normal(np.zeros(5), cov, size=n)
    numeric = {name: values[:, i] for i, name in enumerate(NUMERIC)}
    for name, amount in (shift or {}).items():
        numeric[name] = numeric[name] + amount
    embedding = rng.normal(size=(n, 8))
    embedding[:, :2] += embedding_shift
    return Profile(
        numeric=numeric,
        categorical={"cls": rng.choice(CLASSES, size=n, p=shares)},
        embedding=embedding.astype(np.float32),
    )


@pytest.fixture(scope="module")
def reference() -> Profile:
    return population(np.random.default_rng(12345), 1000)


def plain(obj) -> bool:
    """Whether `obj` holds only JSON's own Python types (no numpy scalars or arrays)."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(plain(v) for v in obj)
    return obj is None or type(obj) in (bool, int, float, str)


# -- calibration and power ------------------------------------------------------------------


def test_windows_without_drift_rarely_alarm(reference):
    # 200 windows from the reference distribution. At a true 5% rate the count of alarms is
    # Binomial(200, 0.05): mean 10, P(> 16) ~ 3%; BH (and conservative KS/chi2) keep it lower.
    rng = np.random.default_rng(7)
    # 200 permutations (not 500) keep the test fast; calibration does not depend on the count.
    alarms = sum(
        compare(reference, population(rng, 100), permutations=200)["drift"] for _ in range(200)
    )
    assert alarms <= 16, f"{alarms}/200 windows without drift were flagged"


def test_embedding_test_stays_calibrated_in_many_dims():
    # 64-d embeddings projected to 16 dims: a projection fitted on the reference alone would
    # flag nearly every window (its top PCA directions overfit it); the pooled fit does not.
    rng = np.random.default_rng(3)
    ref = Profile(embedding=rng.normal(size=(1000, 64)))
    alarms = 0
    for seed in range(40):
        window = Profile(embedding=rng.normal(size=(200, 64)))
        report = compare(ref, window, permutations=200, seed=seed)
        assert report["features"]["embedding"]["dims"] == 16
        alarms += report["drift"]
    assert alarms <= 6, f"{alarms}/40 windows without drift were flagged"


def test_half_sd_shift_in_one_feature_is_flagged_and_named(reference):
    extra = 0
    for seed in range(20):
        window = population(np.random.default_rng(seed), 200, shift={"f2": 0.5})
        report = compare(reference, window)
        assert report["drift"] is True and "f2" in report["drifted"], f"seed {seed}"
        extra += report["drifted"] != ["f2"]
        f2 = report["features"]["f2"]
        assert f2["drifted"] and f2["p_adjusted"] <= 0.05
        assert 0.3 < f2["shift_sd"] < 0.7 and 0.3 < f2["wasserstein_sd"] < 0.7
        assert f2["window"]["mean"] - f2["reference"]["mean"] == pytest.approx(
            f2["shift_sd"] * f2["reference"]["std"]
        )
    # BH bounds the false discovery rate, not the chance of any extra flag: with one drifted
    # feature among 7 tests an untouched one is also flagged in ~10% of windows.
    assert extra <= 5, f"untouched features flagged in {extra}/20 windows"


@pytest.mark.parametrize("seed", range(3))
def test_embedding_only_shift_is_caught_by_mmd(reference, seed):
    window = population(np.random.default_rng(100 + seed), 200, embedding_shift=0.3)
    report = compare(reference, window)
    assert report["drifted"] == ["embedding"]
    mmd = report["features"]["embedding"]
    assert mmd["test"] == "mmd" and mmd["dims"] == 8 and mmd["permutations"] == 500
    assert mmd["p_value"] == pytest.approx(1 / 501)


def test_categorical_mix_change_is_caught_by_chi2(reference):
    window = population(np.random.default_rng(5), 200, shares=np.array([0.3, 0.3, 0.4]))
    report = compare(reference, window)
    assert report["drifted"] == ["cls"]
    cls = report["features"]["cls"]
    assert cls["test"] == "chi2" and cls["p_adjusted"] <= 0.05
    assert set(cls["window"]) == set(CLASSES)
    assert cls["window"]["none"] > cls["reference"]["none"] + 0.1
    assert sum(cls["window"].values()) == pytest.approx(1.0)


def test_a_category_seen_on_one_side_only_counts_in_the_union():
    ref = Profile(categorical={"cls": ["a"] * 50 + ["b"] * 50})
    window = Profile(categorical={"cls": ["a"] * 30 + ["c"] * 30})
    cls = compare(ref, window)["features"]["cls"]
    assert cls["reference"] == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert cls["window"] == {"a": 0.5, "b": 0.0, "c": 0.5}
    assert cls["drifted"]
    single = compare(Profile(categorical={"c": ["a"] * 9}), Profile(categorical={"c": ["a"] * 3}))
    assert single["features"]["c"]["p_value"] == 1.0


def confidence_profile(rng: np.random.Generator, n: int, shift: float = 0.0) -> Profile:
    return Profile(
        numeric={
            "confidence": np.clip(rng.beta(8, 2, size=n) + shift, 0, 1),
            "brightness": rng.normal(size=n),
        }
    )


def test_lower_confidence_is_flagged_higher_is_not():
    rng = np.random.default_rng(11)
    ref = confidence_profile(rng, 1000)
    lower = compare(ref, confidence_profile(rng, 200, shift=-0.05))["confidence"]
    assert lower["feature"] == "confidence"
    assert lower["drifted"] is True and lower["drop"] > 0.03
    assert lower["window_mean"] < lower["reference_mean"]
    higher = compare(ref, confidence_profile(rng, 200, shift=+0.05))
    # The rise is a drift of the feature (two-sided KS) but not a sign of worse predictions.
    assert higher["features"]["confidence"]["drifted"] is True
    assert higher["confidence"]["drifted"] is False
    assert higher["confidence"]["p_value"] > 0.5 and higher["confidence"]["drop"] < 0


def test_confidence_one_sided_p_stays_out_of_the_bh_family():
    rng = np.random.default_rng(12)
    ref = confidence_profile(rng, 1000)
    report = compare(ref, confidence_profile(rng, 200, shift=-0.02))
    features = report["features"]
    assert list(features) == ["confidence", "brightness"]
    expected = stats.false_discovery_control([f["p_value"] for f in features.values()])
    assert [f["p_adjusted"] for f in features.values()] == pytest.approx(expected.tolist())
    # One-sided in the direction of the shift: about half the two-sided p.
    assert report["confidence"]["p_value"] < features["confidence"]["p_value"]
    assert compare(ref, ref.take(slice(0, 200)), confidence="missing")["confidence"] is None


def test_benjamini_hochberg_is_applied():
    # Quantile grids make the p-values exact: one feature at p ~ 0.034, nine at p = 1.
    ref_grid = stats.norm.ppf((np.arange(1000) + 0.5) / 1000)
    win_grid = stats.norm.ppf((np.arange(200) + 0.5) / 200)
    names = [f"x{i}" for i in range(10)]
    ref = Profile(numeric={name: ref_grid for name in names})
    window = Profile(numeric={name: win_grid + (0.27 if name == "x0" else 0) for name in names})
    report = compare(ref, window)
    x0 = report["features"]["x0"]
    assert 0.01 < x0["p_value"] < 0.05
    assert x0["p_adjusted"] == pytest.approx(10 * x0["p_value"])  # rank 1 of 10
    assert x0["drifted"] is False and report["drift"] is False
    alone = compare(
        Profile(numeric={"x0": ref_grid}), Profile(numeric={"x0": window.numeric["x0"]})
    )
    assert alone["drifted"] == ["x0"]


def test_too_few_permutations_for_the_family_is_an_error(reference):
    with pytest.raises(ValueError, match="at least 139 permutations"):
        compare(reference, reference.take(slice(0, 100)), permutations=100)


# -- the report -----------------------------------------------------------------------------


def test_report_format_is_plain_json(reference):
    rng = np.random.default_rng(21)
    ref = reference.take(slice(0, 500))
    ref.numeric["confidence"] = rng.uniform(size=500)
    window = population(rng, 50, shift={"f0": 1.0})
    window.numeric["confidence"] = rng.uniform(size=50)
    report = compare(ref, window, permutations=200)
    text = json.dumps(report, allow_nan=False)
    assert plain(json.loads(text)) and plain(report)
    assert list(report) == [
        "n", "n_reference", "alpha", "correction", "drift", "drifted", "features", "confidence",
    ]  # fmt: skip
    assert (report["n"], report["n_reference"], report["alpha"]) == (50, 500, 0.05)
    assert report["correction"] == "benjamini-hochberg"
    assert list(report["features"]) == [*NUMERIC, "confidence", "cls", "embedding"]
    numeric_keys = {
        "kind", "test", "statistic", "p_value", "p_adjusted", "drifted", "shift_sd",
        "wasserstein_sd", "reference", "window", "histogram",
    }  # fmt: skip
    f0 = report["features"]["f0"]
    assert set(f0) == numeric_keys and (f0["kind"], f0["test"]) == ("numeric", "ks")
    assert set(f0["reference"]) == {"mean", "std", "p5", "p50", "p95"}
    assert len(f0["histogram"]["edges"]) == 21
    for side in ("reference", "window"):
        assert len(f0["histogram"][side]) == 20
        assert sum(f0["histogram"][side]) == pytest.approx(1.0)
    assert set(report["features"]["cls"]) == {
        "kind", "test", "statistic", "p_value", "p_adjusted", "drifted", "reference", "window",
    }  # fmt: skip
    assert set(report["features"]["embedding"]) == {
        "kind", "test", "statistic", "p_value", "p_adjusted", "drifted", "permutations", "dims",
    }  # fmt: skip
    assert set(report["confidence"]) == {
        "feature", "reference_mean", "window_mean", "drop", "statistic", "p_value", "drifted",
    }  # fmt: skip
    assert report["drifted"] == [n for n, f in report["features"].items() if f["drifted"]]


def test_histogram_edges_span_reference_1_to_99_percent_outliers_in_end_bins():
    ref = np.linspace(0.0, 1.0, 1001)
    window = np.array([-5.0, 0.5, 0.5, 9.0])
    hist = compare(Profile(numeric={"x": ref}), Profile(numeric={"x": window}))["features"]["x"][
        "histogram"
    ]
    assert hist["edges"][0] == pytest.approx(0.01) and hist["edges"][-1] == pytest.approx(0.99)
    assert hist["window"][0] == 0.25 and hist["window"][-1] == 0.25
    assert hist["window"][10] == 0.5  # 0.5 sits in bin [0.5, 0.549)
    constant = compare(Profile(numeric={"x": [2.0] * 10}), Profile(numeric={"x": [2.0] * 5}))
    x = constant["features"]["x"]
    assert x["shift_sd"] == 0.0 and x["p_value"] == 1.0
    assert np.all(np.diff(x["histogram"]["edges"]) > 0)


def test_summary():
    values = np.arange(101, dtype=float)
    assert summary(values) == {
        "mean": 50.0, "std": pytest.approx(np.std(values)), "p5": 5.0, "p50": 50.0, "p95": 95.0,
    }  # fmt: skip
    with pytest.raises(ValueError, match="no values"):
        summary(np.array([]))


def test_compare_rejects_mismatched_features_and_tiny_windows(reference):
    window = reference.take(slice(0, 50))
    del window.numeric["f1"]
    window.numeric["sharpness"] = np.zeros(50)
    with pytest.raises(ValueError, match=r"f1 \(numeric\).*sharpness.*rebuild the reference"):
        compare(reference, window)
    no_embedding = reference.take(slice(0, 50))
    no_embedding.embedding = None
    with pytest.raises(ValueError, match=r"only in the reference.*embedding"):
        compare(reference, no_embedding)
    wide = Profile(embedding=np.zeros((50, 9)))
    with pytest.raises(ValueError, match="8 dims but the window's have 9"):
        compare(Profile(embedding=reference.embedding), wide)
    with pytest.raises(ValueError, match="at least 2 inputs, got 1"):
        compare(reference, reference.take([0]))


def test_compare_is_deterministic_for_a_seed(reference):
    window = population(np.random.default_rng(9), 100)
    assert compare(reference, window, seed=4) == compare(reference, window, seed=4)
    big = Profile.concat([reference, reference, reference.take(slice(0, 500))])  # 2500 rows
    mmd = compare(big, window)["features"]["embedding"]
    assert 0 < mmd["p_value"] <= 1 and mmd["dims"] == 8


# -- Profile --------------------------------------------------------------------------------


def test_profile_save_load_roundtrip_without_pickle(tmp_path, reference):
    profile = reference.take(np.arange(20))
    profile.categorical["label"] = np.array(["crème", "écran", "ok", "ok"] * 5)
    path = tmp_path / "reference.profile"  # no .npz suffix: saved exactly here
    profile.save(path)
    profile.save(path)  # over an existing file
    assert [p.name for p in tmp_path.iterdir()] == ["reference.profile"]
    with np.load(path, allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)
    loaded = Profile.load(path)
    assert len(loaded) == 20
    assert list(loaded.numeric) == list(profile.numeric)
    for name, values in profile.numeric.items():
        np.testing.assert_array_equal(loaded.numeric[name], values)
        assert loaded.numeric[name].dtype == np.float64
    for name, values in profile.categorical.items():
        np.testing.assert_array_equal(loaded.categorical[name], values)
    np.testing.assert_array_equal(loaded.embedding, profile.embedding)
    assert loaded.embedding.dtype == np.float32
    assert compare(loaded, profile, permutations=200)["drift"] is False


def test_profile_load_rejects_other_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a liveml drift profile"):
        Profile.load(text)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a liveml drift profile"):
        Profile.load(other)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __liveml_drift_profile__=np.array(1), x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="unreadable drift profile"):
        Profile.load(pickled)
    with pytest.raises(FileNotFoundError):
        Profile.load(tmp_path / "missing.npz")
    assert zipfile.is_zipfile(other)


def test_profile_checks_its_arrays():
    with pytest.raises(ValueError, match=r"numeric 'a' has 3 rows but categorical 'b' has 2"):
        Profile(numeric={"a": [1, 2, 3]}, categorical={"b": ["x", "y"]})
    with pytest.raises(ValueError, match="embedding has 2"):
        Profile(numeric={"a": [1, 2, 3]}, embedding=np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"'a' has 1 non-finite value\(s\) \(first at row 1"):
        Profile(numeric={"a": [1.0, np.nan, 3.0]})
    with pytest.raises(ValueError, match="both numeric and categorical"):
        Profile(numeric={"a": [1.0]}, categorical={"a": ["x"]})
    with pytest.raises(ValueError, match="may not be named 'embedding'"):
        Profile(numeric={"embedding": [1.0]})


def test_profile_from_rows_take_and_concat():
    rows = [
        {"brightness": 0.4, "boxes": 2, "predicted_class": "scratch", "flagged": True},
        {"brightness": 0.6, "boxes": 0, "predicted_class": "none", "flagged": False},
        {"brightness": 0.5, "boxes": 1, "predicted_class": "crack", "flagged": False},
    ]
    profile = Profile.from_rows(rows, embedding=np.eye(3))
    assert set(profile.numeric) == {"brightness", "boxes"}
    assert set(profile.categorical) == {"predicted_class", "flagged"}
    assert profile.categorical["flagged"].tolist() == ["True", "False", "False"]
    assert profile.numeric["boxes"].dtype == np.float64 and len(profile) == 3
    part = profile.take(np.array([2, 0]))
    assert part.numeric["brightness"].tolist() == [0.5, 0.4]
    assert part.embedding.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert len(profile.take(1)) == 1
    again = Profile.concat([profile.take(slice(0, 1)), profile.take(slice(1, 3))])
    for name in profile.numeric:
        np.testing.assert_array_equal(again.numeric[name], profile.numeric[name])
    np.testing.assert_array_equal(again.embedding, profile.embedding)
    with pytest.raises(ValueError, match=r"numeric only in the first: \['boxes'\]"):
        Profile.concat(
            [profile, Profile.from_rows([{k: v for k, v in rows[0].items() if k != "boxes"}])]
        )
    with pytest.raises(ValueError, match=r"row 1 has different keys.*missing \['boxes'\]"):
        Profile.from_rows([rows[0], {k: v for k, v in rows[1].items() if k != "boxes"}])
    with pytest.raises(ValueError, match="'boxes' is numeric in an earlier row but categorical"):
        Profile.from_rows([rows[0], {**rows[1], "boxes": "many"}])
    with pytest.raises(ValueError, match="neither a number nor a string"):
        Profile.from_rows([{"brightness": None}])


# -- windows --------------------------------------------------------------------------------


T0 = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)


def test_windows_by_count_follow_time_and_leave_the_partial_one():
    minutes = [5, 1, 3, 0, 2, 4, 9, 7, 8, 6, 10]
    stamps = [T0 + timedelta(minutes=m) for m in minutes]
    got = windows(stamps, size=4)
    assert len(got) == 2  # 11 inputs: 2 full windows, 3 wait for more
    assert [[minutes[i] for i in w] for w in got] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert windows(stamps[:3], size=4) == [] and windows([], size=4) == []


def test_windows_by_time_skip_empty_and_single_buckets():
    minutes = [0, 10, 50, 70, 201, 200, 239.99]
    stamps = [T0 + timedelta(minutes=m) for m in minutes]
    got = windows(stamps, every=timedelta(hours=1))
    # Buckets from the first time: [0, 60) 3 inputs, [60, 120) 1 (skipped), [120, 180) empty,
    # [180, 240) 3 inputs in time order.
    assert [w.tolist() for w in got] == [[0, 1, 2], [5, 4, 6]]
    as_numpy = np.array([np.datetime64("2025-01-01T00:00") + np.timedelta64(int(m * 60), "s")
                         for m in minutes])  # fmt: skip
    assert [w.tolist() for w in windows(as_numpy, every=parse_every("1h"))] == [
        [0, 1, 2],
        [5, 4, 6],
    ]
    # Naive local times across a DST change: differences of datetimes, not wall clocks.
    naive = [datetime(2025, 3, 30, 1, 59), datetime(2025, 3, 30, 2, 1)]
    assert [w.tolist() for w in windows(naive, every=timedelta(minutes=5))] == [[0, 1]]


def test_windows_argument_errors():
    stamps = [T0, T0 + timedelta(seconds=1)]
    with pytest.raises(ValueError, match="exactly one of size"):
        windows(stamps)
    with pytest.raises(ValueError, match="exactly one of size"):
        windows(stamps, size=2, every=timedelta(hours=1))
    with pytest.raises(ValueError, match="size must be >= 2"):
        windows(stamps, size=1)
    with pytest.raises(ValueError, match="positive timedelta"):
        windows(stamps, every=timedelta(0))
    with pytest.raises(ValueError, match="mix timezone-aware and naive"):
        windows([T0, datetime(2025, 1, 1)], size=2)
    with pytest.raises(ValueError, match="datetimes or a numpy datetime64"):
        windows(["2025-01-01T00:00:00"] * 2, size=2)


def test_parse_every():
    assert parse_every("90s") == timedelta(seconds=90)
    assert parse_every("30m") == timedelta(minutes=30)
    assert parse_every("1h") == timedelta(hours=1)
    assert parse_every("2d") == timedelta(days=2)
    assert parse_every("1.5h") == timedelta(minutes=90)
    for bad in ["", "h", "10", "1y", "-1h", "0m", "1 hour"]:
        with pytest.raises(ValueError, match=r"e\.g\. '90s', '30m', '1h', '2d'"):
            parse_every(bad)


def test_small_counts_get_a_permutation_p_value_so_small_windows_stay_calibrated() -> None:
    """3% of a class is 1.5 expected in a window of 50, where chi-squared's distribution is
    only an approximation: the permutation p-value keeps the false-alarm rate near alpha, and
    a big shift in the rare class is still caught."""
    from liveml.monitoring.drift import _categorical_test

    rng = np.random.default_rng(0)
    classes, p = np.array(["a", "b", "none"]), [0.50, 0.47, 0.03]
    reference = rng.choice(classes, size=1000, p=p)
    alarms = sum(
        _categorical_test(reference, rng.choice(classes, size=50, p=p), seed)["p_value"] <= 0.05
        for seed in range(150)
    )
    assert alarms <= 12  # 8%: a 5% test passes this with high probability
    shifted = rng.choice(classes, size=50, p=[0.40, 0.40, 0.20])
    assert _categorical_test(reference, shifted)["p_value"] < 1e-3
