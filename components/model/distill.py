"""Knowledge distillation: a larger teacher, fine-tuned with the same training code, labels the training
rows (and optional unlabelled texts) softly, and the small student that is served learns from those
distributions as well as from the true labels (Hinton et al., 2015, "Distilling the knowledge in a
neural network").

The teacher reads its own tokenization: its sub-tokens differ from the student's. Targets are
therefore stored per row (sequence classification: the text's logits) or per WORD (token
classification: the logits at each word's first sub-token, as evaluate.predict_tag_proba_torch reads
them), keyed by the row id of the split, and the student's loss puts them on its own first sub-tokens.
Logits are stored, not probabilities: the loss applies the temperature.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.config import STUDENT_LOSS_KEYS, ConfigError, Params
from components.layout import ProjectLayout
from components.model.fingerprint import update_with_files
from components.reports import read_json_if_present

if TYPE_CHECKING:  # torch, pandas and the training code load when used: a skipped stage needs none of them
    import pandas as pd

    from components.data.preprocess import TokenizedSplit
    from components.model.train import DistilledSplit

UNLABELLED_BATCH = "distill:unlabelled"  # the batch id of unlabelled and augmented rows: new rows to continual training


@dataclass(frozen=True)
class DistillPaths:
    """Where the teacher and distill stages write (dvc.yaml names the same paths)."""

    artifacts: Path

    @property
    def _layout(self) -> ProjectLayout:  # the teacher's outputs that other families read are named there
        return ProjectLayout(self.artifacts.parent)

    @property
    def teacher_dir(self) -> Path:
        return self._layout.teacher_dir

    @property
    def teacher_model(self) -> Path:
        return self.teacher_dir / "model"

    @property
    def teacher_card(self) -> Path:
        return self._layout.teacher_card

    @property
    def teacher_metrics(self) -> Path:
        """The teacher's test metrics, from the evaluate stage's metric functions."""
        return self._layout.teacher_metrics

    @property
    def teacher_history(self) -> Path:
        return self.teacher_dir / "train_history.json"

    @property
    def distill_dir(self) -> Path:
        return self.artifacts / "distill"

    @property
    def targets(self) -> Path:
        return self.distill_dir / "targets.parquet"

    @property
    def targets_card(self) -> Path:
        return self.distill_dir / "targets.json"


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def teacher_metrics(artifacts: Path) -> dict | None:
    """The teacher's test metrics when the teacher stage trained one, else None."""
    paths = DistillPaths(artifacts)
    card = read_json_if_present(paths.teacher_card)
    if not card or not card.get("enabled"):
        return None
    return read_json_if_present(paths.teacher_metrics)


def unlabelled_path(root: Path, setting: str) -> Path:
    """distill.unlabelled as a path: absolute (or ~), else relative to the project root."""
    path = Path(setting).expanduser()
    return path if path.is_absolute() else root / path


def unlabelled_changed(artifacts: Path, params: Params, root: Path) -> bool:
    """Whether distill.unlabelled's file differs from what the distill stage last read: DVC tracks the
    setting (a path), not the file, which grows under the same name (the prediction log)."""
    if not params.distill.enabled or not params.distill.unlabelled:
        return False
    path = unlabelled_path(root, params.distill.unlabelled)
    card = read_json_if_present(DistillPaths(artifacts).targets_card) or {}
    return path.is_file() and card.get("unlabelled_md5") != file_md5(path)


# --- the teacher ---------------------------------------------------------------------------------

def tokenize_frame(frame: pd.DataFrame, tokenizer, params: Params) -> TokenizedSplit:
    """A split frame in the teacher's sub-tokens, as the preprocess stage tokenizes for the student.
    With model.word_shapes the teacher reads them too: capitalization is the task's cue, whichever model
    learns it (an uncased teacher would not see it otherwise)."""
    from components.data.preprocess import tokenize_split, tokenize_tagged_split

    if params.is_token_task:
        return tokenize_tagged_split(frame, tokenizer, params.model_labels, params.model.max_length,
                                     word_shapes=params.model.word_shapes)
    return tokenize_split(frame, tokenizer, params.data.labels, params.model.max_length, template=params.data.template)


