from __future__ import annotations

import json
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from components.export.parity import ParityReport, check_parity
from components.export.predictor import MODEL_CARD, MODEL_FILE, OnnxTextClassifier
from components.export.to_onnx import (
    ExportError,
    encode,
    export_onnx,
    graph_input_names,
    torch_logits,
)
from components.model.modeling import load_torch_model
from tests.fixtures_classifier import (  # noqa: F401 - fixtures
    LABELS,
    held_out,
    save_untrained_classifier,
    tiny_classifier,
    tiny_onnx_export,
)

LONG_TEXT = " ".join(["the film was great and the acting was superb"] * 40)  # far past 128 tokens


@pytest.fixture(scope="module")
def predictor(tiny_onnx_export) -> OnnxTextClassifier:
    return OnnxTextClassifier(tiny_onnx_export.out_dir)


def test_export_dir_is_self_contained_and_int8(tiny_onnx_export):
    result = tiny_onnx_export
    names = {path.name for path in result.out_dir.iterdir()}
    assert {MODEL_FILE, MODEL_CARD, "tokenizer.json", "tokenizer_config.json"} <= names
    assert "model.safetensors" not in names  # serving needs no torch weights

    card = json.loads((result.out_dir / MODEL_CARD).read_text())
    assert card["labels"] == LABELS
    assert card["precision"] == "int8"
    assert card["opset"] == 17
    assert card["max_length"] == 128
    assert card["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]

    assert result.model_path == result.out_dir / MODEL_FILE
    assert result.int8_bytes == result.model_path.stat().st_size
    assert result.int8_bytes < result.fp32_bytes

    graph = onnx.load(str(result.model_path))
    op_types = {node.op_type for node in graph.graph.node}
    assert op_types & {"MatMulInteger", "QAttention", "DynamicQuantizeLinear"}, op_types
    for graph_input in graph.graph.input:
        dims = [d.dim_param for d in graph_input.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], (graph_input.name, dims)


def test_exported_model_takes_any_batch_size_and_length(predictor):
    one = predictor.predict_proba(["great"])
    seven = predictor.predict_proba(["a", "the plot was boring", LONG_TEXT, "", "brilliant cast", "awful", "film"])
    for probs, n in ((one, 1), (seven, 7)):
        assert probs.shape == (n, 2)
        assert probs.dtype == np.float32
        assert np.all((probs >= 0) & (probs <= 1))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert predictor.predict_proba([]).shape == (0, 2)
    column = pd.Series(["great", "awful"])  # a frame's text column works as it is
    np.testing.assert_array_equal(predictor.predict_proba(column), predictor.predict_proba(["great", "awful"]))


def test_predictor_labels_held_out_texts_correctly(predictor):
    texts, labels = held_out()
    predictions = predictor.predict(texts, batch_size=32)
    accuracy = np.mean([p["label"] == gold for p, gold in zip(predictions, labels)])
    # The conftest base model is unseeded, so accuracy varies by session (0.92-1.0 over 50 bases);
    # 0.8 still fails a swapped label order (~0.05) or an untrained head (~0.5).
    assert accuracy >= 0.8
    for prediction in predictions[:20]:
        assert set(prediction["scores"]) == set(LABELS)
        assert prediction["score"] == max(prediction["scores"].values())
        assert prediction["scores"][prediction["label"]] == prediction["score"]
        assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("bad", [["fine", 3], [None], "a single string", 42])
def test_predictor_rejects_non_string_input(predictor, bad):
    with pytest.raises(ValueError, match="string"):
        predictor.predict(bad)


def test_unavailable_provider_warns_and_runs_on_cpu(tiny_onnx_export):
    with pytest.warns(RuntimeWarning, match="NoSuchExecutionProvider"):
        predictor = OnnxTextClassifier(tiny_onnx_export.out_dir, providers=("NoSuchExecutionProvider",))
    assert predictor.providers == ["CPUExecutionProvider"]
    assert predictor.predict_proba(["great"]).shape == (1, 2)


def test_cuda_request_reports_the_providers_the_session_really_has(tiny_onnx_export):
    import onnxruntime as ort

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = OnnxTextClassifier(tiny_onnx_export.out_dir, providers=("CUDAExecutionProvider",),
                                       intra_op_threads=1)
    assert predictor.providers[-1] == "CPUExecutionProvider"
    assert set(predictor.providers) <= set(ort.get_available_providers())
    if "CUDAExecutionProvider" not in predictor.providers:  # no usable GPU here: it must say so
        assert any("CUDAExecutionProvider" in str(w.message) for w in caught)


def _export_scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("tunegate-export-*")}


