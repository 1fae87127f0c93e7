"""How long parsing dags/ takes, against Airflow's import timeout (core.dagbag_import_timeout).

Each repeat runs in a fresh interpreter with a throwaway AIRFLOW_HOME and no example DAGs:

  * DagBag fill: Airflow already imported (as in the DAG processor), the time of
    DagBag(dag_folder=dags/) and Airflow's own per-file parse durations;
  * cold import: one DAG file imported by a bare interpreter, Airflow's Task SDK included
    (an upper bound for a worker parsing the file before it runs a task).

    python benchmarks/bench_dag_parse.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
HEAVY = ("pandas", "duckdb", "great_expectations", "torch", "sklearn", "pyarrow", "pipelines.stages")

_FILL = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag
    t1 = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    t2 = time.perf_counter()
    print(json.dumps({
        "airflow_import_s": t1 - t0,
        "fill_s": t2 - t1,
        "files": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats},
        "dags": sorted(bag.dags),
        "import_errors": bag.import_errors,
        "dagbag_import_timeout_s": conf.getfloat("core", "dagbag_import_timeout"),
        "dag_file_processor_timeout_s": conf.getfloat("dag_processor", "dag_file_processor_timeout"),
        "heavy": [m for m in HEAVY if m in sys.modules],
    }))
""").replace("HEAVY", repr(HEAVY))

_COLD = textwrap.dedent("""
    import importlib.util, json, sys, time
    t0 = time.perf_counter()
    spec = importlib.util.spec_from_file_location("dag_file", sys.argv[1])
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    print(json.dumps({"import_s": time.perf_counter() - t0, "heavy": [m for m in HEAVY if m in sys.modules]}))
""").replace("HEAVY", repr(HEAVY))


def _run(script: str, arg: str, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, arg], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms, max {max(values) * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    files = sorted(p for p in DAGS.glob("*.py") if p.name != "pipelines_tasks.py")
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        env.update(AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__DAGS_FOLDER=str(DAGS))
        fills = [_run(_FILL, str(DAGS), env) for _ in range(args.repeats)]
        cold = {f.name: [_run(_COLD, str(f), env) for _ in range(args.repeats)] for f in files}

    first = fills[0]
    if first["import_errors"]:
        raise SystemExit(f"import errors: {first['import_errors']}")
    timeout = first["dagbag_import_timeout_s"]
    fill = [f["fill_s"] for f in fills]
    print(f"DAG folder {DAGS.relative_to(REPO)}/: {len(files)} files, DAGs {', '.join(first['dags'])}; "
          f"{args.repeats} fresh interpreters, {os.cpu_count()} cores")
    print(f"  Airflow import (not counted below): {_fmt([f['airflow_import_s'] for f in fills])}")
    print(f"  DagBag fill, whole folder:          {_fmt(fill)}  "
          f"({max(fill) / timeout:.2%} of core.dagbag_import_timeout = {timeout:g} s)")
    for name in sorted(first["files"]):
        durations = [f["files"][name] for f in fills]
        print(f"    {name:<24} Airflow's parse time {_fmt(durations)}  ({max(durations) / timeout:.2%} of the timeout)")
    for name, runs in cold.items():
        durations = [r["import_s"] for r in runs]
        print(f"  cold import of {name:<20} {_fmt(durations)}  (Task SDK included; "
              f"{max(durations) / timeout:.2%} of the timeout)")
    heavy = sorted({m for f in fills for m in f["heavy"]} | {m for runs in cold.values() for r in runs for m in r["heavy"]})
    print(f"  heavy modules imported at parse time: {', '.join(heavy) or 'none'}")
    print(f"  dag_processor.dag_file_processor_timeout = {first['dag_file_processor_timeout_s']:g} s")


if __name__ == "__main__":
    main()
