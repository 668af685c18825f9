"""The suite's fork server: imports the libraries every process needs once, then forks the processes.

Six Python processes that each import grpc, protobuf, SQLAlchemy, FastAPI and the generated stubs
hold six private copies of the same module objects (about 50 MB each). Forked from one process that
imported them, they share those pages copy-on-write, and ``gc.freeze()`` keeps the collector from
writing to them. Each process still imports its own service's code after the fork, so a service's
module-level state (its Prometheus metrics, its tables) is only ever in that service's process.

What is preloaded is read off the services' own sources: every module that ``services/`` and
``edge/`` import, except their own. Nothing here may start a thread or open a gRPC channel before
forking; the server checks that it runs no thread, native ones included, before each fork.

The protocol, one JSON object per line: the supervisor writes
``{"module", "env", "log", "cpus"}`` on stdin and reads ``{"pid": N}`` (or
``{"error": "..."}``) back, then ``{"exited": N, "code": C}`` when process N ends (C as
``Popen.returncode``: negative for a signal). EOF on stdin ends the server; its children run on.

It imports nothing of the project itself, so the supervisor can run it by path for any checkout.
"""

from __future__ import annotations

import ast
import gc
import importlib
import importlib.util
import json
import os
import runpy
import selectors
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

setproctitle: Callable[[str], None] | None
setthreadtitle: Callable[[str], None] | None
try:
    from setproctitle import setproctitle, setthreadtitle
except ImportError:  # an older environment: the processes show the fork server's command line
    setproctitle = setthreadtitle = None

OWN_PACKAGES = ("services", "edge")
"""Whose code each process imports for itself, after the fork."""
EXTRA = ("uvicorn.loops.uvloop", "uvicorn.protocols.http.httptools_impl", "uvicorn.lifespan.on")
"""What uvicorn imports by name at run time (``loop="uvloop"``, ``http="httptools"``)."""


def _sources(package: str) -> Iterator[tuple[str, Path]]:
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        root = Path(location)
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts)), path


def _imported_by(module: str, path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError):
        return
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            yield name
            # ``from grpc_health.v1 import health_pb2`` imports a submodule.
            yield from (f"{name}.{alias.name}" for alias in node.names if alias.name != "*")


def shared_modules() -> list[str]:
    """Every module the suite's own code imports that is not its own: the libraries, the
    generated stubs and ``gateway_common``."""
    wanted: set[str] = set(EXTRA)
    for package in OWN_PACKAGES:
        for module, path in _sources(package):
            wanted.update(name for name in _imported_by(module, path) if name.split(".")[0] not in OWN_PACKAGES)
    wanted.discard("")
    return sorted(wanted)


def preload(modules: list[str]) -> int:
    """Import what can be imported (a name that is an attribute, not a module, fails harmlessly);
    how many modules were imported."""
    before = len(sys.modules)
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # an optional or type-only import: the process imports it itself
            continue
    return len(sys.modules) - before


def _log(message: str, level: str = "INFO") -> None:
    """One line of the suite's JSON log format on stderr (the supervisor's ``forkserver.log``)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
    line = {"time": stamp, "level": level, "logger": "suite.forkserver", "message": message}
    sys.stderr.write(json.dumps({**line, "service": "forkserver", "request_id": ""}) + "\n")
    sys.stderr.flush()


_protocol = 1
"""The descriptor the supervisor reads; ``serve`` moves it off fd 1, so that a library printing
while it is imported writes to the log, not into the protocol."""


def _write(message: dict[str, object]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(_protocol, data) :]


def _child(request: dict[str, object], inherited: tuple[int, ...]) -> None:
    """Become the process ``request`` asks for; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        # What a new interpreter would have: the server ignores Ctrl-C and catches SIGCHLD.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in inherited:  # the server's own: its signal pipe, selector and protocol
            os.close(fd)
        os.setsid()  # as Popen(start_new_session=True): Ctrl-C reaches the supervisor alone
        log = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        cpus = request.get("cpus")
        if isinstance(cpus, list):
            # Before the first thread starts, so that every thread it ever starts inherits it.
            os.sched_setaffinity(0, {int(cpu) for cpu in cpus})
        if setproctitle is not None:
            # What `ps` and `pkill -f services.router` would have seen of a `python -m` start.
            setproctitle(f"{sys.executable} -m {request['module']}")
        if setthreadtitle is not None:
            # setproctitle also renames the thread to the title's first 15 bytes (the venv's path):
            # `top` shows what a `python -m` start showed there.
            setthreadtitle(Path(sys.executable).name)
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        runpy.run_module(str(request["module"]), run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:  # whatever it was, the log says it and the status is 1
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # exiting anyway
                pass
        os._exit(code)


def _threads() -> int:
    """Threads of this process, the native ones too (a library's C threads are invisible to
    ``threading``, and a fork would copy their locks held)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _fork(request: dict[str, object], inherited: tuple[int, ...]) -> None:
    threads = _threads()
    if threads != 1:
        error = f"the fork server runs {threads} threads; forking is unsafe"
        _log(error, "ERROR")
        _write({"error": error})
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(request, inherited)
    _log(f"forked {request.get('module')} as pid {pid}")
    _write({"pid": pid})


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        _log(f"pid {pid} exited with status {code}")
        _write({"exited": pid, "code": code})


def serve() -> None:
    """Preload, say ``ready``, then fork on request until stdin closes."""
    global _protocol
    sys.stdout.flush()
    _protocol = os.dup(1)
    os.dup2(2, 1)
    # As ``python -m`` would: the working directory first, not this file's folder.
    sys.path[0] = os.getcwd()
    started = time.monotonic()
    count = preload(shared_modules())
    _log(f"preloaded {count} modules in {time.monotonic() - started:.1f}s")
    gc.collect()
    gc.freeze()  # the preloaded objects stay out of every collection, so their pages stay shared
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us by closing stdin
    _write({"ready": count})
    stdin = sys.stdin.fileno()
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ)
    selector.register(read, selectors.EVENT_READ)
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd == read:
                try:
                    while os.read(read, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            chunk = os.read(stdin, 65536)
            if not chunk:
                _reap()
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                try:
                    request = json.loads(line)
                except ValueError:
                    _write({"error": f"not a request: {line[:80]!r}"})
                    continue
                _fork(request, (read, write, selector.fileno(), _protocol))
        _reap()


if __name__ == "__main__":
    serve()