def test_fp32_export_matches_pytorch_and_leaves_no_files_behind(tiny_classifier, tmp_path, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    scratch_before = _export_scratch_dirs()

    result = export_onnx(tiny_classifier, tmp_path / "fp32", quantize=False)

    assert list(workdir.iterdir()) == []
    assert _export_scratch_dirs() == scratch_before
    assert result.precision == "fp32" and result.int8_bytes is None
    assert result.model_path.stat().st_size == result.fp32_bytes
    assert json.loads(result.card_path.read_text())["precision"] == "fp32"

    texts = ["great", "the plot was boring and the acting clumsy", LONG_TEXT]
    model, tokenizer = load_torch_model(tiny_classifier)
    expected = torch_logits(model, encode(tokenizer, texts, graph_input_names(model, tokenizer), 128))
    actual = OnnxTextClassifier(result.out_dir).predict_logits(texts)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_export_replaces_an_earlier_export_but_no_other_directory(tiny_classifier, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="refusing"):
        export_onnx(tiny_classifier, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"

    out = tmp_path / "export"
    export_onnx(tiny_classifier, out, quantize=False)
    (out / "vocab.txt").write_text("stale file from an older export")
    result = export_onnx(tiny_classifier, out, quantize=True)
    assert not (out / "vocab.txt").exists()
    assert result.precision == "int8"
    assert json.loads((out / MODEL_CARD).read_text())["precision"] == "int8"


def test_parity_of_int8_export_on_held_out_texts(tiny_classifier, tiny_onnx_export):
    texts, labels = held_out()
    report = check_parity(tiny_classifier, tiny_onnx_export.out_dir, texts, labels, batch_size=16)

    assert report.n == len(texts)
    assert report.precision == "int8"
    assert report.agreement >= 0.95
    assert report.torch_accuracy >= 0.8  # see test_predictor_labels_held_out_texts_correctly
    assert report.accuracy_drop == pytest.approx(report.torch_accuracy - report.onnx_accuracy)
    # int8 can flip a text that sits on the decision boundary (max diff 0.58 seen once in 50 random
    # bases), so only the mean is bounded tightly.
    assert 0 <= report.mean_abs_prob_diff < 0.01
    assert report.mean_abs_prob_diff <= report.max_abs_prob_diff <= 1
    assert report.failures(min_agreement=0.95, max_accuracy_drop=0.02) == []
    assert ParityReport.model_validate_json(report.model_dump_json()) == report


def test_parity_catches_a_model_that_answers_differently(tiny_base_model, tiny_onnx_export, tmp_path):
    other = save_untrained_classifier(tiny_base_model, tmp_path / "untrained")
    texts, labels = held_out()
    report = check_parity(other, tiny_onnx_export.out_dir, texts, labels)
    assert report.agreement < 0.9
    assert report.failures(min_agreement=0.99, max_accuracy_drop=0.01)


def test_parity_refuses_labels_the_model_does_not_know(tiny_classifier, tiny_onnx_export):
    with pytest.raises(ValueError, match="neutral"):
        check_parity(tiny_classifier, tiny_onnx_export.out_dir, ["fine", "great"], ["neutral", "positive"])
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        check_parity(tiny_classifier, tiny_onnx_export.out_dir, ["fine", "great"], ["positive"])


def test_length_groups_cover_every_row_once_and_split_only_where_padding_costs_more():
    from components.export.predictor import length_groups

    lengths = [60, 5, 7, 58, 6, 61, 30, 31]
    groups = length_groups(lengths, call_cost=32)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    assert [sorted(lengths[i] for i in group) for group in groups] == [[5, 6, 7], [30, 31], [58, 60, 61]]
    assert length_groups([12] * 32) == [list(range(32))]  # nothing to save: one call
    assert len(length_groups([5, 60], call_cost=1000)) == 1  # a call dearer than the padding: one call
    assert length_groups([]) == []


def test_length_groups_find_the_cheapest_partition_at_any_batch_size():
    import itertools
    import random
    import time

    from components.export.predictor import length_groups

    def cost(groups, call_cost):  # groups of lengths: padded tokens plus a price per call
        return sum(len(g) * max(g) + call_cost for g in groups)

    def cheapest_by_brute_force(lengths, call_cost):  # every partition of the sorted rows into runs
        ranked = sorted(lengths)
        best = math.inf
        for cuts in itertools.product([False, True], repeat=len(ranked) - 1):
            groups, current = [], [ranked[0]]
            for value, cut in zip(ranked[1:], cuts):
                if cut:
                    groups.append(current)
                    current = []
                current.append(value)
            groups.append(current)
            best = min(best, cost(groups, call_cost))
        return best

    rng = random.Random(3)
    for _ in range(40):
        lengths = [rng.choice([4, 9, 9, 17, 30, 31, 64]) for _ in range(rng.randint(1, 11))]
        call_cost = rng.choice([0, 8, 32, 200])
        grouped = [[lengths[i] for i in group] for group in length_groups(lengths, call_cost)]
        assert cost(grouped, call_cost) == cheapest_by_brute_force(lengths, call_cost)
    many = [rng.randint(3, 128) for _ in range(20_000)]
    started = time.perf_counter()
    groups = length_groups(many)
    assert time.perf_counter() - started < 2.0  # the search spans distinct lengths, not rows
    assert sorted(i for group in groups for i in group) == list(range(len(many)))


def test_encode_gives_the_tokenizers_own_ids(predictor):
    """The predictor encodes with a private, truncating copy of the export's tokenizer (the service calls it
    from its event loop): each text must come out as the tokenizer itself would give it."""
    from transformers import AutoTokenizer

    texts = held_out(40, seed=9)[0] + [LONG_TEXT, "", "naïve café, ünïcödé 😀", "tab\tand\nnewline", "word " * 300]
    tokenizer = AutoTokenizer.from_pretrained(str(predictor.model_dir))
    expected = tokenizer(texts, truncation=True, max_length=predictor.max_length, padding=False)["input_ids"]
    encoded = predictor.encode(texts)
    assert encoded == expected
    assert max(map(len, encoded)) == predictor.max_length  # the long texts are truncated
    np.testing.assert_allclose(predictor.probabilities(encoded), predictor.predict_proba(texts), atol=1e-6)
    assert predictor.answers(predictor.probabilities(encoded)) == predictor.predict(texts)


def test_length_grouped_calls_answer_as_one_padded_call(tiny_onnx_export):
    texts, _ = held_out(48, seed=5)
    texts = texts + [LONG_TEXT, "ok"]
    grouped = OnnxTextClassifier(tiny_onnx_export.out_dir).predict_logits(texts, batch_size=64)
    padded = OnnxTextClassifier(tiny_onnx_export.out_dir, length_grouping=False).predict_logits(texts, batch_size=64)
    np.testing.assert_allclose(grouped, padded, atol=1e-5)


def test_an_int8_cpu_plan_meant_for_a_gpu_is_called_out():
    from components.export.predictor import gpu_plan_warning

    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert "export.precision: fp16" in gpu_plan_warning("per-token", gpu)
    assert "export.precision: fp16" in gpu_plan_warning("per-block", gpu)
    assert gpu_plan_warning("per-token", ["CPUExecutionProvider"]) is None
    assert gpu_plan_warning(None, gpu) is None  # fp32: what a GPU should serve
