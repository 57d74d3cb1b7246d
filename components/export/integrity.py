"""What a registered version's files must be before anything loads them: a manifest of every file (path,
size, sha256) written at registration, optionally signed with the OpenSSF model-signing library (an
elliptic-curve key pair, which works offline), and checked by every loader (the service and its hot
reload, the pyfunc model, `tunegate predict` and its Dask workers) and by promotion.

This module travels inside every registered MLflow Model (components/export/mlflow_model.py), so it
imports only the standard library at module level: the signature library is imported when a signature
is checked."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MANIFEST_FILE = "tunegate-manifest.json"
SIGNATURE_FILE = "tunegate-manifest.sig"  # a Sigstore bundle (DSSE envelope) written by model-signing
MANIFEST_FORMAT = "tunegate-manifest/v1"
# Where a loader without params.yaml (MLflow's pyfunc loader) takes its public key and its rule.
PUBLIC_KEY_ENV = "TUNEGATE_SIGNING_PUBLIC_KEY"  # a PEM public key, or the path of one
REQUIRE_SIGNATURE_ENV = "TUNEGATE_REQUIRE_SIGNATURE"  # "true": refuse unsigned models

logger = logging.getLogger("tunegate.integrity")

# What MLflow's pyfunc loader writes into a model it loads from models:/ (its name and version, read by no code);
# from a local artifact store it writes it into the store itself. Tolerated beside the listed files.
MLFLOW_LOADER_FILES = ("registered_model_meta",)


class ModelIntegrityError(RuntimeError):
    """A model whose files are not the ones registered, or whose signature does not hold: never loaded."""


@dataclass(frozen=True)
class TrustPolicy:
    """How a loader judges a model: the public key its manifest's signature must verify with (None: the
    signature is not checked) and whether a model without a valid signature is refused."""

    public_key_pem: bytes | None = None
    require_signature: bool = False

    def __post_init__(self) -> None:
        if self.require_signature and self.public_key_pem is None:
            raise ModelIntegrityError("require_signature is true but no public key is configured to check signatures "
                                      "with (registry.signing.public_key, or " + PUBLIC_KEY_ENV + ")")

    @property
    def key_id(self) -> str | None:
        return None if self.public_key_pem is None else key_id(self.public_key_pem)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrustPolicy:
        env = os.environ if env is None else env
        key = env.get(PUBLIC_KEY_ENV) or None
        required = env.get(REQUIRE_SIGNATURE_ENV, "").strip().lower() in ("1", "true", "yes")
        return cls(read_key_material(key, PUBLIC_KEY_ENV) if key else None, required)


@dataclass(frozen=True)
class Verification:
    """What a check established: 'signed' (files match a manifest whose signature holds), 'unsigned' (files
    match the manifest; no signature was checked) or 'no-manifest' (nothing could be checked)."""

    status: str
    manifest_sha256: str | None = None
    key_id: str | None = None
    files: int = 0

    def as_metadata(self) -> dict:
        return {"status": self.status, "manifest_sha256": self.manifest_sha256, "key_id": self.key_id,
                "files": self.files}


def key_id(public_key_pem: bytes) -> str:
    """A short, stable name of a public key: the sha256 of its PEM text without line-ending differences."""
    return "sha256:" + hashlib.sha256(b"\n".join(public_key_pem.strip().splitlines())).hexdigest()[:16]


def read_key_material(value: str, where: str) -> bytes:
    """A key given as PEM text (an environment variable holding it) or as the path of a PEM file."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.strip().encode() + b"\n"
    path = Path(value).expanduser()
    if not path.is_file():
        raise ModelIntegrityError(f"{where}: {value!r} is neither a PEM key nor the path of a file holding one")
    return path.read_bytes()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def written_by_loaders(relative: str) -> bool:
    """Files a loader adds beside a model's own, tolerated by every check (no loader of ours runs them): MLflow's
    `registered_model_meta` (which its pyfunc loader writes into a local artifact store itself) and Python's
    bytecode caches of the model's code/ modules, which pyfunc imports before any check of ours can run."""
    return relative in MLFLOW_LOADER_FILES or "__pycache__" in relative.split("/")


