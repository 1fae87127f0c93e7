"""Score every user, rank them, flag under the review budget, and say why."""
from __future__ import annotations

import collections
import concurrent.futures
import re
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.config import section
from pipelines.detectors import Detector, Reason
from pipelines.detectors.base import ReasonTable, base_signal, join_present
from pipelines.errors import ScoresNotFinite, UserError
from pipelines.sequences import model_input


# A reviewer's first guess at the abuse behind a signal. Reasons name the signal; this only
# turns it into the team's vocabulary, and stays empty when no signal is telling.
SIGNAL_HINTS: dict[str, str] = {
    "refund_ratio": "refund_abuse",
    "refund_value": "refund_abuse",
    "n_refund": "refund_abuse",
    "n_payment_failed": "card_testing",
    "failed_payment_ratio": "card_testing",
    "small_failed_payment_share": "card_testing",
    "n_login_failed": "account_takeover",
    "login_fail_ratio": "account_takeover",
    "n_new_devices": "account_takeover",
    "n_new_countries": "account_takeover",
    "typical_gap_s": "scraping_bot",
    "median_gap_s": "scraping_bot",
    "burstiness": "scraping_bot",
    "n_view": "scraping_bot",
    "distinct_products": "scraping_bot",
    "max_same_product_purchases": "brushing",
    "small_purchase_share": "brushing",
    "unbought_review_share": "fake_review_ring",
    "five_star_share": "fake_review_ring",
    "max_accounts_sharing_device": "fake_review_ring",
    "max_review_similarity_other": "fake_review_ring",
    "near_duplicate_review_share": "fake_review_ring",
    "accounts_sharing_review_text": "fake_review_ring",
}
LOW_SIDE_SIGNALS = {"typical_gap_s", "median_gap_s"}


def active_users(features: pd.DataFrame, within_days: int | None) -> np.ndarray:
    """Which users the daily table covers: everyone, or those with an event in the last
    `within_days` days before the end of the as-of day."""
    if within_days is None:
        return np.ones(len(features), dtype=bool)
    if "days_since_last_event" not in features.columns:
        raise UserError("score.active_within_days needs the features column days_since_last_event; "
                        "rebuild features with this version")
    return (features["days_since_last_event"] <= within_days).to_numpy()


def score_users(features: pd.DataFrame, detector: Detector, params: dict[str, Any], as_of: str,
                explain: bool = True, sequences: Any = None) -> pd.DataFrame:
    """Contract section 3 columns (plus `anomaly_types`), ordered by rank. Without `explain`
    (evaluation only needs the ranking) the reasons are left empty. A sequence detector reads
    the users' `sequences` (EventSequences, or a function returning them) instead of features."""
    size = int(section({"score": params}, "score")["batch_users"])
    batches = (features.iloc[start:start + size] for start in range(0, len(features), size))
    return score_batches(batches, detector, params, as_of, explain=explain, sequences=sequences, total=len(features))


def score_batches(batches: Iterable[pd.DataFrame], detector: Detector, params: dict[str, Any], as_of: str,
                  explain: bool = True, sequences: Any = None, total: int | None = None) -> pd.DataFrame:
    """score_users over feature tables of a few users each: only a batch's matrices and reason
    objects exist at once, so memory stays flat as users grow; what is kept per user is its id,
    score and reason text. Scores depend on the user alone, so batching changes no figure.
    Progress is reported per batch (`total`: the users expected, if known)."""
    from pipelines.progress import Progress

    p = section({"score": params}, "score")
    user_ids, scores, reasons, types = [], [], [], []

    def score_part(part: pd.DataFrame) -> tuple:
        X = model_input(detector, part, sequences)
        if explain:
            part_scores, explained = detector.score_and_reason_table(X, top_n=int(p["n_reasons"]))
        else:
            part_scores, explained = detector.score(X), ReasonTable.from_lists([[]] * len(part))
        part_scores = np.asarray(part_scores, dtype="float64")
        _require_finite(part_scores, part, detector)
        return (part_scores, pa.array(part["user_id"].astype("str").to_numpy(), type=pa.string()),
                explained.texts(), suspected_types_table(explained))

    def keep(done: Any) -> None:
        part_scores, ids, texts, hints = done.result()
        scores.append(part_scores)
        user_ids.append(ids)
        reasons.append(texts)
        types.append(hints)

    progress = Progress("scored", total, "users")  # a bar in a terminal, else a log line now and then
    # Parts are scored two at a time: NumPy and Arrow let go of the GIL for most of a part's
    # work, so the second core works too. Results are kept in the parts' order, and at most
    # two parts wait, so memory stays that of a few parts.
    with concurrent.futures.ThreadPoolExecutor(_SCORING_THREADS, thread_name_prefix="score") as pool:
        pending: collections.deque = collections.deque()
        for batch in batches:
            if not len(batch):
                continue
            for part in _chunks(batch, detector):
                pending.append(pool.submit(score_part, part))
                while len(pending) > _SCORING_THREADS:
                    keep(pending.popleft())
            progress.update(len(batch))
        while pending:
            keep(pending.popleft())
    progress.close()
    if not scores:
        raise UserError("no users to score: the feature table is empty")
    score = np.concatenate(scores)
    ids = pa.chunked_array(user_ids)
    ranks = rank_scores(score, ids)
    order = np.argsort(ranks, kind="stable")
    taken = pa.array(order)
    out = pd.DataFrame(
        {
            "user_id": ids.take(taken).to_pandas(),
            "score": score[order],
            "rank": ranks[order],
            "flagged": flag(score, ranks, p)[order],
            "reasons": pa.chunked_array(reasons).take(taken).to_pandas(),
            "model_version": detector.model_version_ or detector.name,
            "as_of": pd.Timestamp(as_of).date(),
            "anomaly_types": pa.chunked_array(types).take(taken).to_pandas(),
        }
    )
    for column in ("user_id", "reasons", "anomaly_types"):
        out[column] = out[column].astype("str")
    return out


