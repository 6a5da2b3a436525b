"""CURVE security: key files, the ZAP allowlist handler and cluster key generation (docs/node.md, "CURVE")."""

from peernet.security.keys import create_keypairs, ensure_keypairs, load_public_key, load_secret_key
from peernet.security.zap import ZapHandler, is_loopback, user_id_of, warn_if_exposed

__all__ = [
    "ZapHandler",
    "create_keypairs",
    "ensure_keypairs",
    "is_loopback",
    "load_public_key",
    "load_secret_key",
    "user_id_of",
    "warn_if_exposed",
]
