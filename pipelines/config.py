"""params.yaml: the one place every knob lives, and the typed schema it is checked against.

The schema's defaults are exactly params.yaml's values (tests/test_config.py checks that), so a
run from a directory without params.yaml behaves as the repository's file says. Every problem
in the file is one line naming the file and the dotted key:

    params.yaml: train.holdout_fraction: must be < 1 (got 1.5)
    params.yaml: score.topk: unknown key (did you mean top_k?)

Importing this module is cheap: the detector registry (which imports scikit-learn) is only
imported when a parameters dict is validated.
"""
from __future__ import annotations

import copy
import datetime as dt
import difflib
import os
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipelines.errors import UserError

DEFAULT_PARAMS_FILE = "params.yaml"
DEFAULT_WAREHOUSE_URL = "duckdb:///data/warehouse.duckdb"
DEFAULT_EXPERIMENT_URL = "duckdb:///data/experiments.duckdb"

# The ingest formats: "auto" plus pipelines.adapters.ADAPTERS (a test keeps the two in step;
# importing the adapters here would pull in pandas).
INGEST_FORMATS = ("auto", "contract", "rees46", "taobao", "retailrocket")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ----------------------------------------------------------------------------- helpers


def _problem(message: str, subloc: str | None = None, show_input: bool = True) -> PydanticCustomError:
    """A validation error whose text is ours; `subloc` extends the dotted key below the
    validator's own location (a model validator only knows its model's location)."""
    return PydanticCustomError("param", "{message}", {"message": message, "subloc": subloc, "show_input": show_input})


