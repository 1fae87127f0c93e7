"""Review-text features (pipelines.review_text) and the simulator's review texts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

import pipelines.review_text as rt
from pipelines.errors import UserError
from pipelines.review_text import COLUMNS, review_text_features
from pipelines.simulate import simulate

END = pd.Timestamp("2026-03-10", tz="UTC")
TEMPLATE = "Amazing product, highly recommend!!! Super fast shipping"
RING = {  # one template, as five ring accounts post it
    "r1": TEMPLATE,
    "r2": TEMPLATE.upper(),
    "r3": "amazing product highly recommend... super fast shipping!",
    "r4": "Wow, " + TEMPLATE,
    "r5": TEMPLATE + " Thanks",
}
HONEST = [
    "The battery lasts two days and the screen is bright, happy with it",
    "Shoes run a size small, had to return them for a bigger pair",
    "Bought this blender for my mum, she uses it every morning for smoothies",
    "Paperback arrived with a bent corner but the story itself is gripping",
    "Good value lamp, though the switch feels a little loose after a week",
    "Fits my laptop perfectly, the zip is sturdy and the padding thick",
    "Tastes stale, the coffee beans were past their best before date",
    "Lovely scarf, soft wool and the colour matches the photos exactly",
    "Drill stopped working after the third use, customer service was slow",
    "Kids love the puzzle, 500 pieces and none missing",
]


def frame(rows: list[tuple[str, str, str | None]], event_type: str = "review") -> pa.Table:
    """Events (user, event_time, text) as a pyarrow Table like the cleaned events."""
    return pa.table({
        "user_id": pa.array([u for u, _, _ in rows], pa.string()),
        "event_time": pa.array(pd.to_datetime([t for _, t, _ in rows], utc=True, format="ISO8601"), pa.timestamp("us", "UTC")),
        "event_type": pa.array([event_type] * len(rows), pa.string()),
        "review_text": pa.array([x for _, _, x in rows], pa.string()),
    })


def ring_and_honest() -> pa.Table:
    rows = [(u, "2026-03-01", text) for u, text in RING.items()]
    rows += [(f"h{i}", "2026-03-02", text) for i, text in enumerate(HONEST)]
    return frame(rows)


def by_user(features: pd.DataFrame) -> pd.DataFrame:
    return features.set_index("user_id")


def test_ring_accounts_sharing_a_template_rank_above_honest_reviewers():
    f = by_user(review_text_features(ring_and_honest(), END))
    assert list(f.reset_index().columns) == COLUMNS
    ring, honest = f.loc[list(RING)], f.loc[[f"h{i}" for i in range(len(HONEST))]]
    assert ring["max_review_similarity_other"].min() > honest["max_review_similarity_other"].max()
    assert (ring["near_duplicate_review_share"] == 1.0).all() and (honest["near_duplicate_review_share"] == 0).all()
    # r1, r2 and r3 post the same text once normalised: similarity exactly 1
    assert (f.loc[["r1", "r2", "r3"], "max_review_similarity_other"] == 1.0).all()
    assert 0.9 <= f.loc["r4", "max_review_similarity_other"] < 1.0
    # every ring account posted a near-duplicate of the other four
    assert (ring["accounts_sharing_review_text"] == 4).all()
    assert (honest["accounts_sharing_review_text"] == 0).all()


def test_a_text_written_after_the_end_does_not_count():
    rows = [("a", "2026-03-01", TEMPLATE), ("b", "2026-03-09 23:59:59", TEMPLATE), ("c", "2026-03-10", TEMPLATE)]
    f = by_user(review_text_features(frame(rows), END))
    assert sorted(f.index) == ["a", "b"]  # c wrote at the end itself, not before it
    assert f.loc["a", "accounts_sharing_review_text"] == 1
    early = by_user(review_text_features(frame(rows), pd.Timestamp("2026-03-05", tz="UTC")))
    assert list(early.index) == ["a"]
    assert early.loc["a", "max_review_similarity_other"] == 0.0
    assert early.loc["a", "near_duplicate_review_share"] == 0.0
    # a naive end is read as UTC
    pd.testing.assert_frame_equal(review_text_features(frame(rows), pd.Timestamp("2026-03-10")), f.reset_index())


def test_an_account_repeating_its_own_text_is_not_similar_to_other_accounts():
    rows = [("a", f"2026-03-0{d}", text) for d, text in
            ((1, TEMPLATE), (2, TEMPLATE), (3, TEMPLATE.lower()), (4, TEMPLATE + " Thanks"))]
    rows += [(f"h{i}", "2026-03-02", text) for i, text in enumerate(HONEST[:3])]
    f = by_user(review_text_features(frame(rows), END))
    assert f.loc["a", "review_texts"] == 4
    assert f.loc["a", "max_review_similarity_other"] == 0.0
    assert f.loc["a", "near_duplicate_review_share"] == 0.0
    assert f.loc["a", "accounts_sharing_review_text"] == 0
    # a second account with one of those texts makes all of a's near-duplicate reviews shared
    g = by_user(review_text_features(frame(rows + [("b", "2026-03-05", TEMPLATE)]), END))
    assert g.loc["a", "max_review_similarity_other"] == 1.0
    assert g.loc["a", "near_duplicate_review_share"] == 1.0
    assert g.loc["a", "accounts_sharing_review_text"] == 1 and g.loc["b", "accounts_sharing_review_text"] == 1


def test_only_reviews_with_some_letters_or_digits_count():
    rows = [("a", "2026-03-01", "!!!"), ("b", "2026-03-01", "!!!"), ("c", "2026-03-01", None),
            ("d", "2026-03-01", "Five stars"), ("e", "2026-03-01", "five stars.")]
    f = by_user(review_text_features(frame(rows), END))
    assert sorted(f.index) == ["d", "e"]
    views = frame([("v", "2026-03-01", TEMPLATE), ("w", "2026-03-01", TEMPLATE)], event_type="view")
    assert review_text_features(views, END).empty


def expect_empty(result: pd.DataFrame) -> None:
    assert result.empty and list(result.columns) == COLUMNS
    assert str(result["user_id"].dtype) == "str" and (result.dtypes.iloc[1:] == "float64").all()


def test_absent_or_all_null_review_text_gives_an_empty_frame_without_reading(tmp_path, monkeypatch):
    events = ring_and_honest()
    without = events.drop_columns(["review_text"])
    nulls = events.set_column(3, "review_text", pa.nulls(events.num_rows, pa.string()))
    pq.write_table(without, tmp_path / "without.parquet")
    pq.write_table(nulls, tmp_path / "nulls.parquet")

    def no_reading(*args, **kwargs):
        raise AssertionError("read the events although no review text is there")

    monkeypatch.setattr(rt.ds, "dataset", no_reading)
    for events_in in (without, nulls, without.to_pandas(), tmp_path / "without.parquet", str(tmp_path / "nulls.parquet")):
        expect_empty(review_text_features(events_in, END))


def test_parquet_path_table_and_dataframe_give_the_same_features(tmp_path):
    events = ring_and_honest()
    pq.write_table(events, tmp_path / "events.parquet", row_group_size=4)
    expected = review_text_features(events, END)
    pd.testing.assert_frame_equal(review_text_features(tmp_path / "events.parquet", END), expected)
    pd.testing.assert_frame_equal(review_text_features(events.to_pandas(), END), expected)


def test_output_is_deterministic_and_independent_of_row_order(sim):
    events, _ = sim
    table = pa.Table.from_pandas(events, preserve_index=False)
    first = review_text_features(table, END_SIM)
    again = review_text_features(table, END_SIM)
    shuffled = table.take(np.random.default_rng(3).permutation(table.num_rows))
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(review_text_features(shuffled, END_SIM), first)
    assert first["user_id"].is_monotonic_increasing


def test_a_dense_embedding_plugs_in():
    events = ring_and_honest()
    dense = review_text_features(events, END, embed=lambda texts: rt.embed(texts).toarray())
    pd.testing.assert_frame_equal(dense, review_text_features(events, END))


@pytest.mark.parametrize("params", [{"near_duplicate_threshold": 1.2}, {"min_similarity": 0.95},
                                    {"min_similarity": 0}, {"lsh_bands": 0}, {"max_bucket": 2.5}])
def test_bad_params_are_a_user_error(params):
    with pytest.raises(UserError):
        review_text_features(ring_and_honest(), END, params)


# ------------------------------------------------------------------ on the simulator

SIM = {"seed": 3, "n_users": 8000, "days": 28, "end_date": "2026-03-31", "anomaly_rate": 0.06,
       "anomaly_mix": {"fake_review_ring": 2, "brushing": 1, "refund_abuse": 1}}
END_SIM = pd.Timestamp("2026-04-01", tz="UTC")


@pytest.fixture(scope="module")
def sim():
    return simulate(SIM)


def test_simulated_ring_members_post_near_duplicates_and_honest_users_do_not(sim):
    events, labels = sim
    f = review_text_features(events, END_SIM).merge(labels, on="user_id")
    ring = f[f["anomaly_type"] == "fake_review_ring"]
    honest = f[f["is_anomaly"] == 0]
    assert len(ring) > 50 and len(honest) > 500
    assert ring["near_duplicate_review_share"].mean() > 0.3 > 0.02 > honest["near_duplicate_review_share"].mean()
    both = pd.concat([ring, honest])
    for column in ("max_review_similarity_other", "near_duplicate_review_share", "accounts_sharing_review_text"):
        assert roc_auc_score(both["anomaly_type"] == "fake_review_ring", both[column]) > 0.8, column


def test_simulated_honest_texts_are_diverse_and_ring_texts_repeat(sim):
    events, labels = sim
    reviews = events[events["review_text"].notna()].merge(labels, on="user_id")
    honest = reviews.loc[reviews["is_anomaly"] == 0, "review_text"]
    assert honest.nunique() > 0.9 * len(honest)
    # after lowercasing and dropping punctuation, a ring's template is one text shared by accounts
    reviews["text"] = reviews["review_text"].str.lower().str.replace(r"[^a-z0-9]+", " ", regex=True).str.strip()
    accounts = reviews.groupby("text")["user_id"].nunique()
    shared = reviews["text"].map(accounts) >= 2
    assert shared[reviews["anomaly_type"] == "fake_review_ring"].mean() > 0.3
    assert shared[reviews["is_anomaly"] == 0].mean() < 0.02


def test_review_texts_draw_nothing_from_the_worlds_generator(monkeypatch):
    """Every other column is the same whatever the texts are: rendering them uses its own
    generator (the frozen output digests in test_simulate.py rely on the world's draws)."""
    from pipelines.simulate import output

    params = {**SIM, "n_users": 1500}
    events, labels = simulate(params)

    def no_texts(w, code, user, prod):
        return pa.array([None] * len(code), pa.large_string())

    monkeypatch.setattr(output, "render_review_texts", no_texts)
    plain, plain_labels = simulate(params)
    assert plain["review_text"].isna().all() and events["review_text"].notna().any()
    pd.testing.assert_frame_equal(plain.drop(columns="review_text"), events.drop(columns="review_text"))
    pd.testing.assert_frame_equal(plain_labels, labels)


def test_min_hash_search_finds_the_pairs_brute_force_finds(sim):
    events, _ = sim
    texts = rt._reviews(pa.Table.from_pandas(events, preserve_index=False), END_SIM).column("text").unique()
    X = rt.embed(texts.to_pylist())
    a, b, s, _ = rt._similar_pairs_sparse(X.copy(), 0.8, 32, 8, 50, 10_000)
    found = dict(zip(zip(a.tolist(), b.tolist()), s.tolist()))
    used = np.unique(X.indices)  # the same cosines on the columns in use, dense
    ta, tb, ts, _ = rt._similar_pairs_dense(X[:, used].toarray(), 0.8, 512)
    truth = dict(zip(zip(ta.tolist(), tb.tolist()), ts.tolist()))
    near = [pair for pair, v in truth.items() if v >= 0.9]
    assert len(near) > 20
    assert sum(pair in found for pair in near) >= 0.95 * len(near)
    assert set(found) <= set(truth)  # every pair reported is verified
    assert all(abs(found[pair] - truth[pair]) < 1e-5 for pair in found)


def test_the_features_step_reads_the_reviews_before_its_end_from_a_file_or_a_frame(make_events, tmp_path):
    """build_features reads the reviews through its own DuckDB view of the events: the columns
    are review_text_features' over the same log, from a Parquet file as from a frame, and a text
    posted after the as-of day (by an account with an event before it) counts for no one."""
    from pipelines import io
    from pipelines.features import build_features

    rows = [dict(event_time=t, user_id=u, event_type="review", product_id="p1", rating=5, review_text=x)
            for u, t, x in [(u, "2026-03-01T00:00:00", x) for u, x in RING.items()]
            + [(f"h{i}", "2026-03-02T00:00:00", x) for i, x in enumerate(HONEST)]
            + [("late", "2026-03-10T00:00:00", TEMPLATE), ("late", "2026-03-12T08:00:00", TEMPLATE)]]
    rows.append(dict(event_time="2026-03-05T00:00:00", user_id="late", event_type="view", product_id="p1"))
    events = make_events(rows)
    io.write_parquet(events, tmp_path / "events.parquet")
    params = {"as_of": "2026-03-09", "threads": 2, "review_text": {"enabled": True}}
    from_file = build_features(str(tmp_path / "events.parquet"), params)
    pd.testing.assert_frame_equal(build_features(events, params), from_file)
    expected = by_user(review_text_features(tmp_path / "events.parquet", END))
    assert "late" not in expected.index and set(expected.index) < set(from_file["user_id"])
    got = by_user(from_file)
    names = ["max_review_similarity_other", "near_duplicate_review_share", "accounts_sharing_review_text"]
    pd.testing.assert_frame_equal(got.loc[expected.index, names], expected[names])
    assert got.loc["late", names].tolist() == [0.0, 0.0, 0.0]
    assert got.loc["r1", "accounts_sharing_review_text"] == 4  # r2..r5, not "late"


def test_the_features_step_reads_only_the_reviews_in_its_history_window(make_events):
    """With features.history_days, a text posted before the window counts for no one, as every
    *_hist feature leaves that event out; with all history it counts like any other."""
    from pipelines.features import build_features

    rows = [dict(event_time="2026-03-01T00:00:00", user_id=u, event_type="review", product_id="p1", rating=5,
                 review_text=x) for u, x in RING.items()]
    rows += [dict(event_time="2026-01-02T00:00:00", user_id="old", event_type="review", product_id="p1", rating=5,
                  review_text=TEMPLATE),
             dict(event_time="2026-03-05T00:00:00", user_id="old", event_type="view", product_id="p1")]
    events = make_events(rows)
    names = ["max_review_similarity_other", "near_duplicate_review_share", "accounts_sharing_review_text"]
    base = {"as_of": "2026-03-09", "threads": 2, "review_text": {"enabled": True}}
    windowed = by_user(build_features(events, {**base, "history_days": 30}))
    everything = by_user(build_features(events, {**base, "history_days": None}))
    assert windowed.loc["old", names].tolist() == [0.0, 0.0, 0.0]
    assert windowed.loc["r1", "accounts_sharing_review_text"] == 4  # r2..r5
    assert everything.loc["old", "max_review_similarity_other"] > 0.9
    assert everything.loc["r1", "accounts_sharing_review_text"] == 5  # and "old"


def test_embed_counts_each_words_padded_character_3_to_5_grams():
    from sklearn.feature_extraction.text import CountVectorizer

    texts = ["ab", "x", "abc abc", "wow amazing product must buy", "amazing product must buy",
             "café crème brûlée 10 out of 10", "ünïcödé 𝔘𝔫𝔦", "a b c"]
    X = rt.embed(texts)
    # the same n-grams as scikit-learn's char_wb analyzer, counted exactly (by their strings)
    counts = CountVectorizer(analyzer="char_wb", ngram_range=(3, 5), lowercase=False).fit_transform(texts)
    for i in range(len(texts)):
        expected = np.sort(counts[i].data.astype(np.float64))
        expected /= np.sqrt((expected ** 2).sum())
        np.testing.assert_allclose(np.sort(X[i].data), expected, rtol=1e-6)  # no collision among so few
    np.testing.assert_allclose(np.asarray(X.multiply(X).sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    cosine = (X @ X.T).toarray()
    dense = counts.toarray().astype(np.float64)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    np.testing.assert_allclose(cosine, dense @ dense.T, atol=1e-6)
    assert rt.embed([]).shape == (0, 2 ** 20)


def test_embed_gives_each_text_the_same_row_whatever_else_it_is_embedded_with(monkeypatch):
    texts = [f"review number {i} of a longer text" for i in range(7)]
    whole = rt.embed(texts)
    monkeypatch.setattr(rt, "_EMBED_CHUNK", 3)  # three passes: 3 + 3 + 1 texts
    parts = rt.embed(texts)
    assert (whole != parts).nnz == 0 and parts.shape == whole.shape
    assert (rt.embed(texts[4:5]) != whole[4]).nnz == 0


# ------------------------------------------------------------------ the semantic model (wordllama)

REWORDED = {  # one ring template, reworded by each account: a synonym swapped in
    "r1": "Wonderful purchase, top quality! Will buy again",
    "r2": "Brilliant purchase, top quality! Will buy again",
    "r3": "Amazing purchase... top quality, will buy again!!",
}


def reworded_ring_and_honest() -> pa.Table:
    rows = [(u, "2026-03-01", text) for u, text in REWORDED.items()]
    rows += [(f"h{i}", "2026-03-02", text) for i, text in enumerate(HONEST)]
    return frame(rows)


def test_wordllama_matches_a_reworded_ring_that_the_lexical_model_misses():
    events = reworded_ring_and_honest()
    lexical = by_user(review_text_features(events, END))
    semantic = by_user(review_text_features(events, END, {"model": "wordllama"}))
    ring, honest = list(REWORDED), [f"h{i}" for i in range(len(HONEST))]
    assert (lexical.loc[ring, "near_duplicate_review_share"] == 0).all()  # other words, other n-grams
    assert (semantic.loc[ring, "near_duplicate_review_share"] == 1).all()
    assert (semantic.loc[ring, "accounts_sharing_review_text"] == 2).all()
    assert (semantic.loc[ring, "max_review_similarity_other"] >= 0.9).all()
    assert (semantic.loc[honest, "max_review_similarity_other"] < 0.8).all()
    assert list(semantic.columns) == list(lexical.columns)


def test_wordllama_loads_without_the_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("the model tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    rt._wordllama.cache_clear()
    X = rt.semantic_embed(["great product highly recommend", "excellent item strongly recommended",
                           "the zip broke after two days"])
    assert X.shape == (3, 256) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert X[0] @ X[1] > 0.5 > 0.2 > max(X[0] @ X[2], X[1] @ X[2])


def test_without_the_wordllama_package_the_error_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wordllama", None)  # import fails
    rt._wordllama.cache_clear()
    try:
        with pytest.raises(UserError, match="pip install .*wordllama.*or set model: lexical"):
            review_text_features(reworded_ring_and_honest(), END, {"model": "wordllama"})
    finally:
        rt._wordllama.cache_clear()


def test_no_review_text_loads_no_model(monkeypatch):
    def fail():
        raise AssertionError("loaded the model for a log without review texts")

    monkeypatch.setattr(rt, "_wordllama", fail)
    views = frame([("a", "2026-03-01", None)])
    assert review_text_features(views, END, {"model": "wordllama"}).empty
    without = ring_and_honest().drop_columns(["review_text"])
    assert review_text_features(without, END, {"model": "wordllama"}).empty


def test_an_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="model must be one of lexical, wordllama"):
        review_text_features(ring_and_honest(), END, {"model": "bert"})


def test_the_cell_search_finds_what_brute_force_finds():
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((40, 24))
    X = np.repeat(centres, 60, axis=0) + 0.35 * rng.standard_normal((2400, 24))  # clusters of near neighbours
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    ta, tb, ts, _ = rt._similar_pairs_dense(X, 0.8, 512)
    a, b, s, stats = rt._similar_pairs_cells(X, 0.8, 64, 3, 512)
    assert stats["cells"] == 38 and stats["candidate_pairs"] < 0.4 * 2400 * 2399 / 2  # not every pair
    truth = dict(zip(zip(ta.tolist(), tb.tolist()), ts.tolist()))
    found = dict(zip(zip(a.tolist(), b.tolist()), s.tolist()))
    assert len(truth) > 5000 and len(found) == len(set(found)) and (a < b).all()
    assert len(set(found) & set(truth)) >= 0.99 * len(truth)
    assert set(found) <= set(truth)
    np.testing.assert_allclose([found[p] for p in found], [truth[p] for p in found], atol=1e-5)
    again = rt._similar_pairs_cells(X, 0.8, 64, 3, 512)
    np.testing.assert_array_equal(again[0], a)
    np.testing.assert_array_equal(again[1], b)
    one_cell = rt._similar_pairs_cells(X, 0.8, 5000, 3, 512)  # fewer rows than a cell: brute force
    assert one_cell[3]["cells"] == 1 and len(one_cell[0]) == len(ta)


def test_rewording_rings_only_changes_ring_members_review_texts():
    params = {**SIM, "n_users": 3000}
    events, labels = simulate(params)
    reworded, labels_again = simulate({**params, "ring_rewording": 0.6})
    pd.testing.assert_frame_equal(labels, labels_again)
    pd.testing.assert_frame_equal(events.drop(columns=["review_text"]), reworded.drop(columns=["review_text"]))
    kind = events["user_id"].map(labels.set_index("user_id")["anomaly_type"])
    ring = (kind == "fake_review_ring").to_numpy()
    in_some_ring = kind.isin(["fake_review_ring", "brushing"]).to_numpy()  # brushing rings post hype too
    before, after = events["review_text"], reworded["review_text"]
    pd.testing.assert_series_equal(before[~in_some_ring], after[~in_some_ring])
    changed = (before[ring] != after[ring]) & before[ring].notna()
    assert changed.sum() > 20
    # a reworded text is the same template with phrases swapped: its format survives
    assert (after[ring][changed].str.count(r"[,.!]") > 0).all()
    # rewording leaves fewer of a ring's texts word for word the same as another account's

    def shared_share(texts: pd.Series) -> float:
        reviews = pd.DataFrame({"user_id": events["user_id"], "text": texts.str.lower().str.replace(
            r"[^a-z0-9]+", " ", regex=True).str.strip()})[texts.notna().to_numpy()]
        accounts = reviews.groupby("text")["user_id"].nunique()
        return float((reviews["text"].map(accounts) >= 2)[ring[texts.notna().to_numpy()]].mean())

    assert shared_share(after) < 0.6 * shared_share(before)
