"""pipelines.detectors: the registry, fit/score/save/load/explain for every registered detector."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors import REGISTRY, Detector, get_detector_class, make_detector
from pipelines.errors import UserError

# Small forests and networks keep the suite fast; the behaviour under test does not depend on the size.
# normal_features has six independent columns: an autoencoder code wider than one unit would
# pass one of them straight through, and an outlier there would be reconstructed, not flagged
_SMALL_NET = {"hidden": [16], "epochs": 60, "batch_size": 64, "patience": 8, "progress": False, "device": "cpu"}
FAST = {"isolation_forest": {"n_estimators": 60}, "robust_zscore": {}, "ecdf_tail": {},
        "autoencoder": {**_SMALL_NET, "latent": 1}, "vae": {**_SMALL_NET, "latent": 2},
        "supervised_mlp": {**_SMALL_NET, "dropout": 0.0},
        "ecod": {}, "knn": {}, "ecdf_skew": {},
        "ensemble": {"members": {"ecdf_tail": 1.0, "isolation_forest": 1.0},
                     "member_params": {"isolation_forest": {"n_estimators": 60}}}}
DETECTORS = sorted(FAST)  # the interface: every detector
UNSUPERVISED = [n for n in DETECTORS if not get_detector_class(n).supervised]  # and what anomaly ranking means
PART = re.compile(r"^(?P<feature>[a-z][a-z0-9_]*)=(?P<value>[^ ;]+) \(p(?P<pct>\d{1,3}\.\d{1,2})\)$")


def labels_for(X: pd.DataFrame) -> np.ndarray:
    """A learnable target for the supervised detector: the top tenth by refund ratio."""
    return (X["refund_ratio_28d"] > X["refund_ratio_28d"].quantile(0.9)).astype(int).to_numpy()


_FITTED: dict[tuple, Detector] = {}


def fitted(name: str, X: pd.DataFrame, refit: bool = False, **params) -> Detector:
    """A detector fitted on X; the same (detector, params, data) is fitted once per session
    (networks take seconds) unless `refit`, for the tests that fitting twice is about."""
    key = (name, repr(sorted(params.items())), int(pd.util.hash_pandas_object(X).sum()), tuple(X.columns))
    if refit or key not in _FITTED:
        det = make_detector(name, {**FAST[name], **params})
        det.fit(X, labels_for(X)) if det.supervised else det.fit(X)
        if refit:
            return det
        _FITTED[key] = det
    return _FITTED[key]


def with_outlier(X: pd.DataFrame, row: int, **values) -> pd.DataFrame:
    Y = X.copy()
    for col, value in values.items():
        Y.loc[row, col] = value
    return Y


def test_registry_has_every_detector():
    assert {"isolation_forest", "robust_zscore", "ecdf_tail", "autoencoder", "vae", "supervised_mlp",
            "ensemble", "ecod"} <= set(REGISTRY)
    for name in DETECTORS:
        assert get_detector_class(name).name == name
    # the conformance tests below run for every table detector the package registers (the
    # sequence detectors' own interface tests are in test_sequences.py and test_deep.py; test
    # modules register stand-ins of their own, collected before this runs)
    ours = {n for n in REGISTRY if get_detector_class(n).__module__.startswith("pipelines.detectors.")}
    assert {n for n in ours if get_detector_class(n).input_kind == "table"} <= set(DETECTORS)


@pytest.mark.parametrize("name", DETECTORS)
def test_fit_and_score_shapes(name, normal_features):
    det = fitted(name, normal_features)
    assert det.feature_names_ == list(normal_features.columns)
    scores = det.score(normal_features)
    assert scores.shape == (len(normal_features),) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    assert det.score(normal_features.iloc[:3]).shape == (3,)
    # columns are matched by name, not position; extra columns are ignored
    shuffled = normal_features[normal_features.columns[::-1]].assign(extra=1.0)
    np.testing.assert_array_equal(det.score(shuffled), scores)


@pytest.mark.parametrize("name", UNSUPERVISED)
def test_a_planted_extreme_outlier_ranks_first(name, normal_features):
    det = fitted(name, normal_features)
    Y = with_outlier(normal_features, 123, n_view_1d=400, n_view_7d=3000, refund_ratio_28d=1.0,
                     distinct_devices_28d=40, typical_gap_s_1d=0.5, account_age_days=0.01)
    scores = det.score(Y)
    assert int(np.argmax(scores)) == 123
    assert scores[123] > np.sort(scores)[-2]
    # and the same detector scores the unmodified row as ordinary
    assert det.score(normal_features)[123] < np.quantile(scores, 0.99)


@pytest.mark.parametrize("name", DETECTORS)
def test_save_load_round_trip(name, normal_features, tmp_path):
    det = fitted(name, normal_features)
    version = det.save(tmp_path / "model")
    assert version == det.model_version_ and version.startswith(f"{name}-")
    loaded = Detector.load(tmp_path / "model")
    assert type(loaded) is type(det)
    assert loaded.model_version_ == version
    assert loaded.params == det.params
    assert loaded.feature_names_ == det.feature_names_
    Y = with_outlier(normal_features, 5, refund_ratio_28d=0.9)
    np.testing.assert_array_equal(loaded.score(Y), det.score(Y))
    assert loaded.explain(Y) == det.explain(Y)
    # the class-specific load works too, and a missing directory is a user error
    assert get_detector_class(name).load(tmp_path / "model").model_version_ == version
    with pytest.raises(UserError, match="meta.json"):
        Detector.load(tmp_path / "nothing-here")


@pytest.mark.parametrize("name", DETECTORS)
def test_model_version_is_a_content_hash(name, normal_features, tmp_path):
    v1 = fitted(name, normal_features, refit=True).save(tmp_path / "a")
    again = fitted(name, normal_features, refit=True).save(tmp_path / "b")  # refitted, another folder
    assert again == v1  # same params and data: same version
    changed_params = {"isolation_forest": {"n_estimators": 61}, "robust_zscore": {"clip": 10.0},
                      "ecdf_tail": {"top_signals": 3}, "autoencoder": {"latent": 2}, "vae": {"beta": 0.5},
                      "supervised_mlp": {"hidden": [8]}, "ecod": {"group_windows": False}, "knn": {"k": 5},
                      "ecdf_skew": {"skew_penalty": 0.5},
                      "ensemble": {"members": {"ecdf_tail": 2.0, "isolation_forest": 1.0},
                                   "member_params": {"isolation_forest": {"n_estimators": 60}}}}[name]
    assert fitted(name, normal_features, **changed_params).save(tmp_path / "c") != v1
    other_data = normal_features.assign(refund_ratio_28d=normal_features["refund_ratio_28d"] * 2)
    assert fitted(name, other_data).save(tmp_path / "d") != v1


@pytest.mark.parametrize("name", UNSUPERVISED)
def test_explain_names_the_planted_feature_first(name, normal_features):
    det = fitted(name, normal_features)
    Y = with_outlier(normal_features, 42, refund_ratio_28d=0.97)
    Y = with_outlier(Y, 43, account_age_days=0.02)  # far below every training user
    reasons = det.explain(Y, top_n=3)
    assert len(reasons) == len(Y)
    first = PART.match(reasons[42].split("; ")[0])
    assert first, reasons[42]
    assert first["feature"] == "refund_ratio_28d"
    assert float(first["value"]) == pytest.approx(0.97)
    assert float(first["pct"]) == pytest.approx(100.0)
    lows = [PART.match(p) for p in reasons[43].split("; ")]
    if "reconstruction" in det.reasons_kind:
        # a network's reconstruction error spreads: one extreme input can make an unusual
        # neighbour the worse-reconstructed feature, so the planted one is among the reasons
        lows = [m for m in lows if m["feature"] == "account_age_days"]
    assert lows and lows[0]["feature"] == "account_age_days" and float(lows[0]["pct"]) == pytest.approx(0.0)
    structured = det.reasons(Y.iloc[[42]], top_n=3)[0]
    assert structured[0].feature == "refund_ratio_28d" and structured[0].value == pytest.approx(0.97)
    assert all(0 <= r.contribution <= 1 for r in structured) and sum(r.contribution for r in structured) <= 1 + 1e-9


def test_every_detector_says_what_its_reasons_are():
    for name in DETECTORS:
        cls = get_detector_class(name)
        assert cls.input_kind in ("table", "sequence") and isinstance(cls.supervised, bool)
        assert cls.reasons_kind
    assert "proxy" in get_detector_class("isolation_forest").reasons_kind
    assert "proxy" not in get_detector_class("ecdf_tail").reasons_kind
    assert get_detector_class("autoencoder").wants_gpu and not get_detector_class("ecdf_tail").wants_gpu


@pytest.mark.parametrize("name", UNSUPERVISED)
def test_explain_format_top_n_and_one_part_per_base_signal(name, normal_features):
    det = fitted(name, normal_features)
    # both windows of n_view far out, plus two other signals
    Y = with_outlier(normal_features, 7, n_view_1d=90, n_view_7d=900, refund_ratio_28d=0.99, distinct_devices_28d=30)
    for top_n in (1, 2, 3, 5):
        reasons = det.explain(Y, top_n=top_n)
        for text in reasons:
            parts = [p for p in text.split("; ") if p]
            assert len(parts) <= top_n
            for part in parts:
                assert PART.match(part), part
        parts = reasons[7].split("; ")
        features = [PART.match(p)["feature"] for p in parts]
        bases = [re.sub(r"_\d+d$", "", f) for f in features]
        assert len(bases) == len(set(bases)), features  # n_view_1d and n_view_7d never both
        assert len(parts) == min(top_n, 3)  # three distinct deviant signals
        if top_n >= 3:
            assert {"refund_ratio", "distinct_devices", "n_view"} == set(bases)


@pytest.mark.parametrize("name", UNSUPERVISED)
def test_explain_is_empty_for_an_ordinary_row(name, normal_features):
    det = fitted(name, normal_features)
    median_row = normal_features.median().to_frame().T
    assert det.explain(median_row) == [""]


@pytest.mark.parametrize("name", DETECTORS)
def test_missing_feature_column_at_score_time(name, normal_features):
    det = fitted(name, normal_features)
    with pytest.raises(UserError, match="refund_ratio_28d"):
        det.score(normal_features.drop(columns=["refund_ratio_28d"]))
    with pytest.raises(UserError, match="missing"):
        det.explain(normal_features.drop(columns=["n_view_1d"]))


@pytest.mark.parametrize("name", DETECTORS)
def test_a_missing_value_is_handled_not_refused(name, normal_features):
    # NaN is a signal the log lacks for that user (pipelines/features.py): fit and score cope
    X = with_outlier(normal_features, 3, typical_gap_s_1d=np.nan)
    det = make_detector(name, FAST[name])
    det.fit(X, labels_for(X)) if det.supervised else det.fit(X)
    assert np.isfinite(det.score(X)).all()
    assert np.isfinite(fitted(name, normal_features).score(X)).all()
    assert all("typical_gap_s_1d" not in r for r in det.explain(X.iloc[[3]]))


@pytest.mark.parametrize("name", DETECTORS)
@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_non_finite_input_is_a_user_error(name, bad, normal_features):
    X = with_outlier(normal_features, 3, typical_gap_s_1d=bad)
    with pytest.raises(UserError, match="typical_gap_s_1d"):
        det = make_detector(name, FAST[name])
        det.fit(X, labels_for(X)) if det.supervised else det.fit(X)
    det = fitted(name, normal_features)
    with pytest.raises(UserError, match="typical_gap_s_1d"):
        det.score(X)


def test_unknown_detector_and_unknown_param():
    with pytest.raises(UserError, match="unknown detector 'lof_plus'"):
        make_detector("lof_plus")
    with pytest.raises(UserError, match="n_trees"):
        make_detector("isolation_forest", {"n_trees": 10})
    with pytest.raises(UserError, match="unknown parameter"):
        make_detector("robust_zscore", {"threshold": 3})


@pytest.mark.parametrize("name", DETECTORS)
def test_params_are_defaults_plus_overrides(name):
    det = make_detector(name, FAST[name])
    cls = get_detector_class(name)
    assert det.params == {**cls.defaults, **FAST[name]}
    assert set(det.params) == set(cls.defaults)


@pytest.mark.parametrize("name", DETECTORS)
def test_too_few_users_and_unfitted_use(name, normal_features):
    with pytest.raises(UserError, match="at least 2"):
        make_detector(name).fit(normal_features.iloc[:1])
    with pytest.raises(RuntimeError, match="not fitted"):
        make_detector(name).score(normal_features)


def test_robust_zscore_scores_constant_training_features_finitely():
    X = pd.DataFrame({"n_refund_28d": [0.0] * 50, "n_view_7d": np.arange(50, dtype="float64")})
    det = make_detector("robust_zscore").fit(X)
    scores = det.score(pd.DataFrame({"n_refund_28d": [0.0, 3.0], "n_view_7d": [25.0, 25.0]}))
    assert np.isfinite(scores).all() and scores[1] > scores[0]


def test_ecdf_tail_counts_a_signal_once_across_its_windows(normal_features):
    """A user rare on one signal in three windows must not outrank a user rare on two
    different signals: windows of one signal are one piece of evidence."""
    X = normal_features.copy()
    cols = list(X.columns)
    X = X.rename(columns={cols[0]: "sig_a_1d", cols[1]: "sig_a_7d", cols[2]: "sig_a_28d", cols[3]: "sig_b_1d",
                          cols[4]: "sig_c_1d"})
    high = X.max() * 10 + 10
    one_signal = X.iloc[[0]].assign(sig_a_1d=high["sig_a_1d"], sig_a_7d=high["sig_a_7d"], sig_a_28d=high["sig_a_28d"])
    two_signals = X.iloc[[0]].assign(sig_b_1d=high["sig_b_1d"], sig_c_1d=high["sig_c_1d"])
    grouped = make_detector("ecdf_tail", {"top_signals": 5}).fit(X)
    assert grouped.score(two_signals)[0] > grouped.score(one_signal)[0]
    ungrouped = make_detector("ecdf_tail", {"top_signals": 5, "group_windows": False}).fit(X)
    assert ungrouped.score(one_signal)[0] > ungrouped.score(two_signals)[0]


def test_ensemble_puts_members_on_one_scale_and_uses_their_sections(normal_features):
    from scipy.stats import spearmanr

    from pipelines.train import train

    X = normal_features
    only_ecdf = make_detector("ensemble", {"members": {"ecdf_tail": 1.0, "isolation_forest": 0.0},
                                           "member_params": {"isolation_forest": {"n_estimators": 20}}}).fit(X)
    # with one member weighted, the ensemble ranks exactly as that member does
    assert spearmanr(only_ecdf.score(X), only_ecdf.members_["ecdf_tail"].score(X))[0] == pytest.approx(1.0)
    Y = with_outlier(X, 9, refund_ratio_28d=0.99)
    both = fitted("ensemble", X)
    assert both.score(Y)[9] > both.score(X)[9]
    assert both.reasons(Y.iloc[[9]], top_n=2)[0][0].feature == "refund_ratio_28d"
    features = X.assign(user_id=[f"u{i:03d}" for i in range(len(X))])
    det, _ = train(features, {"detector": "ensemble", "exclude_features": [], "isolation_forest": {"n_estimators": 17}})
    assert det.members_["isolation_forest"].params["n_estimators"] == 17  # the member's own section of train
    with pytest.raises(UserError, match="only unsupervised table or sequence detectors"):
        make_detector("ensemble", {"members": {"supervised_mlp": 1.0}})
    with pytest.raises(UserError, match="at least one weight"):
        make_detector("ensemble", {"members": {"ecdf_tail": 0.0}})


def _combined(combine: str, rarity: np.ndarray, members: dict[str, float] | None = None) -> np.ndarray:
    """The ensemble's score for given member rarities (its combination rule alone)."""
    members = members or {"ecdf_tail": 1.0, "isolation_forest": 1.0}
    return make_detector("ensemble", {"members": members, "combine": combine})._combine(rarity)[0]


