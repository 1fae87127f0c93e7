"""Drift at scoring time: how far the day's features and scores are from the champion's
training data.

At training, `training_reference` keeps a compact summary of the training users (saved with
the model version as drift_reference.json): for every numeric feature, the edges of its
quantile bins and the share of users in each bin (plus the share missing), and a seeded sample
of the training users' scores with their quantile edges. At scoring, `compute_drift` bins the
day's features with the same edges, a batch of users at a time (memory stays flat), and gives

    the population stability index (PSI) per feature and for the score:
        sum over bins of (today - reference) * ln(today / reference)
    a two-sample Kolmogorov-Smirnov test of the day's scores against the training scores
        (the day's scores sampled to as many as the reference keeps, so the p-value means the
        same at 10k and at 1M users)

Both share vectors are smoothed before the PSI: half a user is added to every bin that either
side fills (bins empty on both sides are left out), so one empty bin among 90 users gives a
bounded term instead of ln(share / 1e-4); with thousands of users the smoothing is negligible.

A status per feature: ok, warn (PSI >= drift.psi_warn), severe (PSI >= drift.psi_severe, or
a feature the model was trained on missing from the day's table). Only the features the model
reads (the reference's model_features, the detector's feature_names_) and the score can make
the day severe: a feature the model does not read is shown with its PSI but is at most a
warning. Below drift.min_users users (today, or in the training reference) the PSI is
computed and shown but not judged: a feature or score that would be warn or severe has status
too_few_users, and so has the day (never severe, never blocking); only a model feature missing
from the day's table is still severe, since that is a broken feed at any size. With 10 bins
the PSI of two samples of one population is about 9/n + 9/N by chance alone (n, N users), so
at 90 users it reaches drift.psi_warn without any drift.

The day's result is written to reports/as_of=D/drift.json and drift.parquet (one row per
feature and the score); with drift.block_publish_on_severe, publish refuses a day whose drift
is severe.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np
import pandas as pd

from pipelines.errors import UserError

log = logging.getLogger("pipelines")

REFERENCE_FILE = "drift_reference.json"
REFERENCE_FORMAT = 1
SCORE = "score"  # the pseudo-feature name of the score in the figures
_FLOOR = 1e-4  # shares without counts: an empty bin counts as this share, so the PSI stays finite
SMOOTHING = 0.5  # users added to each filled bin before the PSI (additive smoothing)
TOO_FEW = "too_few_users"  # the status of a figure measured on fewer than drift.min_users users
_COUNTED_EDGES = 16  # bin_counts counts up to this many edges by a pass per edge, more by binary search


# ----------------------------------------------------------------------------- reference (training)


def bin_edges(values: np.ndarray, bins: int) -> list[float]:
    """Interior quantile edges of the finite values (duplicates removed: a feature that is 0
    for most users gets one bin for the 0s). Bin i holds edges[i-1] < x <= edges[i]."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return []
    edges = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1], method="lower")
    return [float(e) for e in np.unique(edges)]


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Counts per bin (len(edges) + 1 bins), then the count of missing (NaN / inf) last."""
    values = np.asarray(values, dtype="float64")
    edges = np.asarray(edges, dtype="float64")
    finite = np.isfinite(values)
    present = values if finite.all() else values[finite]
    if len(edges) <= _COUNTED_EDGES and (np.diff(edges) > 0).all():
        # a few increasing edges: the users at or below each, one comparison pass per edge
        # (binary search per user, with its unpredictable branches, is several times slower)
        at_or_below = [np.count_nonzero(present <= edge) for edge in edges]
        counts = np.diff(np.array([0, *at_or_below, len(present)], dtype="int64"))
    else:
        idx = np.searchsorted(edges, present, side="left")
        counts = np.bincount(idx, minlength=len(edges) + 1).astype("int64")
    return np.append(counts, int((~finite).sum()))


def training_reference(features: pd.DataFrame, scores: np.ndarray, model_features: list[str] | None,
                       bins: int = 10, sample_users: int = 5000, seed: int = 0,
                       rows: np.ndarray | None = None) -> dict[str, Any]:
    """The summary of the training users that drift is measured against (JSON-able, a few KB
    per hundred features). `features` are the training users' rows (or, with the boolean mask
    `rows`, the rows of `features` that are: a column at a time, never a copy of the table),
    `scores` the model's scores of those users (or of a sample of them)."""
    from pipelines.features import feature_columns

    columns = [c for c in feature_columns(features) if pd.api.types.is_numeric_dtype(features[c])]
    # the mask's rows by position, found once: taking 700k of a million values by index is a
    # third of the time of selecting them by the mask (0.29 against 0.94 CPU s over the 185
    # columns of the 1M bench features), in the same order
    picked = None if rows is None else np.flatnonzero(rows)
    users = int(len(features) if picked is None else len(picked))
    out: dict[str, Any] = {"format": REFERENCE_FORMAT, "users": users, "bins": int(bins),
                           "model_features": list(model_features or []), "features": {}}
    for column in columns:
        values = features[column].to_numpy(dtype="float64", na_value=np.nan)
        if picked is not None:
            values = values[picked]
        edges, counts = _edges_and_counts(values, bins)
        out["features"][column] = {"edges": edges, "shares": _shares(counts)}
    scores = np.asarray(scores, dtype="float64")
    sample = _sample(scores[np.isfinite(scores)], sample_users, seed)
    edges = bin_edges(sample, bins)
    out["score"] = {"edges": edges, "shares": _shares(bin_counts(sample, edges)), "sample": sorted(sample.tolist()),
                    "users": int(len(scores))}
    return out


