"""data.template: the words a sequence classifier reads around each text, e.g. "Review: {text}".

One function applies it (apply_template) wherever a model reads text: the tokenized splits, the PyTorch
evaluation, the distillation teacher, the export's calibration and parity, and the served predictor,
which applies the template of its own export card to the raw text a client sends. Everything that
measures the data itself (validation, drift, monitoring, the splits' CSV files, explanations' words)
sees the raw text: the template is part of the model, not of the data.

Plain Python, no imports from the rest of tunegate: the serving predictor imports it.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

TEXT_FIELD = "text"
PLACEHOLDER = "{" + TEXT_FIELD + "}"


def template_refusal(template: str | None) -> str | None:
    """Why `template` cannot be used (a sentence that says what to write instead), or None when it can."""
    if template is None:
        return None
    example = 'e.g. "Review: {text}"'
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as error:  # a lone "{" or "}"
        return (f"data.template {template!r} is not a valid template ({error}); write literal braces as "
                f"{{{{ and }}}} and the text as {PLACEHOLDER}, {example}")
    names = [name for name, _, _ in fields]
    if names.count(TEXT_FIELD) != 1 or len(names) != 1:
        others = sorted({repr(name) for name in names if name != TEXT_FIELD})
        found = (f"it has {names.count(TEXT_FIELD)} {PLACEHOLDER}" + (f" and other fields {', '.join(others)}"
                                                                         if others else ""))
        return (f"data.template {template!r} must hold exactly one {PLACEHOLDER} and no other {{...}} field "
                f"({found}); {example}, with literal braces written {{{{ and }}}}")
    _, spec, conversion = fields[0]
    if spec or conversion:
        return (f"data.template {template!r}: write the placeholder as plain {PLACEHOLDER}, without a format "
                f"spec or conversion; {example}")
    if not template.replace(PLACEHOLDER, "").strip():
        return (f"data.template {template!r} adds nothing to the text; leave data.template out (null) to read the "
                f"text as it is, or add the words around it, {example}")
    return None


def token_task_refusal(template: str | None, token_task: bool) -> str | None:
    """Token classification tags the words of the text one by one and answers with character offsets into
    it: words from a template would be tagged too and shift every offset, so it is refused there."""
    if template is None or not token_task:
        return None
    return ("data.template: only for task: sequence-classification. A token classifier tags each word of the "
            "text and reports entity offsets into it; template words would be tagged and shift those offsets. "
            "Remove data.template (or set it to null)")


def template_refusal_for(template: str | None, token_task: bool) -> str | None:
    """Why `template` cannot go with a model of this kind (token_task: a token classifier), or None."""
    return template_refusal(template) or token_task_refusal(template, token_task)


def apply_template(template: str | None, texts: Iterable[str]) -> list[str]:
    """Each text as the model reads it: inside the template, or as it is when template is None.

    str.replace, not str.format: a text holding braces ("{x}") must come through unchanged, and literal
    braces in the template ({{ and }}) are unescaped the way format would."""
    texts = list(texts)
    if template is None:
        return texts
    refusal = template_refusal(template)
    if refusal:
        raise ValueError(refusal)
    before, after = _literals_around_text(template)
    return [f"{before}{text}{after}" for text in texts]


def _literals_around_text(template: str) -> tuple[str, str]:
    """The template's literal text before and after {text}, braces unescaped (the parser does that)."""
    before, after, seen = [], [], False
    for literal, name, _, _ in string.Formatter().parse(template):
        (after if seen else before).append(literal)
        seen = seen or name is not None
    return "".join(before), "".join(after)
