"""OCR decode accuracy by fidelity, on pages of clean rendered text.

Run from the repository root:

    python bench/ocr_fidelity.py [--pages 6] [--seed 7] [--engine auto|tesseract|rapidocr] [--out PATH]

1. Renders `--pages` A4 pages at 200 dpi: paragraphs of generated English sentences (names,
   numbers, amounts, dates, punctuation) in DejaVu Sans at 33 px, the height of 12 pt text at
   200 dpi. Each paragraph's text and ink box are known.
2. Indexes them as one scanned PDF through the real pipeline (`VisionService`: PDFium, the
   configured OCR engine, layout, MiniLM, the embedded store).
3. Matches every region to the paragraph it covers, and decodes it at 1x, 5x, 10x and 20x
   (the region image resampled to 1/1, 1/5, 1/10, 1/20 of its pixel area before OCR).
4. Prints and saves, per fidelity: character accuracy (1 - Levenshtein distance / length of the
   true text, whitespace normalised), mean confidence, and decode time per region. Writes
   bench/results/ocr_fidelity-<timestamp>.json and a PNG chart of accuracy and confidence
   against fidelity next to it.

Targets: 1x character accuracy >= 98%; accuracy non-increasing from 1x to 20x.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein
from rich.table import Table

from hirag_oz.config import Settings
from hirag_oz.service import Hirag
from hirag_oz.vision.models import FIDELITIES
from store_search import console, fmt_ms, machine_info, pass_fail, percentiles, write_report

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_PX = 33
PAGE = (1654, 2339)
MARGIN = 150
TARGET_1X = 0.98

NAMES = ["Amelia", "Jonas", "Priya", "Mateo", "Ingrid", "Tomasz", "Leila", "Oscar", "Yuki", "Nadia"]
CITIES = ["Lyon", "Porto", "Gdansk", "Bergen", "Valencia", "Utrecht", "Tallinn", "Graz"]
ITEMS = ["steel brackets", "paper rolls", "solar panels", "coffee beans", "glass bottles"]
MONTHS = ["January", "March", "April", "June", "August", "October", "November"]
TEMPLATES = [
    "{name} shipped {n} pallets of {item} to {city} on {day} {month}.",
    "Invoice {inv} for {city} totals {amount} EUR and is due by {day} {month}.",
    "The audit found {small} damaged crates and {small2} missing forms in {city}.",
    "Revenue grew by {pct} percent while costs in {city} stayed near {amount} EUR.",
    "{name} asked whether the {item} order (ref. {inv}) could move to {month}.",
    "Delivery windows in {city} run from {hour}:00 to {hour2}:30 on weekdays.",
]


def sentence(rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(
        name=rng.choice(NAMES),
        city=rng.choice(CITIES),
        item=rng.choice(ITEMS),
        month=rng.choice(MONTHS),
        day=rng.randint(1, 28),
        n=rng.randint(12, 990),
        inv=rng.randint(1000, 9999),
        amount=f"{rng.randint(1, 99)},{rng.randint(100, 999)}.{rng.randint(10, 99)}",
        small=rng.randint(2, 40),
        small2=rng.randint(2, 9),
        pct=rng.randint(2, 30),
        hour=rng.randint(6, 11),
        hour2=rng.randint(13, 19),
    )


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def render_pages(
    count: int, seed: int
) -> tuple[list[Image.Image], list[list[tuple[str, tuple[int, int, int, int]]]]]:
    """Pages and, per page, each paragraph's text and ink box."""
    rng = random.Random(seed)
    font = ImageFont.truetype(FONT, FONT_PX)
    images, truths = [], []
    for _ in range(count):
        image = Image.new("RGB", PAGE, "white")
        draw = ImageDraw.Draw(image)
        y, paragraphs = MARGIN, []
        while True:
            text = " ".join(sentence(rng) for _ in range(rng.randint(2, 3)))
            lines = wrap(text, font, PAGE[0] - 2 * MARGIN)
            height = len(lines) * int(FONT_PX * 1.35)
            if y + height > PAGE[1] - MARGIN:
                break
            boxes = []
            for line in lines:
                draw.text((MARGIN, y), line, font=font, fill="black")
                boxes.append(draw.textbbox((MARGIN, y), line, font=font))
                y += int(FONT_PX * 1.35)
            box = (
                int(min(b[0] for b in boxes)),
                int(min(b[1] for b in boxes)),
                int(max(b[2] for b in boxes)),
                int(max(b[3] for b in boxes)),
            )
            paragraphs.append((" ".join(lines), box))
            y += FONT_PX * 2
        images.append(image)
        truths.append(paragraphs)
    return images, truths


def accuracy(truth: str, text: str) -> float:
    a, b = " ".join(truth.split()), " ".join(text.split())
    return max(0.0, 1.0 - Levenshtein.distance(a, b) / max(1, len(a)))


def covered(found: dict[str, int], box: tuple[int, int, int, int]) -> float:
    x, y = max(found["x"], box[0]), max(found["y"], box[1])
    r = min(found["x"] + found["w"], box[2])
    b = min(found["y"] + found["h"], box[3])
    return max(0, r - x) * max(0, b - y) / ((box[2] - box[0]) * (box[3] - box[1]))


