"""Text in, label probabilities (or entities) out: an exported ONNX model plus its own tokenizer.

This module is what a serving process imports, so it needs neither torch nor the training code:
an export directory (see components.export.to_onnx) carries the graph, the tokenizer files and a small
JSON card with the task, the labels and the maximum sequence length. `load_predictor` opens an
export directory as the predictor of its task: an OnnxTextClassifier (one label per text) or an
OnnxTokenTagger (IOB2 tags per word, entities with character offsets per text).
"""

from __future__ import annotations

import json
import math
import threading
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.config import OUTSIDE_TAG, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION
from components.data.template import apply_template, template_refusal_for
from components.entities import first_subtoken_positions

MODEL_FILE = "model.onnx"
MODEL_CARD = "tunegate-model.json"
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class ModelCard(BaseModel):
    """What a served model needs to know beyond the graph itself, written next to it at export."""

    # A card written by a newer tunegate may carry more keys; they must not stop an older server.
    model_config = ConfigDict(extra="ignore", frozen=True)

    # Cards written before token classification existed carry no task: they are classifiers.
    task: Literal["sequence-classification", "token-classification"] = SEQUENCE_CLASSIFICATION
    labels: list[str] = Field(min_length=1, description="class names (or IOB2 tags) in logit order")
    # Token classification only: the entity types behind the tags (PER, LOC, ...), in data.labels order.
    entity_types: list[str] = Field(default_factory=list)
    max_length: int = Field(ge=1, description="tokens per text after truncation")
    precision: Literal["int8", "fp16", "fp32"]
    opset: int
    input_names: list[str] = Field(min_length=1)
    output_names: list[str] = ["logits"]
    graph_optimized: bool = False
    # Token classification: token_type_ids carry each word's shape (components/data/word_shapes.py).
    word_shapes: bool = False
    quantization: str | None = None  # int8 scheme (components/export/quantize.py); None: fp32 or an older card
    # data.template the model was trained with ("Review: {text}"): the predictor puts each raw text into it
    # before tokenizing, so clients send raw text. None: the text as it is (and every older card).
    template: str | None = None
    # The encoder's layers, and which of the base model's layers they are when model.keep_layers cut it
    # down (None: all of them, or a card from before).
    layers: int | None = None
    base_layers: list[int] | None = None

    @model_validator(mode="after")
    def _template_fits(self) -> ModelCard:
        if refusal := template_refusal_for(self.template, self.task == TOKEN_CLASSIFICATION):
            raise ValueError(refusal)
        return self


def read_model_card(model_dir: Path) -> ModelCard:
    path = Path(model_dir) / MODEL_CARD
    if not path.is_file():
        raise ValueError(f"{model_dir}: no {MODEL_CARD}; is this a directory written by tunegate's ONNX export?")
    try:
        return ModelCard.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValidationError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a valid model card: {error}") from None


