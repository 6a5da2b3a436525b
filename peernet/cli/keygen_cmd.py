"""``peernet keygen``: CURVE key pairs for nodes, the bootstrap and operators, one by one or for a whole cluster."""

from __future__ import annotations

import click

from peernet.cli.common import log_level_option, reports_errors


@click.command("keygen")
@click.argument("names", nargs=-1)
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="directory for NAME.key and NAME.key_secret (created if missing)")
@click.option("--cluster", type=click.Path(file_okay=False), default=None,
              help="a cluster directory holding run.toml: create DIR/keys/ with a pair per topology node "
                   "(node<id>), one for the bootstrap and one for the operator (peernet status)")
@click.option("--force", is_flag=True, help="replace existing key files (every node must then get the new keys)")
@log_level_option()
@reports_errors
def keygen(names: tuple[str, ...], directory: str | None, cluster: str | None, force: bool) -> None:
    """Create CURVE key pairs in ZeroMQ's certificate format: NAME.key (public, mode 0644) and
    NAME.key_secret (secret, mode 0600, never share it).

    \b
    peernet keygen node3 bootstrap --dir keys    one pair per NAME
    peernet keygen --cluster node                 every key the cluster in node/ needs

    Existing files are never overwritten without --force: with NAMEs that is an error and nothing is
    written; with --cluster existing pairs are kept, so running it again is harmless.
    """
    from peernet.security.cluster import KEYS_DIR, keygen_cluster
    from peernet.security.keys import create_keypairs

    if cluster is not None:
        if names or directory is not None:
            raise click.UsageError("--cluster takes no NAMEs and no --dir (the keys go to CLUSTER/keys)")
        made = keygen_cluster(cluster, force=force)
        kept = len(made.public) - len(made.created)
        created = ", ".join(made.created) if made.created else "nothing new"
        click.echo(f"{made.directory}: created {created}; kept {kept} existing pair(s)")
        if made.stale:
            click.echo(f"warning: the topology gives node(s) {made.stale} an inline public_key that is not their "
                       f"key file's; use public_key_file = \"{KEYS_DIR}/node<id>.key\" instead", err=True)
        return
    if not names:
        raise click.UsageError("give one or more NAMEs with --dir DIR, or --cluster DIR")
    if directory is None:
        raise click.UsageError("--dir DIR is required with NAMEs")
    for path in create_keypairs(directory, names, force=force):
        kind = "secret, mode 0600" if path.name.endswith("_secret") else "public, mode 0644"
        click.echo(f"wrote {path} ({kind})")
