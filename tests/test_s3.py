"""S3 for real deployments, against a moto S3 server on 127.0.0.1 (tests/conftest.py's `s3`):
a model version is whole or invisible, the champion pointer is replaced only after its version is
complete and never by a promoter that decided against an outdated champion, credentials come from
boto's chain (never params.yaml), and the CLI reads events from and writes every artifact to S3."""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines import io
from pipelines.config import default_params, override
from pipelines.errors import UserError
from pipelines.registry import Registry
from pipelines.train import train

REPO = Path(__file__).resolve().parents[1]
MODELS = "s3://events/models"


def fitted(features, detector="ecdf_tail"):
    model, info = train(features, override(default_params(), "train.detector", detector)["train"])
    return model, {"trained_as_of": "2026-11-21", "training_data": {"sha256": info["training_data_sha256"]}}


def promote(registry: Registry, version: str) -> dict:
    """What promote.gate does around the decision: read the champion, then record."""
    before = registry.champion_version(required=False)
    return registry.record({"as_of": "2026-11-21", "candidate": version, "champion_before": before,
                            "promoted": True, "reason": "test"})


def keys(s3, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="events", Prefix=prefix).get("Contents", []))


@contextlib.contextmanager
def failing_upload_of(suffix: str) -> Iterator[list[str]]:
    """Within the block s3fs's single-file upload (behind put and put_file) fails for keys ending
    in `suffix`; yields the keys that did upload."""
    import s3fs

    done: list[str] = []
    real = s3fs.S3FileSystem._put_file

    async def put_file(self, lpath, rpath, *args, **kwargs):
        if rpath.endswith(suffix):
            raise ConnectionResetError(f"connection reset while uploading {rpath}")
        await real(self, lpath, rpath, *args, **kwargs)
        done.append(rpath)

    # instances bind their methods when built (fsspec's sync mirrors): build new ones on both sides
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(s3fs.S3FileSystem, "_put_file", put_file)
            yield done
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


# --- conditional writes (io) ------------------------------------------------------------------


def test_conditional_put_replaces_only_what_was_read(s3):
    uri = "s3://events/state/pointer.json"
    assert io.read_bytes_tagged(uri) is None
    io.write_bytes_if(b"v1", uri, None)  # created: nobody had
    with pytest.raises(io.WriteConflict, match="no object"):
        io.write_bytes_if(b"other", uri, None)  # a second creator does not overwrite the first
    data, tag = io.read_bytes_tagged(uri)
    assert data == b"v1"
    io.write_bytes_if(b"v2", uri, tag)
    with pytest.raises(io.WriteConflict, match=re.escape(tag)):
        io.write_bytes_if(b"stale", uri, tag)  # decided on v1, but v2 is there now
    assert io.read_bytes(uri) == b"v2"
    with pytest.raises(UserError, match="need an s3:// URI"):
        io.write_bytes_if(b"x", "/tmp/local.json", None)


# --- failures: retry later, or fix something ----------------------------------------------------------


