"""The day's run report: one self-contained HTML file (reports/as_of=D/report.html).

It opens offline: no scripts, no fonts or styles from elsewhere, every chart a PNG embedded as
a data: URI (matplotlib, Agg, imported here only). It shows

    headline    users scored and flagged, events read, rows quarantined and why, drift status
    model       the champion that scored (version, training data, metrics) and its promotion
    charts      the score distribution with the cut-off, flags per reason and per suspected
                type, flags per day over the last report.history_days days
    drift       PSI per feature and of the score, the KS test of the scores (pipelines/drift.py)
    users       the top report.top_users flagged users with their reasons, each with its daily
                event count against the band of the users active that day
    labels      with labels: PR and ROC curves, precision and recall at the budget, recall per
                abuse type (pipelines/evaluate.py, on the held-out users)

Memory stays flat in the number of users: the scores file is read a few columns at a time
(score and flagged for the histogram, the flagged rows for the rest), and the activity charts
aggregate the clean events in DuckDB.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io as pyio
import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from pipelines import io
from pipelines.config import section

log = logging.getLogger("pipelines")

_BLUE, _RED, _GREY, _ORANGE = "#2b6cb0", "#c53030", "#a0aec0", "#dd6b20"


# ----------------------------------------------------------------------------- entry point


def build_report(params: dict[str, Any], as_of: str, lay: Any, registry: Any, version: str, scores_path: str,
                 drift: dict[str, Any], labels: pd.DataFrame | None = None) -> str:
    """The report's HTML for one scored day."""
    p = section(params, "report")
    scores = _read_scores(scores_path, int(p["top_users"]))
    reports = {"score": _json_or_none(lay.report(as_of, "score.json")),
               "clean": _json_or_none(lay.report(as_of, "clean_report.json"))}
    cutoff = _cutoff(scores, section(params, "score"))
    sections = [
        _headline(as_of, version, scores, reports, drift),
        _model_section(registry, version, lay, as_of),
        _charts_section(as_of, lay, scores, cutoff, int(p["history_days"])),
        _drift_section(drift),
        _users_section(as_of, lay, scores, int(p["history_days"]), params),
    ]
    if labels is not None:
        sections.append(_labels_section(scores_path, labels, params))
    else:
        sections.append('<section><h2>Labelled evaluation</h2><p class="muted">No labels for this run '
                        '(set <code>report.labels</code> or pass <code>--labels</code> to '
                        '<code>python -m pipelines report</code>).</p></section>')
    return _page(f"Run report {as_of}", "\n".join(sections))


# ----------------------------------------------------------------------------- data


class _Scores:
    """What the report needs of the scores file, without holding every row's text."""

    def __init__(self, score: np.ndarray, flagged_mask: np.ndarray, flagged: pd.DataFrame, n: int):
        self.score = score
        self.flagged_mask = flagged_mask
        self.flagged = flagged  # the flagged users' rows, best rank first
        self.n = n


def _read_scores(path: str, top_users: int) -> _Scores:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with io.local_copy(path) as local:
        file = pq.ParquetFile(local)
        table = file.read(columns=["score", "flagged"])
        score = table.column("score").to_numpy()
        mask = table.column("flagged").to_numpy(zero_copy_only=False).astype(bool)
        parts = []
        for batch in file.iter_batches(batch_size=65536, columns=["user_id", "score", "rank", "flagged", "reasons",
                                                                   "anomaly_types"]):
            kept = batch.filter(pc.equal(batch.column("flagged"), True))
            if kept.num_rows:
                parts.append(kept.to_pandas())
    flagged = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["user_id", "score", "rank", "flagged", "reasons", "anomaly_types"])
    flagged = flagged.sort_values("rank", kind="stable").reset_index(drop=True)
    return _Scores(score, mask, flagged, len(score))


def _json_or_none(path: str) -> Any:
    return io.read_json(path) if io.exists(path) else None


