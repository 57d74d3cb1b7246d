"""Word attributions of the served model: Shapley values of the ONNX predictor's output over the words
of a text, computed by shap's Partition explainer.

What is explained is the model that is served (the ONNX graph behind the predictor, through its own
tokenizer), not the PyTorch model it was exported from, so an explanation describes the answers clients
get. The players are WORDS (components.entities.split_words: CoNLL-style words, punctuation a word of
its own, each with character offsets into the text), not sub-word tokens: a person reads words.

Masking. A masked word is replaced, in place, by the tokenizer's mask token ([MASK] for BERT-style
tokenizers; else its unknown token; else "..."): every other word keeps its position, so the tagger's
per-word outputs stay aligned and a classifier sees a text of the same shape. The text with no word
masked is the original text exactly, so the explained probability equals what the service answers.

Cost. `max_evals` bounds the texts the model scores per explanation, and it is a hard bound:
Explanation.model_calls counts the rows the model really scored and never exceeds it (no slack: shap's
Partition explainer may overshoot the budget it is given by one evaluation, so it is given one less; a
run that would exceed the bound raises instead of returning). With fewer evaluations than the words
need, the Partition explainer stops splitting its word clusters and a cluster's credit is shared evenly
by its words: coarser, never wrong in total (the values always sum to probability - base_value).

Determinism. The Partition explainer is deterministic except for the random tie-breaks of its work
queue; those draw from numpy's global generator, which is seeded here per explanation (and restored
afterwards, so callers' random state is untouched; a lock serialises explanations within a process so
that threads do not share the draws). The same text gives the same attributions.

Speed. shap's import takes about 3 s of CPU (once per process). Its numba kernels on this path are
swapped for their Python originals (see _python_kernels): compiling them cost 10 s or more per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Rows per model call inside one explanation: enough to amortise onnxruntime's per-call cost, few enough
# that the Partition explainer still spends the budget on the word groups that matter most (it picks the
# next batch of splits by how much the output moved).
BATCH_SIZE = 32
DEFAULT_MASK_TOKEN = "..."  # shap's choice when a tokenizer has no mask token
SEED = 0


@dataclass(frozen=True)
class WordAttribution:
    word: str
    start: int  # character offsets into the original text: text[start:end] == word
    end: int
    value: float  # Shapley value towards the explained output (the probability of `label`)

    def to_dict(self) -> dict:
        return {"word": self.word, "start": self.start, "end": self.end, "value": self.value}


@dataclass(frozen=True)
class Explanation:
    text: str
    label: str  # what is explained: the predicted class, or (NER) the entity type of `span`
    probability: float  # the model's probability of `label` on the whole text
    base_value: float  # ... with every word masked
    words: list[WordAttribution]
    model_calls: int  # texts the model scored for this explanation (<= the max_evals bound)
    span: tuple[int, int] | None = None  # NER: character offsets of the explained entity
    extra: dict = field(default_factory=dict)

    def top_words(self, k: int) -> list[WordAttribution]:
        """The k words that pushed most towards `label` (largest values first)."""
        return sorted(self.words, key=lambda w: w.value, reverse=True)[:k]

    def to_dict(self) -> dict:
        """The JSON form the CLI and the service return."""
        return {
            "text": self.text,
            "label": self.label,
            "probability": self.probability,
            "base_value": self.base_value,
            "model_calls": self.model_calls,
            "span": list(self.span) if self.span is not None else None,
            "words": [w.to_dict() for w in self.words],
            **({"extra": self.extra} if self.extra else {}),
        }


class BudgetExceeded(RuntimeError):
    """The explainer asked for more model calls than max_evals allows (a bug, never a silent overrun)."""


def mask_token_of(predictor: Any) -> str:
    """What a masked word becomes for this predictor: its tokenizer's mask token, else its unknown
    token (both are single tokens the model knows), else "..."."""
    tokenizer = getattr(predictor, "_tokenizer", None)
    for name in ("mask_token", "unk_token"):
        token = getattr(tokenizer, name, None)
        if isinstance(token, str) and token:
            return token
    return DEFAULT_MASK_TOKEN


def split_text(text: str) -> list[tuple[str, int, int]]:
    """The words explained: (word, start, end) with text[start:end] == word, as the tagger splits text."""
    from components.entities import split_words

    return split_words(text)


def masked_text(text: str, words: Sequence[tuple[str, int, int]], keep: Sequence[bool], mask_token: str) -> str:
    """`text` with each word not kept replaced by `mask_token` in place; the spacing between words and
    everything else stays as it was (all kept: the original text, exactly)."""
    parts, previous = [], 0
    for (word, start, end), kept in zip(words, keep):
        parts.append(text[previous:start])
        parts.append(word if kept else mask_token)
        previous = end
    parts.append(text[previous:])
    return "".join(parts)


class _Budget:
    """The texts the model scored for one explanation, and the bound they must stay under."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.calls = 0

    def take(self, n: int) -> None:
        if self.calls + n > self.bound:
            raise BudgetExceeded(f"the explainer asked for {self.calls + n} model calls, more than "
                                 f"max_evals={self.bound}")
        self.calls += n