def test_ensemble_combiners_or_and_and_of_the_tails():
    """`max` and `harmonic` let one member's extreme case decide (an OR of the tails), `mean`
    and `arithmetic` want the members to agree (an AND): a user extreme for one member and
    ordinary for the other ranks above one mildly rare for both only with the first two."""
    extreme_for_one, mild_for_both = [9.0, 0.1], [5.0, 5.0]
    rarity = np.array([extreme_for_one, mild_for_both])
    for combine in ("max", "harmonic"):
        s = _combined(combine, rarity)
        assert s[0] > s[1], combine
    for combine in ("mean", "arithmetic"):
        s = _combined(combine, rarity)
        assert s[1] > s[0], combine
    # every rule is a power mean of the tail shares: members that agree give their common value,
    # and the family is ordered harmonic >= mean >= arithmetic (max within log 2 of harmonic at equal weights)
    agree = np.array([[3.0, 3.0]])
    for combine in ("mean", "harmonic", "arithmetic"):
        assert _combined(combine, agree)[0] == pytest.approx(3.0), combine
    many = np.random.default_rng(0).exponential(2.0, size=(200, 2))
    mx, hm, mn, ar = (_combined(c, many) for c in ("max", "harmonic", "mean", "arithmetic"))
    assert (hm >= mx - 1e-9).all() and (mx + np.log(2) >= hm - 1e-9).all()
    assert (hm >= mn - 1e-9).all() and (mn >= ar - 1e-9).all()
    # a member of weight 0 never counts, nor overflows the sum when extreme
    zero = {"ecdf_tail": 1.0, "isolation_forest": 0.0}
    for combine in ("max", "harmonic", "mean", "arithmetic"):
        s = _combined(combine, np.array([[2.0, 700.0], [1.0, 0.0]]), zero)
        assert s == pytest.approx([2.0, 1.0]), combine
    with pytest.raises(UserError, match="ensemble.combine must be one of"):
        make_detector("ensemble", {"combine": "median"})


