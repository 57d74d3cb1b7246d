"""A fine-tuned classifier or token classifier (NER) to a self-contained ONNX directory: int8 (the
default, for CPUs), fp16 (for GPUs) or fp32. The check that it still answers like the PyTorch model is
components.export.parity.

The export directory holds everything a server needs to label raw text and nothing it must trust:
`model.onnx`, the tokenizer files and a JSON card (task, labels, max_length, precision, opset, inputs).
A sequence classifier's graph gives logits [batch, labels]; a token classifier's [batch, sequence, tags].
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel

from components.config import Task
from components.data.word_shapes import uses_word_shapes
from components.export.predictor import (
    MODEL_CARD,
    MODEL_FILE,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    ModelCard,
    write_model_card,
)
from components.export.quantize import QuantizationPlan, quantize_int8
from components.model.modeling import kept_layers_of, labels_in_id_order, load_torch_model, model_task

CANDIDATE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TRACE_TEXTS = ["a short text", "a somewhat longer text, so that the traced batch needs padding"]
# Two fp32 graphs of one model differ only by float rounding; a larger gap on the probe batches means
# the graph computes something else (a shape baked in by tracing, a wrong fusion).
FP32_LOGIT_TOLERANCE = 1e-3
PROGRESS_MIN_BATCHES = 4
FP16_MAX = 65504.0  # the largest finite float16
# Additive attention masks in an exported BERT are float32's lowest value (-3.4e38, "minus infinity"),
# which the fp16 converter clamps to -65504 on purpose: such sentinels are not activations.
MASK_SENTINEL = 1e30
# The fp16 range check runs the fp32 graph with every intermediate tensor as an output: a few texts at a
# time keep that memory small.
RANGE_CHECK_TEXTS = 128
RANGE_CHECK_BATCH = 4
Precision = Literal["int8", "fp16", "fp32"]


class ExportError(RuntimeError):
    """The model could not be exported faithfully; the message says why."""


class ExportResult(BaseModel):
    out_dir: Path
    model_path: Path
    card_path: Path
    precision: Precision
    opset: int
    max_length: int
    labels: list[str]
    input_names: list[str]
    graph_optimized: bool
    fused_operators: dict[str, int]
    fp32_bytes: int
    int8_bytes: int | None
    model_bytes: int = 0  # the shipped model.onnx, whatever its precision
    task: Task = SEQUENCE_CLASSIFICATION
    entity_types: list[str] = []  # token classification: the types behind the tags in `labels`
    quantization: str | None = None  # the int8 scheme (components/export/quantize.py); None for fp16 and fp32
    # fp16: the largest |value| of any tensor in the fp32 graph on the range-check texts (must stay < 65504).
    fp16_range_max: float | None = None


def default_max_length(tokenizer, config) -> int:
    # Tokenizers without a limit report model_max_length as a huge sentinel (1e30).
    limits = [
        n for n in (tokenizer.model_max_length, getattr(config, "max_position_embeddings", None))
        if isinstance(n, int) and 0 < n < 100_000
    ]
    return min(limits) if limits else 512


def graph_input_names(model, tokenizer) -> list[str]:
    """Inputs the tokenizer produces and the model takes, in a fixed order; token_type_ids also where they
    carry word shapes, which the predictor computes (an MPNet tokenizer gives none)."""
    produced = set(tokenizer(["probe"]).keys()) | ({"token_type_ids"} if uses_word_shapes(model.config) else set())
    accepted = set(inspect.signature(model.forward).parameters)
    names = [n for n in CANDIDATE_INPUTS if n in produced and n in accepted]
    if "input_ids" not in names:
        raise ExportError(f"tokenizer gives {sorted(produced)}, model takes {sorted(accepted)}: no input_ids")
    return names


def encode(tokenizer, texts: list[str], input_names: list[str], max_length: int) -> dict[str, np.ndarray]:
    encoded = dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"))
    if "token_type_ids" in input_names and "token_type_ids" not in encoded:  # word shapes: the lower shape, 0
        encoded["token_type_ids"] = np.zeros_like(encoded["input_ids"])
    return {name: np.asarray(encoded[name], dtype=np.int64) for name in input_names}


def torch_logits(model, feed: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        logits = model(**{name: torch.from_numpy(array) for name, array in feed.items()}).logits
    return logits.float().numpy()


def onnx_logits(model_path: Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return [np.asarray(session.run(None, feed)[0], dtype=np.float32) for feed in feeds]


def largest_gap(expected: list[np.ndarray], actual: list[np.ndarray],
                masks: list[np.ndarray] | None = None) -> float:
    """The largest logit difference; with masks (attention masks, token logits), over real tokens only:
    what a graph computes at padding positions is never read."""
    gaps = []
    for index, (e, a) in enumerate(zip(expected, actual)):
        difference = np.abs(e - a)
        if masks is not None and difference.ndim == 3:
            difference = difference[masks[index].astype(bool)]
        gaps.append(float(np.max(difference)) if difference.size else 0.0)
    return max(gaps)


def probe_batches(max_length: int) -> list[list[str]]:
    """Shapes unlike the traced one: batch 1, batch 3 with padding, and a text cut at max_length."""
    too_long = " ".join(["probe words"] * max_length)
    return [["one"], ["a short one", "a rather longer sentence with several more words in it", too_long]]


def _logits_only(model, input_names: list[str]):
    import torch

    class LogitsOnly(torch.nn.Module):
        """Positional inputs in the graph's order, one tensor out: the ONNX graph's interface."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(input_names, inputs))).logits

    # The exporter puts the wrapper back into the mode it found it in, recursively: a wrapper left in
    # its default training mode would switch dropout on in the model afterwards.
    return LogitsOnly().eval()


