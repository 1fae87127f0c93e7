"""pipelines.clean: contract section 1 types, the quarantine and the accounting identity."""
from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from pipelines.clean import clean, parse_event_time
from pipelines.errors import UserError
from pipelines.schema import EVENT_DTYPES

T0 = pd.Timestamp("2024-03-01T10:00:00Z")
T0_ISO = "2024-03-01T10:00:00Z"
T0_EPOCH_S = int(T0.timestamp())  # 1709287200


def frame(n: int, **columns) -> pd.DataFrame:
    """n valid view events of distinct users at T0; keyword columns override or add."""
    data = {
        "event_time": [T0_ISO] * n,
        "user_id": [f"u{i}" for i in range(n)],
        "event_type": ["view"] * n,
        "price": [np.nan] * n,
    }
    data.update(columns)
    return pd.DataFrame(data)


def identity(report: dict) -> bool:
    return report["rows_in"] == report["rows_clean"] + report["rows_quarantined"] + report["exact_duplicates_removed"]


# --- event_time -----------------------------------------------------------------------------------


def test_iso_variants_are_the_same_utc_instant():
    variants = [
        "2024-03-01T10:00:00Z",
        "2024-03-01T11:00:00+01:00",
        "2024-03-01T05:00:00-05:00",
        "2024-03-01 10:00:00 UTC",
        "2024-03-01T10:00:00",  # no offset: UTC
        "  2024-03-01T10:00:00.000Z  ",
    ]
    clean_events, quarantine, report = clean(frame(len(variants), event_time=variants))
    assert len(quarantine) == 0 and report["rows_clean"] == len(variants)
    assert clean_events["event_time"].eq(T0).all()
    assert str(clean_events["event_time"].dtype) == EVENT_DTYPES["event_time"]


@pytest.mark.parametrize(
    "values",
    [
        [T0_EPOCH_S, T0_EPOCH_S * 1000],  # integer column, seconds and milliseconds mixed
        [str(T0_EPOCH_S), str(T0_EPOCH_S * 1000)],  # as text (CSV)
        [float(T0_EPOCH_S), float(T0_EPOCH_S * 1000)],  # float column
    ],
)
def test_epoch_seconds_and_milliseconds_are_detected(values):
    clean_events, quarantine, _ = clean(frame(2, event_time=values))
    assert len(quarantine) == 0
    assert clean_events["event_time"].tolist() == [T0, T0]


def test_epoch_milliseconds_keep_sub_second_precision():
    clean_events, _, _ = clean(frame(1, event_time=[T0_EPOCH_S * 1000 + 123]))
    assert clean_events["event_time"].iloc[0] == T0 + pd.Timedelta(milliseconds=123)


def test_epoch_unit_can_be_forced():
    # 1e9 read as milliseconds is 1970-01-12 (before the default floor); forced "s" it is 2001.
    as_ms, _, _ = clean(frame(1, event_time=[1_000_000_000]), {"epoch_unit": "ms", "min_event_time": None})
    as_s, _, _ = clean(frame(1, event_time=[1_000_000_000]), {"epoch_unit": "s"})
    assert as_ms["event_time"].iloc[0] == pd.Timestamp("1970-01-12T13:46:40Z")
    _, floored, _ = clean(frame(1, event_time=[1_000_000_000]), {"epoch_unit": "ms"})
    assert floored["quarantine_reason"].tolist() == ["event_time before 1990-01-01 (clean.min_event_time)"]
    assert as_s["event_time"].iloc[0] == pd.Timestamp("2001-09-09T01:46:40Z")
    with pytest.raises(UserError, match="epoch_unit"):
        clean(frame(1), {"epoch_unit": "minutes"})


def test_datetime_columns_naive_is_utc_and_aware_is_converted():
    naive = pd.to_datetime(["2024-03-01 10:00"] * 2)
    berlin = pd.to_datetime(["2024-03-01 11:00"] * 2).tz_localize("Europe/Berlin")
    assert parse_event_time(pd.Series(naive)).tolist() == [T0, T0]
    assert parse_event_time(pd.Series(berlin)).tolist() == [T0, T0]
    clean_events, _, _ = clean(frame(2, event_time=berlin))
    assert clean_events["event_time"].tolist() == [T0, T0]
    assert str(clean_events["event_time"].dtype) == EVENT_DTYPES["event_time"]


