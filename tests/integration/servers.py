"""Real servers a test starts for itself: a Redis Cluster, Redis with TLS and an ACL user,
a TLS front for the embedded broker, certificates. Everything on loopback, in the test's
own directory, stopped by the test."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis


def free_ports(n: int, low: int = 20000, high: int = 30000) -> list[int]:
    """n free loopback ports in [low, high) whose port + 10000 is free too (a Redis
    Cluster node listens for its cluster bus there, and it must stay below 65536)."""
    ports: list[int] = []
    for port in random.sample(range(low, high), high - low):
        if all(_free(p) for p in (port, port + 10000)):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise AssertionError("no free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


# -- certificates ----------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing here: a client trusting only it must refuse


def make_pki(work: Path) -> Pki:
    """A throw-away CA and a server certificate for localhost / 127.0.0.1 (openssl)."""
    d = work / "pki"
    d.mkdir(exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    for name in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=callcharge test {name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "server.crt")  # fmt: skip
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "other-ca.crt")


# -- Redis -----------------------------------------------------------------------------
@dataclass
class RedisProcs:
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: dict[int, tuple[Path, tuple[str, ...]]] = field(default_factory=dict)

    def restart(self, port: int) -> None:
        """Start a killed node again as it was (a Cluster node rejoins from its nodes file)."""
        work, args = self.started[port]
        self.start(port, work, *args)

    def start(self, port: int, work: Path, *args: str) -> None:
        self.started[port] = (work, args)
        d = work / f"redis-{port}"
        d.mkdir(exist_ok=True)
        with open(d / "redis.log", "ab") as log:  # the server keeps its own copy of the fd
            self.procs[port] = subprocess.Popen(
                [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--dir", str(d),
                 "--save", "", "--appendonly", "no", "--protected-mode", "no", *args],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)


@contextlib.contextmanager
def redis_cluster(work: Path, masters: int = 3) -> Iterator[tuple[list[int], RedisProcs]]:
    """`masters` primaries with one replica each, from redis-server on loopback ports:
    yields (ports, processes); ports[:masters] start as the primaries."""
    ports = free_ports(masters * 2)
    procs = RedisProcs()
    try:
        for port in ports:
            procs.start(
                port, work, "--port", str(port), "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "1500",
                # a replica takes over however far behind it is: the test kills a primary
                "--cluster-replica-validity-factor", "0",
            )  # fmt: skip
        for port in ports:
            wait_port(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        client = redis.RedisCluster(host="127.0.0.1", port=ports[0])
        deadline = time.monotonic() + 30
        while client.cluster_info().get("cluster_state") != "ok" or len(client.get_primaries()) != masters:
            assert time.monotonic() < deadline, "cluster did not come up"
            time.sleep(0.2)
            client.nodes_manager.initialize()
        # every replica attached and in sync before the test starts
        deadline = time.monotonic() + 30
        while sum(1 for n in client.get_replicas()) < masters:
            assert time.monotonic() < deadline, "replicas did not attach"
            time.sleep(0.2)
            client.nodes_manager.initialize()
        client.close()
        yield ports, procs
    finally:
        procs.stop()


# -- the embedded broker -------------------------------------------------------------
def start_broker(port: int, work: Path, advertised: str = "") -> subprocess.Popen[bytes]:
    """An embedded broker of the test's own on `port` (in memory), advertising `advertised`
    (default: itself); its log in `work`/broker.log."""
    from pipeline.dev import stack

    with open(work / "broker.log", "wb") as log:
        return subprocess.Popen(
            [stack.broker_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
             "--advertised-listener-url", f"tcp://{advertised or f'127.0.0.1:{port}'}",
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


# -- a TLS front for the embedded broker ------------------------------------------------
class TlsFront:
    """Terminates TLS on `port` and passes the bytes to the embedded broker on `upstream`.

    The embedded broker (Tansu 0.6) cannot serve TLS itself: its CLI puts --cert and --key
    in one exclusive argument group, so it accepts one or the other and never both. The
    Kafka protocol, SASL included, passes through untouched; clients do real TLS with
    certificate and host-name verification against this front."""

    def __init__(self, port: int, upstream: int, pki: Pki):
        self.port, self.upstream = port, upstream
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(pki.cert), str(pki.key))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.handshakes_failed = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    def _error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if isinstance(context.get("exception"), ssl.SSLError):
            self.handshakes_failed += 1

    def __enter__(self) -> TlsFront:
        self.loop.set_exception_handler(self._error)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.ctx), self.loop
        ).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