def test_a_fitted_ensemble_scores_and_explains_by_its_combination_rule(normal_features):
    """Fitted, the score is the rule applied to the members' rarities, and under `max` the
    reasons are exactly the deciding member's."""
    X = normal_features
    Y = with_outlier(X, 11, refund_ratio_28d=0.9)
    members = {"ecdf_tail": 1.0, "robust_zscore": 1.0}
    for combine in ("mean", "harmonic", "max", "arithmetic"):
        det = make_detector("ensemble", {"members": members, "combine": combine}).fit(X)
        rarity = det._member_rarity(Y.to_numpy())
        np.testing.assert_allclose(det.score(Y), _combined(combine, rarity, members))
    deciding = int(np.argmax(rarity[11]))
    member = det.members_[list(members)[deciding]]
    assert [(r.feature, r.contribution) for r in det.reasons(Y.iloc[[11]], top_n=2)[0]] == \
        [(r.feature, pytest.approx(r.contribution)) for r in member.reasons(Y.iloc[[11]], top_n=2)[0]]


def test_ensemble_keeps_a_members_order_between_grid_points(normal_features):
    """One member alone: the ensemble's rarity is a strictly increasing function of the member's
    score (interpolated between the training quantiles), so no two users it tells apart tie."""
    X = normal_features
    det = make_detector("ensemble", {"members": {"ecdf_tail": 1.0, "isolation_forest": 0.0},
                                     "member_params": {"isolation_forest": {"n_estimators": 20}}}).fit(X)
    rng = np.random.default_rng(3)
    new = X.sample(200, random_state=3).reset_index(drop=True) * rng.uniform(0.9, 1.1, size=(200, X.shape[1]))
    member, ensemble = det.members_["ecdf_tail"].score(new), det.score(new)
    order = np.argsort(member, kind="stable")
    assert (np.diff(ensemble[order]) >= 0).all()
    assert len(np.unique(ensemble)) == len(np.unique(member))


