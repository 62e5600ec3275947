"""/api/v1/vision on the real server: uploads, path and URL guards, jobs, search, decode."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hirag_oz.api.app import create_app
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz.vision.ocr import tesseract_available
from tests.conftest import ServerThread, keyed_settings
from tests.fake_http import JsonHandler, serving
from tests.vision_samples import page_of_paragraphs, png_bytes, text_pdf

pytestmark = pytest.mark.skipif(not tesseract_available(), reason="tesseract is not installed")

KEY = "vision-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
INDEX = "/api/v1/vision/index"
LINES = [["Invoice 4471 total amount due", "is 1,284.50 EUR by the end of June."]]


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    return folder


@pytest.fixture
def make_server(model: OnnxMiniLMEmbedder, tmp_path: Path, docs: Path) -> Iterator[Any]:
    running: list[ServerThread] = []

    def make(**vision: object) -> ServerThread:
        settings = keyed_settings(
            tmp_path / "data", KEY, vision={"allowed_paths": [docs], **vision}
        )
        server = ServerThread(create_app(settings, model=model)).__enter__()
        running.append(server)
        return server

    yield make
    for server in running:
        server.__exit__(None, None, None)


def client(server: ServerThread) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=HEADERS, timeout=60)


def wait_job(http: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = http.get(f"{INDEX}/jobs/{job_id}")
        assert response.status_code == 200
        job: dict[str, Any] = response.json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError("job did not finish")


def envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "details"} and body["code"] == code
    return body


def test_upload_index_search_decode(make_server: Any) -> None:
    server = make_server()
    with client(server) as http:
        png = png_bytes(page_of_paragraphs(LINES).image)
        accepted = http.post(
            INDEX,
            files={"file": ("invoice.png", png, "image/png")},
            data={"metadata": json.dumps({"customer": "acme"}), "agent_id": "ops"},
        )
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["status"] in ("queued", "running")
        job = wait_job(http, accepted.json()["job_id"])
        assert job["status"] == "succeeded" and job["regions"] == 1
        assert job["progress"] == {"pages_done": 1, "pages_total": 1}
        assert job["source"] == "invoice.png" and job["doc_id"].startswith("doc_")

        found = http.post(
            "/api/v1/vision/search",
            json={
                "query": "total amount due",
                "agent_id": "ops",
                "filters": {"metadata": {"customer": "acme"}},
            },
        )
        assert found.status_code == 200
        [region] = found.json()["regions"]
        assert region["page"] == 1 and region["type"] == "text" and region["has_vt"]
        assert region["bbox"]["x"] >= 140 and region["bbox"]["w"] > 400
        assert '"amount"' in region["why_relevant"]
        assert (
            http.post("/api/v1/vision/search", json={"query": "total amount due"}).json()["regions"]
            == []
        ), "another agent's regions are not visible"

        rid = region["region_id"]
        decoded = http.post(
            "/api/v1/vision/decode",
            json={"region_ids": [rid, rid], "fidelity": "1x", "agent_id": "ops"},
        )
        assert decoded.status_code == 200
        results = decoded.json()["results"]
        assert [r["region_id"] for r in results] == [rid, rid]
        assert " ".join(results[0]["text"].split()) == " ".join(" ".join(LINES[0]).split())
        assert results[0]["fidelity"] == "1x" and results[0]["backend"] == "tesseract"
        assert results[0]["tokens"] == region["token_estimate"]

        envelope(
            http.post("/api/v1/vision/decode", json={"region_ids": [rid], "fidelity": "3x"}),
            422,
            "VALIDATION_ERROR",
        )
        envelope(
            http.post("/api/v1/vision/decode", json={"region_ids": [rid] * 17}),
            422,
            "VALIDATION_ERROR",
        )
        envelope(http.post("/api/v1/vision/decode", json={"region_ids": [rid]}), 404, "NOT_FOUND")
        envelope(
            http.post("/api/v1/vision/search", json={"query": "x", "top_k": 51}),
            422,
            "VALIDATION_ERROR",
        )
        envelope(http.get(f"{INDEX}/jobs/job_{'f' * 32}"), 404, "NOT_FOUND")
        envelope(http.get(f"{INDEX}/jobs/../../etc"), 404, "NOT_FOUND")

        metrics = http.get("/metrics").text
        assert 'hirag_vision_jobs_total{outcome="succeeded"} 1.0' in metrics
        assert 'hirag_vision_pages_total{outcome="ok"} 1.0' in metrics
        assert (
            'hirag_ocr_duration_seconds_count{backend="tesseract",fidelity="page"} 1.0' in metrics
        )
        assert 'hirag_ocr_duration_seconds_count{backend="tesseract",fidelity="1x"} 1.0' in metrics
        assert "hirag_vision_decode_cache_hits_total 0.0" in metrics
        health = http.get("/health").json()
        [ocr] = [c for c in health["components"] if c["name"] == "ocr_engine"]
        assert ocr["status"] == "healthy" and ocr["message"].startswith("tesseract 5")


def test_bad_uploads_are_4xx_and_store_nothing(make_server: Any) -> None:
    server = make_server()
    with client(server) as http:
        envelope(
            http.post(INDEX, files={"file": ("a.txt", b"plain text", "text/plain")}),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        )
        envelope(
            http.post(INDEX, files={"other": ("a.png", b"x", "image/png")}), 422, "VALIDATION_ERROR"
        )
        png = png_bytes(page_of_paragraphs(LINES).image)
        envelope(
            http.post(INDEX, files={"file": ("a.png", png, "image/png")}, data={"metadata": "[1]"}),
            422,
            "VALIDATION_ERROR",
        )
        envelope(
            http.post(
                INDEX, files={"file": ("a.png", png, "image/png")}, data={"force_reindex": "maybe"}
            ),
            422,
            "VALIDATION_ERROR",
        )
        envelope(
            http.post(INDEX, content=b"doc", headers={"Content-Type": "text/plain"}),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        )
        envelope(
            http.post(INDEX, content=b"{not json", headers={"Content-Type": "application/json"}),
            400,
            "VALIDATION_ERROR",
        )
        envelope(
            http.post(INDEX, json={"doc_url": "ftp://example.com/a.pdf"}), 422, "VALIDATION_ERROR"
        )
        envelope(http.post(INDEX, json={"url": "x"}), 422, "VALIDATION_ERROR")
        assert http.get("/metrics").text.count("hirag_vision_jobs_total{") == 0


def test_file_urls_inside_allowed_paths_only(make_server: Any, docs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.pdf"
    outside.write_bytes(text_pdf([["A secret outside the allowed folder."]]))
    inside = docs / "report.pdf"
    inside.write_bytes(text_pdf([["The allowed report talks about the Porto depot budget."]]))
    os.symlink(outside, docs / "link.pdf")
    server = make_server()
    with client(server) as http:
        for url in (
            f"file://{outside}",
            f"file://{docs}/../secret.pdf",
            f"file://{docs / 'link.pdf'}",
            "file:///etc/passwd",
            f"file://otherhost{inside}",
        ):
            body = envelope(http.post(INDEX, json={"doc_url": url}), 403, "FORBIDDEN")
            assert "allowed" in body["message"] or "local path" in body["message"]
        envelope(http.post(INDEX, json={"doc_url": f"file://{docs}/missing.pdf"}), 404, "NOT_FOUND")
        accepted = http.post(INDEX, json={"doc_url": f"file://{inside}", "metadata": {"k": 1}})
        assert accepted.status_code == 202
        job = wait_job(http, accepted.json()["job_id"])
        assert job["status"] == "succeeded" and job["source"] == "report.pdf"
        again = wait_job(
            http, http.post(INDEX, json={"doc_url": f"file://{inside}"}).json()["job_id"]
        )
        assert again["reused"] and again["doc_id"] == job["doc_id"]
        forced = http.post(INDEX, json={"doc_url": f"file://{inside}", "force_reindex": True})
        assert not wait_job(http, forced.json()["job_id"])["reused"]


class _Documents(JsonHandler):
    """Serves /doc.png, /page.html, /big.png (over the limit), /slow.png, /redirect."""

    png = b""

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/doc.png")
            self.end_headers()
            return
        if self.path == "/slow.png":
            time.sleep(3)
        body, kind = self.png, "image/png"
        if self.path == "/page.html":
            body, kind = b"<html>hello</html>", "text/html"
        if self.path == "/big.png":
            body = self.png + b"\0" * (2 * 1024 * 1024)
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def documents_site() -> Iterator[str]:
    _Documents.png = png_bytes(page_of_paragraphs(LINES).image)
    with serving(_Documents) as port:
        yield f"http://127.0.0.1:{port}"


def test_urls_are_guarded_and_fetched_with_limits(make_server: Any, documents_site: str) -> None:
    strict = make_server()
    with client(strict) as http:
        body = envelope(
            http.post(INDEX, json={"doc_url": f"{documents_site}/doc.png"}), 403, "FORBIDDEN"
        )
        assert body["details"]["address"] == "127.0.0.1"
        envelope(http.post(INDEX, json={"doc_url": "http://10.1.2.3/doc.pdf"}), 403, "FORBIDDEN")
        envelope(http.post(INDEX, json={"doc_url": "http://[::1]/doc.pdf"}), 403, "FORBIDDEN")
    strict.__exit__(None, None, None)

    open_ = make_server(allow_private_urls=True, max_document_mb=1, download_timeout_secs=1)
    with client(open_) as http:

        def run(path: str) -> dict[str, Any]:
            accepted = http.post(INDEX, json={"doc_url": f"{documents_site}{path}"})
            assert accepted.status_code == 202, accepted.text
            return wait_job(http, accepted.json()["job_id"])

        ok = run("/redirect")
        assert ok["status"] == "succeeded" and ok["regions"] == 1
        html = run("/page.html")
        assert html["status"] == "failed" and html["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
        big = run("/big.png")
        assert big["status"] == "failed" and big["error"]["code"] == "PAYLOAD_TOO_LARGE"
        slow = run("/slow.png")
        assert slow["status"] == "failed" and slow["error"]["code"] == "TIMEOUT"
        metrics = http.get("/metrics").text
        assert 'hirag_vision_jobs_total{outcome="failed"} 3.0' in metrics


def test_finished_jobs_survive_a_restart(make_server: Any, docs: Path) -> None:
    (docs / "a.pdf").write_bytes(text_pdf([["Budget figures for the Lyon warehouse renovation."]]))
    first = make_server()
    with client(first) as http:
        job = wait_job(
            http, http.post(INDEX, json={"doc_url": f"file://{docs / 'a.pdf'}"}).json()["job_id"]
        )
    first.__exit__(None, None, None)
    second = make_server()
    with client(second) as http:
        again = http.get(f"{INDEX}/jobs/{job['job_id']}").json()
        assert again == job
        hits = http.post("/api/v1/vision/search", json={"query": "Lyon renovation budget"}).json()
        assert hits["regions"][0]["doc_id"] == job["doc_id"]


def test_the_python_client_drives_the_vision_routes(make_server: Any) -> None:
    from hirag_oz.client import Client
    from hirag_oz_client.models import RegionFilters

    server = make_server()
    png = png_bytes(page_of_paragraphs(LINES).image)
    with Client(server.url, KEY) as api:
        job = api.upload_document(png, "invoice.png", metadata={"batch": 7})
        while job.status not in ("succeeded", "failed"):
            time.sleep(0.1)
            job = api.get_job(job_id=job.job_id)
        assert job.status == "succeeded" and job.regions == 1
        hits = api.search_regions(
            query="amount due", top_k=3, filters=RegionFilters(metadata={"batch": 7})
        )
        [region] = hits.regions
        decoded = api.decode_regions(region_ids=[region.region_id], fidelity="5x")
        assert decoded.results[0].fidelity == "5x" and "1,284.50" in decoded.results[0].text
        from hirag_oz import errors

        with pytest.raises(errors.PermissionDeniedError):
            api.index_document(doc_url="file:///etc/passwd")


def test_the_deepseek_backend_through_the_server(make_server: Any) -> None:
    from tests.fake_ocr import READ_TEXT, running_fake_ocr

    with running_fake_ocr() as fake:
        server = make_server(
            engine="deepseek",
            deepseek={"endpoint": fake.url, "max_retries": 0, "timeout_secs": 0.5},
        )
        with client(server) as http:
            health = http.get("/health").json()
            [ocr] = [c for c in health["components"] if c["name"] == "ocr_engine"]
            assert ocr["message"] == "deepseek"
            png = png_bytes(page_of_paragraphs(LINES).image)
            accepted = http.post(INDEX, files={"file": ("scan.png", png, "image/png")})
            job = wait_job(http, accepted.json()["job_id"])
            assert job["status"] == "succeeded" and job["regions"] >= 1
            [grounding] = fake.seen
            assert "<|grounding|>" in grounding.prompt
            rid = http.post("/api/v1/vision/search", json={"query": "revenue grew"}).json()[
                "regions"
            ][0]["region_id"]
            ok = http.post("/api/v1/vision/decode", json={"region_ids": [rid], "fidelity": "10x"})
            assert ok.status_code == 200 and ok.json()["results"][0]["text"] == READ_TEXT
            assert ok.json()["results"][0]["backend"] == "deepseek"

            fake.default = "500"
            failed = http.post(
                "/api/v1/vision/decode", json={"region_ids": [rid], "fidelity": "5x"}
            )
            envelope(failed, 502, "UPSTREAM_ERROR")
            fake.default = "slow"
            slow = http.post("/api/v1/vision/decode", json={"region_ids": [rid], "fidelity": "20x"})
            envelope(slow, 504, "TIMEOUT")
            fake.default = "500"
            statuses = [
                http.post(
                    "/api/v1/vision/decode", json={"region_ids": [rid], "fidelity": "1x"}
                ).status_code
                for _ in range(6)
            ]
            assert statuses[-1] == 503 and set(statuses) <= {502, 503}
            sent = len(fake.seen)
            envelope(
                http.post("/api/v1/vision/decode", json={"region_ids": [rid], "fidelity": "1x"}),
                503,
                "UPSTREAM_ERROR",
            )
            assert len(fake.seen) == sent, "an open breaker sends nothing"
            # The cached 10x answer is still served while the backend is down.
            cached = http.post(
                "/api/v1/vision/decode", json={"region_ids": [rid], "fidelity": "10x"}
            )
            assert cached.status_code == 200
            metrics = http.get("/metrics").text
            assert 'hirag_circuit_breaker_state{breaker="vision_ocr"} 2.0' in metrics
            assert "hirag_vision_decode_cache_hits_total 1.0" in metrics
