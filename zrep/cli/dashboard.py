"""`zrep dashboard`: a live, read-only web page of the cluster (zrep.dashboard)."""

from __future__ import annotations

import click

from zrep.cli import EXIT_USAGE, CliError, config_option
from zrep.config import load_config, parse_http


@click.command()
@config_option
@click.option("--listen", default="http://127.0.0.1:8080", show_default=True, metavar="http://HOST:PORT",
              help="Where to serve the page; only this machine can open it unless you name another address.")
def dashboard(config_path: str, listen: str) -> None:
    """Serve a web page that shows the cluster live: one card per node, acknowledged
    writes/s and p99 latency, the merged event timeline, the mailboxes. It reads the
    nodes over the network (status, and each node's metrics address); Ctrl-C stops it."""
    from zrep.dashboard.server import DashboardServer
    from zrep.dashboard.watch import ClusterWatch

    cfg = load_config(config_path)
    try:
        host, port = parse_http(listen)
    except ValueError as e:
        raise CliError(f"--listen: {e}; write it as http://HOST:PORT", EXIT_USAGE) from None
    if not any(n.metrics for n in cfg.nodes):
        click.echo("warning: no node has a metrics address in the cluster file: the page shows status only "
                   "(add metrics = \"http://HOST:PORT\" to each [[nodes]] for charts and the timeline)", err=True)
    watch = ClusterWatch(cfg).start()
    try:
        server = DashboardServer((host, port), watch)
    except OSError as e:
        watch.close()
        raise CliError(f"cannot listen on {listen}: {e}; pick another port with --listen", EXIT_USAGE) from None
    click.echo(f"zrep dashboard on {listen}/ (Ctrl-C stops it)", err=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        watch.close()
