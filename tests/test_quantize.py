"""The three int8 schemes on the tiny classifier: what each does to the graph, that each still agrees
with PyTorch, and that per-token gives every text the same answer whatever batch it is in."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from components.export.parity import check_parity
from components.export.predictor import OnnxTextClassifier
from components.export.quantize import SCHEMES, QuantizationPlan, quantize_int8
from components.export.to_onnx import export_onnx
from tests.fixtures_classifier import held_out, tiny_classifier  # noqa: F401 - fixture

LAYERS = 2  # tests/tiny.py builds a 2-layer BERT


@pytest.fixture(scope="module")
def exports(tiny_classifier, tmp_path_factory):
    calibration, _ = held_out(64, seed=3)
    root = tmp_path_factory.mktemp("schemes")
    return {scheme: export_onnx(tiny_classifier, root / scheme, plan=QuantizationPlan(scheme=scheme),
                                calibration_texts=calibration)
            for scheme in SCHEMES}


def _ops(result) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(result.model_path)).graph.node)


def test_each_scheme_rewrites_the_matmuls_its_own_way(exports):
    per_token, per_block, dynamic = (_ops(exports[s]) for s in ("per-token", "per-block", "dynamic"))
    # Q, K and V share one quantized input and one MatMulInteger; then attention output, FFN in and out.
    assert per_token["MatMulInteger"] == 4 * LAYERS and per_token["MatMulNBits"] == 0
    assert per_token["Mul"] >= 4 * LAYERS  # the SmoothQuant rescaling of each input
    # Fused attention keeps Q, K and V inside its float Attention op: three MatMuls per layer remain.
    assert per_block["MatMulNBits"] == 3 * LAYERS and per_block["Attention"] == LAYERS
    assert dynamic["DynamicQuantizeLinear"] + dynamic["DynamicQuantizeMatMul"] + dynamic["QAttention"] > 0
    for scheme, result in exports.items():
        assert result.quantization == scheme and result.int8_bytes < result.fp32_bytes


def test_every_scheme_agrees_with_pytorch(exports, tiny_classifier):
    texts, labels = held_out()
    for scheme, result in exports.items():
        report = check_parity(tiny_classifier, result.out_dir, texts, labels, batch_size=16)
        assert report.agreement >= 0.95 and report.mean_abs_prob_diff < 0.02, (scheme, report)


def test_per_token_answer_never_depends_on_batch_mates(exports):
    predictor = OnnxTextClassifier(exports["per-token"].out_dir)
    texts, _ = held_out(24, seed=11)
    loud = "THE WORST!!! " * 30  # a long text with other activation ranges than the rest
    alone = np.concatenate([predictor.predict_logits([text]) for text in texts])
    crowded = predictor.predict_logits(texts + [loud], batch_size=32)[:len(texts)]
    np.testing.assert_allclose(crowded, alone, atol=1e-5)


def test_smoothing_needs_calibration_and_can_be_turned_off(tiny_classifier, tmp_path):
    plain = export_onnx(tiny_classifier, tmp_path / "fp32", quantize=False, optimize=False).model_path
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(plain, tmp_path / "smoothed.onnx", QuantizationPlan(smoothing=0.5))
    quantize_int8(plain, tmp_path / "unsmoothed.onnx", QuantizationPlan(smoothing=0.0))
    names = [node.name for node in onnx.load(str(tmp_path / "unsmoothed.onnx")).graph.node]
    assert not [name for name in names if name.endswith("_smooth")]
    assert sum(node.op_type == "MatMulInteger" for node in onnx.load(str(tmp_path / "unsmoothed.onnx")).graph.node) == 4 * LAYERS


def test_per_token_on_opset_18_where_reduce_axes_are_an_input(tiny_classifier, tmp_path):
    calibration, _ = held_out(32, seed=3)
    result = export_onnx(tiny_classifier, tmp_path / "opset18", opset=18, calibration_texts=calibration)
    assert _ops(result)["MatMulInteger"] == 4 * LAYERS
    texts, labels = held_out(60)
    assert check_parity(tiny_classifier, result.out_dir, texts, labels).agreement >= 0.95
