"""Robustness checks: CheckList-style invariance tests generated from the test split and run on the
served (ONNX) model, the robustness stage's files, and gate.min_invariance refusing a model that flips
under casing."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from components.config import ConfigError, ExportParams, GateParams, RobustnessParams, parse_params
from components.entities import Span, spans_from_tags
from components.lifecycle.gate import decide
from components.robustness.invariance import FLIPPED_COLUMNS, measure_invariance
from components.robustness.perturb import (
    CITIES,
    FIRST_NAMES,
    TOKEN_KINDS,
    Perturbation,
    perturb_rows,
    row_rng,
    swap_entity,
)
from tests.fixtures_classifier import LABELS, tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.project import REPO_ROOT, tiny_params
from tests.tiny import sentiment_frame

KINDS = ["typo", "casing", "punctuation", "whitespace", "entity"]
TEXTS = [
    "The film was wonderful and Mary loved it.",
    "a dull plot , a bland cast",
    "ok",
    "Boring in Paris, boring in New York!",
    "   ",
    "aaaa bbbb",
    "!!!",
    "12 34",
]


def _ids(n: int) -> list[str]:
    return [f"r{i}" for i in range(n)]


# --- perturbations ---------------------------------------------------------------------------------

def test_perturbations_are_seeded_per_row_and_keep_the_text_recognisable():
    samples = perturb_rows(_ids(len(TEXTS)), TEXTS, KINDS, seed=3)
    again = perturb_rows(_ids(len(TEXTS)), TEXTS, KINDS, seed=3)
    assert samples == again
    other_seed = perturb_rows(_ids(len(TEXTS)), TEXTS, KINDS, seed=4)
    assert any(samples[k].perturbations != other_seed[k].perturbations for k in KINDS)
    # A row's perturbation depends on its id and the seed only, not on the other rows or their order.
    order = list(reversed(range(len(TEXTS))))
    reordered = perturb_rows([f"r{i}" for i in order], [TEXTS[i] for i in order], KINDS, seed=3)
    for kind in KINDS:
        assert ({p.row_id: p for p in samples[kind].perturbations}
                == {p.row_id: p for p in reordered[kind].perturbations})

    for kind in KINDS:
        for p in samples[kind].perturbations:
            assert p.kind == kind and p.perturbed != p.original and p.original == TEXTS[int(p.row_id[1:])]
    for p in samples["typo"].perturbations:  # two adjacent inner letters of one 4+ letter word swapped
        diff = [i for i, (a, b) in enumerate(zip(p.original, p.perturbed)) if a != b]
        assert len(p.perturbed) == len(p.original) and len(diff) == 2 and diff[1] == diff[0] + 1
        assert p.original[diff[0]] == p.perturbed[diff[1]] and p.original[diff[1]] == p.perturbed[diff[0]]
        assert p.original[diff[0] - 1].isalpha() and p.original[diff[1] + 1].isalpha()  # inner letters only
    for p in samples["casing"].perturbations:
        assert p.perturbed in (p.original.lower(), p.original.upper())
    for p in samples["whitespace"].perturbations:
        assert p.perturbed.split() == p.original.split() and len(p.perturbed) == len(p.original) + 1
    for p in samples["punctuation"].perturbations:
        letters = [c for c in p.original if c.isalnum()]
        assert [c for c in p.perturbed if c.isalnum()] == letters
    for p in samples["entity"].perturbations:
        old, new = (name.strip("'") for name in p.change.split(" -> "))
        assert old in p.original and old not in p.perturbed and new in p.perturbed
        assert (old in CITIES) == (new in CITIES) and (old in FIRST_NAMES) == (new in FIRST_NAMES)


def test_rows_a_kind_cannot_change_are_skipped_and_counted():
    samples = perturb_rows(_ids(len(TEXTS)), TEXTS, KINDS, seed=0)
    perturbed = {kind: {p.row_id for p in samples[kind].perturbations} for kind in KINDS}
    # "ok" has no 4-letter word, "aaaa bbbb" no inner pair that a swap changes; "!!!" and "12 34" no letters.
    assert perturbed["typo"] == {"r0", "r1", "r3"}
    assert perturbed["casing"] == {"r0", "r1", "r2", "r3", "r5"}
    assert perturbed["entity"] == {"r0", "r3"}  # Mary; Paris or New York
    assert "r4" not in perturbed["whitespace"] and "r4" not in perturbed["punctuation"]  # blank text
    assert "r6" not in perturbed["punctuation"]  # all marks: nothing would be left
    for kind in KINDS:
        assert samples[kind].skipped == len(TEXTS) - len(perturbed[kind]) and samples[kind].dropped == 0

    capped = perturb_rows(_ids(len(TEXTS)), TEXTS, KINDS, seed=0, max_rows=2)
    for kind in KINDS:
        kept = capped[kind].perturbations
        assert len(kept) == min(2, len(perturbed[kind])) and {p.row_id for p in kept} <= perturbed[kind]
        assert kept == sorted(kept, key=lambda p: int(p.row_id[1:]))  # the rows' order
        assert capped[kind].dropped == len(perturbed[kind]) - len(kept)
    with pytest.raises(ValueError, match="unique"):
        perturb_rows(["a", "a"], ["one text", "two texts"], ["typo"], seed=0)


def test_ner_entity_swap_moves_the_spans_after_it_with_the_text():
    words = ["John", "Smith", "met", "Mary", "in", "New", "York", "with", "Acme", "Corp", "."]
    tags = ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "I-LOC", "O", "B-ORG", "I-ORG", "O"]
    gold = spans_from_tags(tags)
    seen_lengths = set()
    for seed in range(40):
        new_words, new_tags, boundaries, note = swap_entity(words, tags, row_rng(seed, "entity", "s0"))
        assert len(new_words) == len(new_tags) and len(boundaries) == len(words) + 1
        perturbation = Perturbation("entity", "s0", note, " ".join(words), " ".join(new_words),
                                    tuple(new_tags), boundaries)
        moved = [perturbation.map_span(span) for span in gold]
        replaced = [i for i, span in enumerate(moved) if new_words[span.start:span.end] != words[gold[i].start:gold[i].end]]
        assert len(replaced) == 1  # one span was replaced; every other entity kept its words, wherever they went
        swapped = moved[replaced[0]]
        assert gold[replaced[0]].kind in ("PER", "LOC") and swapped.kind == gold[replaced[0]].kind
        assert spans_from_tags(new_tags) == moved  # the gold tags moved with the words
        assert " ".join(new_words[swapped.start:swapped.end]) not in " ".join(words)
        seen_lengths.add(swapped.end - swapped.start - (gold[replaced[0]].end - gold[replaced[0]].start))
    assert {-1, 0, 1} <= seen_lengths  # spans shrank, kept and grew their length: positions did move
    # A predicted span with a boundary inside the replaced words cannot be the same span any more.
    new_words, new_tags, boundaries, note = swap_entity(words, tags, row_rng(0, "entity", "s0"))
    perturbation = Perturbation("entity", "s0", note, "", "", tuple(new_tags), boundaries)
    inside = next(i for i, b in enumerate(boundaries) if b is None)
    assert perturbation.map_span(Span("PER", inside - 1, inside)) is None
    # Without a PER or LOC span there is nothing to swap; ORG is not swapped.
    assert swap_entity(["Acme", "Corp", "won"], ["B-ORG", "I-ORG", "O"], row_rng(0, "entity", "x")) is None

    frame_tags = [tags, ["O"] * 4]
    texts = [" ".join(words), "no names at all"]
    samples = perturb_rows(["s0", "s1"], texts, TOKEN_KINDS, seed=0, tags=frame_tags)
    assert [p.row_id for p in samples["entity"].perturbations] == ["s0"] and samples["entity"].skipped == 1
    for kind in ("typo", "casing"):  # letters change inside words: words, tags and positions stay
        for p in samples[kind].perturbations:
            assert len(p.perturbed.split(" ")) == len(p.original.split(" "))
            assert list(p.tags) == frame_tags[int(p.row_id[1:])]
            assert p.map_span(Span("PER", 0, 2)) == Span("PER", 0, 2)
    with pytest.raises(ValueError, match="word boundaries"):
        perturb_rows(["s0"], texts[:1], ["whitespace"], seed=0, tags=frame_tags[:1])


# --- the served model ------------------------------------------------------------------------------

def _test_split(n: int = 120) -> pd.DataFrame:
    """Easy reviews as the pipeline's test split, some naming a person or a city."""
    frame = sentiment_frame(n, seed=11)
    rng = random.Random(5)
    texts = [text if i % 3 else f"{rng.choice(FIRST_NAMES)} says: {text} in {rng.choice(CITIES)}."
             for i, text in enumerate(frame["review"])]
    return pd.DataFrame({"id": [f"t{i:03d}" for i in range(n)], "text": texts, "label": frame["sentiment"]})


