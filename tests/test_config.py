"""pipelines.config: params.yaml is the one source of defaults, checked against a typed schema,
and every problem in it is one line naming the file and the dotted key."""
from __future__ import annotations

import copy
import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import (
    INGEST_FORMATS,
    default_params,
    experiment_warehouse_target,
    load_params,
    override,
    section,
    validate_params,
    warehouse_target,
)
from pipelines.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "params.yaml"


@pytest.fixture(autouse=True)
def _no_params_env(monkeypatch):
    monkeypatch.delenv("PIPELINES_PARAMS", raising=False)
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)


def write(folder: Path, text: str, name: str = "params.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def error_of(raw: Any, source: str = "params.yaml") -> str:
    with pytest.raises(UserError) as info:
        validate_params(raw, source=source)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def key_paths(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    paths = {prefix} if prefix else set()
    for key, value in tree.items():
        paths |= key_paths(value, f"{prefix}.{key}" if prefix else str(key))
    return paths


# ----------------------------------------------------------------------------- one source of defaults


def test_repository_params_file_is_exactly_the_defaults():
    """Change a value in params.yaml or in the schema, not both, and this fails."""
    assert load_params(PARAMS_FILE) == default_params()


def test_repository_params_file_lists_every_knob():
    """Every key the schema knows is written out in params.yaml (and nothing else is)."""
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    assert key_paths(raw) == key_paths(default_params())


def test_defaults_pass_their_own_validation():
    assert validate_params({}) == default_params()
    assert validate_params(default_params()) == default_params()


def test_defaults_are_the_documented_run():
    d = default_params()
    assert d["as_of"] == "2026-11-21"
    assert d["train"]["detector"] == "ecdf_tail"
    assert "n_events_*" in d["train"]["exclude_features"]
    assert d["features"]["windows_days"] == [1, 7, 28]
    assert d["warehouse"]["experiment_url"] != d["warehouse"]["url"]


def test_default_params_is_a_fresh_copy():
    d = default_params()
    d["train"]["exclude_features"].append("x")
    d["score"]["top_k"] = 1
    assert "x" not in default_params()["train"]["exclude_features"]
    assert default_params()["score"]["top_k"] == 100


def test_ingest_formats_match_the_adapters():
    from pipelines.ingest import FORMATS

    assert tuple(INGEST_FORMATS) == tuple(FORMATS)


def test_detector_sections_are_parameters_of_their_detector():
    from pipelines.detectors import REGISTRY

    train = default_params()["train"]
    for name in ("isolation_forest", "ecdf_tail", "robust_zscore"):
        assert name in REGISTRY
        assert set(train[name]) <= set(REGISTRY[name].defaults), name


# ----------------------------------------------------------------------------- loading


def test_partial_file_gets_every_other_key_from_the_defaults(tmp_path):
    params = load_params(write(tmp_path, "train: {detector: robust_zscore}\n"))
    expected = default_params()
    expected["train"]["detector"] = "robust_zscore"
    assert params == expected


def test_partial_detector_section_keeps_the_files_other_values(tmp_path):
    params = load_params(write(tmp_path, "train:\n  isolation_forest:\n    n_estimators: 50\n    n_jobs: 2\n"))
    forest = params["train"]["isolation_forest"]
    assert forest == {**default_params()["train"]["isolation_forest"], "n_estimators": 50, "n_jobs": 2}


def test_empty_file_and_empty_sections_mean_the_defaults(tmp_path):
    assert load_params(write(tmp_path, "")) == default_params()
    assert load_params(write(tmp_path, "score:\ntrain:\n  ecdf_tail:\n")) == default_params()


def test_unquoted_yaml_dates_are_iso_strings(tmp_path):
    params = load_params(write(tmp_path, "as_of: 2026-03-05\nsimulate:\n  end_date: 2026-03-04\n"))
    assert params["as_of"] == "2026-03-05"
    assert params["simulate"]["end_date"] == "2026-03-04"
    assert validate_params({"as_of": dt.date(2025, 1, 2)})["as_of"] == "2025-01-02"
    assert validate_params({"as_of": None})["as_of"] is None


def test_windows_are_sorted_and_deduplicated():
    assert validate_params({"features": {"windows_days": [28, 7, 7, 1]}})["features"]["windows_days"] == [1, 7, 28]


def test_integers_are_accepted_where_numbers_belong():
    params = validate_params({"promote": {"tolerance": 0}, "score": {"policy": "threshold", "threshold": 3}})
    assert params["promote"]["tolerance"] == 0
    assert params["score"]["threshold"] == 3


def test_no_file_with_required_false_means_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(required=False)
    assert params == default_params()
    assert params["train"]["detector"] == "ecdf_tail"
    assert {"n_events_*", "purchase_value_*", "distinct_sessions_*"} <= set(params["train"]["exclude_features"])


def test_no_file_when_required_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^params\.yaml: parameters file not found") as info:
        load_params()
    assert "\n" not in str(info.value)


def test_a_named_file_must_exist_even_when_not_required(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="nowhere.yaml: parameters file not found"):
        load_params("nowhere.yaml", required=False)
    monkeypatch.setenv("PIPELINES_PARAMS", str(tmp_path / "elsewhere.yaml"))
    with pytest.raises(UserError, match="elsewhere.yaml: parameters file not found"):
        load_params(required=False)


def test_pipelines_params_names_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "score: {top_k: 7}\n", name="other.yaml")
    monkeypatch.setenv("PIPELINES_PARAMS", str(tmp_path / "other.yaml"))
    assert load_params()["score"]["top_k"] == 7


def test_yaml_syntax_error_is_one_line(tmp_path):
    path = write(tmp_path, "score:\n  top_k: 5\n bad: [1\n")
    with pytest.raises(UserError) as info:
        load_params(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid YAML (line ") and "\n" not in message


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(UserError, match="expected a mapping of sections at the top level"):
        load_params(write(tmp_path, "- a\n- b\n"))


# ----------------------------------------------------------------------------- one-line errors

ERRORS = [
    ({"colour": "red"}, "params.yaml: colour: unknown key; known: as_of, storage"),
    ({"score": {"topk": 5}}, "params.yaml: score.topk: unknown key (did you mean top_k?)"),
    ({"train": {"isolation_forst": {}}}, "params.yaml: train.isolation_forst: unknown key (did you mean isolation_forest?)"),
    ({"train": {"holdout_fraction": "0.3"}}, "params.yaml: train.holdout_fraction: must be a number (got '0.3')"),
    ({"score": {"top_k": "100"}}, "params.yaml: score.top_k: must be an integer (got '100')"),
    ({"score": {"top_k": 10.5}}, "params.yaml: score.top_k: must be an integer (got 10.5)"),
    ({"score": {"top_k": True}}, "params.yaml: score.top_k: must be an integer (got true)"),
    ({"train": {"holdout_fraction": 1.5}}, "params.yaml: train.holdout_fraction: must be < 1 (got 1.5)"),
    ({"train": {"holdout_fraction": -0.1}}, "params.yaml: train.holdout_fraction: must be >= 0 (got -0.1)"),
    ({"score": {"policy": "threshold"}}, "params.yaml: score.threshold: required when policy is threshold"),
    ({"score": {"policy": "budget"}}, "params.yaml: score.policy: must be top_k or threshold (got 'budget')"),
    ({"train": {"detector": "svm"}}, "params.yaml: train.detector: unknown detector 'svm'; known: "),
    ({"train": {"ecdf_tail": {"top_signal": 3}}},
     "params.yaml: train.ecdf_tail.top_signal: unknown key (did you mean top_signals?)"),
    ({"train": {"robust_zscore": {"clip": "high"}}},
     "params.yaml: train.robust_zscore.clip: must be a number (got 'high')"),
    ({"train": {"ecdf_tail": [1]}}, "params.yaml: train.ecdf_tail: must be a mapping (got [1])"),
    ({"as_of": "2026-02-30"}, "params.yaml: as_of: not a real date (got '2026-02-30')"),
    ({"as_of": "21/11/2026"}, "params.yaml: as_of: must be a date YYYY-MM-DD (got '21/11/2026')"),
    ({"storage": {"data": ""}}, "params.yaml: storage.data: must not be empty (got '')"),
    ({"storage": "data"}, "params.yaml: storage: must be a mapping of settings (got 'data')"),
    ({"features": {"windows_days": []}}, "params.yaml: features.windows_days: must not be empty (got [])"),
    ({"features": {"windows_days": [1, 0]}}, "params.yaml: features.windows_days[1]: must be >= 1 (got 0)"),
    ({"features": {"history_days": 0}}, "params.yaml: features.history_days: must be >= 1 (got 0)"),
    ({"features": {"threads": 1.5}}, "params.yaml: features.threads: must be an integer (got 1.5)"),
    ({"promote": {"metric": "f1"}}, "params.yaml: promote.metric: must be pr_auc or roc_auc (got 'f1')"),
    ({"promote": {"tolerance": -1}}, "params.yaml: promote.tolerance: must be >= 0 (got -1)"),
    ({"promote": {"max_flag_rate": 0}}, "params.yaml: promote.max_flag_rate: must be > 0 (got 0)"),
    ({"promote": {"min_rank_agreement": 1.5}}, "params.yaml: promote.min_rank_agreement: must be <= 1 (got 1.5)"),
    ({"score": {"n_reasons": 0}}, "params.yaml: score.n_reasons: must be >= 1 (got 0)"),
    ({"score": {"active_within_days": 0}}, "params.yaml: score.active_within_days: must be >= 1 (got 0)"),
    ({"warehouse": {"table": "flagged users"}}, "params.yaml: warehouse.table: must be a plain SQL identifier"),
    ({"ingest": {"format": "csv"}}, "params.yaml: ingest.format: must be auto, contract, rees46"),
    ({"clean": {"epoch_unit": "us"}}, "params.yaml: clean.epoch_unit: must be auto, s or ms (got 'us')"),
]


@pytest.mark.parametrize("raw,expected", ERRORS, ids=[e[1].split(": ")[1] + "-" + str(i) for i, e in enumerate(ERRORS)])
def test_bad_values_are_one_line_naming_the_key(raw, expected):
    assert error_of(raw).startswith(expected)


def test_unknown_detector_lists_the_registered_ones():
    from pipelines.detectors import REGISTRY

    message = error_of({"train": {"detector": "svm"}})
    assert message == f"params.yaml: train.detector: unknown detector 'svm'; known: {', '.join(sorted(REGISTRY))}"
    assert {"ecdf_tail", "isolation_forest", "robust_zscore"} <= set(REGISTRY)


def test_errors_name_the_file(tmp_path):
    path = write(tmp_path, "train:\n  holdout_fraction: 1.5\n")
    with pytest.raises(UserError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: train.holdout_fraction: must be < 1 (got 1.5)"


def test_a_detector_parameter_not_in_the_file_is_still_allowed():
    """isolation_forest.n_jobs is a parameter of the detector that params.yaml leaves at the class default."""
    assert validate_params({"train": {"isolation_forest": {"n_jobs": 4}}})["train"]["isolation_forest"]["n_jobs"] == 4


# ----------------------------------------------------------------------------- section, targets, override


def test_section_fills_a_partial_dict_without_validating():
    train = section({"train": {"detector": "robust_zscore", "ecdf_tail": {"top_signals": 2}}}, "train")
    defaults = default_params()["train"]
    assert train == {**defaults, "detector": "robust_zscore", "ecdf_tail": {**defaults["ecdf_tail"], "top_signals": 2}}
    assert section({}, "score") == default_params()["score"]
    assert section({"score": None}, "score") == default_params()["score"]
    with pytest.raises(KeyError):
        section({}, "nonsense")


def test_section_returns_a_copy():
    params = default_params()
    section(params, "train")["exclude_features"].clear()
    assert params["train"]["exclude_features"] and default_params()["train"]["exclude_features"]


def test_importing_config_and_reading_defaults_does_not_import_the_detectors():
    code = ("import sys; from pipelines.config import default_params, section; "
            "section(default_params(), 'train'); assert 'pipelines.detectors' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_warehouse_targets(monkeypatch):
    params = default_params()
    assert warehouse_target(params) == ("duckdb:///data/warehouse.duckdb", "flagged_users")
    assert experiment_warehouse_target(params) == ("duckdb:///data/experiments.duckdb", "flagged_users")
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://u@h/db")
    assert warehouse_target(params) == ("postgresql://u@h/db", "flagged_users")
    assert experiment_warehouse_target(params)[0] == "duckdb:///data/experiments.duckdb"
    assert warehouse_target({}) == ("postgresql://u@h/db", "flagged_users")


def test_override_sets_a_dotted_key_and_validates_again():
    params = default_params()
    before = copy.deepcopy(params)
    changed = override(params, "as_of", dt.date(2026, 1, 2))
    assert changed["as_of"] == "2026-01-02"
    assert override(params, "score.top_k", 7)["score"]["top_k"] == 7
    assert override(params, "train.ecdf_tail.top_signals", 3)["train"]["ecdf_tail"]["top_signals"] == 3
    assert params == before, "override must not change its input"


@pytest.mark.parametrize("key,value,expected", [
    ("as_of", "tomorrow", "command line: as_of: must be a date YYYY-MM-DD (got 'tomorrow')"),
    ("score.topk", 5, "command line: score.topk: unknown key (did you mean top_k?)"),
    ("as_of.day", 5, "command line: as_of: is a value, not a section"),
])
def test_override_errors_are_one_line(key, value, expected):
    with pytest.raises(UserError) as info:
        override(default_params(), key, value)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- the CLI


def test_cli_bad_params_file_exits_2_with_one_line(tmp_path):
    write(tmp_path, "train:\n  holdout_fraction: 1.5\n", name="bad.yaml")
    proc = subprocess.run([sys.executable, "-m", "pipelines", "--params", "bad.yaml", "simulate"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "error: bad.yaml: train.holdout_fraction: must be < 1 (got 1.5)\n"
    assert not (tmp_path / "data").exists(), "nothing may run before the parameters are valid"