def test_ecod_takes_the_tails_the_skewness_points_to(normal_features):
    """ECOD (Li et al. 2022): the largest of the summed left tails, the summed right tails and the
    summed skew-side tails. A user rare on the long tail of a right-skewed feature and of a
    left-skewed one scores about both; one rare on their short tails only about one."""
    rng = np.random.default_rng(7)
    X = pd.DataFrame({"refund_ratio_28d": rng.exponential(1.0, 500), "account_age_days": -rng.exponential(1.0, 500),
                      "typical_gap_s_1d": rng.normal(size=500)})
    det = make_detector("ecod").fit(X)
    assert list(det.skew_sign_) == [1.0, -1.0, pytest.approx(det.skew_sign_[2])]
    lo, hi = X.min(), X.max()
    long_tails = pd.DataFrame({"refund_ratio_28d": [hi["refund_ratio_28d"]], "account_age_days": [lo["account_age_days"]],
                               "typical_gap_s_1d": [0.0]})
    short_tails = pd.DataFrame({"refund_ratio_28d": [lo["refund_ratio_28d"]], "account_age_days": [hi["account_age_days"]],
                                "typical_gap_s_1d": [0.0]})
    one_rare = -np.log(0.5 / 2001)  # the rarest a value can be: beyond the 2001-point quantile grid
    assert det.score(long_tails)[0] > 2 * one_rare - 1.0
    assert det.score(short_tails)[0] < one_rare + 2.0
    assert {r.feature for r in det.reasons(long_tails)[0]} == {"refund_ratio_28d", "account_age_days"}
    assert len(det.reasons(short_tails)[0]) == 1  # the deciding (left or right) sum's one rare term
    median = X.median().to_frame().T
    assert det.reasons(median) == [[]]