def _robustness_stage_paths() -> tuple[str, str]:
    stage = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["robustness"]
    metrics = [next(iter(entry)) for entry in stage["metrics"]]
    outs = [next(iter(entry)) if isinstance(entry, dict) else entry for entry in stage["outs"]]
    assert "artifacts/onnx" in stage["deps"] and "artifacts/splits/test.csv" in stage["deps"]
    assert stage["cmd"] == "tunegate stage robustness" and "robustness" in stage["params"]
    return metrics[0], outs[0]


def test_robustness_stage_measures_the_exported_model_and_mlflow_records_it(
        tiny_onnx_export, tiny_base_model, tmp_path):  # noqa: F811 - the imported fixture
    from components.export.predictor import OnnxTextClassifier
    from components.layout import ProjectLayout
    from components.lifecycle.model_card import render_model_card
    from components.lifecycle.registry import ModelRegistry, tag_value
    from components.lifecycle.tracking import log_robustness, robustness_tag
    from components.lifecycle.versioning import run_dvc

    root = tmp_path / "project"
    shutil.copytree(tiny_onnx_export.out_dir, root / "artifacts" / "onnx")
    split = _test_split()
    (root / "artifacts" / "splits").mkdir(parents=True)
    split.to_csv(root / "artifacts" / "splits" / "test.csv", index=False)
    params = tiny_params(tiny_base_model, robustness={"enabled": True, "max_rows": 100})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO_ROOT / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__"))
    run_dvc(root, "init", "--no-scm", "-q")
    # DVC runs the stage's command, `tunegate stage robustness`, as `dvc repro` and the flow do.
    run_dvc(root, "repro", "--single-item", "robustness", capture=True)
    metrics_path, flipped_path = _robustness_stage_paths()
    metrics = json.loads((root / metrics_path).read_text())
    flipped = pd.read_csv(root / flipped_path, dtype=str, keep_default_na=False)

    assert metrics["rows"] == len(split) and set(metrics) == {"rows", "min_invariance", *KINDS}
    for kind in KINDS:
        figures = metrics[kind]
        assert figures["n"] + figures["skipped"] >= min(100, len(split)) or kind == "entity"
        assert figures["invariance"] == pytest.approx(1 - figures["flipped"] / figures["n"])
        assert (flipped["kind"] == kind).sum() == figures["flipped"]
    assert metrics["entity"]["n"] == 40  # the rows that name someone or somewhere, every third
    assert metrics["typo"]["n"] == 100  # max_rows
    # The tokenizer lower-cases and splits on whitespace: those kinds cannot change an input id.
    assert metrics["casing"]["invariance"] == 1.0 and metrics["whitespace"]["invariance"] == 1.0
    # ... so each is answered from its original's prediction, without a model call, and counted as such.
    assert metrics["casing"]["same_input"] == metrics["casing"]["n"] > 0
    assert metrics["typo"]["same_input"] < metrics["typo"]["n"]
    assert metrics["typo"]["flipped"] > 0  # the tiny model reads one sentiment word: a typo in it can flip it
    assert metrics["min_invariance"] == min(metrics[k]["invariance"] for k in KINDS)
    assert list(flipped.columns) == FLIPPED_COLUMNS
    # Each listed row really changed label on the served model.
    predictor = OnnxTextClassifier(root / "artifacts" / "onnx")
    before = [p["label"] for p in predictor.predict(flipped["original"].tolist())]
    after = [p["label"] for p in predictor.predict(flipped["perturbed"].tolist())]
    assert all(b != a for b, a in zip(before, after))
    assert [b.split(" ")[0] for b in flipped["before"]] == before and [a.split(" ")[0] for a in flipped["after"]] == after

    # DVC reads the file as the stage's metrics.
    shown = run_dvc(root, "metrics", "show", "--json", capture=True).stdout
    assert json.loads(shown)[""]["data"][metrics_path]["data"]["typo"]["invariance"] == metrics["typo"]["invariance"]

    registry = ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "tiny", artifact_root=tmp_path / "artifacts")
    run_id = registry.start_run("robustness", "run", {})
    log_robustness(registry, run_id, ProjectLayout(root))
    logged = registry.client.get_run(run_id).data.metrics
    assert logged["invariance_typo"] == pytest.approx(metrics["typo"]["invariance"])
    assert logged["invariance_entity_n"] == 40 and logged["invariance_min"] == pytest.approx(metrics["min_invariance"])
    assert {a.path for a in registry.client.list_artifacts(run_id, "robustness")} == {
        "robustness/metrics.json", "robustness/flipped.csv"}
    # ... and the registered version's model card shows the table (from the version's tag, as stored).
    tags = {key: tag_value(value) for key, value in robustness_tag(ProjectLayout(root)).items()}
    card = render_model_card("tiny", tags, {}, "gate passed")
    assert f"| typo | {metrics['typo']['invariance']:.4f} | 100 | {metrics['typo']['flipped']} |" in card