def _require_finite(scores: np.ndarray, batch: pd.DataFrame, detector: Detector) -> None:
    """NaN sorts anywhere and inf ties: a ranking with either would flag users for nothing."""
    bad = ~np.isfinite(scores)
    if bad.any():
        example = batch["user_id"].iloc[int(np.flatnonzero(bad)[0])]
        raise ScoresNotFinite(
            f"model {detector.model_version_ or detector.name} gave {int(bad.sum())} NaN or infinite score(s) in a "
            f"batch of {len(scores)} users (first: user {example}); nothing was written: retrain the model "
            "(a diverged network or degenerate training features) or score with another version")


def batched_scores(detector: Detector, features: pd.DataFrame, sequences: Any = None,
                   batch_users: int = 100_000) -> np.ndarray:
    """detector.score over `features`, `batch_users` rows at a time (the scores alone)."""
    parts = [np.asarray(detector.score(model_input(detector, features.iloc[start:start + batch_users], sequences)),
                        dtype="float64") for start in range(0, len(features), batch_users)]
    return np.concatenate(parts) if parts else np.empty(0)


# A table model's batch is scored in parts of at most this many feature values (16 MiB of
# float64 a matrix): glibc maps every allocation over 32 MiB afresh and unmaps it when freed,
# so the half-dozen matrices of a 100k-user batch (features, percentiles, rarity, the sorted
# copies for the reasons) had their pages faulted in and zeroed by the kernel again batch after
# batch, while memory under that size is reused from the heap. Scores and reasons depend on the
# user alone, so the parts change no figure.
_CHUNK_VALUES = 2 ** 21
_SCORING_THREADS = 2  # parts scored at once (score_batches)