def write_model_card(model_dir: Path, card: ModelCard) -> Path:
    path = Path(model_dir) / MODEL_CARD
    path.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def check_texts(texts: Any) -> list[str]:
    """The texts as a list, or a ValueError that says which item is wrong and why."""
    if isinstance(texts, str):
        # A bare string is iterable too: without this it would be classified one character at a time.
        raise ValueError("expected a list of strings, got a single string; wrap it in a list")
    if hasattr(texts, "tolist") and not isinstance(texts, Sequence):  # a pandas column or numpy array
        texts = texts.tolist()
    if not isinstance(texts, Sequence):
        raise ValueError(f"expected a list of strings, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {index} is {type(text).__name__}, not a string")
    return list(texts)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)  # no overflow on big logits
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def choose_providers(requested: Sequence[str]) -> list[str]:
    """The requested providers this onnxruntime build has, with CPU last as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in requested if p not in available]
    if missing:
        warnings.warn(
            f"onnxruntime here has no {missing} (it has {available}); using the rest of {list(requested)} and CPU",
            RuntimeWarning,
            stacklevel=3,
        )
    chosen = [p for p in requested if p in available]
    if CPU_PROVIDER not in chosen:
        chosen.append(CPU_PROVIDER)
    return chosen


def open_session(model_path: Path, providers: Sequence[str], intra_op_threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    chosen = choose_providers(providers)
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=chosen)
    # onnxruntime-gpu lists CUDA even where no GPU or CUDA library exists; it then logs an error and
    # quietly runs on CPU. Only the session knows what it really got.
    not_started = [p for p in chosen if p not in session.get_providers()]
    if not_started:
        warnings.warn(
            f"onnxruntime could not start {not_started} (see its log above); running on {session.get_providers()}",
            RuntimeWarning,
            stacklevel=3,
        )
    return session


# What one onnxruntime call costs beyond its tokens, in padded tokens: about 0.5 ms per call against
# about 15 us per token (MiniLM-L6 int8, 2 cores). A batch is split where the padding saved is worth
# more than the extra calls.
CALL_COST_TOKENS = 32


def length_groups(lengths: Sequence[int], call_cost: float = CALL_COST_TOKENS) -> list[list[int]]:
    """Indices of `lengths` in groups of similar length, each group one padded call: the partition of
    the length-sorted rows that minimizes padded tokens plus `call_cost` per call.

    A mixed batch padded to its longest text computes mostly padding; texts of 5 and 60 tokens in one
    call cost 120 tokens, in two 65 plus a call. Padding changes no row's result beyond float rounding
    (fp32, per-token and per-block int8; dynamic int8's per-batch range is the exception), so neither
    does the grouping.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    # Rows of equal length always share a call: moving them into the call whose longest row they are
    # adds no padding and never a call. So calls start only where the length changes, and the search
    # runs over those starts: at most max_length of them, however large the batch.
    starts = [k for k in range(len(order)) if k == 0 or lengths[order[k]] != lengths[order[k - 1]]]
    bounds = starts + [len(order)]
    cheapest = [0.0] + [math.inf] * len(starts)  # cheapest[j]: the rows before bounds[j]
    cut = [0] * len(bounds)
    for end in range(1, len(bounds)):
        width = lengths[order[bounds[end] - 1]]  # rows bounds[start]..bounds[end]-1 padded to the longest
        for start in range(end):
            cost = cheapest[start] + (bounds[end] - bounds[start]) * width + call_cost
            if cost < cheapest[end]:
                cheapest[end], cut[end] = cost, start
    groups, end = [], len(starts)
    while end:
        groups.append(order[bounds[cut[end]]:bounds[end]])
        end = cut[end]
    return groups[::-1]


def cuda_device_count() -> int:
    """CUDA devices the NVIDIA driver reports; 0 without a driver or a device.

    onnxruntime-gpu lists its CUDA provider wherever it is installed, GPU or not, and asking for it on a
    machine without one logs library load errors. The driver (libcuda) answers without torch and
    without starting a provider."""
    import ctypes

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def default_providers(precision: str) -> list[str]:
    """Providers for a caller that names none (the pyfunc model, the parity gate): the fp16 export on
    CUDA where there is a CUDA device and onnxruntime has the provider, everything else on the CPU."""
    import onnxruntime as ort

    if precision == "fp16" and CUDA_PROVIDER in ort.get_available_providers() and cuda_device_count() > 0:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def fp16_on_cpu_warning(precision: str, providers: Sequence[str]) -> str | None:
    """What to say when an fp16 export runs without CUDA, else None."""
    if precision != "fp16" or CUDA_PROVIDER in providers:
        return None
    return ("this export is fp16, a plan for GPUs: onnxruntime's CPU provider has no fp16 kernels for most of "
            "its ops (MatMul, Attention, Gemm, ...) and computes them in fp32 between casts, slower than the fp32 "
            "export. Serve it with serve.providers [CUDAExecutionProvider, CPUExecutionProvider], or export "
            "int8 (export.precision: int8) for CPUs.")


def gpu_plan_warning(quantization: str | None, providers: Sequence[str]) -> str | None:
    """What to say when an int8 CPU plan is about to run on a GPU, else None.

    The int8 schemes are built for onnxruntime's CPU kernels; its CUDA provider has none for
    MatMulInteger with uint8 activations, so per-token's int8 MatMuls run on the CPU with copies in
    between (49 of them). Measured on an H100 with a MiniLM-L6 classifier: the per-token export served
    755 texts/s at batch 32, the fp32 export 3,545 (PyTorch fp32 eager 2,905). The other schemes were
    not measured there."""
    if quantization is None or "CUDAExecutionProvider" not in providers:
        return None
    return (f"this export is {quantization} int8, a plan for CPUs: on the CUDA provider int8 MatMuls can fall "
            "back to the CPU. For GPU serving export with export.precision: fp16 (or fp32; per-token int8 vs fp32 "
            "on an H100: 755 vs 3,545 texts/s).")


class _OnnxModel:
    """An export directory's card, tokenizer and onnxruntime session."""

    TASK: str  # the card's task each subclass serves

    def __init__(
        self,
        model_dir: Path,
        providers: Sequence[str] = (CPU_PROVIDER,),
        intra_op_threads: int | None = None,
        *,
        max_length: int | None = None,
        length_grouping: bool = True,
        warn_on_plan: bool = True,
    ) -> None:
        """warn_on_plan: False for callers that knowingly run an export off its hardware (the parity
        gate on a machine without a GPU) and say so themselves."""
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.card = read_model_card(self.model_dir)
        if self.card.task != self.TASK:
            raise ValueError(f"{model_dir} holds a {self.card.task} model, not a {self.TASK} one; "
                             "open it with load_predictor, which picks the class from the card")
        self._max_length = max_length if max_length is not None else self.card.max_length
        # False: one call per batch, padded to its longest text (benchmarks compare the two).
        self.length_grouping = length_grouping
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), trust_remote_code=False)
        self._session = open_session(self.model_dir / MODEL_FILE, providers, intra_op_threads)
        self._input_names = [node.name for node in self._session.get_inputs()]
        advice = (gpu_plan_warning(self.card.quantization, self.providers)
                  or fp16_on_cpu_warning(self.card.precision, self.providers))
        if advice and warn_on_plan:
            warnings.warn(f"{model_dir}: {advice}", RuntimeWarning, stacklevel=2)
        # A fast tokenizer rewrites its truncation/padding state when a call's settings differ from the
        # last call's; two threads doing that at once fail with "Already borrowed". Sessions are thread-safe.
        self._tokenizer_lock = threading.Lock()

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def _feed(self, encoded: Any) -> dict[str, np.ndarray]:
        feed: dict[str, np.ndarray] = {}
        for name in self._input_names:
            if name in encoded:
                feed[name] = np.asarray(encoded[name], dtype=np.int64)
            elif name == "token_type_ids":  # single-segment input: all zeros, as the model was trained
                feed[name] = np.zeros_like(np.asarray(encoded["input_ids"], dtype=np.int64))
            else:
                raise ValueError(f"the tokenizer in {self.model_dir} does not produce the graph input {name!r}")
        return feed

    def _tokenize(self, texts: list, **kwargs) -> Any:
        """Token ids per text, unpadded (the tokenizer's lists): _logits_by_row pads each group."""
        with self._tokenizer_lock:
            return self._tokenizer(texts, truncation=True, max_length=self._max_length, padding=False, **kwargs)

    def _logits_by_row(self, features: Mapping[str, list[list[int]]]) -> list[np.ndarray]:
        """The logits of each row of unpadded features (input_ids, attention_mask, ...): [labels] for a
        classifier, [tokens, tags] for a tagger. Rows run in groups of similar length."""
        ids = features["input_ids"]
        pad_id = self._tokenizer.pad_token_id or 0
        results: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(ids)
        groups = length_groups([len(row) for row in ids]) if self.length_grouping else [list(range(len(ids)))]
        for group in groups:
            width = max(len(ids[i]) for i in group)
            padded = {}
            for name in self._input_names:  # what the graph takes; _feed fills or refuses the rest
                if name == "attention_mask" and name not in features:  # unpadded rows attend to every token
                    padded[name] = (np.arange(width) < np.array([[len(ids[i])] for i in group])).astype(np.int64)
                    continue
                if name not in features:
                    continue
                array = np.full((len(group), width), pad_id if name == "input_ids" else 0, dtype=np.int64)
                for slot, i in enumerate(group):
                    array[slot, :len(features[name][i])] = features[name][i]
                padded[name] = array
            logits = np.asarray(self._session.run(None, self._feed(padded))[0], dtype=np.float32)
            for slot, i in enumerate(group):
                results[i] = logits[slot] if logits.ndim == 2 else logits[slot, :len(ids[i])]
        return results

    @staticmethod
    def _check_batch_size(batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")


class OnnxTextClassifier(_OnnxModel):
    """An exported classifier directory, ready to label raw text.

    `max_length` overrides the card's value; only parity checks against a model evaluated at another
    length need it.

    `predict` is three steps a caller may also run apart, as the service does: `encode` (texts to token
    ids) and `answers` (probabilities to labels) on the event loop, `probabilities` (onnxruntime) on the
    model's own thread, which then does nothing but the model's work.
    """

    TASK = SEQUENCE_CLASSIFICATION

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = _truncating_copy(self._tokenizer, self._max_length)

    def _tokenize(self, texts: list, **kwargs) -> Any:
        """Raw texts into the card's template first (data.template): every caller (the service, batch
        scoring, the MLflow pyfunc, parity, robustness, explanations) sends what a client would send."""
        return super()._tokenize(apply_template(self.card.template, texts), **kwargs)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids as the model sees them: in the card's template, truncated, unpadded."""
        texts = check_texts(texts)
        if self._encoder is None:
            return [list(ids) for ids in self._tokenize(texts)["input_ids"]]
        # The private copy's settings never change, so no lock: any thread may encode while another runs.
        return [encoding.ids for encoding in self._encoder.encode_batch(apply_template(self.card.template, texts))]

    def probabilities(self, encoded: list[list[int]]) -> np.ndarray:
        """Class probabilities per row of `encode`'s output, in one pass over the rows (grouped by length)."""
        if not encoded:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return softmax(np.stack(self._logits_by_row({"input_ids": encoded})))

    def answers(self, probabilities: np.ndarray) -> list[dict[str, Any]]:
        """Per row {"label", "score", "scores": {label: probability}}."""
        labels = self.labels
        predictions = []
        for row in probabilities:
            best = int(row.argmax())
            predictions.append({
                "label": labels[best],
                "score": float(row[best]),
                "scores": {label: float(p) for label, p in zip(labels, row)},
            })
        return predictions

    def input_keys(self, texts: list[str]) -> list[tuple]:
        """What the model sees of each text (its token ids after truncation): texts with one key get one
        answer, so a caller may score each key once (an uncased model cannot tell "Good" from "good")."""
        return [tuple(ids) for ids in self.encode(texts)] if texts else []

    def predict_logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        texts = check_texts(texts)
        self._check_batch_size(batch_size)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), batch_size):
            rows += self._logits_by_row({"input_ids": self.encode(texts[start:start + batch_size])})
        return np.stack(rows)

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return softmax(self.predict_logits(texts, batch_size))

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
        return self.answers(self.predict_proba(texts, batch_size))


