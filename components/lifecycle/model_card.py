"""The model card of a registered version (README.md in its artifacts, the Hugging Face convention):
what a person deciding whether to use the model needs, from the version's own tags and figures."""

from __future__ import annotations

import json
from typing import Any

INTENDED_USE = {
    "sequence-classification": "Labels short English texts with one of the labels below, the way the training "
                               "data labelled them.",
    "token-classification": "Finds named entities of the types below in English sentences, with character "
                            "offsets, the way the training data tagged them.",
}
LIMITS = ("Judged only on the test split of the data listed here: text from another domain, period or language "
          "may score lower; the drift checks and `tunegate monitor` watch for that. Predictions are the {precision} "
          "ONNX model's, which the parity check compared with the PyTorch model it was exported from.")
# What each export precision is for (export.precision in params.yaml).
PRECISION_USE = {
    "int8": "int8 weights and matrix products, for CPUs (onnxruntime's CPU provider).",
    "fp16": "fp16 weights and arithmetic, for GPUs: serve with the CUDA provider "
            "(serve.providers: [CUDAExecutionProvider, CPUExecutionProvider]).",
    "fp32": "the exported fp32 graph, unrounded; runs on CPUs and GPUs.",
}


def _listed(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    return ", ".join(f"`{item}`" for item in value) if isinstance(value, list) else str(value)


def _mapping_of(value: Any) -> dict | None:
    """A dict tag as tracking wrote it: the dict itself, or its JSON once read back from MLflow; None when it
    is neither, or empty."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, dict) and value else None


def _robustness_section(figures: Any) -> list[str]:
    """The invariance table (tracking.robustness_tag)."""
    figures = _mapping_of(figures)
    if figures is None:
        return []
    rows = [f"| {kind} | {'n/a' if v.get('invariance') is None else format(v['invariance'], '.4f')} "
            f"| {v.get('n', '?')} | {v.get('flipped', '?')} |" for kind, v in figures.items() if isinstance(v, dict)]
    return ["## Robustness (invariance)", "",
            ("The share of test predictions that stayed the same when the text was perturbed in a way that keeps "
             "its label (a typo, casing, punctuation, whitespace, another name); components/robustness."), "",
            "| perturbation | unchanged | rows | changed |", "|---|---|---|---|", *rows, ""]


def _slices_section(slices: Any) -> list[str]:
    """The per-slice table (evaluate.slices; tracking.version_tags' "slices")."""
    slices = _mapping_of(slices)
    if slices is None:
        return []
    entity = any("entity_f1" in entry for entry in slices.values() if isinstance(entry, dict))

    def figure(entry: dict, key: str) -> str:
        return format(entry[key], ".4f") if isinstance(entry.get(key), (int, float)) else "n/a"

    rows = [f"| {name} | {entry.get('selects', entry.get('kind', ''))} | {entry.get('rows', '?')} | "
            + (f"{figure(entry, 'entity_f1')} | " if entity else "")
            + f"{figure(entry, 'accuracy')} | {figure(entry, 'macro_f1')} | "
            + ("yes" if entry.get("judged") else f"no (< {entry.get('min_rows', '?')} rows)") + " |"
            for name, entry in slices.items() if isinstance(entry, dict)]
    return ["## Slices", "",
            ("The test metrics of named groups of test rows (evaluate.slices in params.yaml), from the same "
             "served predictions; a slice with fewer rows than evaluate.min_slice_rows is reported, not gated."), "",
            "| slice | selects | rows | " + ("entity F1 | " if entity else "") + "accuracy | macro F1 | judged |",
            "|---|---|---|" + ("---|" if entity else "") + "---|---|---|", *rows, ""]


def vs_champion_line(comparison: Any) -> list[str]:
    """The gate's paired comparison with the champion (tracking.vs_champion_tag): the difference with its interval,
    as a line under the gate's verdict; nothing without one (no champion, the point rule, an older version)."""
    found = _mapping_of(comparison)
    if found is None or not all(isinstance(found.get(key), (int, float)) for key in ("difference", "low", "high")):
        return []
    confidence = found.get("confidence", 0.95)
    mcnemar = (f", McNemar exact p {found['mcnemar_p']:.3g}" if isinstance(found.get("mcnemar_p"), (int, float))
               else "")
    return [(f"Against champion v{found.get('champion_version', '?')} on the same {found.get('n', '?')} test rows: "
             f"{found.get('metric', '?')} champion − challenger {found['difference']:+.4f}, "
             f"{confidence * 100:g}% interval [{found['low']:+.4f}, {found['high']:+.4f}] "
             f"({found.get('resamples', '?')} paired resamples{mcnemar}); positive: the challenger is worse."), ""]


def template_of(tags: dict[str, Any]) -> str | None:
    """data.template from the version's params tag (tracking.version_tags), or None (none, or an older tag)."""
    params = _mapping_of(tags.get("params")) or {}
    data = params.get("data") if isinstance(params.get("data"), dict) else {}
    template = data.get("template")
    return template if isinstance(template, str) else None


def _template_lines(template: str | None) -> list[str]:
    if template is None:
        return []
    return [(f"Input template: `{template}`. The model was trained, evaluated and is served reading each text "
             "inside it (data.template); the service applies it itself, so send the raw text."), ""]


def _batch_size_lines(picked: dict | None) -> list[str]:
    """The batch size train.batch_size: auto picked, within what, and what became of the learning rate."""
    if not picked or "batch_size" not in picked:
        return []
    budget = picked.get("memory_budget_bytes")
    within = f" within {budget / 2**30:.2f} GiB of {'GPU memory' if picked.get('memory') == 'cuda' else 'RAM'}" \
        if isinstance(budget, (int, float)) else ""
    rule = picked.get("learning_rate_rule", "unchanged")
    rate = (f"learning rate {picked['learning_rate']:g}, " if isinstance(picked.get("learning_rate"), (int, float))
            else "")
    how = ("train.learning_rate as given" if rule == "unchanged"
           else f"train.learning_rate scaled by the {rule} rule from a batch of 32")
    return [f"- batch size: {picked['batch_size']}, picked by trial steps{within} (train.batch_size: auto); "
            f"{rate}{how} (train.auto_batch_lr)"]


def render_model_card(model_name: str, tags: dict[str, Any], parity: dict[str, Any], gate_summary: str) -> str:
    """Markdown for the version described by `tags` (tracking.version_tags), its export `parity`
    report (artifacts/export/parity.json) and the gate's summary."""
    task = str(tags.get("task", "sequence-classification"))
    metrics = [f"| {name.removeprefix('test_').replace('_', ' ')} | {value} |"
               for name, value in tags.items() if name.startswith("test_") and name != "test_rows"]
    agreement = parity.get("agreement")
    drop = parity.get("accuracy_drop")
    precision = str(parity.get("precision", "int8"))  # reports from before fp16 carry none: int8 or fp32
    where = f", on {', '.join(parity['providers'])}" if parity.get("providers") else ""
    parity_line = (f"Agreement with the PyTorch model {agreement:.4f}, {parity.get('metric', 'accuracy')} drop "
                   f"{drop:.4f}, on {parity.get('n')} test rows ({precision}{where})."
                   if isinstance(agreement, float) and isinstance(drop, float) else "Not recorded.")
    if parity.get("note"):
        parity_line += f" Note: {parity['note']}."
    return "\n".join([
        "---",
        "library_name: onnxruntime",
        f"pipeline_tag: {'token-classification' if task == 'token-classification' else 'text-classification'}",
        f"base_model: {tags.get('base_model', 'unknown')}",
        "---",
        "",
        f"# {model_name}",
        "",
        f"{task.replace('-', ' ').capitalize()}, fine-tuned and served by tunegate.",
        "",
        "## Intended use",
        "",
        INTENDED_USE.get(task, ""),
        "",
        f"Labels: {_listed(tags.get('labels', []))}.",
        "",
        *_template_lines(template_of(tags)),
        f"Precision: **{precision}**: {PRECISION_USE.get(precision, '')}",
        "",
        "## Training data and code",
        "",
        f"- base model: `{tags.get('base_model', 'unknown')}`",
        *([f"- distilled from the teacher `{tags['teacher']}` (distill in params)"] if tags.get("teacher") else []),
        *([f"- encoder layers: {tags['layers']}, the base model's layers {_listed(tags['base_layers'])} "
           "(model.keep_layers)"] if tags.get("base_layers") else []),
        *_batch_size_lines(_mapping_of(tags.get("batch_size"))),
        f"- data version (DVC): `{tags.get('data_hash', 'unknown')}`",
        f"- batches: {_listed(tags.get('data_batches', []))}",
        f"- git commit: `{tags.get('git_commit', 'unknown')}`",
        "",
        f"## Test metrics (the {precision} ONNX model, as served)",
        "",
        f"On {tags.get('test_rows', '?')} test rows, never trained on.",
        "",
        "| metric | value |",
        "|---|---|",
        *metrics,
        "",
        "## Export parity",
        "",
        parity_line,
        "",
        *_slices_section(tags.get("slices")),
        *_robustness_section(tags.get("robustness")),
        "## Gate",
        "",
        f"Verdict: **{tags.get('gate', 'unknown')}**.",
        "",
        *vs_champion_line(tags.get("vs_champion")),
        "```",
        gate_summary.strip(),
        "```",
        "",
        *([(f"## Explanations\n\nThe test split's most confident errors and a sample of correct answers, each "
            f"with the words that made the model answer so, and the deletion test: {tags['explain_report']}\n")]
          if tags.get("explain_report") else []),
        "## Limits",
        "",
        LIMITS.format(precision=precision),
        "",
        "## Use",
        "",
        "```python",
        "import mlflow, pandas as pd",
        f'model = mlflow.pyfunc.load_model("models:/{model_name}@champion")',
        'model.predict(pd.DataFrame({"text": ["some text"]}))',
        "```",
        "",
    ])
