"""The supervisor's side of the fork server (``suite/forkserver.py``): start it, ask it for
processes, and hand those back with the part of ``subprocess.Popen`` the suite and its tests use."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import IO, Protocol

SERVER = Path(__file__).with_name("forkserver.py")


class Process(Protocol):
    """A process of the suite: a ``subprocess.Popen`` or a :class:`ForkedProcess`."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class ForkServerError(RuntimeError):
    """The fork server did not start, or refused to fork."""


class ForkedProcess:
    """A process the fork server forked. It is the server's child, not ours: the server tells us
    when it exits and with what status."""

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._server = server
        self._exited = threading.Event()

    def _set_exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def poll(self) -> int | None:
        """The exit status, or None while it runs."""
        if self.returncode is None and self._server.gone and not Path(f"/proc/{self.pid}").exists():
            # The server died first: whoever reaped the process kept its status.
            self._set_exit(-signal.SIGKILL)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait until it exits (``subprocess.TimeoutExpired`` after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            self._exited.wait(0.2 if left is None else min(0.2, left))
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal it, unless it has already exited (its pid may be another process's by now)."""
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """A running fork server: it has preloaded the libraries and forks processes on request."""

    def __init__(self, env: Mapping[str, str], log: Path, timeout_s: float = 120.0) -> None:
        with log.open("ab") as sink:
            self._process = subprocess.Popen(
                [sys.executable, str(SERVER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=sink,
                env=dict(env),
                start_new_session=True,
            )
        self._log = log
        self._lock = threading.Lock()
        self._replies: queue.Queue[ForkedProcess | str] = queue.Queue()
        self._children: dict[int, ForkedProcess] = {}
        self.gone = False
        self._reader = threading.Thread(target=self._read, name="fork-server-reader", daemon=True)
        self._reader.start()
        reply = self._reply(timeout_s)
        if reply != "ready":
            self.close()
            raise ForkServerError(f"the fork server did not start: {reply}\n{self._tail()}")

    @property
    def pid(self) -> int:
        """The fork server's own pid."""
        return self._process.pid

    def _tail(self) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def _read(self) -> None:
        stdout: IO[bytes] | None = self._process.stdout
        assert stdout is not None
        for line in stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not the server's: a library that printed while it was imported
            if not isinstance(message, dict):
                continue
            if "pid" in message:
                child = ForkedProcess(int(message["pid"]), self)
                self._children[child.pid] = child
                self._replies.put(child)
            elif "exited" in message:
                exited = self._children.pop(int(message["exited"]), None)
                if exited is not None:
                    exited._set_exit(int(message["code"]))
            elif "ready" in message:
                self._replies.put("ready")
            else:
                self._replies.put(str(message.get("error", message)))
        self.gone = True
        self._replies.put("the fork server exited")

    def _reply(self, timeout_s: float) -> ForkedProcess | str:
        try:
            return self._replies.get(timeout=timeout_s)
        except queue.Empty:
            return f"no answer after {timeout_s:.0f}s"

    def spawn(self, module: str, env: Mapping[str, str], log: Path, cpus: Collection[int] | None) -> ForkedProcess:
        """Fork a process that runs ``python -m module`` with ``env``, writing to ``log``."""
        request = {
            "module": module,
            "env": dict(env),
            "log": str(log),
            "cpus": sorted(cpus) if cpus is not None else None,
        }
        with self._lock:
            stdin = self._process.stdin
            if self.gone or stdin is None:
                raise ForkServerError(f"the fork server has exited:\n{self._tail()}")
            try:
                stdin.write(json.dumps(request).encode() + b"\n")
                stdin.flush()
            except OSError as exc:
                raise ForkServerError(f"the fork server has exited ({exc}):\n{self._tail()}") from None
            reply = self._reply(30.0)
        if isinstance(reply, str):
            raise ForkServerError(f"{module}: {reply}")
        return reply

    def close(self) -> None:
        """End the server (its children run on; stop them first)."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except OSError:
                pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()