_SORT_SAMPLE = 1024  # values looked at to tell a feature of few distinct values from a continuous one


def _edges_and_counts(values: np.ndarray, bins: int) -> tuple[list[float], np.ndarray]:
    """bin_edges(values, bins) and bin_counts(values, those edges), the same to the bit.

    Most features take few distinct values (counts, zero for most users), and on those
    np.quantile's selection is slow (its partition handles long runs of ties badly: 28 ms
    against 9 ms for a sort of 700k values with 5 distinct): there, one sort gives both the
    edges (the order statistics np.quantile's "lower" method takes) and the counts (binary
    searches of the edges in the sorted values). A continuous feature keeps np.quantile, which
    beats a sort there (19 ms against 46 ms)."""
    finite = np.isfinite(values)
    present = values if finite.all() else values[finite]
    missing = len(values) - len(present)
    if not len(present):
        return [], np.array([0, missing], dtype="int64")
    sample = present[:: max(1, len(present) // _SORT_SAMPLE)]
    if len(np.unique(sample)) > len(sample) // 8:
        edges = bin_edges(present, bins)
        return edges, np.append(bin_counts(present, edges)[:-1], missing)
    ordered = np.sort(present)
    # np.quantile(method="lower")'s positions: floor((n - 1) * q)
    at = np.floor((len(ordered) - 1) * np.linspace(0, 1, bins + 1)[1:-1]).astype(np.intp)
    zeros = ordered[np.searchsorted(ordered, 0.0, "left"):np.searchsorted(ordered, 0.0, "right")]
    if np.signbit(zeros).any():
        # -0.0 among the 0s: which of the equal values a selection or a sort puts at a position
        # is their own business, and the edge must be the very value np.quantile gives
        edges_array = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1], method="lower"))
    else:
        edges_array = np.unique(ordered[at])
    at_or_below = np.searchsorted(ordered, edges_array, side="right")
    counts = np.diff(np.array([0, *at_or_below, len(ordered)], dtype="int64"))
    return [float(e) for e in edges_array], np.append(counts, missing)


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [float(c / total) if total else 0.0 for c in counts]