def _iso_date(value: Any) -> Any:
    """A YAML date (unquoted 2026-11-21 is a datetime.date) or a YYYY-MM-DD string -> 'YYYY-MM-DD'."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        raise _problem("must be a date YYYY-MM-DD, not a date and time")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        if _ISO_DATE.match(text):
            try:
                return dt.date.fromisoformat(text).isoformat()
            except ValueError:
                raise _problem("not a real date") from None
    raise _problem("must be a date YYYY-MM-DD")


def _sorted_unique(values: list[int]) -> list[int]:
    return sorted(set(values))


def _plain_identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise _problem("must be a plain SQL identifier: letters, digits and _, not starting with a digit")
    return value


IsoDate = Annotated[str, BeforeValidator(_iso_date)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
PositiveInt = Annotated[int, Field(ge=1)]


def _registry() -> dict[str, type]:
    from pipelines.detectors import REGISTRY  # lazy: imports every detector (and scikit-learn)

    return REGISTRY


# ----------------------------------------------------------------------------- schema


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StorageParams(_Section):
    data: NonEmptyStr = "data"
    reports: NonEmptyStr = "reports"
    models: NonEmptyStr = "models"


class SimulateParams(_Section):
    # the ranges are pipelines.simulate's own checks, so a bad value fails before any step runs
    seed: int = Field(42, ge=0, le=2**63 - 1)
    n_users: int = Field(20000, ge=1, le=50_000_000)
    days: int = Field(28, ge=1, le=3660)
    end_date: IsoDate = "2026-11-21"
    anomaly_rate: float = Field(0.02, ge=0, le=0.5)
    n_products: int = Field(5000, ge=50, le=50_000_000)
    ring_rewording: float = Field(0.0, ge=0, le=1)


class IngestParams(_Section):
    source: NonEmptyStr = "data/raw/events.parquet"
    format: Literal["auto", "contract", "rees46", "taobao", "retailrocket"] = "auto"


class CleanParams(_Section):
    epoch_unit: Literal["auto", "s", "ms"] = "auto"
    # Times no event can have: later than the ingest time plus this tolerance (clock skew,
    # time zones), or before the floor. They are quarantined, so they never set the run date.
    max_future_days: float | None = Field(1.0, ge=0)
    min_event_time: IsoDate | None = "1990-01-01"
    # Bounds that keep every clean row computable downstream (the features sum money as
    # DECIMAL(18, 4), which holds less than 1e14) and catch garbage that parses as a number.
    max_price: float = Field(1e9, gt=0, lt=1e13)
    max_quantity: int = Field(1_000_000, ge=1, le=1_000_000_000)
    max_id_length: int = Field(256, ge=1)
    # the environment variable holding the secret salt of the IP and device id hashes
    id_salt_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "PIPELINES_ID_SALT"


class ReviewTextParams(_Section):
    enabled: bool = True
    near_duplicate_threshold: float = Field(0.9, gt=0, le=1)
    min_similarity: float = Field(0.8, gt=0, le=1)
    lsh_bands: PositiveInt = 32
    lsh_rows: PositiveInt = 8
    max_bucket: PositiveInt = 50
    model: Literal["lexical", "wordllama"] = "lexical"
    ann_cluster_size: PositiveInt = 256
    ann_probes: PositiveInt = 3

    @model_validator(mode="after")
    def _floor_below_threshold(self):
        if self.min_similarity > self.near_duplicate_threshold:
            raise ValueError(f"min_similarity ({self.min_similarity}) must be <= near_duplicate_threshold "
                             f"({self.near_duplicate_threshold})")
        return self


class FeaturesParams(_Section):
    windows_days: Annotated[list[PositiveInt], Field(min_length=1), AfterValidator(_sorted_unique)] = Field(
        default_factory=lambda: [1, 7, 28])
    history_days: PositiveInt | None = None
    # "auto": the small_amount_quantile quantile of the purchase prices in the history window
    # (relative to the platform); a number: a fixed threshold in the log's currency
    small_amount: Literal["auto"] | Annotated[float, Field(ge=0)] = "auto"
    small_amount_quantile: float = Field(0.1, gt=0, lt=1)
    threads: PositiveInt | None = None
    memory_limit: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?\s*([KMGT]i?B)$")] | None = "2GB"
    review_text: ReviewTextParams = Field(default_factory=ReviewTextParams)


class SequencesParams(_Section):
    max_events: int = Field(128, ge=2, le=4096)
    threads: PositiveInt | None = None
    memory_limit: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?\s*([KMGT]i?B)$")] | None = "2GB"


_VOLUME_EXCLUSIONS = [
    "n_events_*", "n_view_*", "n_cart_*", "n_remove_from_cart_*", "n_purchase_*", "n_login_*",
    "n_review_*", "n_refund_*", "distinct_sessions_*", "distinct_products_*", "distinct_active_hours_*",
    "purchase_value_*", "refund_value_*", "avg_purchase_price_*", "max_purchase_price_*",
    "days_since_last_event",
]
# Each detector's sub-section of train, as params.yaml sets it. A key left out of the file
# takes the value here; a key not here either takes the detector class's `defaults`.
_DETECTOR_SECTIONS: dict[str, dict[str, Any]] = {
    "isolation_forest": {"n_estimators": 300, "max_samples": 256, "max_features": 1.0, "log_transform": False,
                         "random_state": 0},
    "ecdf_tail": {"top_signals": 5, "group_windows": True},
    "robust_zscore": {"top_features": 5, "clip": 20.0, "log_transform": True, "group_windows": True},
    "autoencoder": {"hidden": [64, 32], "latent": 8, "epochs": 40, "batch_size": 256, "learning_rate": 0.001,
                    "patience": 5, "seed": 0},
    "vae": {"hidden": [64, 32], "latent": 8, "beta": 1.0, "epochs": 40, "batch_size": 256, "learning_rate": 0.001,
            "patience": 5, "seed": 0},
    "supervised_mlp": {"hidden": [64, 32], "dropout": 0.1, "epochs": 40, "batch_size": 256, "learning_rate": 0.001,
                       "patience": 5, "seed": 0},
    "ensemble": {"members": {"ecdf_tail": 1.0, "isolation_forest": 0.25}, "combine": "mean"},
    "sequence_autoencoder": {"hidden": 32, "latent": 8, "score_top_events": 2, "epochs": 20, "batch_size": 256,
                             "learning_rate": 0.001, "patience": 3, "seed": 0},
}


def _detector_section(name: str) -> Any:
    return Field(default_factory=lambda: dict(_DETECTOR_SECTIONS[name]))


class TrainParams(_Section):
    # extra keys are allowed only as the sub-section of a registered detector (checked below)
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    detector: str = "ecdf_tail"
    holdout_fraction: float = Field(0.3, ge=0, lt=1)
    split_seed: int = 0
    fit_sample_users: PositiveInt | None = 200_000
    exclude_features: list[str] = Field(default_factory=lambda: list(_VOLUME_EXCLUSIONS))
    isolation_forest: dict[str, Any] = _detector_section("isolation_forest")
    ecdf_tail: dict[str, Any] = _detector_section("ecdf_tail")
    robust_zscore: dict[str, Any] = _detector_section("robust_zscore")
    autoencoder: dict[str, Any] = _detector_section("autoencoder")
    vae: dict[str, Any] = _detector_section("vae")
    supervised_mlp: dict[str, Any] = _detector_section("supervised_mlp")
    ensemble: dict[str, Any] = _detector_section("ensemble")
    sequence_autoencoder: dict[str, Any] = _detector_section("sequence_autoencoder")
    # where the deep detectors train: auto takes a CUDA device when torch sees one
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = [k for k in data if k not in cls.model_fields]
        if unknown:
            registry = _registry()
            for key in unknown:
                if key not in registry:
                    raise _problem(_unknown_key(key, [*cls.model_fields, *registry]), subloc=str(key),
                                   show_input=False)
        # an empty sub-section (`ecdf_tail:` with nothing under it) means that detector's defaults
        return {k: ({} if v is None and (k in _DETECTOR_SECTIONS or k in unknown) else v) for k, v in data.items()}

    @field_validator("detector")
    @classmethod
    def _registered(cls, name: str) -> str:
        registry = _registry()
        if name not in registry:
            raise _problem(f"unknown detector {name!r}; known: {', '.join(sorted(registry))}", show_input=False)
        return name

    @field_validator(*_DETECTOR_SECTIONS)
    @classmethod
    def _fill_from_file_defaults(cls, value: dict[str, Any], info) -> dict[str, Any]:
        return {**_DETECTOR_SECTIONS[info.field_name], **value}

    @model_validator(mode="after")
    def _detector_parameters(self) -> "TrainParams":
        registry = _registry()
        for name in [*_DETECTOR_SECTIONS, *(self.model_extra or {})]:
            values = getattr(self, name)
            if not isinstance(values, dict):
                raise _problem(f"must be a mapping of {name}'s parameters", subloc=name)
            if name not in registry:
                raise _problem(f"no detector named {name} is registered", subloc=name, show_input=False)
            defaults = registry[name].defaults
            for key, value in values.items():
                where = f"{name}.{key}"
                if key not in defaults:
                    raise _problem(_unknown_key(key, list(defaults)), subloc=where, show_input=False)
                expected = _type_like(defaults[key], value)
                if expected:
                    raise _problem(f"must be {expected} (got {_show(value)})", subloc=where, show_input=False)
        return self


class PromoteParams(_Section):
    metric: Literal["pr_auc", "roc_auc"] = "pr_auc"
    tolerance: float = Field(0.01, ge=0)
    max_flag_rate: float = Field(0.05, gt=0, le=1)
    min_rank_agreement: float = Field(0.5, ge=-1, le=1)


class ScoreParams(_Section):
    policy: Literal["top_k", "threshold"] = "top_k"
    top_k: int = Field(100, ge=0)
    threshold: float | None = None
    n_reasons: PositiveInt = 3
    active_within_days: PositiveInt | None = None
    batch_users: PositiveInt = 100_000

    @model_validator(mode="after")
    def _threshold_given(self) -> "ScoreParams":
        if self.policy == "threshold" and self.threshold is None:
            raise _problem("required when policy is threshold", subloc="threshold", show_input=False)
        return self


class DriftParams(_Section):
    # At scoring time the day's features and scores are compared with the champion's training
    # data (pipelines/drift.py): population stability index per feature, and a two-sample
    # Kolmogorov-Smirnov test on the scores.
    psi_warn: float = Field(0.1, gt=0)
    psi_severe: float = Field(0.25, gt=0)
    ks_p_warn: float = Field(0.01, gt=0, lt=1)
    block_publish_on_severe: bool = False
    bins: int = Field(10, ge=2, le=100)
    sample_users: int = Field(5000, ge=100)
    min_users: int = Field(500, ge=0)  # fewer users today or in training: PSI shown, not judged

    @model_validator(mode="after")
    def _severe_above_warn(self) -> "DriftParams":
        if self.psi_severe < self.psi_warn:
            raise _problem(f"must be >= psi_warn ({_show(self.psi_warn)})", subloc="psi_severe", show_input=False)
        return self


class RunParams(_Section):
    # `pipelines run`: each step in a process of its own (forked), so that what one step's
    # libraries keep after it (allocator pools, DuckDB's buffers) does not add up across steps;
    # "auto" does so for an events file of at least isolate_above_mb (a small file stays fast)
    isolate_steps: Literal["auto"] | bool = "auto"
    isolate_above_mb: float = Field(100.0, ge=0)


class ReportParams(_Section):
    # The day's self-contained HTML run report (pipelines/report.py), written by the score step.
    top_users: int = Field(10, ge=0, le=200)
    history_days: PositiveInt = 30
    labels: NonEmptyStr | None = None


with warnings.catch_warnings():
    # `schema` shadows BaseModel.schema(), pydantic v1's deprecated method, which nothing here calls
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class WarehouseParams(_Section):
        url: NonEmptyStr = DEFAULT_WAREHOUSE_URL
        table: Annotated[str, AfterValidator(_plain_identifier)] = "flagged_users"
        experiment_url: NonEmptyStr = DEFAULT_EXPERIMENT_URL
        # None: the backend's default schema (public on PostgreSQL, main on DuckDB)
        schema: Annotated[str, AfterValidator(_plain_identifier)] | None = None
        user_scores: bool = False  # also keep every user's score of the day in user_scores_table
        user_scores_table: Annotated[str, AfterValidator(_plain_identifier)] = "user_scores"
        lock_timeout_s: float = Field(600.0, gt=0)  # PostgreSQL: wait this long for another writer of the day
        # PostgreSQL: a try of the day's swap waits at most this long for readers of the table,
        # and a reader arriving during a try queues behind it as long: at least 10 ms (time to
        # get the lock once the readers are gone), at most 60 s (beyond, tries are not short)
        swap_try_s: float = Field(0.5, ge=0.01, le=60.0)
        # PostgreSQL: the pause between the swap's tries doubles from 0.05 s up to this
        swap_backoff_max_s: float = Field(1.0, ge=0.05, le=60.0)


class Params(_Section):
    as_of: IsoDate | None = "2026-11-21"
    storage: StorageParams = Field(default_factory=StorageParams)
    simulate: SimulateParams = Field(default_factory=SimulateParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    clean: CleanParams = Field(default_factory=CleanParams)
    features: FeaturesParams = Field(default_factory=FeaturesParams)
    sequences: SequencesParams = Field(default_factory=SequencesParams)
    train: TrainParams = Field(default_factory=TrainParams)
    promote: PromoteParams = Field(default_factory=PromoteParams)
    score: ScoreParams = Field(default_factory=ScoreParams)
    warehouse: WarehouseParams = Field(default_factory=WarehouseParams)
    drift: DriftParams = Field(default_factory=DriftParams)
    report: ReportParams = Field(default_factory=ReportParams)
    run: RunParams = Field(default_factory=RunParams)

    @model_validator(mode="before")
    @classmethod
    def _every_section(cls, data: Any) -> Any:
        """An absent or empty section (`score:` with nothing under it) is that section's defaults;
        it still goes through validation, so the result is the same either way."""
        if not isinstance(data, dict):
            return data
        return {**{name: {} for name in SECTIONS}, **{k: ({} if v is None and k in SECTIONS else v)
                                                     for k, v in data.items()}}


SECTIONS: tuple[str, ...] = tuple(
    name for name, f in Params.model_fields.items() if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
)


# ----------------------------------------------------------------------------- defaults


def _defaults_of(model: type[BaseModel]) -> dict[str, Any]:
    """The schema's defaults without running any validator (so no detector import)."""
    out: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            out[name] = _defaults_of(f.annotation)
        else:
            out[name] = f.get_default(call_default_factory=True)
    return out