def _cutoff(scores: _Scores, score_params: dict[str, Any]) -> float | None:
    if score_params["policy"] == "threshold":
        return float(score_params["threshold"])
    flagged = scores.score[scores.flagged_mask]
    return float(flagged.min()) if len(flagged) else None


def reason_signals(reasons: str) -> list[str]:
    """The signals a reasons text names: `feature=value (pNN.N)` -> the feature's base signal
    (windows merged), `event_type at ... (pNN.N)` -> the event type."""
    from pipelines.detectors.base import base_signal

    out = []
    for part in str(reasons or "").split("; "):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            out.append(base_signal(part.split("=", 1)[0]))
        else:
            out.append(part.split(" ", 1)[0])
    return out


def _types(text: str) -> list[str]:
    found = [t for t in str(text or "").split(",") if t]
    return found or ["(no hint)"]


# ----------------------------------------------------------------------------- charts


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def _png(fig, alt: str, css: str = "chart") -> str:
    buf = pyio.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="{css}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", color="#e2e8f0", linewidth=0.8)
    ax.set_axisbelow(True)


def score_histogram(score: np.ndarray, cutoff: float | None) -> str:
    def bars(ax) -> None:
        finite = score[np.isfinite(score)]
        if len(finite):
            # the bars counted here and handed over as one weighted point per bin: matplotlib's
            # hist of a million scores counts them by a sort (np.histogram with explicit edges),
            # while 60 equal bins count in one pass; the same counts, so the same bars
            every, edges = np.histogram(finite, bins=60)
            above = finite[finite >= cutoff] if cutoff is not None else finite[:0]
            flagged = np.histogram(above, bins=edges)[0]
            ax.hist(edges[:-1], bins=edges, weights=every - flagged, color=_BLUE, label="not flagged")
            ax.hist(edges[:-1], bins=edges, weights=flagged, color=_RED, label="flagged")
            ax.set_yscale("log")

    return score_chart(bars, cutoff)


def score_chart(draw_bars, cutoff: float | None) -> str:
    """The score histogram's figure around its bars (draw_bars(ax) draws them): the cut-off,
    labels and style, in one place for score_histogram and for the test that checks its bars."""
    fig = _figure(5.6, 3.0)
    ax = fig.add_subplot()
    draw_bars(ax)
    if cutoff is not None:
        ax.axvline(cutoff, color="#1a202c", linestyle="--", linewidth=1.2)
        ax.annotate(f"cut-off {cutoff:.3g}", (cutoff, 1), xycoords=("data", "axes fraction"), xytext=(-4, -12),
                    textcoords="offset points", ha="right", fontsize=8)
    ax.set_xlabel("score", fontsize=9)
    ax.set_ylabel("users (log scale)", fontsize=9)
    ax.set_title("Score distribution", fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False)
    _style(ax)
    return _png(fig, "Histogram of the day's scores with the flagging cut-off")