def score_on_test(model, tokenizer, test: pd.DataFrame, params: Params, batch_size: int) -> dict:
    """Test metrics with the evaluate stage's functions (the student's are artifacts/eval/metrics.json)."""
    from components.data.template import apply_template
    from components.model.evaluate import evaluate_frame, evaluate_tokens_torch, predict_proba_torch

    if params.is_token_task:
        metrics, _ = evaluate_tokens_torch(model, tokenizer, test, params.data.labels, params.model.max_length,
                                           batch_size)
    else:
        probabilities = predict_proba_torch(model, tokenizer, apply_template(params.data.template, test["text"]),
                                            params.model.max_length, batch_size)
        metrics, _ = evaluate_frame(test, probabilities, params.data.labels)
    return metrics


def teacher_fingerprint(params: Params, train_csv: Path, validation_csv: Path) -> str:
    """What shapes the teacher: its checkpoints are kept under this key."""
    teacher = params.distill.teacher_train
    digest = hashlib.sha256(teacher.model_dump_json().encode())
    digest.update(json.dumps([params.task, params.model.max_length, params.distill.teacher_model,
                              params.model_labels]).encode())
    if params.data.template is not None:  # only then: checkpoints of runs without a template keep their keys
        digest.update(params.data.template.encode())
    if params.model.word_shapes:  # likewise
        digest.update(b"word_shapes")
    update_with_files(digest, (train_csv, validation_csv))
    return "teacher-" + digest.hexdigest()[:16]


# --- the teacher's logits --------------------------------------------------------------------------

def sequence_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int, *,
                    template: str | None = None) -> np.ndarray:
    """[texts, classes] logits of a sequence classifier, in input order; texts are raw, and the teacher
    reads them inside data.template (`template`), as it was trained."""
    from components.data.template import apply_template
    from components.model.evaluate import predict_logits_torch

    return predict_logits_torch(model, tokenizer, apply_template(template, texts), max_length, batch_size)


def word_logits(model, tokenizer, sentences: list[list[str]], max_length: int, batch_size: int) -> list[np.ndarray]:
    """Per sentence, [words, tags] logits at each word's first sub-token; NaN rows for a word the
    teacher cut off (past max_length): the student gets no target there."""
    from components.model.evaluate import predict_word_logits_torch

    return predict_word_logits_torch(model, tokenizer, sentences, max_length, batch_size)


