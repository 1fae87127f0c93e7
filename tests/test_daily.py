"""Daily runs: each step writes its date's partition, dates computed at the same time do not
touch each other, scoring and publishing are separate steps, every user is scored, and `run`
behaves the same wherever it is started."""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipelines import io, stages
from pipelines.config import default_params, override
from pipelines.layout import Layout
from pipelines.registry import Registry

pytestmark = pytest.mark.slow
DAYS = ("2026-11-19", "2026-11-21")


def day_params(root: Path, source: Path, **dotted) -> dict:
    params = default_params()
    params = override(params, "storage", {"data": str(root / "data"), "reports": str(root / "reports"),
                                          "models": str(root / "models")})
    params = override(params, "ingest.source", str(source))
    params = override(params, "score.top_k", 20)
    params = override(params, "features.threads", 1)
    params = override(params, "warehouse.url", f"duckdb:///{root / 'warehouse.duckdb'}")
    for key, value in dotted.items():
        params = override(params, key.replace("__", "."), value)
    return params


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from pipelines.simulate import simulate

    events, labels = simulate({"n_users": 500, "days": 12, "seed": 5, "end_date": "2026-11-21", "anomaly_rate": 0.08})
    folder = tmp_path_factory.mktemp("source")
    events.to_parquet(folder / "events.parquet", index=False)
    labels.to_parquet(folder / "labels.parquet", index=False)
    return folder / "events.parquet"


def prepare(params: dict, day: str) -> dict:
    stages.ingest_stage(params, day)
    stages.clean_stage(params, day)
    stages.features_stage(params, day)
    return stages.train_stage(params, day)


def score_and_publish(params: dict, day: str) -> None:
    stages.score_stage(params, day)
    stages.publish_stage(params, day, run_id=f"run-{day}")


def whole_day(params: dict, day: str) -> str:
    prepare(params, day)
    score_and_publish(params, day)
    return day


@pytest.fixture(scope="module")
def serial(tmp_path_factory, source) -> tuple[Path, dict]:
    """Both days computed one after the other: the reference."""
    root = tmp_path_factory.mktemp("serial")
    params = day_params(root, source)
    trained = prepare(params, DAYS[0])
    stages.promote_stage(params, DAYS[0])
    assert Registry(params["storage"]["models"]).champion_version() == trained["model_version"]
    for day in DAYS:
        if day != DAYS[0]:
            prepare(params, day)
        score_and_publish(params, day)
    return root, params


def test_each_step_writes_its_dates_partition(serial):
    root, params = serial
    lay = Layout.from_params(params)
    for day in DAYS:
        for path in (lay.ingested(day), lay.clean(day), lay.quarantine(day), lay.features(day), lay.scores(day),
                     lay.report(day, "clean_report.json"), lay.report(day, "features.json"),
                     lay.report(day, "train.json"), lay.report(day, "score.json"), lay.report(day, "publish.json")):
            assert Path(path).exists(), path
        assert f"as_of={day}" in lay.features(day)
        assert pd.read_parquet(lay.scores(day))["as_of"].astype(str).eq(day).all()
    assert lay.partitions("features") == list(DAYS)
    # the earlier day does not see later events
    first, last = (pd.read_parquet(lay.features(d)) for d in DAYS)
    assert len(first) <= len(last) and not first["n_events_hist"].equals(last["n_events_hist"])


def test_two_dates_computed_at_once_leave_both_partitions_correct(tmp_path, serial, source):
    ref_root, ref_params = serial
    root = tmp_path / "concurrent"
    params = day_params(root, source)
    # the same champion as the reference, so both runs score with one model
    ref_registry = Registry(ref_params["storage"]["models"])
    champion = ref_registry.champion_version()
    Path(params["storage"]["models"], "registry").mkdir(parents=True)
    import shutil

    shutil.copytree(Path(ref_params["storage"]["models"], "registry", champion),
                    Path(params["storage"]["models"], "registry", champion))
    shutil.copy(ref_registry.champion_path, params["storage"]["models"])
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        done = pool.starmap(whole_day, [(params, day) for day in DAYS])
    assert sorted(done) == list(DAYS)
    ref, got = Layout.from_params(ref_params), Layout.from_params(params)
    for day in DAYS:
        pd.testing.assert_frame_equal(pd.read_parquet(got.features(day)), pd.read_parquet(ref.features(day)))
        pd.testing.assert_frame_equal(pd.read_parquet(got.scores(day)), pd.read_parquet(ref.scores(day)))
        assert json.loads(Path(got.report(day, "train.json")).read_text())["model_version"] == \
            json.loads(Path(ref.report(day, "train.json")).read_text())["model_version"]
    # both trainings registered their versions side by side
    assert {m["trained_as_of"] for m in Registry(params["storage"]["models"]).versions()} >= set(DAYS)
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        per_day = dict(con.execute("SELECT CAST(as_of AS VARCHAR), count(*) FROM flagged_users GROUP BY 1").fetchall())
    assert per_day == {day: 20 for day in DAYS}


