"""Documents indexed into OCR regions, searched, and decoded at a chosen fidelity."""

from hirag_oz.vision.jobs import Job
from hirag_oz.vision.models import (
    FIDELITIES,
    BBox,
    DecodedRegion,
    Fidelity,
    OcrLine,
    OcrText,
    OcrWord,
    Region,
    RegionType,
)
from hirag_oz.vision.ocr import OcrEngine, TesseractEngine, resample
from hirag_oz.vision.service import RegionFilters, RegionHit, VisionService

__all__ = [
    "FIDELITIES",
    "BBox",
    "DecodedRegion",
    "Fidelity",
    "Job",
    "OcrEngine",
    "OcrLine",
    "OcrText",
    "OcrWord",
    "Region",
    "RegionFilters",
    "RegionHit",
    "RegionType",
    "TesseractEngine",
    "VisionService",
    "resample",
]
