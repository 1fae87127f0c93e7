"""Draw docs/pipeline.png: the DVC stages of dvc.yaml and the tasks of the two Airflow DAGs.

    python docs/make_pipeline_diagram.py            # (re)write docs/pipeline.png
    python docs/make_pipeline_diagram.py --check    # exit 1 when the image is older than the sources

Nothing is drawn by hand. The DVC stages and their edges come from dvc.yaml: stage A feeds
stage B when a path A writes (outs, metrics, plots) is, or contains, a path B reads (deps),
with `${...}` filled in from params.yaml. The DAGs' tasks and edges come from Airflow's own
DagBag of dags/ (in a throwaway AIRFLOW_HOME, so no Airflow set-up is touched); a task on
another queue than the default one says so. Each graph is laid out left to right by the
longest path to it; an edge that would cross a box is bent around it.

The graph drawn is stored in the PNG itself (a tEXt chunk, `pipeline-graph`), so `--check`
(and tests/test_readme.py) can tell when a stage or a task was added without regenerating.
matplotlib and PyYAML only (and Airflow to read the DAGs).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "pipeline.png"
META_KEY = "pipeline-graph"
DAG_IDS = ("pipelines_retrain_daily", "pipelines_score_daily")


# ----------------------------------------------------------------------------- the graphs


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _paths(entries: list[Any] | None) -> list[str]:
    """The paths of a deps/outs list (an entry is a path, or {path: options})."""
    out = []
    for entry in entries or []:
        out.extend([entry] if isinstance(entry, str) else list(entry))
    return out


def dvc_graph(dvc_yaml: Path = REPO / "dvc.yaml", params_yaml: Path = REPO / "params.yaml") -> dict[str, Any]:
    """{"stages": [...in dvc.yaml's order], "edges": [[from, to], ...]} of the DVC pipeline."""
    import yaml

    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    values = _flat(yaml.safe_load(params_yaml.read_text()) if params_yaml.exists() else {})

    def fill(path: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(values.get(m.group(1).strip(), m.group(0))), path).rstrip("/")

    writes = {name: [fill(p) for key in ("outs", "metrics", "plots") for p in _paths(spec.get(key))]
              for name, spec in stages.items()}
    edges = []
    for name, spec in stages.items():
        reads = [fill(p) for p in _paths(spec.get("deps"))]
        for other, outs in writes.items():
            if other != name and any(r == o or r.startswith(o + "/") or o.startswith(r + "/")
                                     for r in reads for o in outs):
                edges.append([other, name])
    order = list(stages)
    edges.sort(key=lambda e: (order.index(e[0]), order.index(e[1])))
    return {"stages": order, "edges": edges}


def dag_graphs(dags: Path = REPO / "dags") -> dict[str, Any]:
    """{dag_id: {"tasks": [...], "edges": [[from, to], ...], "queues": {task: queue}}} from
    Airflow's DagBag of `dags`, with a throwaway AIRFLOW_HOME."""
    home = tempfile.mkdtemp(prefix="diagram-airflow-")
    os.environ.update({
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
    })
    sys.path.insert(0, str(dags))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags))
    if bag.import_errors:
        raise SystemExit(f"dags/ does not import: {bag.import_errors}")
    out = {}
    for dag_id in DAG_IDS:
        dag = bag.dags[dag_id]
        tasks = _topological([t.task_id for t in dag.tasks],
                             [[t.task_id, d] for t in dag.tasks for d in sorted(t.downstream_task_ids)])
        edges = sorted([[t.task_id, d] for t in dag.tasks for d in t.downstream_task_ids],
                       key=lambda e: (tasks.index(e[0]), tasks.index(e[1])))
        queues = {t.task_id: t.queue for t in dag.tasks if t.queue != "default"}
        out[dag_id] = {"tasks": tasks, "edges": edges, "queues": queues}
    return out


def _topological(nodes: list[str], edges: list[list[str]]) -> list[str]:
    """`nodes` by layer (longest path from a source), then by their first mention."""
    layer = layers(nodes, edges)
    return sorted(nodes, key=lambda n: (layer[n], nodes.index(n)))


