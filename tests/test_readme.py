"""Every shell command in README.md runs.

What counts as a command: every line of a ```bash, ```sh or ```shell code block, and every
`$ `-prefixed line of any other code block. Lines ending in a backslash continue on the next.

The marker convention (also in the README, "Commands in this README"):

* `# needs: cluster` on a line of its own marks the whole block as needing something this
  test does not start: a running Airflow (`make airflow`) or Celery deployment, Docker, a
  PostgreSQL server, S3, a GPU machine.
* `# needs: long` on a line of its own marks a block that takes many minutes, runs until it
  is stopped, or runs the whole test suite (`make test` would run this test inside itself).
* The same comment at the end of a command (`make test   # needs: long`) marks only that
  command; the rest of its block still runs.

Every other command runs: the blocks in README order, each as one `bash -e -o pipefail`
script (so `source`, `export` and `cd` carry through a block, and every command must exit 0),
all in one scratch copy of the repository with `../shared` beside it and the repository's
`.venv` linked in (so `make demo`'s `setup` finds it built) and on PATH, as after
`source .venv/bin/activate`. `make demo` runs once, first, and the blocks after it use its
outputs (the DVC pipeline's data, the registry, the experiment table).

The fast tests check that every block either runs something or carries a marker, that no
marker is misspelt, that a broken command fails the runner, that the README's Mermaid
diagram names every DVC stage of dvc.yaml and both DAG ids of dags/ and is well formed, and
that docs/pipeline.png (docs/make_pipeline_diagram.py) is drawn from the current dvc.yaml and
DAGs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# README_UNDER_TEST: another copy of the README (to see this test fail on a broken command without editing the real one)
README = Path(os.environ.get("README_UNDER_TEST") or REPO / "README.md")
BIN = Path(sys.executable).parent
SHELL_LANGS = {"bash", "sh", "shell"}
MARKERS = {"cluster", "long"}
MARKER_LINE = re.compile(r"^\s*#\s*needs:\s*(\S+)")
MARKER_TRAILING = re.compile(r"\s#\s*needs:\s*(\S+)")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    commands: list[str] = field(default_factory=list)  # logical lines (continuations joined), comments kept
    marker: str | None = None  # the block's own `# needs: X`
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (command, marker) marked one by one

    @property
    def runnable(self) -> list[str]:
        return [] if self.marker else [c for c in self.commands if c.strip() and not c.lstrip().startswith("#")]

    def script(self) -> str:
        return "\n".join(self.commands) + "\n"


def _logical_lines(lines: list[str]) -> list[str]:
    out: list[str] = []
    buf = ""
    for raw in lines:
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        out.append(buf + raw)
        buf = ""
    if buf:
        out.append(buf)
    return out


def parse_blocks(text: str) -> list[Block]:
    """The README's shell blocks (and `$ ` lines of other blocks), in order."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(2), m.group(3).lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        if lang in SHELL_LANGS:
            src = body
        else:
            src = []
            for b in body:  # `$ ` lines, and the lines a trailing backslash continues them onto
                if b.lstrip().startswith("$ "):
                    src.append(b.lstrip()[2:])
                elif src and src[-1].rstrip().endswith("\\"):
                    src.append(b)
            if not src:
                continue
            lang = lang or "console"
        block = Block(line=start + 1, lang=lang)
        for cmd in _logical_lines(src):
            whole = MARKER_LINE.match(cmd)
            if whole:
                block.marker = block.marker or whole.group(1)
                continue
            trailing = MARKER_TRAILING.search(cmd)
            if trailing and not cmd.lstrip().startswith("#"):
                block.skipped.append((cmd.strip(), trailing.group(1)))
                continue
            block.commands.append(cmd)
        blocks.append(block)
    return blocks


def env_for(bin_dir: Path) -> dict[str, str]:
    # nothing of the caller's configuration leaks in (nor the jobserver of a `make test` that runs this test)
    drop = ("PIPELINES_", "WAREHOUSE_URL", "AIRFLOW_HOME", "AWS_", "DVC_", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update({"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(bin_dir.parent),
                "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "readme", "GIT_AUTHOR_EMAIL": "readme@example.invalid",
                "GIT_COMMITTER_NAME": "readme", "GIT_COMMITTER_EMAIL": "readme@example.invalid"})
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str], timeout: float = 1200) -> subprocess.CompletedProcess:
    """One block as a bash script; raises AssertionError naming the README line and the command that failed."""
    script = ("set -eo pipefail\n"
              "trap 'echo \"README command failed (exit $?): $BASH_COMMAND\" >&2' ERR\n" + block.script())
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"README.md line {block.line} ({block.lang} block) failed with exit {proc.returncode}:\n"
            f"{block.script()}\n--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-3000:]}")
    return proc


# ---------------------------------------------------------------- fast checks

