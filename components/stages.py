"""The ML stages as dvc.yaml runs them: each reads its inputs from the project layout, calls the
step's functions and writes its outputs back. `dvc repro` and the Prefect flow both end up here."""

from __future__ import annotations

import json
from typing import Callable

from components.config import ConfigError, Params
from components.layout import SPLITS, ProjectLayout


def validate(layout: ProjectLayout, params: Params) -> None:
    """The dataset suite, a chunk of the dataset at a time: memory stays flat with its size."""
    from components.data.validation.chunked import build_sample_data_docs, stored_chunks, validate_chunks
    from components.data.validation.report import assert_valid

    source = str(layout.data_dir)
    chunks = stored_chunks(layout.data_dir)
    checked = validate_chunks(chunks, params.data, source=source, task=params.task)
    checked.report.write(layout.validation_report)
    # Written pass or fail: the HTML is where a person looks first when a run stops here.
    docs = build_sample_data_docs(chunks, checked, params.data, layout.validation_docs, source=source, task=params.task)
    print(f"{checked.report.summary()}\nData Docs: {docs}")
    assert_valid(checked.report, layout.validation_report)  # a failing suite stops the pipeline before training


def preprocess(layout: ProjectLayout, params: Params) -> None:
    """The splits and their tokenized rows, a chunk of the dataset at a time: memory stays flat with its size."""
    from components.data.dataset import DataStore
    from components.data.preprocess import (
        CHUNK_ROWS,
        tokenize_split,
        tokenize_tagged_split,
        write_split_files,
        write_template_record,
    )
    from components.model.modeling import load_tokenizer, resolve_model_source

    tokenizer = load_tokenizer(resolve_model_source(params.model.base_model))
    store = DataStore(layout.data_dir)
    batches = store.required_batches()

    def tokenize(frame):
        if params.is_token_task:
            return tokenize_tagged_split(frame, tokenizer, params.model_labels, params.model.max_length,
                                         word_shapes=params.model.word_shapes)
        return tokenize_split(frame, tokenizer, params.data.labels, params.model.max_length,
                              template=params.data.template)

    layout.splits_dir.mkdir(parents=True, exist_ok=True)
    counts = write_split_files(store.read_chunks(CHUNK_ROWS, batches), params.split, params.data.keep_columns,
                               tokenize, {name: layout.split_file(name) for name in SPLITS},
                               {name: layout.tokenized_file(name) for name in SPLITS},
                               token_level=params.is_token_task, word_shapes=params.model.word_shapes,
                               total_rows=sum(batch.accepted for batch in batches))
    for name in SPLITS:
        print(f"{name}: {counts[name]} examples")
    # The teacher and distill stages follow it (a changed template or model.word_shapes re-trains the teacher).
    write_template_record(layout.splits_dir, params.data.template, params.model.word_shapes)


def adapt(layout: ProjectLayout, params: Params) -> None:
    """Masked-language-model training on the training split's text (when adapt.enabled)."""
    import shutil

    from components.model.adapt import AdaptResult, adapt_language_model, write_card

    if layout.adapted_dir.exists():
        shutil.rmtree(layout.adapted_dir)
    if not params.adapt.enabled:
        write_card(AdaptResult(enabled=False, base_model=params.model.base_model), layout.adapted_dir)
        print("adapt: disabled (adapt.enabled: false); fine-tuning starts from the base model")
        return
    from components.model.compute import resolve_compute  # imports torch: past the skip, which takes a second
    from components.model.modeling import resolve_model_source

    texts = layout.read_split("train")["text"].tolist()
    compute = resolve_compute(params.train.device, params.train.precision)
    result = adapt_language_model(resolve_model_source(params.model.base_model), params.model.base_model, texts,
                                  params.adapt, params.model.max_length, layout.adapted_dir, compute)
    print(f"adapt: MLM loss {result.mlm_loss_first_epoch:.4f} -> {result.mlm_loss_last_epoch:.4f} over "
          f"{result.epochs} epoch(s) on {result.texts} texts in {result.seconds:.0f} s")


