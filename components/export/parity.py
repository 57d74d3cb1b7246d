"""Does the exported model answer like the PyTorch one? Both run on the same labelled texts (the test
split); the export gate reads agreement and accuracy drop from the report.

Every precision is judged the same way. The fp16 export, a GPU plan, runs on CUDA where there is a
CUDA device; elsewhere on onnxruntime's CPU provider, which loads the fp16 graph but has no fp16
kernels for most of its ops (MatMul, Gemm, Add, Attention...) and computes those in fp32 between
casts. The report then says so (`note`, with the count of such nodes): the fp16 weights, inputs and
outputs are what is judged, not the GPU's fp16 arithmetic; the export's range check (no tensor of
the fp32 graph near fp16's limit) covers the overflow that arithmetic could add.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from components.config import Task
from components.export.predictor import (
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    OnnxTextClassifier,
    OnnxTokenTagger,
    check_texts,
    default_providers,
    softmax,
)
from components.export.to_onnx import (
    PROGRESS_MIN_BATCHES,
    encode,
    graph_input_names,
    torch_logits,
)
from components.model.modeling import labels_in_id_order, load_torch_model


class ParityReport(BaseModel):
    """Sequence classification: agreement is the fraction of texts where both models pick the same
    label and the accuracies are label accuracies. Token classification (metric "entity_f1"):
    agreement is the entity F1 of the ONNX predictions scored against the PyTorch ones (1.0: the same
    entities), the accuracies are each model's entity F1 against the gold tags, and the probability
    differences are over word tags."""

    n: int
    agreement: float  # fraction of texts where both models pick the same label (NER: entity F1 onnx vs torch)
    torch_accuracy: float
    onnx_accuracy: float
    accuracy_drop: float  # torch_accuracy - onnx_accuracy, as a fraction
    max_abs_prob_diff: float
    mean_abs_prob_diff: float
    precision: Literal["int8", "fp16", "fp32"]
    max_length: int
    task: Task = SEQUENCE_CLASSIFICATION
    metric: Literal["accuracy", "entity_f1"] = "accuracy"  # what agreement and the accuracies measure
    tag_agreement: float | None = None  # NER: fraction of words given the same tag by both models
    providers: list[str] = []  # where the exported graph ran (onnxruntime's session providers)
    note: str | None = None  # what the check could not see (fp16 on a CPU), for the export log and the card

    def failures(self, *, min_agreement: float, max_accuracy_drop: float) -> list[str]:
        """Why the export should be refused under these limits; empty when it passes."""
        reasons = []
        if self.agreement < min_agreement:
            reasons.append(f"agreement {self.agreement:.4f} < {min_agreement}")
        if self.accuracy_drop > max_accuracy_drop:
            reasons.append(f"accuracy drop {self.accuracy_drop:.4f} > {max_accuracy_drop}")
        return reasons


def check_parity(
    model_dir: Path,
    onnx_dir: Path,
    texts: list[str],
    labels: list[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    providers: Sequence[str] | None = None,
) -> ParityReport:
    """Run the PyTorch model and the exported one (through the serving predictor) on labelled texts.

    providers: onnxruntime providers for the export; default: CUDA for an fp16 export where there is a
    CUDA device, else the CPU (predictor.default_providers).

    For a token classifier (read from the export's card) each text is a sentence's words joined by
    single spaces and each label the words' IOB2 tags joined the same way, as in the test split CSV.
    """
    from tqdm.auto import tqdm

    from components.data.template import apply_template
    from components.export.predictor import read_model_card

    texts = check_texts(texts)
    labels = list(labels)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise ValueError("parity needs at least one labelled text")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    card = read_model_card(Path(onnx_dir))
    providers = list(providers) if providers is not None else default_providers(card.precision)
    if card.task == TOKEN_CLASSIFICATION:
        return _token_parity(Path(model_dir), Path(onnx_dir), texts, labels, batch_size=batch_size,
                             max_length=max_length, providers=providers)

    # Off its hardware on purpose (fp16 without a GPU): the report's note says so instead of a warning.
    predictor = OnnxTextClassifier(Path(onnx_dir), providers, max_length=max_length, warn_on_plan=False)
    model, tokenizer = load_torch_model(Path(model_dir), SEQUENCE_CLASSIFICATION)
    model_labels = labels_in_id_order(model)
    if model_labels != predictor.labels:
        raise ValueError(f"{onnx_dir} has labels {predictor.labels} but {model_dir} has {model_labels}")
    label_ids = {label: i for i, label in enumerate(model_labels)}
    unknown = sorted(set(labels) - set(label_ids))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's labels {model_labels}")
    gold = np.array([label_ids[label] for label in labels])
    input_names = graph_input_names(model, tokenizer)

    starts = range(0, len(texts), batch_size)
    torch_batches: list[np.ndarray] = []
    onnx_batches: list[np.ndarray] = []
    for start in tqdm(starts, desc="parity torch vs onnx", unit="batch", disable=len(starts) < PROGRESS_MIN_BATCHES):
        batch = texts[start:start + batch_size]
        # PyTorch reads the text inside the card's data.template, as in training; the predictor gets the raw
        # text, as a client sends it, and must apply the same template itself.
        templated = apply_template(card.template, batch)
        torch_batches.append(softmax(torch_logits(model, encode(tokenizer, templated, input_names, max_length))))
        onnx_batches.append(predictor.predict_proba(batch, batch_size=len(batch)))
    torch_probs, onnx_probs = np.concatenate(torch_batches), np.concatenate(onnx_batches)

    torch_pred, onnx_pred = torch_probs.argmax(axis=1), onnx_probs.argmax(axis=1)
    torch_accuracy = float(np.mean(torch_pred == gold))
    onnx_accuracy = float(np.mean(onnx_pred == gold))
    prob_diff = np.abs(torch_probs - onnx_probs)
    return ParityReport(
        n=len(texts),
        agreement=float(np.mean(torch_pred == onnx_pred)),
        torch_accuracy=torch_accuracy,
        onnx_accuracy=onnx_accuracy,
        accuracy_drop=torch_accuracy - onnx_accuracy,
        max_abs_prob_diff=float(prob_diff.max()),
        mean_abs_prob_diff=float(prob_diff.mean()),
        precision=predictor.card.precision,
        max_length=max_length,
        providers=predictor.providers,
        note=run_note(predictor),
    )


def cpu_fp32_fallbacks(model_path: Path) -> tuple[Counter, int]:
    """Nodes of an fp16 graph that onnxruntime's CPU provider computes in fp32 (by op type), and the
    graph's node count. onnxruntime inserts a Cast to fp32 before each fp16 node it has no CPU kernel
    for; the graph it actually runs (saved through optimized_model_filepath) shows them."""
    import tempfile

    import onnx
    import onnxruntime as ort

    source = onnx.load(str(model_path))
    with tempfile.TemporaryDirectory(prefix="tunegate-fp16-cpu-") as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(scratch) / "as-run.onnx")
        ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        ran = onnx.load(options.optimized_model_filepath)
    own = {node.name for node in source.graph.node}
    to_fp32 = {node.output[0] for node in ran.graph.node
               if node.op_type == "Cast" and node.name not in own
               and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute)}
    fallbacks = Counter(node.op_type for node in ran.graph.node
                        if node.op_type != "Cast" and any(name in to_fp32 for name in node.input))
    return fallbacks, sum(node.op_type != "Cast" for node in ran.graph.node)


def run_note(predictor) -> str | None:
    """What the parity run could not judge: an fp16 export that ran without CUDA, else None."""
    if predictor.card.precision != "fp16" or "CUDAExecutionProvider" in predictor.providers:
        return None
    from components.export.predictor import MODEL_FILE

    fallbacks, nodes = cpu_fp32_fallbacks(predictor.model_dir / MODEL_FILE)
    ops = ", ".join(f"{op} x{n}" for op, n in fallbacks.most_common())
    return (f"fp16 judged on the CPU provider (no CUDA device here): onnxruntime computed {sum(fallbacks.values())} "
            f"of its {nodes} nodes in fp32 for want of CPU fp16 kernels ({ops or 'none'}); fp16 weights, and the "
            "fp16 tensors between the other nodes, were judged; fp16 arithmetic in those nodes is judged only "
            "on a GPU (run the export stage there)")



def _token_parity(model_dir: Path, onnx_dir: Path, texts: list[str], labels: list[str], *,
                  batch_size: int, max_length: int, providers: Sequence[str]) -> ParityReport:
    from components.entities import entity_scores
    from components.model.evaluate import predict_tag_proba_torch, split_joined

    predictor = OnnxTokenTagger(onnx_dir, providers, max_length=max_length, warn_on_plan=False)
    model, tokenizer = load_torch_model(model_dir, TOKEN_CLASSIFICATION)
    tags = labels_in_id_order(model)
    if tags != predictor.labels:
        raise ValueError(f"{onnx_dir} has tags {predictor.labels} but {model_dir} has {tags}")
    sentences, gold = split_joined(texts), split_joined(labels)
    for index, (words, gold_tags) in enumerate(zip(sentences, gold)):
        if len(words) != len(gold_tags):
            raise ValueError(f"text {index} has {len(words)} words but {len(gold_tags)} tags")
    unknown = sorted({tag for sentence in gold for tag in sentence} - set(tags))
    if unknown:
        raise ValueError(f"tags {unknown} are not among the model's tags {tags}")

    torch_probs = predict_tag_proba_torch(model, tokenizer, sentences, max_length, batch_size)
    onnx_probs = predictor.predict_word_proba(sentences, batch_size)
    torch_tags = [[tags[i] for i in p.argmax(axis=1)] for p in torch_probs]
    onnx_tags = [[tags[i] for i in p.argmax(axis=1)] for p in onnx_probs]
    kinds = predictor.entity_types
    torch_f1 = entity_scores(gold, torch_tags, kinds)["entity_f1"]
    onnx_f1 = entity_scores(gold, onnx_tags, kinds)["entity_f1"]
    agreement = _entity_agreement(torch_tags, onnx_tags, kinds)
    words = sum(len(s) for s in sentences)
    same_tags = sum(t == o for ts, os_ in zip(torch_tags, onnx_tags) for t, o in zip(ts, os_))
    diffs = [np.abs(t - o) for t, o in zip(torch_probs, onnx_probs) if len(t)]
    flat = np.concatenate([d.ravel() for d in diffs]) if diffs else np.zeros(1, dtype=np.float32)
    return ParityReport(
        n=len(texts),
        agreement=agreement,
        torch_accuracy=torch_f1,
        onnx_accuracy=onnx_f1,
        accuracy_drop=torch_f1 - onnx_f1,
        max_abs_prob_diff=float(flat.max()),
        mean_abs_prob_diff=float(flat.mean()),
        precision=predictor.card.precision,
        max_length=max_length,
        task=TOKEN_CLASSIFICATION,
        metric="entity_f1",
        tag_agreement=same_tags / words if words else 1.0,
        providers=predictor.providers,
        note=run_note(predictor),
    )


def _entity_agreement(reference: list[list[str]], other: list[list[str]], kinds: list[str]) -> float:
    """Entity F1 of `other` against `reference`; 1.0 when neither finds any entity (they agree)."""
    from components.entities import entity_scores, spans_from_tags

    if not any(spans_from_tags(tags) for tags in reference) and not any(spans_from_tags(tags) for tags in other):
        return 1.0
    return entity_scores(reference, other, kinds)["entity_f1"]