# --- types, ids, columns -----------------------------------------------------------------------


def test_event_types_are_case_insensitive_and_trimmed():
    types = ["VIEW", "Purchase", " login ", "Login_Failed", "REVIEW"]
    clean_events, quarantine, _ = clean(frame(len(types), event_type=types, price=[np.nan, 3.0, np.nan, np.nan, np.nan]))
    assert len(quarantine) == 0
    assert sorted(clean_events["event_type"]) == sorted(["view", "purchase", "login", "login_failed", "review"])


def test_integer_user_ids_are_read_as_strings():
    text, _, _ = clean(frame(3, user_id=["007", "0042", "x-1"]))
    assert sorted(text["user_id"]) == ["0042", "007", "x-1"]
    ints, _, _ = clean(frame(2, user_id=[7, 123]))
    assert sorted(ints["user_id"]) == ["123", "7"]
    # a float column (integer ids with a gap) must not give "123.0"
    floats, quarantine, _ = clean(frame(3, user_id=[123.0, np.nan, 7.0]))
    assert sorted(floats["user_id"]) == ["123", "7"]
    assert quarantine["quarantine_reason"].tolist() == ["missing user_id"]
    nullable, _, _ = clean(frame(2, user_id=pd.array([123, 7], dtype="Int64")))
    assert sorted(nullable["user_id"]) == ["123", "7"]
    for df in (text, ints, floats, nullable):
        assert str(df["user_id"].dtype) == EVENT_DTYPES["user_id"]


def test_output_has_every_contract_column_with_schema_dtypes():
    clean_events, _, _ = clean(frame(3))
    for col, dtype in EVENT_DTYPES.items():
        assert col in clean_events.columns, col
        assert str(clean_events[col].dtype) == dtype, (col, clean_events[col].dtype)
    assert clean_events["quantity"].tolist() == [1, 1, 1]  # default quantity
    assert clean_events["event_id"].notna().all()


def test_full_row_is_typed():
    raw = pd.DataFrame(
        {
            "event_time": [T0_ISO],
            "user_id": ["u1"],
            "event_type": ["purchase"],
            "event_id": ["evt-1"],
            "session_id": ["s1"],
            "product_id": [" p1 "],
            "category": ["shoes"],
            "price": ["19.90"],
            "quantity": ["2"],
            "device_id": ["d1"],
            "ip": ["10.0.0.1"],
            "country": ["de"],
            "rating": [None],
            "review_text": [None],
        }
    )
    clean_events, quarantine, _ = clean(raw)
    assert len(quarantine) == 0
    row = clean_events.iloc[0]
    assert row["price"] == pytest.approx(19.90)
    assert row["quantity"] == 2
    assert row["product_id"] == "p1"
    assert row["country"] == "DE"
    assert row["event_id"] == "evt-1"
    for col, dtype in EVENT_DTYPES.items():
        assert str(clean_events[col].dtype) == dtype, col


def test_unknown_extra_columns_are_kept():
    raw = frame(3, coupon_code=["SPRING10", None, "X"], source_row_no=[10, 11, 12])
    clean_events, _, _ = clean(raw)
    assert {"coupon_code", "source_row_no"} <= set(clean_events.columns)
    by_user = clean_events.set_index("user_id")
    assert by_user.loc["u0", "coupon_code"] == "SPRING10"
    assert pd.isna(by_user.loc["u1", "coupon_code"])
    assert by_user.loc["u2", "source_row_no"] == 12
    # contract columns first, extras after
    assert list(clean_events.columns[: len(EVENT_DTYPES)]) == list(EVENT_DTYPES)


def test_extra_list_column_from_parquet_is_kept(tmp_path):
    raw = frame(3, tags=[["a", "b"], [], ["c"]])
    raw.to_parquet(tmp_path / "events.parquet", index=False)
    clean_events, quarantine, report = clean(pd.read_parquet(tmp_path / "events.parquet"))
    assert report["rows_clean"] == 3 and len(quarantine) == 0
    assert "tags" in clean_events.columns
    # nested values are kept as JSON text, so they stay comparable and hashable
    import json

    assert json.loads(clean_events.set_index("user_id").loc["u0", "tags"]) == ["a", "b"]
    assert json.loads(clean_events.set_index("user_id").loc["u1", "tags"]) == []


