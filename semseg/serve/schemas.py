"""The JSON bodies of the API as pydantic models: the OpenAPI schema at ``/openapi.json``
(the responses themselves are built as plain dicts, for speed)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="Short snake_case name of the error, e.g. payload_too_large.")
    message: str = Field(description="What was wrong, in words.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ClassShare(BaseModel):
    id: int = Field(description="Train id: the pixel value in labels_png.")
    name: str
    color: str = Field(description="#rrggbb")
    fraction: float = Field(description="Share of the image's pixels, 0..1.")


class Drivable(BaseModel):
    classes: list[str] = Field(description="The classes counted as drivable.")
    fraction: float = Field(description="Drivable share of the image's pixels, 0..1.")
    boundary: list[int] = Field(
        description="Per column x: the topmost row of the free space reached from the bottom "
        "row, -1 where the bottom pixel is not drivable."
    )
    polygon: list[list[int]] = Field(description="Outline [[x, y], ...] of the largest region.")


class TimingMs(BaseModel):
    queue: float
    decode: float
    inference: float
    encode: float


class SegmentResult(BaseModel):
    height: int
    width: int
    classes: list[ClassShare]
    labels_png: str = Field(
        description="Base64 palette PNG at the input's size: one byte per pixel, the class id."
    )
    drivable: Drivable | None = Field(description="Null when the model has no drivable class.")
    timing_ms: TimingMs


class ModelClass(BaseModel):
    id: int
    name: str
    color: str


class Normalisation(BaseModel):
    mean: list[float]
    std: list[float]


class InferenceSettings(BaseModel):
    tile_size: list[int] | None
    overlap: float
    window: str
    hflip: bool
    scales: list[float]


class CheckpointFile(BaseModel):
    file: str | None = Field(description="File name of the checkpoint or ONNX file.")
    sha256: str | None


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    timeout_s: float


class ModelInfo(BaseModel):
    name: str | None
    classes: list[ModelClass]
    normalisation: Normalisation
    output_stride: int
    backend: str = Field(description="torch, onnxruntime or openvino (auto before it chose)")
    precision: str | None = Field(description="fp32, bf16 or int8")
    device: str
    threads: int | None
    inference: InferenceSettings
    checkpoint: CheckpointFile
    drivable_classes: list[str] | None
    limits: Limits


class Status(BaseModel):
    status: str
