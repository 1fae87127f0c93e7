"""The model registry: immutable, content-addressed model versions, the champion that scoring
uses, and the history of every promotion decision.

    <models>/registry/<version>/   the detector's files, meta.json (written last) and
                                   registry.json (training-data fingerprint, params, features,
                                   metrics, library versions); drift_reference.json (the
                                   training users' summary drift is measured against,
                                   pipelines/drift.py)
    <models>/champion.json         which version scores; replaced atomically
    <models>/promotions/*.json     one file per gate decision, promoted or not

A version is `<detector>-<12 hex digits>`, a hash of the fitted model's files, parameters and
feature list: the same model trained twice is one version, and a version never changes.

Readers never see half a model: a version is complete once its meta.json is there (io.put_dir
writes it last, on S3 too), incomplete versions are invisible to exists/load/versions, and
champion.json, the only object ever replaced, is pointed only at a complete version.
Replacing it is a read-decide-write: locally it runs under a file lock; on S3, which has no
locks, the new champion.json is a conditional PUT on the ETag the decision read (If-Match, or
If-None-Match when there was none), so of two promoters deciding at once one wins and the
other's decision is recorded as not applied and fails with io.WriteConflict.
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


def _parse_json(data: bytes, uri: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{uri}: not valid JSON ({exc})") from exc


def _now() -> str:
    # a timestamp of when a decision was taken: metadata only, never a run date
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# What a Registry saw of champion.json on S3 before any read: nothing, so a write must read first.
_UNREAD = object()


class Registry:
    def __init__(self, root: str):
        self.root = str(root)
        # champion.json's ETag (None: absent) as last read by this instance, on S3 only: the state
        # a decision is based on, which the conditional replace of champion.json requires.
        self._champion_tag: object = _UNREAD

    # -- versions ----------------------------------------------------------------------
    def version_dir(self, version: str) -> str:
        if not isinstance(version, str) or not _VERSION.match(version):
            raise UserError(f"{version!r} is not a model version (like ecdf_tail-00a41c8ef8e2)")
        return io.join(self.root, "registry", version)

    def register(self, detector, record: dict[str, Any], extra_json: dict[str, Any] | None = None) -> str:
        """Save a fitted detector as a new version (or find it already there); returns the version.
        `extra_json` ({file name: object}) are JSON files kept beside the model (the drift
        reference); like registry.json they are not part of the version's hash."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            version = detector.save(local)
            for name, obj in (extra_json or {}).items():
                if "/" in name or not name.endswith(".json") or name in ("meta.json", "registry.json"):
                    raise ValueError(f"{name!r} cannot be an extra file of a model version")
                (local / name).write_text(json.dumps(obj, sort_keys=True, default=str) + "\n")
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

    def extra_json(self, version: str, name: str) -> Any | None:
        """An extra JSON file of a complete version (see register), or None when it has none."""
        if not self.exists(version):
            raise UserError(f"model {version} is not in the registry at {self.root}; train it first")
        path = io.join(self.version_dir(version), name)
        return io.read_json(path) if io.exists(path) else None

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
        if io.is_s3(self.champion_path):
            found = io.read_bytes_tagged(self.champion_path)
            self._champion_tag = None if found is None else found[1]
            return None if found is None else _parse_json(found[0], self.champion_path)
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
        """Held while a decision reads the champion and may replace it (a file lock locally; on S3
        a no-op, where record()'s conditional PUT keeps concurrent decisions from being lost)."""
        return io.lock(self.champion_path)

    def record(self, decision: dict[str, Any]) -> dict[str, Any]:
        """Append a decision to the history; when it promoted, make its candidate the champion.

        On S3 the champion is replaced only if champion.json is still what this registry last read
        (the champion the decision was measured against); otherwise the decision is rewritten as
        not applied and io.WriteConflict is raised.
        """
        decision = {**decision, "decided_at": _now()}
        if decision["promoted"] and not self.exists(decision["candidate"]):
            raise UserError(f"model {decision['candidate']} is not complete in the registry at {self.root} "
                            f"(no meta.json): the champion can only point at a complete version")
        stamp = decision["decided_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
        name = f"{decision['as_of']}_{stamp}_{decision['candidate']}_{uuid.uuid4().hex[:6]}.json"
        path = io.join(self.root, "promotions", name)
        io.write_json(decision, path)
        if decision["promoted"]:
            pointer = {"version": decision["candidate"], "as_of": decision["as_of"],
                       "promoted_at": decision["decided_at"], "forced": decision.get("forced", False),
                       "decision": name}
            try:
                self._replace_champion(pointer)
            except io.WriteConflict as exc:
                io.write_json({**decision, "promoted": False, "applied": False,
                               "reason": f"{decision['reason']}; not applied: {exc}"}, path)
                raise io.WriteConflict(f"{exc}; the decision for {decision['candidate']} is recorded as not "
                                       f"applied: rerun promote to decide against the new champion") from exc
        return {**decision, "decision_file": path}

    def _replace_champion(self, pointer: dict[str, Any]) -> None:
        if not io.is_s3(self.champion_path):
            io.write_json(pointer, self.champion_path)  # under self.lock(): atomic rename
            return
        if self._champion_tag is _UNREAD:  # a decision taken without reading the champion
            self.champion()
        expected = self._champion_tag
        data = (json.dumps(pointer, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
        io.write_bytes_if(data, self.champion_path, expected)  # type: ignore[arg-type]
        self._champion_tag = _UNREAD  # our own write's ETag is unknown: read again before the next one

    def decisions(self) -> list[dict[str, Any]]:
        """Every decision, oldest first."""
        folder = io.join(self.root, "promotions")
        return [io.read_json(io.join(folder, n)) for n in io.listdir(folder) if n.endswith(".json")]
