"""CURVE key files: create pairs in ZeroMQ's certificate format, load and check them."""

from __future__ import annotations

import datetime
import re
import stat
from collections.abc import Iterable
from pathlib import Path

import zmq

from peernet.atomic import read_bounded, write_atomic
from peernet.core.topology_limits import public_key_problem, z85_problem
from peernet.errors import ConfigError, escaped, quoted

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
#: A certificate is a few hundred bytes; anything much larger is not one, and is not read whole.
MAX_KEY_FILE_BYTES = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# The banners and layout of pyzmq's zmq.auth.create_certificates, so either tool reads the other's files.
_PUBLIC_BANNER = """#   ****  Generated on {0} by peernet  ****
#   ZeroMQ CURVE Public Certificate
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange.

"""
_SECRET_BANNER = """#   ****  Generated on {0} by peernet  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""


def is_z85_key(value: bytes | str) -> bool:
    """True for 40 z85 characters that decode to 32 bytes: the text form of a CURVE key."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return z85_problem(text) is None


def key_paths(directory: str | Path, name: str) -> tuple[Path, Path]:
    """(public, secret) file paths of key pair ``name`` in ``directory``."""
    base = Path(directory)
    return base / f"{name}{PUBLIC_SUFFIX}", base / f"{name}{SECRET_SUFFIX}"


def missing_key_hint(path: str | Path) -> str:
    """How to create a missing key file: the cluster command when it sits in a cluster's keys/ folder."""
    p = Path(path)
    if p.parent.name == "keys":
        return f"run `peernet keygen --cluster {escaped(str(p.parent.parent))}` to create the cluster's keys"
    name = p.name.removesuffix(SECRET_SUFFIX).removesuffix(PUBLIC_SUFFIX)
    if not _NAME.fullmatch(name):  # keygen would refuse it: say what is wrong instead of a command that fails
        return "its name is not one `peernet keygen` can create"
    return f"create it with `peernet keygen {name} --dir {escaped(str(p.parent))}`"


def _certificate(banner: str, public: bytes, secret: bytes | None) -> str:
    now = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    lines = [banner.format(now) + "metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def check_key_name(name: str) -> None:
    """A key name is a plain file name stem: no path separators, no leading dot."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"key name {quoted(name)} must be 1 to 64 letters, digits, '_', '-' or '.', starting with a "
                          "letter or digit")


def create_keypairs(directory: str | Path, names: Iterable[str], *, force: bool = False) -> list[Path]:
    """Write NAME.key (0644) and NAME.key_secret (0600) for every name; returns the files written.

    Without ``force`` an existing file of any of the pairs is an error and nothing at all is written.
    """
    names = list(dict.fromkeys(names))
    for name in names:
        check_key_name(name)
    base = Path(directory)
    if "\x00" in str(base):  # os calls would raise ValueError, not OSError
        raise ConfigError("the path contains a NUL character", file=str(base))
    if base.exists() and not base.is_dir():
        raise ConfigError("is not a directory", file=str(base))
    if not force:
        existing = [str(p) for name in names for p in key_paths(base, name) if p.exists() or p.is_symlink()]
        if existing:
            raise ConfigError(f"key file(s) already exist: {', '.join(existing)}; use --force to replace them")
    try:
        base.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for name in names:
            public, secret = zmq.curve_keypair()
            public_path, secret_path = key_paths(base, name)
            # Secret first: a public key file never exists without its secret beside it.
            write_atomic(secret_path, _certificate(_SECRET_BANNER, public, secret), mode=0o600)
            write_atomic(public_path, _certificate(_PUBLIC_BANNER, public, None), mode=0o644)
            written += [public_path, secret_path]
    except OSError as exc:
        raise ConfigError(f"cannot write key files: {exc.strerror or exc}", file=str(base)) from None
    return written


def ensure_keypairs(directory: str | Path, names: Iterable[str], *, force: bool = False) -> dict[str, bytes]:
    """Create the pairs that are missing (all of them with ``force``); returns every name's public key."""
    names = list(dict.fromkeys(names))
    missing = names if force else [n for n in names if not all(p.exists() for p in key_paths(directory, n))]
    if not force:
        # Half a pair (one file deleted by hand) is not silently replaced: the other half may be in use.
        half = [str(p) for n in missing for p in key_paths(directory, n) if p.exists()]
        if half:
            raise ConfigError(f"incomplete key pair(s): {', '.join(half)} exist without their other half; "
                              "remove them or use --force")
    create_keypairs(directory, missing, force=force)
    return {n: load_public_key(key_paths(directory, n)[0]) for n in names}


def _parse_certificate(data: bytes) -> tuple[bytes | None, bytes | None]:
    """(public, secret) of a ZeroMQ certificate's text, read as ``zmq.auth.load_certificate`` reads it."""
    public = secret = None
    for raw_line in data.splitlines():
        line = raw_line.strip()
        name, eq, value = line.partition(b"=")
        if line.startswith(b"#") or not eq:
            continue
        if name.startswith(b"public-key") and public is None:  # the first one counts, as in pyzmq
            public = value.strip(b" \t'\"")
        elif name.startswith(b"secret-key") and secret is None:
            secret = value.strip(b" \t'\"")
    return public, secret


def _read_certificate(path: Path, what: str) -> tuple[bytes, bytes | None]:
    try:
        data = read_bounded(path, MAX_KEY_FILE_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found; {missing_key_hint(path)}", file=str(path)) from None
    except PermissionError:
        raise ConfigError(f"{what} is not readable (permission denied)", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror or exc}", file=str(path)) from None
    public, secret = _parse_certificate(data)
    if public is None:
        raise ConfigError(f"{what} is not a ZeroMQ CURVE certificate (no public-key line)", file=str(path))
    problem = public_key_problem(public.decode("latin-1"))
    if problem is not None:
        raise ConfigError(f"{what} holds a malformed public key: it {problem}", file=str(path))
    return public, secret


def load_public_key(path: str | Path) -> bytes:
    """The z85 public key of a certificate file (NAME.key, or NAME.key_secret, which holds it too)."""
    return _read_certificate(Path(path), "public key file")[0]


def load_secret_key(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys of NAME.key_secret; ConfigError naming the file for any problem.

    The file must not be readable by group or others: a leaked secret key lets anyone act as that node.
    """
    p = Path(path)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except FileNotFoundError:
        raise ConfigError(f"secret key file not found; {missing_key_hint(p)}", file=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read secret key file: {exc.strerror or exc}", file=str(p)) from None
    except ValueError:
        raise ConfigError("cannot read secret key file: the path contains a NUL character", file=str(p)) from None
    if p.is_file() and mode & 0o077:
        raise ConfigError(f"secret key file is readable by others (mode {mode:04o}); run chmod 600 "
                          f"{escaped(str(p))}", file=str(p))
    public, secret = _read_certificate(p, "secret key file")
    if secret is None:
        raise ConfigError("secret key file has no secret-key line (is this the public .key file?)", file=str(p))
    if not is_z85_key(secret):
        raise ConfigError("secret key file holds a malformed secret key (expected 40 z85 characters)", file=str(p))
    if zmq.curve_public(secret) != public:
        raise ConfigError("secret key file's public-key does not belong to its secret-key", file=str(p))
    return public, secret