def read_unlabelled(path: Path, column: str, params: Params, known_ids: set[str]) -> pd.DataFrame:
    """Texts (id, text) from a CSV, JSONL or Parquet file: normalized and identified as ingestion does,
    deduplicated, without texts already in the data, and only those whose id falls in the training
    split: a text that hashes to validation or test is held-out territory, now or once it is labelled."""
    import pandas as pd

    from components.data.dataset import normalize_text, text_ids
    from components.data.preprocess import split_of
    from components.entities import split_words

    if not path.is_file():
        raise ConfigError(f"distill.unlabelled: {path} does not exist (a CSV, JSONL or Parquet file of texts, e.g. "
                          "the service's prediction log)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".log"):
        frame = pd.read_json(path, lines=True, dtype=False)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if column not in frame:
        raise ConfigError(f"distill.unlabelled: {path} has no column {column!r} (columns: {list(frame.columns)}); "
                          "set distill.unlabelled_text_column")
    texts = frame[column].dropna().astype(str).map(normalize_text)
    if params.is_token_task:  # the words the served tagger sees, joined as an NER split's text
        texts = texts.map(lambda text: " ".join(word for word, _, _ in split_words(text)))
    texts = texts[texts.str.len() > 0].drop_duplicates()
    rows = pd.DataFrame({"id": text_ids(texts).to_numpy(), "text": texts.to_numpy()})
    rows = rows[~rows["id"].isin(known_ids) & (rows["id"].map(lambda i: split_of(i, params.split)) == "train")]
    limit = params.distill.max_unlabelled
    if limit is not None and len(rows) > limit:
        rows = rows.iloc[sorted(random.Random(params.distill.teacher_train.seed).sample(range(len(rows)), limit))]
    return rows.reset_index(drop=True)


def augmented_rows(train: pd.DataFrame, params: Params, known_texts: set[str]) -> pd.DataFrame:
    """distill.augment_copies new texts per training row (id, text; components/data/augment.py), made
    with teacher_train.seed, deduplicated, and without any text of the splits: a copy that happens to
    read as a validation or test row must not reach training."""
    import pandas as pd

    from components.data.augment import perturb_words, swap_mentions
    from components.data.dataset import text_ids
    from components.model.evaluate import sentences_and_tags

    copies, seed = params.distill.augment_copies, params.distill.teacher_train.seed
    if params.is_token_task:
        sentences, tags = sentences_and_tags(train)
        texts = [" ".join(words) for words in swap_mentions(sentences, tags, copies, seed)]
    else:
        texts = perturb_words(train["text"].tolist(), copies, seed)
    texts = pd.Series(texts, dtype=str).drop_duplicates()
    texts = texts[~texts.isin(known_texts)]
    return pd.DataFrame({"id": text_ids(texts).to_numpy(), "text": texts.to_numpy()})


# --- the teacher's logits, kept for a second run on the same inputs ---------------------------------
# The distill stage's DVC entry tracks the whole distill section (a params.yaml may hold only some of
# its keys), so a new temperature or weight re-runs the stage; its logits do not depend on them, and
# labelling a corpus with a base-size teacher takes minutes. The stage keeps its last output under a
# key of everything that does decide the logits, code included, and copies it back on a match.
LOGITS_CODE = ("model/distill.py", "model/modeling.py", "model/shape_channel.py", "model/wrapped.py",
               "data/template.py", "data/word_shapes.py", "data/augment.py")
KEPT_PREFIX = "distill-"


def targets_fingerprint(params: Params, teacher_model: Path, inputs: list[Path]) -> str:
    """The teacher's weights, the input files, the settings and code that decide its logits; not
    distill.temperature nor distill.alpha, which only the student's loss reads."""
    digest = hashlib.sha256(params.distill.model_dump_json(exclude=set(STUDENT_LOSS_KEYS)).encode())
    digest.update(json.dumps([params.task, params.model.max_length, params.model.word_shapes,
                              params.data.template, params.model_labels]).encode())
    components = Path(__file__).resolve().parents[1]
    files = sorted(p for p in teacher_model.rglob("*") if p.is_file())
    update_with_files(digest, [*files, *inputs, *(components / name for name in LOGITS_CODE)], names=True)
    return KEPT_PREFIX + digest.hexdigest()[:16]


def reuse_kept_targets(kept: Path, distill_dir: Path) -> bool:
    """Copy the logits kept under `kept` into the stage's output; False when none are kept there."""
    import shutil

    if not (kept / "targets.parquet").is_file():
        return False
    shutil.copytree(kept, distill_dir, dirs_exist_ok=True)
    return True


def keep_targets(distill_dir: Path, kept: Path) -> None:
    """Keep this output for the next run on the same inputs, in place of the one kept before."""
    import shutil

    for earlier in kept.parent.glob(KEPT_PREFIX + "*"):
        shutil.rmtree(earlier, ignore_errors=True)
    # Copied beside, then renamed: a run killed while copying leaves no half file that the next run reuses.
    partial = kept.with_name(kept.name + ".partial")
    shutil.copytree(distill_dir, partial)
    partial.rename(kept)


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_targets(path: Path, frame: pd.DataFrame, logits: list[np.ndarray], token_level: bool) -> None:
    """id, source (train | unlabelled | augmented), text, and the logits: [classes] per row, or [words][tags]."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = [row.tolist() for row in logits]  # NaN (a word without a target) survives as NaN
    kind = pa.list_(pa.list_(pa.float32())) if token_level else pa.list_(pa.float32())
    table = pa.table({"id": pa.array(frame["id"].astype(str).tolist(), type=pa.string()),
                      "source": pa.array(frame["source"].tolist(), type=pa.string()),
                      "text": pa.array(frame["text"].astype(str).tolist(), type=pa.string()),
                      "logits": pa.array(values, type=kind)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_targets(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    frame = table.select(["id", "source", "text"]).to_pandas()
    frame["logits"] = [np.asarray(v, dtype=np.float32) for v in table.column("logits").to_pylist()]
    return frame


# --- the student's side --------------------------------------------------------------------------

def _on_first_subtokens(word_targets: np.ndarray, word_ids: list[int | None], n_words: int) -> np.ndarray:
    """Per-word targets moved onto the student's sub-tokens: each word's first one, NaN elsewhere."""
    from components.entities import first_subtoken_positions

    out = np.full((len(word_ids), word_targets.shape[1]), np.nan, dtype=np.float32)
    positions = first_subtoken_positions(word_ids, n_words)
    kept = positions >= 0
    out[positions[kept]] = word_targets[kept]
    return out


def student_rows(texts: list[str], word_targets: list[np.ndarray], tokenizer, params: Params):
    """Token classification: the student's tokenization of space-joined words and the per-word targets
    on its first sub-tokens; returns (input_ids, targets, word shapes or None)."""
    from components.data.word_shapes import token_shapes
    from components.model.evaluate import split_joined

    words = split_joined(texts)
    encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=params.model.max_length,
                        padding=False)
    targets, shapes = [], []
    for row, sentence in enumerate(words):
        word_ids = encoded.word_ids(row)
        targets.append(_on_first_subtokens(word_targets[row], word_ids, len(sentence)))
        if params.model.word_shapes:
            shapes.append(token_shapes(sentence, word_ids))
    return encoded["input_ids"], targets, (shapes if params.model.word_shapes else None)


def distilled_split(train: TokenizedSplit, train_frame: pd.DataFrame, targets: pd.DataFrame, tokenizer,
                    params: Params) -> DistilledSplit:
    """The tokenized training split (rows in train_frame's order) with the teacher's targets attached
    by row id, plus the unlabelled and augmented rows (KD term only)."""
    from components.data.preprocess import IGNORE_INDEX
    from components.model.train import DistilledSplit

    if len(train) != len(train_frame):
        raise ValueError(f"the tokenized training split has {len(train)} rows, artifacts/splits/train.csv "
                         f"{len(train_frame)}: run the preprocess stage again")
    by_id = {row_id: i for i, row_id in enumerate(targets["id"])}
    missing = [row_id for row_id in train_frame["id"] if row_id not in by_id]
    if missing:
        raise ValueError(f"artifacts/distill/targets.parquet has no targets for {len(missing)} training rows "
                         f"(e.g. id {missing[0]}): run the distill stage again (`dvc repro distill`)")
    row_targets = [targets["logits"].iloc[by_id[row_id]] for row_id in train_frame["id"]]
    if train.token_level:
        _, row_targets, _ = student_rows(train_frame["text"].tolist(), row_targets, tokenizer, params)
    unlabelled = targets[targets["source"] != "train"]  # unlabelled and augmented texts: the KD term alone
    input_ids, labels = list(train.input_ids), list(train.labels)
    shapes = None if train.token_type_ids is None else list(train.token_type_ids)
    if len(unlabelled):
        texts, logits = unlabelled["text"].tolist(), unlabelled["logits"].tolist()
        if train.token_level:
            extra_ids, extra_targets, extra_shapes = student_rows(texts, logits, tokenizer, params)
            labels += [[IGNORE_INDEX] * len(ids) for ids in extra_ids]
            if shapes is not None:
                shapes += extra_shapes
        else:
            from components.data.template import apply_template

            # The student reads unlabelled texts as it reads its labelled ones: inside data.template.
            extra_ids = tokenizer(apply_template(params.data.template, texts), truncation=True,
                                  max_length=params.model.max_length, padding=False)["input_ids"]
            extra_targets = logits
            labels += [IGNORE_INDEX] * len(extra_ids)
        input_ids += extra_ids
        row_targets = row_targets + extra_targets
    batch_ids = None if train.batch_ids is None else list(train.batch_ids) + [UNLABELLED_BATCH] * len(unlabelled)
    return DistilledSplit(input_ids=input_ids, labels=labels, batch_ids=batch_ids, token_type_ids=shapes,
                          teacher_logits=row_targets)
