"""export.precision: the fp16 (GPU) and fp32 exports of the tiny classifier, judged by the same parity gate as
int8; the fp16 graph really is fp16; the predictor and the MLflow pyfunc model serve it; contradictory
settings are refused."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import yaml

from components.config import ConfigError, ExportParams, GateParams, parse_params
from components.export.parity import check_parity, cpu_fp32_fallbacks
from components.export.predictor import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    MODEL_FILE,
    OnnxTextClassifier,
    cuda_device_count,
    read_model_card,
)
from components.export.to_onnx import FP16_MAX, ExportError, encode, export_onnx, graph_input_names, torch_logits
from components.lifecycle.gate import decide
from components.lifecycle.model_card import render_model_card
from components.model.modeling import load_torch_model
from tests.fixtures_classifier import LABELS, held_out, tiny_classifier  # noqa: F401 - fixture
from tests.project import REPO_ROOT, tiny_params

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
HAS_CUDA = cuda_device_count() > 0


@pytest.fixture(scope="module")
def exports(tiny_classifier, tmp_path_factory):
    calibration, _ = held_out(64, seed=3)
    root = tmp_path_factory.mktemp("precisions")
    return {precision: export_onnx(tiny_classifier, root / precision, precision=precision,
                                   calibration_texts=calibration)
            for precision in ("fp16", "fp32")}


def _float_initializer_types(path: Path) -> set[int]:
    return {init.data_type for init in onnx.load(str(path)).graph.initializer if init.data_type in FLOAT_TYPES}


def test_fp16_graph_holds_fp16_weights_behind_unchanged_inputs_and_outputs(exports):
    fp16, fp32 = exports["fp16"], exports["fp32"]
    assert _float_initializer_types(fp16.model_path) == {onnx.TensorProto.FLOAT16}
    assert _float_initializer_types(fp32.model_path) == {onnx.TensorProto.FLOAT}
    graph = onnx.load(str(fp16.model_path)).graph
    # keep_io_types: the predictor feeds token ids and reads fp32 logits, whatever the precision.
    assert {i.name: i.type.tensor_type.elem_type for i in graph.input} == {
        name: onnx.TensorProto.INT64 for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT]
    # fp16 weights take half the bytes (the graph structure adds a little).
    assert fp16.model_bytes < 0.6 * fp32.model_bytes
    for result, precision in ((fp16, "fp16"), (fp32, "fp32")):
        card = read_model_card(result.out_dir)
        assert result.precision == card.precision == precision
        assert result.quantization is card.quantization is None and result.int8_bytes is None
    assert 0 < fp16.fp16_range_max < FP16_MAX and fp32.fp16_range_max is None


def test_fp16_and_fp32_exports_pass_the_parity_gate(exports, tiny_classifier):
    texts, labels = held_out()
    limits = ExportParams()  # the defaults params.yaml ships: agreement >= 0.99, drop <= 0.01
    for precision, result in exports.items():
        report = check_parity(tiny_classifier, result.out_dir, texts, labels, batch_size=32)
        assert report.precision == precision
        assert report.failures(min_agreement=limits.min_agreement, max_accuracy_drop=limits.max_accuracy_drop) == []
        decision = decide({"accuracy": 0.99, "macro_f1": 0.99, "n": report.n}, report.model_dump(), None, None,
                          GateParams(), ExportParams(precision=precision))
        assert decision.passed, decision.summary()
        assert f"{precision} ONNX on " in decision.summary()
    fp16 = check_parity(tiny_classifier, exports["fp16"].out_dir, texts, labels, batch_size=32)
    assert fp16.max_abs_prob_diff < 0.01  # fp16 rounding, not a different model
    if HAS_CUDA:
        assert fp16.providers[0] == CUDA_PROVIDER and fp16.note is None
    else:
        # Never judged silently off its hardware: the report says where it ran and what that could not see.
        assert fp16.providers == [CPU_PROVIDER]
        assert "CPU provider" in fp16.note and "fp32" in fp16.note


def test_cpu_run_of_the_fp16_graph_counts_the_nodes_onnxruntime_computes_in_fp32(exports):
    fallbacks, nodes = cpu_fp32_fallbacks(exports["fp16"].model_path)
    # onnxruntime 1.31's CPU provider has no fp16 MatMul/Gemm: what the report's note is about.
    assert 0 < sum(fallbacks.values()) <= nodes
    assert fallbacks["MatMul"] + fallbacks["Gemm"] > 0, fallbacks
    assert sum(cpu_fp32_fallbacks(exports["fp32"].model_path)[0].values()) == 0


def test_predictor_gives_pytorch_labels_from_the_fp16_export(exports, tiny_classifier):
    texts, _ = held_out(120, seed=5)
    model, tokenizer = load_torch_model(tiny_classifier)
    expected = torch_logits(model, encode(tokenizer, texts, graph_input_names(model, tokenizer), 128))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = OnnxTextClassifier(exports["fp16"].out_dir)
    assert any("fp16, a plan for GPUs" in str(w.message) for w in caught)  # CPU serving of fp16 is flagged
    logits = predictor.predict_logits(texts, batch_size=32)
    assert [LABELS[i] for i in logits.argmax(axis=1)] == [LABELS[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(logits, expected, atol=0.05)  # fp16 weights: close, not bit-equal


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_fp16_export_runs_on_cuda_when_asked(exports):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = OnnxTextClassifier(exports["fp16"].out_dir, providers=(CUDA_PROVIDER, CPU_PROVIDER))
    assert predictor.providers[0] == CUDA_PROVIDER
    assert not any("a plan for" in str(w.message) for w in caught)
    texts, _ = held_out(64, seed=5)
    cpu = OnnxTextClassifier(exports["fp32"].out_dir)
    assert [p["label"] for p in predictor.predict(texts)] == [p["label"] for p in cpu.predict(texts)]


def _params(**export) -> dict:
    return tiny_params(Path("base"), export=export)


def test_the_replaced_quantize_key_is_refused_naming_export_precision():
    with pytest.raises(ConfigError, match=r"export.quantize was replaced by export.precision: write `export: "
                                          r"\{precision: int8\}`"):
        parse_params(_params(quantize=True))
    with pytest.raises(ConfigError, match=r"export.quantize was replaced by export.precision: write `export: "
                                          r"\{precision: fp32\}`"):
        parse_params(_params(quantize=False, precision="fp32"))
    with pytest.raises(ConfigError, match="export.precision must be one of int8, fp16, fp32"):
        parse_params(_params(precision="bf16"))
    assert parse_params(_params()).export.precision == "int8"
    assert parse_params(_params(precision="fp16")).export.precision == "fp16"
    shipped = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["export"]
    assert ExportParams.model_validate(shipped).precision == "int8"
    # A dumped config validates again as the same.
    fp16 = ExportParams(precision="fp16")
    assert ExportParams.model_validate(fp16.model_dump()) == fp16 and "quantize" not in fp16.model_dump()


def test_export_refuses_contradictory_arguments(tiny_classifier, tmp_path):
    with pytest.raises(ExportError, match="contradicts"):
        export_onnx(tiny_classifier, tmp_path / "x", precision="fp16", quantize=True)
    assert not (tmp_path / "x").exists()


def test_fp16_export_refuses_a_model_whose_activations_overflow_fp16(tiny_classifier, tmp_path):
    import torch

    model, tokenizer = load_torch_model(tiny_classifier)
    dense = model.bert.encoder.layer[0].output.dense
    with torch.no_grad():  # the first feed-forward output far beyond 65504 (inf in fp16); LayerNorm rescales it
        dense.weight.mul_(1e6)
        dense.bias.mul_(1e6)
    model.save_pretrained(tmp_path / "loud")
    tokenizer.save_pretrained(tmp_path / "loud")
    with pytest.raises(ExportError, match="beyond fp16's largest value 65504.*export.precision: fp32"):
        export_onnx(tmp_path / "loud", tmp_path / "out", precision="fp16")
    assert not (tmp_path / "out").exists()
    # fp32 has the range: the same model exports.
    assert export_onnx(tmp_path / "loud", tmp_path / "out32", precision="fp32", optimize=False).precision == "fp32"


def test_gate_refuses_a_parity_report_of_another_precision():
    parity = {"agreement": 1.0, "accuracy_drop": 0.0, "precision": "int8"}
    decision = decide({"accuracy": 0.9, "macro_f1": 0.9, "n": 10}, parity, None, None, GateParams(),
                      ExportParams(precision="fp16"))
    assert not decision.passed
    assert [c.name for c in decision.checks if not c.passed] == ["export_precision"]
    assert "export.precision is fp16" in decision.summary()


def test_export_stage_records_the_precision_and_where_parity_ran(tiny_classifier, tmp_path, capsys):
    from components import stages
    from components.layout import ProjectLayout

    layout = ProjectLayout(tmp_path)
    shutil.copytree(tiny_classifier, layout.model_dir)
    layout.split_file("train").parent.mkdir(parents=True)
    for split, (texts, labels) in (("train", held_out(64, seed=3)), ("test", held_out(100, seed=9))):
        pd.DataFrame({"text": texts, "label": labels}).to_csv(layout.split_file(split), index=False)
    params = parse_params(_params(precision="fp16", calibration_texts=32))
    stages.export(layout, params)

    log = capsys.readouterr().out
    assert "(fp16, " in log and "largest fp32 activation" in log and "parity (fp16 on " in log
    parity = json.loads(layout.parity_file.read_text())
    assert parity["precision"] == "fp16" and parity["providers"]
    assert read_model_card(layout.onnx_dir).precision == "fp16"
    assert (parity["note"] is None) == HAS_CUDA
    if not HAS_CUDA:
        assert "parity note: fp16 judged on the CPU provider" in log
    card = render_model_card("tiny", {"labels": json.dumps(LABELS)}, parity, "gate passed")
    assert "Precision: **fp16**" in card and "the fp16 ONNX model, as served" in card
    assert "CPU provider" in card or HAS_CUDA


def test_pyfunc_model_carries_and_serves_the_fp16_export(exports, tmp_path):
    import mlflow.pyfunc

    from components.export.mlflow_model import onnx_dir_in, save_mlflow_model

    saved = save_mlflow_model(exports["fp16"].out_dir, tmp_path / "model", card="# tiny fp16\n")
    assert yaml.safe_load((saved / "MLmodel").read_text())["metadata"]["tunegate_precision"] == "fp16"
    shipped = onnx_dir_in(saved) / MODEL_FILE
    assert _float_initializer_types(shipped) == {onnx.TensorProto.FLOAT16}
    texts, _ = held_out(40, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fp16 on a CPU: tested above
        frame = mlflow.pyfunc.load_model(str(saved)).predict(pd.DataFrame({"text": texts}))
        direct = OnnxTextClassifier(exports["fp16"].out_dir).predict(texts)
    assert frame["label"].tolist() == [p["label"] for p in direct]


def test_service_serves_the_fp16_version_and_says_its_precision(exports, tmp_path):
    import httpx

    from components.export.mlflow_model import save_mlflow_model
    from components.lifecycle.registry import CHAMPION, ModelRegistry
    from components.serving.deployment import build_service_app
    from components.serving.server import BackgroundServer

    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", "tiny-fp16", artifact_root=tmp_path / "artifacts")
    model = save_mlflow_model(exports["fp16"].out_dir, tmp_path / "staged" / "model", card="# tiny fp16\n")
    run_id = registry.start_run("tunegate-tests", "fp16", tags={})
    registry.set_alias(CHAMPION, registry.register(run_id, model, tags={"gate": "passed"}).version)
    registry.end_run(run_id)
    texts, _ = held_out(16, seed=5)
    providers = [CUDA_PROVIDER, CPU_PROVIDER] if HAS_CUDA else [CPU_PROVIDER]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fp16 on a CPU: tested above
        app = build_service_app(registry, tmp_path / "serving", providers)
        with BackgroundServer(app) as server:
            metadata = httpx.get(f"{server.url}/metadata", timeout=30).json()
            served = httpx.post(f"{server.url}/predict", json={"texts": texts}, timeout=30).json()["predictions"]
        direct = OnnxTextClassifier(exports["fp16"].out_dir).predict(texts)
    assert metadata["precision"] == "fp16" and metadata["quantization"] is None
    assert metadata["providers"][0] == providers[0]
    assert [p["label"] for p in served] == [p["label"] for p in direct]