def _sample(values: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(values) <= size:
        return values
    return np.random.default_rng(seed).choice(values, size=size, replace=False)


# ----------------------------------------------------------------------------- the day's drift


def psi(expected: Iterable[float], actual: Iterable[float], n_expected: float | None = None,
        n_actual: float | None = None) -> float:
    """Population stability index between two share vectors over the same bins.

    With the users behind each side (`n_expected`, `n_actual`), the shares are turned back into
    counts and smoothed: SMOOTHING users added to every bin either side fills, bins that both
    leave empty dropped. Without them, an empty bin counts as a share of 1e-4."""
    e = np.asarray(list(expected), dtype="float64")
    a = np.asarray(list(actual), dtype="float64")
    if n_expected and n_actual:
        ce, ca = e * float(n_expected), a * float(n_actual)
        used = (ce > 0) | (ca > 0)
        if not used.any():
            return 0.0
        ce, ca = ce[used] + SMOOTHING, ca[used] + SMOOTHING
        e, a = ce / ce.sum(), ca / ca.sum()
    else:
        e, a = np.maximum(e, _FLOOR), np.maximum(a, _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def compute_drift(reference: dict[str, Any], feature_batches: Iterable[pd.DataFrame], scores: np.ndarray,
                  params: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """The day's drift figures against `reference` (training_reference's output).

    `feature_batches`: the day's feature table in parts, a few users or a few columns at a time
    (only the reference's columns are read). `scores`: the day's scores. `params`: the drift
    section."""
    if reference.get("format") != REFERENCE_FORMAT:
        raise UserError(f"drift reference format {reference.get('format')!r} is not {REFERENCE_FORMAT}; "
                        f"retrain the model to record a new one")
    ref_features = reference["features"]
    counts = {name: np.zeros(len(spec["shares"]), dtype="int64") for name, spec in ref_features.items()}
    seen: set[str] = set()
    for batch in feature_batches:
        # the batch's columns looked up in the reference, not every reference feature in the
        # batch: day_drift's batches are one column each (185 x 185 lookups at a million users)
        for name in batch.columns:
            spec = ref_features.get(name)
            if spec is not None:
                seen.add(name)
                counts[name] += bin_counts(batch[name].to_numpy(dtype="float64", na_value=np.nan), spec["edges"])
    listed = [str(c) for c in reference.get("model_features") or []]
    # a reference that does not say what the model reads: every feature counts
    model_features = set(listed) if listed else set(ref_features)
    users = max((int(counts[name].sum()) for name in seen), default=0)
    reference_users = int(reference["users"])
    min_users = int(params.get("min_users", 0) or 0)
    judged = users >= min_users and reference_users >= min_users
    rows = []
    for name, spec in ref_features.items():
        in_model = name in model_features
        if name not in seen:
            # a column the model reads that is gone is a broken feed; any other is worth a warning
            rows.append({"feature": name, "psi": None, "status": "severe" if in_model else "warn",
                         "level": "severe" if in_model else "warn",
                         "missing_share_reference": spec["shares"][-1], "missing_share_today": None,
                         "in_model": in_model, "note": "missing from the day's features"})
            continue
        today = _shares(counts[name])
        value = psi(spec["shares"], today, reference_users, counts[name].sum())
        level = _status(value, params)
        status, note = _judge(level, in_model, judged)
        rows.append({"feature": name, "psi": value, "status": status, "level": level,
                     "missing_share_reference": spec["shares"][-1], "missing_share_today": today[-1],
                     "in_model": in_model, "note": note})
    rows.sort(key=lambda r: (-(np.inf if r["psi"] is None else r["psi"]), r["feature"]))
    score = _score_drift(reference["score"], np.asarray(scores, dtype="float64"), params, seed)
    score["level"] = score["status"]
    score["status"], _ = _judge(score["status"], True, judged)
    warn = [r["feature"] for r in rows if r["status"] in ("warn", "severe")]
    severe = [r["feature"] for r in rows if r["status"] == "severe"]
    unjudged = [r["feature"] for r in rows if r["status"] == TOO_FEW]
    if score["status"] in ("warn", "severe"):
        warn.append(SCORE)
    if score["status"] == "severe":
        severe.append(SCORE)
    if score["status"] == TOO_FEW:
        unjudged.append(SCORE)
    status = "severe" if severe else ("warn" if warn else (TOO_FEW if not judged else "ok"))
    return {
        "status": status,
        "judged": judged,
        "users": int(users),
        "reference_users": reference_users,
        "thresholds": {k: params[k] for k in ("psi_warn", "psi_severe", "ks_p_warn")} | {"min_users": min_users},
        "model_features": len(model_features),
        "drifted": warn,
        "severe": severe,
        "unjudged": unjudged,
        "score": score,
        "features": rows,
    }


def _judge(level: str, in_model: bool, judged: bool) -> tuple[str, str]:
    """(status, note) of a figure whose PSI alone gives `level`."""
    if level == "ok":
        return "ok", ""
    if not judged:
        return TOO_FEW, "too few users to judge"
    if level == "severe" and not in_model:
        return "warn", "not read by the model: at most a warning"
    return level, ""


def _status(value: float, params: dict[str, Any]) -> str:
    if value >= params["psi_severe"]:
        return "severe"
    return "warn" if value >= params["psi_warn"] else "ok"


def _score_drift(ref: dict[str, Any], scores: np.ndarray, params: dict[str, Any], seed: int) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    finite = scores[np.isfinite(scores)]
    reference = np.asarray(ref["sample"], dtype="float64")
    today = _sample(finite, max(len(reference), 1), seed)
    value = psi(ref["shares"], _shares(bin_counts(finite, ref["edges"])), len(reference), len(finite))
    if len(today) and len(reference):
        test = ks_2samp(reference, today)
        statistic, pvalue = float(test.statistic), float(test.pvalue)
    else:
        statistic, pvalue = None, None
    status = _status(value, params)
    if status == "ok" and pvalue is not None and pvalue < params["ks_p_warn"]:
        status = "warn"
    return {"psi": value, "ks_statistic": statistic, "ks_pvalue": pvalue, "status": status,
            "n_reference": int(len(reference)), "n_today": int(len(today)), "users_today": int(len(finite)),
            "reference_quantiles": _quantiles(reference), "today_quantiles": _quantiles(finite)}


def _quantiles(values: np.ndarray) -> list[float]:
    if not len(values):
        return []
    return [float(q) for q in np.quantile(values, np.linspace(0, 1, 21))]


def drift_rows(as_of: str, model_version: str, result: dict[str, Any]) -> pd.DataFrame:
    """drift.json as a table: one row per feature and one for the score (drift.parquet)."""
    rows = [{"as_of": as_of, "model_version": model_version, "feature": r["feature"], "psi": r["psi"],
             "ks_statistic": None, "ks_pvalue": None, "status": r["status"]} for r in result["features"]]
    s = result["score"]
    rows.append({"as_of": as_of, "model_version": model_version, "feature": SCORE, "psi": s["psi"],
                 "ks_statistic": s["ks_statistic"], "ks_pvalue": s["ks_pvalue"], "status": s["status"]})
    return pd.DataFrame(rows).astype({"psi": "float64", "ks_statistic": "float64", "ks_pvalue": "float64"})


def summary(result: dict[str, Any], limit: int = 5) -> str:
    """One line: the worst features with their PSI, and the score's test."""
    worst = [r for r in result["features"] if r["status"] != "ok"][:limit]
    parts = [f"{r['feature']} ({_psi_text(r['psi'])})" for r in worst]
    more = len([r for r in result["features"] if r["status"] != "ok"]) - len(worst)
    if more > 0:
        parts.append(f"{more} more")
    s = result["score"]
    ks = "" if s["ks_pvalue"] is None else f", KS {s['ks_statistic']:.3f} p={s['ks_pvalue']:.2g}"
    parts.append(f"score PSI {s['psi']:.2f}{ks}")
    return "; ".join(parts)


def _psi_text(value: float | None) -> str:
    return "missing" if value is None else f"PSI {value:.2f}"


def blocking_message(as_of: str, drift: dict[str, Any], path: str) -> str:
    severe = drift.get("severe") or []
    by_name = {r["feature"]: r for r in drift.get("features", [])}
    shown = []
    for name in severe[:8]:
        r = by_name.get(name)
        value = drift["score"]["psi"] if name == SCORE else (r or {}).get("psi")
        shown.append(f"{name} ({_psi_text(value)})")
    more = f" and {len(severe) - 8} more" if len(severe) > 8 else ""
    return (f"not publishing {as_of}: severe drift in {', '.join(shown)}{more}; drift.block_publish_on_severe "
            f"is true (figures in {path})")


def reference_for_training(detector: Any, features: pd.DataFrame, train_params: dict[str, Any],
                           drift_params: dict[str, Any], sequences: Any = None, batch_users: int = 100_000,
                           held: np.ndarray | None = None) -> dict[str, Any]:
    """training_reference for the users `train` fitted on (those not held out), with the
    model's scores of a seeded sample of them (drift.sample_users). `held`:
    split.heldout_users(features, train_params), when the caller has it already."""
    from pipelines.score import batched_scores
    from pipelines.split import heldout_users

    held = heldout_users(features, train_params) if held is None else held
    training = np.flatnonzero(~np.asarray(held))
    if len(training) > drift_params["sample_users"]:
        picked = np.sort(np.random.default_rng(0).choice(training, int(drift_params["sample_users"]), replace=False))
    else:
        picked = training
    scores = batched_scores(detector, features.iloc[picked].reset_index(drop=True), sequences, batch_users)
    reference = training_reference(features, scores, detector.feature_names_, bins=int(drift_params["bins"]),
                                   sample_users=int(drift_params["sample_users"]), rows=~np.asarray(held))
    reference["score"]["users"] = int(len(training))
    return reference


def day_drift(params: dict[str, Any], as_of: str, registry: Any, version: str, features_path: str,
              scores_path: str, sequences: Any = None) -> dict[str, Any]:
    """The day's drift against `version`'s training reference, for drift.json. A version saved
    before references were kept has its reference rebuilt from its training day's features,
    when that partition is still there; otherwise the status is no_reference."""
    import pyarrow.parquet as pq

    from pipelines import io
    from pipelines.config import section
    from pipelines.layout import require_features

    p = section(params, "drift")
    head = {"as_of": as_of, "model_version": version}
    reference = registry.extra_json(version, REFERENCE_FILE)
    rebuilt = False
    if reference is None:
        reference = _rebuild_reference(params, registry, version, sequences)
        rebuilt = reference is not None
    if reference is not None and not reference.get("model_features"):
        # what the model reads, from its metadata when the reference does not list it
        reference = {**reference, "model_features": list(registry.get(version).get("feature_names") or [])}
    if reference is None:
        log.warning("drift on %s: model %s has no training reference (%s) and its training day's features "
                    "are gone; drift not measured", as_of, version, REFERENCE_FILE)
        return {**head, "status": "no_reference", "drifted": [], "severe": [],
                "note": f"model {version} has no {REFERENCE_FILE} and its training features are gone"}
    require_features(features_path, as_of)
    with io.local_copy(scores_path) as local:
        scores = pq.read_table(local, columns=["score"]).column(0).to_numpy()
    with io.local_copy(features_path) as local:
        table = pq.ParquetFile(local)
        wanted = [c for c in reference["features"] if c in table.schema_arrow.names]
        # one column of every user at a time: 8 bytes a user, whatever the number of features
        columns = (_column_frame(table.read(columns=[c], use_threads=False), c) for c in wanted)
        result = compute_drift(reference, columns, scores, p)
    result = {**head, "reference_rebuilt": rebuilt,
              "reference_as_of": registry.get(version).get("trained_as_of"), **result}
    if result["status"] == TOO_FEW:
        log.info("drift on %s: %s users today, %s in the training data of %s: below drift.min_users %s, so the "
                 "PSI is shown but too few users to judge (%s)", as_of, result["users"], result["reference_users"],
                 version, p["min_users"], summary(result))
    elif result["status"] != "ok":
        log.warning("drift on %s (%s) against the training data of %s: %s", as_of, result["status"], version,
                    summary(result))
    else:
        log.info("drift on %s: none above drift.psi_warn %s (%s)", as_of, p["psi_warn"], summary(result))
    return result


def _column_frame(table: Any, name: str) -> pd.DataFrame:
    """A one-column Parquet read as a frame for compute_drift. A number or boolean column goes
    to float64 in pyarrow (nulls NaN: what to_numpy(float64, na_value=NaN) makes of pandas'
    column), without to_pandas, which re-reads the file's pandas metadata of every column each
    time (most of the drift step at a million users and a hundred features)."""
    import pyarrow as pa

    column = table.column(0)
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return pd.DataFrame({name: column.cast(pa.float64(), safe=False).to_numpy()})
    return table.to_pandas()


def _rebuild_reference(params: dict[str, Any], registry: Any, version: str, sequences: Any) -> dict[str, Any] | None:
    from pipelines import io
    from pipelines.config import section
    from pipelines.layout import Layout

    meta = registry.get(version)
    day = (meta.get("training_data") or {}).get("as_of") or meta.get("trained_as_of")
    path = Layout.from_params(params).features(day) if day else None
    if not path or not io.exists(path):
        return None
    features = io.read_parquet(path)
    train = {**section(params, "train"), **(meta.get("train_params") or {})}
    log.info("drift: rebuilding the training reference of %s from %s", version, path)
    return reference_for_training(registry.load(version), features, train, section(params, "drift"), sequences)


def check_publish(as_of: str, drift_path: str) -> None:
    """With drift.block_publish_on_severe: refuse to publish a day whose drift is severe."""
    from pipelines import io

    if not io.exists(drift_path):
        return  # no drift measured for the day (scored by an older version): nothing to block on
    drift = io.read_json(drift_path)
    if drift.get("status") == "severe":
        raise UserError(blocking_message(as_of, drift, drift_path))
