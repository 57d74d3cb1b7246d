"""int8 quantization of an exported fp32 graph: three schemes, one plan.

- per-token (default): every MatMul with a constant weight gets int8 weights per output channel and
  its input quantized per token (one scale per row, computed at run time), after a SmoothQuant
  rescaling of input channels calibrated on training texts. A token's result depends on that token
  alone, never on its batch-mates or padding, and outlier channels no longer set everyone's scale.
- per-block: onnxruntime's MatMulNBits with 8-bit weights in blocks along K, activations quantized
  per row and block; attention stays in its fused float op where the graph has one (BERT; MPNet's
  relative position bias keeps onnxruntime from fusing its attention, so its Q, K and V MatMuls go
  to 8-bit blocks as well).

Every scheme finds its MatMuls by op type and constant weights, never by node name, so BERT and MPNet
(attention.self.query vs attention.attn.q) are quantized alike; keep_float patterns are the user's.
- dynamic: onnxruntime's quantize_dynamic, one activation range per tensor per batch: the fastest,
  and the least faithful (a label can change with the batch a text is in).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np

Scheme = Literal["per-token", "per-block", "dynamic"]
SCHEMES: tuple[str, ...] = ("per-token", "per-block", "dynamic")
INT8_MAX = 127.0


@dataclass(frozen=True)
class QuantizationPlan:
    """What int8 quantization does to the graph (see the module docstring for the schemes)."""

    scheme: Scheme = "per-token"
    # per-token: SmoothQuant's alpha, how much of an input channel's range moves into the weights
    # (0: none). 0.5 is the paper's default and measured best here (0.3 and 0.7 agreed less).
    smoothing: float = 0.5
    per_channel: bool = True  # dynamic: per-channel weight scales
    op_types: tuple[str, ...] = ()  # dynamic: op types to quantize (empty: all it supports)
    keep_float: tuple[str, ...] = ()  # regexes on node names left in float (every scheme)
    matmul_block_size: int = 128  # per-block: input channels per weight block

    @property
    def needs_plain_graph(self) -> bool:
        """per-token rewrites the Q, K and V MatMuls, which a fused Attention op would hide."""
        return self.scheme == "per-token"

    @property
    def needs_calibration(self) -> bool:
        return self.scheme == "per-token" and self.smoothing > 0


Feeds = Sequence[dict[str, np.ndarray]]


def quantize_int8(fp32_path: Path, int8_path: Path, plan: QuantizationPlan = QuantizationPlan(),
                  calibration: Feeds = ()) -> None:
    """Write the int8 version of `fp32_path` to `int8_path`. calibration: input batches (per-token
    smoothing measures each MatMul input's channel ranges on them)."""
    import re

    import onnx

    graph = onnx.load(str(fp32_path))
    skip = {node.name for node in graph.graph.node if any(re.search(p, node.name) for p in plan.keep_float)}
    if plan.scheme == "per-token":
        if plan.needs_calibration and not calibration:
            raise ValueError("per-token quantization with smoothing needs calibration batches")
        ranges = input_channel_ranges(fp32_path, calibration) if plan.needs_calibration else {}
        _matmuls_to_per_token_int8(graph, ranges, plan.smoothing, skip)
        onnx.save(graph, str(int8_path))
    elif plan.scheme == "per-block":
        _matmuls_to_8bit_blocks(graph, plan.matmul_block_size, skip)
        onnx.save(graph, str(int8_path))
        extra = tuple(op for op in plan.op_types if op != "MatMul")  # e.g. (Attention,): dynamic int8 on top
        if extra:
            _quantize_dynamic(int8_path, int8_path, plan.per_channel, extra, sorted(skip))
    else:
        _quantize_dynamic(fp32_path, int8_path, plan.per_channel, plan.op_types, sorted(skip))


def _constant_matmuls(model, skip: set[str]) -> list[tuple[int, object]]:
    """(position, node) of the MatMul nodes x @ W with W a constant 2-D initializer, not named in skip."""
    initializers = {init.name: init for init in model.graph.initializer}
    return [(position, node) for position, node in enumerate(model.graph.node)
            if node.op_type == "MatMul" and node.name not in skip and node.input[1] in initializers
            and len(initializers[node.input[1]].dims) == 2]


def input_channel_ranges(fp32_path: Path, calibration: Feeds) -> dict[str, np.ndarray]:
    """For each constant MatMul's input tensor: the largest |value| per channel (last axis) over the
    calibration batches' real tokens (padding excluded)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(fp32_path))
    inputs = sorted({node.input[0] for _, node in _constant_matmuls(model, set())})
    present = {output.name for output in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                              for name in inputs if name not in present)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    feed_names = {node.name for node in session.get_inputs()}
    ranges: dict[str, np.ndarray] = {}
    for feed in calibration:
        values = dict(zip(names, session.run(None, {k: v for k, v in feed.items() if k in feed_names})))
        real = feed["attention_mask"].astype(bool) if "attention_mask" in feed else None
        for name in inputs:
            value = values[name]
            rows = value[real] if real is not None and value.shape[:2] == real.shape else value.reshape(-1, value.shape[-1])
            largest = np.abs(rows).max(axis=0)
            ranges[name] = largest if name not in ranges else np.maximum(ranges[name], largest)
    return ranges


def _matmuls_to_per_token_int8(model, ranges: dict[str, np.ndarray], smoothing: float, skip: set[str]) -> None:
    """Rewrite each group of constant MatMuls that share an input x (Q, K and V do) as

        x' = x / s                       s: SmoothQuant scale per input channel (when smoothing)
        r = max|x'| / 127 per token;  q = round(x' / r) + 128     (uint8, zero point 128: symmetric)
        y = MatMulInteger(q, Wq) * r * w_scale                     Wq = round(s * W / w_scale) per column

    with the group's weights concatenated into one MatMulInteger and split after.
    """
    from onnx import TensorProto, helper, numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    nodes_in_order = list(model.graph.node)
    groups: dict[str, list[int]] = {}  # input -> positions of the MatMuls that read it
    for position, node in _constant_matmuls(model, skip):
        groups.setdefault(node.input[0], []).append(position)
    if not groups:
        return
    shared = [numpy_helper.from_array(np.array(1.0 / INT8_MAX, np.float32), "per_token_inv127"),
              numpy_helper.from_array(np.array(1e-12, np.float32), "per_token_tiny"),
              numpy_helper.from_array(np.array(128.0, np.float32), "per_token_offset"),
              numpy_helper.from_array(np.array(128, np.uint8), "per_token_zero_point")]
    replaced: dict[int, list] = {}  # position of a group's first node -> its replacement nodes
    dropped: set[int] = set()
    for index, (x, positions) in enumerate(groups.items()):
        members = [nodes_in_order[position] for position in positions]
        weights = [numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32) for node in members]
        weight = np.concatenate(weights, axis=1)
        prefix = f"{members[0].name or f'matmul_{index}'}_per_token"
        nodes, source = [], x
        if smoothing > 0 and x in ranges:
            channel = np.maximum(ranges[x], 1e-5) ** smoothing / np.maximum(np.abs(weight).max(axis=1), 1e-5) ** (1 - smoothing)
            channel = np.clip(channel, 1e-2, 1e2).astype(np.float32)
            weight = weight * channel[:, None]
            model.graph.initializer.append(numpy_helper.from_array((1.0 / channel).astype(np.float32), f"{prefix}_smooth"))
            nodes.append(helper.make_node("Mul", [x, f"{prefix}_smooth"], [f"{prefix}_x"], name=f"{prefix}_smooth"))
            source = f"{prefix}_x"
        column_scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / INT8_MAX
        quantized = np.clip(np.round(weight / column_scale), -INT8_MAX, INT8_MAX).astype(np.int8)
        model.graph.initializer.extend([numpy_helper.from_array(quantized, f"{prefix}_weight"),
                                        numpy_helper.from_array(column_scale.astype(np.float32), f"{prefix}_weight_scale")])
        joined = f"{prefix}_y" if len(members) > 1 else members[0].output[0]
        nodes += [
            helper.make_node("Abs", [source], [f"{prefix}_abs"]),
            *_reduce_max_last_axis(f"{prefix}_abs", f"{prefix}_max", opset),
            helper.make_node("Max", [f"{prefix}_max", "per_token_tiny"], [f"{prefix}_max_safe"]),
            helper.make_node("Mul", [f"{prefix}_max_safe", "per_token_inv127"], [f"{prefix}_scale"]),
            helper.make_node("Div", [source, f"{prefix}_scale"], [f"{prefix}_scaled"]),
            helper.make_node("Round", [f"{prefix}_scaled"], [f"{prefix}_rounded"]),
            helper.make_node("Add", [f"{prefix}_rounded", "per_token_offset"], [f"{prefix}_shifted"]),
            helper.make_node("Cast", [f"{prefix}_shifted"], [f"{prefix}_q"], to=TensorProto.UINT8),
            helper.make_node("MatMulInteger", [f"{prefix}_q", f"{prefix}_weight", "per_token_zero_point"],
                             [f"{prefix}_int32"], name=f"{prefix}_matmul"),
            helper.make_node("Cast", [f"{prefix}_int32"], [f"{prefix}_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{prefix}_float", f"{prefix}_scale"], [f"{prefix}_rows"]),
            helper.make_node("Mul", [f"{prefix}_rows", f"{prefix}_weight_scale"], [joined]),
        ]
        if len(members) > 1:
            sizes = numpy_helper.from_array(np.array([w.shape[1] for w in weights], np.int64), f"{prefix}_sizes")
            model.graph.initializer.append(sizes)
            nodes.append(helper.make_node("Split", [joined, f"{prefix}_sizes"], [m.output[0] for m in members], axis=-1))
        replaced[positions[0]] = nodes
        dropped.update(positions[1:])
    rewritten = []
    for position, node in enumerate(nodes_in_order):
        if position in replaced:
            rewritten.extend(replaced[position])  # at the first member: x exists, no consumer ran yet
        elif position not in dropped:
            rewritten.append(node)
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    model.graph.initializer.extend(shared)
    _drop_unused_initializers(model)


def _reduce_max_last_axis(source: str, target: str, opset: int) -> list:
    from onnx import helper, numpy_helper

    if opset < 18:
        return [helper.make_node("ReduceMax", [source], [target], axes=[-1], keepdims=1)]
    # From opset 18 the axes are an input; a Constant node keeps the helper self-contained.
    axes = f"{target}_axes"
    return [helper.make_node("Constant", [], [axes], value=numpy_helper.from_array(np.array([-1], np.int64))),
            helper.make_node("ReduceMax", [source, axes], [target], keepdims=1)]


def _drop_unused_initializers(model) -> None:
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _matmuls_to_8bit_blocks(model, block_size: int, skip: set[str]) -> None:
    """MatMul x W (W constant, [K, N]) -> MatMulNBits with W symmetric 8-bit per block of `block_size`
    rows of K; accuracy_level 4 computes in int8 with activations quantized per block."""
    from onnx import helper, numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.name in skip or node.input[1] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        if weight.ndim != 2:
            continue
        k, n = weight.shape
        block = block_size
        while k % block and block > 16:  # a narrow layer (K=32, 64) takes the largest block that divides it
            block //= 2
        if k % block:
            continue
        blocks = weight.T.reshape(n, k // block, block)
        scales = np.abs(blocks).max(axis=2) / 127.0
        scales[scales == 0] = 1.0
        packed = (np.clip(np.round(blocks / scales[:, :, None]), -127, 127) + 128).astype(np.uint8)  # zero point 128
        packed_name, scales_name = f"{node.name}_Q8", f"{node.name}_scales"
        model.graph.initializer.extend([numpy_helper.from_array(packed, packed_name),
                                        numpy_helper.from_array(scales.reshape(-1).astype(np.float32), scales_name)])
        node.CopyFrom(helper.make_node(
            "MatMulNBits", [node.input[0], packed_name, scales_name], list(node.output), name=f"{node.name}_Q8",
            domain="com.microsoft", K=k, N=n, bits=8, block_size=block, accuracy_level=4,
        ))
    _drop_unused_initializers(model)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _quantize_dynamic(source: Path, target: Path, per_channel: bool, op_types: tuple[str, ...],
                      keep_float: list[str]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quant_pre_process is skipped on purpose: it leaves temp files in the working directory and
    # gains nothing for MatMul-heavy encoders.
    with _root_log_without("consider to run pre-processing"):
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=list(op_types) or None,
            nodes_to_exclude=keep_float,
            # Fused contrib ops carry no type information; without this the quantizer gives up on them.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


@contextlib.contextmanager
def _root_log_without(fragment: str) -> Iterator[None]:
    """Drop one known, irrelevant warning that a library logs on the root logger."""
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        return fragment not in record.getMessage()

    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
