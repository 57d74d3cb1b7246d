"""The ML stages as dvc.yaml runs them: each reads its inputs from the project layout, calls the
step's functions and writes its outputs back. `dvc repro` and the Prefect flow both end up here."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from components.config import ConfigError, Params
from components.layout import SPLITS, ProjectLayout


def validate(layout: ProjectLayout, params: Params) -> None:
    from components.data.ingest import read_dataset
    from components.data.validation.data_docs import build_data_docs
    from components.data.validation.report import assert_valid
    from components.data.validation.suite import validate_dataset

    dataset = read_dataset(layout.data_dir)
    report = validate_dataset(dataset, params.data, source=str(layout.data_dir), task=params.task)
    report.write(layout.validation_report)
    # Written pass or fail: the HTML is where a person looks first when a run stops here.
    docs = build_data_docs(dataset, params.data, layout.validation_docs, source=str(layout.data_dir), task=params.task)
    print(f"{report.summary()}\nData Docs: {docs}")
    assert_valid(report, layout.validation_report)  # a failing suite stops the pipeline before training


def preprocess(layout: ProjectLayout, params: Params) -> None:
    from components.data.ingest import read_dataset
    from components.data.preprocess import (
        assign_splits,
        save_tokenized,
        tokenize_split,
        tokenize_tagged_split,
    )
    from components.model.modeling import load_tokenizer, resolve_model_source

    tokenizer = load_tokenizer(resolve_model_source(params.model.base_model))
    splits = assign_splits(read_dataset(layout.data_dir), params.split)
    layout.splits_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        splits[name].to_csv(layout.split_file(name), index=False, lineterminator="\n")
        if params.is_token_task:
            tokenized = tokenize_tagged_split(splits[name], tokenizer, params.model_labels, params.model.max_length,
                                              word_shapes=params.model.word_shapes)
        else:
            tokenized = tokenize_split(splits[name], tokenizer, params.data.labels, params.model.max_length)
        save_tokenized(tokenized, layout.tokenized_file(name))
        print(f"{name}: {len(tokenized)} examples")


def adapt(layout: ProjectLayout, params: Params) -> None:
    """Masked-language-model training on the training split's text (when adapt.enabled)."""
    import shutil

    import pandas as pd

    from components.model.adapt import AdaptResult, adapt_language_model, write_card
    from components.model.compute import resolve_compute
    from components.model.modeling import resolve_model_source

    if layout.adapted_dir.exists():
        shutil.rmtree(layout.adapted_dir)
    if not params.adapt.enabled:
        write_card(AdaptResult(enabled=False, base_model=params.model.base_model), layout.adapted_dir)
        print("adapt: disabled (adapt.enabled: false); fine-tuning starts from the base model")
        return
    texts = pd.read_csv(layout.split_file("train"), dtype=str, keep_default_na=False)["text"].tolist()
    compute = resolve_compute(params.train.device, params.train.precision)
    result = adapt_language_model(resolve_model_source(params.model.base_model), params.model.base_model, texts,
                                  params.adapt, params.model.max_length, layout.adapted_dir, compute)
    print(f"adapt: MLM loss {result.mlm_loss_first_epoch:.4f} -> {result.mlm_loss_last_epoch:.4f} over "
          f"{result.epochs} epoch(s) on {result.texts} texts in {result.seconds:.0f} s")


def start(layout: ProjectLayout, params: Params) -> None:
    """Where fine-tuning starts: the base model, or the champion's weights (train.init_from)."""
    from components.lifecycle.tracking import open_registry
    from components.model.continual import prepare_starting_point

    point = prepare_starting_point(params.train.init_from, params.model.base_model, layout.start_dir,
                                   lambda: open_registry(params, layout))
    where = f"champion v{point.champion_version}" if point.source == "champion" else params.model.base_model
    print(f"start: fine-tuning starts from {where}" + (f" ({point.note})" if point.note else ""))


@dataclass(frozen=True)
class TrainOutputs:
    model_dir: Path
    history_file: Path
    checkpoint_dir: Path


def train_outputs(layout: ProjectLayout, params: Params) -> TrainOutputs:
    """The train stage's own outputs; checkpoints keyed by everything that shapes the run."""
    return TrainOutputs(layout.model_dir, layout.train_history,
                        layout.checkpoints_dir / training_fingerprint(layout, params))