def test_ecod_counts_a_signals_windows_once(normal_features):
    X = normal_features
    median = X.median().to_frame().T
    views = median.assign(n_view_1d=X["n_view_1d"].max() + 20, n_view_7d=X["n_view_7d"].max() + 50)
    one_window = median.assign(n_view_1d=X["n_view_1d"].max() + 20)
    grouped, ungrouped = make_detector("ecod").fit(X), make_detector("ecod", {"group_windows": False}).fit(X)
    assert ungrouped.score(views)[0] - ungrouped.score(one_window)[0] > 3.0
    assert grouped.score(views)[0] - grouped.score(one_window)[0] < 0.5


def test_benchmark_builds_each_detector_from_its_train_section(monkeypatch):
    """`pipelines benchmark` measures the detectors as training would build them: an
    ensemble's members with their own sections of train, not the class defaults."""
    import pipelines.benchmark as bench

    built = {}
    real = bench.make_detector

    def recording(name, params):
        built[name] = params
        return real(name, params)

    monkeypatch.setattr(bench, "make_detector", recording)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 4)), (rng.random(200) < 0.1).astype(int)
    result = bench.benchmark(X, y, ["ensemble"], {"ensemble": {"members": {"ecdf_tail": 1.0, "isolation_forest": 2.0}},
                                                  "isolation_forest": {"n_estimators": 23}})
    assert built["ensemble"]["member_params"]["isolation_forest"]["n_estimators"] == 23
    assert built["ensemble"]["members"] == {"ecdf_tail": 1.0, "isolation_forest": 2.0}
    assert 0 <= result["detectors"]["ensemble"]["roc_auc"] <= 1


