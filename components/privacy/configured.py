"""The scanner a project's params describe (privacy:, data.pii), for the commands and flows that ingest. Apart
from screening.py so that the stages, which import ingest's data store, do not depend on the model loader."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from components.config import Params, PrivacyParams
    from components.privacy.pii import PiiScanner


def scanner_for(params: Params, project_root: Path) -> PiiScanner | None:
    """The scanner ingest uses under params (None under data.pii: off: Presidio is not even imported)."""
    return None if params.data.pii == "off" else build_scanner_for(params.privacy, project_root)


def build_scanner_for(privacy: PrivacyParams, project_root: Path) -> PiiScanner:
    """The scanner privacy: describes; the NER model, if any, loaded from its export directory."""
    from components.privacy.pii import build_scanner

    tagger = None
    if privacy.ner_model is not None:
        from components.export.predictor import OnnxTokenTagger

        model_dir = privacy.ner_model if privacy.ner_model.is_absolute() else project_root / privacy.ner_model
        tagger = OnnxTokenTagger(model_dir)
    return build_scanner(tagger, min_score=privacy.min_score, types=privacy.types)
