"""The compose files as docker-compose v1 (Debian's package, 1.29) merges them: the production stack,
the CPU override, the metrics wiring, no secrets, and Prometheus targets that exist.

``docker-compose config`` needs no Docker engine. It runs with a minimal environment and an empty
env file, so no variable of this machine (or a developer's ``.env``) leaks into the result; v1 needs
no FLOWER_USER/FLOWER_PASSWORD for ``config``: Flower's ``:?`` checks are escaped (``$$``) and run
in the container's shell, not in compose.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BASE = ("docker-compose.yml",)
CPU = ("docker-compose.yml", "docker-compose.cpu.yml")
APP_SERVICES = {"web", "capture", "worker-gpu", "worker-llm", "worker-default", "beat", "flower"}
WORKERS = {"worker-gpu", "worker-llm", "worker-default"}
BASE_SERVICES = APP_SERVICES | {"redis", "postgres", "prometheus"}
NOT_APPS = {"redis", "postgres", "prometheus"}
SECRET_NAME = re.compile(r"KEY|TOKEN|PASSWORD|SECRET")


TOKEN_ENV = {
    "TRAFFIC_AUTH_TOKEN": "compose-test-token",
    "REDIS_PASSWORD": "compose-test-redis-pass",
    "POSTGRES_PASSWORD": "compose-test-pg-pass",
}
"""The secrets compose requires (the web server is published; Redis and PostgreSQL have passwords): given
for ``config``."""


def _run_config(files: tuple[str, ...], tmp: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f … config`` of ``files`` with only ``extra_env`` set; fails (not skips) without it."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: apt-get install docker-compose (scripts/bootstrap.sh --dev does)")
    env_file = tmp / "empty.env"
    env_file.write_text("")
    args = [binary, "--env-file", str(env_file)]
    for name in files:
        args += ["-f", str(ROOT / name)]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8", **extra_env}
    return subprocess.run([*args, "config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _compose_config(files: tuple[str, ...], tmp: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    """``docker-compose -f … config`` of ``files``, parsed."""
    proc = _run_config(files, tmp, extra_env)
    assert proc.returncode == 0, f"docker-compose {' '.join(files)} config failed:\n{proc.stderr}"
    config = yaml.safe_load(proc.stdout)
    assert isinstance(config, dict) and isinstance(config.get("services"), dict), proc.stdout
    return config


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The merged production config."""
    services: dict[str, Any] = _compose_config(BASE, tmp_path_factory.mktemp("compose-base"), TOKEN_ENV)["services"]
    return services