_DEFAULTS: dict[str, Any] = _defaults_of(Params)


def default_params() -> dict[str, Any]:
    """Every knob at its default: exactly the repository's params.yaml."""
    return copy.deepcopy(_DEFAULTS)


# ----------------------------------------------------------------------------- public API


def validate_params(raw: dict[str, Any] | None, source: str = DEFAULT_PARAMS_FILE) -> dict[str, Any]:
    """Check a parameters mapping against the schema; returns a plain nested dict with every
    key filled. Raises UserError with one line naming `source` and the dotted key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections at the top level, got {_show(raw)}")
    try:
        return Params.model_validate(raw).model_dump()
    except ValidationError as exc:
        raise UserError(f"{source}: {_describe(exc.errors(include_url=False)[0])}") from None


def load_params(path: str | os.PathLike | None = None, required: bool = True) -> dict[str, Any]:
    """The parameters file ($PIPELINES_PARAMS or ./params.yaml when `path` is None), validated,
    with every key filled. With required=False a missing ./params.yaml means the defaults; a
    file named by `path` or $PIPELINES_PARAMS must exist."""
    named = path or os.environ.get("PIPELINES_PARAMS")
    file = Path(named or DEFAULT_PARAMS_FILE)
    if not file.exists():
        if not required and not named:
            return default_params()
        raise UserError(f"{file}: parameters file not found; run from the repository root or pass --params")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot read the parameters file ({exc.__class__.__name__}: {exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{file}: not valid YAML ({_yaml_problem(exc)})") from None
    return validate_params(raw, source=str(file))


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """One section of an already-loaded parameters dict, with that section's defaults filled in
    for missing keys (a detector's sub-section of train merges one level down). Cheap: no
    validation, so a partial dict a test builds by hand works as well as a loaded one."""
    if name not in SECTIONS:
        raise KeyError(f"no section {name!r} in the parameters schema; sections: {', '.join(SECTIONS)}")
    value = params.get(name)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise UserError(f"params.yaml: {name}: must be a mapping of settings (got {_show(value)})")
    out = dict(_DEFAULTS[name])
    for key, v in value.items():
        out[key] = {**out[key], **v} if isinstance(v, dict) and isinstance(out.get(key), dict) else v
    return copy.deepcopy(out)  # the caller may change it; neither the defaults nor `params` follow


def override(params: dict[str, Any], key: str, value: Any, source: str = "command line") -> dict[str, Any]:
    """A copy of `params` with the dotted `key` (e.g. "as_of", "score.top_k") set to `value`,
    validated again. Errors name `source` and the key, like a file's."""
    parts = key.split(".")
    if not all(parts):
        raise UserError(f"{source}: {key!r} is not a dotted parameter name like score.top_k")
    new = copy.deepcopy(params)
    node = new
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise UserError(f"{source}: {'.'.join(parts[:depth + 1])}: is a value, not a section; cannot set {key}")
        node = child
    node[parts[-1]] = value
    return validate_params(new, source=source)


def warehouse_target(params: dict[str, Any]) -> tuple[str, str]:
    """(url, table) of production. WAREHOUSE_URL in the environment wins, so a deployment can
    keep its credentials out of params.yaml."""
    w = section(params, "warehouse")
    return os.environ.get("WAREHOUSE_URL") or w["url"], w["table"]


def experiment_warehouse_target(params: dict[str, Any]) -> tuple[str, str]:
    """(experiment_url, table): where `dvc repro` / `dvc exp run` publish. WAREHOUSE_URL does
    not apply, so an experiment never writes to production."""
    w = section(params, "warehouse")
    return w["experiment_url"], w["table"]


# ----------------------------------------------------------------------------- messages

_TYPE_WORDS = {
    "int_type": "must be an integer", "int_parsing": "must be an integer", "int_from_float": "must be an integer",
    "float_type": "must be a number", "float_parsing": "must be a number", "finite_number": "must be a finite number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be a string", "list_type": "must be a list",
    "dict_type": "must be a mapping", "model_type": "must be a mapping of settings",
    "model_attributes_type": "must be a mapping of settings",
    "too_short": "must not be empty", "string_too_short": "must not be empty",
    "missing": "required", "invalid_key": "keys must be strings",
}


def _describe(error: dict[str, Any]) -> str:
    """One pydantic error -> 'dotted.key: what is wrong (got value)'."""
    kind, ctx = error["type"], error.get("ctx") or {}
    loc = list(error["loc"])
    if kind == "param" and ctx.get("subloc"):
        loc += ctx["subloc"].split(".")
    key = _dotted(loc) or "(top level)"
    show_input = kind not in ("missing", "extra_forbidden")
    if kind == "param":
        message, show_input = ctx["message"], ctx["show_input"]
    elif kind == "extra_forbidden":
        message = _unknown_key(loc[-1], _known_fields(loc[:-1]))
    elif kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        op, bound = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
                     "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}[kind]
        message = f"must be {op} {_show(ctx[bound])}"
    elif kind == "literal_error":
        message = f"must be {str(ctx.get('expected', '')).replace(chr(39), '')}"
    else:
        message = _TYPE_WORDS.get(kind, error.get("msg", "invalid value").rstrip("."))
    if show_input:
        message += f" (got {_show(error.get('input'))})"
    return f"{key}: {message}"


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) and out else (f".{part}" if out else str(part))
    return out


def _known_fields(loc: list[Any]) -> list[str]:
    model: type[BaseModel] = Params
    for part in loc:
        f = model.model_fields.get(part) if isinstance(part, str) else None
        if f is None or not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)):
            return []
        model = f.annotation
    return list(model.model_fields)


def _unknown_key(key: Any, known: list[str]) -> str:
    guess = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if guess:
        return f"unknown key (did you mean {guess[0]}?)"
    return f"unknown key; known: {', '.join(known)}" if known else "unknown key"


def _type_like(default: Any, value: Any) -> str | None:
    """What a detector parameter must be, judged by its default's type; None when it fits."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok and value == value and value not in (float("inf"), float("-inf")) else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    return None


def _show(value: Any) -> str:
    """A value as it would look in YAML, cut short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


__all__ = [
    "Params", "SECTIONS", "default_params", "experiment_warehouse_target", "load_params", "override",
    "section", "validate_params", "warehouse_target",
]
