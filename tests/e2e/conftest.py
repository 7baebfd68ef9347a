"""End-to-end fixtures: a real redis-server (the reference) and the server under
test, both started on free loopback ports for the whole session.

Environment:
  BITMAPIST_SERVER_BIN  path of the server under test (default:
                        target/release/bitmapist-server in the repository).
  REDIS_SERVER_BIN      redis-server to use as the reference (default: PATH).
  E2E_COMMAND_LOG       if set, a MONITOR connection to the reference redis
                        records every command the tests send, and a summary
                        (command name -> count) is written to this file.

The tests never rely on FLUSHALL/FLUSHDB: between scenarios the keyspace is
emptied with KEYS * + DEL, which bitmapist itself uses.
"""

from __future__ import annotations

import atexit
import collections
import difflib
import os
import pprint
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import bitmapist
import pytest
import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT_S = 15.0
CLIENT_TIMEOUT_S = 60.0
BACKEND_NAMES = ("redis", "server")


# --------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raw_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """PING without redis-py, so readiness does not depend on the client's
    connection handshake (redis-py 5 sends CLIENT SETINFO first)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    return False
                buf += chunk
            return buf == b"+PONG\r\n"
    except OSError:
        return False


_STARTED: list["ServerProcess"] = []


def _kill_leftovers() -> None:
    for p in _STARTED:
        if p.proc is not None and p.proc.poll() is None:
            p.proc.kill()


atexit.register(_kill_leftovers)


def _sigterm_to_interrupt(signum, frame):
    # `timeout` (tests/run_all.sh) sends SIGTERM: turn it into the interrupt
    # pytest handles, so fixture teardown stops the servers.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


