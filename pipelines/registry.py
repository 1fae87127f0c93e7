"""The model registry: immutable, content-addressed model versions, the champion that scoring
uses, and the history of every promotion decision.

    <models>/registry/<version>/   the detector's files, meta.json (written last) and
                                   registry.json (training-data fingerprint, params, features,
                                   metrics, library versions)
    <models>/champion.json         which version scores; replaced atomically
    <models>/promotions/*.json     one file per gate decision, promoted or not

A version is `<detector>-<12 hex digits>`, a hash of the fitted model's files, parameters and
feature list: the same model trained twice is one version, and a version never changes.
"""
from __future__ import annotations

import datetime as dt
import json
import platform
import re
import tempfile
import uuid
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from pipelines import io
from pipelines.errors import UserError

_VERSION = re.compile(r"^[a-z][a-z0-9_]*-[0-9a-f]{12}$")
_LIBRARIES = ("pipelines", "numpy", "pandas", "scikit-learn", "duckdb", "pyarrow", "torch")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def _now() -> str:
    # a timestamp of when a decision was taken: metadata only, never a run date
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Registry:
    def __init__(self, root: str):
        self.root = str(root)

    # -- versions ----------------------------------------------------------------------
    def version_dir(self, version: str) -> str:
        if not isinstance(version, str) or not _VERSION.match(version):
            raise UserError(f"{version!r} is not a model version (like ecdf_tail-00a41c8ef8e2)")
        return io.join(self.root, "registry", version)

    def register(self, detector, record: dict[str, Any]) -> str:
        """Save a fitted detector as a new version (or find it already there); returns the version."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            version = detector.save(local)
            meta = {
                **record,
                "version": version,
                "detector": detector.name,
                "params": detector.params,
                "feature_names": detector.feature_names_,
                "libraries": library_versions(),
            }
            (local / "registry.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
            target = self.version_dir(version)
            if not self.exists(version):
                io.put_dir(local, target)
        return version

    def exists(self, version: str) -> bool:
        return io.exists(io.join(self.version_dir(version), "meta.json"))

    def get(self, version: str) -> dict[str, Any]:
        """The version's registry metadata."""
        if not self.exists(version):
            raise UserError(f"model {version} is not in the registry at {self.root}; train it first")
        return io.read_json(io.join(self.version_dir(version), "registry.json"))

    def load(self, version: str):
        from pipelines.detectors import Detector

        if not self.exists(version):
            raise UserError(f"model {version} is not in the registry at {self.root}; train it first")
        with io.get_dir(self.version_dir(version)) as local:
            return Detector.load(local)

    def versions(self) -> list[dict[str, Any]]:
        """Every complete version's metadata, oldest training date first."""
        found = []
        for name in io.listdir(io.join(self.root, "registry")):
            if _VERSION.match(name) and self.exists(name):
                found.append(self.get(name))
        return sorted(found, key=lambda m: (str(m.get("trained_as_of")), m["version"]))

    # -- champion and decisions ----------------------------------------------------------
    @property
    def champion_path(self) -> str:
        return io.join(self.root, "champion.json")

    def champion(self) -> dict[str, Any] | None:
        if not io.exists(self.champion_path):
            return None
        return io.read_json(self.champion_path)

    def champion_version(self, required: bool = True) -> str | None:
        champ = self.champion()
        if champ is None:
            if required:
                raise UserError(f"no champion model in {self.root} yet: train and promote one first "
                                f"(python -m pipelines train, then promote)")
            return None
        return champ["version"]

    def lock(self):
        """Held while a decision reads the champion and may replace it."""
        return io.lock(self.champion_path)

    def record(self, decision: dict[str, Any]) -> dict[str, Any]:
        """Append a decision to the history; when it promoted, make its candidate the champion."""
        decision = {**decision, "decided_at": _now()}
        stamp = decision["decided_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
        name = f"{decision['as_of']}_{stamp}_{decision['candidate']}_{uuid.uuid4().hex[:6]}.json"
        path = io.join(self.root, "promotions", name)
        io.write_json(decision, path)
        if decision["promoted"]:
            io.write_json(
                {"version": decision["candidate"], "as_of": decision["as_of"], "promoted_at": decision["decided_at"],
                 "forced": decision.get("forced", False), "decision": name},
                self.champion_path,
            )
        return {**decision, "decision_file": path}

    def decisions(self) -> list[dict[str, Any]]:
        """Every decision, oldest first."""
        folder = io.join(self.root, "promotions")
        return [io.read_json(io.join(folder, n)) for n in io.listdir(folder) if n.endswith(".json")]