# --- the gate --------------------------------------------------------------------------------------

def _cased_texts(n: int, seed: int) -> pd.DataFrame:
    """'Good' (capitalised) means positive, 'good' negative: a model that learns this flips when lower-cased."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = rng.random() < 0.5
        words = rng.sample(["the", "film", "was", "a", "plot", "cast", "and", "really", "quite"], rng.randint(2, 5))
        words.insert(rng.randint(0, len(words)), "Good" if positive else "good")
        rows.append({"id": f"c{i}", "text": " ".join(words), "label": "positive" if positive else "negative"})
    return pd.DataFrame(rows)


def _train_cased_classifier(directory: Path) -> Path:
    """A one-layer BERT whose WordPiece tokenizer keeps case, trained until 'Good' and 'good' differ."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    train = _cased_texts(256, seed=1)
    words = sorted({w for text in train["text"] for w in text.split(" ")})
    characters = sorted({c for w in words for c in w} | set("GOD"))
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + characters + [f"##{c}" for c in characters] + words
    tokenizer = Tokenizer(models.WordPiece({p: i for i, p in enumerate(dict.fromkeys(pieces))}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")),
                                                 ("[SEP]", tokenizer.token_to_id("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", model_max_length=32, do_lower_case=False)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
                        id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    model = BertForSequenceClassification(config)
    targets = torch.tensor([LABELS.index(label) for label in train["label"]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for step in range(80):
            start = (step * 32) % len(train)
            batch = fast(train["text"].tolist()[start:start + 32], padding=True, return_tensors="pt")
            model(**batch, labels=targets[start:start + 32]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def cased_export(tmp_path_factory) -> Path:
    from components.export.to_onnx import export_onnx

    model_dir = _train_cased_classifier(tmp_path_factory.mktemp("cased-model"))
    return export_onnx(model_dir, tmp_path_factory.mktemp("cased-onnx") / "export", precision="fp32").out_dir


def test_gate_refuses_a_served_model_that_flips_under_casing(cased_export, tmp_path):
    from components.export.predictor import OnnxTextClassifier
    from components.export.scoring import score_onnx_dir

    test = _cased_texts(80, seed=9)
    test.to_csv(tmp_path / "test.csv", index=False)
    challenger = score_onnx_dir(cased_export, tmp_path / "test.csv", LABELS)
    assert challenger["accuracy"] == 1.0  # it learned the case of 'Good', nothing else
    report = measure_invariance(OnnxTextClassifier(cased_export), test,
                                RobustnessParams(kinds=["casing", "whitespace"], seed=0))
    figures = report.metrics()
    assert figures["casing"]["invariance"] < 0.8 and figures["whitespace"]["invariance"] == 1.0
    assert figures["casing"]["same_input"] < figures["casing"]["n"]  # a cased tokenizer sees each change
    flipped = report.flipped
    assert set(flipped["kind"]) == {"casing"}
    assert (flipped["original"].str.contains("Good") & (flipped["change"] == "lower-cased")).any()
    parity = {"agreement": 1.0, "accuracy_drop": 0.0}

    def verdict(min_invariance, robustness=figures):
        return decide(challenger, parity, None, None, GateParams(min_invariance=min_invariance), ExportParams(),
                      robustness=robustness)

    refused = verdict(0.9)
    assert not refused.passed
    failed = [c for c in refused.checks if not c.passed]
    assert [c.name for c in failed] == ["min_invariance_casing"]
    assert "FAIL min_invariance_casing: invariance under casing" in refused.summary()
    assert "PASS min_invariance_whitespace" in refused.summary()
    assert not verdict({"casing": 0.9}).passed and verdict({"whitespace": 0.99}).passed
    passed = verdict(0.0)
    assert passed.passed and "min_invariance_casing" in passed.summary()  # listed, not judged

    # A kind the threshold names but the report lacks fails, and says how to get it.
    missing = verdict({"whitespace": 0.9, "entity": 0.9})
    assert not missing.passed and "run the robustness stage" in missing.summary()
    assert [c.name for c in missing.checks if not c.passed] == ["min_invariance_entity"]
    no_report = verdict(0.9, robustness=None)
    assert not no_report.passed and "no robustness report" in no_report.summary()
    assert verdict(0.0, robustness=None).passed  # 0 judges nothing, with or without the stage


# --- config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("section,values,message", [
    ("gate", {"min_invariance": 1.5}, "gate: Value error, min_invariance 1.5: shares lie in [0, 1]"),
    ("gate", {"min_invariance": {"casing": -0.1}}, "shares lie in [0, 1]"),
    ("gate", {"min_invariance": {"tpyo": 0.9}}, "min_invariance names ['tpyo'], which are not perturbation kinds"),
    ("robustness", {"kinds": ["typo", "shouting"]}, "robustness.kinds.1"),
    ("robustness", {"max_rows": 0}, "robustness.max_rows"),
    ("robustness", {"sed": 1}, "robustness.sed"),
])
def test_bad_robustness_settings_are_refused_with_their_key(section, values, message):
    with pytest.raises(ConfigError) as error:
        parse_params(tiny_params("builtin:x", **{section: values}), env={})
    assert message in str(error.value)


def test_the_projects_params_yaml_carries_the_robustness_settings():
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params = parse_params(raw, env={})
    assert params.robustness.kinds == KINDS and params.gate.min_invariance == raw["gate"]["min_invariance"]
    good = parse_params(tiny_params("builtin:x", gate={"min_invariance": {"casing": 0.95, "typo": 0.9}}), env={})
    assert good.gate.min_invariance == {"casing": 0.95, "typo": 0.9}


def test_ner_invariance_compares_entity_spans_carried_through_the_perturbation(tiny_ner_base_model, tmp_path):
    """An untrained tagger (random head) exported to ONNX: its entities are arbitrary but deterministic,
    so each sentence's verdict can be recomputed here from the served tagger's own answers."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from components.config import iob2_tags
    from components.export.predictor import OnnxTokenTagger
    from components.export.to_onnx import export_onnx
    from tests.tiny import ner_records

    tags = iob2_tags(["PER", "ORG", "LOC"])
    torch.manual_seed(1)
    model = AutoModelForTokenClassification.from_pretrained(
        str(tiny_ner_base_model), num_labels=len(tags), id2label=dict(enumerate(tags)),
        label2id={t: i for i, t in enumerate(tags)}, use_safetensors=True)
    model.save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(str(tiny_ner_base_model)).save_pretrained(tmp_path / "model")
    tagger = OnnxTokenTagger(export_onnx(tmp_path / "model", tmp_path / "onnx", precision="fp32", max_length=32).out_dir)

    records = ner_records(40, seed=4)
    frame = pd.DataFrame({"id": [f"s{i}" for i in range(len(records))],
                          "text": [" ".join(r["tokens"]) for r in records],
                          "label": [" ".join(r["tags"]) for r in records]})
    report = measure_invariance(tagger, frame, RobustnessParams(seed=0))
    assert list(report.kinds) == list(TOKEN_KINDS) and report.not_applicable == ["punctuation", "whitespace"]
    swappable = sum(any(s.kind in ("PER", "LOC") for s in spans_from_tags(r["tags"])) for r in records)
    assert report.kinds["entity"]["n"] == swappable and report.kinds["entity"]["skipped"] == len(records) - swappable
    assert report.kinds["casing"]["invariance"] == 1.0  # the tokenizer lower-cases every word
    assert report.kinds["casing"]["same_input"] == report.kinds["casing"]["n"]

    samples = perturb_rows(frame["id"].tolist(), frame["text"].tolist(), TOKEN_KINDS, seed=0,
                           max_rows=RobustnessParams().max_rows, tags=[r["tags"] for r in records])
    flipped = {(row.kind, row.id) for row in report.flipped.itertuples()}
    for kind in TOKEN_KINDS:
        for p in samples[kind].perturbations:
            before, after = tagger.predict_words([p.original.split(" "), p.perturbed.split(" ")])
            moved = {p.map_span(span) for span in spans_from_tags(before)}
            assert ((kind, p.row_id) in flipped) == (moved != set(spans_from_tags(after))), (kind, p)
        assert report.kinds[kind]["flipped"] == sum(k == kind for k, _ in flipped)
    assert report.kinds["entity"]["flipped"] > 0 and report.kinds["entity"]["flipped"] < report.kinds["entity"]["n"]
