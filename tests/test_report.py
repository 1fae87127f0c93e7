"""The run report: every scoring run writes one self-contained HTML file with the day's
partition; it carries the headline numbers, the champion and its promotion, real charts (PNG
embedded as data: URIs, nothing fetched from elsewhere), the top flagged users with their
activity, and with labels the PR/ROC curves and recall per abuse type."""
from __future__ import annotations

import base64
import html.parser
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines import io, stages
from pipelines.config import override
from pipelines.evaluate import evaluate, read_labels
from pipelines.layout import Layout
from pipelines.registry import Registry
from pipelines.report import _flags_per_day, daily_activity, reason_signals
from report_data import DAYS, TOP_K, scored_days

DAY = DAYS[-1]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    params, labels = scored_days(root)
    return root, params, labels


class _Page(html.parser.HTMLParser):
    """Every tag with its attributes, and the visible text."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def assert_self_contained(text: str) -> list[bytes]:
    """No script, no external URL anywhere; returns the embedded images' bytes."""
    page = parse(text)
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    assert not re.search(r"(?i)(src|href)\s*=\s*[\"']?\s*(https?:)?//", text)
    assert not re.search(r"(?i)@import|url\(", text)
    assert "http://" not in text and "https://" not in text
    images = []
    for tag, attrs in page.tags:
        if tag == "img":
            src = attrs["src"]
            assert src.startswith("data:image/png;base64,"), src[:40]
            data = base64.b64decode(src.split(",", 1)[1], validate=True)
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
            images.append(data)
            assert attrs.get("alt")
    return images


def test_every_scoring_run_writes_the_days_report(scored):
    root, params, _ = scored
    lay = Layout.from_params(params)
    for day in DAYS:
        path = lay.run_report(day)
        assert path.endswith(f"as_of={day}/report.html") and io.exists(path)
        assert io.read_json(lay.report(day, "drift.json"))["as_of"] == day
    info = stages.score_stage(params, DAY)  # the step returns where the report is
    assert info["report"] == lay.run_report(DAY) and info["drift"] in ("ok", "warn", "severe", "too_few_users")


def test_the_report_has_the_headline_numbers_and_the_champion(scored):
    root, params, _ = scored
    lay = Layout.from_params(params)
    text = io.read_text(lay.run_report(DAY))
    visible = " ".join(" ".join(parse(text).text).split())
    score = io.read_json(lay.report(DAY, "score.json"))
    clean = io.read_json(lay.report(DAY, "clean_report.json"))
    assert f"Users scored {score['users_scored']:,}" in visible
    assert f"Users flagged {TOP_K}" in visible and score["flagged"] == TOP_K
    assert f"Events read {clean['rows_in']:,}" in visible
    assert f"Rows quarantined {clean['rows_quarantined']:,}" in visible
    assert f"{clean['rows_clean']:,} clean" in visible
    registry = Registry(params["storage"]["models"])
    champion = registry.champion()
    assert f"Model version {champion['version']}" in visible
    assert f"for {DAYS[0]}" in visible and "promoted: no champion yet" in visible
    trained = registry.get(champion["version"])["training_data"]
    assert f"{trained['rows_trained_on']:,} users trained on" in visible
    drift = io.read_json(lay.report(DAY, "drift.json"))
    # 500 simulated users, about 330 of them trained on: below drift.min_users
    assert drift["status"] == "too_few_users" and "Drift too few users" in visible
    assert "below drift.min_users 500: the PSI is shown below but too few users to judge" in visible


def test_the_report_is_self_contained_with_real_charts(scored):
    root, params, _ = scored
    text = io.read_text(Layout.from_params(params).run_report(DAY))
    images = assert_self_contained(text)
    # histogram, flags per day, per reason, per type, two drift charts, one per top user (5)
    assert len(images) == 4 + 2 + 5
    assert len(set(images)) == len(images)


def test_the_top_flagged_users_are_listed_with_their_reasons(scored):
    root, params, _ = scored
    lay = Layout.from_params(params)
    text = io.read_text(lay.run_report(DAY))
    scores = pd.read_parquet(lay.scores(DAY))
    top = scores[scores["flagged"]].sort_values("rank").head(5)
    for row in top.itertuples():
        assert f"<code>{row.user_id}</code>" in text
        first_reason = row.reasons.split("; ")[0]
        assert first_reason and first_reason in text
    sixth = scores.sort_values("rank").iloc[5]["user_id"]
    assert f"<code>{sixth}</code>" not in text  # report.top_users is 5
    assert text.count('class="spark"') == 5