def test_every_block_runs_or_carries_a_marker():
    blocks = parse_blocks(README.read_text())
    assert blocks, "README.md has no shell code blocks"
    for b in blocks:
        markers = ([b.marker] if b.marker else []) + [m for _, m in b.skipped]
        unknown = [m for m in markers if m not in MARKERS]
        assert not unknown, f"README.md line {b.line}: unknown marker(s) {unknown}; use one of {sorted(MARKERS)}"
        assert b.runnable or b.marker, (
            f"README.md line {b.line}: a shell block with nothing to run and no `# needs: ...` line: "
            "either it runs, or it says what it needs")
    assert any(b.runnable for b in blocks)
    # `make demo` runs (first) and `make test` never does (it would run this test inside itself)
    runnable = [c for b in blocks for c in b.runnable]
    assert any(re.match(r"\s*make demo\b", c) for c in runnable)
    assert not any(re.match(r"\s*make (test|airflow|bench)\b", c) for c in runnable), \
        "make test / make airflow / make bench must be marked `# needs: long` or `# needs: cluster`"
    for c in runnable:
        assert not re.search(r"\bdocker (compose|build|run)\b|\bdvc push\b|\bairflow (celery|dags|backfill|pools)\b", c), \
            f"{c!r} needs a cluster: mark it `# needs: cluster`"


def test_the_parser_and_markers():
    text = ("```bash\nmake demo   # a comment\nmake test   # needs: long\n```\n"
            "```bash\n# needs: cluster\nairflow pools set gpu 1 x\n```\n"
            "```sql\nSELECT 1;\n```\n"
            "```\n$ echo one \\\n  two\noutput\n```\n")
    a, b, c = parse_blocks(text)
    assert a.runnable == ["make demo   # a comment"] and a.skipped == [("make test   # needs: long", "long")]
    assert b.marker == "cluster" and b.runnable == []
    assert c.lang == "console" and c.runnable == ["echo one    two"]


def test_a_broken_command_fails_the_runner(tmp_path):
    good, broken = parse_blocks("```bash\ntrue\npython -m pipelines --help > /dev/null\n```\n"
                                "```bash\ntrue\npython -m pipelines no-such-step\necho never\n```\n")
    env = env_for(BIN)
    env["PYTHONPATH"] = str(REPO)
    run_block(good, tmp_path, env)
    with pytest.raises(AssertionError, match=r"(?s)line 5 .*exit 2.*README command failed \(exit 2\): python -m pipelines no-such-step"):
        run_block(broken, tmp_path, env)


def _mermaid(text: str) -> str:
    m = re.search(r"^```mermaid\n(.*?)^```", text, re.S | re.M)
    assert m, "README.md has no ```mermaid block"
    return m.group(1)


def test_mermaid_diagram_names_every_stage_and_both_dags():
    diagram = _mermaid(README.read_text())
    assert re.match(r"\s*flowchart (LR|TD|TB)\b", diagram), "start the diagram with `flowchart LR`"
    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert stages
    missing = [s for s in stages if not re.search(rf"\b{re.escape(s)}\b", diagram)]
    assert not missing, f"the README's diagram does not name DVC stage(s) {missing}"
    dag_ids = re.findall(r"dag_id\s*=\s*[\"']([\w.-]+)[\"']", "\n".join(p.read_text() for p in (REPO / "dags").glob("*.py")))
    assert len(set(dag_ids)) >= 2, dag_ids
    missing = [d for d in set(dag_ids) if d not in diagram]
    assert not missing, f"the README's diagram does not name DAG(s) {missing}"


_MERMAID_NODE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)(\[\(([^\[\]()"]+)\)\]|\[([^\[\]()"]+)\]|\["([^"]+)"\]|\(([^\[\]()"]+)\))?$')


def mermaid_problems(diagram: str) -> tuple[list[str], set[str], set[str]]:
    """(problems, ids given a label, ids used in edges) of a `flowchart` block in the subset the
    README uses: `subgraph ID[label]` ... `end`, chains `a --> b[label] --> c`, and lone nodes
    `id[(label)]`. Ids are letters, digits and _; a label in [...] or (...) has no brackets or
    quotes unless it is quoted ["..."]."""
    problems, labelled, used, depth = [], set(), set(), 0
    for n, raw in enumerate(diagram.splitlines()[1:], start=2):
        line = raw.strip()
        if not line or line.startswith("%%"):
            continue
        if line == "end":
            depth -= 1
            if depth < 0:
                problems.append(f"line {n}: `end` without a subgraph")
            continue
        if line.startswith("subgraph "):
            depth += 1
            m = _MERMAID_NODE.match(line.removeprefix("subgraph ").strip())
            if not m or m.group(3) or m.group(6):
                problems.append(f"line {n}: subgraph needs `subgraph id[label]` or `subgraph id[\"label\"]`: {line}")
            continue
        parts = [p.strip() for p in line.split("-->")]
        for part in parts:
            m = _MERMAID_NODE.match(part)
            if not m:
                problems.append(f"line {n}: not a node `id`, `id[label]`, `id[(label)]`, `id(label)` or "
                                f"`id[\"label\"]`: {part!r}")
                continue
            if m.group(2):
                labelled.add(m.group(1))
            if len(parts) > 1:
                used.add(m.group(1))
    if depth:
        problems.append(f"{depth} subgraph(s) without `end`")
    return problems, labelled, used


