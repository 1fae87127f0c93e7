"""params.yaml: the one place every knob lives. A step reads only its own section."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import UserError

DEFAULT_WAREHOUSE_URL = "duckdb:///data/warehouse.duckdb"


def load_params(path: str | os.PathLike | None = None, required: bool = True) -> dict[str, Any]:
    """The parameters file; with required=False a missing file means every step's defaults."""
    path = Path(path or os.environ.get("PIPELINES_PARAMS") or "params.yaml")
    if not path.exists():
        if not required:
            return {}
        raise UserError(f"{path}: parameters file not found; run from the repository root or pass --params")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    return params


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """One step's knobs; an absent section means that step's defaults."""
    value = params.get(name) or {}
    if not isinstance(value, dict):
        raise UserError(f"params.yaml: section '{name}' must be a mapping of settings")
    return value


def warehouse_target(params: dict[str, Any]) -> tuple[str, str]:
    """(url, table). WAREHOUSE_URL in the environment wins, so a deployment can keep its
    credentials out of params.yaml."""
    w = section(params, "warehouse")
    url = os.environ.get("WAREHOUSE_URL") or w.get("url") or DEFAULT_WAREHOUSE_URL
    return url, w.get("table", "flagged_users")
