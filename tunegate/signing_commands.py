"""`tunegate keygen` and `tunegate verify`: a signing key pair, and a registered version checked by hand
against its manifest and signature (what serve, predict, pyfunc and promotion check on their own)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_keygen(args) -> int:
    from components.lifecycle.signing import generate_key_pair

    private_path, public_path = generate_key_pair(Path(args.out))
    print(f"private key: {private_path} (readable by you only; keep it out of git and out of params.yaml)\n"
          f"public key:  {public_path}\n"
          "To sign every version the next runs register and refuse any other bytes:\n"
          f"  params.yaml  registry: {{signing: {{public_key: {public_path}}}, require_signature: true}}\n"
          f"  environment  export TUNEGATE_SIGNING_KEY=\"$(cat {private_path})\"   (where registration runs)")
    return 0


def cmd_verify(args, layout_of, open_registry) -> int:
    from components.serving.deployment import pick_version

    registry = open_registry(layout_of(args))
    info = pick_version(registry, args.version)
    checked = registry.verify(info.version)
    if checked.status == "no-manifest":
        print(f"{registry.model_name} v{info.version}: no manifest (registered before manifests); its files cannot "
              "be checked")
        return 1
    signer = f"signature by key {checked.key_id} holds" if checked.status == "signed" else "no signature checked"
    print(f"{registry.model_name} v{info.version}: {checked.status}; {checked.files} files match the manifest "
          f"(sha256 {checked.manifest_sha256}); {signer}")
    return 0


def add_signing_parsers(verbs: argparse._SubParsersAction, layout_of, open_registry) -> None:
    keygen = verbs.add_parser("keygen", help="make an elliptic-curve key pair to sign registered versions with")
    keygen.add_argument("--out", default="keys", help="folder for tunegate-signing.key and .pub (default: keys)")
    keygen.set_defaults(handler=cmd_keygen)

    verify = verbs.add_parser("verify", help="check a registered version's files and signature against what was "
                                             "registered (the champion, or --version)")
    verify.add_argument("--version", help="a registered version instead of the champion")
    verify.set_defaults(handler=lambda args: cmd_verify(args, layout_of, open_registry))
