"""Personal data: raw IPs and device ids are replaced by keyed hashes in cleaning and never reach
the features' inputs, the quarantine, reasons, logs, reports or the warehouse; the features
are what they were on the raw values."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines import clean as clean_module
from pipelines.clean import DEFAULT_ID_SALT, clean, hash_ids
from pipelines.simulate import simulate

REPO = Path(__file__).resolve().parents[1]
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    events, _ = simulate({"n_users": 200, "days": 5, "seed": 21, "end_date": "2026-11-21", "anomaly_rate": 0.1})
    return events


def raw_values(events: pd.DataFrame, col: str) -> set[str]:
    return set(events[col].dropna().astype(str).str.strip()) - {""}


def test_clean_output_and_quarantine_hold_no_raw_ip_or_device_id(events, monkeypatch):
    monkeypatch.delenv("PIPELINES_ID_SALT", raising=False)
    broken = events.head(30).assign(event_type="teleport")  # quarantined, with their IPs and devices
    out, quarantine, report = clean(pd.concat([events, broken], ignore_index=True))
    assert len(quarantine) == 30
    for col in ("ip", "device_id"):
        raw = raw_values(events, col)
        assert len(raw) > 50
        for frame in (out, quarantine):
            values = set(frame[col].dropna())
            assert not values & raw, f"raw {col} in the output"
            assert all(HEX32.match(v) for v in values)
        # missing stays missing, present stays present
        assert out[col].isna().sum() == events[col].isna().sum()
        assert quarantine[col].isna().sum() == broken[col].isna().sum()
        # a value hashes the same in the clean events and in the quarantine
        assert set(quarantine[col].dropna()) <= set(out[col].dropna())
        assert out[col].nunique() == len(raw)
    assert report["ids_hashed"] == {"columns": ["device_id", "ip"], "method": "blake2b keyed, 16 bytes as hex",
                                    "salt": "default",
                                    "values_hashed": {c: int(out[c].notna().sum()) for c in ("device_id", "ip")}}
    assert DEFAULT_ID_SALT not in json.dumps(report)


def test_the_same_salt_gives_the_same_hashes_and_another_salt_others(events, monkeypatch):
    monkeypatch.setenv("PIPELINES_ID_SALT", "s3cret-one")
    first, _, report = clean(events)
    again, _, _ = clean(events.sample(frac=1, random_state=3))  # another order, another run
    assert report["ids_hashed"]["salt"] == "$PIPELINES_ID_SALT"
    assert "s3cret-one" not in json.dumps(report)
    pd.testing.assert_frame_equal(first, again)
    monkeypatch.setenv("PIPELINES_ID_SALT", "s3cret-two")
    other, _, _ = clean(events)
    for col in ("ip", "device_id"):
        assert not set(first[col].dropna()) & set(other[col].dropna())
    # the variable's name is configurable
    monkeypatch.delenv("PIPELINES_ID_SALT")
    monkeypatch.setenv("MY_SALT", "s3cret-one")
    named, _, report = clean(events, {"id_salt_env": "MY_SALT"})
    assert report["ids_hashed"]["salt"] == "$MY_SALT"
    pd.testing.assert_frame_equal(named, first)


def test_hash_ids_keeps_missing_values_and_the_index():
    values = pd.Series(["10.0.0.1", None, "10.0.0.1", "::1"], index=[7, 3, 9, 1], dtype="str", name="ip")
    hashed = hash_ids(values, "k")
    assert hashed.index.tolist() == [7, 3, 9, 1] and hashed.name == "ip" and str(hashed.dtype) == "str"
    assert hashed.isna().tolist() == [False, True, False, False]
    assert hashed[7] == hashed[9] != hashed[1]
    assert hash_ids(pd.Series([None, None], dtype="str"), "k").isna().all()


def test_features_and_sequences_are_those_of_the_raw_values(events, monkeypatch):
    from pipelines.features import build_features
    from pipelines.sequences import build_sequences

    monkeypatch.delenv("PIPELINES_ID_SALT", raising=False)
    hashed, _, _ = clean(events)
    monkeypatch.setattr(clean_module, "hash_ids", lambda values, salt: values)
    raw, _, _ = clean(events)
    assert set(raw["ip"].dropna()) == raw_values(events, "ip")  # the stand-in really kept them
    pd.testing.assert_frame_equal(build_features(hashed, {"threads": 1}), build_features(raw, {"threads": 1}))
    as_of = "2026-11-21"
    pd.testing.assert_frame_equal(build_sequences(hashed, as_of, 64, 1, None), build_sequences(raw, as_of, 64, 1, None))


def test_the_default_salt_warns_once_and_a_configured_one_does_not(events, monkeypatch, caplog):
    monkeypatch.setattr(clean_module, "_warned", set())
    monkeypatch.setenv("PIPELINES_ID_SALT", "configured")
    with caplog.at_level(logging.WARNING, logger="pipelines.clean"):
        clean(events.head(200))
    assert not caplog.records
    monkeypatch.delenv("PIPELINES_ID_SALT")
    with caplog.at_level(logging.WARNING, logger="pipelines.clean"):
        clean(events.head(200))
        clean(events.head(200))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "set PIPELINES_ID_SALT to a secret" in warnings[0]


@pytest.mark.slow
def test_no_raw_ip_or_device_id_in_reasons_reports_logs_or_the_warehouse(tmp_path, events):
    """A whole `run`, logging at debug level: every file it writes after cleaning, the warehouse
    table and the log are searched for the IPs and devices of the users it flagged."""
    source = tmp_path / "events.parquet"
    events.to_parquet(source, index=False)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PIPELINES_ID_SALT"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "pipelines", "-vv", "run", "--events", str(source), "--out", str(out),
                           "--warehouse", f"duckdb:///{tmp_path / 'wh.duckdb'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = pd.read_parquet(out / "scores.parquet")
    flagged = set(scores.loc[scores["flagged"], "user_id"])
    assert flagged
    mine = events[events["user_id"].isin(flagged)]
    secrets = raw_values(mine, "ip") | raw_values(mine, "device_id")
    assert len(secrets) >= 10
    pattern = re.compile(r"(?<![0-9A-Za-z.])(" + "|".join(map(re.escape, sorted(secrets))) + r")(?![0-9A-Za-z])")

    def leaks(text: str) -> list[str]:
        return sorted(set(pattern.findall(text)))

    assert leaks(proc.stderr) == [], "raw identifiers in the log"
    assert "default salt" in proc.stderr  # the warning a deployment without a salt gets
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
            rows = con.sql(f"SELECT * FROM {table}").to_arrow_table().to_pandas()
            assert leaks(rows.to_csv()) == [], f"raw identifiers in the warehouse table {table}"
    checked = []
    for path in sorted(out.rglob("*")):
        if not path.is_file() or "ingested" in path.name:
            continue
        if path.suffix == ".parquet":
            text = pq.read_table(path).to_pandas().to_csv()
        elif path.suffix in (".json", ".html", ".txt", ".csv"):
            text = path.read_text(errors="replace")
        else:
            continue
        assert leaks(text) == [], f"raw identifiers in {path.relative_to(out)}"
        checked.append(path.relative_to(out).as_posix())
    assert {"scores.parquet", "quarantine.parquet", "work/clean.parquet", "features.parquet"} <= set(checked)
    assert any(p.endswith("report.html") for p in checked) and any("reasons" in p or p == "scores.parquet" for p in checked)
    # the search finds what is there: the ingested copy, taken before cleaning, has them
    ingested = pq.read_table(out / "work" / "ingested.parquet").to_pandas().to_csv()
    assert leaks(ingested)