def bar_chart(counts: dict[str, int], title: str, color: str = _BLUE, limit: int = 12,
              xlabel: str = "flagged users") -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit][::-1]
    fig = _figure(4.6, max(1.6, 0.28 * len(items) + 0.9))
    ax = fig.add_subplot()
    if items:
        labels, values = zip(*items)
        ax.barh(range(len(items)), values, color=color)
        ax.set_yticks(range(len(items)), labels, fontsize=8)
        for i, v in enumerate(values):
            ax.annotate(str(v), (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no flagged users", ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_yticks([])
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(xlabel, fontsize=9)
    _style(ax)
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color="#e2e8f0", linewidth=0.8)
    return _png(fig, title)


def flags_per_day_chart(per_day: list[tuple[str, int | None]], as_of: str) -> str:
    fig = _figure(5.6, 2.6)
    ax = fig.add_subplot()
    days = [pd.Timestamp(d) for d, _ in per_day]
    values = [np.nan if v is None else v for _, v in per_day]
    colors = [_RED if d.date().isoformat() == as_of else _BLUE for d in days]
    ax.bar(days, values, color=colors, width=0.8)
    missing = [d for d, v in zip(days, values) if np.isnan(v)]
    if missing:
        ax.plot(missing, [0] * len(missing), "x", color=_GREY, markersize=4, label="no scores that day")
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.set_title(f"Flags per day, last {len(per_day)} days", fontsize=10, loc="left")
    ax.set_ylabel("flagged users", fontsize=9)
    _style(ax)
    return _png(fig, "Number of flagged users per day")


def psi_chart(rows: list[dict[str, Any]], score_psi: float, thresholds: dict[str, float], limit: int = 15,
              judged: bool = True) -> str:
    """Bars of the score's and the most drifted features' PSI: red above psi_severe, orange
    above psi_warn, blue below; grey for a feature the model does not read, and every bar grey
    when the day has too few users to judge."""
    shown = [r for r in rows if r["psi"] is not None][:limit]
    items = [("score", score_psi, True)] + [(r["feature"] + ("" if r["in_model"] else " (not in model)"), r["psi"],
                                             r["in_model"]) for r in shown]
    items = items[::-1]
    fig = _figure(5.6, 0.24 * len(items) + 1.0)
    ax = fig.add_subplot()
    values = [v for _, v, _ in items]
    colors = [_GREY if not (judged and used) else
              _RED if v >= thresholds["psi_severe"] else _ORANGE if v >= thresholds["psi_warn"] else _BLUE
              for _, v, used in items]
    ax.barh(range(len(items)), values, color=colors)
    ax.set_yticks(range(len(items)), [n for n, _, _ in items], fontsize=7)
    ax.axvline(thresholds["psi_warn"], color=_ORANGE, linestyle="--", linewidth=1, label="warn")
    ax.axvline(thresholds["psi_severe"], color=_RED, linestyle="--", linewidth=1, label="severe")
    ax.set_xlabel("population stability index vs training", fontsize=9)
    ax.set_title("Largest drift: score and features" + ("" if judged else "\n(grey: too few users to judge)"),
                 fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    _style(ax)
    ax.grid(axis="y", visible=False)
    return _png(fig, "Population stability index of the score and the most drifted features")


def score_cdf_chart(score: dict[str, Any]) -> str:
    fig = _figure(4.2, 2.8)
    ax = fig.add_subplot()
    q = np.linspace(0, 1, 21)
    if score.get("reference_quantiles"):
        ax.plot(score["reference_quantiles"], q, color=_GREY, linewidth=2, label="training users")
    if score.get("today_quantiles"):
        ax.plot(score["today_quantiles"], q, color=_BLUE, linewidth=1.5, label="today")
    ax.set_xlabel("score", fontsize=9)
    ax.set_ylabel("share of users at or below", fontsize=9)
    ax.set_title("Scores: today vs training", fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False)
    _style(ax)
    return _png(fig, "Cumulative distribution of the scores today and among the training users")


def activity_chart(band: pd.DataFrame, user: pd.Series, user_id: str) -> str:
    """The user's events per day (line) against the 10-90% band and median of the users active
    that day."""
    fig = _figure(3.2, 1.25)
    ax = fig.add_subplot()
    days = band.index
    ax.fill_between(days, band["p10"], band["p90"], color="#bee3f8", step="mid", label="users active that day, 10-90%")
    ax.plot(days, band["p50"], color=_BLUE, linewidth=0.8, drawstyle="steps-mid", label="median")
    ax.plot(days, user.reindex(days).fillna(0).to_numpy(), color=_RED, linewidth=1.4, marker="o", markersize=2,
            label=user_id)
    top = max(float(band["p90"].max() if len(band) else 1), float(user.max() if len(user) else 1), 1.0)
    ax.set_ylim(0, top * 1.1)
    ax.tick_params(labelsize=6)
    import matplotlib.dates as mdates

    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=4))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_ylabel("events/day", fontsize=6)
    return _png(fig, f"Daily events of {user_id} against the population's band", css="spark")