def test_republishing_a_day_is_idempotent_and_touches_no_other_day(tmp_path, serial):
    root, params = serial
    params = override(params, "warehouse.url", f"duckdb:///{tmp_path / 'wh.duckdb'}")
    for day in DAYS:
        stages.publish_stage(params, day, run_id="first")

    def rows():
        with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
            return con.execute("SELECT CAST(as_of AS VARCHAR), user_id, rank, score, run_id FROM flagged_users "
                               "ORDER BY 1, 3").fetchall()

    before = rows()
    again = stages.publish_stage(params, DAYS[1], run_id="second")
    after = rows()
    assert again["rows"] == 20 and len(after) == len(before) == 40
    assert [r[:4] for r in after] == [r[:4] for r in before]
    assert {r[4] for r in after if r[0] == DAYS[0]} == {"first"}
    assert {r[4] for r in after if r[0] == DAYS[1]} == {"second"}


def test_publishing_snapshots_the_days_reports_under_the_run_and_points_to_them(tmp_path, serial):
    import hashlib
    import shutil

    root, serial_params = serial
    reports = tmp_path / "reports"
    shutil.copytree(Path(serial_params["storage"]["reports"]), reports)
    params = override(serial_params, "storage.reports", str(reports))
    params = override(params, "warehouse.url", f"duckdb:///{tmp_path / 'wh.duckdb'}")
    day_dir = reports / f"as_of={DAYS[1]}"

    first = stages.publish_stage(params, DAYS[1], run_id="scheduled__2026-11-21T00:00:00+00:00")
    snap = Path(first["reports"])
    assert snap == reports / "runs" / f"as_of={DAYS[1]}" / "run=scheduled__2026-11-21T00_00_00_00_00"
    assert json.loads((day_dir / "publish.json").read_text())["reports"] == str(snap)  # the pointer
    meta = json.loads((snap / "meta.json").read_text())
    day_files = {f.relative_to(day_dir).as_posix() for f in day_dir.rglob("*") if f.is_file()  # hidden: temporary
                 and not any(part.startswith(".") for part in f.relative_to(day_dir).parts)} - {"publish.json"}
    assert set(meta["files"]) == day_files and {"score.json", "train.json", "clean_report.json"} <= day_files
    for name, digest in meta["files"].items():
        assert hashlib.sha256((snap / name).read_bytes()).hexdigest() == digest
    assert meta["published"]["rows"] == first["rows"] and meta["run_id"] == first["run_id"]

    # a rerun's reports land beside the first run's, which stay as they were
    (day_dir / "score.json").write_text('{"rerun": true}')
    second = stages.publish_stage(params, DAYS[1], run_id="manual-2")
    assert json.loads(Path(second["reports"], "score.json").read_text()) == {"rerun": True}
    assert json.loads((snap / "score.json").read_text()) != {"rerun": True}
    assert json.loads((day_dir / "publish.json").read_text())["run_id"] == "manual-2"
    # a retried publish of the same run keeps its snapshot
    (day_dir / "score.json").write_text('{"retried": true}')
    assert stages.publish_stage(params, DAYS[1], run_id="manual-2")["reports"] == second["reports"]
    assert json.loads(Path(second["reports"], "score.json").read_text()) == {"rerun": True}


def test_scoring_does_not_publish_and_publishing_does_not_score(tmp_path, serial):
    root, params = serial
    params = override(params, "warehouse.url", f"duckdb:///{tmp_path / 'untouched.duckdb'}")
    stages.score_stage(params, DAYS[1], out=str(tmp_path / "scores.parquet"), report_out=str(tmp_path / "s.json"))
    assert not (tmp_path / "untouched.duckdb").exists()
    info = stages.publish_stage(params, DAYS[1], scores_in=str(tmp_path / "scores.parquet"),
                                report_out=str(tmp_path / "p.json"))
    assert info["rows"] == 20 and (tmp_path / "untouched.duckdb").exists()