def _word_tokenizer(text: str, words: Sequence[tuple[str, int, int]]):
    """A tokenizer in the shape shap's Text masker takes (input_ids and offset_mapping), for `text` only:
    the ids are word positions, so the masked rows shap builds say which words are kept."""

    def tokenize(s: str, return_offsets_mapping: bool = True) -> dict:
        if s == "":  # shap asks what an empty string becomes, to find prefix/suffix tokens: none here
            return {"input_ids": [], "offset_mapping": []} if return_offsets_mapping else {"input_ids": []}
        if s != text:
            raise ValueError("this word tokenizer only splits the text it was made for")
        out: dict = {"input_ids": list(range(len(words)))}
        if return_offsets_mapping:
            out["offset_mapping"] = [(start, end) for _, start, end in words]
        return out

    return tokenize


_KERNELS_SWAPPED = False
_GLOBAL_RANDOM = threading.Lock()


def _python_kernels() -> None:
    """Swap the numba kernels shap runs on this path for their plain-Python originals, once per process.

    numba compiles them on first use in every new process: 10 s of CPU here (40 s of wall time on a busy
    2-core machine), against 0.3 s for a whole 200-call explanation after that, and shap does not cache
    the compiled code. The kernels loop over one batch of masks (at most BATCH_SIZE) or one word tree
    (2 x words nodes), where Python is fast enough: the values are the same, without the compile.
    """
    global _KERNELS_SWAPPED
    if _KERNELS_SWAPPED:
        return
    from shap.explainers import _partition
    from shap.utils import _masked_model

    for module, names in ((_masked_model, ("_build_fixed_single_output", "_build_fixed_multi_output",
                                           "_init_masks", "_rec_fill_masks")),
                          (_partition, ("lower_credit",))):
        for name in names:
            kernel = getattr(module, name, None)  # another shap release may move one: it then stays compiled
            if kernel is not None:
                setattr(module, name, getattr(kernel, "py_func", kernel))  # recursive calls find the swapped name
    _KERNELS_SWAPPED = True


def _identity(x):
    return x


_identity.inverse = _identity  # type: ignore[attr-defined]  # shap's link API; its own identity is numba-compiled