def curve_chart(x: list[float], y: list[float], title: str, xlabel: str, ylabel: str, diagonal: bool = False,
                point: tuple[float, float] | None = None) -> str:
    fig = _figure(3.6, 3.0)
    ax = fig.add_subplot()
    ax.plot(x, y, color=_BLUE, linewidth=1.6)
    if diagonal:
        ax.plot([0, 1], [0, 1], color=_GREY, linestyle=":", linewidth=1)
    if point is not None:
        ax.plot([point[0]], [point[1]], "o", color=_RED, label="at the budget")
        ax.legend(fontsize=8, frameon=False)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10, loc="left")
    _style(ax)
    return _png(fig, title)


# ----------------------------------------------------------------------------- sections


def _headline(as_of: str, version: str, scores: _Scores, reports: dict[str, Any], drift: dict[str, Any]) -> str:
    score_json = reports.get("score") or {}
    clean = reports.get("clean") or {}
    cards = [
        ("Users scored", _n(score_json.get("users_scored", scores.n))),
        ("Users flagged", _n(score_json.get("flagged", int(scores.flagged_mask.sum())))),
        ("Events read", _n(clean.get("rows_in")) if clean else "n/a"),
        ("Rows quarantined", _n(clean.get("rows_quarantined")) if clean else "n/a"),
        ("Drift", _drift_label(drift.get("status", "n/a"))),
    ]
    card_html = "".join(f'<div class="card{" " + _status_class(v) if k == "Drift" else ""}"><div class="label">'
                        f'{html.escape(k)}</div><div class="value">{html.escape(str(v))}</div></div>'
                        for k, v in cards)
    details = []
    if clean:
        reasons = clean.get("quarantine_reasons") or {}
        why = ", ".join(f"{_n(n)} {html.escape(str(r))}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        details.append(f"<li>Events: {_n(clean.get('rows_in'))} read, {_n(clean.get('rows_clean'))} clean, "
                       f"{_n(clean.get('rows_quarantined'))} quarantined{(': ' + why) if why else ''}, "
                       f"{_n(clean.get('exact_duplicates_removed'))} exact duplicates removed.</li>")
    else:
        details.append("<li>No clean report for this day (the events were cleaned elsewhere).</li>")
    left = (score_json.get("left_out") or {}).get("inactive_for_more_than_active_within_days")
    if score_json:
        details.append(f"<li>Users in the features: {_n(score_json.get('users_in_features'))}; scored: "
                       f"{_n(score_json.get('users_scored'))}; left out as inactive: {_n(left)}.</li>")
    if drift.get("status") == "too_few_users":
        t = drift.get("thresholds") or {}
        details.append(f"<li>Drift: {_n(drift.get('users'))} users today and {_n(drift.get('reference_users'))} in the "
                       f"training data, below drift.min_users {_n(t.get('min_users'))}: the PSI is shown below but "
                       f"too few users to judge (never severe, never blocks publishing).</li>")
    elif drift.get("status") not in (None, "ok", "no_reference"):
        details.append(f'<li class="{_status_class(drift["status"])}">Drift ({html.escape(drift["status"])}): '
                       f'{html.escape(", ".join(drift.get("drifted", [])[:10]))}'
                       f'{" ..." if len(drift.get("drifted", [])) > 10 else ""}</li>')
    return (f'<section><h2>Headline</h2><div class="cards">{card_html}</div>'
            f'<ul class="details">{"".join(details)}</ul></section>')