def layers(nodes: list[str], edges: list[list[str]]) -> dict[str, int]:
    layer = {n: 0 for n in nodes}
    for _ in nodes:  # longest path: at most len(nodes) rounds in a DAG
        changed = False
        for a, b in edges:
            if layer[b] < layer[a] + 1:
                layer[b], changed = layer[a] + 1, True
        if not changed:
            break
    return layer


def current_graph() -> dict[str, Any]:
    return {"dvc": dvc_graph(), "dags": dag_graphs()}


# ----------------------------------------------------------------------------- layout and drawing

CHAR_W, BOX_H, GAP_X, GAP_Y, PAD = 0.075, 0.42, 0.55, 0.22, 0.25  # inches (1 data unit = 1 inch)


def layout(nodes: list[str], edges: list[list[str]], labels: dict[str, str]) -> dict[str, tuple[float, float, float]]:
    """{node: (x centre, y centre, box width)}: one column per layer, columns as wide as their
    widest label, the nodes of a column ordered by the mean height of what feeds them."""
    layer = layers(nodes, edges)
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(layer[n], []).append(n)
    widths = {n: max(len(line) for line in labels[n].split("\n")) * CHAR_W + 0.3 for n in nodes}
    pos: dict[str, tuple[float, float, float]] = {}
    x = 0.0
    for i in sorted(columns):
        column = columns[i]
        parents = {n: [pos[a][1] for a, b in edges if b == n and a in pos] for n in column}
        column.sort(key=lambda n: (-(sum(parents[n]) / len(parents[n])) if parents[n] else 0, nodes.index(n)))
        width = max(widths[n] for n in column)
        step = BOX_H + GAP_Y + 0.25
        top = (len(column) - 1) * step / 2
        for j, n in enumerate(column):
            pos[n] = (x + width / 2, top - j * step, widths[n])
        x += width + GAP_X
    return pos


def _box_height(label: str) -> float:
    return BOX_H + 0.16 * label.count("\n")


def _hits(points: list[tuple[float, float]], boxes: list[tuple[float, float, float, float]]) -> bool:
    return any(x0 <= x <= x1 and y0 <= y <= y1 for x, y in points for x0, y0, x1, y1 in boxes)


def _curve(a: tuple[float, float], b: tuple[float, float], rad: float) -> list[tuple[float, float]]:
    """Points of matplotlib's arc3 connection a->b (a quadratic Bezier; the axes have equal
    aspect, so data and display coordinates agree up to scale)."""
    (x1, y1), (x2, y2) = a, b
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    return [((1 - t) ** 2 * x1 + 2 * (1 - t) * t * cx + t * t * x2,
             (1 - t) ** 2 * y1 + 2 * (1 - t) * t * cy + t * t * y2) for t in [i / 40 for i in range(1, 40)]]


def _bend(a: tuple[float, float], b: tuple[float, float], boxes: list[tuple[float, float, float, float]]) -> float:
    """The smallest arc (matplotlib arc3 rad) that keeps the edge a->b clear of `boxes`,
    bulging away from the middle of the graph first (up for an edge in its upper half)."""
    up = (a[1] + b[1]) / 2 >= 0
    for size in (0.0, 0.15, 0.25, 0.35, 0.5, 0.7):
        for rad in ((-size, size) if up else (size, -size)) if size else (0.0,):
            # for an edge drawn left to right a negative rad bulges upwards
            if not _hits(_curve(a, b, rad if a[0] <= b[0] else -rad), boxes):
                return rad if a[0] <= b[0] else -rad
    return -0.7 if up else 0.7


def _panel(nodes: list[str], edges: list[list[str]], queues: dict[str, str]) -> dict[str, Any]:
    """One graph laid out in its own coordinates: boxes, bends and the extent of it all."""
    labels = {n: n + (f"\nqueue {queues[n]}" if n in queues else "") for n in nodes}
    pos = layout(nodes, edges, labels)
    boxes = {}
    for n, (x, y, w) in pos.items():
        h = _box_height(labels[n])
        boxes[n] = (x - w / 2 - 0.05, y - h / 2 - 0.05, x + w / 2 + 0.05, y + h / 2 + 0.05)
    layer = layers(nodes, edges)
    bends, points = {}, [(x0, y0) for x0, y0, _, _ in boxes.values()] + [(x1, y1) for _, _, x1, y1 in boxes.values()]
    for a, b in edges:
        others = [box for n, box in boxes.items() if n not in (a, b)]
        rad = _bend(pos[a][:2], pos[b][:2], others)
        bends[(a, b)] = (rad, layer[b] - layer[a] > 1)
        points += _curve(pos[a][:2], pos[b][:2], rad)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return {"labels": labels, "pos": pos, "bends": bends, "extent": (min(xs), min(ys), max(xs), max(ys))}