def test_output_is_sorted_by_time_then_user():
    raw = frame(3, event_time=["2024-03-01T12:00:00Z", T0_ISO, T0_ISO], user_id=["a", "c", "b"])
    clean_events, _, _ = clean(raw)
    assert clean_events["user_id"].tolist() == ["b", "c", "a"]
    assert clean_events.index.tolist() == [0, 1, 2]


def test_missing_required_column_is_a_user_error():
    with pytest.raises(UserError, match="event_type"):
        clean(pd.DataFrame({"event_time": [T0_ISO], "user_id": ["u"]}))


def test_input_without_optional_columns_is_cleaned():
    raw = pd.DataFrame({"event_time": [T0_ISO, T0_ISO], "user_id": ["u1", "u2"], "event_type": ["view", "login"]})
    clean_events, quarantine, report = clean(raw)
    assert report["rows_clean"] == 2 and len(quarantine) == 0
    assert clean_events["price"].isna().all()
    for col, dtype in EVENT_DTYPES.items():
        assert str(clean_events[col].dtype) == dtype, col


# --- duplicates and event ids -------------------------------------------------------------------


def test_exact_duplicates_are_removed_and_counted():
    raw = frame(3)
    raw = pd.concat([raw, raw.iloc[[0, 0, 2]]], ignore_index=True)  # u0 three times, u2 twice
    clean_events, quarantine, report = clean(raw)
    assert report["exact_duplicates_removed"] == 3
    assert sorted(clean_events["user_id"]) == ["u0", "u1", "u2"]
    assert len(quarantine) == 0 and identity(report) and report["rows_in"] == 6


def test_exact_duplicates_with_the_same_event_id_are_removed_not_quarantined():
    raw = frame(2, event_id=["e1", "e1"], user_id=["u1", "u1"])
    clean_events, quarantine, report = clean(raw)
    assert report["exact_duplicates_removed"] == 1 and len(quarantine) == 0
    assert clean_events["event_id"].tolist() == ["e1"]


def test_event_id_is_derived_deterministically_when_absent():
    raw = frame(5, event_type=["view", "login", "cart", "view", "review"], user_id=["a", "b", "c", "d", "e"])
    first, _, _ = clean(raw)
    again, _, _ = clean(raw.copy())
    assert first["event_id"].tolist() == again["event_id"].tolist()
    assert first["event_id"].notna().all() and first["event_id"].is_unique
    # an id belongs to the row's content, not its position or its neighbours
    ids = dict(zip(first["user_id"], first["event_id"]))
    shuffled, _, _ = clean(raw.iloc[[3, 0, 2]].reset_index(drop=True))
    assert dict(zip(shuffled["user_id"], shuffled["event_id"])) == {u: ids[u] for u in ("d", "a", "c")}
    # rows differing only in time get different ids
    two, _, _ = clean(frame(2, user_id=["a", "a"], event_time=[T0_ISO, "2024-03-01T10:00:01Z"]))
    assert two["event_id"].nunique() == 2


def test_missing_event_ids_are_filled_and_given_ones_kept():
    raw = frame(3, event_id=["given-1", None, ""])
    clean_events, _, _ = clean(raw)
    ids = dict(zip(clean_events["user_id"], clean_events["event_id"]))
    assert ids["u0"] == "given-1"
    assert pd.notna(ids["u1"]) and pd.notna(ids["u2"]) and ids["u1"] != ids["u2"]
    # the derived id matches the one derived when the column is absent altogether
    absent, _, _ = clean(frame(3))
    assert dict(zip(absent["user_id"], absent["event_id"]))["u1"] == ids["u1"]


# --- the quarantine -----------------------------------------------------------------------------

