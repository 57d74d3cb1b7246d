"""The ML stages as dvc.yaml runs them: each reads its inputs from the project layout, calls the
step's functions and writes its outputs back. `dvc repro` and the Prefect flow both end up here."""

from __future__ import annotations

import json
from typing import Callable

from components.config import Params
from components.layout import SPLITS, ProjectLayout


def validate(layout: ProjectLayout, params: Params) -> None:
    from components.ingest import read_dataset
    from components.validate import assert_valid, build_data_docs, validate_dataset

    dataset = read_dataset(layout.data_dir)
    report = validate_dataset(dataset, params.data, source=str(layout.data_dir))
    report.write(layout.validation_report)
    # Written pass or fail: the HTML is where a person looks first when a run stops here.
    docs = build_data_docs(dataset, params.data, layout.validation_docs, source=str(layout.data_dir))
    print(f"{report.summary()}\nData Docs: {docs}")
    assert_valid(report)  # a failing suite stops the pipeline before training


def preprocess(layout: ProjectLayout, params: Params) -> None:
    from components.ingest import read_dataset
    from components.modeling import load_tokenizer, resolve_model_source
    from components.preprocess import assign_splits, save_tokenized, tokenize_split

    tokenizer = load_tokenizer(resolve_model_source(params.model.base_model))
    splits = assign_splits(read_dataset(layout.data_dir), params.split)
    layout.splits_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        splits[name].to_csv(layout.split_file(name), index=False, lineterminator="\n")
        tokenized = tokenize_split(splits[name], tokenizer, params.data.labels, params.model.max_length)
        save_tokenized(tokenized, layout.tokenized_file(name))
        print(f"{name}: {len(tokenized)} examples")


def train(layout: ProjectLayout, params: Params) -> None:
    from components.modeling import load_sequence_classifier, load_tokenizer, resolve_model_source
    from components.preprocess import load_tokenized
    from components.train import save_model, seed_everything, train_classifier

    source = resolve_model_source(params.model.base_model)
    tokenizer = load_tokenizer(source)
    seed_everything(params.train.seed)  # before the new head is initialised, not just before training
    model = load_sequence_classifier(source, params.data.labels)
    result, best_state = train_classifier(
        model, load_tokenized(layout.tokenized_file("train")), load_tokenized(layout.tokenized_file("validation")),
        params.data.labels, params.train, pad_id=tokenizer.pad_token_id,
    )
    tokenizer.model_max_length = params.model.max_length
    save_model(model, tokenizer, best_state, layout.model_dir)
    result.write(layout.train_history)


def evaluate(layout: ProjectLayout, params: Params) -> None:
    import pandas as pd

    from components.evaluate import evaluate_frame, predict_proba_torch, write_evaluation
    from components.export import load_torch_classifier

    model, tokenizer = load_torch_classifier(layout.model_dir)  # the same model the parity check compares
    test = pd.read_csv(layout.split_file("test"), dtype=str, keep_default_na=False)
    probabilities = predict_proba_torch(model, tokenizer, test["text"].tolist(), params.model.max_length,
                                        params.train.eval_batch_size)
    metrics, predictions = evaluate_frame(test, probabilities, params.data.labels)
    write_evaluation(metrics, predictions, layout.eval_dir)
    print(f"test: accuracy={metrics['accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f} (n={metrics['n']})")


def export(layout: ProjectLayout, params: Params) -> None:
    import pandas as pd

    from components.export import QuantizationPlan, check_parity, export_onnx

    plan = QuantizationPlan(params.export.per_channel, tuple(params.export.quantize_ops), tuple(params.export.keep_float))
    result = export_onnx(layout.model_dir, layout.onnx_dir, opset=params.export.opset,
                         quantize=params.export.quantize, max_length=params.model.max_length, plan=plan)
    print(f"exported {result.model_path} ({result.precision}, {result.int8_bytes or result.fp32_bytes:,} bytes; "
          f"fp32 {result.fp32_bytes:,}); fused: {result.fused_operators}")
    test = pd.read_csv(layout.split_file("test"), dtype=str, keep_default_na=False)
    parity = check_parity(layout.model_dir, layout.onnx_dir, test["text"].tolist(), test["label"].tolist(),
                          max_length=params.model.max_length)
    layout.parity_file.parent.mkdir(parents=True, exist_ok=True)
    # Written whatever the figures: the gate judges them, so a failure is recorded with its numbers.
    layout.parity_file.write_text(json.dumps(parity.model_dump(), indent=2) + "\n")
    print(f"parity: agreement={parity.agreement:.4f} accuracy_drop={parity.accuracy_drop:+.4f} (n={parity.n})")


STAGES: dict[str, Callable[[ProjectLayout, Params], None]] = {
    "validate": validate,
    "preprocess": preprocess,
    "train": train,
    "evaluate": evaluate,
    "export": export,
}