TITLE_H = 0.5  # inches above a graph for its title


def draw(graph: dict[str, Any], out: Path = OUT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    dvc = graph["dvc"]
    panels = [("DVC stages (dvc.yaml): dvc repro, make demo", dvc["stages"], dvc["edges"], {}, "#ebf4ff", "#2b6cb0")]
    for dag_id in DAG_IDS:
        dag = graph["dags"][dag_id]
        panels.append((f"Airflow DAG {dag_id} (dags/)", dag["tasks"], dag["edges"], dag["queues"], "#f0fff4",
                       "#2f855a"))
    laid = [(_panel(nodes, edges, queues), title, nodes, edges, queues, fill, edge)
            for title, nodes, edges, queues, fill, edge in panels]
    total_w = max(p["extent"][2] - p["extent"][0] for p, *_ in laid) + 2 * PAD
    heights = [p["extent"][3] - p["extent"][1] + TITLE_H + 0.25 for p, *_ in laid]
    total_h = sum(heights) + PAD
    fig = Figure(figsize=(total_w, total_h), dpi=110)
    fig.patch.set_facecolor("white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, total_w)
    ax.set_ylim(0, total_h)
    ax.set_aspect("equal")
    ax.axis("off")

    top = total_h - PAD / 2
    for (panel, title, nodes, edges, queues, fill, edge), height in zip(laid, heights):
        ax.text(PAD, top - 0.08, title, fontsize=11, fontweight="bold", va="top", ha="left", color="#1a202c")
        x0, y0, x1, y1 = panel["extent"]
        dx = PAD - x0 + (total_w - 2 * PAD - (x1 - x0)) / 2
        dy = top - TITLE_H - y1
        labels, pos = panel["labels"], panel["pos"]
        centre = {n: (x + dx, y + dy) for n, (x, y, _) in pos.items()}
        patches = {}
        for n in nodes:
            (x, y), w, h = centre[n], pos[n][2], _box_height(labels[n])
            patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                   facecolor="#fefcbf" if n in queues else fill, edgecolor=edge, linewidth=1.2,
                                   zorder=3)
            ax.add_patch(patch)
            ax.text(x, y, labels[n], ha="center", va="center", fontsize=9, zorder=4, color="#1a202c",
                    linespacing=1.25)
            patches[n] = patch
        for a, b in edges:
            rad, long = panel["bends"][(a, b)]
            ax.add_patch(FancyArrowPatch(centre[a], centre[b], patchA=patches[a], patchB=patches[b],
                                         connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=11,
                                         linewidth=1.0, color="#a0aec0" if long else "#4a5568", zorder=2,
                                         shrinkA=1, shrinkB=1))
        top -= height
    meta = {META_KEY: json.dumps(graph, sort_keys=True), "Title": "pipeline: DVC stages and Airflow DAGs",
            "Software": "docs/make_pipeline_diagram.py (matplotlib)"}
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png", metadata=meta)
    os.replace(tmp, out)


def stored_graph(path: Path = OUT) -> dict[str, Any] | None:
    """The graph a PNG written by draw() was drawn from (None: no such image or no graph in it)."""
    from PIL import Image

    if not path.exists():
        return None
    with Image.open(path) as image:
        text = image.text.get(META_KEY)
    return json.loads(text) if text else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/pipeline.png is not up to date")
    parser.add_argument("--dvc-yaml", type=Path, default=REPO / "dvc.yaml", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    graph = {"dvc": dvc_graph(args.dvc_yaml), "dags": dag_graphs()}
    if args.check:
        stored = stored_graph()
        if stored != graph:
            what = "missing" if stored is None else "out of date"
            print(f"error: {OUT.relative_to(REPO)} is {what}: run python docs/make_pipeline_diagram.py",
                  file=sys.stderr)
            return 1
        print(f"{OUT.relative_to(REPO)} is up to date")
        return 0
    draw(graph)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