def _truncating_copy(tokenizer: Any, max_length: int) -> Any:
    """A private copy of a fast tokenizer's Rust tokenizer, set once to truncate at max_length without
    padding: the same ids as `tokenizer(texts, truncation=True, max_length=..., padding=False)`, at less
    Python per text, and callable from any thread. None for a slow (Python) tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.enable_truncation(max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side)
    copy.no_padding()
    return copy


def check_sentences(sentences: Any) -> list[list[str]]:
    """Pre-split sentences as a list of lists of words, or a ValueError naming the wrong item."""
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise ValueError(f"expected a list of sentences (lists of words), got {type(sentences).__name__}")
    checked = []
    for index, words in enumerate(sentences):
        if isinstance(words, str) or not isinstance(words, Sequence):
            raise ValueError(f"sentence {index} is {type(words).__name__}, not a list of words")
        for position, word in enumerate(words):
            if not isinstance(word, str):
                raise ValueError(f"sentence {index}, word {position} is {type(word).__name__}, not a string")
        checked.append(list(words))
    return checked


class OnnxTokenTagger(_OnnxModel):
    """An exported token classifier (NER) directory: IOB2 tags for words, entities for raw text.

    Each word is tagged from its first sub-token, as the model was trained; a word that gets no
    sub-token inside max_length is tagged O with probability 1.
    """

    TASK = TOKEN_CLASSIFICATION

    def __init__(
        self,
        model_dir: Path,
        providers: Sequence[str] = (CPU_PROVIDER,),
        intra_op_threads: int | None = None,
        *,
        max_length: int | None = None,
        length_grouping: bool = True,
        warn_on_plan: bool = True,
    ) -> None:
        super().__init__(model_dir, providers, intra_op_threads, max_length=max_length,
                         length_grouping=length_grouping, warn_on_plan=warn_on_plan)
        if OUTSIDE_TAG not in self.card.labels:
            raise ValueError(f"{model_dir}: the tags {self.card.labels} have no {OUTSIDE_TAG!r}")
        self._outside = self.card.labels.index(OUTSIDE_TAG)

    @property
    def entity_types(self) -> list[str]:
        from components.entities import entity_types_of

        return list(self.card.entity_types) or entity_types_of(self.card.labels)

    def _word_proba_batch(self, sentences: list[list[str]]) -> list[np.ndarray]:
        n_tags = len(self.card.labels)
        results = [self._outside_rows(len(words), n_tags) for words in sentences]
        todo = [i for i, words in enumerate(sentences) if words]  # an empty sentence has nothing to tag
        if not todo:
            return results
        encoded = self._tokenize([sentences[i] for i in todo], is_split_into_words=True)
        word_ids = [encoded.word_ids(row) for row in range(len(todo))]
        features = dict(encoded)
        if self.card.word_shapes:
            from components.data.word_shapes import token_shapes

            features["token_type_ids"] = [token_shapes(sentences[i], ids) for i, ids in zip(todo, word_ids)]
        logits = self._logits_by_row(features)
        for row, index in enumerate(todo):
            positions = first_subtoken_positions(word_ids[row], len(sentences[index]))
            kept = positions >= 0
            if kept.any():
                results[index][kept] = softmax(logits[row][positions[kept]])
        return results

    def input_keys(self, sentences: list[list[str]]) -> list[tuple]:  # type: ignore[override]
        """What the model sees of each pre-split sentence: token ids, the word each token starts, and
        with word shapes the shapes (casing changes those even where the ids stay the same)."""
        sentences = check_sentences(sentences)
        todo = [i for i, words in enumerate(sentences) if words]
        keys: list[tuple] = [()] * len(sentences)
        if not todo:
            return keys
        encoded = self._tokenize([sentences[i] for i in todo], is_split_into_words=True)
        for row, index in enumerate(todo):
            word_ids = encoded.word_ids(row)
            shapes = ()
            if self.card.word_shapes:
                from components.data.word_shapes import token_shapes

                shapes = tuple(token_shapes(sentences[index], word_ids))
            keys[index] = (tuple(encoded["input_ids"][row]), tuple(word_ids), shapes)
        return keys

    def _outside_rows(self, n_words: int, n_tags: int) -> np.ndarray:
        rows = np.zeros((n_words, n_tags), dtype=np.float32)
        rows[:, self._outside] = 1.0
        return rows

    def predict_word_proba(self, sentences: list[list[str]], batch_size: int = 64) -> list[np.ndarray]:
        """Per sentence, a [words, tags] array of tag probabilities (tags in `labels` order)."""
        sentences = check_sentences(sentences)
        self._check_batch_size(batch_size)
        results: list[np.ndarray] = []
        for start in range(0, len(sentences), batch_size):
            results.extend(self._word_proba_batch(sentences[start:start + batch_size]))
        return results

    def predict_words(self, sentences: list[list[str]], batch_size: int = 64) -> list[list[str]]:
        """An IOB2 tag per word of each pre-split sentence."""
        labels = self.labels
        return [[labels[i] for i in proba.argmax(axis=1)] for proba in self.predict_word_proba(sentences, batch_size)]

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
        """Per raw text {"entities": [{"text", "type", "start", "end", "score"}, ...]}, where start/end
        are character offsets into the text (text[start:end] is the entity's text) and score is the
        mean probability of the entity's word tags."""
        from components.entities import spans_from_tags, split_words

        texts = check_texts(texts)
        words = [split_words(text) for text in texts]
        probabilities = self.predict_word_proba([[w for w, _, _ in ws] for ws in words], batch_size)
        labels = self.labels
        predictions = []
        for text, text_words, proba in zip(texts, words, probabilities):
            best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=np.int64)
            tags = [labels[i] for i in best]
            entities = []
            for span in spans_from_tags(tags):
                start, end = text_words[span.start][1], text_words[span.end - 1][2]
                score = float(np.mean(proba[np.arange(span.start, span.end), best[span.start:span.end]]))
                entities.append({"text": text[start:end], "type": span.kind, "start": start, "end": end,
                                 "score": score})
            predictions.append({"entities": entities})
        return predictions


def load_predictor(
    model_dir: Path,
    providers: Sequence[str] = (CPU_PROVIDER,),
    intra_op_threads: int | None = None,
    *,
    max_length: int | None = None,
) -> OnnxTextClassifier | OnnxTokenTagger:
    """The predictor for an export directory's task (read from its card)."""
    card = read_model_card(Path(model_dir))
    cls = OnnxTokenTagger if card.task == TOKEN_CLASSIFICATION else OnnxTextClassifier
    return cls(model_dir, providers, intra_op_threads, max_length=max_length)