@pytest.fixture(scope="module")
def cpu(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The merged config with the CPU override."""
    services: dict[str, Any] = _compose_config(CPU, tmp_path_factory.mktemp("compose-cpu"), TOKEN_ENV)["services"]
    return services


def _active(services: dict[str, Any]) -> dict[str, Any]:
    """The services a plain ``up`` starts: v1's ``config`` also lists those behind a profile, v2's does not."""
    return {name: svc for name, svc in services.items() if not svc.get("profiles")}


def _command(svc: dict[str, Any]) -> list[str]:
    command = svc.get("command") or []
    return [str(part) for part in command] if isinstance(command, list) else str(command).split()


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def _devices(svc: dict[str, Any]) -> list[dict[str, Any]]:
    resources = (svc.get("deploy") or {}).get("resources") or {}
    return list((resources.get("reservations") or {}).get("devices") or [])


def _published_ports(svc: dict[str, Any]) -> set[int]:
    published = set()
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published") is not None:
                published.add(int(port["published"]))
        else:
            parts = str(port).split(":")
            if len(parts) > 1:
                published.add(int(parts[-2]))
    return published


def _mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in svc.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            source, _, rest = str(volume).partition(":")
            mounts.append((source, rest.split(":")[0]))
    return mounts


def _detectors(services: dict[str, Any]) -> dict[str, Any]:
    """Active services that consume the ``gpu`` queue."""
    found = {}
    for name, svc in _active(services).items():
        command = _command(svc)
        if "worker" in command and "-Q" in command and command[command.index("-Q") + 1] == "gpu":
            found[name] = svc
    return found


def _flag_value(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def test_service_set(base: dict[str, Any], cpu: dict[str, Any]) -> None:
    assert set(base) == BASE_SERVICES
    assert not any(svc.get("profiles") for svc in base.values()), "a plain `up` must start the whole stack"
    assert set(_active(cpu)) == BASE_SERVICES - {"worker-gpu"} | {"worker-cpu"}
    if "worker-gpu" in cpu:  # v1 lists it, behind the profile that keeps `up` from starting it
        assert cpu["worker-gpu"]["profiles"] == ["gpu"]


def test_postgres_keeps_the_incident_history_in_a_volume(base: dict[str, Any]) -> None:
    postgres = base["postgres"]
    assert "/var/lib/postgresql/data" in [target for _, target in _mounts(postgres)]
    env = _env(postgres)
    assert env["POSTGRES_PASSWORD"] == TOKEN_ENV["POSTGRES_PASSWORD"] and env["POSTGRES_DB"] == "traffic"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert not postgres.get("ports"), "the database is for the compose network only"


@pytest.mark.parametrize("which", ["base", "cpu"])
def test_evidence_is_one_volume_that_writers_and_the_web_server_share(
    which: str, request: pytest.FixtureRequest
) -> None:
    services = _active(request.getfixturevalue(which))
    detector = "worker-cpu" if which == "cpu" else "worker-gpu"
    for name in ("web", "capture", "worker-default", detector):
        env = _env(services[name])
        assert env["TRAFFIC_EVIDENCE_DIR"] == "/app/var/evidence", name
        assert ("evidence", "/app/var/evidence") in _mounts(services[name]), name
        assert env["TRAFFIC_PRIVACY_BLUR"] == "false", name


def test_redis_is_durable_and_never_evicts(base: dict[str, Any]) -> None:
    command = _command(base["redis"])
    assert command[:2] == ["sh", "-c"]
    server = command[2].split("| ", 1)[1].split()
    assert server[:2] == ["redis-server", "-"], "configuration (the password) comes on stdin"
    assert _flag_value(server, "--appendonly") == "yes"
    assert _flag_value(server, "--maxmemory-policy") == "noeviction"
    assert "/data" in [target for _, target in _mounts(base["redis"])]


@pytest.mark.parametrize("which", ["base", "cpu"])
def test_redis_has_a_password_that_every_client_uses(which: str, request: pytest.FixtureRequest) -> None:
    services = _active(request.getfixturevalue(which))
    redis_svc = services["redis"]
    password = TOKEN_ENV["REDIS_PASSWORD"]
    assert _env(redis_svc)["REDIS_PASSWORD"] == password
    line = " ".join(_command(redis_svc))
    assert "requirepass" in line and password not in line, "the password is not on the command line"
    assert "REDISCLI_AUTH" in " ".join(redis_svc["healthcheck"]["test"])
    clients = {name: _env(svc).get("REDIS_URL") for name, svc in services.items() if name not in NOT_APPS}
    assert clients and all(url == f"redis://:{password}@redis:6379/0" for url in clients.values()), clients


@pytest.mark.parametrize("which", ["base", "cpu"])
def test_app_services_share_one_image(which: str, request: pytest.FixtureRequest) -> None:
    services = _active(request.getfixturevalue(which))
    apps = {name: svc for name, svc in services.items() if name not in NOT_APPS}
    assert set(apps) == (APP_SERVICES if which == "base" else APP_SERVICES - {"worker-gpu"} | {"worker-cpu"})
    images = {(svc.get("image"), str((svc.get("build") or {}).get("context"))) for svc in apps.values()}
    gpu = {("traffic:gpu", str(ROOT))} if which == "base" else set()
    assert images == {("traffic:latest", str(ROOT))} | gpu, images
    if which == "base":
        assert apps["worker-gpu"]["build"]["args"] == {"TARGET": "gpu"}, "the GPU image adds TensorRT"
        assert not any((svc.get("build") or {}).get("args") for name, svc in apps.items() if name != "worker-gpu")
    for name, svc in apps.items():
        assert svc.get("restart") == "unless-stopped", name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert _env(svc)["REDIS_URL"] == f"redis://:{TOKEN_ENV['REDIS_PASSWORD']}@redis:6379/0", name
        database = f"postgresql+psycopg://traffic:{TOKEN_ENV['POSTGRES_PASSWORD']}@postgres:5432/traffic"
        assert _env(svc)["TRAFFIC_DATABASE_URL"] == database, name


@pytest.mark.parametrize("which", ["base", "cpu"])
def test_health_checks(which: str, request: pytest.FixtureRequest) -> None:
    services = _active(request.getfixturevalue(which))
    workers = {name for name in services if name.startswith("worker-")}
    assert len(workers) == 3
    for name in {"redis", "postgres", "web", "flower"} | workers:
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no health check"
    for name in workers:
        node = _flag_value(_command(services[name]), "-n").split("@")[0]
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert "inspect ping" in probe and f"-d {node}@" in probe, f"{name} pings another node: {probe}"


def test_gpu_worker_reserves_an_nvidia_gpu(base: dict[str, Any]) -> None:
    detectors = _detectors(base)
    assert set(detectors) == {"worker-gpu"}
    devices = _devices(base["worker-gpu"])
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert _env(base["worker-gpu"])["TRAFFIC_DEVICE"] == "cuda:0"
    assert _flag_value(_command(base["worker-gpu"]), "-P") == "solo"
    others = [name for name, svc in base.items() if name != "worker-gpu" and _devices(svc)]
    assert others == [], f"only the detector reserves devices: {others}"


def test_cpu_override_detector_has_no_gpu(base: dict[str, Any], cpu: dict[str, Any]) -> None:
    detectors = _detectors(cpu)
    assert set(detectors) == {"worker-cpu"}, "exactly one detector, and not the GPU one, starts with the override"
    detector = detectors["worker-cpu"]
    assert _devices(detector) == [], "the CPU detector must not reserve a GPU"
    assert not any(_devices(svc) for svc in _active(cpu).values())
    assert _env(detector)["TRAFFIC_DEVICE"] == "cpu"
    # The same worker as worker-gpu otherwise (the override cannot share docker-compose.yml's anchors).
    gpu = base["worker-gpu"]
    assert _command(detector) == _command(gpu)
    assert {k: v for k, v in _env(detector).items() if k != "TRAFFIC_DEVICE"} == {
        k: v for k, v in _env(gpu).items() if k != "TRAFFIC_DEVICE"
    }
    for key in ("healthcheck", "tmpfs", "expose", "restart", "depends_on"):
        assert detector.get(key) == gpu.get(key), key
    assert sorted(map(str, detector["volumes"])) == sorted(map(str, gpu["volumes"]))  # v1 lists them in any order
    assert detector["image"] == "traffic:latest" and gpu["image"] == "traffic:gpu", "the CPU image runs OpenVINO"
    assert _env(detector)["TRAFFIC_DETECTOR_BACKEND"] == "auto"
    assert any(str(v).endswith(":/app/var/models") or "models" in str(v) for v in detector["volumes"])
    # Prometheus (and people) keep reaching the detector as worker-gpu.
    assert "worker-gpu" in detector["networks"]["default"]["aliases"]


@pytest.mark.parametrize("which", ["base", "cpu"])
def test_the_detector_reads_camera_geometry_from_the_hosts_config_directory(
    which: str, request: pytest.FixtureRequest
) -> None:
    services: dict[str, Any] = request.getfixturevalue(which)
    for name, detector in _detectors(services).items():
        assert _env(detector)["TRAFFIC_GEOMETRY_FILE"] == "", name  # none unless the operator names one
        config = [source for source, target in _mounts(detector) if target == "/app/config"]
        assert len(config) == 1 and Path(config[0]).name == "config", (name, config)
        assert any(str(v).endswith(":ro") or (isinstance(v, dict) and v.get("read_only")) for v in detector["volumes"])


def test_flower_requires_basic_auth_from_the_environment(base: dict[str, Any]) -> None:
    flower = base["flower"]
    line = " ".join(_command(flower))
    assert "celery -A workers flower" in line and "--port=5555" in line
    assert re.search(r"\$+\{FLOWER_USER:\?[^}]*\}", line) and re.search(r"\$+\{FLOWER_PASSWORD:\?[^}]*\}", line), line
    assert "--basic-auth" not in line, "credentials never on a command line"
    assert re.search(r"FLOWER_BASIC_AUTH=\"\$+FLOWER_USER:\$+FLOWER_PASSWORD\" exec celery", line), line
    env = _env(flower)
    assert env["FLOWER_USER"] == "" and env["FLOWER_PASSWORD"] == ""
    assert 5555 in _published_ports(flower)


@pytest.mark.parametrize("which", ["base", "cpu"])
def test_published_ports_are_on_loopback_by_default(which: str, request: pytest.FixtureRequest) -> None:
    published = {
        name: [str(port) for port in svc.get("ports") or []]
        for name, svc in _active(request.getfixturevalue(which)).items()
    }
    assert {name for name, ports in published.items() if ports} == {"web", "flower", "prometheus"}
    for name, ports in published.items():
        for port in ports:
            assert port.startswith("127.0.0.1:") or "host_ip: 127.0.0.1" in port or "'host_ip': '127.0.0.1'" in port, (
                name,
                port,
            )


@pytest.mark.parametrize("missing", sorted(TOKEN_ENV))
@pytest.mark.parametrize("files", [BASE, CPU])
def test_compose_refuses_to_run_without_a_required_secret(files: tuple[str, ...], missing: str, tmp_path: Path) -> None:
    proc = _run_config(files, tmp_path, {name: value for name, value in TOKEN_ENV.items() if name != missing})
    assert proc.returncode != 0 and f"set {missing}" in proc.stderr


@pytest.mark.parametrize("which", ["base", "cpu"])
def test_worker_metrics_wiring(which: str, request: pytest.FixtureRequest) -> None:
    services = _active(request.getfixturevalue(which))
    workers = {name: svc for name, svc in services.items() if name.startswith("worker-")}
    assert set(workers) == (WORKERS if which == "base" else WORKERS - {"worker-gpu"} | {"worker-cpu"})
    for name, svc in workers.items():
        env = _env(svc)
        assert env["TRAFFIC_METRICS_PORT"] == "9800", name
        assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus", name
        assert "/tmp/prometheus" in [str(t).split(":")[0] for t in svc.get("tmpfs") or []], name
        assert not svc.get("ports"), f"{name} publishes ports; its exporter is for the compose network only"
    for name, svc in services.items():
        assert 9800 not in _published_ports(svc), name
        if name not in workers:
            # prometheus-client would switch these processes (Flower too) to files in a missing folder.
            assert "PROMETHEUS_MULTIPROC_DIR" not in _env(svc), name


@pytest.mark.parametrize("which", ["base", "cpu"])
def test_secrets_come_only_from_the_environment(which: str, request: pytest.FixtureRequest) -> None:
    services = request.getfixturevalue(which)
    seen = 0
    for name, svc in services.items():
        for var, value in _env(svc).items():
            if SECRET_NAME.search(var):
                seen += 1
                expected = TOKEN_ENV.get(var, "")
                assert value == expected, f"{name}: {var} has a value the environment did not set"
    assert seen >= 3  # DASHSCOPE_API_KEY, TRAFFIC_AUTH_TOKEN, FLOWER_PASSWORD at least


@pytest.mark.parametrize("filename", CPU)
def test_secret_variables_are_empty_default_substitutions(filename: str) -> None:
    """In the files as written: `NAME: ${NAME:-}`, never a literal (anchors resolved by the YAML loader)."""
    raw = yaml.safe_load((ROOT / filename).read_text())
    seen = 0
    for name, svc in raw["services"].items():
        for var, value in _env(svc).items():
            if SECRET_NAME.search(var):
                seen += 1
                substitution = value == f"${{{var}:-}}" or value.startswith(f"${{{var}:?")
                assert substitution, f"{filename} {name}: {var} must be ${{{var}:-}} or ${{{var}:?…}}, is {value!r}"
    assert seen >= 1


@pytest.mark.parametrize("which", ["base", "cpu"])
def test_prometheus_scrapes_only_services_that_exist(which: str, request: pytest.FixtureRequest) -> None:
    services = _active(request.getfixturevalue(which))
    names = set(services)
    for svc in services.values():
        for network in (svc.get("networks") or {}).values():
            names.update((network or {}).get("aliases") or [])
    assert (str(ROOT / "deploy" / "prometheus.yml"), "/etc/prometheus/prometheus.yml") in _mounts(
        services["prometheus"]
    )
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert {"traffic-web", "traffic-workers", "flower"} <= set(jobs)
    targets = [t for job in jobs.values() for sc in job.get("static_configs", []) for t in sc["targets"]]
    for target in targets:
        host, _, port = target.rpartition(":")
        assert host in names, f"prometheus target {target} is not a service of {which}"
        assert port.isdigit(), target
    workers = sorted(jobs["traffic-workers"]["static_configs"][0]["targets"])
    assert workers == ["worker-default:9800", "worker-gpu:9800", "worker-llm:9800"]
    assert "basic_auth" not in jobs["flower"], "Flower 2.2 serves /metrics without auth (see the comment there)"