def test_mermaid_diagram_is_valid_in_the_subset_it_uses():
    diagram = _mermaid(README.read_text())
    problems, labelled, used = mermaid_problems(diagram)
    assert not problems, problems
    stages = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    # every node an edge names is a DVC stage (a bare id) or given a label somewhere: a typo shows
    assert used - labelled - stages == set(), used - labelled - stages
    assert labelled - used == set(), f"nodes no edge reaches: {labelled - used}"
    # and the checker catches what it is for
    bad, _, _ = mermaid_problems("flowchart LR\n    subgraph two words\n    a b --> c[x [y]]\n    d(\"q\") --> e\n")
    assert len(bad) == 5 and "'a b'" in bad[1] and "'c[x [y]]'" in bad[2] and "d(\"q\")" in bad[3], bad
    assert bad[4] == "1 subgraph(s) without `end`"


def _diagram_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_pipeline_diagram", REPO / "docs" / "make_pipeline_diagram.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pipeline_image_is_embedded_and_drawn_from_the_current_dvc_stages(tmp_path):
    diagram = _diagram_module()
    text = README.read_text()
    assert "](docs/pipeline.png)" in text
    stored = diagram.stored_graph(REPO / "docs" / "pipeline.png")
    assert stored is not None, "docs/pipeline.png has no graph in it: python docs/make_pipeline_diagram.py"
    current = diagram.dvc_graph()
    assert stored["dvc"] == current, ("docs/pipeline.png is not drawn from the current dvc.yaml: "
                                      "python docs/make_pipeline_diagram.py")
    assert current["stages"] == list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert ["promote", "score"] in current["edges"] and ["score", "publish"] in current["edges"]
    assert set(stored["dags"]) == {"pipelines_retrain_daily", "pipelines_score_daily"}
    assert stored["dags"]["pipelines_retrain_daily"]["queues"] == {"train_on_gpu": "gpu"}
    # a stage added to dvc.yaml without redrawing: the graph no longer matches
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    spec["stages"]["explain"] = {"cmd": "true", "deps": ["${storage.data}/scores/as_of=${as_of}/scores.parquet"],
                                 "outs": ["explain.json"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    changed = diagram.dvc_graph(tmp_path / "dvc.yaml")
    assert changed != stored["dvc"] and ["score", "explain"] in changed["edges"]


def test_the_pipeline_image_is_up_to_date_with_the_dags_too():
    """The script's --check reads the DAGs through Airflow's DagBag (a few seconds)."""
    done = subprocess.run([sys.executable, str(REPO / "docs" / "make_pipeline_diagram.py"), "--check"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "docs/pipeline.png is up to date" in done.stdout


# ---------------------------------------------------------------- the commands themselves

def _scratch_copy(root: Path) -> Path:
    """The repository as a new user has it (tracked and unignored files, no tests), `../shared`
    beside it, the built .venv linked in, as a git repository with one commit (for `dvc exp`)."""
    work = root / "main"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if name.startswith("tests/") or not (REPO / name).is_file():
            continue
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, work / name)
    if (REPO.parent / "shared").exists():
        (root / "shared").symlink_to(REPO.parent / "shared")
    (work / ".venv").symlink_to(BIN.parent)
    # `make setup` rebuilds the venv when pyproject.toml or constraints.txt is newer than
    # .venv/.installed: here it is the same venv, already built
    for name in ("pyproject.toml", "constraints.txt"):
        os.utime(work / name, (0, 0))
    env = env_for(work / ".venv" / "bin")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "scratch"]):
        subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True)
    return work


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_unmarked_readme_command_runs(tmp_path):
    blocks = [b for b in parse_blocks(README.read_text()) if b.runnable]
    first = blocks[0].runnable
    assert re.match(r"\s*make demo\b", first[0]), f"the first command the README runs should be `make demo`, not {first[0]!r}"
    assert sum(bool(re.match(r"\s*make demo\b", c)) for b in blocks for c in b.runnable) == 1, \
        "`make demo` should run once"
    work = _scratch_copy(tmp_path)
    env = env_for(work / ".venv" / "bin")
    for block in blocks:
        run_block(block, work, env)
    # make demo got as far as the flagged-users table
    assert (work / "data" / "experiments.duckdb").exists()


def test_readme_links_to_its_own_sections_resolve():
    text = README.read_text()
    text_outside_code = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
             for h in re.findall(r"^#{1,6} (.+)$", text_outside_code, re.M)}
    broken = sorted({a for a in re.findall(r"\]\(#([^)]+)\)", text) if a not in slugs})
    assert not broken, f"README.md links to missing sections: {broken}"