def export_fp32(model, tokenizer, input_names: list[str], path: Path, *, opset: int, max_length: int) -> None:
    import torch

    example = encode(tokenizer, TRACE_TEXTS, input_names, max_length)
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    # A token classifier's logits have a score per token: [batch, sequence, tags].
    dynamic_axes["logits"] = {0: "batch", 1: "sequence"} if model_task(model) == TOKEN_CLASSIFICATION else {0: "batch"}
    with warnings.catch_warnings():
        # The probe comparison after export checks what these warnings only guess at.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter's own notices
        warnings.filterwarnings("ignore", message=".*aten::index")
        torch.onnx.export(
            _logits_only(model, input_names),
            tuple(torch.from_numpy(example[name]) for name in input_names),
            str(path),
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the dynamo exporter needs onnxscript and leaves stale value_info for the quantizer
        )


def fuse_bert_graph(fp32_path: Path, out_path: Path, config) -> dict[str, int]:
    """Fuse attention, embeddings and layer norms into onnxruntime's contrib ops; {} when nothing fused.

    The fusion is a speed-up, not a requirement: any failure here leaves the plain graph in use. MPNet
    gets its layer norms and GELUs fused, not its attention (the relative position bias does not fit
    onnxruntime's Attention op); the probe comparison judges whatever fused.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    num_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or 0
    hidden_size = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or 0
    try:
        # opt_level=0: Python fusions only; hardware-specific rewrites are left to the serving session.
        optimized = optimize_model(
            str(fp32_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
        )
        fused = {op: int(n) for op, n in optimized.get_fused_operator_statistics().items() if n}
        if fused:
            optimized.save_model_to_file(str(out_path))
        return fused
    except Exception as error:  # noqa: BLE001 - an optional optimisation must not fail the export
        warnings.warn(f"BERT graph fusion failed, exporting the unfused graph: {error}", RuntimeWarning, stacklevel=2)
        return {}


def largest_activation(fp32_path: Path, feeds: list[dict[str, np.ndarray]]) -> tuple[float, str]:
    """The largest |value| of any float tensor the fp32 graph computes on `feeds`, and its tensor's name.

    fp16 overflows past 65504 (to inf, then NaN): attention scores or feed-forward activations beyond
    that would break the fp16 graph on a GPU even where the CPU, which computes most fp16 ops in fp32,
    shows nothing wrong. Run on the plain graph, whose attention scores are tensors of their own.
    Mask sentinels (|value| >= MASK_SENTINEL) are left out; a NaN anywhere counts as infinite."""
    import onnx
    import onnxruntime as ort

    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))
    floats = {info.name for info in model.graph.value_info if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    outputs = {output.name for output in model.graph.output}
    for name in sorted(floats - outputs):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    largest, where = 0.0, ""
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            value = np.abs(np.asarray(value, dtype=np.float32))
            if np.isnan(value).any():
                return float("inf"), name
            value = value[value < MASK_SENTINEL]
            if value.size and float(value.max()) > largest:
                largest, where = float(value.max()), name
    return largest, where


def convert_to_fp16(fp32_path: Path, out_path: Path) -> None:
    """Weights and arithmetic in fp16, graph inputs (token ids) and output (fp32 logits) unchanged, so
    the predictor feeds and reads it like the other exports. onnxruntime's converter with symbolic
    shape inference, which also types its fused contrib ops (Attention, SkipLayerNormalization)."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fp32_path)))
    model.convert_float_to_float16(keep_io_types=True)
    onnx.save(model.model, str(out_path))


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and not (out_dir / MODEL_CARD).is_file():
        raise ExportError(f"{out_dir} is not empty and holds no earlier export ({MODEL_CARD}); refusing to replace it")