def _listed_files(model_dir: Path) -> list[Path]:
    """Files (and links, which are refused) below model_dir, but its own manifest and signature and what loaders add."""
    own = {model_dir / MANIFEST_FILE, model_dir / SIGNATURE_FILE}
    return sorted(p for p in model_dir.rglob("*") if (p.is_file() or p.is_symlink()) and p not in own
                  and not written_by_loaders(p.relative_to(model_dir).as_posix()))


def manifest_entries(model_dir: Path) -> list[dict]:
    """Every file below `model_dir` (but the manifest and its signature): path (POSIX, relative), size, sha256."""
    entries = []
    for path in _listed_files(model_dir):
        if path.is_symlink():  # a link could point anywhere after the check: a model is plain files
            raise ModelIntegrityError(f"{path}: a symbolic link; a registered model holds plain files only")
        entries.append({"path": path.relative_to(model_dir).as_posix(), "size": path.stat().st_size,
                        "sha256": file_sha256(path)})
    return entries


def write_manifest(model_dir: Path) -> str:
    """Write the manifest of `model_dir` into it; returns the manifest's own sha256 (recorded in the registry)."""
    model_dir = Path(model_dir)
    payload = {"format": MANIFEST_FORMAT, "files": manifest_entries(model_dir)}
    (model_dir / MANIFEST_FILE).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return file_sha256(model_dir / MANIFEST_FILE)


def parse_manifest(raw: bytes, where: Path) -> list[dict]:
    """The entries of a manifest's bytes; a path that could leave the model's folder, or is listed twice, is refused."""
    try:
        payload = json.loads(raw.decode("utf-8"))
        entries = [{"path": str(e["path"]), "size": int(e["size"]), "sha256": str(e["sha256"])} for e in payload["files"]]
    except (ValueError, KeyError, TypeError) as error:
        raise ModelIntegrityError(f"{where}: not a readable manifest ({error})") from None
    seen: set[str] = set()
    for entry in entries:
        parts = entry["path"].split("/")
        if entry["path"].startswith("/") or "\\" in entry["path"] or ".." in parts or "" in parts or entry["path"] in seen:
            raise ModelIntegrityError(f"{where}: the entry {entry['path']!r} is not a plain relative path listed once")
        seen.add(entry["path"])
    return entries


def read_manifest(model_dir: Path) -> list[dict]:
    path = Path(model_dir) / MANIFEST_FILE
    return parse_manifest(path.read_bytes(), path)


def check_files(root: Path, entries: list[dict], *, complete: bool = True, name: str | None = None) -> None:
    """Every listed file is there with its size and sha256; with `complete`, no other file is there either (but
    what loaders add, written_by_loaders). The first difference raises, naming the file and both hashes.
    name: how messages call the model (e.g. 'tunegate-classifier v3'), before the file's path inside it."""
    root = Path(root)
    what = f"{name}: " if name else ""
    for entry in entries:
        path = root / entry["path"]
        where = f"{what}{entry['path']} (checked at {path})"
        if not path.is_file() or path.is_symlink():
            raise ModelIntegrityError(f"{where}: listed in the manifest (sha256 {entry['sha256']}) but missing")
        actual = file_sha256(path)
        if actual != entry["sha256"] or path.stat().st_size != entry["size"]:
            raise ModelIntegrityError(f"{where}: sha256 {actual} ({path.stat().st_size} bytes), but the manifest "
                                      f"says sha256 {entry['sha256']} ({entry['size']} bytes): the file is not the "
                                      "one registered")
    if complete:
        listed = {entry["path"] for entry in entries}
        extra = [relative for relative in (p.relative_to(root).as_posix() for p in _listed_files(root))
                 if relative not in listed]
        if extra:
            raise ModelIntegrityError(f"{what}files not in the manifest: {', '.join(extra[:5])} (checked at {root}): "
                                      "not loaded")


def verify_signature(manifest: bytes, signature: Path, policy: TrustPolicy) -> None:
    """The signature holds over these manifest bytes for policy's public key (model-signing's elliptic-key
    verifier). The bytes, not the file: what was hashed and parsed is what is verified."""
    from model_signing import verifying

    with tempfile.TemporaryDirectory(prefix="tunegate-verify-") as scratch:
        key_file, manifest_copy = Path(scratch) / "public.pem", Path(scratch) / MANIFEST_FILE
        key_file.write_bytes(policy.public_key_pem or b"")
        manifest_copy.write_bytes(manifest)
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=key_file).verify(manifest_copy, signature)
        except Exception as error:  # noqa: BLE001 - the library raises ValueError and others; all mean "refuse"
            raise ModelIntegrityError(f"{signature}: the signature of {MANIFEST_FILE} does not verify with the public "
                                      f"key {policy.key_id} ({error})") from None


