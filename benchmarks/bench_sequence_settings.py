"""How sequences.max_events and sequence_autoencoder.score_top_events were chosen, on the dev
simulation (params.yaml's; the frozen one is for confirming, never for choosing).

1. How far from the end of each takeover victim's history the takeover's first failed login
   lies: with max_events N, a takeover further back than N events is cut off.
2. One sequence_autoencoder fitted on the training users (params.yaml's settings), then its
   held-out ROC-AUC per abuse type when the score averages the k worst-rebuilt events.

Simulation-only figures: the labels are the simulator's.

    python benchmarks/bench_sequence_settings.py [--ks 1,2,3,5,10,1000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="1,2,3,5,10,1000", help="numbers of worst events to average")
    args = ap.parse_args()
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from pipelines.clean import clean
    from pipelines.config import default_params
    from pipelines.detectors import make_detector
    from pipelines.schema import EVENT_TYPES
    from pipelines.sequences import EventSequences, build_sequences
    from pipelines.simulate import simulate
    from pipelines.split import holdout_mask

    p = default_params()
    events, labels = simulate(p["simulate"])
    events, _, _ = clean(events, p["clean"])
    day = p["simulate"]["end_date"]

    everything = build_sequences(events, day, 100_000)  # no cut: every event of the history
    victims = set(labels.loc[labels["anomaly_type"] == "account_takeover", "user_id"])
    v = everything[everything["user_id"].isin(victims)]
    from_end = v.groupby("user_id")["step"].transform("max") - v["step"] + 1
    failed = from_end[v["event_type"] == EVENT_TYPES.index("login_failed")].groupby(v["user_id"]).max()
    print(f"{len(victims)} takeover victims; events from the end of their history to the oldest failed login:")
    for n in (48, 64, 128, 256):
        print(f"  max_events {n:4d}: {np.mean(failed.reindex(sorted(victims)).fillna(np.inf) > n):.0%} cut off")

    sequences = EventSequences.from_frame(build_sequences(events, day, p["sequences"]["max_events"]))
    held = holdout_mask(pd.Series(sequences.user_ids), p["train"]["holdout_fraction"], p["train"]["split_seed"])
    params = {**p["train"]["sequence_autoencoder"], "progress": False, "device": "cpu"}
    t = time.perf_counter()
    detector = make_detector("sequence_autoencoder", params).fit(sequences.take(np.flatnonzero(~held)))
    print(f"\nsequence_autoencoder, max_events {p['sequences']['max_events']}: fitted in "
          f"{time.perf_counter() - t:.0f} s on {int((~held).sum())} users; held-out ROC-AUC by k worst events")
    test = sequences.take(np.flatnonzero(held))
    losses = detector._event_losses(test)
    known = labels.drop_duplicates("user_id").set_index("user_id").reindex(test.user_ids)
    y = known["is_anomaly"].fillna(0).to_numpy()
    kind = known["anomaly_type"].fillna("").to_numpy()
    types = sorted(t for t in set(kind) if t)
    print(f"{'k':>6} {'all':>6} " + " ".join(f"{t[:16]:>16}" for t in types))
    for k in (int(x) for x in args.ks.split(",")):
        score = np.array([np.sort(row)[::-1][:k].mean() for row in losses])
        per_type = [roc_auc_score(y[(kind == t) | (y == 0)], score[(kind == t) | (y == 0)]) for t in types]
        print(f"{k:6d} {roc_auc_score(y, score):6.3f} " + " ".join(f"{r:16.3f}" for r in per_type))
    return 0


if __name__ == "__main__":
    sys.exit(main())
