"""The simulator's parameters: defaults (params.yaml's simulate section) and their checks."""
from __future__ import annotations

import datetime as _dt
import math
from typing import Any

import numpy as np

from pipelines.config import default_params
from pipelines.errors import UserError
from pipelines.simulate.scenarios import ABUSE_TYPES

# params.yaml's simulate section, plus a knob only code uses (the mix of abuse types)
DEFAULT_PARAMS: dict[str, Any] = {**default_params()["simulate"], "anomaly_mix": None}

# Measured: events per user per day at the default params (see n_users_for_events).
EVENTS_PER_USER_DAY = 2.75


def _as_int(params: dict, key: str, lo: int, hi: int) -> int:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float, np.floating)):
        raise UserError(f"simulate: {key} must be an integer, got {v!r}")
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v) or not float(v).is_integer():
            raise UserError(f"simulate: {key} must be an integer, got {v!r}")
    v = int(v)
    if not lo <= v <= hi:
        raise UserError(f"simulate: {key} must be between {lo} and {hi}, got {v}")
    return v


def parse_params(params: dict | None, abuse_types: tuple[str, ...] = ABUSE_TYPES) -> dict[str, Any]:
    """Checked params with defaults filled in; anomaly_mix becomes weights aligned with
    `abuse_types` (the registered scenarios), summing to 1. A bad value raises UserError."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise UserError(f"simulate: params must be a mapping, got {type(params).__name__}")
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise UserError(f"simulate: unknown parameter(s) {', '.join(map(str, unknown))}; known: {', '.join(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if v is not None or k == "anomaly_mix"}}
    out: dict[str, Any] = {
        "seed": _as_int(p, "seed", 0, 2**63 - 1),
        "n_users": _as_int(p, "n_users", 1, 50_000_000),
        "days": _as_int(p, "days", 1, 3660),
        "n_products": _as_int(p, "n_products", 50, 50_000_000),
    }
    end = p["end_date"]
    if isinstance(end, _dt.datetime):
        end = end.date()
    if isinstance(end, _dt.date):
        end_date = end
    else:
        try:
            end_date = _dt.date.fromisoformat(str(end).strip())
        except ValueError:
            raise UserError(f"simulate: end_date must be YYYY-MM-DD, got {end!r}") from None
    out["end_date"] = end_date
    rate = p["anomaly_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise UserError(f"simulate: anomaly_rate must be a number in [0, 0.5], got {rate!r}")
    rate = float(rate)
    if not (0.0 <= rate <= 0.5):
        raise UserError(f"simulate: anomaly_rate must be in [0, 0.5], got {rate}")
    out["anomaly_rate"] = rate
    reword = p["ring_rewording"]
    if isinstance(reword, bool) or not isinstance(reword, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(reword) <= 1.0:
        raise UserError(f"simulate: ring_rewording must be a number in [0, 1], got {reword!r}")
    out["ring_rewording"] = float(reword)
    mix = p["anomaly_mix"]
    if mix is None:
        weights = np.ones(len(abuse_types))
    else:
        if not isinstance(mix, dict) or not mix:
            raise UserError(f"simulate: anomaly_mix must be a non-empty mapping abuse_type -> weight, got {mix!r}")
        bad = sorted(str(k) for k in mix if k not in abuse_types)
        if bad:
            raise UserError(f"simulate: anomaly_mix has unknown type(s) {', '.join(bad)}; known: {', '.join(abuse_types)}")
        weights = np.zeros(len(abuse_types))
        for i, name in enumerate(abuse_types):
            w = mix.get(name, 0.0)
            if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not math.isfinite(w) or w < 0:
                raise UserError(f"simulate: anomaly_mix weight for {name} must be a number >= 0, got {w!r}")
            weights[i] = float(w)
        if weights.sum() <= 0:
            raise UserError("simulate: anomaly_mix weights must not all be 0")
    out["anomaly_mix"] = weights / weights.sum()
    return out


def n_users_for_events(target_events: int, days: int = 28) -> int:
    """n_users that gives about `target_events` events over `days` days at the other defaults."""
    if target_events < 1 or days < 1:
        raise UserError("n_users_for_events: target_events and days must be >= 1")
    return max(1, int(round(target_events / (EVENTS_PER_USER_DAY * days))))

