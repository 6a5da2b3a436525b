"""The one exception tree of peernet.

::

    PeernetError
     ├── ConfigError            bad configuration: names the file, the key and the reason
     │    └── TopologyError     invalid topology (unknown node, self-loop, disconnected, bad weights, ...)
     ├── DataError              dataset files missing or malformed; says how to get them
     ├── ModelError             unknown model or incompatible input shape
     ├── AlgorithmError         unknown algorithm or inconsistent optimizer state
     ├── SimulationError        the simulator cannot run the requested setting
     ├── WireError              a network message failed validation (dropped and counted, never fatal)
     │    └── CodecError        frames that do not decode: truncated, wrong version, dtype, shape, size
     ├── TransportError         sockets could not be set up or used
     │    ├── PeerUnreachable   a neighbour cannot take a message now (HWM reached, not connected)
     │    └── BootstrapUnavailable   the bootstrap did not answer after the configured retries
     ├── BootstrapRejected      the bootstrap refused a registration (unknown id, duplicate, fingerprint)
     ├── CheckpointError        a checkpoint is missing, corrupt or from another run
     ├── StateOutOfBounds       this node's own tensors left the magnitude bound: it stops rather than send them
     ├── LaunchError            a process of the local cluster failed to start or exited with an error
     ├── NetnsError             a namespace, nftables or tc command of the fault lab failed
     ├── ScenarioFailed         a chaos scenario's cluster failed or ran out of time
     └── RunDirError            a run directory is held by another run, not empty, or not a run's to clear

Caught inside peernet, never shown to a user (``Exception`` subclasses, so a broad ``except
PeernetError`` never swallows them):

    RoundAbandoned   the daemon was told to stop while a round waited for its neighbours
    CatchUp          the neighbours are two or more rounds ahead: jump to their round
    BadRequest       a bootstrap request broke the protocol: answered ok=false and counted
    Refused          the bootstrap registry will not honour a request: the reason goes back to the node

    NodeKilled       (a ``BaseException``) an in-process cluster killed this node's thread, as SIGKILL
                     would a process: no ``except Exception`` on the way may turn it into a clean exit
    Interrupted      (a ``KeyboardInterrupt``) SIGTERM, SIGHUP or SIGINT reached `local` or `chaos`: it
                     unwinds to the command, which stops everything, writes stopped.json, exits 128 + N

Every error carries a human-readable message; the CLI prints it and exits non-zero.
"""

from __future__ import annotations

import reprlib
import signal

#: How much of a user's value an error message shows: hostile input must not flood a terminal or a log.
QUOTE_CHARS = 80


class _Brief(reprlib.Repr):
    """repr() with bounds: strings cut to ``limit`` characters (their length said), a few items per container,
    three levels deep, and no decimal conversion of huge integers (slow, and refused above 4,300 digits)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 3, limit, limit, limit
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 8

    def repr_str(self, x: str, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return f"{x[:self.maxstring]!r}... ({len(x)} characters)"

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 3 * self.maxlong:  # over ~0.9 * limit decimal digits
            return f"<an integer of {x.bit_length()} bits>"
        return repr(x)


def quoted(value: object, limit: int = QUOTE_CHARS) -> str:
    """``value`` for an error message, as repr writes it (control characters escaped) but bounded."""
    try:
        text = _Brief(limit).repr(value)
    except Exception:  # a user object whose __repr__ fails must not turn an error message into a traceback
        return f"<a {type(value).__name__}>"
    return text if len(text) <= 4 * limit else text[: 4 * limit] + "..."  # nested containers add up


def escaped(text: str, limit: int = 3 * QUOTE_CHARS) -> str:
    """``text`` unquoted for a message (a file name, a key): non-printable characters escaped, at most ``limit``."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown if len(text) <= limit else f"{shown}... ({len(text)} characters)"


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
            where.append(escaped(str(file)))  # user text: a path or a key may hold control characters
        if key:
            where.append(f"key '{escaped(str(key))}'")
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


class CompressionError(AlgorithmError):
    """A compressor got settings it cannot use, or a message that does not fit its tensor."""


class SimulationError(PeernetError):
    """The simulator cannot run the requested setting."""


class WireError(PeernetError):
    """A message from the network is invalid; the receiver drops it, counts it and keeps running."""


class CodecError(WireError):
    """Frames that cannot be decoded into a valid message."""


class TransportError(PeernetError):
    """A socket could not be set up or used."""


class PeerUnreachable(TransportError):
    """A neighbour cannot take a message now (send queue full or no connection)."""


class BootstrapUnavailable(TransportError):
    """The bootstrap service did not answer after the configured retries."""


class BootstrapRejected(PeernetError):
    """The bootstrap refused a registration; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"bootstrap rejected registration: {reason}")


class CheckpointError(PeernetError):
    """A checkpoint is missing, corrupt or belongs to another run."""


class StateOutOfBounds(PeernetError):
    """This node's own round tensors hold NaN/Inf or values above ``max_abs``: its neighbours would reject them
    and blame it, so it stops instead of sending them. ``suspects`` are the neighbours whose values exceeded
    ours the most (the source of the push, or a node relaying it); the message says so."""

    def __init__(self, message: str, suspects: tuple[int, ...] = ()) -> None:
        self.suspects = suspects
        super().__init__(message)


class ScenarioFailed(PeernetError):
    """The cluster did not get through the scenario: a node failed, or it ran out of time."""


# Raised by one part of peernet and caught by another; never shown to a user as an error.


class LaunchError(PeernetError):
    """A process of the local cluster failed to start or exited with an error."""


class RoundAbandoned(Exception):
    """Raised from inside gossip when the node is asked to stop while waiting for neighbours."""


class NodeKilled(BaseException):
    """Raised inside a daemon thread of an in-process cluster that was killed (peernet.node.inproc)."""


class CatchUp(Exception):
    """Raised from inside gossip when neighbours are two or more rounds ahead: they went on without us."""

    def __init__(self, round_: int) -> None:
        super().__init__(f"neighbours are at round {round_}")
        self.round = round_


class RunDirError(PeernetError):
    """A run directory cannot be used: another run holds its lock, it is not empty (no --force), or --force
    was asked to empty a directory that is not a peernet run's."""


class Interrupted(KeyboardInterrupt):
    """A stop signal turned into an exception in the main thread (peernet/interrupts.py), as Ctrl-C is.

    A KeyboardInterrupt, so cleanup that already treats Ctrl-C as "stop now" treats SIGTERM and SIGHUP the same
    and no ``except Exception`` swallows it. ``summary`` is what the command did about it, for the last line.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signame = signal.Signals(signum).name
        self.summary = ""
        super().__init__(f"stopped by {self.signame}")


class NetnsError(PeernetError):
    """A namespace, link, nftables or tc command failed (or the tools are missing / not root)."""


class BadRequest(Exception):
    """A request that does not follow the protocol; answered with ok=false and counted."""


class Refused(Exception):
    """A request the registry will not honour; ``reason`` is sent back to the node."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