def start(layout: ProjectLayout, params: Params) -> None:
    """Where fine-tuning starts: the base model, or the champion's weights (train.init_from)."""
    from components.lifecycle.signing import check_pytorch_weights
    from components.lifecycle.tracking import open_registry
    from components.model.continual import prepare_starting_point

    point = prepare_starting_point(params.train.init_from, params.model.base_model, layout.start_dir,
                                   lambda: open_registry(params, layout), check_weights=check_pytorch_weights)
    where = f"champion v{point.champion_version}" if point.source == "champion" else params.model.base_model
    print(f"start: fine-tuning starts from {where}" + (f" ({point.note})" if point.note else ""))


def teacher(layout: ProjectLayout, params: Params) -> None:
    """Fine-tune the distillation teacher (distill.enabled) with the student's training code on the
    teacher's own tokenization of the splits; its test metrics beside it. A card saying "skipped" otherwise."""
    import shutil

    from components.model.distill import DistillPaths, write_json

    paths = DistillPaths(layout.artifacts)
    if paths.teacher_dir.exists():
        shutil.rmtree(paths.teacher_dir)
    if not params.distill.enabled:
        write_json(paths.teacher_card, {"enabled": False})  # nothing else: no change downstream
        print("teacher: skipped (distill.enabled: false)")
        return
    # Imported past the skip: a skipped stage takes a second, not five.
    from components.model.checkpoints import Checkpointer
    from components.model.compute import resolve_compute
    from components.model.distill import score_on_test, teacher_fingerprint, tokenize_frame
    from components.model.modeling import load_classifier, load_tokenizer, resolve_model_source
    from components.model.shape_channel import add_word_shapes
    from components.model.train import save_model, seed_everything, train_classifier

    settings = params.distill.teacher_train
    try:
        source = resolve_model_source(params.distill.teacher_model)
    except ConfigError as error:
        raise ConfigError(str(error).replace("model.base_model", "distill.teacher_model")) from None
    tokenizer = load_tokenizer(source)
    frames = {name: layout.read_split(name) for name in SPLITS}
    seed_everything(settings.seed)
    model = load_classifier(source, params.model_labels, token_level=params.is_token_task)
    if params.model.word_shapes:  # the teacher reads capitalization as the student does
        model = add_word_shapes(model, source)
    checkpoints = Checkpointer(layout.checkpoints_dir / teacher_fingerprint(
        params, layout.split_file("train"), layout.split_file("validation")))
    train_split, validation_split = (tokenize_frame(frames[name], tokenizer, params) for name in ("train", "validation"))
    result, model = train_classifier(
        model, train_split, validation_split, params.model_labels, settings, pad_id=tokenizer.pad_token_id,
        entity_types=params.data.labels if params.is_token_task else None, checkpoints=checkpoints)
    tokenizer.model_max_length = params.model.max_length
    save_model(model, tokenizer, paths.teacher_model)
    result.write(paths.teacher_history)
    model.to(resolve_compute(settings.device, "fp32").device)  # scored as the evaluate stage scores the student
    metrics = score_on_test(model, tokenizer, frames["test"], params,
                            settings.scoring_batch_size(result.batch_sizes.get("eval_batch_size")))
    write_json(paths.teacher_metrics, metrics)
    write_json(paths.teacher_card, {"enabled": True, "teacher_model": params.distill.teacher_model,
                                    "train": settings.model_dump(mode="json"), "best_epoch": result.best_epoch})
    checkpoints.clear()
    entity = f"entity_f1={metrics['entity_f1']:.4f} " if "entity_f1" in metrics else ""
    print(f"teacher {params.distill.teacher_model}: test {entity}accuracy={metrics['accuracy']:.4f} "
          f"macro_f1={metrics['macro_f1']:.4f} (n={metrics['n']})")