def _part_rows(detector: Detector, width: int | None = None) -> int | None:
    """Rows per part for a table model: as many as keep a float64 matrix of its columns (those it
    lists, else `width`) under _CHUNK_VALUES values; None for a sequence model (its batches are
    not cut) or a table model that lists no columns when no width is given."""
    if detector.input_kind != "table":
        return None
    if detector.feature_names_ is not None:
        width = len(detector.feature_names_)
    return None if width is None else max(1, _CHUNK_VALUES // max(1, width))


def batch_rows(detector: Detector, batch_users: int) -> int:
    """Users per batch to read from a features file for score_batches: score.batch_users, or,
    for a table model that lists its features, no more than one part (_CHUNK_VALUES). Decoding
    the 1M-user file's 105 scored columns 100k users at a time took 1.9 CPU s (1.2 of it kernel
    time: Arrow's buffers of each batch are fresh memory) against 1.0 at 20k, and the parts
    were cut from the batch anyway."""
    part = _part_rows(detector)
    return max(1, int(batch_users) if part is None else min(int(batch_users), part))


def _chunks(batch: pd.DataFrame, detector: Detector) -> Iterable[pd.DataFrame]:
    """The non-empty parts of `batch` that score_batches scores, _SCORING_THREADS at a time
    (_CHUNK_VALUES); a sequence model's batch is one part."""
    size = _part_rows(detector, batch.shape[1]) or max(1, len(batch))
    return (batch.iloc[start:start + size] for start in range(0, len(batch), size))


def rank_scores(scores: np.ndarray, user_ids: Any) -> np.ndarray:
    """1 = most anomalous; ties broken by user id, so ranks are the same on every rerun.
    `user_ids`: an array, or a pyarrow string array (then the ids are ordered by pyarrow, a few
    times faster at a million users than comparing Python strings; the same order: UTF-8 bytes
    sort as code points do)."""
    if isinstance(user_ids, (pa.Array, pa.ChunkedArray)) and pa.types.is_string(user_ids.type):
        import pyarrow.compute as pc

        by_id = pc.sort_indices(user_ids).to_numpy()  # stable: equal ids keep their order, as lexsort's did
        key = np.empty(len(by_id), dtype="int64")
        key[by_id] = np.arange(len(by_id))
    else:
        key = user_ids
    order = np.lexsort((key, -scores))
    ranks = np.empty(len(scores), dtype="int64")
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def flag(scores: np.ndarray, ranks: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    policy = params["policy"]
    if policy == "top_k":
        k = params.get("top_k")
        if not isinstance(k, int) or k < 0:
            raise UserError(f"score.top_k must be a whole number >= 0, not {k!r}")
        return ranks <= k
    if policy == "threshold":
        threshold = params.get("threshold")
        if not isinstance(threshold, (int, float)):
            raise UserError("score.policy is 'threshold' but score.threshold is not a number")
        return scores >= threshold
    raise UserError(f"score.policy must be 'top_k' or 'threshold', not {policy!r}")


def suspected_types(reasons: list[Reason]) -> str:
    """The reviewer's hints, from the detector's structured reasons (never parsed from text):
    suspected_types_table of one row."""
    return suspected_types_table(ReasonTable.from_lists([reasons]))[0].as_py()


def suspected_types_table(table: ReasonTable) -> pa.Array:
    """Per row of a ReasonTable, the reviewer's hints joined with ",", each once, in the order
    of the reasons giving them. A feature reason hints at its signal's abuse (SIGNAL_HINTS) when
    on the telling side: an unusually low refund ratio is a reason the user stands out, not a
    sign of refund abuse; gaps are telling when unusually short (LOW_SIDE_SIGNALS). An event
    reason hints at its event type's abuse (EVENT_HINTS), then at a takeover when the event was
    on a device or from a country new to the account."""
    hint_names: list[str] = []

    def code_of(name: str) -> int:  # 0: no hint
        if name not in hint_names:
            hint_names.append(name)
        return hint_names.index(name) + 1

    # per feature name; the last entry is read by the slots without a reason (column -1): no hint
    feature_hint = np.zeros(len(table.feature_names) + 1, dtype="int64")
    event_hint = np.zeros(len(table.feature_names) + 1, dtype="int64")
    low = np.zeros(len(table.feature_names) + 1, dtype=bool)
    for j, feature in enumerate(table.feature_names):
        signal = base_signal(feature)
        low[j] = signal in LOW_SIDE_SIGNALS
        if signal in SIGNAL_HINTS:
            feature_hint[j] = code_of(SIGNAL_HINTS[signal])
        if table.events is not None and feature in EVENT_HINTS:
            event_hint[j] = code_of(EVENT_HINTS[feature])
    takeover = code_of("account_takeover")
    codes = []  # a hint code per row, in the order hints are given; 0 where none or given before
    for k in range(table.columns.shape[1]):
        cols = table.columns[:, k]
        pct = table.percentiles[:, k]
        telling = np.where(low[cols], pct < 50, pct > 50)  # NaN is on neither side
        given = [np.where(telling, feature_hint[cols], 0)]
        if table.events is not None:
            event = table.events[:, k]
            new_access = np.array([bool(NEW_ACCESS_FLAGS.intersection(f)) if e else False
                                   for f, e in zip(table.flags[:, k], event)], dtype=bool)
            given = [np.where(event, event_hint[cols], given[0]),
                     np.where(event & new_access & (event_hint[cols] != takeover), takeover, 0)]
        for code in given:
            for earlier in codes:
                code = np.where(code == earlier, 0, code)
            codes.append(code)
    names = pa.array([""] + hint_names, type=pa.string())
    return join_present([names.take(pa.array(code, mask=code == 0)) for code in codes], ",", len(table))


# An unexpected event of these types (a sequence detector's reason) points to these abuses;
# an unexpected event on a device or from a country new to the account points to a takeover.
EVENT_HINTS: dict[str, str] = {
    "login_failed": "account_takeover",
    "payment_failed": "card_testing",
    "refund": "refund_abuse",
    "review": "fake_review_ring",
}
NEW_ACCESS_FLAGS = {"new_device", "new_country"}