def _bench_result(dataset: str, **roc: float) -> dict:
    return {"dataset": dataset, "detectors": {d.replace("__", ":"): {"roc_auc": r, "pr_auc": r / 2}
                                              for d, r in roc.items()}}


def test_benchmark_criterion_needs_the_best_pyod_on_each_file_and_a_higher_mean(capsys):
    """The default-detector test of issue 7, from saved `benchmark --out` files: at least the
    best PyOD ROC-AUC on every file and a mean above every PyOD mean; a PyOD detector missing
    on a file makes it incomplete, never met."""
    import pipelines.benchmark as bench

    pyod = [_bench_result("a.npz", pyod__IForest=0.90, pyod__ECOD=0.95),
            _bench_result("b.npz", pyod__IForest=0.99, pyod__ECOD=0.97)]
    ours = [_bench_result("a.npz", ecdf_tail=0.95, isolation_forest=0.94),
            _bench_result("b.npz", ecdf_tail=0.99, isolation_forest=0.999)]
    merged = bench.merge_results([(r, "") for r in pyod + ours])
    met = bench.criterion(merged, "ecdf_tail")  # ties the best on each file, mean 0.97 > 0.96 and 0.945
    assert met["met"] and all(f["reached"] for f in met["files"].values())
    missed = bench.criterion(merged, "isolation_forest")  # best mean, but below ECOD on a.npz
    assert not missed["met"] and missed["mean_above_every_pyod"]
    assert [f for f, v in missed["files"].items() if not v["reached"]] == ["a.npz"]
    labelled = bench.merge_results([(pyod[0], ""), (ours[0], "v2")])
    assert "ecdf_tail[v2]" in labelled["a.npz"] and "pyod:ECOD" in labelled["a.npz"]
    incomplete = bench.merge_results([(pyod[0], ""), (_bench_result("b.npz", pyod__ECOD=0.97), "")]
                                     + [(r, "") for r in ours])
    assert not bench.criterion(incomplete, "ecdf_tail")["met"]
    assert "incomplete" in bench.criterion(incomplete, "ecdf_tail")["why"]
    not_run = bench.merge_results([(r, "") for r in pyod] + [(ours[0], "")])  # ours on a.npz only
    assert not bench.criterion(not_run, "ecdf_tail")["met"]
    assert "| ecdf_tail | 0.9500 / 0.475 | 0.9900 / 0.495 | 0.9700 / 0.485 |" in bench.format_table(merged)


# --- reasons as arrays (issue 8: scoring a million users) ---------------------------------------


def _per_row_strongest_reasons(feature_names, matrix, percentile, strength, top_n):
    """strongest_reasons as it was, a Python loop per row: what the vectorised one must equal."""
    from pipelines.detectors.base import REASON_RARITY, Reason, base_signal

    order = np.argsort(-strength, axis=1)
    base = [base_signal(f) for f in feature_names]
    out = []
    for i in range(matrix.shape[0]):
        seen, picked = set(), []
        for j in order[i]:
            if strength[i, j] < REASON_RARITY or len(picked) >= top_n:
                break
            if base[j] in seen:
                continue
            seen.add(base[j])
            picked.append(j)
        total = float(sum(strength[i, j] for j in picked)) or 1.0
        out.append([Reason(feature_names[j], float(matrix[i, j]), float(percentile[i, j]),
                           float(strength[i, j]) / total) for j in picked])
    return out