def distill(layout: ProjectLayout, params: Params) -> None:
    """The teacher's logits for every training row and for the unlabelled texts (distill.unlabelled),
    keyed by row id: the student's soft targets. A card saying "skipped" when distill is off.

    Logits made before from the same inputs (the stage re-runs when only distill.temperature or
    distill.alpha changed) are copied back from .tunegate/checkpoints/ instead of labelling again."""
    import shutil

    from components.model.distill import DistillPaths, write_json

    paths = DistillPaths(layout.artifacts)
    if paths.distill_dir.exists():
        shutil.rmtree(paths.distill_dir)
    if not params.distill.enabled:
        write_json(paths.targets_card, {"enabled": False})
        print("distill: skipped (distill.enabled: false)")
        return
    import pandas as pd

    from components.model.compute import resolve_compute
    from components.model.distill import (
        augmented_rows,
        file_md5,
        keep_targets,
        read_unlabelled,
        reuse_kept_targets,
        sequence_logits,
        targets_fingerprint,
        unlabelled_path,
        word_logits,
        write_targets,
    )
    from components.model.evaluate import split_joined
    from components.model.modeling import load_torch_model

    unlabelled = unlabelled_path(layout.root, params.distill.unlabelled) if params.distill.unlabelled else None
    inputs = [layout.split_file("train")]
    if unlabelled is not None or params.distill.augment_copies:  # what is kept depends on every split
        inputs = [layout.split_file(name) for name in SPLITS] + ([unlabelled] if unlabelled else [])
    kept = layout.checkpoints_dir / targets_fingerprint(params, paths.teacher_model, inputs)
    if reuse_kept_targets(kept, paths.distill_dir):
        print(f"distill: the teacher's logits for the same teacher, data, settings and code were made before: "
              f"reused {kept.name}")
        return

    splits = {name: layout.read_split(name) for name in SPLITS}
    rows = splits["train"][["id", "text"]].assign(source="train")
    unlabelled_md5 = None
    if unlabelled is not None:
        known = set().union(*(frame["id"] for frame in splits.values()))
        extra = read_unlabelled(unlabelled, params.distill.unlabelled_text_column, params, known)
        rows = pd.concat([rows, extra.assign(source="unlabelled")], ignore_index=True)
        unlabelled_md5 = file_md5(unlabelled)
    if params.distill.augment_copies:
        known_texts = set().union(*(frame["text"] for frame in splits.values()))
        augmented = augmented_rows(splits["train"], params, known_texts)
        rows = pd.concat([rows, augmented.assign(source="augmented")], ignore_index=True)
    model, tokenizer = load_torch_model(paths.teacher_model)
    # fp32 logits, on the GPU when there is one; the teacher's settings throughout (the student's may be swept).
    model.to(resolve_compute(params.distill.teacher_train.device, "fp32").device)
    batch_size = params.distill.teacher_train.scoring_batch_size()
    if params.is_token_task:
        logits = word_logits(model, tokenizer, split_joined(rows["text"]), params.model.max_length, batch_size)
    else:
        logits = list(sequence_logits(model, tokenizer, rows["text"].tolist(), params.model.max_length, batch_size,
                                      template=params.data.template))
    write_targets(paths.targets, rows, logits, params.is_token_task)
    counts = rows["source"].value_counts()
    write_json(paths.targets_card, {"enabled": True, "teacher_model": params.distill.teacher_model,
                                    "train_rows": int(counts.get("train", 0)),
                                    "unlabelled_rows": int(counts.get("unlabelled", 0)),
                                    "augmented_rows": int(counts.get("augmented", 0)),
                                    "unlabelled": params.distill.unlabelled, "unlabelled_md5": unlabelled_md5,
                                    "level": "word" if params.is_token_task else "text"})
    print(f"distill: teacher logits for {counts.get('train', 0)} training rows, "
          f"{counts.get('unlabelled', 0)} unlabelled texts and {counts.get('augmented', 0)} augmented ones "
          f"-> {paths.targets}")
    keep_targets(paths.distill_dir, kept)


def train(layout: ProjectLayout, params: Params) -> None:
    from components.model.distributed import launched_ranks, relaunch_under_torchrun
    from components.model.training_run import train_model, train_outputs

    if params.train.processes > 1 and not launched_ranks().distributed:
        # The same command again, as train.processes ranks under torchrun: dvc repro, the flow and a
        # user's own torchrun command all end up in train_model below.
        relaunch_under_torchrun(params.train.processes, ["tunegate", "--project", str(layout.root), "stage", "train"])
        return
    train_model(layout, params, train_outputs(layout, params))


def evaluate(layout: ProjectLayout, params: Params) -> None:
    from components.model.evaluation_run import evaluate_on_test

    evaluate_on_test(layout, params)