def _replace_dir(staged: Path, out_dir: Path) -> None:
    # A directory that mixed files from two exports (say an old vocab.txt) would load the wrong tokenizer.
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staged), str(out_dir))


def _load_exportable(model_dir: Path, task: Task | None, template: str | None):
    """The saved model and its tokenizer, task, labels and entity types; an ExportError for a token classifier
    without IOB2 tags or a template the task cannot take."""
    from components.data.template import template_refusal_for
    from components.entities import entity_types_of

    model, tokenizer = load_torch_model(model_dir, task)
    task = model_task(model)
    labels = labels_in_id_order(model)
    entity_types = entity_types_of(labels) if task == TOKEN_CLASSIFICATION else []
    if task == TOKEN_CLASSIFICATION and "O" not in labels:
        raise ExportError(f"{model_dir}: a token classifier's labels must be IOB2 tags with 'O', got {labels}")
    if refusal := template_refusal_for(template, task == TOKEN_CLASSIFICATION):
        raise ExportError(refusal)
    return model, tokenizer, task, labels, entity_types


@dataclass(frozen=True)
class _Probes:
    """The probe batches, PyTorch's logits on them and their attention masks: what every graph is checked against."""

    feeds: list[dict[str, np.ndarray]]
    expected: list[np.ndarray]
    masks: list[np.ndarray]

    @classmethod
    def of(cls, model, tokenizer, input_names: list[str], max_length: int) -> _Probes:
        feeds = [encode(tokenizer, texts, input_names, max_length) for texts in probe_batches(max_length)]
        return cls(feeds, [torch_logits(model, feed) for feed in feeds],
                   [feed.get("attention_mask", np.ones_like(feed["input_ids"])) for feed in feeds])

    def gap(self, graph_path: Path) -> float:
        """The largest logit difference of the graph from PyTorch on the probes."""
        return largest_gap(self.expected, onnx_logits(graph_path, self.feeds), self.masks)

    def check(self, graph_path: Path, what: str) -> None:
        gap = self.gap(graph_path)
        if gap > FP32_LOGIT_TOLERANCE:
            raise ExportError(f"{what}'s logits differ from PyTorch's by up to {gap:.3g} on probe batches")


def _fused_if_faithful(graph_path: Path, fused_path: Path, config, probes: _Probes) -> tuple[Path, dict[str, int]]:
    """onnxruntime's BERT fusions of the graph when they compute the same logits; the graph itself otherwise.
    Returns the graph to ship from and the fused operators (empty when none are kept)."""
    fused = fuse_bert_graph(graph_path, fused_path, config)
    if not fused:
        return graph_path, {}
    gap = probes.gap(fused_path)
    if gap <= FP32_LOGIT_TOLERANCE:
        return fused_path, fused
    warnings.warn(f"fused graph differs from PyTorch by {gap:.3g}; exporting the unfused graph",
                  RuntimeWarning, stacklevel=3)  # the warning points at export_onnx's caller
    return graph_path, {}


def _check_fp16_range(fp32_path: Path, tokenizer, texts: list[str], input_names: list[str], max_length: int) -> float:
    """The largest |value| of any tensor of the fp32 graph on the texts; an ExportError when fp16 cannot hold it."""
    feeds = [encode(tokenizer, texts[start:start + RANGE_CHECK_BATCH], input_names, max_length)
             for start in range(0, len(texts), RANGE_CHECK_BATCH)]
    largest, where = largest_activation(fp32_path, feeds)
    if not largest < FP16_MAX:
        raise ExportError(f"the fp32 graph reaches |{largest:.4g}| at {where!r} on {len(texts)} texts, "
                          f"beyond fp16's largest value {FP16_MAX:.0f}: the fp16 export would overflow; "
                          "export with export.precision: fp32 (or int8 for CPUs)")
    return largest


def _write_precision(graph_path: Path, model_path: Path, precision: Precision, plan: QuantizationPlan,
                     calibration: Callable[[], list[dict[str, np.ndarray]]]) -> None:
    """The fp32 graph as the shipped model.onnx in its precision. calibration: the encoded calibration batches,
    encoded only when the int8 plan needs them."""
    if precision == "int8":
        quantize_int8(graph_path, model_path, plan, calibration() if plan.needs_calibration else [])
    elif precision == "fp16":
        convert_to_fp16(graph_path, model_path)
    else:
        shutil.copyfile(graph_path, model_path)