@pytest.mark.parametrize("code, status, transient", [
    ("SlowDown", 503, True), ("InternalError", 500, True), ("ServiceUnavailable", 503, True),
    ("AccessDenied", 403, False), ("NoSuchBucket", 404, False), ("InvalidAccessKeyId", 403, False),
])
def test_an_s3_error_is_transient_or_a_user_error_by_what_s3_said(s3, code, status, transient):
    """s3fs turns botocore's ClientError into an OSError: the class still follows S3's answer."""
    import s3fs
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    s3.put_object(Bucket="events", Key="a.bin", Body=b"x")

    async def answer(self, *args, **kwargs):
        raise translate_boto_error(ClientError({"Error": {"Code": code, "Message": "from S3"},
                                                "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"))

    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(s3fs.S3FileSystem, "_cat_file", answer)
        with pytest.raises(Exception) as excinfo:
            io.read_bytes("s3://events/a.bin")
    s3fs.S3FileSystem.clear_instance_cache()
    expected = io.TransientStorageError if transient else UserError
    assert type(excinfo.value) is expected, repr(excinfo.value)
    assert str(excinfo.value).startswith("s3://events/a.bin: ") and "\n" not in str(excinfo.value)
    if transient:
        assert "cannot read from S3" in str(excinfo.value) and not isinstance(excinfo.value, UserError)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_cli_exits_75_when_s3_is_unreachable_and_2_when_the_object_is_missing(s3, tmp_path):
    """Schedulers retry the first (exit 75, EX_TEMPFAIL) and not the second (exit 2)."""
    (tmp_path / "params.yaml").write_text('as_of: "2026-11-21"\n')

    def ingest(endpoint: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}
        return subprocess.run([sys.executable, "-m", "pipelines", "ingest",
                               "--source", "s3://events/raw/events.parquet", "--out", str(tmp_path / "out.parquet")],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    down = ingest(f"http://127.0.0.1:{_free_port()}")
    assert down.returncode == 75, down.stderr[-2000:]
    assert down.stderr.strip().splitlines() == [down.stderr.strip()]  # one line, no traceback
    assert down.stderr.startswith("error (temporary, retry later): s3://events/raw/events.parquet: cannot")
    missing = ingest(os.environ["AWS_ENDPOINT_URL"])
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert missing.stderr.startswith("error: s3://events/raw/events.parquet: ")
    assert "not found" in missing.stderr


# --- the registry on S3 -----------------------------------------------------------------------


def test_failed_upload_midway_leaves_the_champion_on_the_previous_complete_version(s3, sim_features):
    registry = Registry(MODELS)
    model, record = fitted(sim_features)
    first = registry.register(model, record)
    promote(registry, first)
    expected = model.score(sim_features)

    other, record2 = fitted(sim_features, "robust_zscore")
    # the connection drops before the last object: every file of the version but meta.json is there
    with failing_upload_of("/meta.json") as uploaded, pytest.raises(io.TransientStorageError,
                                                                     match="cannot upload to S3"):
        registry.register(other, record2)
    assert any(k.endswith("/registry.json") for k in uploaded) and len(uploaded) >= 2
    second = next(k.split("/")[2] for k in keys(s3, "models/registry/") if not k.startswith(f"models/registry/{first}/"))
    assert f"models/registry/{second}/meta.json" not in keys(s3)
    assert not registry.exists(second)
    assert [m["version"] for m in registry.versions()] == [first]  # the half version is invisible
    with pytest.raises(UserError, match="not complete in the registry"):
        promote(registry, second)
    assert registry.champion_version() == first

    # a fresh reader (as another process would start) loads the champion from S3 and scores
    reader = Registry(MODELS)
    loaded = reader.load(reader.champion_version())
    np.testing.assert_allclose(loaded.score(sim_features), expected)

    # the retry uploads the whole version again, meta.json last, and then it can be promoted
    assert registry.register(other, record2) == second
    assert registry.exists(second)
    promote(registry, second)
    assert Registry(MODELS).champion_version() == second


def test_two_promoters_deciding_at_once_cannot_both_replace_the_champion(s3, sim_features):
    setup = Registry(MODELS)
    a_model, record = fitted(sim_features)
    b_model, _ = fitted(sim_features, "robust_zscore")
    c_model, _ = fitted(sim_features, "isolation_forest")
    a, b, c = (setup.register(m, record) for m in (a_model, b_model, c_model))

    # the very first champion: both see none; the second creator must not overwrite the first
    one, two = Registry(MODELS), Registry(MODELS)
    assert one.champion_version(required=False) is None and two.champion_version(required=False) is None
    one.record({"as_of": "2026-11-21", "candidate": a, "promoted": True, "reason": "no champion yet"})
    with pytest.raises(io.WriteConflict, match="rerun promote"):
        two.record({"as_of": "2026-11-21", "candidate": b, "promoted": True, "reason": "no champion yet"})
    assert Registry(MODELS).champion_version() == a

    # both measure against champion a; the first to write wins, the other is told and recorded
    one, two = Registry(MODELS), Registry(MODELS)
    assert one.champion_version() == two.champion_version() == a
    one.record({"as_of": "2026-11-22", "candidate": b, "promoted": True, "reason": "better than a"})
    with pytest.raises(io.WriteConflict, match="changed on S3 since it was read"):
        two.record({"as_of": "2026-11-22", "candidate": c, "promoted": True, "reason": "better than a"})
    assert Registry(MODELS).champion_version() == b
    decisions = {(d["candidate"], d["as_of"]): d for d in Registry(MODELS).decisions()}
    assert decisions[(c, "2026-11-22")]["promoted"] is False
    assert decisions[(c, "2026-11-22")]["applied"] is False
    assert "not applied" in decisions[(c, "2026-11-22")]["reason"]
    assert decisions[(b, "2026-11-22")]["promoted"] is True

    # rerun: the loser reads the new champion and its decision now applies
    two.champion_version()
    two.record({"as_of": "2026-11-22", "candidate": c, "promoted": True, "reason": "better than b"})
    assert Registry(MODELS).champion_version() == c


def test_the_gate_on_s3_promotes_then_keeps_the_champion(s3, sim, sim_features):
    """promote.gate end to end on S3 (reads, decides, conditional replace): a first model becomes
    champion, the same model again is not promoted and leaves champion.json alone."""
    from pipelines.promote import gate

    params = default_params()
    registry = Registry(MODELS)
    model, record = fitted(sim_features)
    version = registry.register(model, record)
    first = gate(registry, version, sim_features, sim[1], "2026-11-21", params)
    assert first["promoted"] and registry.champion_version() == version
    pointer = io.read_bytes_tagged(f"{MODELS}/champion.json")
    again = gate(Registry(MODELS), version, sim_features, sim[1], "2026-11-22", params)
    assert not again["promoted"]
    assert io.read_bytes_tagged(f"{MODELS}/champion.json") == pointer


def test_a_network_failure_while_the_gate_loads_the_champion_replaces_nothing(s3, sim, sim_features):
    """A champion that cannot be downloaded right now is not a champion that "cannot score": the
    gate stops with a transient error (retried later) instead of promoting the challenger unmeasured."""
    import s3fs
    from pipelines.promote import gate

    params = default_params()
    registry = Registry(MODELS)
    first, record = fitted(sim_features)
    champion = registry.register(first, record)
    promote(registry, champion)
    challenger = registry.register(fitted(sim_features, "robust_zscore")[0], record)

    real = s3fs.S3FileSystem._get_file

    async def connection_drops(self, rpath, lpath, *args, **kwargs):
        if f"/{champion}/" in rpath:  # the challenger downloads; the champion does not
            raise ConnectionResetError(f"connection reset while downloading {rpath}")
        return await real(self, rpath, lpath, *args, **kwargs)

    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(s3fs.S3FileSystem, "_get_file", connection_drops)
        with pytest.raises(io.TransientStorageError, match=f"{champion}: cannot download from S3"):
            gate(Registry(MODELS), challenger, sim_features, sim[1], "2026-11-22", params)
    s3fs.S3FileSystem.clear_instance_cache()
    assert Registry(MODELS).champion_version() == champion
    assert [d["candidate"] for d in Registry(MODELS).decisions()] == [champion]  # no decision taken


# --- credentials: boto's chain, never the parameters --------------------------------------------------


def test_credentials_and_endpoint_from_an_aws_profile(s3, tmp_path, monkeypatch):
    """No AWS_* key or endpoint variable: AWS_PROFILE names a profile whose config holds the
    endpoint and whose credentials file holds the key pair, and reads and writes reach the server."""
    import s3fs

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    for var in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var)
    (tmp_path / "aws-config").write_text(f"[profile lake]\nregion = us-east-1\nendpoint_url = {endpoint}\n")
    (tmp_path / "aws-credentials").write_text("[lake]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(UserError, match="Unable to locate credentials"):
        io.write_text("no profile yet", "s3://events/profile.txt")  # the control: nothing to sign with
    monkeypatch.setenv("AWS_PROFILE", "lake")
    s3fs.S3FileSystem.clear_instance_cache()
    io.write_text("via the profile", "s3://events/profile.txt")
    assert io.read_text("s3://events/profile.txt") == "via the profile"
    assert s3.get_object(Bucket="events", Key="profile.txt")["Body"].read() == b"via the profile"



_SECRET_KEY = re.compile(r"(secret|password|passwd|token|access_key|credential|api_key|private)", re.I)


def _keys_and_values(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{path}.{k}".lstrip("."), v
            yield from _keys_and_values(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _keys_and_values(v, f"{path}[{i}]")


def test_params_yaml_holds_no_credentials():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in _keys_and_values(params):
        assert not _SECRET_KEY.search(key.rsplit(".", 1)[-1]), f"params.yaml: {key} looks like a secret"
        if isinstance(value, str):
            assert not re.search(r"\bAKIA[0-9A-Z]{16}\b", value), f"params.yaml: {key} holds an AWS key id"
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), f"params.yaml: {key} holds a password in a URL"


# --- the CLI on S3: events read from the bucket, every artifact written to it ------------------------


@pytest.mark.slow
def test_the_daily_steps_read_events_from_s3_and_write_every_artifact_there(s3, tmp_path, sim):
    """`python -m pipelines <step>` in processes of their own, configured like a deployment: only
    the endpoint and boto's credential variables in the environment (the `s3` fixture's
    AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID=testing...), every storage root and the event source on
    s3://, and a working folder that must stay empty."""
    events, labels = sim
    day = "2026-11-21"
    io.write_parquet(events, "s3://events/raw/events.parquet")
    io.write_parquet(labels, "s3://events/raw/labels.parquet")
    work = tmp_path / "work"
    work.mkdir()
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "as_of": day,
        "storage": {"data": "s3://events/lake", "reports": "s3://events/reports", "models": "s3://events/models"},
        "ingest": {"source": "s3://events/raw/events.parquet"},
        "features": {"threads": 1},
        "score": {"top_k": 20},
        "warehouse": {"url": f"duckdb:///{tmp_path / 'warehouse.duckdb'}"},
    }))
    assert not _SECRET_KEY.search(params.read_text())  # credentials come from the environment only

    def step(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "pipelines", "--params", str(params), *args],
                              cwd=work, env=dict(os.environ), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    for name in ("ingest", "clean", "features"):
        step(name)
    trained = step("train")
    version = trained["model_version"]
    decision = step("promote", "--labels", "s3://events/raw/labels.parquet")
    assert decision["promoted"] and decision["champion_after"] == version
    scored = step("score")
    published = step("publish")

    stored = set(keys(s3))
    for dataset, name in (("ingested", "events"), ("clean", "events"), ("clean", "quarantine"),
                          ("features", "features"), ("scores", "scores")):
        assert f"lake/{dataset}/as_of={day}/{name}.parquet" in stored
    for report in ("clean_report.json", "features.json", "train.json", "promotion.json", "score.json"):
        assert f"reports/as_of={day}/{report}" in stored
    assert f"reports/as_of={day}/validation/scores/scores.json" in stored
    assert f"models/registry/{version}/meta.json" in stored and f"models/registry/{version}/registry.json" in stored
    assert json.loads(s3.get_object(Bucket="events", Key="models/champion.json")["Body"].read())["version"] == version
    assert list(work.iterdir()) == []  # nothing went to the local disk instead
    # the published run's reports under its own prefix, meta.json with it, the day's pointer to it
    snapshot = f"reports/runs/as_of={day}/run={published['run_id']}"
    assert published["reports"] == f"s3://events/{snapshot}"
    assert {f"{snapshot}/meta.json", f"{snapshot}/score.json", f"{snapshot}/report.html"} <= stored
    pointer = json.loads(s3.get_object(Bucket="events", Key=f"reports/as_of={day}/publish.json")["Body"].read())
    assert pointer["reports"] == published["reports"] and pointer["rows"] == 20

    scores = io.read_parquet(f"s3://events/lake/scores/as_of={day}/scores.parquet")
    features = io.read_parquet(f"s3://events/lake/features/as_of={day}/features.parquet", columns=["user_id"])
    assert scored["users_scored"] == len(scores) == scores["user_id"].nunique() == len(features) > 500
    assert scores["model_version"].eq(version).all() and scored["flagged"] == int(scores["flagged"].sum()) == 20
    abusers = set(labels.loc[labels["is_anomaly"].astype(bool), "user_id"])
    assert len(set(scores.loc[scores["flagged"], "user_id"]) & abusers) >= 10  # it found abusers, not noise
