"""Gate: decide whether a challenger may go on towards production, and say why.

The challenger is judged as it will be served (the ONNX export at export.precision: int8, fp16 or
fp32), on thresholds, on its parity with the PyTorch model, and against the current champion re-scored
on the same test rows.

"At most this much worse than the champion" (max_regression, max_forgetting, max_slice_regression) is judged
by gate.regression_rule: by default on the paired bootstrap interval of (champion - challenger) over the same
rows (components/lifecycle/paired.py), so that a verdict is not decided by which rows the test split holds.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from components.config import ROBUSTNESS_TOKEN_KINDS as TOKEN_KINDS
from components.config import ExportParams, GateParams
from components.lifecycle.paired import (
    OUTCOMES,
    MetricUnavailable,
    PairedComparison,
    PairingError,
    paired_bootstrap,
    slice_positions,
)


class GateCheck(BaseModel):
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str
    # value is judged against threshold: for a regression check by the interval rule the upper end of
    # (champion - challenger) against the margin, by the point rule (challenger - champion) against -margin.
    # A regression check judged on the interval: the paired comparison behind it (paired.PairedComparison's
    # fields and the allowed upper end), for the report and MLflow. None for every other check.
    interval: dict | None = None


# (the challenger's figure, the champion's, rows) -> what a regression check compares, for its detail.
Describe = Callable[[float, float, int], str]


class GateDecision(BaseModel):
    passed: bool
    checks: list[GateCheck]
    champion_version: str | None = None

    @property
    def reasons(self) -> list[str]:
        return [f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return "\n".join([f"gate {verdict}"] + [f"  {reason}" for reason in self.reasons])


def _at_least(name: str, value: float, threshold: float, what: str) -> GateCheck:
    return GateCheck(name=name, passed=value >= threshold, value=value, threshold=threshold,
                     detail=f"{what} {value:.4f} (required >= {threshold:.4f})")


def decide(
    challenger: dict,
    parity: dict,
    champion: dict | None,
    champion_version: str | None,
    gate: GateParams,
    export: ExportParams,
    earlier_rows: tuple[dict, dict] | None = None,
    teacher: dict | None = None,
    robustness: dict | None = None,
) -> GateDecision:
    """`challenger` and `champion` are metrics of the served models on the same test rows;
    `earlier_rows` the (challenger, champion) metrics on the test rows of the champion's own batches."""
    checks = [
        _at_least("min_accuracy", challenger["accuracy"], gate.min_accuracy, "test accuracy"),
        _at_least("min_macro_f1", challenger["macro_f1"], gate.min_macro_f1, "test macro-F1"),
    ]
    if "entity_f1" in challenger:
        checks.append(_at_least("min_entity_f1", challenger["entity_f1"], gate.min_entity_f1,
                                "test entity F1 (exact span and type)"))
    # Parity reports written before fp16 existed carry no precision: they were int8 or fp32 exports.
    precision = parity.get("precision", "int8")
    where = f" on {', '.join(parity['providers'])}" if parity.get("providers") else ""
    checks += [
        _at_least("export_agreement", parity["agreement"], export.min_agreement,
                  f"{precision} ONNX{where} vs PyTorch prediction agreement"),
        GateCheck(name="export_accuracy_drop", passed=parity["accuracy_drop"] <= export.max_accuracy_drop,
                  value=parity["accuracy_drop"], threshold=export.max_accuracy_drop,
                  detail=f"accuracy drop from the {precision} export {parity['accuracy_drop']:+.4f} "
                         f"(allowed <= {export.max_accuracy_drop:.4f})"
                         + (f"; {parity['note']}" if parity.get("note") else "")),
    ]
    if "precision" in parity and precision != export.precision:
        # A parity report of another export than the one configured judges nothing about this one.
        checks.append(GateCheck(name="export_precision", passed=False, value=0.0, threshold=0.0,
                                detail=f"the parity report is of a {precision} export, export.precision is "
                                       f"{export.precision}: export again (`dvc repro export`)"))
    if champion is None:
        checks.append(GateCheck(name="vs_champion", passed=True, value=0.0, threshold=0.0,
                                detail="no champion yet: judged on thresholds alone"))
    else:
        checks.append(_vs_champion_check(challenger, champion, champion_version, gate))
    if earlier_rows is not None:
        checks.append(_forgetting_check(*earlier_rows, champion_version, gate))
    if teacher is not None and gate.max_teacher_gap is not None:
        checks.append(_teacher_gap_check(challenger, teacher, gate))
    # robustness: the robustness stage's figures (artifacts/robustness/metrics.json), None if it never ran.
    checks += _invariance_checks(robustness, gate, token_task="entity_f1" in challenger)
    # evaluate.slices: "slices" in the metrics (components/model/slices.py), the champion's on the same rows.
    checks += _slice_checks(challenger.get("slices"), None if champion is None else champion.get("slices"),
                            champion_version, gate, outcomes=(challenger.get(OUTCOMES),
                                                              None if champion is None else champion.get(OUTCOMES)))
    return GateDecision(passed=all(c.passed for c in checks), checks=checks, champion_version=champion_version)