BAD_ROWS = [
    # (reason, column overrides for one otherwise valid row)
    ("missing user_id", {"user_id": None}),
    ("missing user_id", {"user_id": "   "}),
    ("missing event_time", {"event_time": None}),
    ("missing event_time", {"event_time": "   "}),
    ("unparseable event_time", {"event_time": "yesterday-ish"}),
    ("unparseable event_time", {"event_time": "2024-13-45T10:00:00Z"}),
    ("unknown event_type", {"event_type": "teleport"}),
    ("unknown event_type", {"event_type": None}),
    ("negative price", {"event_type": "purchase", "price": "-5"}),
    ("price is not a number", {"event_type": "purchase", "price": "cheap"}),
    ("quantity must be a whole number >= 1", {"quantity": "0"}),
    ("quantity must be a whole number >= 1", {"quantity": "1.5"}),
    ("quantity is not a number", {"quantity": "two"}),
    ("rating must be 1..5", {"event_type": "review", "rating": "7"}),
    ("rating must be 1..5", {"event_type": "review", "rating": "0"}),
    ("rating is not a number", {"event_type": "review", "rating": "great"}),
    ("price is infinite", {"event_type": "purchase", "price": "inf"}),
    ("price is infinite", {"event_type": "purchase", "price": "1e400"}),
    ("price above 1e+09 (clean.max_price)", {"event_type": "purchase", "price": "1e20"}),
    ("price is not a number", {"event_type": "purchase", "price": "12 EUR"}),
    ("price is not a number", {"event_type": "purchase", "price": "NaN"}),
    ("quantity above 1000000 (clean.max_quantity)", {"quantity": "1e30"}),
    ("quantity must be a whole number >= 1", {"quantity": "-3"}),
    ("event_time more than 1 day(s) after ingest time (clean.max_future_days)", {"event_time": "2099-01-01T00:00:00Z"}),
    # 14 digits is no plausible epoch in any unit: as milliseconds it is the year 5138
    ("event_time more than 1 day(s) after ingest time (clean.max_future_days)", {"event_time": "99999999999999"}),
    ("event_time before 1990-01-01 (clean.min_event_time)", {"event_time": "1989-12-31T23:59:59Z"}),
    ("event_time before 1990-01-01 (clean.min_event_time)", {"event_time": "0"}),
    ("user_id longer than 256 characters (clean.max_id_length)", {"user_id": "u" * 257}),
]


def one_row(**overrides) -> dict:
    row = {"event_time": T0_ISO, "user_id": "ok", "event_type": "view", "price": None, "quantity": None,
           "rating": None, "note": "n"}
    row.update(overrides)
    return row


@pytest.mark.parametrize("reason,overrides", BAD_ROWS, ids=[f"{r}:{list(o.values())[-1]}" for r, o in BAD_ROWS])
def test_each_rule_quarantines_with_its_reason_and_the_original_values(reason, overrides):
    good = one_row(user_id="good")
    bad = one_row(**{**overrides, "note": "the bad one"})
    raw = pd.DataFrame([good, bad, good | {"user_id": "good2"}])
    clean_events, quarantine, report = clean(raw)
    assert sorted(clean_events["user_id"]) == ["good", "good2"]
    assert len(quarantine) == 1
    q = quarantine.iloc[0]
    assert q["quarantine_reason"] == reason
    assert q["source_row"] == 1
    assert q["note"] == "the bad one"
    for col, value in overrides.items():  # as it arrived, not as coerced
        if value is None:
            assert pd.isna(q[col]), col
        else:
            assert q[col] == value, col
    assert report["quarantine_reasons"] == {reason: 1}
    assert identity(report)


def test_duplicate_event_id_with_different_content_is_quarantined():
    raw = frame(3, event_id=["e1", "e1", "e2"], user_id=["first", "second", "third"])
    clean_events, quarantine, report = clean(raw)
    assert sorted(clean_events["user_id"]) == ["first", "third"]
    assert quarantine[["quarantine_reason", "user_id", "event_id"]].to_dict("records") == [
        {"quarantine_reason": "duplicate event_id with different content", "user_id": "second", "event_id": "e1"}
    ]
    assert report["exact_duplicates_removed"] == 0 and identity(report)


