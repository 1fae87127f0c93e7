"""S3 credentials from an Airflow connection (dags/pipelines_tasks.export_aws_connection): with no
AWS credentials anywhere else, a task process that exports the connection reads and writes the
moto S3 server (tests/conftest.py's `s3`); the environment wins over the connection; secrets are
never logged. Each case runs in a process of its own, as a task does, because Airflow reads its
configuration once per process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from airflow_env import DAGS, airflow_env

SECRET = "s3cr3t-from-the-connection"

TASK = f"""
import json, sys
sys.path.insert(0, {str(DAGS)!r})
import pipelines_tasks
from pipelines import io

exported = pipelines_tasks.export_aws_connection()
try:
    io.write_text("written by a task", "s3://events/from-task.txt")
    result = {{"exported": exported, "read": io.read_text("s3://events/hello.txt")}}
except Exception as exc:
    result = {{"exported": exported, "error": str(exc)}}
print("RESULT " + json.dumps(result))
"""


def _task(tmp_path, **env: str) -> tuple[dict, str]:
    # nothing of the test's own AWS settings: the connection must be the only source
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update(AWS_EC2_METADATA_DISABLED="true",  # no instance role to fall back on (and no wait)
                AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
                AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"))
    full = airflow_env(tmp_path / "airflow_home", base=base, **env)
    proc = subprocess.run([sys.executable, "-c", TASK], env=full, cwd=tmp_path, capture_output=True, text=True,
                          timeout=180)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), output


def _connection(endpoint: str, **extra: str) -> str:
    return json.dumps({"conn_type": "aws", "login": "testing", "password": SECRET,
                       "extra": {"endpoint_url": endpoint, "region_name": "us-east-1", **extra}})


@pytest.fixture
def hello(s3):
    s3.put_object(Bucket="events", Key="hello.txt", Body=b"hello from S3")
    return os.environ["AWS_ENDPOINT_URL"]


def test_a_task_reads_and_writes_s3_with_the_aws_default_connection(hello, s3, tmp_path):
    result, output = _task(tmp_path, AIRFLOW_CONN_AWS_DEFAULT=_connection(hello))
    assert result == {"read": "hello from S3",
                      "exported": ["AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                                   "AWS_SECRET_ACCESS_KEY"]}
    assert s3.get_object(Bucket="events", Key="from-task.txt")["Body"].read() == b"written by a task"
    assert "S3 settings from Airflow connection aws_default" in output
    assert SECRET not in output


def test_without_a_connection_there_are_no_credentials(hello, tmp_path):
    """The control: the same task with no connection cannot sign a request, so the first test's
    success came from the connection."""
    result, _ = _task(tmp_path, AWS_ENDPOINT_URL=hello)
    assert result["exported"] == []
    assert "Unable to locate credentials" in result["error"]


def test_the_connection_id_is_configurable_and_the_environment_wins(hello, tmp_path):
    result, output = _task(tmp_path, PIPELINES_AWS_CONN_ID="lake_s3",
                           AIRFLOW_CONN_LAKE_S3=_connection(hello, aws_session_token="tok-from-connection"),
                           AWS_ACCESS_KEY_ID="from-env", AWS_SECRET_ACCESS_KEY="from-env-secret")
    # a key pair already in the environment is kept whole: only endpoint and region come from the connection
    assert result == {"read": "hello from S3", "exported": ["AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"]}
    assert "S3 settings from Airflow connection lake_s3" in output
    assert SECRET not in output and "tok-from-connection" not in output
