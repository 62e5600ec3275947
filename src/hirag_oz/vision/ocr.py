"""The OcrEngine port, fidelity resampling, and the local Tesseract engine."""

from __future__ import annotations

import math
import os
import shutil
from collections import defaultdict
from typing import Protocol

from PIL import Image

from hirag_oz.vision.models import BBox, Fidelity, OcrLine, OcrText, OcrWord, compression


class OcrEngine(Protocol):
    """Reads text from page and region images."""

    name: str

    def lines(self, image: Image.Image) -> list[OcrLine]:
        """Every text line of a page image, top to bottom, with word boxes in the image's
        pixels and word confidences in 0..1."""
        ...

    def read(self, image: Image.Image, fidelity: Fidelity) -> OcrText:
        """The text of one region image, given at full resolution. A local engine resamples
        it to the fidelity's pixel area first (`resample`); a remote engine may map the
        fidelity to resolution modes of its own."""
        ...

    def close(self) -> None: ...


def resample(image: Image.Image, fidelity: Fidelity) -> Image.Image:
    """`image` with 1/k of its pixel area for fidelity "kx" (each side scaled by 1/sqrt(k)),
    area-averaged: the optical-compression trade-off, fewer pixels for less precision."""
    k = compression(fidelity)
    if k == 1:
        return image
    scale = 1.0 / math.sqrt(k)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX)


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


class TesseractEngine:
    """Tesseract 5 through pytesseract: word boxes and confidences from `image_to_data`."""

    name = "tesseract"

    def __init__(self, language: str = "eng", timeout_secs: float = 120.0) -> None:
        import pytesseract

        # Tesseract's OpenMP threads contend for the cores: one thread per call read a page
        # 5x faster on 2 cores (6.2 s -> 1.2 s), and calls run side by side instead. The
        # variable reaches the tesseract processes pytesseract starts; set it to override.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        self._tess = pytesseract
        self.language = language
        self.timeout = timeout_secs
        self.version = str(pytesseract.get_tesseract_version())

    def lines(self, image: Image.Image) -> list[OcrLine]:
        # Page segmentation 3 (automatic, no OSD) finds blocks and columns on a page.
        return self._lines(image, "--psm 3")

    def read(self, image: Image.Image, fidelity: Fidelity) -> OcrText:
        small = resample(image, fidelity)
        # A region is one block of text: segmentation 6 (a single uniform block).
        return OcrText.of(self._lines(_pad(small), "--psm 6"))

    def close(self) -> None:
        return None

    def _lines(self, image: Image.Image, config: str) -> list[OcrLine]:
        data = self._tess.image_to_data(
            image.convert("L"),
            lang=self.language,
            config=config,
            output_type=self._tess.Output.DICT,
            timeout=self.timeout,
        )
        grouped: dict[tuple[int, int, int], list[OcrWord]] = defaultdict(list)
        for i, raw in enumerate(data["text"]):
            text = str(raw).strip()
            conf = float(data["conf"][i])
            if not text or conf < 0:
                continue
            key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
            box = BBox(
                int(data["left"][i]),
                int(data["top"][i]),
                int(data["width"][i]),
                int(data["height"][i]),
            )
            grouped[key].append(OcrWord(text, box, max(0.0, min(1.0, conf / 100.0))))
        lines = [OcrLine.of(words) for words in grouped.values()]
        return sorted(lines, key=lambda line: (line.bbox.y, line.bbox.x))


def _pad(image: Image.Image, margin: int = 10) -> Image.Image:
    """The image on a white margin: Tesseract misses text that touches the border."""
    gray = image.convert("L")
    out = Image.new("L", (gray.width + 2 * margin, gray.height + 2 * margin), 255)
    out.paste(gray, (margin, margin))
    return out
