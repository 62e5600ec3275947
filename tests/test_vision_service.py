"""The vision service on real components: Tesseract, PDFium, the MiniLM model, the embedded
store. Documents are rendered by the tests (tests/vision_samples.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rapidfuzz.distance import Levenshtein

from hirag_oz.config import VisionSettings
from hirag_oz.embeddings.cache import CachedEmbedder
from hirag_oz.errors import NotFoundError, ValidationError, wire
from hirag_oz.store.edge import EdgeStore
from hirag_oz.tokens import TokenCounter
from hirag_oz.vision import Job, RegionFilters, VisionService
from hirag_oz.vision.ocr import OcrEngine, TesseractEngine, tesseract_available
from tests.vision_samples import (
    page_of_paragraphs,
    page_with_table_code_figure,
    png_bytes,
    scanned_pdf,
    text_pdf,
)

pytestmark = pytest.mark.skipif(not tesseract_available(), reason="tesseract is not installed")

PARAGRAPHS = [
    [
        ["Quarterly report of the north office.", "Revenue grew by twelve percent."],
        ["The warehouse in Lyon shipped", "four hundred pallets in May."],
    ],
    [
        ["Minutes of the board meeting on safety.", "The fire drill is moved to Friday."],
        ["Invoice 4471 total amount due", "is 1,284.50 EUR by the end of June."],
    ],
]

MakeService = Callable[..., VisionService]


@pytest.fixture
def make_service(
    tmp_path: Path, embedder: CachedEmbedder, counter: TokenCounter
) -> Iterator[MakeService]:
    made: list[VisionService] = []
    stores: dict[Path, EdgeStore] = {}

    def make(
        data_dir: Path = tmp_path,
        engine: OcrEngine | str | None = "tesseract",
        start: bool = True,
        **settings: object,
    ) -> VisionService:
        store = stores.get(data_dir)
        if store is None:
            store = stores[data_dir] = EdgeStore(data_dir / "qdrant")
        service = VisionService(
            VisionSettings(**settings),  # type: ignore[arg-type]
            data_dir,
            store,
            embedder,
            counter,
            TesseractEngine() if engine == "tesseract" else engine,  # type: ignore[arg-type]
            start=start,
        )
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()
    for store in stores.values():
        store.close()


def wait_for(service: VisionService, job_id: str, timeout: float = 120.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.job(job_id)
        if job.finished:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def accuracy(expected: str, got: str) -> float:
    """1 - character error rate, whitespace normalised."""
    a, b = " ".join(expected.split()), " ".join(got.split())
    return 1.0 - Levenshtein.distance(a, b) / max(1, len(a))


def overlap(box: dict[str, int] | tuple[int, int, int, int], drawn: tuple[int, ...]) -> float:
    """Share of the drawn box covered by the found box."""
    if isinstance(box, dict):
        x, y, r, b = box["x"], box["y"], box["x"] + box["w"], box["y"] + box["h"]
    else:
        x, y, r, b = box
    dx, dy, dr, db = drawn
    w = max(0, min(r, dr) - max(x, dx))
    h = max(0, min(b, db) - max(y, dy))
    return w * h / ((dr - dx) * (db - dy))


@pytest.fixture(scope="module")
def scanned() -> tuple[bytes, list]:  # type: ignore[type-arg]
    pages = [page_of_paragraphs(p) for p in PARAGRAPHS]
    return scanned_pdf([p.image for p in pages]), pages


def test_a_scanned_pdf_is_indexed_and_search_finds_the_page_and_box(
    make_service: MakeService,
    scanned: tuple[bytes, list],  # type: ignore[type-arg]
) -> None:
    data, pages = scanned
    service = make_service()
    seen: list[tuple[int, int | None]] = []
    job = service.index_bytes(
        data,
        "scan.pdf",
        metadata={"topic": "ops"},
        progress=lambda j: seen.append((j.pages_done, j.pages_total)),
    )
    assert job.status == "succeeded", job.error
    assert (job.pages_done, job.pages_total, job.regions) == (2, 2, 4)
    assert seen[-1] == (2, 2) and (1, 2) in seen
    assert job.page_errors == []

    hits = service.search("amount due on the invoice", 3)
    best = hits[0].region
    assert best.page == 2
    assert overlap(best.bbox.to_dict(), pages[1].drawn[1].box) > 0.9
    assert best.type == "text" and best.text_layer is False
    # The PDF stores the page in points; rendered back at 200 dpi it may gain a pixel.
    assert abs(best.page_width - pages[1].image.width) <= 1
    assert abs(best.page_height - pages[1].image.height) <= 1
    assert best.token_estimate > 5 and best.has_vt
    assert '"invoice"' in hits[0].why_relevant and '"due"' in hits[0].why_relevant
    assert hits[0].score > hits[1].score

    hits = service.search("pallets shipped from the warehouse", 2)
    assert hits[0].region.page == 1
    assert overlap(hits[0].region.bbox.to_dict(), pages[0].drawn[1].box) > 0.9

    only_page_1 = service.search("invoice amount due", 5, filters=RegionFilters(page=1))
    assert only_page_1 and {h.region.page for h in only_page_1} == {1}
    by_metadata = service.search("invoice", 5, filters=RegionFilters(metadata={"topic": "ops"}))
    assert len(by_metadata) == 4
    assert service.search("invoice", 5, filters=RegionFilters(metadata={"topic": "x"})) == []
    assert service.search("invoice", 5, agent_id="someone-else") == []


def test_decode_accuracy_falls_with_fidelity(
    make_service: MakeService,
    scanned: tuple[bytes, list],  # type: ignore[type-arg]
) -> None:
    data, pages = scanned
    service = make_service()
    assert service.index_bytes(data, "scan.pdf").status == "succeeded"
    hit = service.search("amount due on the invoice", 1)[0]
    expected = pages[1].drawn[1].text
    scores = {}
    for fidelity in ("1x", "5x", "10x", "20x"):
        [result] = service.decode([hit.region.region_id], fidelity)  # type: ignore[list-item]
        assert result.fidelity == fidelity and result.backend == "tesseract"
        scores[fidelity] = (accuracy(expected, result.text), result.confidence)
    assert scores["1x"][0] == 1.0 and scores["1x"][1] > 0.8
    assert scores["5x"][0] >= 0.95
    assert scores["20x"][0] < 0.5 and scores["20x"][1] < scores["1x"][1]
    accuracies = [scores[f][0] for f in ("1x", "5x", "10x", "20x")]
    assert accuracies == sorted(accuracies, reverse=True)


def test_decode_keeps_order_caches_and_checks_input(
    make_service: MakeService,
    scanned: tuple[bytes, list],  # type: ignore[type-arg]
) -> None:
    data, _ = scanned
    service = make_service(max_regions_per_request=4)
    service.index_bytes(data, "scan.pdf")
    ids = [h.region.region_id for h in service.search("report", 4)]
    asked = [ids[2], ids[0], ids[2]]
    first = service.decode(asked, "5x")
    assert [r.region_id for r in first] == asked
    assert first[0].text == first[2].text and not first[1].cached
    again = service.decode(asked, "5x")
    assert all(r.cached for r in again)
    # A region asked twice in one call is decoded (and looked up) once.
    assert (service.cache.misses, service.cache.hits) == (2, 2)
    with pytest.raises(ValidationError):
        service.decode([*ids, ids[0]], "5x")
    with pytest.raises(ValidationError):
        service.decode([ids[0]], "3x")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError) as missing:
        service.decode([ids[0], "00000000-0000-0000-0000-000000000000", "nope"], "1x")
    assert missing.value.details["region_ids"] == ["00000000-0000-0000-0000-000000000000", "nope"]
    with pytest.raises(NotFoundError):
        service.decode([ids[0]], "1x", agent_id="someone-else")


def test_a_text_layer_is_exact_at_1x_and_ocr_below(make_service: MakeService) -> None:
    paragraph = (
        "The quarterly audit of the Porto depot found 17 damaged crates and 3 missing forms."
    )
    data = text_pdf([[paragraph, "A second paragraph about something else entirely."]])
    service = make_service()
    job = service.index_bytes(data, "audit.pdf")
    assert job.status == "succeeded" and job.regions == 2
    hit = service.search("damaged crates at the depot", 1)[0]
    assert hit.region.text_layer and hit.region.text == paragraph
    [exact] = service.decode([hit.region.region_id], "1x")
    assert (exact.text, exact.confidence, exact.backend) == (paragraph, 1.0, "text_layer")
    [ocr] = service.decode([hit.region.region_id], "5x")
    assert ocr.backend == "tesseract" and accuracy(paragraph, ocr.text) > 0.8


def test_tables_code_and_figures_are_typed(make_service: MakeService) -> None:
    sample = page_with_table_code_figure()
    service = make_service()
    assert service.index_bytes(png_bytes(sample.image), "page.png").status == "succeeded"
    found = {h.region.type: h.region for h in service.search("warehouse pallets delay", 10)}
    assert set(found) == {"text", "table", "code", "figure"}
    for kind, drawn in zip(("text", "table", "code", "figure"), sample.drawn, strict=True):
        assert overlap(found[kind].bbox.to_dict(), drawn.box) > 0.85, kind
    table = service.search("Gdansk pallets", 1, filters=RegionFilters(types=("table",)))[0]
    assert "Gdansk | 931 | 1 day" in table.region.text
    code = service.search("def total(items)", 1, filters=RegionFilters(types=("code",)))[0]
    assert code.region.text.splitlines()[0] == "def total(items):"
    assert code.region.text.splitlines()[1].startswith("    count")


def test_the_same_content_is_not_indexed_twice_unless_forced(
    make_service: MakeService,
    scanned: tuple[bytes, list],  # type: ignore[type-arg]
) -> None:
    data, _ = scanned
    service = make_service()
    first = service.index_bytes(data, "scan.pdf")
    again = service.index_bytes(data, "copy.pdf")
    assert again.reused and again.status == "succeeded"
    assert (again.doc_id, again.regions, again.pages_done) == (first.doc_id, 4, 2)
    forced = service.index_bytes(data, "scan.pdf", force_reindex=True)
    assert not forced.reused and forced.regions == 4
    assert service.count() == 4
    other_agent = service.index_bytes(data, "scan.pdf", agent_id="team-b")
    assert not other_agent.reused and service.count() == 8


def test_a_failing_page_is_reported_and_the_job_goes_on(make_service: MakeService) -> None:
    """Without an OCR engine a scanned page cannot be read: that page is reported, the page
    with a text layer is indexed, and the job succeeds with its page errors."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(170, 6, "This page has a text layer about the annual budget review.")
    pdf.add_page()
    pdf.image(page_of_paragraphs(PARAGRAPHS[1]).image, x=0, y=0, w=210)
    service = make_service(engine=None)
    job = service.index_bytes(bytes(pdf.output()), "mixed.pdf")
    assert job.status == "succeeded" and job.regions == 1
    assert [(e["page"], e["code"]) for e in job.page_errors] == [(2, "UPSTREAM_ERROR")]
    assert "no OCR engine" in job.page_errors[0]["message"]
    only_scanned = service.index_bytes(
        scanned_pdf([page_of_paragraphs(PARAGRAPHS[0]).image]), "s.pdf"
    )
    assert only_scanned.status == "failed" and only_scanned.error is not None
    assert only_scanned.error["message"].startswith("every page failed")