def test_without_labels_the_report_says_so_and_with_labels_it_shows_the_evaluation(scored):
    root, params, labels = scored
    lay = Layout.from_params(params)
    plain = io.read_text(lay.run_report(DAY))
    assert "No labels for this run" in plain and "Precision-recall" not in plain

    out = str(root / "with_labels.html")
    info = stages.report_stage(params, DAY, labels=str(labels), report_out=out)
    assert info["report"] == out
    text = io.read_text(out)
    images = assert_self_contained(text)
    assert len(images) == 11 + 3  # PR, ROC, recall per type
    metrics, _ = evaluate(pd.read_parquet(lay.scores(DAY)), read_labels(str(labels)), params["train"])
    visible = " ".join(" ".join(parse(text).text).split())
    assert f"Precision-recall (PR-AUC {metrics['pr_auc']:.3f})" in text
    assert f"ROC (ROC-AUC {metrics['roc_auc']:.3f})" in text
    assert (f"precision {metrics['precision_at_k']:.3f}, recall {metrics['recall_at_k']:.3f} at the budget"
            in visible)
    for kind, recall in metrics["recall_per_type"].items():
        assert f"{kind} {metrics['users_per_type'][kind]} {recall:.2f}" in visible

    # the same from the parameters (report.labels), which is how the score step gets them
    again = stages.report_stage(override(params, "report.labels", str(labels)), DAY, report_out=str(root / "b.html"))
    assert "Recall per abuse type" in io.read_text(again["report"])


def test_flags_per_day_come_from_each_scored_day_and_gaps_stay_empty(scored):
    root, params, _ = scored
    lay = Layout.from_params(params)
    per_day = dict(_flags_per_day(lay, DAY, 30, TOP_K))
    assert len(per_day) == 30 and per_day[DAYS[0]] == TOP_K and per_day[DAY] == TOP_K
    assert per_day["2026-11-19"] is None and per_day["2026-10-23"] is None
    # a day whose score.json is gone is counted from its scores
    io.remove(lay.report(DAYS[0], "score.json"))
    try:
        assert dict(_flags_per_day(lay, DAY, 3, 0))[DAYS[0]] == TOP_K
    finally:
        io.write_json({"flagged": TOP_K}, lay.report(DAYS[0], "score.json"))


def test_a_day_whose_scores_are_still_being_written_counts_as_not_scored(scored):
    """The score step makes the day's folder, writes the file beside its name while the suite
    runs, and moves it in after: a report of another day meanwhile sees the folder alone."""
    root, params, _ = scored
    lay = Layout.from_params(params)
    writing = Path(lay.scores("2026-11-19"))
    writing.parent.mkdir(parents=True)
    (writing.parent / ".scores.parquet.partial.parquet").write_bytes(b"PAR1")
    try:
        per_day = dict(_flags_per_day(lay, DAY, 30, TOP_K))
        assert per_day["2026-11-19"] is None and per_day[DAYS[0]] == TOP_K
    finally:
        import shutil

        shutil.rmtree(writing.parent)


def test_daily_activity_counts_match_the_clean_events(scored):
    root, params, _ = scored
    lay = Layout.from_params(params)
    events = pd.read_parquet(lay.clean(DAY), columns=["user_id", "event_time"])
    events = events[events["event_time"] < pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(days=1)]
    events["day"] = events["event_time"].dt.tz_localize(None).dt.normalize()
    per_user_day = events.groupby(["user_id", "day"]).size()
    busiest = per_user_day.groupby("user_id").sum().idxmax()
    band, users = daily_activity(lay.clean(DAY), DAY, 30, [busiest], params)
    assert len(band) == 30 and band.index[-1] == pd.Timestamp(DAY)
    expected = per_user_day.loc[busiest]
    assert users[busiest].sort_index().to_dict() == {k: float(v) for k, v in expected.sort_index().items()}
    day = expected.index[-1]
    counts = per_user_day.xs(day, level="day")
    assert band.loc[day, "p50"] == pytest.approx(counts.median())
    assert band.loc[day, "p10"] <= band.loc[day, "p50"] <= band.loc[day, "p90"]
    assert band.loc[pd.Timestamp("2026-10-25"), "p90"] == 0  # before the simulation: no activity


