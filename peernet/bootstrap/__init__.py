"""The bootstrap (rendezvous) service: nodes register, learn each other's endpoints and report progress."""

from peernet.bootstrap.client import BootstrapClient, ClientCurve, new_incarnation
from peernet.bootstrap.config import BootstrapConfig, load_bootstrap_config
from peernet.bootstrap.registry import Refused, Registry
from peernet.bootstrap.service import BootstrapService
from peernet.config import run_fingerprint

__all__ = [
    "BootstrapClient",
    "BootstrapConfig",
    "BootstrapService",
    "ClientCurve",
    "Refused",
    "Registry",
    "load_bootstrap_config",
    "new_incarnation",
    "run_fingerprint",
]
