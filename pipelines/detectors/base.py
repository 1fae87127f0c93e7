"""One small surface for every detector: fit, score, save, load, explain.

A detector subclass implements `_fit` and `_score` on a float matrix (and `_save_state` /
`_load_state` when its fitted state is not a picklable `model_`, `_reasons` when it can say
why from its own model). Everything else, from column checks to reasons a reviewer can read,
lives here once.

Missing values: a feature the log lacks is NaN (pipelines/features.py). The training step drops
columns empty or constant among the training users before fit; what is left may still hold NaN
for some users (no signup event: no account age). `FeatureReference` is fitted on the values
present; a NaN is never rare (rarity 0, no percentile, never a reason), and `impute` fills it
with the training median for detectors that need a full matrix (trees, networks). Infinite
values are refused. Each detector's docstring says which it does.

Each detector declares what it reads (`input_kind`), whether it needs labels
(`supervised`), whether it wants a GPU (`wants_gpu`), what its reasons are (`reasons_kind`) and
whether they are this base's tail-rarity ones (`reasons_from_tail_rarity`: scoring's fast path).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import joblib
import numpy as np
import pandas as pd

from pipelines import __version__
from pipelines.errors import UserError

_CLASSES: dict[str, type["Detector"]] = {}

_QUANTILE_POINTS = 2001
_MAD_TO_SIGMA = 1.4826
REASON_RARITY = -np.log(0.05)  # a reason is a value at most 5% of training users reach
# below this many rows, a column's values are worked out one by one (no distinct values first)
_DISTINCT_MIN_ROWS = 1000


def register(cls: type["Detector"]) -> type["Detector"]:
    _CLASSES[cls.name] = cls
    return cls


class _Registry(Mapping):
    """Detector name -> class. A detector lives in pipelines/detectors/<name>.py and is imported
    the first time it is looked up, so using ecdf_tail never imports torch; listing the names
    imports nothing. Modules whose names start with `_` are shared helpers, not detectors."""

    @functools.cached_property
    def _module_names(self) -> tuple[str, ...]:
        package = Path(__file__).parent  # the package's files do not change while it runs: list them once
        return tuple(m.name for m in pkgutil.iter_modules([str(package)]) if m.name != "base" and not m.name.startswith("_"))

    def _modules(self) -> tuple[str, ...]:
        return self._module_names

    def packaged(self) -> list[str]:
        """The detectors that ship with the package (a module each), without any registered at run time."""
        return sorted(self._modules())

    def _names(self) -> list[str]:
        return sorted(set(self._modules()) | set(_CLASSES))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._names()

    def __getitem__(self, name: str) -> type["Detector"]:
        if name not in _CLASSES and name in self._modules():
            importlib.import_module(f"pipelines.detectors.{name}")
        if name not in _CLASSES:
            raise KeyError(name)
        return _CLASSES[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


REGISTRY = _Registry()


@dataclass(frozen=True)
class Reason:
    """One signal behind a score: a feature (or, for sequence models, an event), its value, the
    share of training users at or below it, and its share of the detector's own score."""

    feature: str
    value: float
    percentile: float
    contribution: float
    kind: str = "feature"  # "feature", or "event": `feature` is the event type, `value` its loss
    context: str = ""  # an event's time
    flags: tuple[str, ...] = ()  # an event's flags (new_device, new_ip, new_country)

    def __str__(self) -> str:
        return format_reasons([self])


def format_reasons(reasons: list[Reason]) -> str:
    """The reasons as a reviewer reads them: `feature=value (pNN.N)`, or for an event
    `type at TIME [flags] (pNN.N)`, joined by `; ` (ReasonTable.texts of one row)."""
    return ReasonTable.from_lists([reasons]).texts()[0].as_py()


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """Compresses heavy tails (counts, money) while keeping sign and order."""
    return np.sign(x) * np.log1p(np.abs(x))


