"""What a person, the approval step and `tunegate shadow-report` read about a shadowed version: the
figures the service wrote on its registry tags, the gate's shadow requirement, and the latest
disagreements from the service's log (serve.shadow_log, on the machine that serves)."""

from __future__ import annotations

import json
from pathlib import Path

from components.config import GateParams
from components.lifecycle.gate import GateCheck, shadow_check
from components.serving.shadow import TAG_UPDATED, ShadowStats, read_disagreements


def shadow_summary(version: str, tags: dict[str, str], gate: GateParams) -> str:
    """One paragraph: the version's shadow figures and whether the gate's requirement holds."""
    stats = ShadowStats.from_tags(version, tags)
    if stats.requests or stats.errors or stats.dropped:
        against = f" (vs champion v{tags['shadow_champion']})" if tags.get("shadow_champion") else ""
        agreement = f"agreement {stats.agreement:.4f}" if stats.agreement is not None else "no agreement yet"
        figures = (f"v{version} shadowed {stats.requests} live requests{against}: {agreement}, {stats.errors} "
                   f"errors, {stats.dropped} dropped (queue full); updated {tags.get(TAG_UPDATED, '?')}")
    else:
        figures = (f"v{version} has not been shadowed yet (a service with serve.shadow: challenger writes its "
                   "figures on the version as it serves)")
    check = shadow_check(tags, gate)
    if check is None:
        requirement = "gate.min_shadow_agreement is not set: not required for promotion"
    else:
        requirement = (f"{'met' if check.passed else 'NOT met'}: {check.detail} (required: >= "
                       f"{gate.min_shadow_agreement:.4f} over >= {gate.min_shadow_requests} requests)")
    return f"{figures}\nshadow requirement {requirement}"


def _answer(prediction: dict) -> str:
    if "label" in prediction:
        score = prediction.get("score")
        return f"{prediction['label']}" + (f" ({score:.2f})" if isinstance(score, (int, float)) else "")
    entities = prediction.get("entities", [])
    return "; ".join(f"{e.get('type')}[{e.get('start')}:{e.get('end')}]" for e in entities) or "no entities"


def shadow_report(registry, gate: GateParams, log_path: Path, version: str | None = None,
                  last: int = 5) -> tuple[str, GateCheck | None]:
    """The report text and the gate's shadow check (None when not required) of `version`, by default
    the version behind `challenger`."""
    from components.lifecycle.registry import CHALLENGER

    if version is None:
        version = registry.aliases().get(CHALLENGER)
        if version is None:
            raise LookupError(f"model {registry.model_name!r} has no challenger: pass --version")
    info = registry.version(version)
    aliases = ", ".join(a for a, v in registry.aliases().items() if v == info.version) or "none"
    lines = [f"{registry.model_name} v{info.version} (aliases: {aliases})",
             shadow_summary(info.version, info.tags, gate)]
    found = read_disagreements(log_path, info.version, last)
    if found:
        lines.append(f"latest {len(found)} disagreements ({log_path}):")
        for record in found:
            text = json.dumps(record.get("text", ""), ensure_ascii=False)
            lines.append(f"  {record.get('time', '')}  champion v{record.get('champion_version')}: "
                         f"{_answer(record.get('champion') or {})}  |  v{info.version}: "
                         f"{_answer(record.get('challenger') or {})}  |  {text[:120]}")
    else:
        lines.append(f"no disagreement of v{info.version} logged in {log_path} (the log lies where the service runs)")
    return "\n".join(lines), shadow_check(info.tags, gate)