def test_bad_rows_that_repeat_are_all_quarantined_not_deduplicated():
    bad = one_row(event_type="teleport")
    raw = pd.DataFrame([bad, bad, one_row()])
    _, quarantine, report = clean(raw)
    assert len(quarantine) == 2 and report["exact_duplicates_removed"] == 0
    assert quarantine["source_row"].tolist() == [0, 1]


def test_quarantined_numbers_keep_their_original_text():
    raw = frame(2, event_type=["purchase", "purchase"], price=[-3.5, 10.0])
    _, quarantine, _ = clean(raw)
    assert quarantine["price"].tolist() == ["-3.5"]
    assert quarantine["quarantine_reason"].tolist() == ["negative price"]


def test_first_broken_rule_wins():
    raw = pd.DataFrame([one_row(user_id=None, event_type="teleport", price="-1")])
    _, quarantine, _ = clean(raw)
    assert quarantine["quarantine_reason"].tolist() == ["missing user_id"]


# --- accounting ---------------------------------------------------------------------------------


def test_accounting_identity_and_report_on_a_known_mix():
    good = [one_row(user_id=f"g{i}", event_time=f"2024-03-01T10:00:0{i}Z") for i in range(5)]
    raw = pd.DataFrame(good + [good[0], good[1], one_row(user_id=None), one_row(price="-2", event_type="refund")])
    clean_events, quarantine, report = clean(raw)
    assert report["rows_in"] == 9
    assert report["rows_clean"] == len(clean_events) == 5
    assert report["rows_quarantined"] == len(quarantine) == 2
    assert report["exact_duplicates_removed"] == 2
    assert report["identity_holds"] is True
    assert report["users"] == 5
    assert pd.Timestamp(report["event_time_min"]) == T0
    assert pd.Timestamp(report["event_time_max"]) == T0 + pd.Timedelta(seconds=4)


@pytest.mark.parametrize("seed", range(10))
def test_accounting_identity_on_random_mixes(seed):
    """Property-style: random good rows, exact duplicates of them, and bad rows of random kinds;
    every row ends in the place the generator knows it belongs."""
    rng = random.Random(seed)
    rows, expected_reasons = [], {}
    n_good = rng.randint(0, 40)
    good_rows = []
    for i in range(n_good):
        row = one_row(
            user_id=rng.choice([f"user{i}", i, f"{i:04d}"]),
            event_time=rng.choice([
                f"2024-03-01T10:{i // 60:02d}:{i % 60:02d}Z",
                T0_EPOCH_S + i,
                (T0_EPOCH_S + i) * 1000,
                f"2024-03-01 10:{i // 60:02d}:{i % 60:02d} UTC",
            ]),
            event_type=rng.choice(["view", "VIEW", "Cart", "login"]),
            quantity=rng.choice([None, "1", "3"]),
        )
        row["note"] = f"good-{i}"
        good_rows.append(row)
    rows += good_rows
    n_dups = rng.randint(0, 10) if good_rows else 0
    rows += [dict(rng.choice(good_rows)) for _ in range(n_dups)]
    n_bad = rng.randint(0, 15)
    for j in range(n_bad):
        reason, overrides = rng.choice(BAD_ROWS)
        rows.append(one_row(**overrides, note=f"bad-{j}"))
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    rng.shuffle(rows)
    raw = pd.DataFrame(rows, columns=list(one_row()))
    if not len(raw):
        raw = pd.DataFrame(columns=list(one_row()))

    clean_events, quarantine, report = clean(raw)
    assert report["rows_in"] == len(rows)
    assert report["rows_clean"] == len(clean_events) == n_good
    assert report["exact_duplicates_removed"] == n_dups
    assert report["rows_quarantined"] == len(quarantine) == n_bad
    assert report["quarantine_reasons"] == expected_reasons
    assert identity(report) and report["identity_holds"]
    assert sorted(clean_events["note"]) == sorted(r["note"] for r in good_rows)
    assert sorted(quarantine["note"]) == sorted(f"bad-{j}" for j in range(n_bad))
    assert clean_events["event_id"].is_unique


# --- time bounds, leap seconds, values the features step could not compute ---------------------


