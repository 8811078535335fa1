"""Load and validate a cluster file (`config/*.toml`) into frozen dataclasses.

Job: turn a TOML file (or the same shape as a dict) into a `ClusterConfig`,
or fail with ONE line (`ConfigError`) that names the file, the key, what is
wrong and what to do. Also write such a file back (`write_config`), so tests
and tools can generate clusters on free ports without a TOML library.

Schema (keys not listed are refused, so a typo never passes silently):

    [cluster]
    heartbeat_ms = 50             # required, > 0
    election_timeout_ms = 300     # required, >= 3 * heartbeat_ms
    data_dir = "data"             # required, relative to the file's folder
    tick_ms = 10                  # optional; default gcd(10, heartbeat, timeout);
                                  # must divide both and be <= heartbeat_ms
    max_body_bytes = 1048576      # optional: largest client message body
    max_frame_bytes = 16777216    # optional: largest wire frame body;
                                  # >= max_body_bytes + 64 KiB of headroom
    fsync = true                  # optional; only true is accepted (a write is acked after fsync)
    snapshot_entries = 20000      # optional: a node snapshots its store once it applied this many
                                  # entries (and at least 1/4 as many as it holds messages) since
                                  # the last snapshot, to restart fast, then drops the log up to
                                  # this many entries below it (a follower that far behind gets
                                  # the snapshot shipped); 0: never snapshot, never compact

    [[nodes]]                     # one or more
    id = 1                        # positive int, unique
    rpc = "tcp://127.0.0.1:7101"  # advertised ROUTER address, unique
    pub = "tcp://127.0.0.1:7201"  # advertised PUB address, unique
    bind_rpc = "tcp://*:7101"     # optional, default: rpc
    bind_pub = "tcp://*:7201"     # optional, default: pub
    metrics = "http://127.0.0.1:9101"  # optional: where the node serves /metrics (Prometheus),
                                  # /healthz and /events over HTTP; none: no HTTP server
    bind_metrics = "http://*:9101"     # optional, default: metrics

Invariants of a loaded `ClusterConfig`: every rule above holds; `nodes` is
sorted by id; `data_dir` is absolute. Imports only the standard library and
zrep.errors.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn

from zrep.errors import ConfigError
from zrep.security.settings import SecuritySettings, parse_security

DEFAULT_TICK_MS = 10
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_FRAME_BYTES = 16 << 20
FRAME_HEADROOM_BYTES = 64 << 10  # room for ids, names and msgpack framing around a body
MIN_HEARTBEATS_PER_TIMEOUT = 3
DEFAULT_SNAPSHOT_ENTRIES = 20_000

_TOP_KEYS = ("cluster", "nodes", "security", "principals")
_CLUSTER_KEYS = (
    "heartbeat_ms",
    "election_timeout_ms",
    "data_dir",
    "tick_ms",
    "max_body_bytes",
    "max_frame_bytes",
    "fsync",
    "snapshot_entries",
)
_NODE_KEYS = ("id", "rpc", "pub", "bind_rpc", "bind_pub", "metrics", "bind_metrics", "public_keys")
_WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::"})
_ENDPOINT_RE = re.compile(r"tcp://(\[[^\]]*\]|[^:/\[\]]+):(\d{1,5})")
_HTTP_RE = re.compile(r"http://(\[[^\]]*\]|[^:/\[\]]+):(\d{1,5})/?")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DOTTED_DIGITS_RE = re.compile(r"[0-9.]+")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One node: its id, the addresses others connect to, the addresses it binds."""

    id: int
    rpc: str
    pub: str
    bind_rpc: str
    bind_pub: str
    metrics: str | None = None  # http://HOST:PORT of its metrics server, None: it runs none
    bind_metrics: str | None = None

    @property
    def host(self) -> str:
        """The host (IP or name) of the advertised rpc address, IPv6 without brackets."""
        return parse_endpoint(self.rpc)[0]


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A validated cluster. `path` is the file it came from (None for a dict)."""

    path: Path | None
    heartbeat_ms: int
    election_timeout_ms: int
    tick_ms: int
    data_dir: Path
    max_body_bytes: int
    max_frame_bytes: int
    fsync: bool
    nodes: tuple[NodeConfig, ...]
    snapshot_entries: int = DEFAULT_SNAPSHOT_ENTRIES
    warnings: tuple[str, ...] = ()
    security: SecuritySettings = SecuritySettings()  # [security], [[principals]], nodes' public_keys

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(n.id for n in self.nodes)

    @property
    def heartbeat_ticks(self) -> int:
        return self.heartbeat_ms // self.tick_ms

    @property
    def election_timeout_ticks(self) -> int:
        return self.election_timeout_ms // self.tick_ms

    def node(self, node_id: int) -> NodeConfig:
        for n in self.nodes:
            if n.id == node_id:
                return n
        where = self.path if self.path is not None else "<config>"
        raise ConfigError(
            f"{where}: nodes: no node with id {node_id!r}; "
            f"use one of {', '.join(map(str, self.node_ids))}"
        )

    @property
    def insecure_warning(self) -> str | None:
        """The line a node logs at start when anyone who reaches its ports may use it."""
        if self.security.curve:
            return None
        return ("security.mode is none: anyone who reaches these ports can read, write and pose as a node; "
                'on a shared network set [security] mode = "curve" (see docs/security.md)')

    def peers_of(self, node_id: int) -> tuple[NodeConfig, ...]:
        self.node(node_id)  # an unknown id is a usage error, not an empty peer set
        return tuple(n for n in self.nodes if n.id != node_id)

    def node_data_dir(self, node_id: int) -> Path:
        self.node(node_id)
        return self.data_dir / f"node-{node_id}"


# ---------------------------------------------------------------- endpoints


def source_endpoint(src_host: str, dst_endpoint: str) -> str:
    """`tcp://SRC:0;DST:PORT` when SRC is an IP address, else DST unchanged.

    A host name cannot be a source in ZeroMQ's syntax reliably, and there is
    nothing to gain: per-pair fault injection needs distinct IPs anyway.
    """
    try:
        ip = ipaddress.ip_address(src_host)
    except ValueError:
        return dst_endpoint
    host, port = parse_endpoint(dst_endpoint)
    dst = f"[{host}]" if ":" in host else host
    src = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"tcp://{src}:0;{dst}:{port}"


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Split 'tcp://HOST:PORT' into (host, port); ValueError says what is wrong.

    HOST is an IPv4 address, a bracketed IPv6 address, a DNS name or '*'.
    """
    m = _ENDPOINT_RE.fullmatch(endpoint)
    if m is None:
        raise ValueError(f"{endpoint!r} is not of the form tcp://HOST:PORT")
    host, port = m.group(1), int(m.group(2))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {endpoint!r} is outside 1-65535")
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {endpoint!r} is not an IPv6 address") from None
    elif _DOTTED_DIGITS_RE.fullmatch(host):
        try:  # all digits and dots: must be a real IPv4 address, not a "hostname"
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {endpoint!r} is not an IPv4 address") from None
    elif host != "*" and not (len(host) <= 253 and _HOSTNAME_RE.fullmatch(host)):
        raise ValueError(f"{host!r} in {endpoint!r} is not a host name or IP address")
    return host, port