def _shapley(text: str, words: Sequence[tuple[str, int, int]], score: Callable[[np.ndarray], np.ndarray],
             max_evals: int, output_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Shapley values of each output of `score` (rows of keep-masks [rows, words] in, [rows, outputs]
    out) over the words of `text`: (values [words, outputs], base value [outputs]). shap is asked for at
    most max_evals rows; `score` counts what it really scores."""
    import warnings

    with warnings.catch_warnings():  # shap's import sets up matplotlib colour maps with soon-deprecated calls
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import shap

    n = len(words)
    if n <= 1:
        # One word (or none): its Shapley value is exactly f(all) - f(none); shap's clustering needs two.
        outputs = score(np.array([[True] * n, [False] * n], dtype=bool).reshape(2, n))
        return (outputs[0] - outputs[1]).reshape(1, -1)[:n], outputs[1]

    def model(ids: np.ndarray) -> np.ndarray:  # shap's rows: a word's position when kept, -1 when masked
        return score(np.atleast_2d(np.asarray(ids)) >= 0)

    masker = shap.maskers.Text(_word_tokenizer(text, words), mask_token=-1, collapse_mask_token=False,
                               output_type="token_ids")
    _python_kernels()
    explainer = shap.Explainer(model, masker, algorithm="partition", link=_identity, linearize_link=False,
                               output_names=output_names)
    # The work queue's tie-breaks draw from numpy's global generator: seeded, the same text gives the same
    # values. The lock keeps two threads (a service) from drawing from it at once, which would mix their
    # draws; explanations in one process then run one at a time (the model calls dominate their cost).
    with _GLOBAL_RANDOM:
        state = np.random.get_state()
        np.random.seed(SEED)
        try:
            # One less than the bound: Partition's last batch may overshoot the budget it is given by one.
            result = explainer([text], max_evals=max_evals - 1, batch_size=BATCH_SIZE, silent=True)  # type: ignore
        finally:
            np.random.set_state(state)
    values = np.asarray(result.values[0], dtype=np.float64).reshape(n, -1)
    return values, np.asarray(result.base_values[0], dtype=np.float64).reshape(-1)


def _attributions(words: Sequence[tuple[str, int, int]], values: np.ndarray) -> list[WordAttribution]:
    return [WordAttribution(word, start, end, float(value)) for (word, start, end), value in zip(words, values)]


def _check_budget(max_evals: int) -> None:
    if max_evals < 3:
        raise ValueError(f"max_evals={max_evals}: an explanation needs at least 3 model calls "
                         "(the text, the text with every word masked, one split); explain.max_evals sets it")


def explain_texts(predict_proba: Callable[[list[str]], np.ndarray], labels: list[str], texts: list[str],
                  max_evals: int, target: str | None = None, *, mask_token: str | None = None) -> list[Explanation]:
    """Explain each text's predicted label (or `target`) with shap's Partition explainer over words.

    predict_proba: texts in, [texts, labels] probabilities out (OnnxTextClassifier.predict_proba).
    mask_token: what a masked word becomes; None: the predictor's own mask token when predict_proba is
    a predictor's bound method, else "...". Each text's explanation scores at most max_evals texts."""
    _check_budget(max_evals)
    if target is not None and target not in labels:
        raise ValueError(f"target {target!r} is not one of the model's labels {labels}")
    if mask_token is None:
        mask_token = mask_token_of(getattr(predict_proba, "__self__", None))
    explanations = []
    for text in texts:
        words = split_text(text)
        budget = _Budget(max_evals)
        budget.take(1)  # the label is chosen on the original text
        full = np.asarray(predict_proba([text]), dtype=np.float64)[0]
        index = labels.index(target) if target is not None else int(full.argmax())

        def score(keep: np.ndarray, text=text, words=words, index=index, full=full, budget=budget) -> np.ndarray:
            outputs = np.empty((len(keep), 1))
            todo = [row for row in range(len(keep)) if not keep[row].all()]
            outputs[[row for row in range(len(keep)) if keep[row].all()], 0] = full[index]  # scored already
            if todo:
                budget.take(len(todo))
                masked = [masked_text(text, words, keep[row], mask_token) for row in todo]
                outputs[todo, 0] = np.asarray(predict_proba(masked), dtype=np.float64)[:, index]
            return outputs

        # shap asks for at most max_evals rows; the original text among them is not scored again.
        values, base = _shapley(text, words, score, max_evals, [labels[index]])
        explanations.append(Explanation(
            text=text, label=labels[index], probability=float(full[index]), base_value=float(base[0]),
            words=_attributions(words, values[:, 0]), model_calls=budget.calls,
            extra={"mask_token": mask_token, **({"target": target} if target is not None else {})},
        ))
    return explanations


def explain_entities(tagger, text: str, max_evals: int) -> list[Explanation]:
    """NER: one explanation per predicted entity span of `text` (which words made it that type);
    `tagger` is components.export.predictor.OnnxTokenTagger.

    The explained output of a span is the mean, over the span's words, of the probability of the
    entity's type at that word (its B- tag plus its I- tag: the word belongs to an entity of that type).
    Every word may be masked, the span's own words included: they are usually the strongest evidence
    (a known name, its capital letter), and an explanation that held them fixed would credit the context
    alone. Masked words are replaced in place, so the span's words keep their positions.

    All spans of the text are explained by ONE Partition run with one output per span: the masked texts
    are shared, so the whole text costs at most max_evals model calls, and each explanation reports that
    shared count (extra["shared_by"] says by how many spans)."""
    _check_budget(max_evals)
    words = split_text(text)
    budget = _Budget(max_evals)
    budget.take(1)
    entities = tagger.predict([text])[0]["entities"]  # the spans the service answers
    if not entities:
        return []
    labels = tagger.labels
    mask_token = mask_token_of(tagger)
    spans, columns = [], []
    for entity in entities:
        positions = [i for i, (_, start, end) in enumerate(words) if start >= entity["start"] and end <= entity["end"]]
        if not positions:  # cannot happen: the tagger's spans are made of these words
            raise RuntimeError(f"entity {entity} covers none of the words of {text!r}")
        spans.append(positions)
        columns.append([i for i, tag in enumerate(labels) if tag in (f"B-{entity['type']}", f"I-{entity['type']}")])

    def score(keep: np.ndarray) -> np.ndarray:
        budget.take(len(keep))
        sentences = [[word if kept else mask_token for (word, _, _), kept in zip(words, row)] for row in keep]
        outputs = np.empty((len(sentences), len(spans)))
        for row, proba in enumerate(tagger.predict_word_proba(sentences)):
            for column, (positions, tags) in enumerate(zip(spans, columns)):
                outputs[row, column] = proba[np.ix_(positions, tags)].sum(axis=1).mean()
        return outputs

    names = [f"{e['type']} {e['text']}" for e in entities]
    values, base = _shapley(text, words, score, max_evals - 1, names)
    full = base + values.sum(axis=0)  # Shapley values add up to f(text) - f(all masked)
    return [
        Explanation(
            text=text, label=entity["type"], probability=float(full[k]), base_value=float(base[k]),
            words=_attributions(words, values[:, k]), model_calls=budget.calls,
            span=(entity["start"], entity["end"]),
            extra={"entity": entity["text"], "score": entity["score"], "shared_by": len(entities),
                   "mask_token": mask_token},
        )
        for k, entity in enumerate(entities)
    ]


def explain(predictor, text: str, max_evals: int) -> list[Explanation]:
    """Either task, on a loaded predictor (OnnxTextClassifier: one explanation; OnnxTokenTagger: one per entity)."""
    from components.export.predictor import OnnxTextClassifier, OnnxTokenTagger

    if not isinstance(text, str):
        raise TypeError(f"expected one text (a string), got {type(text).__name__}")
    if isinstance(predictor, OnnxTokenTagger):
        return explain_entities(predictor, text, max_evals)
    if isinstance(predictor, OnnxTextClassifier):
        return explain_texts(predictor.predict_proba, predictor.labels, [text], max_evals)
    raise TypeError(f"cannot explain a {type(predictor).__name__}: expected an OnnxTextClassifier or "
                    "OnnxTokenTagger (components.export.predictor.load_predictor)")