def test_unreadable_documents_fail_the_job_with_an_envelope(make_service: MakeService) -> None:
    service = make_service()
    broken = service.index_bytes(b"%PDF-1.7 this is not really a pdf", "broken.pdf")
    assert broken.status == "failed" and broken.error is not None
    assert broken.error["code"] == "VALIDATION_ERROR"
    with pytest.raises(Exception) as unsupported:
        service.submit_upload(b"hello, plain text", "notes.txt")
    assert wire(unsupported.value).status == 415


def test_a_restart_requeues_unfinished_jobs_and_keeps_finished_ones(
    tmp_path: Path,
    make_service: MakeService,
    scanned: tuple[bytes, list],  # type: ignore[type-arg]
) -> None:
    data, _ = scanned
    first = make_service(tmp_path)
    finished = first.index_bytes(data, "done.pdf")
    # Stopped while a job runs: the job stops after its page and waits for the next start.
    many = scanned_pdf([page_of_paragraphs(PARAGRAPHS[i % 2]).image for i in range(6)])
    running = first.submit_upload(many, "many.pdf")
    deadline = time.monotonic() + 60
    while first.job(running.job_id).pages_done < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.close()
    left = first.job(running.job_id)
    assert left.status == "queued" and left.pages_done == 0
    # A process killed mid-job leaves it "running" on disk.
    killed = Job.from_dict(
        {
            **left.to_dict(),
            "job_id": "job_" + "0" * 32,
            "status": "running",
            "pages_done": 3,
            "source": str(tmp_path / "vision" / "uploads" / ("job_" + "0" * 32 + ".bin")),
        }
    )
    Path(killed.source).write_bytes(png_bytes(page_of_paragraphs(PARAGRAPHS[1]).image))
    first.jobs.save(killed)

    second = make_service(tmp_path)
    assert second.job(finished.job_id).status == "succeeded"
    resumed = wait_for(second, running.job_id)
    assert resumed.status == "succeeded" and resumed.attempts == 2
    assert (resumed.pages_done, resumed.pages_total) == (6, 6)
    recovered = wait_for(second, killed.job_id)
    assert recovered.status == "succeeded" and recovered.regions == 2
    assert not Path(killed.source).exists()


def test_the_job_queue_is_bounded(make_service: MakeService) -> None:
    from hirag_oz.errors import RateLimitedError

    service = make_service(max_pending_jobs=1, workers=1)
    page = png_bytes(page_of_paragraphs(PARAGRAPHS[0]).image)
    first = service.submit_upload(page, "a.png")
    with pytest.raises(RateLimitedError) as refused:
        service.submit_upload(page, "b.png")
    assert refused.value.details == {"max_pending": 1} and refused.value.retry_after > 0
    assert list((service.uploads_dir).iterdir()) == [service.uploads_dir / f"{first.job_id}.bin"]
    assert wait_for(service, first.job_id).status == "succeeded"
    assert service.queue.pending() == 0
    second = service.submit_upload(page, "b.png")
    assert wait_for(service, second.job_id).reused
