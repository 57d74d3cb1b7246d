"""Signing at registration and the trust policy every loader applies, from params' `registry` section.

Registration writes the version's manifest (components/export/integrity.py) and, when the private key's
environment variable is set, signs it with the OpenSSF model-signing library's elliptic-key signer: a key
pair needs no network, unlike keyless Sigstore signing. The public key is named in params.yaml
(`registry.signing.public_key`); the private key never is."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from components.config import ConfigError, RegistryParams, SigningParams
from components.export.integrity import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    ModelIntegrityError,
    TrustPolicy,
    key_id,
    read_key_material,
    write_manifest,
)

logger = logging.getLogger("tunegate.signing")

# The version tags that say what was registered: the manifest's own hash and who signed it.
MANIFEST_TAG, SIGNATURE_TAG = "manifest_sha256", "signature"
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
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_key_pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign_manifest(model_dir: Path, private_key_pem: bytes) -> str:
    """Sign model_dir's manifest (written before) into its signature file; returns the signing key's id."""
    from model_signing import signing

    model_dir = Path(model_dir)
    # The library reads the key from a file: a private one, removed with its folder.
    with tempfile.TemporaryDirectory(prefix="tunegate-key-") as scratch:
        key_file = Path(scratch) / "private.pem"
        key_file.touch(mode=0o600)
        key_file.write_bytes(private_key_pem)
        try:
            signing.Config().use_elliptic_key_signer(private_key=key_file).sign(model_dir / MANIFEST_FILE,
                                                                                model_dir / SIGNATURE_FILE)
        except ValueError as error:
            raise ModelIntegrityError(f"could not sign {model_dir / MANIFEST_FILE} with the key in "
                                      f"the signing key's variable ({error})") from None
    return key_id(public_key_of(private_key_pem))


def seal_model_dir(model_dir: Path, registry: RegistryParams, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write the manifest of a model about to be registered and sign it when the private key is set.
    Returns the version tags that record it (manifest_sha256, signature: the key id or 'unsigned')."""
    manifest_sha256 = write_manifest(model_dir)
    private_key = signing_key(registry.signing, env)
    if private_key is None:
        if registry.require_signature:
            raise ConfigError(f"registry.require_signature is true but ${registry.signing.private_key_env} is not "
                              "set: registration needs the private key to sign the version")
        logger.warning("registering an unsigned version: set $%s to a private key to sign it (`tunegate keygen`)",
                       registry.signing.private_key_env)
        return {MANIFEST_TAG: manifest_sha256, SIGNATURE_TAG: UNSIGNED}
    return {MANIFEST_TAG: manifest_sha256, SIGNATURE_TAG: sign_manifest(model_dir, private_key)}


def require_signing_key(registry: RegistryParams, env: Mapping[str, str] | None = None) -> None:
    """Refuse in seconds, not after training, a run that could not sign what it registers."""
    if registry.require_signature:
        key = signing_key(registry.signing, env)
        if key is None:
            raise ConfigError(f"registry.require_signature is true but ${registry.signing.private_key_env} is not "
                              "set: registration needs the private key to sign the version")
        public_key_of(key)  # a key that does not parse fails here, not at registration


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