@dataclass(frozen=True)
class Registered:
    """What the registry recorded of a version at registration (its tags): the manifest's sha256 and the id of
    the key that signed it ('unsigned' when none did). Empty for a version registered before manifests."""

    manifest_sha256: str | None = None
    signature: str | None = None

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Registered:
        return cls(tags.get("manifest_sha256") or None, tags.get("signature") or None)

    @property
    def signed(self) -> bool:
        return self.signature is not None and self.signature != "unsigned"


def verify_model_dir(model_dir: Path, policy: TrustPolicy, registered: Registered = Registered(),
                     name: str | None = None) -> Verification:
    """Check a model directory before it is loaded; raises ModelIntegrityError on any difference.

    registered: what the registry recorded at registration, so that a model whose manifest was deleted, or
    whose files and manifest were both replaced, or whose signature was removed, is still caught when
    signatures are not required. name: how messages call the model (e.g. 'tunegate-classifier v3')."""
    model_dir = Path(model_dir)
    what = name or str(model_dir)
    manifest = model_dir / MANIFEST_FILE
    if not manifest.is_file():
        if registered.manifest_sha256:
            raise ModelIntegrityError(f"{manifest}: missing, but the registry recorded sha256 "
                                      f"{registered.manifest_sha256} for {what}'s manifest: refused")
        if policy.require_signature:
            raise ModelIntegrityError(f"{what} has no manifest ({MANIFEST_FILE}), so no signature: refused "
                                      "(registry.require_signature is true)")
        logger.warning("%s has no manifest (%s): its files cannot be checked; loading it anyway "
                       "(registry.require_signature is false)", what, MANIFEST_FILE)
        return Verification("no-manifest")
    raw = manifest.read_bytes()  # read once: hashed, verified and parsed from the same bytes
    actual = hashlib.sha256(raw).hexdigest()
    if registered.manifest_sha256 and actual != registered.manifest_sha256:
        raise ModelIntegrityError(f"{manifest}: sha256 {actual}, but the registry recorded sha256 "
                                  f"{registered.manifest_sha256} for {what}'s manifest: the model is not the one "
                                  "registered")
    signature = model_dir / SIGNATURE_FILE
    signed = signature.is_file()
    if registered.signed and not signed:
        raise ModelIntegrityError(f"{signature}: missing, but the registry recorded {what} as signed by "
                                  f"{registered.signature}: refused")
    if policy.public_key_pem is not None and signed:
        verify_signature(raw, signature, policy)  # before trusting any hash the manifest lists
    elif policy.require_signature:
        raise ModelIntegrityError(f"{what} is not signed (no {SIGNATURE_FILE}): refused (registry.require_signature "
                                  "is true)")
    elif signed:
        logger.warning("%s is signed, but no public key is configured (registry.signing.public_key or %s): its "
                       "signature is not checked, only its files against the manifest", what, PUBLIC_KEY_ENV)
    elif policy.public_key_pem is not None:
        logger.warning("%s is not signed; loading it because registry.require_signature is false", what)
    entries = parse_manifest(raw, manifest)
    check_files(model_dir, entries, name=name)
    checked = policy.public_key_pem is not None and signed
    return Verification("signed" if checked else "unsigned", actual, policy.key_id if checked else None, len(entries))


def listed_below(folder: Path, levels: int = 3) -> list[dict] | None:
    """The manifest entries of the files under `folder` (e.g. the ONNX export inside a registered MLflow
    Model), relative to it, from the manifest of the model that holds it; None when no manifest is found
    within `levels` folders up (a model registered before manifests, or an export never registered)."""
    folder = Path(folder).resolve()
    for root in [folder, *folder.parents][:levels + 1]:
        if (root / MANIFEST_FILE).is_file():
            prefix = "" if root == folder else folder.relative_to(root).as_posix() + "/"
            return [{**e, "path": e["path"][len(prefix):]} for e in read_manifest(root) if e["path"].startswith(prefix)]
    return None