def _teacher_gap_check(challenger: dict, teacher: dict, gate: GateParams) -> GateCheck:
    """Distillation: the served student against its teacher's test metric (the teacher's PyTorch model)."""
    metric = gate.compare_metric
    gap = teacher[metric] - challenger[metric]
    return GateCheck(
        name="max_teacher_gap", passed=gap <= gate.max_teacher_gap, value=gap, threshold=gate.max_teacher_gap,
        detail=f"{metric} {challenger[metric]:.4f} vs teacher {teacher[metric]:.4f} on the same test rows "
               f"(trails by {gap:+.4f}; allowed <= {gate.max_teacher_gap:.4f})",
    )


def _vs_champion_check(challenger: dict, champion: dict, champion_version: str | None, gate: GateParams) -> GateCheck:
    metric = gate.compare_metric

    def describe(ours: float, theirs: float, n: int) -> str:
        return f"{metric} {ours:.4f} vs champion v{champion_version} {theirs:.4f} on the same {n} test rows"

    return _regression_check("vs_champion", gate.max_regression, gate, (challenger[metric], champion[metric]),
                             (challenger.get(OUTCOMES), champion.get(OUTCOMES)), challenger["n"], describe)


def _forgetting_check(challenger: dict, champion: dict, champion_version: str | None, gate: GateParams) -> GateCheck:
    metric = gate.compare_metric

    def describe(ours: float, theirs: float, n: int) -> str:
        return (f"{metric} on the {n} test rows of the batches v{champion_version} was trained on: "
                f"{ours:.4f} vs {theirs:.4f}")

    return _regression_check("no_forgetting", gate.max_forgetting, gate, (challenger[metric], champion[metric]),
                             (challenger.get(OUTCOMES), champion.get(OUTCOMES)), challenger["n"], describe)


def _regression_check(name: str, allowed: float, gate: GateParams, values: tuple[float, float],
                      outcomes: tuple[dict | None, dict | None], n: int, describe: Describe,
                      slice_name: str | None = None) -> GateCheck:
    """The challenger at most `allowed` worse than the champion on gate.compare_metric, by gate.regression_rule.

    values: the (challenger, champion) figures, for the point rule; outcomes: their per-row outcomes, for the
    interval (None in scores cached before they were recorded: the point rule then, said in the detail);
    slice_name: compare on that slice's rows only."""
    if gate.regression_rule == "point":
        return _point_check(name, allowed, values, n, describe)
    ours, theirs = outcomes
    if ours is None or theirs is None:
        whose = "the challenger's" if ours is None else "the champion's"
        return _point_check(name, allowed, values, n, describe,
                            f"; judged by the point rule: {whose} scores carry no per-row outcomes (scored before "
                            "they were recorded), so there is no interval")
    rows = None
    if slice_name is not None:
        rows, their_rows = slice_positions(ours, slice_name), slice_positions(theirs, slice_name)
        if rows is None or their_rows is None:
            return _point_check(name, allowed, values, n, describe,
                                "; judged by the point rule: the outcomes do not record this slice's rows")
        if rows != their_rows:
            return _unpaired_check(name, allowed, describe(*values, n), "the slice selects other rows of the "
                                   "champion's outcomes than of the challenger's")
    try:
        comparison = paired_bootstrap(theirs, ours, gate.compare_metric, rows=rows, confidence=gate.confidence,
                                      resamples=gate.bootstrap_resamples, seed=gate.bootstrap_seed, margin=allowed,
                                      present_only=slice_name is not None)
    except PairingError as fault:
        return _unpaired_check(name, allowed, describe(*values, n), str(fault))
    except MetricUnavailable as missing:
        return _point_check(name, allowed, values, n, describe, f"; judged by the point rule: {missing}")
    passed = comparison.high <= allowed
    return GateCheck(name=name, passed=passed, value=comparison.high, threshold=allowed,
                     detail=describe(comparison.challenger, comparison.champion, comparison.n) + ": "
                            + interval_text(comparison, allowed, refused=not passed),
                     interval={**comparison.model_dump(), "allowed": allowed})


