"""``peernet bootstrap`` runs the rendezvous service; ``peernet status`` shows the run's nodes from it."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from peernet.cli.common import given_log_level, log_level_option, reports_errors
from peernet.errors import BootstrapUnavailable, PeernetError

if TYPE_CHECKING:
    from peernet.bootstrap.client import BootstrapClient, ClientCurve


@click.command("bootstrap")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="bootstrap.toml: listen, run, state_dir, node_ttl, max_nodes")
@click.option("--listen", default=None, help="bind address, overriding the file's (port '*' or 0: any free port)")
@click.option("--fresh", is_flag=True, help="discard the registry in state_dir and start a new run")
@log_level_option(own=True, default="info")
@reports_errors
def bootstrap(config_path: str, listen: str | None, fresh: bool) -> None:
    """Run the bootstrap service in the foreground until SIGTERM, SIGHUP or Ctrl-C.

    Nodes register with it, wait until every node of the topology is there, then learn each other's
    endpoints; it is not in the data path, so training goes on if it stops. Prints
    'bootstrap listening on ADDRESS' on stderr once bound.
    """
    logger = logging.getLogger("peernet.bootstrap")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    # The handler lives only as long as the command, so embedding or testing it leaves logging as it was.
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel((given_log_level() or "info").upper())
    try:
        _serve(config_path, listen, fresh)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def _serve(config_path: str, listen: str | None, fresh: bool) -> None:
    from peernet.bootstrap.config import load_bootstrap_config
    from peernet.bootstrap.service import BootstrapService
    from peernet.transport.trim import trim_after_hostile_messages

    config = load_bootstrap_config(config_path, {"listen": listen} if listen else None)
    service = BootstrapService(config, fresh=fresh)
    # Once it is bound (the command's refusals come first): this process is the bootstrap, and what a hostile
    # request occupied goes back to the system after it (docs/security.md, "Allocator high-water").
    trim_after_hostile_messages()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # SIGHUP too (a closed terminal: a clean stop), unless it is ignored, as nohup does.
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in stops
                if sig != signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        click.echo(f"bootstrap listening on {service.endpoint}", err=True)
        service.serve_forever(stop)
    finally:
        for sig, old in previous.items():
            if old is not None:  # None: installed outside Python, which cannot be restored from here
                signal.signal(sig, old)
        service.close()
    logging.getLogger("peernet.bootstrap").info("stopped")


@click.command("status")
@click.option("--bootstrap", "address", default=None,
              help="bootstrap address, e.g. tcp://10.0.0.1:5550 (default with --run-dir: that run's bootstrap)")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="a `peernet local` or `peernet chaos` run directory: its bootstrap's address and, with CURVE, "
                   "the operator's keys (keys/operator.key_secret, keys/bootstrap.key)")
@click.option("--json", "as_json", is_flag=True, help="print the bootstrap's status reply as one JSON object")
@click.option("--watch", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="refresh every SECONDS until Ctrl-C")
@click.option("--timeout", type=click.FloatRange(min=0.01), default=2.0, show_default=True,
              help="seconds to wait for each of the 2 tries")
@click.option("--secret-key", "secret_key", type=click.Path(dir_okay=False), default=None,
              help="CURVE: our secret key file, whose public key is among the bootstrap's client_keys_files "
                   "(e.g. keys/operator.key_secret)")
@click.option("--server-key", default=None, help="CURVE: the bootstrap's public key (40 z85 characters)")
@click.option("--server-key-file", type=click.Path(dir_okay=False), default=None,
              help="CURVE: or the file holding it (e.g. keys/bootstrap.key)")
@log_level_option()
@reports_errors
def status(address: str | None, run_dir: str | None, as_json: bool, watch: float | None, timeout: float,
           secret_key: str | None, server_key: str | None, server_key_file: str | None) -> None:
    """Show every node of the run: state, round, loss, accuracy, last heartbeat and traffic.

    A bootstrap with a secret_key answers only known keys: pass --secret-key and --server-key(-file), or
    --run-dir for a run of `peernet local`. Exits 2 with a message when the bootstrap does not answer, saying
    what the connection got (nothing listening, a refused CURVE handshake, silence), unless --watch, which
    keeps trying.
    """
    from peernet.bootstrap.client import BootstrapClient

    address, curve = _target(address, run_dir, secret_key, server_key, server_key_file)
    with BootstrapClient(address, timeout=timeout, retries=2, curve=curve) as client:
        if watch is None:
            _show(_ask(client), as_json)
            return
        try:
            while True:
                try:
                    reply = _ask(client)
                except PeernetError as exc:
                    click.echo(f"error: {exc}", err=True)
                else:
                    if not as_json:
                        click.clear()
                    _show(reply, as_json)
                time.sleep(watch)
        except KeyboardInterrupt:
            return


def _ask(client: BootstrapClient) -> dict[str, Any]:
    """The status reply; a bootstrap that does not answer is diagnosed, so a CURVE bootstrap asked without keys
    does not look like a dead one."""
    from peernet.bootstrap.client import diagnose

    try:
        return client.status()
    except BootstrapUnavailable:
        why = diagnose(client.address, client.curve, client.timeout)
        raise BootstrapUnavailable(f"bootstrap at {client.address}: no answer within {client.retries} tries of "
                                   f"{client.timeout:g}s; {why}") from None


def _target(address: str | None, run_dir: str | None, secret_key: str | None, server_key: str | None,
            server_key_file: str | None) -> tuple[str, ClientCurve | None]:
    """The bootstrap address and CURVE keys: from the options, or from a run directory (options win)."""
    from peernet.core.topology_limits import endpoint_problem
    from peernet.endpoint_file import read_endpoint
    from peernet.errors import ConfigError
    from peernet.security.cluster import BOOTSTRAP_KEY, KEYS_DIR, OPERATOR_KEY
    from peernet.security.keys import PUBLIC_SUFFIX, SECRET_SUFFIX

    if run_dir is not None:
        run = Path(run_dir)
        if address is None:
            address = read_endpoint(run / "bootstrap")
            if address is None:
                raise ConfigError("no bootstrap address in bootstrap/endpoint: not a run directory, or its "
                                  "bootstrap has not started yet", file=str(run))
        operator = run / KEYS_DIR / f"{OPERATOR_KEY}{SECRET_SUFFIX}"
        if secret_key is None and server_key is None and server_key_file is None and operator.exists():
            secret_key, server_key_file = str(operator), str(run / KEYS_DIR / f"{BOOTSTRAP_KEY}{PUBLIC_SUFFIX}")
    if address is None:
        raise click.UsageError("give --bootstrap ADDRESS or --run-dir DIR")
    problem = endpoint_problem(address)
    if problem is not None:
        raise click.BadParameter(f"{address!r} {problem} (expected tcp://HOST:PORT)", param_hint="'--bootstrap'")
    return address, _client_curve(secret_key, server_key, server_key_file)


def _client_curve(secret_key: str | None, server_key: str | None, server_key_file: str | None) -> ClientCurve | None:
    from peernet.bootstrap.client import ClientCurve
    from peernet.security.keys import is_z85_key, load_public_key, load_secret_key

    if server_key is not None and server_key_file is not None:
        raise click.UsageError("give --server-key or --server-key-file, not both")
    has_server = server_key is not None or server_key_file is not None
    if secret_key is None:
        if has_server:
            raise click.UsageError("--server-key needs --secret-key (a key the bootstrap allows)")
        return None
    if not has_server:
        raise click.UsageError("--secret-key needs the bootstrap's public key: --server-key or --server-key-file")
    public, secret = load_secret_key(secret_key)
    if server_key is not None and not is_z85_key(server_key):
        raise click.BadParameter("expected 40 z85 characters", param_hint="--server-key")
    server = server_key.encode() if server_key is not None else load_public_key(str(server_key_file))
    return ClientCurve(server.decode(), public.decode(), secret.decode())


def _show(reply: dict[str, Any], as_json: bool) -> None:
    if not reply.get("ok"):
        raise PeernetError(f"bootstrap refused the status request: {reply.get('reason')}")
    if as_json:
        click.echo(json.dumps(reply, default=str))
        return
    click.echo(format_status(reply))


def format_status(reply: dict[str, Any]) -> str:
    """The status reply as a table for humans, with a one-line summary on top."""
    nodes = reply.get("nodes", [])
    live = sum(1 for n in nodes if n.get("live"))
    head = (f"run {'started' if reply.get('started') else 'not started'}: {live}/{reply.get('expected', len(nodes))} "
            f"nodes live")
    for key, what in (("bad_requests", "bad requests"), ("failed_handshakes", "failed handshakes"),
                      ("refused_handshakes", "refused handshakes")):
        if reply.get(key):
            head += f", {reply[key]} {what}"
    rows = [("node", "state", "round", "loss", "accuracy", "last seen", "sent", "received")]
    for n in nodes:
        state = str(n.get("state"))
        if n.get("left"):
            state = f"left ({state})"
        elif not n.get("live") and state != "unregistered":
            state = f"silent ({state})"
        age = n.get("last_seen_age")
        rows.append((str(n.get("id")), state, _text(n.get("round")), _num(n.get("loss")), _num(n.get("accuracy")),
                     "-" if age is None else f"{age:.1f}s ago", human_bytes(n.get("bytes_out")),
                     human_bytes(n.get("bytes_in"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([head, *lines])


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def human_bytes(value: Any) -> str:
    """1536 -> '1.5 KiB'; missing values show as '-'."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"  # unreachable: the loop returns at TiB