class FeatureReference:
    """What normal looks like per feature: quantiles, median and robust scale of the training users."""

    def __init__(self, quantiles: np.ndarray, median: np.ndarray, scale: np.ndarray):
        self.quantiles = quantiles  # (points, features)
        self.median = median
        self.scale = scale

    @classmethod
    def fit(cls, X: np.ndarray) -> "FeatureReference":
        # column by column: quantiles over a whole matrix copy it, and at a million users
        # the copies, not the model, set the peak memory
        # NaN (missing) values are left out; a column with no value at all gets a flat
        # reference at 0 (its NaN are never rare, and imputation fills 0)
        points = np.linspace(0, 1, _QUANTILE_POINTS)
        quantiles = np.zeros((_QUANTILE_POINTS, X.shape[1]))
        median = np.zeros(X.shape[1])
        for j in range(X.shape[1]):
            column = X[:, j]
            present = column[~np.isnan(column)] if np.isnan(column).any() else column
            if len(present):
                quantiles[:, j] = np.quantile(present, points)
                median[j] = np.median(present)
        return cls(quantiles, median, robust_scale(X, median))

    def percentiles(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(percent of training users at or below each value, two-sided tail probability)."""
        return self._per_column(X, rarity=False)

    def rarity(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(percentile, rarity) per value: rarity is -log(two-sided tail probability), and
        among values beyond the quantile grid (equally rare to it) the farther one, in robust
        standard deviations, counts as slightly rarer."""
        return self._per_column(X, rarity=True)

    def _per_column(self, X: np.ndarray, rarity: bool) -> tuple[np.ndarray, np.ndarray]:
        """percentiles, or rarity, a feature at a time: every intermediate is one column (the
        feature matrix comes column-major from pandas, so a column is contiguous and stays in
        cache), the outputs have X's layout, and each value is computed by the same operations
        as over the whole matrix at once, so the figures are the same to the bit.

        Most features take a handful of values (counts, shares of few events, zero for most
        users): a column's distinct values are worked out once each and spread back, and the
        tail probability of a value depends only on where it falls on the grid, so it is looked
        up from a table of every grid position rather than computed per value."""
        n = self.quantiles.shape[0]
        percentile = np.empty_like(X, dtype="float64")
        second = np.empty_like(X, dtype="float64")  # the tail probability, or the rarity
        at_or_below, off_grid, on_grid = self._tail_tables()
        at_grid = -np.log(on_grid) if rarity else on_grid
        between = -np.log(off_grid) if rarity else off_grid
        distinct = X.dtype == np.float64 and X.shape[0] >= _DISTINCT_MIN_ROWS
        for j in range(X.shape[1]):
            column = X[:, j]
            codes = None
            if distinct:  # by bit pattern, as _formatted does: NaN is a value like any other here
                codes, uniques = pd.factorize(column.view("int64"))
                if len(uniques) <= len(column) // 4:
                    column = uniques.view("float64")
                else:
                    codes = None
            tail_table = np.concatenate([between, at_grid[:, j]])
            pct, tail = self._column_figures(j, column, at_or_below, tail_table, rarity)
            percentile[:, j] = pct if codes is None else pct[codes]
            second[:, j] = tail if codes is None else tail[codes]
        return percentile, second

    def _column_figures(self, j: int, column: np.ndarray, at_or_below: np.ndarray, tail_table: np.ndarray,
                        rarity: bool) -> tuple[np.ndarray, np.ndarray]:
        """Feature j's percentile and tail probability (or rarity) of each value of `column`;
        `tail_table` is the tail (or its -log) by grid position: first between grid points
        (index: the points at or below the value), then on a grid point (n + 1 + its index)."""
        n, grid = self.quantiles.shape[0], self.quantiles[:, j]
        right = np.searchsorted(grid, column, side="right")
        last = np.maximum(right - 1, 0)
        on_point = (right > 0) & (grid[last] == column)
        pct = 100.0 * at_or_below[right]
        tail = tail_table[np.where(on_point, right + n, right)]
        missing = np.isnan(column)
        if missing.any():  # a missing value has no percentile and is not rare (tail 1)
            pct[missing], tail[missing] = np.nan, (-np.log(1.0) if rarity else 1.0)
        if not rarity:
            return pct, tail
        z = np.abs(column - self.median[j]) / self.scale[j]
        capped = np.minimum(z, 1e3)  # infinite -> 1e3, as the largest float is
        capped[np.isnan(z)] = 0.0  # a missing value is not far from anything
        return pct, tail + 1e-3 * capped

    def _tail_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(at_or_below, off_grid, on_grid) by grid position, as _column_figures reads them.
        A value with r grid points at or below it has r / n of the points at or below it; below
        it, as many when it lies between points, or, when it equals point r - 1, the points
        before that point's run of equal ones (searchsorted side="left" without a second search).
        The two-sided tail is the smaller share, at least half a grid step."""
        n = self.quantiles.shape[0]
        at_or_below = np.arange(n + 1) / n
        off_grid = np.maximum(np.minimum(at_or_below, 1.0 - at_or_below), 0.5 / n)
        on_grid = np.maximum(np.minimum(at_or_below[1:, None], 1.0 - _run_starts(self.quantiles) / n), 0.5 / n)
        return at_or_below, off_grid, on_grid

    def impute(self, X: np.ndarray) -> np.ndarray:
        """X with each missing (NaN) value replaced by its feature's training median (X itself
        when nothing is missing)."""
        missing = np.isnan(X)
        if not missing.any():
            return X
        return np.where(missing, self.median, X)

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"quantiles": self.quantiles, "median": self.median, "scale": self.scale}


def _run_starts(quantiles: np.ndarray) -> np.ndarray:
    """Per grid point (row) and feature (column), the first row of its run of equal points."""
    rows = np.arange(quantiles.shape[0])[:, None]
    first = np.ones(quantiles.shape, dtype=bool)
    first[1:] = quantiles[1:] != quantiles[:-1]
    return np.maximum.accumulate(np.where(first, rows, 0), axis=0)


def robust_scale(X: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Per-feature spread: scaled MAD, else IQR, else standard deviation, else 1.

    Zero-inflated features (most users never refund) have MAD = IQR = 0; falling back keeps
    their z-scores finite instead of making every non-zero value infinitely anomalous.
    """
    scale = np.ones(X.shape[1])
    for j in range(X.shape[1]):  # a column at a time: no copy of the whole matrix
        column = X[:, j]
        if np.isnan(column).any():  # missing values are left out
            column = column[~np.isnan(column)]
            if len(column) == 0:
                continue
        mad = _MAD_TO_SIGMA * np.median(np.abs(column - median[j]))
        q75, q25 = np.quantile(column, [0.75, 0.25])
        iqr = (q75 - q25) / 1.349
        std = column.std()
        scale[j] = mad if mad > 0 else iqr if iqr > 0 else std if std > 0 else 1.0
    return scale