def interval_text(comparison: PairedComparison, allowed: float, refused: bool = True) -> str:
    """`champion − challenger +0.0046, 95% interval [-0.0031, +0.0122] (2000 paired resamples); allowed upper
    end <= 0.0100`, then McNemar's figures for accuracy and, for a refusal on too few rows to show even a tie,
    how many would be needed (a pass needs no more rows; its interval still records rows_needed)."""
    text = (f"champion − challenger {comparison.difference:+.4f}, {comparison.confidence * 100:g}% interval "
            f"[{comparison.low:+.4f}, {comparison.high:+.4f}] ({comparison.resamples} paired resamples); "
            f"allowed upper end <= {allowed:.4f}")
    if comparison.mcnemar_p is not None:
        text += (f"; McNemar: {comparison.champion_only_right} rows right only for the champion, "
                 f"{comparison.challenger_only_right} only for the challenger, exact p {comparison.mcnemar_p:.3g}")
    if refused and comparison.rows_needed is not None:
        text += (f"; the interval is ±{comparison.half_width:.4f} wide, more than the {allowed:.4f} allowed, so "
                 f"even a tie could not be shown within it on {comparison.n} rows: about {comparison.rows_needed} "
                 "would be needed")
    return text


def _point_check(name: str, allowed: float, values: tuple[float, float], n: int, describe: Describe,
                 note: str = "") -> GateCheck:
    """The point rule: the bare difference (challenger - champion) against -allowed."""
    ours, theirs = values
    difference = ours - theirs
    return GateCheck(name=name, passed=difference >= -allowed, value=difference, threshold=-allowed,
                     detail=f"{describe(ours, theirs, n)} ({difference:+.4f}; allowed >= {-allowed:+.4f}){note}")


def _unpaired_check(name: str, allowed: float, described: str, fault: str) -> GateCheck:
    """Outcomes that cannot be paired row by row: a fault, never a silent misalignment."""
    return GateCheck(name=name, passed=False, value=0.0, threshold=allowed,
                     detail=f"{described}: cannot be compared row by row: {fault}. Re-score both models on the "
                            "same test rows")


RUN_ROBUSTNESS = "run the robustness stage after export (`dvc repro robustness`, or `tunegate stage robustness`)"


