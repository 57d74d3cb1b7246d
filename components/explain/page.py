"""Self-contained HTML of explanations: one page, inline CSS, no scripts and no external assets, so it
opens anywhere (a mail attachment, an artifact store, an air-gapped machine).

Each explanation shows its label and probability and its text with every word in a <span>: green
behind the words that pushed towards the label, red behind those that pushed against it, the colour's
strength by |value| (scaled per explanation by its largest |value|, so the strongest word is always
clearly coloured). Each word's span carries class="w pos|neg|zero", data-value (the attribution, as
repr() writes a float: it reads back exactly) and a title with the value, for people hovering and for
tests. All text is HTML-escaped; the text between words is kept as it was.
"""

from __future__ import annotations

import html

from components.explain.attributions import Explanation

# Towards the label / against it (RGB): green and red as most attribution plots use, and distinguishable
# for the common red-green colour blindness by strength and by the legend's words as well.
TOWARDS = (22, 163, 74)
AGAINST = (220, 38, 38)
MAX_ALPHA = 0.75

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 60rem;
       color: #1f2937; line-height: 1.5; padding: 0 1rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.intro, .note { color: #4b5563; }
.legend { display: flex; gap: 1.2rem; flex-wrap: wrap; font-size: .9rem; margin: 1rem 0; }
.legend span.swatch { display: inline-block; width: 1.1rem; height: .9rem; vertical-align: middle;
                      border-radius: 3px; margin-right: .35rem; }
.explanation { border: 1px solid #e5e7eb; border-radius: 8px; padding: .8rem 1rem; margin: 1rem 0; }
.head { font-size: .95rem; margin-bottom: .4rem; }
.label { font-weight: 600; }
.gold { color: #8a1c1c; font-weight: 600; }
.meta { color: #6b7280; font-size: .85rem; }
.text { font-size: 1.05rem; white-space: pre-wrap; }
.w { border-radius: 3px; padding: 0 1px; }
.w.span-word { text-decoration: underline; text-decoration-thickness: 2px; }
.top { font-size: .85rem; color: #374151; margin-top: .4rem; }
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _colour(value: float, scale: float) -> str:
    if value == 0 or scale <= 0:
        return "transparent"
    red, green, blue = TOWARDS if value > 0 else AGAINST
    alpha = MAX_ALPHA * min(1.0, abs(value) / scale)
    return f"rgba({red}, {green}, {blue}, {alpha:.3f})"


def _word_class(value: float) -> str:
    return "pos" if value > 0 else "neg" if value < 0 else "zero"


def _highlighted_text(explanation: Explanation) -> str:
    text = explanation.text
    scale = max((abs(w.value) for w in explanation.words), default=0.0)
    span_start, span_end = explanation.span if explanation.span is not None else (-1, -1)
    parts, previous = [], 0
    for word in sorted(explanation.words, key=lambda w: w.start):
        parts.append(_esc(text[previous:word.start]))
        classes = f"w {_word_class(word.value)}"
        if span_start <= word.start and word.end <= span_end:
            classes += " span-word"
        parts.append(
            f'<span class="{classes}" data-value="{word.value!r}" title="{_esc(f"{word.value:+.4f}")}" '
            f'style="background: {_colour(word.value, scale)}">{_esc(text[word.start:word.end])}</span>')
        previous = word.end
    parts.append(_esc(text[previous:]))
    return "".join(parts)


def _explanation_block(explanation: Explanation, top_k: int = 5) -> str:
    head = f'<span class="label">{_esc(explanation.label)}</span> &middot; p = {explanation.probability:.3f}'
    if explanation.span is not None:
        start, end = explanation.span
        head += f' &middot; entity &ldquo;{_esc(explanation.text[start:end])}&rdquo; (characters {start}&ndash;{end})'
    gold = explanation.extra.get("gold")
    if gold is not None and explanation.extra.get("correct") is False:  # an error: what the data says instead
        head += f' &middot; <span class="gold">gold: {_esc(str(gold))}</span>'
    meta = (f"with every word masked: {explanation.base_value:.3f} &middot; "
            f"{explanation.model_calls} model calls")
    top = ", ".join(f"{_esc(w.word)} {w.value:+.3f}" for w in explanation.top_words(top_k) if w.value > 0)
    return (
        '<div class="explanation">'
        f'<div class="head">{head} <span class="meta">({meta})</span></div>'
        f'<div class="text">{_highlighted_text(explanation)}</div>'
        + (f'<div class="top">towards {_esc(explanation.label)}: {top}</div>' if top else "")
        + "</div>"
    )


def _legend() -> str:
    def swatch(rgb: tuple[int, int, int], alpha: float) -> str:
        return f'<span class="swatch" style="background: rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha})"></span>'

    return (
        '<div class="legend">'
        f"<div>{swatch(TOWARDS, MAX_ALPHA)}towards the label</div>"
        f"<div>{swatch(AGAINST, MAX_ALPHA)}against the label</div>"
        f"<div>{swatch(TOWARDS, 0.2)}{swatch(TOWARDS, 0.45)}{swatch(TOWARDS, MAX_ALPHA)}stronger colour: "
        "larger share of the probability (scaled per text)</div>"
        "<div>hover a word for its value; values add up to p minus the all-masked value</div>"
        "</div>"
    )


def _page(title: str, intro: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n"
        + (f'<p class="intro">{_esc(intro)}</p>\n' if intro else "")
        + _legend() + "\n" + body + "\n</body>\n</html>\n"
    )


def render_explanations(explanations: list[Explanation], title: str, intro: str = "") -> str:
    """One self-contained HTML page (inline CSS, no scripts or external assets): each explanation's
    text with its words highlighted (towards the label: one colour, against: another, strength by value),
    its label and probability; each word's value in a title attribute and in a data-value attribute."""
    body = "\n".join(_explanation_block(e) for e in explanations) or '<p class="note">Nothing to explain.</p>'
    return _page(title, intro, body)


def render_sections(sections: list[tuple[str, str, list[Explanation]]], title: str, intro: str = "") -> str:
    """Like render_explanations with headed sections: (section title, section note, explanations)."""
    blocks = []
    for heading, note, explanations in sections:
        blocks.append(f"<h2>{_esc(heading)}</h2>")
        if note:
            blocks.append(f'<p class="note">{_esc(note)}</p>')
        blocks.extend(_explanation_block(e) for e in explanations)
        if not explanations:
            blocks.append('<p class="note">None.</p>')
    return _page(title, intro, "\n".join(blocks))