def _model_section(registry: Any, version: str, lay: Any, as_of: str) -> str:
    meta = registry.get(version)
    champion = registry.champion() or {}
    data = meta.get("training_data") or {}
    metrics = meta.get("metrics") or {}
    rows = [
        ("Model version", version),
        ("Detector", meta.get("detector")),
        ("Champion now", champion.get("version", "none") + ("" if champion.get("version") == version
                                                             else " (this run scored with another model)")),
        ("Trained as of", meta.get("trained_as_of")),
        ("Training data", f"{_n(data.get('rows_trained_on'))} users trained on, {_n(data.get('users_held_out'))} "
                          f"held out; sha256 {str(data.get('sha256', ''))[:12]}"),
    ]
    for key in ("roc_auc", "pr_auc", "precision_at_k", "recall_at_k"):
        if isinstance(metrics.get(key), (int, float)):
            rows.append((f"Held-out {key} at training", f"{metrics[key]:.3f}"))
    decision = _promotion_record(registry, champion, lay, as_of, version)
    if decision:
        rows += [
            ("Promoted", f"{decision.get('decided_at', champion.get('promoted_at', '?'))} for "
                         f"{decision.get('as_of', '?')}{' (forced)' if decision.get('forced') else ''}"),
            ("Gate decision", f"{'promoted' if decision.get('promoted') else 'not promoted'}: "
                              f"{decision.get('reason', '')}"),
            ("Replaced", decision.get("champion_before") or "no champion before"),
        ]
    else:
        rows.append(("Promotion record", "none found for this version"))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<section><h2>Model</h2><table class="kv">{body}</table></section>'


def _promotion_record(registry: Any, champion: dict[str, Any], lay: Any, as_of: str, version: str) -> dict | None:
    """The gate decision that made `version` the champion: the one champion.json names, else
    the day's promotion.json when it is about this version."""
    if champion.get("version") == version and champion.get("decision"):
        path = io.join(registry.root, "promotions", champion["decision"])
        if io.exists(path):
            return io.read_json(path)
    day = _json_or_none(lay.report(as_of, "promotion.json"))
    if day and day.get("candidate") == version:
        return day
    return None


def _charts_section(as_of: str, lay: Any, scores: _Scores, cutoff: float | None, history_days: int) -> str:
    reason_counts: Counter[str] = Counter()
    type_counts: Counter[str] = Counter()
    for reasons, types in zip(scores.flagged["reasons"], scores.flagged["anomaly_types"]):
        reason_counts.update(set(reason_signals(reasons)))
        type_counts.update(_types(types))
    per_day = _flags_per_day(lay, as_of, history_days, int(scores.flagged_mask.sum()))
    charts = [
        score_histogram(scores.score, cutoff),
        flags_per_day_chart(per_day, as_of),
        bar_chart(dict(reason_counts), "Flags per reason (signal)"),
        bar_chart(dict(type_counts), "Flags per suspected type", color=_ORANGE),
    ]
    return f'<section><h2>Scores and flags</h2><div class="grid">{"".join(charts)}</div></section>'