def _invariance_checks(report: dict | None, gate: GateParams, token_task: bool) -> list[GateCheck]:
    """gate.min_invariance against the robustness stage's figures, one check per kind. A number judges
    every kind the report holds; a mapping the kinds it names (a named kind the report lacks fails); 0
    judges nothing, and the figures a report holds are still listed, as passes, for the reader."""
    setting = gate.min_invariance
    figures = {kind: values for kind, values in (report or {}).items() if isinstance(values, dict)}
    if isinstance(setting, dict):
        thresholds = {kind: share for kind, share in setting.items() if share > 0}
    elif setting > 0 and not figures:
        where = "the robustness report holds no kind" if report is not None else "no robustness report"
        return [GateCheck(name="min_invariance", passed=False, value=0.0, threshold=setting,
                          detail=f"gate.min_invariance is {setting} but there is {where} "
                                 f"(artifacts/robustness/metrics.json): {RUN_ROBUSTNESS}")]
    else:
        thresholds = {kind: setting for kind in figures if setting > 0}
    checks = []
    for kind in [*figures, *(kind for kind in thresholds if kind not in figures)]:
        threshold = thresholds.get(kind, 0.0)
        name = f"min_invariance_{kind}"
        if kind not in figures:
            why = (f"; token classification measures only {', '.join(TOKEN_KINDS)}: drop {kind} from "
                   "gate.min_invariance" if token_task and kind not in TOKEN_KINDS
                   else f" with {kind} in robustness.kinds")
            checks.append(GateCheck(name=name, passed=False, value=0.0, threshold=threshold,
                                    detail=f"gate.min_invariance asks for {kind} >= {threshold:.4f} but the robustness "
                                           f"report has no {kind} figures: {RUN_ROBUSTNESS}{why}"))
            continue
        share, n, flipped = figures[kind].get("invariance"), figures[kind].get("n", 0), figures[kind].get("flipped", 0)
        if share is None or not n:
            checks.append(GateCheck(name=name, passed=True, value=1.0, threshold=threshold,
                                    detail=f"not judged: no test row could be perturbed by {kind}"))
            continue
        required = f"required >= {threshold:.4f}" if threshold > 0 else "not judged: gate.min_invariance is 0"
        checks.append(GateCheck(
            name=name, passed=share >= threshold, value=share, threshold=threshold,
            detail=f"invariance under {kind} {share:.4f}: {flipped} of {n} perturbed test rows changed prediction "
                   f"({required}; listed in artifacts/robustness/flipped.csv)"))
    return checks


SHADOW_FIGURES_TAG = "shadow"  # JSON {requests, agreed, errors, dropped}: one tag, so always consistent
# Each service replica writes its own figures under "shadow.<replica id>", so none overwrites another's;
# the version's figures are their sum (plus the single `shadow` tag of versions written before replicas had ids).
SHADOW_REPLICA_TAG_PREFIX = f"{SHADOW_FIGURES_TAG}."
SHADOW_FIGURE_NAMES = ("requests", "agreed", "errors", "dropped")


def _figures_in(value: str | None) -> dict[str, int]:
    """One figures tag's counts; zeros for a tag that is absent or not the figures' JSON."""
    import json

    try:
        found = json.loads(value or "{}")
        return {key: int(found.get(key, 0)) for key in SHADOW_FIGURE_NAMES}
    except (ValueError, TypeError, AttributeError):
        return dict.fromkeys(SHADOW_FIGURE_NAMES, 0)


def shadow_figures(tags: dict[str, str]) -> dict[str, int]:
    """The shadow figures the serving shadow wrote on a version (components/serving/shadow.py), summed over
    the replicas that wrote them; zeros if none."""
    total = dict.fromkeys(SHADOW_FIGURE_NAMES, 0)
    for key, value in tags.items():
        if key == SHADOW_FIGURES_TAG or key.startswith(SHADOW_REPLICA_TAG_PREFIX):
            for name, count in _figures_in(value).items():
                total[name] += count
    return total


def shadow_check(tags: dict[str, str], gate: GateParams) -> GateCheck | None:
    """gate.min_shadow_agreement over at least gate.min_shadow_requests shadowed texts, from the figures the
    serving shadow wrote on the version's tags (components/serving/shadow.py). None when not required.

    Judged before promotion, not at registration: the figures only grow while the version waits."""
    if gate.min_shadow_agreement is None:
        return None
    threshold, needed = gate.min_shadow_agreement, gate.min_shadow_requests
    figures = shadow_figures(tags)
    requests, agreed = figures["requests"], figures["agreed"]
    share = agreed / requests if requests else 0.0
    if requests < needed:
        return GateCheck(name="min_shadow_agreement", passed=False, value=share, threshold=threshold,
                         detail=f"only {requests} of the {needed} shadowed requests required so far (agreement "
                                f"{share:.4f}): serve with serve.shadow: challenger and wait, see `tunegate "
                                f"shadow-report`")
    return _at_least("min_shadow_agreement", share, threshold,
                     f"shadow agreement with the champion on {requests} live requests")


