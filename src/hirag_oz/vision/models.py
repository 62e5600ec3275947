"""What the vision layer works with: words and lines found by OCR, regions, decode results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RegionType = Literal["text", "table", "figure", "code"]
Fidelity = Literal["1x", "5x", "10x", "20x"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]

FIDELITIES: tuple[Fidelity, ...] = ("1x", "5x", "10x", "20x")
REGION_TYPES: tuple[RegionType, ...] = ("text", "table", "figure", "code")


def compression(fidelity: Fidelity) -> int:
    """The pixel-area divisor of a fidelity: "10x" -> 10."""
    return int(fidelity[:-1])


@dataclass(frozen=True, slots=True)
class BBox:
    """A box in rendered page pixels, origin top-left."""

    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    def union(self, other: BBox) -> BBox:
        x, y = min(self.x, other.x), min(self.y, other.y)
        return BBox(x, y, max(self.right, other.right) - x, max(self.bottom, other.bottom) - y)

    def to_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}

    @classmethod
    def around(cls, boxes: list[BBox]) -> BBox:
        out = boxes[0]
        for box in boxes[1:]:
            out = out.union(box)
        return out


@dataclass(frozen=True, slots=True)
class OcrWord:
    text: str
    bbox: BBox
    confidence: float
    """0..1; 1.0 for a PDF text layer."""


@dataclass(frozen=True, slots=True)
class OcrLine:
    """One line of text on a page, its words left to right."""

    words: tuple[OcrWord, ...]
    bbox: BBox

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def confidence(self) -> float:
        return sum(w.confidence for w in self.words) / len(self.words) if self.words else 0.0

    @classmethod
    def of(cls, words: list[OcrWord]) -> OcrLine:
        ordered = sorted(words, key=lambda w: w.bbox.x)
        return cls(tuple(ordered), BBox.around([w.bbox for w in ordered]))


@dataclass(frozen=True, slots=True)
class OcrText:
    """What an engine read in one image: its text and a confidence in 0..1."""

    text: str
    confidence: float

    @classmethod
    def of(cls, lines: list[OcrLine]) -> OcrText:
        """The lines top to bottom, one per row, and their words' mean confidence."""
        words = [w for line in lines for w in line.words]
        if not words:
            return cls("", 0.0)
        text = "\n".join(line.text for line in lines)
        return cls(text, sum(w.confidence for w in words) / len(words))


@dataclass(frozen=True)
class Region:
    """A paragraph-like block of a page: what search finds and decode reads back."""

    region_id: str
    doc_id: str
    page: int
    """1-based."""
    bbox: BBox
    page_width: int
    page_height: int
    type: RegionType
    text: str
    token_estimate: int
    has_vt: bool
    confidence: float
    text_layer: bool
    """The text came from the document's own text layer (exact), not from OCR."""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "region_id": self.region_id,
            "doc_id": self.doc_id,
            "page": self.page,
            "bbox": self.bbox.to_dict(),
            "page_width": self.page_width,
            "page_height": self.page_height,
            "type": self.type,
            "token_estimate": self.token_estimate,
            "has_vt": self.has_vt,
        }


@dataclass(frozen=True)
class DecodedRegion:
    region_id: str
    text: str
    fidelity: Fidelity
    confidence: float
    tokens: int
    backend: str
    cached: bool = False
