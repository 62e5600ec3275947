"""The deployment artefacts, checked against the service they deploy: every metric and label
the Grafana dashboard and the Prometheus alerts use is one a live /metrics exports, every
PromQL expression parses, and the compose file, Prometheus, Grafana and the Dockerfile agree
on ports, hosts, paths, volumes and settings. (They cannot run here: no container engine.)"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hirag_oz.api.app import create_app
from hirag_oz.config import load_settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from tests.conftest import ServerThread, free_port, keyed_settings
from tests.vision_samples import page_of_paragraphs, png_bytes

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KEY = "deploy-key"
PAGE = [["Budget of the Lyon depot."]]
AUTH = {"Authorization": f"Bearer {KEY}"}
# Series Prometheus makes itself, not the service.
PROMETHEUS_OWN = {"up": {"job", "instance"}}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


# ----------------------------------------------------------------------------- live metrics
@pytest.fixture(scope="module")
def exported(
    model: OnnxMiniLMEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, set[str] | None]:
    """Every series name /metrics exports, with its label names (None: no sample yet, so
    labels unknown), after exercising each part of the service once."""
    data = tmp_path_factory.mktemp("deploy")
    # A summarizer endpoint where nothing listens: prompt builds fall back to the extractive
    # summary, and the summarizer's calls and breaker get samples.
    settings = keyed_settings(
        data,
        KEY,
        summarizer={"endpoint": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 0},
    )
    with (
        ServerThread(create_app(settings, model=model)) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as http,
    ):
        http.post("/api/v1/contexts", json={"text": "Deploys happen on Tuesdays"})
        http.post("/api/v1/contexts/search", json={"query": "deploys", "max_tokens": 100})
        http.post(
            "/api/v1/context/build",
            json={
                "query": "When do deploys happen?",
                "system_prompt": "You help.",
                "running_brief": "Deploy notes. " * 2000,
            },
        )
        http.post(
            "/api/v1/facts",
            json={"subject": "a", "predicate": "b", "object": "c", "confidence": 0.9},
        )
        httpx.get(server.url + "/api/v1/contexts/x")  # a 401
        job = http.post(
            "/api/v1/vision/index",
            files={"file": ("d.png", png_bytes(page_of_paragraphs(PAGE).image), "image/png")},
        ).json()
        while http.get(f"/api/v1/vision/index/jobs/{job['job_id']}").json()["status"] not in (
            "succeeded",
            "failed",
        ):
            time.sleep(0.1)
        text = http.get("/metrics").text
    found: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            found.setdefault(family.name + suffix, None)
        for sample in family.samples:
            labels = found.get(sample.name) or set()
            found[sample.name] = labels | set(sample.labels)
    return found


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names it matches on) of every selector, and `by`/`on` labels as
    ("", labels); raises ValueError when the expression does not parse."""
    out: list[tuple[str, set[str]]] = []

    def walk(node: Any) -> None:
        kind = type(node).__name__
        if kind == "VectorSelector":
            labels = {m.name for m in node.matchers.matchers} if node.matchers else set()
            out.append((node.name, labels - {"__name__"}))
        modifier = getattr(node, "modifier", None)
        if kind == "AggregateExpr" and modifier is not None:
            out.append(("", set(modifier.labels)))
        for attr in ("lhs", "rhs", "expr", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None:
                walk(child)
        for child in getattr(node, "args", None) or []:
            walk(child)

    walk(promql_parser.parse(expr))
    return out


def check_expr(expr: str, exported: dict[str, set[str] | None]) -> list[str]:
    problems = []
    used = selectors(expr)
    known_labels: set[str] = {"le"}
    labels_unknown = False
    for name, labels in used:
        if not name:
            continue
        own = PROMETHEUS_OWN.get(name)
        series = own if own is not None else exported.get(name, "missing")
        if series == "missing":
            problems.append(f"{name}: not exported")
            continue
        if series is None:
            labels_unknown = True  # exported, but no sample yet to show its labels
            continue
        known_labels |= set(series)
        unknown = labels - set(series) - {"le"}
        if unknown:
            problems.append(f"{name}: no label {sorted(unknown)}")
    for name, labels in used:
        if not name and not labels_unknown and labels - known_labels:
            problems.append(f"grouping by unknown labels {sorted(labels - known_labels)}")
    return problems


def test_the_expression_checker_catches_mistakes(exported: dict[str, set[str] | None]) -> None:
    assert check_expr("rate(hirag_http_requests_total[5m])", exported) == []
    assert check_expr("rate(hirag_http_request_total[5m])", exported) == [
        "hirag_http_request_total: not exported"
    ]
    assert check_expr('hirag_http_requests_total{code="500"}', exported) == [
        "hirag_http_requests_total: no label ['code']"
    ]
    assert check_expr("sum by (agent) (hirag_http_requests_total)", exported) == [
        "grouping by unknown labels ['agent']"
    ]
    with pytest.raises(ValueError):
        selectors("sum(rate(hirag_http_requests_total[5m])")


# ------------------------------------------------------------------------------ dashboard
def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def test_the_dashboard_queries_only_exported_metrics(exported: dict[str, set[str] | None]) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "request rate",
        "errors",
        "latency",
        "token budget",
        "fallback",
        "cache hit",
        "breaker",
        "ocr",
    ):
        assert topic in titles, topic
    problems = []
    for title, expr in dashboard_exprs():
        concrete = expr.replace("$__rate_interval", "5m")
        problems += [f"{title}: {p}" for p in check_expr(concrete, exported)]
    assert problems == []