def _slice_checks(slices: dict | None, champion_slices: dict | None, champion_version: str | None,
                  gate: GateParams, outcomes: tuple[dict | None, dict | None] = (None, None)) -> list[GateCheck]:
    """Per slice of evaluate.slices: gate.min_slice_metric on the challenger's compare_metric, and
    gate.max_slice_regression against the champion re-scored on the same slice rows. A slice with fewer
    rows than evaluate.min_slice_rows is reported and not gated; with neither setting, each slice's
    figure is listed as a pass for the reader. outcomes: the (challenger's, champion's) per-row outcomes."""
    metric = gate.compare_metric
    if not slices:
        settings = [name for name in ("min_slice_metric", "max_slice_regression") if getattr(gate, name) is not None]
        return [GateCheck(name=name, passed=False, value=0.0, threshold=getattr(gate, name),
                          detail=f"gate.{name} is set but evaluate.slices is empty: name the slices to judge "
                                 f"there, or set gate.{name}: null") for name in settings]
    checks = []
    for name, entry in slices.items():
        where = f"slice {name} ({entry.get('selects', entry.get('kind', ''))})"
        if not entry.get("judged") or metric not in entry:
            checks.append(GateCheck(name=f"slice_{name}", passed=True, value=float(entry["rows"]),
                                    threshold=float(entry.get("min_rows", 0)),
                                    detail=f"{where}: not judged ({entry['rows']} rows < min_slice_rows "
                                           f"{entry.get('min_rows', '?')})"))
            continue
        value = entry[metric]
        if gate.min_slice_metric is None and gate.max_slice_regression is None:
            checks.append(GateCheck(name=f"slice_{name}", passed=True, value=value, threshold=0.0,
                                    detail=f"{where}: {metric} {value:.4f} on {entry['rows']} rows (not gated: "
                                           "gate.min_slice_metric and gate.max_slice_regression are null)"))
        if gate.min_slice_metric is not None:
            checks.append(GateCheck(
                name=f"min_slice_metric_{name}", passed=value >= gate.min_slice_metric, value=value,
                threshold=gate.min_slice_metric,
                detail=f"{where}: {metric} {value:.4f} on {entry['rows']} rows (required >= {gate.min_slice_metric:.4f})"))
        if gate.max_slice_regression is not None:
            checks.append(_slice_regression_check(name, where, entry, champion_slices, champion_version, gate,
                                                  outcomes))
    return checks


def _slice_regression_check(name: str, where: str, entry: dict, champion_slices: dict | None,
                            champion_version: str | None, gate: GateParams,
                            outcomes: tuple[dict | None, dict | None]) -> GateCheck:
    metric, allowed = gate.compare_metric, gate.max_slice_regression
    check = f"slice_vs_champion_{name}"
    if champion_version is None:
        return GateCheck(name=check, passed=True, value=0.0, threshold=-allowed,
                         detail=f"{where}: no champion yet: judged on min_slice_metric alone")
    theirs = (champion_slices or {}).get(name)
    if theirs is None or metric not in theirs:
        # The flow re-scores the champion with today's evaluate.slices: a missing figure is a fault, not a pass.
        return GateCheck(name=check, passed=False, value=0.0, threshold=-allowed,
                         detail=f"{where}: champion v{champion_version} has no {metric} on this slice to compare "
                                "with (it was not re-scored with evaluate.slices)")

    def describe(ours: float, their_value: float, n: int) -> str:
        return f"{where}: {metric} {ours:.4f} vs champion v{champion_version} {their_value:.4f} on the same {n} rows"

    return _regression_check(check, allowed, gate, (entry[metric], theirs[metric]), outcomes, entry["rows"],
                             describe, slice_name=name)