def test_on_s3_the_report_and_drift_figures_are_stored_with_the_days_partition(s3, tmp_path):
    params, _ = scored_days(tmp_path, storage="s3://events/run")
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket="events", Prefix="run/")["Contents"]}
    for day in DAYS:
        for name in ("report.html", "drift.json", "drift.parquet"):
            assert f"run/reports/as_of={day}/{name}" in stored
    version = Registry(params["storage"]["models"]).champion_version()
    assert f"run/models/registry/{version}/drift_reference.json" in stored
    text = io.read_text(f"s3://events/run/reports/as_of={DAY}/report.html")
    assert len(assert_self_contained(text)) == 11 and f"Model version {version}" in " ".join(parse(text).text)
    assert not (tmp_path / "reports").exists() and not (tmp_path / "data").exists()


def test_reason_signals_merge_windows_and_read_event_reasons():
    assert reason_signals("n_new_devices_7d=3 (p100.0); refund_ratio_hist=0.5 (p99.1)") == [
        "n_new_devices", "refund_ratio"]
    assert reason_signals("login_failed at 2026-11-17 18:28:44 [new_device] (p99.9)") == ["login_failed"]
    assert reason_signals("") == []


def test_the_report_cli_rewrites_the_days_report_with_labels(scored, tmp_path):
    root, params, labels = scored
    import yaml

    file = tmp_path / "params.yaml"
    file.write_text(yaml.safe_dump(params))
    out = tmp_path / "cli.html"
    done = subprocess.run([sys.executable, "-m", "pipelines", "--params", str(file), "report", "--as-of", DAY,
                           "--labels", str(labels), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout and "Recall per abuse type" in out.read_text()
    missing = subprocess.run([sys.executable, "-m", "pipelines", "--params", str(file), "report", "--as-of",
                              "2026-11-01"], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no scores for 2026-11-01" in missing.stderr


def test_the_airflow_scoring_task_logs_where_the_report_is_and_passes_the_labels(scored, tmp_path_factory,
                                                                                monkeypatch):
    """Last in this file: it rewrites the day's report, now with the labelled section."""
    import logging

    import yaml
    from airflow_env import DAGS, airflow_env

    root, params, labels = scored
    home = tmp_path_factory.mktemp("airflow_home")
    for key, value in airflow_env(home).items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(DAGS))
    import pipelines_tasks as tasks

    file = root / "airflow-params.yaml"
    file.write_text(yaml.safe_dump(params))
    monkeypatch.setenv("PIPELINES_PARAMS", str(file))
    monkeypatch.setenv("PIPELINES_LABELS", str(labels))
    monkeypatch.setattr(tasks, "get_current_context", lambda: {"params": {"as_of": DAY}, "run_id": "manual__r"})
    monkeypatch.setattr(tasks, "_variable", lambda name: None)
    monkeypatch.setattr(tasks, "export_aws_connection", lambda: [])
    monkeypatch.setattr(tasks, "warehouse_url", lambda: None)
    class Lines(logging.Handler):
        lines: list[str] = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    handler, logger = Lines(level=logging.INFO), logging.getLogger("pipelines.airflow")
    logger.addHandler(handler)  # on the logger itself: Airflow's own logging setup routes records elsewhere
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        result = tasks.score_step()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    report = Layout.from_params(params).run_report(DAY)
    assert result["report"] == report
    expected = f"run report for {DAY}: file://{report} (drift: {result['drift']})"
    assert any(expected in line for line in handler.lines), handler.lines
    assert "Recall per abuse type" in io.read_text(report)
    assert tasks.report_link("s3://bucket/reports/as_of=x/report.html") == "s3://bucket/reports/as_of=x/report.html"


def test_the_report_of_pipelines_run_has_the_same_headline_numbers_and_activity_charts(tmp_path):
    """`python -m pipelines run` keeps its own paths (out/work/clean.parquet, out/clean_report.json);
    its report must still show the events read, the quarantine and why, the champion and its
    promotion, and one activity chart per top flagged user, as the daily score step's does."""
    import json

    from pipelines.simulate import simulate

    events, labels = simulate({"n_users": 150, "days": 8, "seed": 11, "anomaly_rate": 0.08, "end_date": "2026-11-21"})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    events = events.assign(event_time=events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    bad = events.head(3).copy()
    bad["event_type"] = "teleport"  # not an event type: quarantined with its reason
    pd.concat([events, bad]).to_csv(tmp_path / "events.csv", index=False)
    (tmp_path / "params.yaml").write_text("report:\n  top_users: 4\nfeatures:\n  threads: 1\n")
    done = subprocess.run([sys.executable, "-m", "pipelines", "run", "--events", "events.csv", "--labels", "labels.csv",
                           "--out", "out", "--warehouse", f"duckdb:///{tmp_path}/wh.duckdb"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    day = summary["score"]["as_of"]
    out = tmp_path / "out"
    path = out / "reports" / f"as_of={day}" / "report.html"
    assert summary["score"]["report"] == str(Path("out") / "reports" / f"as_of={day}" / "report.html")
    text = path.read_text()
    images = assert_self_contained(text)
    visible = " ".join(" ".join(parse(text).text).split())
    clean = json.loads((out / "clean_report.json").read_text())  # where `run` has always put it
    assert clean["rows_in"] == len(events) + 3 and clean["rows_quarantined"] == 3
    (reason, count), = clean["quarantine_reasons"].items()
    assert "n/a" not in visible.split("Headline", 1)[1].split("Model", 1)[0]
    assert f"Events read {clean['rows_in']:,}" in visible and "Rows quarantined 3" in visible
    assert f"{clean['rows_in']:,} read, {clean['rows_clean']:,} clean, 3 quarantined: {count} {reason}" in visible
    assert f"Users scored {summary['score']['users_scored']:,}" in visible
    assert f"Users flagged {summary['score']['flagged']}" in visible
    version = summary["train"]["model_version"]
    assert f"Model version {version}" in visible and "(this run scored with another model)" not in visible
    assert f"for {day}" in visible and "Gate decision promoted: no champion yet" in visible
    # the activity charts: one per top flagged user, from the run's clean events
    assert text.count('class="spark"') == 4 and "no clean events for this day" not in text
    # with --labels: the labelled section, on the same held-out users as metrics.json
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"Precision-recall (PR-AUC {metrics['pr_auc']:.3f})" in text and "No labels for this run" not in text
    assert f"ROC (ROC-AUC {metrics['roc_auc']:.3f})" in text and "Recall per abuse type" in text
    assert len(images) == 4 + 2 + 4 + 3
    # the clean events under the day's partition name are the same file, not a copy
    assert (out / "data" / "clean" / f"as_of={day}" / "events.parquet").stat().st_ino == \
        (out / "work" / "clean.parquet").stat().st_ino
    # about 150 users: drift shown, not judged
    drift = json.loads((out / "reports" / f"as_of={day}" / "drift.json").read_text())
    assert drift["status"] == "too_few_users" and summary["score"]["drift"] == "too_few_users"
    assert "Drift too few users" in visible


def _histogram_of_every_score(score, cutoff):
    """score_histogram as matplotlib's hist of the scores themselves draws its bars: the oracle
    (the figure around the bars is report.score_chart's, the same for both)."""
    import numpy as np

    from pipelines import report

    def bars(ax):
        finite = score[np.isfinite(score)]
        if len(finite):
            edges = np.histogram_bin_edges(finite, bins=60)
            ax.hist(finite[finite < cutoff] if cutoff is not None else finite, bins=edges, color=report._BLUE,
                    label="not flagged")
            ax.hist(finite[finite >= cutoff] if cutoff is not None else finite[:0], bins=edges, color=report._RED,
                    label="flagged")
            ax.set_yscale("log")

    return report.score_chart(bars, cutoff)


@pytest.mark.parametrize("case", ["budget", "threshold_on_an_edge", "no_cutoff", "nan", "one_value"])
def test_the_score_histogram_from_counts_is_the_png_of_a_histogram_of_every_score(case):
    import numpy as np

    from pipelines.report import score_histogram

    rng = np.random.default_rng(5)
    score = np.round(rng.gamma(2.0, 1.5, 30_000), 3)  # ties, and scores on the bin edges
    cutoff = {"budget": float(np.sort(score)[-40]), "threshold_on_an_edge": float(np.histogram_bin_edges(score, 60)[31]),
              "no_cutoff": None, "nan": 3.0, "one_value": 1.0}[case]
    if case == "nan":
        score[::7] = np.nan
    if case == "one_value":
        score = np.ones(9)
    assert score_histogram(score, cutoff) == _histogram_of_every_score(score, cutoff)