class Detector(ABC):
    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    # "table": the per-user features; "sequence": ordered events (pipelines.sequences);
    # "table+sequence": both, as sequences.TableAndSequences (an ensemble with members of each)
    input_kind: ClassVar[str] = "table"
    supervised: ClassVar[bool] = False  # needs labels in fit; training passes them only then
    wants_gpu: ClassVar[bool] = False  # training benefits from a GPU (the DAG routes it there)
    # what explain's reasons are: the detector's own attribution, or a proxy beside it
    reasons_kind: ClassVar[str] = "tail rarity per feature (a proxy: not this detector's attribution)"
    # True: this class's reasons are this base's `_reasons` (tail rarity per feature) and its
    # score is `_score_given_rarity` of that rarity (`score`, `reasons`, `score_and_reasons`
    # not redefined), so scoring builds the reasons from arrays (score_and_reason_table).
    # Declared by each class for itself, never inherited (__init_subclass__): a subclass that
    # explains or scores in its own way gets the general path unless it declares it too.
    reasons_from_tail_rarity: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.reasons_from_tail_rarity = bool(cls.__dict__.get("reasons_from_tail_rarity", False))

    def __init__(self, **params: Any):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise UserError(
                f"unknown parameter(s) for detector {self.name}: {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        self.params = {**self.defaults, **params}
        self.feature_names_: list[str] | None = None
        self.reference_: FeatureReference | None = None
        self.model_version_: str | None = None

    # -- the surface -------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> "Detector":
        """Learn from the rows of X. `y` (0/1 per row) is required by a supervised detector and
        ignored by the others."""
        if len(X) < 2:
            raise UserError(f"detector {self.name} needs at least 2 users to learn from, got {len(X)}")
        labels = None
        if self.supervised:
            if y is None:
                raise UserError(f"detector {self.name} is supervised and needs labels: pass --labels "
                                "(user_id, is_anomaly) to train, or pick an unsupervised train.detector")
            labels = np.asarray(y, dtype="float64").reshape(-1)
            if len(labels) != len(X) or not np.isin(labels, (0.0, 1.0)).all():
                raise UserError(f"detector {self.name}: labels must be one 0/1 value per training user")
            if labels.min() == labels.max():
                raise UserError(f"detector {self.name}: the training users' labels are all {int(labels[0])}; "
                                "it needs both normal and anomalous examples")
        self.feature_names_ = [str(c) for c in X.columns]
        matrix = self._as_matrix(X)
        self.reference_ = FeatureReference.fit(matrix)
        if self.supervised:
            self._fit(matrix, labels)
        else:
            self._fit(matrix)
        return self

    def score(self, X: pd.DataFrame) -> np.ndarray:
        """Anomaly score per row: higher is more anomalous."""
        self._check_fitted()
        return np.asarray(self._score(self._as_matrix(X)), dtype="float64")

    @classmethod
    def params_from_train(cls, train: dict[str, Any]) -> dict[str, Any]:
        """This detector's parameters from the (validated) train section of params.yaml: its
        own sub-section, plus train.device when the detector has a device knob."""
        params = dict(train.get(cls.name) or {})
        if "device" in cls.defaults:
            params["device"] = train["device"]
        return params

    @classmethod
    def wants_gpu_for(cls, train: dict[str, Any]) -> bool:
        """Whether training with this train section wants a GPU (the DAG routes it there)."""
        return cls.wants_gpu

    @classmethod
    def reads_sequences_for(cls, train: dict[str, Any]) -> bool:
        """Whether this detector, with this train section, reads the sequences step's output."""
        return cls.input_kind == "sequence"

    def fit_report(self) -> dict[str, Any]:
        """What fitting found worth reporting in train.json (empty: nothing)."""
        return {}

    def reasons(self, X: pd.DataFrame, top_n: int = 3) -> list[list[Reason]]:
        """Per row, the signals behind its score, strongest first, one per base signal
        (`n_view_1d` and `n_view_28d` count once)."""
        self._check_fitted()
        return self._reasons(self._as_matrix(X), top_n)

    def score_and_reasons(self, X: pd.DataFrame, top_n: int = 3) -> tuple[np.ndarray, list[list[Reason]]]:
        """`score` and `reasons` of the same rows, as scoring wants them. A detector whose reasons
        are the terms of its score (the sequence models) overrides it to compute them once."""
        return self.score(X), self.reasons(X, top_n)

    def score_and_reason_table(self, X: pd.DataFrame, top_n: int = 3) -> tuple[np.ndarray, "ReasonTable"]:
        """`score_and_reasons` for scoring many users, the reasons as a ReasonTable (its
        `to_lists()` equals `reasons(X, top_n)`). When the class declares
        `reasons_from_tail_rarity` the table is built from arrays (no object per reason), the
        features are read into a matrix once and the tail rarity is computed once for score and
        reasons; otherwise it is the table of `score_and_reasons`' lists."""
        if not type(self).reasons_from_tail_rarity:
            scores, lists = self.score_and_reasons(X, top_n)
            return scores, ReasonTable.from_lists(lists)
        self._check_fitted()
        matrix = self._as_matrix(X)
        percentile, strength = self.reference_.rarity(matrix)
        scores = np.asarray(self._score_given_rarity(matrix, strength), dtype="float64")
        return scores, strongest_reason_table(self.feature_names_, matrix, percentile, strength, top_n)

    def explain(self, X: pd.DataFrame, top_n: int = 3) -> list[str]:
        """`reasons` as text, `feature=value (pNN.N)` joined by `; `."""
        return ReasonTable.from_lists(self.reasons(X, top_n)).texts().to_pylist()

    def _reasons(self, matrix: np.ndarray, top_n: int) -> list[list[Reason]]:
        """The features that deviate most from the training users by tail rarity; the
        contribution is each one's share of the row's summed rarity over its reasons."""
        percentile, strength = self.reference_.rarity(matrix)
        return strongest_reasons(self.feature_names_, matrix, percentile, strength, top_n)

    def save(self, directory: str | Path) -> str:
        """Write the fitted detector to `directory`; returns its model_version (content hash)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "reference.npz", **self.reference_.as_arrays())
        self._save_state(directory)
        digest = hashlib.sha256()
        # every file (an ensemble keeps its members in sub-folders), by its path in the folder
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            name = path.relative_to(directory).as_posix()
            if name != "meta.json":
                digest.update(name.encode() + path.read_bytes())
        digest.update(json.dumps([__version__, self.name, self.params, self.feature_names_], sort_keys=True).encode())
        self.model_version_ = f"{self.name}-{digest.hexdigest()[:12]}"
        meta = {
            "detector": self.name,
            "params": self.params,
            "feature_names": self.feature_names_,
            "model_version": self.model_version_,
        }
        (directory / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return self.model_version_

    @classmethod
    def load(cls, directory: str | Path) -> "Detector":
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.exists():
            raise UserError(f"{directory}: no saved model here (meta.json missing); run the train step first")
        meta = json.loads(meta_path.read_text())
        detector_cls = get_detector_class(meta["detector"])
        detector = detector_cls(**meta["params"])
        detector.feature_names_ = meta["feature_names"]
        detector.model_version_ = meta["model_version"]
        with np.load(directory / "reference.npz") as ref:
            detector.reference_ = FeatureReference(ref["quantiles"], ref["median"], ref["scale"])
        detector._load_state(directory)
        return detector

    # -- for subclasses ----------------------------------------------------------------
    @abstractmethod
    def _fit(self, X: np.ndarray) -> None: ...

    @abstractmethod
    def _score(self, X: np.ndarray) -> np.ndarray: ...

    def _score_given_rarity(self, X: np.ndarray, rarity: np.ndarray) -> np.ndarray:
        """`_score(X)`, told `reference_.rarity(X)[1]` (a detector scoring by that rarity uses it
        instead of computing it again)."""
        return self._score(X)

    def _save_state(self, directory: Path) -> None:
        joblib.dump(self.model_, directory / "model.joblib")

    def _load_state(self, directory: Path) -> None:
        self.model_ = joblib.load(directory / "model.joblib")

    # -- internals ---------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.feature_names_ is None or self.reference_ is None:
            raise RuntimeError(f"detector {self.name} is not fitted: call fit() or load()")

    def _as_matrix(self, X: pd.DataFrame) -> np.ndarray:
        names = self.feature_names_ if self.feature_names_ is not None else list(X.columns)
        missing = [c for c in names if c not in X.columns]
        if missing:
            raise UserError(
                f"features are missing {len(missing)} column(s) the model was trained on "
                f"(e.g. {', '.join(missing[:3])}); rebuild features with the same params or retrain"
            )
        matrix = X[names].to_numpy(dtype="float64", na_value=np.nan)
        # NaN is a missing value (a signal the log lacks), handled by each detector; inf is an error
        if np.isinf(matrix).any():
            bad = [names[j] for j in np.where(np.isinf(matrix).any(axis=0))[0]]
            raise UserError(f"features contain infinite values in: {', '.join(bad[:5])}")
        return matrix


def get_detector_class(name: str) -> type[Detector]:
    if name not in REGISTRY:
        raise UserError(f"unknown detector {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def make_detector(name: str, params: dict[str, Any] | None = None) -> Detector:
    return get_detector_class(name)(**(params or {}))


def base_signal(feature: str) -> str:
    """The signal without its window suffix (_1d, _28d, ..., _hist): n_view_hist -> n_view."""
    head, _, tail = feature.rpartition("_")
    return head if head and (tail == "hist" or (tail.endswith("d") and tail[:-1].isdigit())) else feature


def signal_groups(feature_names: list[str]) -> list[list[int]]:
    """Column indices per base signal: the windows of one signal form one group."""
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(feature_names):
        groups.setdefault(base_signal(name), []).append(j)
    return list(groups.values())


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _fmt_pct(p: float) -> str:
    return f"{min(p, 100.0):.1f}" if p < 99.95 or p >= 100 else f"{p:.2f}"


def strongest_reasons(feature_names: list[str], matrix: np.ndarray, percentile: np.ndarray, strength: np.ndarray,
                      top_n: int) -> list[list[Reason]]:
    """Per row, the features with the largest `strength` (a tail rarity) that is at least
    REASON_RARITY, strongest first, one per base signal (`n_view_1d` and `n_view_28d` count
    once); each one's contribution is its share of the row's strength over its reasons."""
    return strongest_reason_table(feature_names, matrix, percentile, strength, top_n).to_lists()


@dataclass(frozen=True, eq=False)
class ReasonTable:
    """Reasons as arrays, for scoring a million users without a Python object per reason: row
    i's reasons are the slots k with columns[i, k] >= 0 (always the first few), strongest first.
    The one place reasons become text (`texts`; format_reasons and Reason.__str__ are one-row
    tables); `to_lists` gives the Reason objects. strongest_reason_table builds one of feature
    reasons; `from_lists` one of any detector's lists, event reasons included."""

    feature_names: list[str]  # a feature's name, or for an event slot its event type
    columns: np.ndarray  # (rows, top_n) index into feature_names, -1 past the row's last reason
    values: np.ndarray  # (rows, top_n) float64, the feature's value (0 where no reason)
    percentiles: np.ndarray
    contributions: np.ndarray
    # event reasons (sequence detectors); None: none in the table
    events: np.ndarray | None = None  # (rows, top_n) bool, the slot is an event
    contexts: np.ndarray | None = None  # (rows, top_n) object, an event's time
    flags: np.ndarray | None = None  # (rows, top_n) object, an event's flags (a tuple), None elsewhere

    def __len__(self) -> int:
        return len(self.columns)

    @classmethod
    def from_lists(cls, lists: list[list[Reason]]) -> "ReasonTable":
        """The table of per-row lists of Reason (as a detector's `reasons` gives them)."""
        lists = list(lists)
        rows, width = len(lists), max((len(r) for r in lists), default=0)
        index: dict[str, int] = {}
        columns = np.full((rows, width), -1, dtype="int64")
        values, pcts, shares = np.zeros((rows, width)), np.zeros((rows, width)), np.zeros((rows, width))
        events = contexts = flags = None
        for i, reasons in enumerate(lists):
            for k, r in enumerate(reasons):
                columns[i, k] = index.setdefault(r.feature, len(index))
                values[i, k], pcts[i, k], shares[i, k] = r.value, r.percentile, r.contribution
                if r.kind == "event":
                    if events is None:
                        events = np.zeros((rows, width), dtype=bool)
                        contexts = np.full((rows, width), None, dtype=object)
                        flags = np.full((rows, width), None, dtype=object)
                    events[i, k], contexts[i, k], flags[i, k] = True, r.context, tuple(r.flags)
        return cls(list(index), columns, values, pcts, shares, events, contexts, flags)

    def to_lists(self) -> list[list[Reason]]:
        names = self.feature_names
        out = []
        for i, (cols, values, pcts, shares) in enumerate(zip(self.columns.tolist(), self.values.tolist(),
                                                             self.percentiles.tolist(), self.contributions.tolist())):
            row = []
            for k, (j, v, p, c) in enumerate(zip(cols, values, pcts, shares)):
                if j < 0:
                    continue
                if self.events is not None and self.events[i, k]:
                    row.append(Reason(names[j], v, p, c, kind="event", context=self.contexts[i, k],
                                      flags=self.flags[i, k]))
                else:
                    row.append(Reason(names[j], v, p, c))
            out.append(row)
        return out

    def texts(self):
        """Each row's reasons as text, a pyarrow string array ("" for a row without reasons):
        `feature=value (pNN.N)` (an event: `type at TIME [flags] (pNN.N)`) joined by `; `.
        Each distinct value and percentile is formatted once, by _fmt and _fmt_pct."""
        import pyarrow as pa
        import pyarrow.compute as pc

        names = pa.array([str(n) for n in self.feature_names], type=pa.string())
        parts = []
        for k in range(self.columns.shape[1]):
            cols = self.columns[:, k]
            present = cols >= 0
            event = self.events[:, k] & present if self.events is not None else None
            name = names.take(pa.array(cols, mask=~present))
            # a null value (an event slot) makes the feature text null; the event text fills it
            value = _formatted(self.values[:, k], present if event is None else present & ~event, _fmt)
            pct = _formatted(self.percentiles[:, k], present, _fmt_pct)
            part = pc.binary_join_element_wise(name, "=", value, " (p", pct, ")", "")
            if event is not None and event.any():
                when = pa.array([f"{c}{' [' + ', '.join(f) + ']' if f else ''}" if e else None
                                 for c, f, e in zip(self.contexts[:, k], self.flags[:, k], event)], type=pa.string())
                part = pc.coalesce(part, pc.binary_join_element_wise(name, " at ", when, " (p", pct, ")", ""))
            parts.append(part)
        return join_present(parts, "; ", len(self))


def join_present(parts: list, sep: str, rows: int):
    """Row by row, the non-null strings of `parts` (pyarrow string arrays of `rows` each) joined
    by `sep`; "" where all are null. (pyarrow 26's binary_join_element_wise with
    null_handling="skip" drops the rows where all are null instead of giving "", so each
    present string gets `sep` in front, and the row's first `sep` is cut off.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not parts:
        return pa.array([""] * rows, type=pa.string())
    prefixed = [pc.binary_join_element_wise(sep, part, "").fill_null("") for part in parts]
    joined = prefixed[0] if len(prefixed) == 1 else pc.binary_join_element_wise(*prefixed, "")
    return pc.utf8_slice_codeunits(joined, len(sep))


def _formatted(values: np.ndarray, present: np.ndarray, fmt) -> Any:
    """fmt(v) for each present v (null elsewhere), as a pyarrow string array: fmt runs once per
    distinct value."""
    import pyarrow as pa

    # by bit pattern: -0.0 and 0.0 compare equal but may format apart ("-0.0", "0.0")
    codes, uniques = pd.factorize(np.ascontiguousarray(values, dtype="float64").view("int64"))
    texts = pa.array([fmt(float(v)) for v in uniques.view("float64")], type=pa.string())
    return texts.take(pa.array(codes, mask=~present))


def strongest_reason_table(feature_names: list[str], matrix: np.ndarray, percentile: np.ndarray,
                           strength: np.ndarray, top_n: int) -> ReasonTable:
    """strongest_reasons, vectorised over rows: the same reasons (ties in the same order, as
    the same argsort decides them), a position of the rows' strength order at a time."""
    n = matrix.shape[0]
    top_n = max(int(top_n), 0)
    columns = np.full((n, top_n), -1, dtype="int64")
    values = np.zeros((n, top_n))
    pcts = np.zeros((n, top_n))
    shares = np.zeros((n, top_n))
    group_of: dict[str, int] = {}
    group = np.array([group_of.setdefault(base_signal(f), len(group_of)) for f in feature_names], dtype="int64")
    # the loop stops at the first strength below REASON_RARITY: a row without one strong enough
    # has no reasons, a row with one (and no NaN, which sorts last) has that one; neither needs
    # a sort. NaN is not below REASON_RARITY, so the loop does not stop at it: such a row is sorted.
    if top_n and strength.shape[1]:
        strong = (~(strength < REASON_RARITY)).sum(axis=1)
        single = (strong == 1) & ~np.isnan(strength).any(axis=1)
        lone = np.flatnonzero(single)
        columns[lone, 0] = np.argmax(strength[lone] >= REASON_RARITY, axis=1)
        rows = np.flatnonzero(strong > 0)  # the rows with reasons: values, shares below
        sorted_rows = np.flatnonzero(~single[rows])  # positions in `rows` that need the loop
    else:
        rows = sorted_rows = np.empty(0, "int64")
    if len(sorted_rows):
        sub = strength[rows[sorted_rows]]
        # as the per-row loop sorted, so ties come in its order (a column-major copy sorts the
        # same, a few times faster)
        order = np.argsort(np.asfortranarray(-sub), axis=1)
        rows_sorted = rows[sorted_rows]
        count = np.zeros(len(sorted_rows), dtype="int64")
        seen = np.zeros((len(sorted_rows), len(group_of)), dtype=bool)
        active = np.arange(len(sorted_rows))  # rows still picking: not past a weak strength, under top_n
        for k in range(sub.shape[1]):
            j = order[active, k]
            s = sub[active, j]
            keep = ~(s < REASON_RARITY)
            active, j = active[keep], j[keep]
            if not len(active):
                break
            g = group[j]
            new = ~seen[active, g]
            take, jt = active[new], j[new]
            seen[take, g[new]] = True
            columns[rows_sorted[take], count[take]] = jt
            count[take] += 1
            active = active[count[active] < top_n]
            if not len(active):
                break
    if len(rows):
        picked = columns[rows]
        valid = picked >= 0
        at = np.where(valid, picked, 0)
        r = rows[:, None]
        values[rows] = np.where(valid, matrix[r, at], 0.0)
        pcts[rows] = np.where(valid, percentile[r, at], 0.0)
        picked_strength = np.where(valid, strength[r, at], 0.0)
        total = np.zeros(len(rows))
        for k in range(top_n):  # summed left to right, as float(sum(...)) did
            total = total + picked_strength[:, k]
        total[total == 0] = 1.0
        shares[rows] = np.where(valid, picked_strength / total[:, None], 0.0)
    return ReasonTable(list(feature_names), columns, values, pcts, shares)