# --------------------------------------------------------------------------------- alerts
def test_alert_rules_are_valid_and_use_exported_metrics(
    exported: dict[str, set[str] | None],
) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    [group] = rules["groups"]
    names = [r["alert"] for r in group["rules"]]
    assert len(names) == len(set(names))
    duration = re.compile(r"^\d+[smhd]$")
    problems = []
    for rule in group["rules"]:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert duration.match(rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"]
        problems += [f"{rule['alert']}: {p}" for p in check_expr(rule["expr"], exported)]
    assert problems == []
    covered = " ".join(names)
    for topic in (
        "ErrorRate",
        "LatencySLO",
        "CircuitBreakerOpen",
        "NotReady",
        "RateLimitSaturation",
    ):
        assert topic in covered, topic


def test_the_slo_buckets_exist(exported: dict[str, set[str] | None]) -> None:
    """The latency SLO reads the 0.25 s bucket: the service's histogram must have one."""
    from hirag_oz.observability.metrics import LATENCY_BUCKETS

    assert 0.25 in LATENCY_BUCKETS
    text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert 'le="0.25"' in text


# ------------------------------------------------------------------ compose and its config
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    out = {}
    for key, value in env.items():
        text = str(value)
        # ${VAR:?message} takes a value at `docker compose up`; give it one here.
        out[key] = re.sub(r"\$\{(\w+):\?[^}]*\}", "a-key", text)
    return out


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of each volume."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        out[target] = source
    return out


def test_compose_configures_the_service_through_its_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = compose()
    services = spec["services"]
    hirag = services["hirag"]
    env = service_env(hirag)
    for key in list(__import__("os").environ):
        if key.startswith("HIRAG_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()  # raises on any key or value the service does not accept
    assert settings.server.api_keys and settings.server.host == "0.0.0.0"
    # The service talks to a Qdrant node of the compose file, on its HTTP port.
    url = httpx.URL(settings.vector_db.url or "")
    assert url.host in services and services[url.host]["image"].startswith("qdrant/qdrant")
    assert url.port == 6333
    assert (settings.vector_db.shard_number, settings.vector_db.replication_factor) == (3, 2)
    # Published port and data volume match the settings.
    published = [str(p).split(":") for p in hirag["ports"]]
    assert [container for _, container in published] == [str(settings.server.port)]
    volume = mounts(hirag)[str(settings.server.data_dir)]
    assert volume in spec["volumes"]
    assert (
        hirag["build"]["context"] == ".."
        and (DEPLOY / ".." / hirag["build"]["dockerfile"]).is_file()
    )


def test_compose_runs_a_three_node_qdrant_cluster() -> None:
    spec = compose()
    nodes = {name: s for name, s in spec["services"].items() if name.startswith("qdrant-")}
    assert len(nodes) == 3
    bootstrap = None
    for name, node in nodes.items():
        env = node["environment"]
        assert env["QDRANT__CLUSTER__ENABLED"] == "true"
        p2p = env["QDRANT__CLUSTER__P2P__PORT"]
        command = node["command"]
        assert command[command.index("--uri") + 1] == f"http://{name}:{p2p}"
        if "--bootstrap" in command:
            bootstrap = command[command.index("--bootstrap") + 1]
            assert node["depends_on"] == ["qdrant-1"]
        volume = mounts(node)["/qdrant/storage"]
        assert volume in spec["volumes"]
    assert (
        bootstrap
        == f"http://qdrant-1:{nodes['qdrant-1']['environment']['QDRANT__CLUSTER__P2P__PORT']}"
    )
    assert len({mounts(n)["/qdrant/storage"] for n in nodes.values()}) == 3


def test_prometheus_and_grafana_point_at_the_compose_services() -> None:
    spec = compose()
    services = spec["services"]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    prom_mounts = mounts(services["prometheus"])
    for rule_file in prom["rule_files"]:
        assert rule_file in prom_mounts and (DEPLOY / prom_mounts[rule_file]).is_file()
    config_flag = next(
        a for a in services["prometheus"]["command"] if a.startswith("--config.file=")
    )
    assert (DEPLOY / prom_mounts[config_flag.split("=", 1)[1]]).samefile(
        DEPLOY / "prometheus" / "prometheus.yml"
    )
    hirag_port = service_env(services["hirag"])["HIRAG_SERVER__PORT"]
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    [targets] = [c["targets"] for c in jobs["hirag-oz"]["static_configs"]]
    assert targets == [f"hirag:{hirag_port}"] and jobs["hirag-oz"]["metrics_path"] == "/metrics"
    for target in jobs["qdrant"]["static_configs"][0]["targets"]:
        assert target.split(":")[0] in services

    grafana = services["grafana"]
    g_mounts = mounts(grafana)
    provisioning = DEPLOY / g_mounts["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    prom_port = str(services["prometheus"]["ports"][0]).split(":")[1]
    assert source["url"] == f"http://prometheus:{prom_port}"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "hirag-oz.yml").read_text())[
        "providers"
    ]
    dashboard_target = next(t for t in g_mounts if t.endswith(".json"))
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])
    assert (DEPLOY / g_mounts[dashboard_target]).samefile(DEPLOY / "grafana" / "dashboard.json")
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    [variable] = dashboard["templating"]["list"]
    assert variable["current"]["value"] == source["uid"]