def test_the_future_is_judged_against_the_ingest_time_stamped_on_the_frame():
    raw = frame(3, event_time=["2024-03-01T10:00:00Z", "2024-03-02T09:00:00Z", "2024-03-02T11:00:00Z"])
    raw.attrs["ingested_at"] = "2024-03-01T10:00:00+00:00"
    clean_events, quarantine, report = clean(raw)
    # within the one-day tolerance is kept, beyond it is quarantined
    assert clean_events["user_id"].tolist() == ["u0", "u1"]
    assert quarantine["source_row"].tolist() == [2]
    assert report["event_time_bounds"]["latest"] == "2024-03-02 10:00:00+00:00"
    relaxed, nothing, _ = clean(raw, {"max_future_days": None})
    assert len(relaxed) == 3 and nothing.empty


def test_the_floor_is_configurable():
    raw = frame(2, event_time=["1985-06-01T00:00:00Z", "2024-03-01T10:00:00Z"])
    kept, _, _ = clean(raw, {"min_event_time": "1980-01-01"})
    assert len(kept) == 2
    _, quarantine, _ = clean(raw, {"min_event_time": "2000-01-01"})
    assert quarantine["quarantine_reason"].tolist() == ["event_time before 2000-01-01 (clean.min_event_time)"]


@pytest.mark.parametrize("text,expected", [
    ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),
    ("2016-12-31 23:59:60.250 UTC", "2017-01-01T00:00:00.250Z"),
    ("2016-12-31T23:59:60+01:00", "2016-12-31T23:00:00Z"),
])
def test_a_leap_second_is_the_next_second(text, expected):
    clean_events, quarantine, _ = clean(frame(1, event_time=[text]))
    assert quarantine.empty
    assert clean_events["event_time"].iloc[0] == pd.Timestamp(expected)


def test_a_sixty_that_is_not_a_leap_second_stays_unparseable():
    _, quarantine, _ = clean(frame(2, event_time=["2016-12-31T23:60:00Z", "2016-12-31T60:00:00Z"]))
    assert quarantine["quarantine_reason"].tolist() == ["unparseable event_time"] * 2


def test_bounds_are_parameters_and_checked():
    raw = frame(2, event_type=["purchase"] * 2, price=["500", "5"], quantity=["3", "30"])
    _, quarantine, _ = clean(raw, {"max_price": 100.0, "max_quantity": 10})
    assert quarantine["quarantine_reason"].tolist() == ["price above 100 (clean.max_price)",
                                                        "quantity above 10 (clean.max_quantity)"]
    from pipelines.config import default_params, override

    with pytest.raises(UserError, match="clean.max_price"):  # beyond what the features' DECIMAL(18, 4) money holds
        override(default_params(), "clean.max_price", 1e15)


def test_duplicate_column_names_are_refused():
    raw = pd.DataFrame([["2024-03-01", "u", "view", 1, 2]],
                       columns=["event_time", "user_id", "event_type", "price", "price"])
    with pytest.raises(UserError, match="duplicate column name\\(s\\) price"):
        clean(raw)


def test_extreme_values_that_pass_cleaning_build_features():
    from pipelines.features import build_features

    raw = frame(4, event_type=["purchase"] * 4, price=["999999999", "0", "0.0001", "5"],
                quantity=["1000000", "1000000", "1", "1"], user_id=["big", "big", "ünï", "=cmd|' /C calc'!A0"])
    clean_events, quarantine, _ = clean(raw)
    assert quarantine.empty
    features = build_features(clean_events, {"as_of": "2024-03-01"})
    assert sorted(features["user_id"]) == sorted({"big", "ünï", "=cmd|' /C calc'!A0"})
    values = features.drop(columns="user_id").to_numpy(dtype="float64")
    assert not np.isinf(values).any()  # NaN only where a signal is missing (no signup: no account age)
    assert np.isfinite(features[[c for c in features.columns if c.startswith("purchase_value")]].to_numpy()).all()


def test_a_reused_event_id_stays_with_the_row_that_arrived_first_not_the_earliest_in_time():
    raw = frame(3, event_id=["e1", "e1", "e2"], user_id=["u1", "u2", "u3"],
                event_time=["2024-03-01T12:00:00Z", "2024-03-01T09:00:00Z", "2024-03-01T08:00:00Z"])
    clean_events, quarantine, report = clean(raw)
    assert clean_events["user_id"].tolist() == ["u3", "u1"]  # time order; u1 came first with e1
    assert quarantine["source_row"].tolist() == [1]
    assert quarantine["quarantine_reason"].tolist() == ["duplicate event_id with different content"]


