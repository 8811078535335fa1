"""`zrep`: the command line (click), the only package that imports click. Entry point `main`.

This module holds the root group with its ONE lazy table of commands, the
error -> exit-code mapping (zrep.exit_codes) and the shared options
(`late_options`: --config, --timeout and -v accepted after a command's name
too, kept in ctx.meta; a later --key belongs there as well). Each
command group lives in its own module and is imported only when used (or
listed by --help): `node` (cli/node.py), `client ...` (cli/client.py),
`cluster up` (cli/cluster.py), `log inspect` (cli/log.py), `bench ...`
(cli/bench.py), `sim` (cli/sim.py), `chaos` (cli/chaos.py), `verify`
(cli/verify.py), `keys` (cli/keys.py), `admin ...` (cli/admin.py).

Invariants
- Output is human-readable by default; `--json` prints data (one JSON value,
  or one per line for `watch`) and nothing else on stdout.
- Every failure is ONE line on stderr saying what happened and what to do,
  and an exit code from the table below (`--verbose` adds the traceback).
  A reader that closes stdout early (`| head`) ends the command quietly
  (EXIT_BROKEN_PIPE), as git does.
- Heavy or optional modules (the node, the simulator, the benchmark) are
  imported inside their command, so `zrep --help` is quick and the client
  commands never load the node.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from zrep.client import NotAuthorized, OutcomeUnknown, Rejected, Unavailable
from zrep.errors import ConfigError, ZrepError
from zrep.exit_codes import (  # noqa: F401  (EXIT_* re-exported: tests and scripts read zrep.cli.EXIT_*)
    CLIENT_CODES,
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_NOT_AUTHORIZED,
    EXIT_OK,
    EXIT_OUTCOME_UNKNOWN,
    EXIT_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    NODE_CODES,
    epilog,
)

EXIT_CODES_HELP = epilog(CLIENT_CODES)
NODE_EXIT_CODES_HELP = epilog(NODE_CODES)
DEFAULT_CONFIG = "config/cluster.toml"
CONFIG_ENV = "ZREP_CONFIG"
TIMEOUT_ENV = "ZREP_TIMEOUT"

F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------- errors -> exit codes


class CliError(click.ClickException):
    """One line on stderr and a chosen exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _exit_code_of(error: ZrepError) -> int:
    if isinstance(error, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(error, OutcomeUnknown):
        return EXIT_OUTCOME_UNKNOWN
    if isinstance(error, NotAuthorized) or (isinstance(error, Rejected) and error.code == "FORBIDDEN"):
        return EXIT_NOT_AUTHORIZED
    if isinstance(error, Rejected):
        return EXIT_REJECTED
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    return EXIT_INTERNAL


class ZrepGroup(click.Group):
    """The root group: turns every uncaught error into one line and an exit code.

    Commands in LAZY are imported only when used (or listed by --help).
    """

    LAZY = {
        "node": "zrep.cli.node:node",
        "client": "zrep.cli.client:client",
        "cluster": "zrep.cli.cluster:cluster",
        "log": "zrep.cli.log:log",
        "bench": "zrep.cli.bench:bench",
        "sim": "zrep.cli.sim:sim",
        "chaos": "zrep.cli.chaos:chaos",
        "verify": "zrep.cli.verify:verify",
        "keys": "zrep.cli.keys:keys",
        "admin": "zrep.cli.admin:admin",
        "dashboard": "zrep.cli.dashboard:dashboard",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = self.LAZY.get(name)
        if target is None:
            return super().get_command(ctx, name)
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            _quiet_stdout()
            ctx.exit(EXIT_BROKEN_PIPE)
        except ZrepError as e:
            _show_traceback(ctx)
            raise CliError(str(e), _exit_code_of(e)) from None
        except Exception as e:
            _show_traceback(ctx)
            raise CliError(
                f"internal error: {type(e).__name__}: {e}; rerun with --verbose and report it", EXIT_INTERNAL
            ) from None


def _show_traceback(ctx: click.Context) -> None:
    if ctx.find_root().params.get("verbose") or ctx.meta.get(VERBOSE_KEY):
        traceback.print_exc()


def _quiet_stdout() -> None:
    """The reader of stdout is gone (`| head`): send the rest, and Python's final flush, to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# ---------------------------------------------------------------- shared options


def config_option(f: F) -> F:
    return click.option(
        "--config",
        "config_path",
        envvar=CONFIG_ENV,
        default=DEFAULT_CONFIG,
        show_default=True,
        show_envvar=True,
        metavar="PATH",
        help="Cluster file (TOML).",
    )(f)


CONFIG_KEY, TIMEOUT_KEY, VERBOSE_KEY, KEY_KEY = "zrep.config", "zrep.timeout", "zrep.verbose", "zrep.key"
KEY_ENV = "ZREP_KEY"


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and value is not False:
            ctx.meta[key] = value  # ctx.meta is shared by the whole command line
        return value

    return callback


def verbose_option(f: F) -> F:
    return click.option("--verbose", "-v", is_flag=True, expose_value=False, callback=_remember(VERBOSE_KEY),
                        help="On an error, print the traceback too.")(f)


def late_options(f: F) -> F:
    """`--config`, `--timeout` and `-v` once more, after a subcommand's name (git and etcdctl take
    their global flags anywhere): a value given here wins over the group's. The command reads
    them with `option_value(ctx, KEY, default)`."""
    f = click.option("--config", "late_config", default=None, expose_value=False, metavar="PATH",
                     callback=_remember(CONFIG_KEY), help=f"Cluster file (TOML); default ${CONFIG_ENV}, "
                     f"else {DEFAULT_CONFIG}.")(f)
    f = click.option("--timeout", "late_timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                     expose_value=False, metavar="SECONDS", callback=_remember(TIMEOUT_KEY),
                     help=f"Seconds the command may take, retries included; default ${TIMEOUT_ENV}, else 10.")(f)
    f = click.option("--key", "late_key", default=None, expose_value=False, metavar="FILE",
                     callback=_remember(KEY_KEY), help=f"This client's secret key (.key_secret), for a cluster "
                     f"with security.mode = curve; default ${KEY_ENV}.")(f)
    return verbose_option(f)


def option_value(ctx: click.Context, key: str, default: Any) -> Any:
    return ctx.meta.get(key, default)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


# ---------------------------------------------------------------- the root group


@click.group(cls=ZrepGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="On an error, print the traceback too.")
@click.version_option(package_name="zrep", prog_name="zrep")
def main(verbose: bool) -> None:
    """zrep: a replicated, persistent message service."""