def _reason_inputs(seed: int, n: int = 3000):
    """Strengths with many ties (windows of one signal equally rare), values that format as
    integers, 3 significant digits or none, and percentiles near the 99.95 boundary."""
    rng = np.random.default_rng(seed)
    names = ["n_view_1d", "n_view_7d", "n_view_hist", "refund_ratio_28d", "typical_gap_s_1d", "typical_gap_s_7d",
             "n_payment_failed_28d", "burstiness", "account_age_days", "five_star_share_28d",
             "n_login_failed_1d", "refund_value_7d"] * 2
    names = [f if i < 12 else f"x{i}_{f}" for i, f in enumerate(names)]
    scale = rng.choice([1.0, 1e4, 1e-3], len(names))
    matrix = rng.normal(size=(n, len(names))) * scale
    for j, decimals in enumerate(rng.integers(0, 4, len(names))):
        matrix[:, j] = np.round(matrix[:, j], decimals)
    percentile = rng.choice([0.0, 0.05, 1.7, 49.95, 50.0, 99.9, 99.949, 99.95, 99.97, 100.0], size=matrix.shape)
    strength = rng.choice([0.0, 2.5, 2.995, -np.log(0.05), 3.5, 5.0, 7.6], size=matrix.shape)
    strength = strength + (rng.random(matrix.shape) < 0.3) * rng.random(matrix.shape)
    strength[: n // 10] = np.minimum(strength[: n // 10], 2.9)  # users without a reason
    strength[n // 10: n // 5] = np.where(rng.random((n // 10, len(names))) < 0.9, 0.0, 7.0)  # a single one
    strength[::17, 4] = np.nan  # sorts last, and is not below REASON_RARITY: the loop does not stop at it
    strength[1::97] = np.where(np.isnan(strength[1::97]), np.nan, 1.0)  # a NaN and nothing strong
    return names, matrix, percentile, strength


@pytest.mark.parametrize("top_n", [0, 1, 3, 5, 30])
@pytest.mark.parametrize("seed", [0, 1])
def test_reason_table_equals_the_per_row_loop(top_n, seed):
    from pipelines.detectors.base import format_reasons, strongest_reason_table, strongest_reasons

    names, matrix, percentile, strength = _reason_inputs(seed)
    expected = _per_row_strongest_reasons(names, matrix, percentile, strength, top_n)
    table = strongest_reason_table(names, matrix, percentile, strength, top_n)
    assert table.to_lists() == expected  # same features, values, percentiles and contributions, in order
    assert strongest_reasons(names, matrix, percentile, strength, top_n) == expected
    texts = table.texts().to_pylist()
    assert texts == [format_reasons(r) for r in expected]  # as the table of the loop's lists
    assert texts.count("") >= 300  # the case covers users without reasons and with top_n of them
    assert max(map(len, expected)) == min(top_n, 5 if top_n < 30 else 30) or top_n == 30


def test_join_present_gives_empty_text_for_rows_without_any():
    """pyarrow's own skip-nulls join drops such rows, so the columns would no longer line up."""
    import pyarrow as pa

    from pipelines.detectors.base import join_present

    a = pa.array([None, "a", None, "b", None], type=pa.string())
    b = pa.array([None, None, "c", "d", None], type=pa.string())
    assert join_present([a, b], "; ", 5).to_pylist() == ["", "a", "c", "b; d", ""]
    assert join_present([a], ",", 5).to_pylist() == ["", "a", "", "b", ""]
    assert join_present([], ",", 2).to_pylist() == ["", ""]


@pytest.mark.parametrize("name", ["ecdf_tail", "robust_zscore", "ecod"])
def test_score_and_reason_table_equals_score_and_reasons(normal_features, name):
    from pipelines.detectors.base import ReasonTable

    det = make_detector(name).fit(normal_features)
    rng = np.random.default_rng(3)
    X = normal_features.sample(200, random_state=1).reset_index(drop=True)
    X.loc[:20, "n_view_1d"] = rng.integers(40, 90, 21)  # some users with strong reasons
    X.loc[10:30, "refund_ratio_28d"] = np.nan
    scores, reasons = det.score_and_reason_table(X, top_n=3)
    np.testing.assert_array_equal(scores, det.score(X))
    assert isinstance(reasons, ReasonTable)
    listed = reasons.to_lists()
    assert listed == det.reasons(X, top_n=3)
    assert sum(map(len, listed)) > 20
    # ecod's reasons are its own terms, not the base's rarity: it takes the general path
    assert type(det).reasons_from_tail_rarity == (name != "ecod")


def test_only_a_class_that_declares_it_gets_the_fast_reason_path(normal_features):
    """The fast path is chosen by the class's declaration alone, and a declaration is not
    inherited: a subclass explaining in its own way keeps its reasons unless it declares."""
    from pipelines.detectors.base import Reason
    from pipelines.detectors.ecdf_tail import EcdfTailDetector

    own = [Reason("own_reason", 1.0, 99.0, 1.0)]

    class OwnReasons(EcdfTailDetector):  # not registered: a test's class only
        def _reasons(self, matrix, top_n):
            return [list(own) for _ in range(len(matrix))]

    class DeclaresTailRarity(OwnReasons):
        reasons_from_tail_rarity = True  # (untruly) says its reasons are the base's

    X = normal_features.sample(60, random_state=2).reset_index(drop=True)
    X.loc[:20, "n_view_1d"] = 80.0
    base_reasons = EcdfTailDetector().fit(normal_features).reasons(X, top_n=3)
    assert sum(map(len, base_reasons)) > 20
    assert EcdfTailDetector.reasons_from_tail_rarity and not OwnReasons.reasons_from_tail_rarity
    general = OwnReasons().fit(normal_features)
    scores, table = general.score_and_reason_table(X, top_n=3)
    assert table.to_lists() == [own] * len(X)
    np.testing.assert_array_equal(scores, general.score(X))
    fast = DeclaresTailRarity().fit(normal_features)
    scores, table = fast.score_and_reason_table(X, top_n=3)
    assert table.to_lists() == base_reasons
    np.testing.assert_array_equal(scores, fast.score(X))


def _whole_matrix_rarity(ref, X):
    """FeatureReference.percentiles and rarity as they were, over the whole matrix at once."""
    n = ref.quantiles.shape[0]
    at_or_below, below = np.empty_like(X), np.empty_like(X)
    for j in range(X.shape[1]):
        at_or_below[:, j] = np.searchsorted(ref.quantiles[:, j], X[:, j], side="right") / n
        below[:, j] = np.searchsorted(ref.quantiles[:, j], X[:, j], side="left") / n
    tail = np.maximum(np.minimum(at_or_below, 1.0 - below), 0.5 / n)
    missing = np.isnan(X)
    at_or_below[missing], tail[missing] = np.nan, 1.0
    z = np.nan_to_num(np.abs(X - ref.median) / ref.scale, nan=0.0)
    return 100.0 * at_or_below, tail, -np.log(tail) + 1e-3 * np.minimum(z, 1e3)


@pytest.mark.parametrize("order", ["F", "C"])
def test_rarity_a_column_at_a_time_equals_the_whole_matrix_to_the_bit(order):
    from pipelines.detectors.base import FeatureReference

    rng = np.random.default_rng(4)
    train = np.column_stack([rng.poisson(3, 5000), rng.exponential(2, 5000), np.zeros(5000), rng.normal(size=5000)])
    train = train.astype("float64")
    train[::9, 1] = np.nan
    ref = FeatureReference.fit(train)
    ref.scale[3] = 1e-320  # a denormal spread: z overflows to inf, capped like the largest float
    X = np.asarray(np.column_stack([rng.poisson(3, 3000) * 1.0, rng.exponential(5, 3000), rng.choice([0.0, 1.0], 3000),
                                    rng.normal(size=3000) * 100]), order=order)
    X[::7, 0], X[::11, 2] = np.nan, np.nan
    X[::13, 1] = 1e300  # beyond the grid
    percentile, tail, rarity = _whole_matrix_rarity(ref, X)
    got_percentile, got_tail = ref.percentiles(X)
    _, got_rarity = ref.rarity(X)
    for got, want in ((got_percentile, percentile), (got_tail, tail), (got_rarity, rarity)):
        assert got.tobytes() == want.tobytes() and got.flags["F_CONTIGUOUS"] == (order == "F")
    assert np.isnan(got_percentile).any() and (got_rarity > 1.0).any()