def parse_http(address: str) -> tuple[str, int]:
    """Split 'http://HOST:PORT' (a metrics address) into (host, port); ValueError says what is wrong."""
    m = _HTTP_RE.fullmatch(address)
    if m is None:
        raise ValueError(f"{address!r} is not of the form http://HOST:PORT")
    return parse_endpoint(f"tcp://{m.group(1)}:{m.group(2)}")


# ---------------------------------------------------------------- reading


class _Source:
    """Names the input in every error and builds the one-line message."""

    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, key: str, problem: str, fix: str) -> NoReturn:
        raise ConfigError(f"{self.label}: {key}: {problem}; {fix}")


def _describe(value: object) -> str:
    kind = {bool: "a boolean", int: "an integer", str: "a string", float: "a float"}
    return f"{value!r} ({kind.get(type(value), type(value).__name__)})"


def _check_keys(src: _Source, table: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            src.fail(
                f"{where}.{key}" if where else key,
                "unknown key",
                f"remove it or use one of: {', '.join(known)}",
            )


def _get_int(src: _Source, table: Mapping[str, Any], key: str, label: str, default: int | None) -> int:
    if key not in table:
        if default is None:
            src.fail(label, "missing", "add it as a whole number")
        return default
    value = table[key]
    if type(value) is not int:  # bool is a subclass of int: refuse it explicitly
        src.fail(label, f"must be an integer, got {_describe(value)}", "write a whole number without quotes")
    return value


def _get_positive(src: _Source, table: Mapping[str, Any], key: str, label: str, default: int | None) -> int:
    value = _get_int(src, table, key, label, default)
    if value <= 0:
        src.fail(label, f"must be > 0, got {value}", "use a positive whole number")
    return value


def _get_str(src: _Source, table: Mapping[str, Any], key: str, label: str, default: str | None) -> str:
    if key not in table:
        if default is None:
            src.fail(label, "missing", "add it as a quoted string")
        return default
    value = table[key]
    if type(value) is not str:
        src.fail(label, f"must be a string, got {_describe(value)}", "put the value in double quotes")
    if not value:
        src.fail(label, "must not be empty", "write a non-empty value")
    return value


def _get_bool(src: _Source, table: Mapping[str, Any], key: str, label: str, default: bool) -> bool:
    value = table.get(key, default)
    if type(value) is not bool:
        src.fail(label, f"must be true or false, got {_describe(value)}", "write true or false without quotes")
    return value


def _get_endpoint(
    src: _Source, table: Mapping[str, Any], key: str, label: str, default: str | None, *, bind: bool
) -> str:
    value = _get_str(src, table, key, label, default)
    try:
        host, _ = parse_endpoint(value)
    except ValueError as e:
        src.fail(label, str(e), 'write it as "tcp://HOST:PORT" with a port in 1-65535')
    if not bind and host in _WILDCARD_HOSTS:
        src.fail(
            label,
            f"{value!r} is a wildcard that peers and clients cannot connect to",
            f"advertise a reachable address here and put the wildcard in bind_{key}",
        )
    return value


def _get_http(src: _Source, table: Mapping[str, Any], key: str, label: str, default: str | None,
              *, bind: bool) -> str | None:
    if key not in table and default is None:
        return None
    value = _get_str(src, table, key, label, default)
    try:
        host, _ = parse_http(value)
    except ValueError as e:
        src.fail(label, str(e), 'write it as "http://HOST:PORT" with a port in 1-65535')
    if not bind and host in _WILDCARD_HOSTS:
        src.fail(label, f"{value!r} is a wildcard that a scraper cannot connect to",
                 "advertise a reachable address here and put the wildcard in bind_metrics")
    return value.rstrip("/")


@dataclass(frozen=True, slots=True)
class _Timing:
    heartbeat_ms: int
    election_timeout_ms: int
    tick_ms: int


def _read_timing(src: _Source, c: Mapping[str, Any]) -> _Timing:
    hb = _get_positive(src, c, "heartbeat_ms", "cluster.heartbeat_ms", None)
    et = _get_positive(src, c, "election_timeout_ms", "cluster.election_timeout_ms", None)
    if et < MIN_HEARTBEATS_PER_TIMEOUT * hb:
        src.fail(
            "cluster.election_timeout_ms",
            f"{et} is below {MIN_HEARTBEATS_PER_TIMEOUT} heartbeats ({MIN_HEARTBEATS_PER_TIMEOUT} x {hb} ms)",
            f"raise it to at least {MIN_HEARTBEATS_PER_TIMEOUT * hb} "
            "so one lost heartbeat does not start an election",
        )
    # Default tick: the largest divisor of both periods up to 10 ms, so both are whole ticks.
    tick = _get_positive(src, c, "tick_ms", "cluster.tick_ms", math.gcd(DEFAULT_TICK_MS, hb, et))
    if tick > hb:
        src.fail(
            "cluster.tick_ms", f"{tick} is larger than heartbeat_ms ({hb})", "use a tick that divides heartbeat_ms"
        )
    if hb % tick or et % tick:
        src.fail(
            "cluster.tick_ms",
            f"{tick} does not divide heartbeat_ms ({hb}) and election_timeout_ms ({et})",
            f"use a divisor of both, for example {math.gcd(hb, et)}",
        )
    return _Timing(hb, et, tick)


def _read_sizes(src: _Source, c: Mapping[str, Any]) -> tuple[int, int]:
    body = _get_positive(src, c, "max_body_bytes", "cluster.max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    default_frame = max(DEFAULT_MAX_FRAME_BYTES, body + FRAME_HEADROOM_BYTES)
    frame = _get_positive(src, c, "max_frame_bytes", "cluster.max_frame_bytes", default_frame)
    if frame < body + FRAME_HEADROOM_BYTES:
        src.fail(
            "cluster.max_frame_bytes",
            f"{frame} leaves no room for a {body}-byte body plus {FRAME_HEADROOM_BYTES} bytes of framing",
            f"raise it to at least {body + FRAME_HEADROOM_BYTES} or lower max_body_bytes",
        )
    return body, frame


def _read_node(src: _Source, raw: object, position: int) -> NodeConfig:
    where = f"nodes[{position}]"
    if not isinstance(raw, Mapping):
        src.fail(where, f"must be a table, got {_describe(raw)}", "write each node as a [[nodes]] table")
    _check_keys(src, raw, _NODE_KEYS, where)
    node_id = _get_int(src, raw, "id", f"{where}.id", None)
    if node_id <= 0:
        src.fail(f"{where}.id", f"must be a positive integer, got {node_id}", "number nodes 1, 2, 3, ...")
    where = f"nodes[{position}] (id {node_id})"
    rpc = _get_endpoint(src, raw, "rpc", f"{where}.rpc", None, bind=False)
    pub = _get_endpoint(src, raw, "pub", f"{where}.pub", None, bind=False)
    bind_rpc = _get_endpoint(src, raw, "bind_rpc", f"{where}.bind_rpc", rpc, bind=True)
    bind_pub = _get_endpoint(src, raw, "bind_pub", f"{where}.bind_pub", pub, bind=True)
    metrics = _get_http(src, raw, "metrics", f"{where}.metrics", None, bind=False)
    if metrics is None and "bind_metrics" in raw:
        src.fail(f"{where}.bind_metrics", "is set without metrics",
                 'add metrics = "http://HOST:PORT" (the address scrapers use) or remove bind_metrics')
    bind_metrics = _get_http(src, raw, "bind_metrics", f"{where}.bind_metrics", metrics, bind=True)
    return NodeConfig(node_id, rpc, pub, bind_rpc, bind_pub, metrics, bind_metrics)


def _endpoints_clash(a: str, b: str) -> bool:
    (ha, pa), (hb, pb) = parse_endpoint(a), parse_endpoint(b)
    return pa == pb and (ha == hb or ha in _WILDCARD_HOSTS or hb in _WILDCARD_HOSTS)


def _read_nodes(src: _Source, raw: object) -> tuple[NodeConfig, ...]:
    if raw is None:
        src.fail("nodes", "missing", "add at least one [[nodes]] table with id, rpc and pub")
    if not isinstance(raw, (list, tuple)):
        src.fail(
            "nodes", f"must be an array of tables, got {_describe(raw)}", "write each node as a [[nodes]] table"
        )
    if not raw:
        src.fail("nodes", "no node is defined", "add at least one [[nodes]] table with id, rpc and pub")
    nodes = [_read_node(src, item, i) for i, item in enumerate(raw, start=1)]
    _check_unique(src, nodes)  # first, so rpc == pub is reported on the keys the user wrote
    for pos, n in enumerate(nodes, start=1):
        if _endpoints_clash(n.bind_rpc, n.bind_pub):
            src.fail(
                f"nodes[{pos}] (id {n.id}).bind_pub",
                f"{n.bind_pub!r} clashes with bind_rpc {n.bind_rpc!r}",
                "give the PUB socket its own port",
            )
        if n.bind_metrics is not None:
            host, port = parse_http(n.bind_metrics)
            for other in (n.bind_rpc, n.bind_pub):
                if _endpoints_clash(f"tcp://{host}:{port}" if ":" not in host else f"tcp://[{host}]:{port}", other):
                    src.fail(f"nodes[{pos}] (id {n.id}).bind_metrics",
                             f"{n.bind_metrics!r} clashes with {other!r}", "give the metrics server its own port")
    return tuple(sorted(nodes, key=lambda n: n.id))


def _check_unique(src: _Source, nodes: list[NodeConfig]) -> None:
    ids: dict[int, int] = {}
    endpoints: dict[tuple[str, int], str] = {}
    for pos, n in enumerate(nodes, start=1):
        if n.id in ids:
            src.fail(
                f"nodes[{pos}].id", f"id {n.id} is already used by nodes[{ids[n.id]}]", "give every node its own id"
            )
        ids[n.id] = pos
        for key in ("rpc", "pub", "metrics"):
            if getattr(n, key) is None:
                continue
            parse = parse_http if key == "metrics" else parse_endpoint
            host, port = parse(getattr(n, key))
            ep = (host.lower(), port)
            label = f"nodes[{pos}] (id {n.id}).{key}"
            if ep in endpoints:
                used = f"{getattr(n, key)!r} is already used by {endpoints[ep]}"
                src.fail(label, used, "give every socket its own port")
            endpoints[ep] = label


def _warnings(nodes: tuple[NodeConfig, ...], fsync: bool) -> tuple[str, ...]:
    out = []
    n = len(nodes)
    if n % 2 == 0:
        tolerated = (n - 1) // 2
        out.append(
            f"{n} voting nodes: a majority is {n // 2 + 1}, so the cluster survives only "
            f"{tolerated} failure{'s' if tolerated != 1 else ''}, no more than {n - 1} nodes would; "
            f"use an odd number of nodes"
        )
    return tuple(out)


def config_from_dict(
    d: Mapping[str, Any], base_dir: str | os.PathLike[str], *, path: str | os.PathLike[str] | None = None
) -> ClusterConfig:
    """Validate a dict shaped like the TOML file; `data_dir` is resolved against base_dir.

    `path` only names the source in errors and in `ClusterConfig.path`.
    """
    src = _Source(str(path) if path is not None else "<config dict>")
    if not isinstance(d, Mapping):
        src.fail("(top level)", f"must be a table, got {_describe(d)}", "pass a dict with [cluster] and [[nodes]]")
    _check_keys(src, d, _TOP_KEYS, "")
    cluster = d.get("cluster")
    if cluster is None:
        src.fail("cluster", "missing", "add a [cluster] table with heartbeat_ms, election_timeout_ms and data_dir")
    if not isinstance(cluster, Mapping):
        src.fail("cluster", f"must be a table, got {_describe(cluster)}", "write it as a [cluster] table")
    _check_keys(src, cluster, _CLUSTER_KEYS, "cluster")
    timing = _read_timing(src, cluster)
    data_dir = _get_str(src, cluster, "data_dir", "cluster.data_dir", None)
    max_body, max_frame = _read_sizes(src, cluster)
    fsync = _get_bool(src, cluster, "fsync", "cluster.fsync", True)
    if not fsync:
        src.fail("cluster.fsync", "false is not supported: zrep acknowledges a write only once a majority "
                 "has fsynced it", "remove the key")
    snapshot_entries = _get_int(src, cluster, "snapshot_entries", "cluster.snapshot_entries",
                                DEFAULT_SNAPSHOT_ENTRIES)
    if snapshot_entries < 0:
        src.fail("cluster.snapshot_entries", f"must be >= 0, got {snapshot_entries}",
                 "write a number of entries, or 0 to take no snapshots")
    nodes = _read_nodes(src, d.get("nodes"))
    security = parse_security(d.get("security"), d.get("principals"), d.get("nodes") or [], Path(base_dir),
                              src.label)
    warnings = _warnings(nodes, fsync)
    return ClusterConfig(
        path=Path(path).resolve() if path is not None else None,
        heartbeat_ms=timing.heartbeat_ms,
        election_timeout_ms=timing.election_timeout_ms,
        tick_ms=timing.tick_ms,
        data_dir=(Path(base_dir) / data_dir).resolve(),
        max_body_bytes=max_body,
        max_frame_bytes=max_frame,
        fsync=fsync,
        nodes=nodes,
        snapshot_entries=snapshot_entries,
        warnings=warnings,
        security=security,
    )


def load_config(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and validate a cluster file; raises ConfigError with one line on any problem."""
    p = Path(path)
    src = _Source(str(p))
    try:
        with p.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        src.fail("(file)", "not found", "check the path, or copy config/cluster.toml and edit it")
    except IsADirectoryError:
        src.fail("(file)", "is a directory", "pass the path of a .toml file")
    except OSError as e:
        src.fail("(file)", f"cannot be read ({e.strerror})", "check its permissions")
    except UnicodeDecodeError as e:
        src.fail("(file)", f"is not UTF-8 text ({e.reason})", "save it as UTF-8")
    except tomllib.TOMLDecodeError as e:
        # tomllib's message carries "(at line L, column C)".
        src.fail("(syntax)", f"TOML syntax error: {e}", "fix the TOML at that line")
    return config_from_dict(raw, p.resolve().parent, path=p)


# ---------------------------------------------------------------- writing


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")  # TOML basic strings forbid raw control characters
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_TOML_VALUE: dict[type, Callable[[Any], str]] = {
    bool: lambda v: "true" if v else "false",
    int: str,
    str: _toml_string,
    list: lambda v: "[" + ", ".join(_toml_string(s) for s in v) + "]",
}


def _toml_table(header: str, items: list[tuple[str, Any]]) -> str:
    lines = [header] + [f"{k} = {_TOML_VALUE[type(v)](v)}" for k, v in items]
    return "\n".join(lines) + "\n"


def _data_dir_text(data_dir: Path, folder: Path) -> str:
    try:  # keep the file relocatable when the data lives under its folder
        return data_dir.relative_to(folder).as_posix() or "."
    except ValueError:
        return str(data_dir)


def config_to_toml(cfg: ClusterConfig, folder: str | os.PathLike[str]) -> str:
    """The TOML text of `cfg` as a file in `folder` (data_dir relative to it when inside)."""
    cluster = [
        ("heartbeat_ms", cfg.heartbeat_ms),
        ("election_timeout_ms", cfg.election_timeout_ms),
        ("tick_ms", cfg.tick_ms),
        ("data_dir", _data_dir_text(cfg.data_dir, Path(folder).resolve())),
        ("max_body_bytes", cfg.max_body_bytes),
        ("max_frame_bytes", cfg.max_frame_bytes),
        ("fsync", cfg.fsync),
        ("snapshot_entries", cfg.snapshot_entries),
    ]
    parts = ["# zrep cluster file (generated)\n", _toml_table("[cluster]", cluster)]
    for n in cfg.nodes:
        items = [("id", n.id), ("rpc", n.rpc), ("pub", n.pub)]
        items += [(k, getattr(n, k)) for k in ("bind_rpc", "bind_pub") if getattr(n, k) != getattr(n, k[5:])]
        if n.metrics is not None:
            items.append(("metrics", n.metrics))
            if n.bind_metrics != n.metrics:
                items.append(("bind_metrics", n.bind_metrics))
        if cfg.security.node_keys.get(n.id):
            items.append(("public_keys", [k.decode() for k in cfg.security.node_keys[n.id]]))
        parts.append(_toml_table("[[nodes]]", items))
    sec = cfg.security
    if sec.curve:
        keys_dir = _data_dir_text(sec.keys_dir, Path(folder).resolve()) if sec.keys_dir else "keys"
        parts.insert(2, _toml_table("[security]", [("mode", sec.mode), ("keys_dir", keys_dir),
                                                   ("handshake_timeout_ms", sec.handshake_ms)]))
        for pr in sec.principals:
            parts.append(_toml_table("[[principals]]", [
                ("name", pr.name), ("public_keys", [k.decode() for k in pr.keys]), ("send", list(pr.send)),
                ("read", list(pr.read)), ("delete", list(pr.delete)), ("admin", pr.admin)]))
    return "\n".join(parts)


def write_config(cfg_or_dict: ClusterConfig | Mapping[str, Any], path: str | os.PathLike[str]) -> ClusterConfig:
    """Validate, write atomically (temp file + rename) and return the config as loaded back.

    A dict's data_dir is taken relative to the new file's folder, as in a file.
    Loading the written file back proves the emitter and the reader agree.
    """
    p = Path(path)
    folder = p.resolve().parent
    cfg = cfg_or_dict if isinstance(cfg_or_dict, ClusterConfig) else config_from_dict(cfg_or_dict, folder, path=p)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(config_to_toml(cfg, folder), encoding="utf-8")
    os.replace(tmp, p)
    return load_config(p)