def _flags_per_day(lay: Any, as_of: str, days: int, today: int) -> list[tuple[str, int | None]]:
    """(day, flagged users) for the `days` days ending at as_of; None for a day not scored."""
    import pyarrow.parquet as pq

    end = dt.date.fromisoformat(as_of)
    window = [(end - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
    scored = set(lay.partitions("scores")) if io.exists(io.join(lay.data, "scores")) else set()
    out: list[tuple[str, int | None]] = []
    for day in window:
        if day == as_of:
            out.append((day, today))
            continue
        if day not in scored or not io.exists(lay.scores(day)):
            # a folder without its file yet: another run of that day is still writing it (the
            # folder is made first, the file moved in once the scores suite passed), not scored
            out.append((day, None))
            continue
        report = _json_or_none(lay.report(day, "score.json"))
        if report and isinstance(report.get("flagged"), int):
            out.append((day, report["flagged"]))
            continue
        with io.local_copy(lay.scores(day)) as local:
            flagged = pq.read_table(local, columns=["flagged"]).column(0).to_numpy(zero_copy_only=False)
        out.append((day, int(flagged.sum())))
    return out


def _drift_section(drift: dict[str, Any]) -> str:
    status = drift.get("status", "n/a")
    if status == "no_reference" or "features" not in drift:
        return (f'<section><h2>Drift</h2><p class="muted">Drift not measured: '
                f'{html.escape(str(drift.get("note", status)))}.</p></section>')
    t = drift["thresholds"]
    s = drift["score"]
    ks = ("n/a" if s["ks_pvalue"] is None else
          f"D = {s['ks_statistic']:.3f}, p = {s['ks_pvalue']:.3g} ({s['n_today']} of today's scores against "
          f"{s['n_reference']} training scores)")
    if status == "too_few_users":
        text = (f"{len(drift.get('unjudged', []))} figures above PSI {t['psi_warn']} or KS p < {t['ks_p_warn']}, "
                f"but with {drift['users']:,} users today and {drift['reference_users']:,} in training (fewer than "
                f"drift.min_users {t.get('min_users')}) chance alone moves the PSI that much: not judged.")
    elif status != "ok":
        text = (f"{len(drift['drifted'])} above PSI {t['psi_warn']} or KS p < {t['ks_p_warn']}; "
                f"{len(drift['severe'])} severe (PSI above {t['psi_severe']} in a feature the model reads, "
                f"or the score).")
    else:
        text = f"no feature above PSI {t['psi_warn']}, scores KS p >= {t['ks_p_warn']}."
    note = (f'<p class="{_status_class(status)}"><b>{html.escape(_drift_label(status).upper())}</b>: '
            f"{html.escape(text)}</p>")
    rows = []
    for r in [r for r in drift["features"] if r["status"] != "ok"][:25] or drift["features"][:5]:
        value = "missing" if r["psi"] is None else f"{r['psi']:.3f}"
        rows.append(f'<tr class="{_status_class(r["status"])}"><td>{html.escape(r["feature"])}</td><td>{value}</td>'
                    f'<td>{html.escape(_drift_label(r["status"]))}</td><td>{"yes" if r["in_model"] else "no"}</td>'
                    f'<td>{html.escape(r.get("note") or "")}</td></tr>')
    table = ("<table class='list'><tr><th>feature</th><th>PSI</th><th>status</th><th>model reads it</th>"
             f"<th></th></tr>{''.join(rows)}</table>")
    charts = psi_chart(drift["features"], s["psi"], t, judged=drift.get("judged", True)) + score_cdf_chart(s)
    rebuilt = (" The training reference was rebuilt from the training day's features."
               if drift.get("reference_rebuilt") else "")
    return (f"<section><h2>Drift against the training data</h2>{note}"
            f"<p>Reference: {_n(drift['reference_users'])} training users of {html.escape(str(drift['model_version']))}"
            f" (trained as of {html.escape(str(drift.get('reference_as_of')))}); today: {_n(drift['users'])} users."
            f" Scores: PSI {s['psi']:.3f}; KS {ks}.{rebuilt}</p>"
            f'<div class="grid">{charts}</div>{table}</section>')


def _users_section(as_of: str, lay: Any, scores: _Scores, history_days: int, params: dict[str, Any]) -> str:
    top = scores.flagged.head(int(section(params, "report")["top_users"]))
    if not len(top):
        why = "No user was flagged." if not len(scores.flagged) else "report.top_users is 0."
        return f'<section><h2>Top flagged users</h2><p class="muted">{why}</p></section>'
    band, users = daily_activity(lay.clean(as_of), as_of, history_days, list(top["user_id"]), params,
                                 population=scores.n)
    rows = []
    for row in top.itertuples(index=False):
        chart = (activity_chart(band, users.get(row.user_id, pd.Series(dtype="float64")), row.user_id)
                 if band is not None else '<span class="muted">no clean events for this day</span>')
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in str(row.reasons).split("; ") if r)
        types = ", ".join(html.escape(t) for t in _types(row.anomaly_types))
        rows.append(f"<tr><td>#{int(row.rank)}</td><td><code>{html.escape(row.user_id)}</code><br>"
                    f"<span class='muted'>score {row.score:.3f}</span></td><td>{types}</td>"
                    f"<td><ul class='reasons'>{reasons}</ul></td><td>{chart}</td></tr>")
    sampled = f" (a sample of about {BAND_USERS:,} users)" if scores.n > BAND_USERS else ""
    legend = (f"Activity: the user's events per day (red) against the users active that day{sampled} (blue band: "
              f"10th to 90th percentile, line: median), the last {history_days} days.")
    return (f"<section><h2>Top {len(top)} flagged users</h2><p class='muted'>{html.escape(legend)}</p>"
            "<table class='list users'><tr><th>rank</th><th>user</th><th>suspected type</th><th>reasons</th>"
            f"<th>daily activity</th></tr>{''.join(rows)}</table></section>")


BAND_USERS = 50_000  # the population band is drawn from about this many users (a stable hash sample)


def daily_activity(events_path: str, as_of: str, days: int, user_ids: list[str], params: dict[str, Any],
                   population: int | None = None) -> tuple[pd.DataFrame | None, dict[str, pd.Series]]:
    """(band, per user): per day of the window, the 10/50/90th percentiles of the event counts of
    the users active that day, and each given user's counts. DuckDB aggregates the file; only
    one row per day and per (given user, day) comes back. With more than BAND_USERS users
    (`population`), the band is drawn from a stable hash sample of about BAND_USERS of them, so
    the aggregation's memory does not grow with the users."""
    import duckdb

    if not io.exists(events_path):
        return None, {}
    end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    start = end - pd.Timedelta(days=days)
    f = section(params, "features")
    with io.local_copy(events_path) as local:
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            if f.get("threads"):
                con.execute(f"SET threads = {int(f['threads'])}")
            if f.get("memory_limit"):
                con.execute(f"SET memory_limit = '{f['memory_limit']}'")
            window = "FROM read_parquet($path) WHERE event_time >= $start AND event_time < $end"
            bounds = {"path": str(local), "start": start.to_pydatetime(), "end": end.to_pydatetime()}
            keep = 10_000 if not population else min(10_000, -(-BAND_USERS * 10_000 // population))
            band = con.execute(f"""
                WITH per_day AS (SELECT user_id, CAST(event_time AS DATE) AS day, count(*) AS n {window}
                                 AND hash(user_id) % 10000 < {int(keep)} GROUP BY ALL)
                SELECT day, quantile_cont(n, 0.1) AS p10, quantile_cont(n, 0.5) AS p50, quantile_cont(n, 0.9) AS p90
                FROM per_day GROUP BY day ORDER BY day""", bounds).df()
            mine = con.execute(f"""
                SELECT user_id, CAST(event_time AS DATE) AS day, count(*) AS n {window}
                AND list_contains($ids, user_id) GROUP BY ALL""", {**bounds, "ids": user_ids}).df()
        finally:
            con.close()
    index = pd.date_range(start.tz_localize(None), periods=days, freq="D")
    band = band.assign(day=pd.to_datetime(band["day"])).set_index("day").reindex(index).fillna(0.0)
    users = {uid: g.assign(day=pd.to_datetime(g["day"])).set_index("day")["n"].astype("float64")
             for uid, g in mine.groupby("user_id")}
    return band, users


def _labels_section(scores_path: str, labels: pd.DataFrame, params: dict[str, Any]) -> str:
    import pyarrow.parquet as pq

    from pipelines.errors import UserError
    from pipelines.evaluate import evaluate

    with io.local_copy(scores_path) as local:
        frame = pq.read_table(local, columns=["user_id", "score", "flagged"]).to_pandas()
    try:
        metrics, plots = evaluate(frame, labels, section(params, "train"))
    except UserError as exc:
        return (f'<section><h2>Labelled evaluation</h2><p class="muted">Labels given, but not usable here: '
                f'{html.escape(str(exc))}</p></section>')
    del frame
    pr, roc = plots["precision_recall"], plots["roc"]
    at_budget = (metrics["recall_at_k"], metrics["precision_at_k"])
    charts = [
        curve_chart([r["recall"] for r in pr], [r["precision"] for r in pr],
                    f"Precision-recall (PR-AUC {metrics['pr_auc']:.3f})", "recall", "precision", point=at_budget),
        curve_chart([r["fpr"] for r in roc], [r["tpr"] for r in roc], f"ROC (ROC-AUC {metrics['roc_auc']:.3f})",
                    "false positive rate", "true positive rate", diagonal=True),
        bar_chart({k: round(v * 100) for k, v in metrics["recall_per_type"].items()},
                  "Recall per abuse type at the budget", color=_RED, xlabel="recall (%)"),
    ]
    facts = (f"On {_n(metrics['holdout_users'])} held-out users ({_n(metrics['holdout_anomalies'])} labelled abusers): "
             f"{metrics['k']} flagged among them, precision {metrics['precision_at_k']:.3f}, "
             f"recall {metrics['recall_at_k']:.3f} at the budget.")
    per_type = "".join(f"<tr><td>{html.escape(k)}</td><td>{metrics['users_per_type'][k]}</td><td>{v:.2f}</td>"
                       f"<td>{metrics['roc_auc_per_type'][k]:.3f}</td></tr>"
                       for k, v in sorted(metrics["recall_per_type"].items()))
    table = ("<table class='list'><tr><th>abuse type</th><th>held-out abusers</th><th>recall at the budget</th>"
             f"<th>ROC-AUC</th></tr>{per_type}</table>")
    return (f"<section><h2>Labelled evaluation</h2><p>{html.escape(facts)}</p>"
            f"<div class='grid'>{''.join(charts)}</div>{table}</section>")


# ----------------------------------------------------------------------------- page


def _n(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return str(value)


def _drift_label(status: str) -> str:
    return "too few users" if status == "too_few_users" else str(status)


def _status_class(status: str) -> str:
    return {"severe": "bad", "warn": "warn", "ok": "good"}.get(str(status), "")


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;background:#f7fafc;
color:#1a202c;font-size:14px}
header{background:#1a365d;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#cbd5e0;font-size:12px}
main{padding:8px 24px 32px;max-width:1280px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:6px;padding:12px 16px;margin:14px 0}
h2{font-size:16px;margin:0 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #e2e8f0;border-radius:6px;padding:8px 14px;min-width:130px;background:#f7fafc}
.card .label{font-size:11px;color:#4a5568;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:22px;font-weight:600}
.card.bad{background:#fff5f5;border-color:#feb2b2}.card.warn{background:#fffaf0;border-color:#fbd38d}
.card.good{background:#f0fff4;border-color:#9ae6b4}
.grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
img.chart{max-width:100%;height:auto;border:1px solid #edf2f7}
img.spark{display:block}
table{border-collapse:collapse}table.kv th{text-align:left;padding:3px 14px 3px 0;color:#4a5568;font-weight:500}
table.list{margin-top:10px;width:100%}table.list th,table.list td{border-bottom:1px solid #edf2f7;padding:4px 8px;
text-align:left;vertical-align:top;font-size:13px}
tr.bad td{background:#fff5f5}tr.warn td{background:#fffaf0}
p.bad,li.bad{color:#9b2c2c}p.warn,li.warn{color:#9c4221}p.good{color:#276749}
ul.reasons{margin:0;padding-left:16px;font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px}
.muted{color:#718096}code{font-size:12px}
"""


def _page(title: str, body: str) -> str:
    generated = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>Behaviour anomaly pipeline; generated {generated} "
            "(self-contained: opens offline)</p></header>"
            f"<main>{body}</main></body></html>\n")