def training_fingerprint(layout: ProjectLayout, params: Params) -> str:
    import hashlib

    digest = hashlib.sha256(params.model_dump_json(include={"task", "model", "adapt", "train"}).encode())
    digest.update(json.dumps(params.model_labels).encode())
    for path in (layout.tokenized_file("train"), layout.tokenized_file("validation"),
                 layout.adapted_dir / "tunegate-adapt.json", layout.start_dir / "start.json"):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def train_model(layout: ProjectLayout, params: Params, outputs: TrainOutputs):
    """Fine-tune from the starting point on the tokenized splits; the best epoch's model goes to outputs."""
    from components.data.preprocess import load_tokenized
    from components.data.word_shapes import add_word_shapes, uses_word_shapes
    from components.model.adapt import adapted_source
    from components.model.checkpoints import Checkpointer
    from components.model.continual import START_MODEL, read_starting_point, replay_mix
    from components.model.distributed import launched_ranks
    from components.model.modeling import (
        load_classifier,
        load_tokenizer,
        resolve_model_source,
    )
    from components.model.train import save_model, seed_everything, train_classifier

    point = read_starting_point(layout.start_dir)
    base = resolve_model_source(params.model.base_model)
    adapted = adapted_source(layout.adapted_dir)
    if point is not None and point.source == "champion":
        source = str(layout.start_dir / START_MODEL)
    else:
        source = adapted or base
    tokenizer = load_tokenizer(base)  # the base model's tokenizer throughout: ids must mean the same
    seed_everything(params.train.seed)  # before the new head is initialised, not just before training
    model = load_classifier(source, params.model_labels, token_level=params.is_token_task)
    if uses_word_shapes(model.config) and not params.model.word_shapes:
        raise ConfigError(f"model.word_shapes: the starting model {source} reads word shapes; keep model.word_shapes: true")
    if params.model.word_shapes:
        add_word_shapes(model)
    train_split = load_tokenized(layout.tokenized_file("train"))
    mix = None
    if point is not None and point.source == "champion":
        train_split, mix = replay_mix(train_split, point.champion_batches, params.train.replay_fraction,
                                      params.train.seed)
        print(f"continual: {mix['new_rows']} new rows + {mix['replayed_rows']} of {mix['old_rows']} rows the "
              f"champion v{point.champion_version} learned (replay_fraction {params.train.replay_fraction})")
    checkpoints = Checkpointer(outputs.checkpoint_dir)
    result, model = train_classifier(
        model, train_split, load_tokenized(layout.tokenized_file("validation")), params.model_labels, params.train,
        pad_id=tokenizer.pad_token_id, entity_types=params.data.labels if params.is_token_task else None,
        checkpoints=checkpoints,
    )
    if not launched_ranks().is_main:
        return result  # rank 0 writes the outputs: the same weights, once
    tokenizer.model_max_length = params.model.max_length
    save_model(model, tokenizer, outputs.model_dir)
    extra = {"start": point.source if point else "base", "adapted": adapted is not None}
    if mix:
        extra["replay"] = mix
    result = replace(result, extra=extra)
    result.write(outputs.history_file)
    checkpoints.clear()  # the run finished: the saved model is the result
    return result


def train(layout: ProjectLayout, params: Params) -> None:
    from components.model.distributed import launched_ranks, relaunch_under_torchrun

    if params.train.processes > 1 and not launched_ranks().distributed:
        # The same command again, as train.processes ranks under torchrun: dvc repro, the flow and a
        # user's own torchrun command all end up in train_model below.
        relaunch_under_torchrun(params.train.processes, ["tunegate", "--project", str(layout.root), "stage", "train"])
        return
    train_model(layout, params, train_outputs(layout, params))


def evaluate(layout: ProjectLayout, params: Params) -> None:
    import pandas as pd

    from components.model.compute import resolve_compute
    from components.model.evaluate import (
        evaluate_frame,
        evaluate_tokens_torch,
        predict_proba_torch,
        write_evaluation,
    )
    from components.model.modeling import load_torch_model

    model, tokenizer = load_torch_model(layout.model_dir)  # the same model the parity check compares
    # On the training device, in fp32: the test figures are the model's own, not autocast's.
    model.to(resolve_compute(params.train.device, "fp32").device)
    test = pd.read_csv(layout.split_file("test"), dtype=str, keep_default_na=False)
    if params.is_token_task:
        metrics, predictions = evaluate_tokens_torch(model, tokenizer, test, params.data.labels,
                                                     params.model.max_length, params.train.eval_batch_size)
    else:
        probabilities = predict_proba_torch(model, tokenizer, test["text"].tolist(), params.model.max_length,
                                            params.train.eval_batch_size)
        metrics, predictions = evaluate_frame(test, probabilities, params.data.labels)
    write_evaluation(metrics, predictions, layout.eval_dir)
    entity = f"entity_f1={metrics['entity_f1']:.4f} " if "entity_f1" in metrics else ""
    print(f"test: {entity}accuracy={metrics['accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f} (n={metrics['n']})")


def export(layout: ProjectLayout, params: Params) -> None:
    import pandas as pd

    from components.export.parity import check_parity
    from components.export.to_onnx import export_onnx

    train = pd.read_csv(layout.split_file("train"), dtype=str, keep_default_na=False)
    calibration = train["text"].sample(n=min(params.export.calibration_texts, len(train)),
                                       random_state=params.train.seed).tolist()
    result = export_onnx(layout.model_dir, layout.onnx_dir, opset=params.export.opset,
                         precision=params.export.precision, max_length=params.model.max_length,
                         plan=params.export.plan(), calibration_texts=calibration)
    scheme = f" {result.quantization}" if result.quantization else ""
    fp16 = f"; largest fp32 activation {result.fp16_range_max:.4g} < 65504" if result.fp16_range_max is not None else ""
    print(f"exported {result.model_path} ({result.precision}{scheme}, {result.model_bytes:,} "
          f"bytes; fp32 {result.fp32_bytes:,}{fp16}); fused: {result.fused_operators}")
    test = pd.read_csv(layout.split_file("test"), dtype=str, keep_default_na=False)
    parity = check_parity(layout.model_dir, layout.onnx_dir, test["text"].tolist(), test["label"].tolist(),
                          max_length=params.model.max_length)
    layout.parity_file.parent.mkdir(parents=True, exist_ok=True)
    # Written whatever the figures: the gate judges them, so a failure is recorded with its numbers.
    layout.parity_file.write_text(json.dumps(parity.model_dump(), indent=2) + "\n")
    print(f"parity ({parity.precision} on {', '.join(parity.providers)}): agreement={parity.agreement:.4f} "
          f"accuracy_drop={parity.accuracy_drop:+.4f} (n={parity.n})")
    if parity.note:
        print(f"parity note: {parity.note}")


STAGES: dict[str, Callable[[ProjectLayout, Params], None]] = {
    "validate": validate,
    "preprocess": preprocess,
    "adapt": adapt,
    "start": start,
    "train": train,
    "evaluate": evaluate,
    "export": export,
}