def chart(rows: list[dict[str, Any]], path: Path, engine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["fidelity"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(
        labels, [r["accuracy_mean"] * 100 for r in rows], marker="o", label="character accuracy"
    )
    ax.plot(
        labels,
        [r["confidence_mean"] * 100 for r in rows],
        marker="s",
        linestyle="--",
        label="confidence",
    )
    ax.axhline(TARGET_1X * 100, color="grey", linewidth=0.8, linestyle=":", label="1x target (98%)")
    ax.set_ylim(0, 102)
    ax.set_xlabel("fidelity (pixel area divided by)")
    ax.set_ylabel("%")
    ax.set_title(f"OCR decode by fidelity ({engine}, 33 px text at 200 dpi)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--engine", choices=["auto", "tesseract", "rapidocr"], default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path("bench/results") / f"ocr_fidelity-{stamp}.json"

    images, truths = render_pages(args.pages, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            server={"data_dir": Path(tmp)},  # type: ignore[arg-type]
            hirag={"maintenance_enabled": False},  # type: ignore[arg-type]
            vision={"engine": args.engine},  # type: ignore[arg-type]
        )
        parts = Hirag(settings)
        try:
            vision = parts.documents
            if vision.engine is None:
                console.print("no OCR engine is installed (tesseract or rapidocr)")
                return 2
            engine = vision.engine.name + (f" {getattr(vision.engine, 'version', '')}".rstrip())
            from io import BytesIO

            pdf = BytesIO()
            first, *rest = images
            first.save(pdf, format="PDF", save_all=True, append_images=rest, resolution=200.0)
            started = time.perf_counter()
            job = vision.index_bytes(pdf.getvalue(), "bench.pdf")
            index_secs = time.perf_counter() - started
            if job.status != "succeeded":
                console.print(f"indexing failed: {job.error}")
                return 1
            regions = [
                p
                for p in vision.backend.scroll(vision.collection, None, 100_000)
                if p.payload["doc_id"] == job.doc_id
            ]
            pairs = []
            for point in regions:
                page = int(point.payload["page"])
                best = max(truths[page - 1], key=lambda t: covered(point.payload["bbox"], t[1]))
                if covered(point.payload["bbox"], best[1]) > 0.5:
                    pairs.append((point.id, best[0]))
            paragraphs = sum(len(t) for t in truths)
            rows = []
            for fidelity in FIDELITIES:
                accs, confs, times = [], [], []
                for region_id, truth in pairs:
                    t0 = time.perf_counter()
                    [result] = vision.decode([region_id], fidelity)
                    times.append((time.perf_counter() - t0) * 1000)
                    accs.append(accuracy(truth, result.text))
                    confs.append(result.confidence)
                rows.append(
                    {
                        "fidelity": fidelity,
                        "regions": len(pairs),
                        "accuracy_mean": round(statistics.fmean(accs), 4),
                        "accuracy_min": round(min(accs), 4),
                        "confidence_mean": round(statistics.fmean(confs), 4),
                        "decode_ms": percentiles(times),
                    }
                )
        finally:
            parts.close()

    accs = [r["accuracy_mean"] for r in rows]
    ok_1x = accs[0] >= TARGET_1X
    monotone = all(a >= b for a, b in itertools.pairwise(accs))
    table = Table(
        title=f"OCR decode by fidelity - {engine}, {len(pairs)} regions on {args.pages} pages"
    )
    for column in ("fidelity", "char accuracy", "min", "confidence", "decode p50", "p95"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["fidelity"],
            f"{r['accuracy_mean']:.2%}",
            f"{r['accuracy_min']:.2%}",
            f"{r['confidence_mean']:.2f}",
            fmt_ms(r["decode_ms"]["p50_ms"]),
            fmt_ms(r["decode_ms"]["p95_ms"]),
        )
    console.print(table)
    console.print(
        f"indexing: {args.pages} pages in {index_secs:.1f} s ({args.pages / index_secs:.2f} pages/s), "
        f"{len(regions)} regions, {len(pairs)} matched to {paragraphs} paragraphs"
    )
    console.print(f"1x accuracy >= {TARGET_1X:.0%}: {pass_fail(ok_1x)}")
    console.print(f"accuracy non-increasing from 1x to 20x: {pass_fail(monotone)}")
    png = out.with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    chart(rows, png, engine)
    report = {
        "bench": "ocr_fidelity",
        "when": stamp,
        "machine": machine_info(),
        "engine": engine,
        "pages": args.pages,
        "seed": args.seed,
        "font_px": FONT_PX,
        "index_secs": round(index_secs, 3),
        "regions": len(regions),
        "paragraphs": paragraphs,
        "matched": len(pairs),
        "fidelities": rows,
        "targets": {"accuracy_1x": TARGET_1X, "pass_1x": ok_1x, "non_increasing": monotone},
        "chart": str(png),
    }
    write_report(out, report)
    console.print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
