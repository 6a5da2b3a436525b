"""Key files: created with safe modes in ZeroMQ's format, never overwritten by accident, checked when loaded."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth

from peernet.core.topology import generate
from peernet.errors import ConfigError
from peernet.security.cluster import keygen_cluster
from peernet.security.keys import create_keypairs, ensure_keypairs, load_public_key, load_secret_key
from peernet.topology_files import save_topology
from tests.bootstrap import write_run


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_pairs_have_safe_modes_and_zeromq_format(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not make a secret readable by others
    try:
        written = create_keypairs(tmp_path / "keys", ["node0", "operator"])
    finally:
        os.umask(old)
    assert sorted(p.name for p in written) == ["node0.key", "node0.key_secret", "operator.key", "operator.key_secret"]
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == sorted(p.name for p in written)  # no temp files
    public_file, secret_file = tmp_path / "keys" / "node0.key", tmp_path / "keys" / "node0.key_secret"
    assert mode(public_file) == 0o644 and mode(secret_file) == 0o600
    public, none = zmq.auth.load_certificate(public_file)  # pyzmq reads our files ...
    assert none is None
    public2, secret = zmq.auth.load_certificate(secret_file)
    assert public2 == public and secret is not None and zmq.curve_public(secret) == public
    assert load_secret_key(secret_file) == (public, secret) and load_public_key(public_file) == public
    pyzmq_public, pyzmq_secret = zmq.auth.create_certificates(tmp_path, "theirs")  # ... and we read pyzmq's
    os.chmod(pyzmq_secret, 0o600)
    assert load_secret_key(pyzmq_secret)[0] == load_public_key(pyzmq_public)


def test_existing_files_are_never_overwritten_without_force(tmp_path: Path) -> None:
    create_keypairs(tmp_path, ["b"])
    before = (tmp_path / "b.key_secret").read_text()
    with pytest.raises(ConfigError, match=r"b\.key, .*b\.key_secret; use --force"):
        create_keypairs(tmp_path, ["a", "b"])
    assert not (tmp_path / "a.key").exists() and not (tmp_path / "a.key_secret").exists()  # nothing else made
    assert (tmp_path / "b.key_secret").read_text() == before
    create_keypairs(tmp_path, ["a", "b"], force=True)
    assert (tmp_path / "b.key_secret").read_text() != before and mode(tmp_path / "b.key_secret") == 0o600
    with pytest.raises(ConfigError, match=r"key name '\.\./x'"):
        create_keypairs(tmp_path, ["../x"])


def test_half_pairs_are_not_silently_replaced(tmp_path: Path) -> None:
    ensure_keypairs(tmp_path, ["n"])
    (tmp_path / "n.key").unlink()
    with pytest.raises(ConfigError, match=r"n\.key_secret exist without their other half"):
        ensure_keypairs(tmp_path, ["n"])


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o700])
def test_secret_readable_by_others_is_refused(tmp_path: Path, bits: int) -> None:
    create_keypairs(tmp_path, ["n"])
    secret = tmp_path / "n.key_secret"
    os.chmod(secret, bits)
    if bits & 0o077:
        with pytest.raises(ConfigError) as info:
            load_secret_key(secret)
        assert str(info.value) == (f"{secret}: secret key file is readable by others (mode {bits:04o}); "
                                   f"run chmod 600 {secret}")
    else:
        load_secret_key(secret)  # owner-only (even with x) is fine


def test_missing_garbage_and_wrong_files_name_the_file_and_reason(tmp_path: Path) -> None:
    missing = tmp_path / "keys" / "node3.key_secret"
    with pytest.raises(ConfigError, match=rf"^{missing}: secret key file not found; run `peernet keygen --cluster "
                                          rf"{tmp_path}`"):
        load_secret_key(missing)
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'x.key'}: public key file not found; create it with "
                                          rf"`peernet keygen x --dir {tmp_path}`"):
        load_public_key(tmp_path / "x.key")
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_bytes(b"\x00\xffnot a certificate\n")
    os.chmod(garbage, 0o600)
    with pytest.raises(ConfigError, match=rf"^{garbage}: secret key file is not a ZeroMQ CURVE certificate"):
        load_secret_key(garbage)
    create_keypairs(tmp_path, ["n", "m"])
    public_only = tmp_path / "n.key"
    os.chmod(public_only, 0o600)
    with pytest.raises(ConfigError, match="no secret-key line"):
        load_secret_key(public_only)
    mixed = tmp_path / "mixed.key_secret"
    lines = (tmp_path / "n.key_secret").read_text().splitlines()
    other = (tmp_path / "m.key_secret").read_text().splitlines()
    mixed.write_text("\n".join([*lines[:-1], other[-1]]) + "\n")  # n's public key with m's secret key
    os.chmod(mixed, 0o600)
    with pytest.raises(ConfigError, match="public-key does not belong to its secret-key"):
        load_secret_key(mixed)
    short = tmp_path / "short.key"
    short.write_text('curve\n    public-key = "abc"\n')
    with pytest.raises(ConfigError, match="malformed public key"):
        load_public_key(short)
    with pytest.raises(ConfigError, match="is a directory"):
        load_public_key(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_secret_is_refused(tmp_path: Path) -> None:
    create_keypairs(tmp_path, ["n"])
    os.chmod(tmp_path / "n.key_secret", 0o000)
    with pytest.raises(ConfigError, match="not readable"):
        load_secret_key(tmp_path / "n.key_secret")


def test_cluster_keys_are_idempotent_and_forced_anew(tmp_path: Path) -> None:
    write_run(tmp_path, n=3)
    made = keygen_cluster(tmp_path)
    names = ["node0", "node1", "node2", "bootstrap", "operator"]
    assert made.created == names and made.directory == tmp_path / "keys"
    assert made.node_keys() == {i: made.public[f"node{i}"].decode() for i in range(3)}
    again = keygen_cluster(tmp_path)
    assert again.created == [] and again.public == made.public
    (tmp_path / "keys" / "node1.key").unlink()
    (tmp_path / "keys" / "node1.key_secret").unlink()
    third = keygen_cluster(tmp_path)
    assert third.created == ["node1"] and third.public["node0"] == made.public["node0"]
    forced = keygen_cluster(tmp_path, force=True)
    assert forced.created == names and forced.public["node0"] != made.public["node0"]
    with pytest.raises(ConfigError, match=r"no run\.toml here"):
        keygen_cluster(tmp_path / "keys")


def test_cluster_flags_inline_keys_that_are_not_the_key_files(tmp_path: Path) -> None:
    write_run(tmp_path, n=3)
    save_topology(generate("ring", 3).with_keys({1: zmq.curve_keypair()[0].decode()}), tmp_path / "topology.toml")
    assert keygen_cluster(tmp_path).stale == [1]