def export(layout: ProjectLayout, params: Params) -> None:
    from components.export.parity import check_parity
    from components.export.to_onnx import export_onnx

    train = layout.read_split("train")
    calibration = train["text"].sample(n=min(params.export.calibration_texts, len(train)),
                                       random_state=params.train.seed).tolist()
    result = export_onnx(layout.model_dir, layout.onnx_dir, opset=params.export.opset,
                         precision=params.export.precision, max_length=params.model.max_length,
                         plan=params.export.plan(), calibration_texts=calibration, template=params.data.template)
    scheme = f" {result.quantization}" if result.quantization else ""
    fp16 = f"; largest fp32 activation {result.fp16_range_max:.4g} < 65504" if result.fp16_range_max is not None else ""
    print(f"exported {result.model_path} ({result.precision}{scheme}, {result.model_bytes:,} "
          f"bytes; fp32 {result.fp32_bytes:,}{fp16}); fused: {result.fused_operators}")
    test = layout.read_split("test")
    parity = check_parity(layout.model_dir, layout.onnx_dir, test["text"].tolist(), test["label"].tolist(),
                          max_length=params.model.max_length)
    layout.parity_file.parent.mkdir(parents=True, exist_ok=True)
    # Written whatever the figures: the gate judges them, so a failure is recorded with its numbers.
    layout.parity_file.write_text(json.dumps(parity.model_dump(), indent=2) + "\n")
    print(f"parity ({parity.precision} on {', '.join(parity.providers)}): agreement={parity.agreement:.4f} "
          f"accuracy_drop={parity.accuracy_drop:+.4f} (n={parity.n})")
    if parity.note:
        print(f"parity note: {parity.note}")


def explain(layout: ProjectLayout, params: Params) -> None:
    """The served model's explanation report: its most confident test errors and a sample of correct
    answers with word attributions, and the deletion test (components/explain/report.py)."""
    from components.explain.report import explain_paths, faithfulness_sentence, write_report, write_skipped

    if not params.explain.enabled:
        print(f"explain: off (explain.enabled: false); {write_skipped(layout)} says so")
        return
    report = write_report(layout, params)
    summary = report.summary
    print(f"explain: {summary['errors_shown']} errors (of {summary['errors_total']}) and {summary['correct_shown']} "
          f"correct answers explained in {summary['seconds']:.1f} s ({summary['model_calls']} model calls); "
          f"report: {explain_paths(layout).report}")
    print(faithfulness_sentence(report.faithfulness, params.is_token_task))


def robustness(layout: ProjectLayout, params: Params) -> None:
    """Invariance tests of the served model (the ONNX export) on perturbed test rows; the gate judges them."""
    from components.export.predictor import OnnxTextClassifier, OnnxTokenTagger, default_providers, read_model_card
    from components.robustness.invariance import InvarianceReport, measure_invariance

    if not params.robustness.enabled:
        InvarianceReport.skipped(params.task).write(layout.robustness_metrics, layout.robustness_flipped)
        print("robustness: off (robustness.enabled: false); no invariance figures")
        return
    card = read_model_card(layout.onnx_dir)
    served = OnnxTokenTagger if params.is_token_task else OnnxTextClassifier
    # Where the gate scores it: an fp16 export on CUDA when there is one (the parity report says otherwise).
    predictor = served(layout.onnx_dir, default_providers(card.precision), warn_on_plan=False)
    test = layout.read_split("test")
    report = measure_invariance(predictor, test, params.robustness)
    metrics, flipped = report.write(layout.robustness_metrics, layout.robustness_flipped)
    print(f"{report.summary()}\nwrote {metrics} and {flipped} ({len(report.flipped)} changed predictions)")


STAGES: dict[str, Callable[[ProjectLayout, Params], None]] = {
    "validate": validate,
    "preprocess": preprocess,
    "adapt": adapt,
    "start": start,
    "teacher": teacher,
    "distill": distill,
    "train": train,
    "evaluate": evaluate,
    "export": export,
    "robustness": robustness,
    "explain": explain,
}

# The stage names in pipeline order: what `tunegate stage` accepts and what the retraining flow runs, in this
# order; dvc.yaml lists the same stages in the same order (tests/test_stage_names.py).
STAGE_NAMES: tuple[str, ...] = tuple(STAGES)
