"""The one exception tree of peernet.

::

    PeernetError
     ├── ConfigError            bad configuration: names the file, the key and the reason
     │    └── TopologyError     invalid topology (unknown node, self-loop, disconnected, bad weights, ...)
     ├── DataError              dataset files missing or malformed; says how to get them
     ├── ModelError             unknown model or incompatible input shape
     ├── AlgorithmError         unknown algorithm or inconsistent optimizer state
     └── SimulationError        the simulator cannot run the requested setting

Every error carries a human-readable message; the CLI prints it and exits non-zero.
"""

from __future__ import annotations


class PeernetError(Exception):
    """Root of every error peernet raises on purpose."""


class ConfigError(PeernetError):
    """A configuration value is missing, unknown, of the wrong type or out of range.

    ``file`` and ``key`` say where; the message says why, so a user can fix it without reading code.
    """

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = []
        if file:
            where.append(str(file))
        if key:
            where.append(f"key '{key}'")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class TopologyError(ConfigError):
    """A topology file or generated graph is invalid."""


class DataError(PeernetError):
    """Dataset files are missing or malformed."""


class ModelError(PeernetError):
    """Unknown model name or input shape the model cannot take."""


class AlgorithmError(PeernetError):
    """Unknown algorithm name or optimizer state that does not fit the rule."""


class SimulationError(PeernetError):
    """The simulator cannot run the requested setting."""
