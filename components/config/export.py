"""The `export:` section: the ONNX export, its precision and the int8 quantization plan."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from components.config.base import Section

EXPORT_PRECISIONS = ("int8", "fp16", "fp32")


def resolve_export_precision(precision: str | None, quantize: bool | None) -> str:
    """The precision export_onnx's arguments ask for: `precision`, or its boolean spelling `quantize` (`true`:
    int8, `false`: fp32 when precision is not given). Both given must agree; a contradiction is an error."""
    if precision is not None and precision not in EXPORT_PRECISIONS:
        raise ValueError(f"export.precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}")
    if quantize is None:
        return precision or "int8"
    if precision is None:
        return "int8" if quantize else "fp32"
    if quantize != (precision == "int8"):
        raise ValueError(f"quantize={quantize} contradicts precision={precision!r} (quantize=True means int8, "
                         "False means fp32 or fp16); give precision alone")
    return precision


class ExportParams(Section):
    opset: int = Field(default=17, ge=13, description="ONNX opset of the exported graph.")
    precision: Literal["int8", "fp16", "fp32"] = Field(
        default="int8",
        description="int8: the CPU export (the quantization plan below); fp16: the GPU export (fp16 weights and "
                    "arithmetic, inputs and outputs unchanged); fp32: the exported graph as is.")
    # Agreement with PyTorch on the default models' test splits: per-token 99.2-99.8%, every text the same label
    # alone or in any batch; per-block 99.0-99.7% and about 30% slower; dynamic 96.6-98.7%, the fastest.
    scheme: Literal["per-token", "per-block", "dynamic"] = Field(
        default="per-token",
        description="The int8 scheme: per-token (each token's activations on their own scale after SmoothQuant, "
                    "a text's label never depends on its batch-mates), per-block (block-wise weights, attention "
                    "left float) or dynamic (one range per batch, the fastest and least faithful).")
    smoothing: float = Field(default=0.5, ge=0, le=1, description="per-token: the SmoothQuant alpha; 0 turns "
                                                                  "smoothing off.")
    calibration_texts: int = Field(default=2048, ge=1, description="per-token: training-split texts on which the "
                                                                   "smoothing is calibrated.")
    matmul_block_size: int = Field(default=128, ge=16, description="per-block: input channels per weight block, a "
                                                                   "power of two.")
    per_channel: bool = Field(default=True, description="dynamic: one weight scale per output channel rather than "
                                                        "per tensor.")
    quantize_ops: list[str] = Field(default_factory=list,
                                    description="dynamic (and per-block extras): the ONNX op types quantized; "
                                                "empty quantizes every supported op.")
    keep_float: list[str] = Field(default_factory=list, description="Regular expressions of node names left in "
                                                                    "float.")
    min_agreement: float = Field(default=0.99, ge=0, le=1,
                                 description="Lowest share of test texts on which the exported model must give "
                                             "PyTorch's label.")
    max_accuracy_drop: float = Field(default=0.01, ge=0, le=1,
                                     description="Largest test accuracy the exported model may lose against "
                                                 "PyTorch.")

    @model_validator(mode="before")
    @classmethod
    def _quantize_was_replaced(cls, values: Any) -> Any:
        if isinstance(values, dict) and "quantize" in values:
            precision = "int8" if values["quantize"] is True else "fp32"
            raise ValueError(f"export.quantize was replaced by export.precision: write `export: {{precision: "
                             f"{precision}}}` (int8, fp16 or fp32) and remove quantize")
        if isinstance(values, dict) and values.get("precision") not in (None, *EXPORT_PRECISIONS):
            raise ValueError(f"export.precision must be one of {', '.join(EXPORT_PRECISIONS)}, "
                             f"got {values['precision']!r}")
        return values

    @model_validator(mode="after")
    def _block_size_fits(self) -> "ExportParams":
        if self.matmul_block_size & (self.matmul_block_size - 1):
            raise ValueError(f"matmul_block_size must be a power of two >= 16, got {self.matmul_block_size}")
        return self

    def plan(self):
        from components.export.quantize import QuantizationPlan

        return QuantizationPlan(scheme=self.scheme, smoothing=self.smoothing, per_channel=self.per_channel,
                                op_types=tuple(self.quantize_ops), keep_float=tuple(self.keep_float),
                                matmul_block_size=self.matmul_block_size)
