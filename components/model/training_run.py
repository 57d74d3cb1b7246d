"""The train stage's work, below the stage layer: fine-tune from the starting point on the tokenized splits
into the stage's outputs. The train stage, the sweep's trials and the learning curve's points all train here."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from components.config import ConfigError, Params
from components.layout import ProjectLayout


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

    from components.model.fingerprint import update_with_files

    digest = hashlib.sha256(params.model_dump_json(include={"task", "model", "adapt", "train"}).encode())
    digest.update(json.dumps(params.model_labels).encode())
    update_with_files(digest, (layout.tokenized_file("train"), layout.tokenized_file("validation"),
                               layout.adapted_dir / "tunegate-adapt.json", layout.start_dir / "start.json"),
                      missing=b"-")  # no adapt or start output: the stages did not run, the key still stands
    if params.distill.enabled:  # only then: the checkpoints of plain runs keep their keys
        from components.model.distill import DistillPaths

        digest.update(params.distill.model_dump_json().encode())
        update_with_files(digest, [DistillPaths(layout.artifacts).targets], missing=b"-")
    return digest.hexdigest()[:16]


def train_model(layout: ProjectLayout, params: Params, outputs: TrainOutputs):
    """Fine-tune from the starting point on the tokenized splits; the best epoch's model goes to outputs."""
    from components.data.preprocess import load_tokenized
    from components.data.word_shapes import uses_word_shapes
    from components.model.adapt import adapted_source
    from components.model.checkpoints import Checkpointer
    from components.model.continual import START_MODEL, read_starting_point, replay_mix
    from components.model.distributed import launched_ranks
    from components.model.modeling import (
        KEPT_LAYERS_ATTRIBUTE,
        load_classifier,
        load_tokenizer,
        resolve_model_source,
    )
    from components.model.shape_channel import add_word_shapes
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
    from_champion = point is not None and point.source == "champion"
    # model.keep_layers cuts down the base model (or its adapted copy); a champion was cut down when it trained.
    model = load_classifier(source, params.model_labels, token_level=params.is_token_task,
                            keep_layers=None if from_champion else params.model.keep_layers)
    if from_champion and params.model.keep_layers is not None:
        kept = getattr(model.config, KEPT_LAYERS_ATTRIBUTE, None)
        if kept != params.model.keep_layers:
            print(f"model.keep_layers {params.model.keep_layers}: the champion goes on with its own layers "
                  f"({'the base layers ' + str(kept) if kept is not None else 'all of the base layers'})")
    if uses_word_shapes(model.config) and not params.model.word_shapes:
        raise ConfigError(f"model.word_shapes: the starting model {source} reads word shapes; keep model.word_shapes: true")
    if params.model.word_shapes:
        model = add_word_shapes(model, source)
    # Batch ids only for replay (a start from the champion): reading them reads a string for every row.
    train_split = load_tokenized(layout.tokenized_file("train"), batch_ids=from_champion)
    labelled_rows, distillation = len(train_split), None
    if params.distill.enabled:
        train_split, distillation = _with_teacher_targets(layout, params, train_split, tokenizer)
    mix = None
    if point is not None and point.source == "champion":
        train_split, mix = replay_mix(train_split, point.champion_batches, params.train.replay_fraction,
                                      params.train.seed)
        print(f"continual: {mix['new_rows']} new rows + {mix['replayed_rows']} of {mix['old_rows']} rows the "
              f"champion v{point.champion_version} learned (replay_fraction {params.train.replay_fraction})")
    checkpoints = Checkpointer(outputs.checkpoint_dir)
    result, model = train_classifier(
        model, train_split, load_tokenized(layout.tokenized_file("validation"), batch_ids=False),
        params.model_labels, params.train,
        pad_id=tokenizer.pad_token_id, entity_types=params.data.labels if params.is_token_task else None,
        checkpoints=checkpoints, distillation=distillation,
    )
    if not launched_ranks().is_main:
        return result  # rank 0 writes the outputs: the same weights, once
    tokenizer.model_max_length = params.model.max_length
    save_model(model, tokenizer, outputs.model_dir)
    extra = {"start": point.source if point else "base", "adapted": adapted is not None}
    if mix:
        extra["replay"] = mix
    if distillation is not None:
        extra["distill"] = {"teacher_model": params.distill.teacher_model, "temperature": distillation.temperature,
                            "alpha": distillation.alpha, "labelled_rows": labelled_rows,
                            "teacher_only_rows": len(train_split) - labelled_rows}
    result = replace(result, extra=extra)
    result.write(outputs.history_file)
    checkpoints.clear()  # the run finished: the saved model is the result
    return result


def _with_teacher_targets(layout: ProjectLayout, params: Params, train_split, tokenizer):
    """The training split with the distill stage's teacher logits attached, and the KD loss settings."""
    from components.model.distill import DistillPaths, distilled_split, read_targets
    from components.model.train import Distillation

    paths = DistillPaths(layout.artifacts)
    if not paths.targets.is_file():
        raise ConfigError(f"distill.enabled is true but {paths.targets} is missing: run the teacher and distill "
                          "stages first (`dvc repro distill`)")
    frame = layout.read_split("train")
    split = distilled_split(train_split, frame, read_targets(paths.targets), tokenizer, params)
    print(f"distill: {len(train_split)} labelled + {len(split) - len(train_split)} unlabelled rows with "
          f"{params.distill.teacher_model}'s logits (T={params.distill.temperature}, alpha={params.distill.alpha})")
    return split, Distillation(temperature=params.distill.temperature, alpha=params.distill.alpha)
