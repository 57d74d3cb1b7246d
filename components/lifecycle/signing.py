"""Signing at registration and the trust policy every loader applies, from params' `registry` section.

Registration writes the version's manifest (components/export/integrity.py) and, when the private key's
environment variable is set, signs it with the OpenSSF model-signing library's elliptic-key signer: a key
pair needs no network, unlike keyless Sigstore signing. The public key is named in params.yaml
(`registry.signing.public_key`); the private key never is."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from components.config import ConfigError, RegistryParams, SigningParams
from components.export.integrity import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    TrustPolicy,
    check_files,
    key_id,
    manifest_entries,
    parse_manifest,
    read_key_material,
    write_manifest,
)

logger = logging.getLogger("tunegate.signing")

# The version tags that say what was registered: the manifest's own hash and who signed it, and the files of
# the PyTorch weights that travel beside the version (continual learning starts from them).
MANIFEST_TAG, SIGNATURE_TAG, PYTORCH_FILES_TAG = "manifest_sha256", "signature", "pytorch_files"
UNSIGNED = "unsigned"
PRIVATE_KEY_FILE, PUBLIC_KEY_FILE = "tunegate-signing.key", "tunegate-signing.pub"


def trust_policy(registry: RegistryParams, project_root: Path) -> TrustPolicy:
    """What loaders and promotion check, from registry.signing.public_key and registry.require_signature."""
    configured = registry.signing.public_key
    if not configured:
        return TrustPolicy(None, registry.require_signature)
    path = Path(configured).expanduser()
    path = path if path.is_absolute() else project_root / path
    if not path.is_file():
        raise ConfigError(f"registry.signing.public_key: {path} does not exist (`tunegate keygen` makes a key pair)")
    return TrustPolicy(path.read_bytes(), registry.require_signature)


def signing_key(signing: SigningParams, env: Mapping[str, str] | None = None) -> bytes | None:
    """The private key registration signs with (PEM), from the environment variable signing.private_key_env."""
    value = (os.environ if env is None else env).get(signing.private_key_env)
    return read_key_material(value, signing.private_key_env) if value else None


def public_key_of(private_key_pem: bytes) -> bytes:
    """The PEM public key of an unencrypted elliptic-curve private key; ConfigError for anything else."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ConfigError(f"the signing key is not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"the signing key is a {type(key).__name__}; model-signing's key signer takes an "
                          "elliptic-curve key (`tunegate keygen` makes one)")
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign_manifest(model_dir: Path, private_key_pem: bytes) -> str:
    """Sign model_dir's manifest (written before) into its signature file; returns the signing key's id."""
    from model_signing import signing

    model_dir = Path(model_dir)
    signer = key_id(public_key_of(private_key_pem))  # an unusable key is a ConfigError here, never retried
    # The library reads the key from a file: a private one, removed with its folder.
    with tempfile.TemporaryDirectory(prefix="tunegate-key-") as scratch:
        key_file = Path(scratch) / "private.pem"
        key_file.touch(mode=0o600)
        key_file.write_bytes(private_key_pem)
        try:
            signing.Config().use_elliptic_key_signer(private_key=key_file).sign(model_dir / MANIFEST_FILE,
                                                                                model_dir / SIGNATURE_FILE)
        except ValueError as error:
            raise ConfigError(f"could not sign {model_dir / MANIFEST_FILE} with the signing key ({error})") from None
    return signer


def seal_model_dir(model_dir: Path, registry: RegistryParams, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write the manifest of a model about to be registered and sign it when the private key is set.
    Returns the version tags that record it (manifest_sha256, signature: the key id or 'unsigned')."""
    manifest_sha256 = write_manifest(model_dir)
    private_key = signing_key(registry.signing, env)
    if private_key is None:
        if registry.require_signature:
            raise ConfigError(_missing_key(registry))
        logger.warning("registering an unsigned version: set $%s to a private key to sign it (`tunegate keygen`)",
                       registry.signing.private_key_env)
        return {MANIFEST_TAG: manifest_sha256, SIGNATURE_TAG: UNSIGNED}
    return {MANIFEST_TAG: manifest_sha256, SIGNATURE_TAG: sign_manifest(model_dir, private_key)}


def require_signing_key(registry: RegistryParams, env: Mapping[str, str] | None = None) -> None:
    """Refuse in seconds, not after training, a run that could not sign what it registers."""
    if registry.require_signature:
        key = signing_key(registry.signing, env)
        if key is None:
            raise ConfigError(_missing_key(registry))
        public_key_of(key)  # a key that does not parse fails here, not at registration


def _missing_key(registry: RegistryParams) -> str:
    return (f"registry.require_signature is true but ${registry.signing.private_key_env} is not set: registration "
            "needs the private key to sign the version")


def generate_key_pair(directory: Path) -> tuple[Path, Path]:
    """A new elliptic-curve (P-256) key pair: the private key readable by its owner only, the public one to commit."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE
    if private_path.exists() or public_path.exists():
        raise ConfigError(f"{directory} already holds a key pair ({PRIVATE_KEY_FILE}, {PUBLIC_KEY_FILE}): "
                          "move it away first; a new key would make every signed version unverifiable with it")
    key = ec.generate_private_key(ec.SECP256R1())
    private_path.touch(mode=0o600)
    private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    public_path.write_bytes(public_key_of(private_path.read_bytes()))
    return private_path, public_path


def pytorch_files_tag(weights_dir: Path) -> dict[str, str]:
    """The version tag listing the PyTorch weights' files (path, size, sha256) registered beside the model."""
    return {PYTORCH_FILES_TAG: json.dumps({"files": manifest_entries(weights_dir)}, separators=(",", ":"))}


def check_pytorch_weights(tags: Mapping[str, str], weights_dir: Path) -> None:
    """The champion's PyTorch weights, downloaded to start training from, against the files its version lists;
    a version registered before they were listed is trusted with a warning."""
    listed = tags.get(PYTORCH_FILES_TAG)
    if not listed:
        logger.warning("the champion's version lists no PyTorch files (registered before they were listed): "
                       "its weights in %s are not checked", weights_dir)
        return
    check_files(weights_dir, parse_manifest(listed.encode(), weights_dir))
