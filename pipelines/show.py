"""What the demo prints: the registry (versions, champion, last decision), then a day's top
flagged users from the warehouse with their reasons, and that day's held-out metrics."""
from __future__ import annotations

from typing import Any

from pipelines import io
from pipelines.layout import Layout
from pipelines.registry import Registry


def print_registry(params: dict[str, Any], limit: int = 1) -> None:
    registry = Registry(Layout.from_params(params).models)
    champion = registry.champion()
    versions = registry.versions()
    print(f"Model registry at {registry.root}: {len(versions)} version(s)")
    for meta in versions:
        mark = "*" if champion and meta["version"] == champion["version"] else " "
        figures = meta.get("metrics") or {}
        shown = ", ".join(f"{k} {figures[k]:.3f}" for k in ("roc_auc", "pr_auc") if k in figures)
        data = meta.get("training_data", {})
        print(f" {mark} {meta['version']:<28} trained as of {meta.get('trained_as_of')} on {data.get('rows_trained_on')} "
              f"users (data {str(data.get('sha256', ''))[:12]}){'; ' + shown if shown else ''}")
    if champion:
        forced = " (forced)" if champion.get("forced") else ""
        print(f"Champion: {champion['version']}, promoted {champion['promoted_at']} for {champion['as_of']}{forced}")
    else:
        print("Champion: none yet")
    for d in registry.decisions()[-limit:]:
        verdict = "promoted" if d["promoted"] else "kept the champion"
        print(f"Last decision ({d['as_of']}): {d['candidate']} vs {d['champion_before'] or 'no champion'}: "
              f"{verdict}; {d['reason']}")


def show(params: dict[str, Any], as_of: str | None, limit: int, experiment: bool = False,
         url: str | None = None) -> None:
    from pipelines.warehouse import Target, read_table

    print_registry(params)
    target = Target.from_params(params, url=url, experiment=experiment)
    table = read_table(target.url, target.table, schema=target.schema)
    if table.empty:
        print("no flagged users in the warehouse yet")
        return
    day = as_of or str(max(table["as_of"]))
    rows = table[table["as_of"].astype("str") == day].sort_values("rank").head(limit)
    print(f"Top {len(rows)} of {int((table['as_of'].astype('str') == day).sum())} flagged users on {day} "
          f"(model {rows['model_version'].iloc[0] if len(rows) else '-'}):")
    for r in rows.itertuples():
        hint = f" [{r.anomaly_types}]" if r.anomaly_types else ""
        print(f"  #{r.rank:<3} {r.user_id:<12} score={r.score:.3f}{hint}  {r.reasons}")
    metrics_path = Layout.from_params(params).report(day, "metrics.json")
    if io.exists(metrics_path):
        m = io.read_json(metrics_path)
        print(f"Held-out evaluation of {m.get('model_version', 'the model')} ({m['holdout_users']} users, "
              f"{m['holdout_anomalies']} abusers): ROC-AUC {m['roc_auc']:.3f}, PR-AUC {m['pr_auc']:.3f}, "
              f"precision@{m['k']} {m['precision_at_k']:.3f}, recall@{m['k']} {m['recall_at_k']:.3f}")
        per_type = ", ".join(f"{t} {v:.2f}" for t, v in sorted(m["recall_per_type"].items()))
        print(f"Recall per abuse type at the budget: {per_type}")
        auc_per_type = ", ".join(f"{t} {v:.3f}" for t, v in sorted(m.get("roc_auc_per_type", {}).items()))
        print(f"ROC-AUC per abuse type (how well each is ranked, whatever the budget): {auc_per_type}")
