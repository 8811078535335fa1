"""`zrep keys new NAME | show FILE | check --config F`: CURVE keypairs and the cluster file's keys.

Exit codes: 0 ok; 2 bad input, or `check` found a problem (one line each).
"""

from __future__ import annotations

import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from zrep.cli import CliError, _echo_json, config_option, json_option
from zrep.errors import ConfigError
from zrep.exit_codes import EXIT_USAGE
from zrep.security.keys import (
    SECRET_SUFFIX,
    KeyFileError,
    fingerprint,
    load_public,
    load_secret,
    new_keypair,
)
from zrep.security.settings import parse_security


@click.group()
def keys() -> None:
    """CURVE keypairs (zcert format) and the checks of a cluster file's keys."""


@keys.command()
@click.argument("name")
@click.option("--dir", "directory", default="keys", show_default=True, type=click.Path(file_okay=False),
              help="Folder for NAME.key and NAME.key_secret (made 0700 if missing).")
@json_option
def new(name: str, directory: str, as_json: bool) -> None:
    """Write a new keypair NAME.key (public) and NAME.key_secret (secret, 0600; never overwritten)."""
    try:
        pub, sec, pair = new_keypair(name, directory)
    except KeyFileError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    info = {"name": name, "public_key": pair.public.decode(), "fingerprint": fingerprint(pair.public),
            "public_file": str(pub), "secret_file": str(sec)}
    if as_json:
        _echo_json(info)
        return
    click.echo(f"public key  {info['public_key']}  (fingerprint {info['fingerprint']})")
    click.echo(f"written     {pub} (share it) and {sec} (keep it on this machine only)")


@keys.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@json_option
def show(file: str, as_json: bool) -> None:
    """Print the public key and fingerprint of a .key or .key_secret file (never the secret)."""
    try:
        public = load_secret(file).public if file.endswith(SECRET_SUFFIX) else load_public(file)
    except KeyFileError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    if as_json:
        _echo_json({"file": file, "public_key": public.decode(), "fingerprint": fingerprint(public)})
    else:
        click.echo(f"{public.decode()}  (fingerprint {fingerprint(public)})")


@keys.command()
@config_option
@json_option
def check(config_path: str, as_json: bool) -> None:
    """Check every key a cluster file names: valid, listed once, secrets matching and not readable by others."""
    problems: list[str] = []
    path = Path(config_path)
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CliError(f"{path}: cannot read the cluster file ({e})", EXIT_USAGE) from None
    try:
        settings = parse_security(raw.get("security"), raw.get("principals"), raw.get("nodes", []),
                                  path.resolve().parent, str(path))
    except ConfigError as e:
        problems.append(str(e))
        settings = None
    secrets: list[dict[str, Any]] = []
    sec_table = raw.get("security") if isinstance(raw.get("security"), dict) else {}
    keys_dir = (path.resolve().parent / str(sec_table.get("keys_dir", "keys"))).resolve()
    if keys_dir.is_dir():  # secrets are checked even when the file's tables are wrong
        listed = set(settings.key_files) if settings else set()
        for secret in sorted(keys_dir.glob(f"*{SECRET_SUFFIX}")):
            try:
                pair = load_secret(secret)
            except KeyFileError as e:
                problems.append(str(e))
                continue
            mode = stat.S_IMODE(secret.stat().st_mode)
            secrets.append({"file": str(secret), "fingerprint": fingerprint(pair.public), "mode": f"{mode:04o}",
                            "listed": pair.public in listed})
    report = {
        "config": str(path),
        "mode": settings.mode if settings else None,
        "nodes": {str(n): [fingerprint(k) for k in ks] for n, ks in (settings.node_keys.items() if settings else [])},
        "principals": [{"name": p.name, "keys": [fingerprint(k) for k in p.keys]}
                       for p in (settings.principals if settings else ())],
        "secrets": secrets,
        "problems": problems,
        "ok": not problems,
    }
    if as_json:
        _echo_json(report)
    else:
        if settings is not None:
            click.echo(f"security mode {settings.mode}; keys in {settings.keys_dir}")
            for n, fps in report["nodes"].items():
                click.echo(f"  node {n}: {', '.join(fps) or '(no key)'}")
            for p in report["principals"]:
                click.echo(f"  principal {p['name']}: {', '.join(p['keys'])}")
            for s in secrets:
                click.echo(f"  secret {s['file']}: {s['fingerprint']}, mode {s['mode']}"
                           + ("" if s["listed"] else " (not listed in the cluster file)"))
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
        click.echo("all keys check out" if not problems else f"{len(problems)} problem(s)")
    if problems:
        sys.exit(EXIT_USAGE)