# ------------------------------------------------------------------------------ Dockerfile
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_image_runs_as_a_user_and_matches_the_settings() -> None:
    steps = dockerfile()
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [w for w, _ in steps][-1] == "CMD"
    env = {}
    for word, args in steps:
        if word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
    assert [args for word, args in steps if word == "EXPOSE"] == [env["HIRAG_SERVER__PORT"]]
    assert json.loads(next(a for w, a in steps if w == "VOLUME")) == [env["HIRAG_SERVER__DATA_DIR"]]
    installs = " ".join(a for w, a in steps if w == "RUN")
    assert '"torch==2.13.0"' in installs and "tesseract-ocr" in installs
    # The server and the client distribution it depends on, from this checkout.
    assert installs.index("torch==2.13.0") < installs.index('pip install ./client ".')
    assert ("COPY", "client ./client") in steps


@pytest.fixture
def healthcheck() -> list[str]:
    [args] = [a for w, a in dockerfile() if w == "HEALTHCHECK"]
    command: list[str] = json.loads(args[args.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_the_healthcheck_passes_on_a_live_service_and_fails_without_one(
    healthcheck: list[str], model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    with ServerThread(create_app(keyed_settings(tmp_path, KEY), model=model)) as server:
        ok = subprocess.run(
            healthcheck,
            env={"HIRAG_SERVER__PORT": str(server.port)},
            capture_output=True,
            timeout=30,
        )
        assert ok.returncode == 0, ok.stderr
    down = subprocess.run(
        healthcheck, env={"HIRAG_SERVER__PORT": str(free_port())}, capture_output=True, timeout=30
    )
    assert down.returncode != 0