class ServerProcess:
    """A server started with `argv`, listening on HOST:port, its output in log."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path):
        self.name = name
        self.argv = argv
        self.host = HOST
        self.port = port
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = START_TIMEOUT_S) -> "ServerProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        finally:
            log.close()
        _STARTED.append(self)
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {rc} before answering PING\n"
                    f"command: {self.argv}\n{self.log_tail()}"
                )
            if raw_ping(self.host, self.port):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not answer PING on {self.host}:{self.port} "
                    f"within {timeout}s\ncommand: {self.argv}\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the server, wait for it, SIGKILL it if it does not exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- last {n} lines of {self.log_path} ---\n" + "\n".join(lines[-n:])

    def client(self, **kw: Any) -> redis.Redis:
        kw.setdefault("socket_timeout", CLIENT_TIMEOUT_S)
        return redis.Redis(host=self.host, port=self.port, **kw)


def server_bin() -> Path:
    raw = os.environ.get("BITMAPIST_SERVER_BIN")
    path = Path(raw) if raw else REPO_ROOT / "target" / "release" / "bitmapist-server"
    if not path.is_absolute():
        path = (REPO_ROOT / path) if not path.exists() else path.resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"server under test not found or not executable: {path} "
            "(build it with `cargo build --release` or set BITMAPIST_SERVER_BIN)",
            pytrace=False,
        )
    return path


def redis_server_bin() -> str:
    path = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not path:
        pytest.fail("redis-server not found (tests/run_all.sh installs it)", pytrace=False)
    return path


def start_reference_redis(workdir: Path, name: str = "redis") -> ServerProcess:
    port = free_port()
    argv = [
        redis_server_bin(),
        "--bind", HOST,
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
        "--protected-mode", "no",
    ]
    return ServerProcess(name, argv, port, workdir).start()


def start_server_under_test(workdir: Path, go_style: bool = False,
                            db_path: Path | None = None, name: str = "server") -> ServerProcess:
    port = free_port()
    db = db_path or workdir / "bitmapist.db"
    dash = "-" if go_style else "--"
    argv = [str(server_bin()), f"{dash}addr", f"{HOST}:{port}", f"{dash}db", str(db)]
    return ServerProcess(name, argv, port, workdir).start()


# --------------------------------------------------------------------------
# backends


class Backend:
    """One running server plus the bitmapist wiring to point at it."""

    def __init__(self, name: str, make_process: Callable[[], ServerProcess]):
        self.name = name
        self._make_process = make_process
        self.process = make_process()
        self.crashes: list[str] = []

    @property
    def host(self) -> str:
        return self.process.host

    @property
    def port(self) -> int:
        return self.process.port

    def client(self, **kw: Any) -> redis.Redis:
        return self.process.client(**kw)

    def ensure_alive(self) -> None:
        """Restart a server that died in an earlier test, so one crash does not
        fail every later test (the test that crashed it fails in teardown)."""
        if not self.process.alive():
            self.crashes.append(self.process.log_tail())
            self.process = self._make_process()

    def flush(self) -> None:
        cli = self.client()
        keys = cli.keys("*")
        for i in range(0, len(keys), 500):
            cli.delete(*keys[i : i + 500])
        assert cli.keys("*") == [], f"{self.name}: keyspace not empty after DEL"
        cli.close()

    def setup_system(self, name: str = "default", **kw: Any) -> None:
        kw.setdefault("socket_timeout", CLIENT_TIMEOUT_S)
        bitmapist.setup_redis(name, self.host, self.port, **kw)

    def activate(self) -> None:
        """Fresh keyspace, bitmapist's 'default' system pointing here, library
        globals back to their defaults."""
        self.ensure_alive()
        self.flush()
        reset_bitmapist()
        self.setup_system("default")

    def __repr__(self) -> str:
        return f"<Backend {self.name} {self.host}:{self.port}>"


_ORIGINAL_SYSTEMS = dict(bitmapist.SYSTEMS)


def reset_bitmapist() -> None:
    bitmapist.TRACK_HOURLY = False
    bitmapist.TRACK_UNIQUE = False
    for sys_name in list(bitmapist.SYSTEMS):
        if sys_name not in _ORIGINAL_SYSTEMS:
            del bitmapist.SYSTEMS[sys_name]
    bitmapist._bitop_keys().clear()
    try:
        import bitmapist.cohort as cohort

        cohort.CUSTOM_HANDLERS.clear()
    except ImportError:  # pragma: no cover - cohort ships with bitmapist
        pass


class CommandRecorder:
    """MONITOR on the reference redis; counts command names (CLIENT, CONFIG,
    ... with their subcommand)."""

    def __init__(self, backend: Backend, out: Path):
        self.out = out
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}
        self._conn = backend.client(socket_timeout=None)
        self._mon = self._conn.monitor()
        self._mon.__enter__()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._mon.listen():
                cmd = item.get("command", "")
                parts = cmd.split(" ")
                name = parts[0].upper()
                if name in {"CLIENT", "CONFIG", "OBJECT", "COMMAND", "MEMORY", "SCRIPT"} and len(parts) > 1:
                    name += " " + parts[1].upper()
                self.counts[name] += 1
                self.examples.setdefault(name, cmd[:200])
        except Exception:
            pass

    def close(self) -> None:
        try:
            self._conn.connection_pool.disconnect()
        except Exception:
            pass
        lines = [f"{n:8d}  {name:24s} e.g. {self.examples[name]}"
                 for name, n in sorted(self.counts.items(), key=lambda kv: -kv[1])]
        self.out.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def e2e_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def backends(e2e_workdir):
    """Both backends, started once per session: {'redis': Backend, 'server': Backend}."""
    started: dict[str, Backend] = {}
    recorder = None
    try:
        started["redis"] = Backend("redis", lambda: start_reference_redis(e2e_workdir / "redis"))
        generation = iter(range(1, 1000))
        started["server"] = Backend(
            "server",
            lambda: start_server_under_test(e2e_workdir / f"server-{next(generation)}"),
        )
        if os.environ.get("E2E_COMMAND_LOG"):
            recorder = CommandRecorder(started["redis"], Path(os.environ["E2E_COMMAND_LOG"]))
        yield started
    finally:
        if recorder is not None:
            recorder.close()
        for b in started.values():
            b.process.stop()
        reset_bitmapist()


@pytest.fixture(params=BACKEND_NAMES)
def backend(request, backends) -> Backend:
    """Parametrized over both servers; the backend is active (empty keyspace,
    bitmapist's default system pointing at it)."""
    b: Backend = backends[request.param]
    b.activate()
    yield b
    reset_bitmapist()
    if not b.process.alive():
        pytest.fail(f"{b.name} died during the test\n{b.process.log_tail()}", pytrace=False)


class Compare:
    """Runs a scenario on the reference redis and on the server under test and
    asserts both return the same value."""

    def __init__(self, backends: dict[str, Backend]):
        self.backends = backends

    def run(self, scenario: Callable[[Backend], Any]) -> Any:
        results: dict[str, Any] = {}
        for name in BACKEND_NAMES:
            b = self.backends[name]
            b.activate()
            try:
                results[name] = scenario(b)
            except Exception as exc:  # name the backend in the failure
                if not b.process.alive():
                    raise AssertionError(
                        f"scenario crashed {name}: {exc!r}\n{b.process.log_tail()}"
                    ) from exc
                raise AssertionError(f"scenario failed on {name}: {exc!r}") from exc
            finally:
                reset_bitmapist()
        expected, got = results["redis"], results["server"]
        if expected != got:
            diff = "\n".join(
                difflib.unified_diff(
                    pprint.pformat(expected, width=100).splitlines(),
                    pprint.pformat(got, width=100).splitlines(),
                    "redis-server", "bitmapist-server", lineterm="",
                )
            )
            raise AssertionError(f"results differ between redis-server and the server under test:\n{diff}")
        return expected


@pytest.fixture
def compare(backends) -> Compare:
    c = Compare(backends)
    yield c
    for b in backends.values():
        if not b.process.alive():
            pytest.fail(f"{b.name} died during the test\n{b.process.log_tail()}", pytrace=False)