def test_active_within_days_limits_the_table_and_counts_who_was_left_out(tmp_path, serial):
    root, params = serial
    params = override(params, "score.active_within_days", 1)
    info = stages.score_stage(params, DAYS[1], out=str(tmp_path / "scores.parquet"), report_out=str(tmp_path / "s.json"))
    features = pd.read_parquet(Layout.from_params(params).features(DAYS[1]))
    active = int((features["n_events_1d"] > 0).sum())
    assert info["users_scored"] == active < len(features)
    assert info["left_out"]["inactive_for_more_than_active_within_days"] == len(features) - active
    assert json.loads((tmp_path / "s.json").read_text())["users_scored"] == active


def test_scoring_without_a_champion_says_what_to_do(tmp_path, serial, source):
    _, ref_params = serial
    params = day_params(tmp_path, source)
    params = override(params, "storage.data", ref_params["storage"]["data"])
    proc = subprocess.run([sys.executable, "-m", "pipelines", "--params", write_params(tmp_path, params), "score",
                           "--as-of", DAYS[1]], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no champion model") and len(proc.stderr.strip().splitlines()) == 1


def write_params(folder: Path, params: dict) -> str:
    import yaml

    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return str(path)


def year_long_events(n_users: int, seed: int = 7) -> pd.DataFrame:
    """Two events per user, each user active once somewhere in a year: the shape of a real
    year-long shop log, where almost nobody is active in the last month."""
    rng = np.random.default_rng(seed)
    end = pd.Timestamp("2026-11-21T23:00:00Z")
    first = end - pd.Timedelta(days=365) + pd.to_timedelta(rng.uniform(0, 362 * 86400, n_users), unit="s")
    second = first + pd.to_timedelta(rng.uniform(60, 3 * 86400, n_users), unit="s")
    users = [f"c{i:05d}" for i in range(n_users)]
    kinds = rng.choice(["view", "cart", "purchase"], size=2 * n_users, p=[0.7, 0.2, 0.1])
    return pd.DataFrame({"event_time": np.concatenate([first, second]).astype(str), "user_id": users * 2,
                         "event_type": kinds, "product_id": rng.integers(1, 300, 2 * n_users).astype(str),
                         "price": np.round(rng.uniform(1, 200, 2 * n_users), 2)})


def test_a_year_long_file_scores_every_user(tmp_path):
    events = year_long_events(3000)
    events.to_csv(tmp_path / "year.csv", index=False)
    params = tmp_path / "params.yaml"
    params.write_text("features:\n  history_days: 30\nscore:\n  active_within_days: 7\n")  # `run` ignores both caps
    proc = subprocess.run([sys.executable, "-m", "pipelines", "--params", str(params), "run", "--events",
                           str(tmp_path / "year.csv"), "--out", str(tmp_path / "out"), "--warehouse",
                           f"duckdb:///{tmp_path / 'wh.duckdb'}"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert len(scores) == events["user_id"].nunique() == 3000
    features = pd.read_parquet(tmp_path / "out" / "features.parquet")
    assert (features["n_events_hist"] == 2).all()
    recent = features["n_events_28d"] > 0
    assert 0 < recent.sum() < len(features) * 0.2  # most users were active months ago
    # quiet windows are zeros, never NaN: a column is empty only when the whole log lacks its
    # signal (this log has no sessions, devices or signups), and then for every user
    empty = features.isna()
    assert (empty.all() | ~empty.any()).all()
    assert not features.attrs["signals"]["sessions"] and empty["events_per_session_28d"].all()
    assert not empty[["n_events_28d", "share_purchase_28d", "typical_gap_s_hist"]].any().any()
    assert (features.loc[~recent, ["n_events_1d", "n_events_7d", "n_events_28d"]] == 0).all().all()


def test_other_windows_run_the_whole_pipeline_without_editing_expectations(tmp_path, source):
    params = tmp_path / "params.yaml"
    params.write_text("features:\n  windows_days: [1, 3, 14]\nscore:\n  top_k: 10\n")
    proc = subprocess.run([sys.executable, "-m", "pipelines", "--params", str(params), "run", "--events", str(source),
                           "--labels", str(source.with_name("labels.parquet")), "--out", str(tmp_path / "out"),
                           "--warehouse", f"duckdb:///{tmp_path / 'wh.duckdb'}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    columns = set(pd.read_parquet(tmp_path / "out" / "features.parquet").columns)
    assert {"n_events_3d", "n_events_14d", "share_view_14d", "n_events_hist"} <= columns
    assert not any(c.endswith("_28d") or c.endswith("_7d") for c in columns)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["roc_auc"] > 0.6


def test_run_in_an_empty_directory_uses_the_packaged_defaults(tmp_path, source):
    work = tmp_path / "empty"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pipelines", "run", "--events", str(source), "--out", "out",
                           "--warehouse", f"duckdb:///{tmp_path / 'wh.duckdb'}"], capture_output=True, text=True,
                          cwd=work)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((work / "out" / "train_report.json").read_text())
    defaults = default_params()["train"]
    assert report["detector"] == defaults["detector"] == "ecdf_tail"
    registry = Registry(str(work / "out" / "models"))
    names = registry.get(report["model_version"])["feature_names"]
    assert not any(n.startswith(("n_events_", "n_view_", "purchase_value_")) for n in names)
    assert registry.champion_version() == report["model_version"]
    decision = registry.decisions()[-1]
    assert decision["promoted"] and decision["candidate"] == report["model_version"]


def test_a_day_on_s3_partitions_reports_and_registry(s3, tmp_path, source):
    """storage on s3:// through the same code: every partition, report and model version lands
    in the bucket, and a second day scores with the champion read back from it."""
    params = day_params(tmp_path, source)
    params = override(params, "storage", {"data": "s3://events/lake", "reports": "s3://events/reports",
                                          "models": "s3://events/models"})
    for day in DAYS:
        prepare(params, day)
    stages.promote_stage(params, DAYS[0])
    score_and_publish(params, DAYS[1])
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="events")["Contents"]}
    for day in DAYS:
        assert f"lake/features/as_of={day}/features.parquet" in keys
        assert f"reports/as_of={day}/train.json" in keys
    assert f"lake/scores/as_of={DAYS[1]}/scores.parquet" in keys
    assert f"reports/as_of={DAYS[1]}/validation/scores/scores.json" in keys
    assert "models/champion.json" in keys and any(k.startswith("models/promotions/") for k in keys)
    registry = Registry("s3://events/models")
    champion = registry.champion_version()
    assert {m["version"] for m in registry.versions()} >= {champion}
    scores = io.read_parquet(f"s3://events/lake/scores/as_of={DAYS[1]}/scores.parquet")
    assert scores["model_version"].eq(champion).all() and scores["flagged"].sum() == 20


def test_promote_takes_trains_figures_only_for_the_same_features(tmp_path, serial, monkeypatch):
    """Promote after train on the same day's files reuses train's figures without reading the
    features; features rewritten since (one value changed) are read and measured again."""
    import shutil

    root, params = serial
    day = DAYS[0]
    lay = Layout.from_params(params)
    assert io.read_json(lay.report(day, "promotion.json"))["candidate_figures_from"] == "train"

    shutil.copytree(root / "models", tmp_path / "models")
    params = override(params, "storage", {**params["storage"], "models": str(tmp_path / "models")})
    reads = []
    real_read = stages._read_features
    monkeypatch.setattr(stages, "_read_features", lambda *a: reads.append(a) or real_read(*a))
    candidate = io.read_json(lay.report(day, "train.json"))["model_version"]
    stages.promote_stage(params, day, candidate=candidate, report_out=str(tmp_path / "same.json"))
    assert io.read_json(tmp_path / "same.json")["candidate_figures_from"] == "train" and reads == []

    features = pd.read_parquet(lay.features(day))
    column = next(c for c in features.columns if c != "user_id" and features[c].dtype.kind == "f")
    features.loc[0, column] = features[column].max() + 1
    changed = tmp_path / "features.parquet"
    features.to_parquet(changed, index=False)
    stages.promote_stage(params, day, candidate=candidate, features_in=str(changed),
                         report_out=str(tmp_path / "changed.json"))
    assert io.read_json(tmp_path / "changed.json")["candidate_figures_from"] == "gate" and len(reads) == 1