def export_onnx(
    model_dir: Path,
    out_dir: Path,
    *,
    opset: int = 17,
    quantize: bool | None = None,
    max_length: int | None = None,
    optimize: bool = True,
    plan: QuantizationPlan = QuantizationPlan(),
    task: Task | None = None,
    calibration_texts: Sequence[str] = (),
    precision: Precision | None = None,
    template: str | None = None,
) -> ExportResult:
    """Export a saved sequence classifier or token classifier to `out_dir`, replacing an earlier export there.

    max_length: the truncation length servers will use (default: the tokenizer's and the model's limit).
    optimize: try onnxruntime's BERT fusions; kept only when they compute the same logits. The
        per-token int8 plan quantizes the plain graph (fused attention would hide Q, K and V);
        onnxruntime's session fuses what it can when it loads the model.
    task: "sequence-classification" or "token-classification"; default: read from the saved config.
    calibration_texts: texts like the training data (a sample of its training split) on which the
        per-token plan measures activation ranges and the fp16 export checks its range; without them,
        a few built-in probe texts.
    precision: "int8" (default), "fp16" or "fp32"; `quantize` is the old spelling (True: int8,
        False: fp32), and both given must agree.
    template: data.template the model was trained with; the card carries it (the predictor applies it to
        raw text) and the calibration texts, raw like a client's, are read through it.
    """
    from components.config import resolve_export_precision

    try:
        precision = resolve_export_precision(precision, quantize)  # type: ignore[assignment]
    except ValueError as error:
        raise ExportError(str(error)) from None
    quantize = precision == "int8"

    from components.data.template import apply_template

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_replaceable(out_dir)
    model, tokenizer, task, labels, entity_types = _load_exportable(model_dir, task, template)
    layers, base_layers = kept_layers_of(model.config)
    calibration_texts = apply_template(template, calibration_texts)
    max_length = max_length or default_max_length(tokenizer, model.config)
    input_names = graph_input_names(model, tokenizer)
    probes = _Probes.of(model, tokenizer, input_names, max_length)
    # Without texts like the training data, the probe texts stand in for them.
    texts = list(calibration_texts) or [text for batch in probe_batches(max_length) for text in batch]

    # Intermediates live in the system temp dir, never in the working directory or out_dir.
    with tempfile.TemporaryDirectory(prefix="tunegate-export-") as scratch_name:
        scratch = Path(scratch_name)
        plain_path = scratch / "fp32.onnx"
        export_fp32(model, tokenizer, input_names, plain_path, opset=opset, max_length=max_length)
        probes.check(plain_path, "the exported graph")
        graph_path, fused = plain_path, {}
        if optimize and not (quantize and plan.needs_plain_graph):
            graph_path, fused = _fused_if_faithful(plain_path, scratch / "fp32-fused.onnx", model.config, probes)
        fp32_bytes = graph_path.stat().st_size
        fp16_range_max = None
        if precision == "fp16":
            fp16_range_max = _check_fp16_range(plain_path, tokenizer, texts[:RANGE_CHECK_TEXTS], input_names,
                                               max_length)

        staged = scratch / "export"
        staged.mkdir()
        model_path = staged / MODEL_FILE
        _write_precision(graph_path, model_path, precision, plan,
                         lambda: [encode(tokenizer, texts[start:start + 32], input_names, max_length)
                                  for start in range(0, len(texts), 32)])
        shipped = onnx_logits(model_path, probes.feeds[:1])  # the shipped file loads and runs
        if not all(np.isfinite(logits).all() for logits in shipped):
            raise ExportError(f"the {precision} graph gives non-finite logits on a probe text")
        tokenizer.save_pretrained(str(staged))
        write_model_card(staged, ModelCard(
            task=task, labels=labels, entity_types=entity_types, max_length=max_length, precision=precision, opset=opset,
            input_names=input_names, output_names=["logits"], graph_optimized=bool(fused),
            word_shapes=uses_word_shapes(model.config), quantization=plan.scheme if quantize else None,
            template=template, layers=layers, base_layers=base_layers,
        ))
        shipped_bytes = model_path.stat().st_size
        _replace_dir(staged, out_dir)

    return ExportResult(
        out_dir=out_dir,
        model_path=out_dir / MODEL_FILE,
        card_path=out_dir / MODEL_CARD,
        precision=precision,
        opset=opset,
        max_length=max_length,
        labels=labels,
        input_names=input_names,
        graph_optimized=bool(fused),
        fused_operators=fused,
        fp32_bytes=fp32_bytes,
        int8_bytes=shipped_bytes if quantize else None,
        model_bytes=shipped_bytes,
        task=task,
        entity_types=entity_types,
        quantization=plan.scheme if quantize else None,
        fp16_range_max=fp16_range_max,
    )