def test_equal_id_hashes_only_send_the_ids_to_the_exact_check(monkeypatch):
    """Distinct 64-bit hashes prove the event ids distinct (the fast path); equal hashes, as a
    collision between two different ids would give, must not quarantine anything by themselves."""
    import pipelines.clean as clean_module

    raw = frame(4, event_id=["e1", "e2", "e3", "e2"], user_id=["u1", "u2", "u3", "u4"])
    fast, fast_quarantine, _ = clean(raw)
    monkeypatch.setattr(clean_module, "_hashes_distinct", lambda ids: False)
    distinct, distinct_quarantine, _ = clean(raw.iloc[:3])  # no id reused, yet every hash "collides"
    assert distinct["event_id"].tolist() == ["e1", "e2", "e3"] and distinct_quarantine.empty
    exact, exact_quarantine, _ = clean(raw)
    pd.testing.assert_frame_equal(exact, fast)
    pd.testing.assert_frame_equal(exact_quarantine, fast_quarantine)
    assert fast_quarantine["source_row"].tolist() == [3]


def test_user_ids_order_by_code_point_and_ties_keep_arrival_order():
    """The sort ranks the distinct user ids once and sorts integer keys: the order must stay
    pandas' stable sort by (event_time, user_id) on the text, byte for byte."""
    users = ["ü", "u10", "U1", "u1", "用户", "u2", "", None, "u1", "ü"]
    raw = frame(len(users), user_id=users, session_id=[f"s{i}" for i in range(len(users))],
                event_time=[T0_ISO] * 5 + ["2024-03-01T09:00:00Z"] * 5)
    clean_events, quarantine, report = clean(raw)
    kept = raw.assign(event_time=pd.to_datetime(raw["event_time"], utc=True)).loc[raw["user_id"].fillna("").ne("")]
    expected = kept.sort_values(["event_time", "user_id"], kind="stable")
    assert clean_events["session_id"].tolist() == expected["session_id"].tolist()
    assert sorted(quarantine["quarantine_reason"]) == ["missing user_id"] * 2
    assert report["users"] == 6


# --- the steps' outputs and their validation ------------------------------------------------------


@pytest.mark.parametrize("step", ["ingest", "clean"])
def test_a_step_whose_validation_fails_leaves_its_events_file_as_it_was(tmp_path, monkeypatch, step):
    """ingest_stage and clean_stage write their events file while their suite runs: a failing
    suite leaves the previous file in place (and no temporary file), a passing one replaces it."""
    from pipelines import stages
    from pipelines.config import load_params
    from pipelines.errors import ValidationFailed

    params = load_params("params.yaml")
    source = tmp_path / "events.parquet"
    frame(3, event_time=[T0] * 3).to_parquet(source, index=False)
    out = tmp_path / "work" / "events_out.parquet"
    out.parent.mkdir()
    out.write_bytes(b"the previous day's file")
    paths = {"out": str(out), "validation_dir": str(tmp_path / "validation")}
    if step == "ingest":
        run = lambda: stages.ingest_stage(params, None, source=str(source), **paths)  # noqa: E731
    else:
        paths.update(quarantine_out=str(tmp_path / "q.parquet"), report_out=str(tmp_path / "r.json"))
        run = lambda: stages.clean_stage(params, None, events_in=str(source), **paths)  # noqa: E731
    suites = []

    def failing(df, suite, validation_dir, **options):
        suites.append(suite)
        raise ValidationFailed(f"validation '{suite}' failed")

    monkeypatch.setattr(stages, "check", failing)
    with pytest.raises(ValidationFailed):
        run()
    assert suites == ["raw" if step == "ingest" else "clean"]
    assert out.read_bytes() == b"the previous day's file"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]

    monkeypatch.setattr(stages, "check", lambda df, suite, validation_dir, **options: {"failed": 0})
    run()
    assert len(pd.read_parquet(out)) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
