"""The control plane's hook socket: pushes decided without starting the platform again.

`HOME/hook.sock` (0600, in the 0700 home; only the home's own user may connect; for a
home too deep for a socket address, a link to a stand-in, `unix_sockets.socket_path`) takes
one push per connection from the pre-receive hook's client (`edges/hook_client.py`):
a JSON line with the project, the ref updates and the hook's `GIT_*` variables. The
push runs as the in-process hook would (`DeployService.pre_receive`: a deployment
per branch, built from git's quarantine, its log followed), each output line sent
back as `{"out": LINE}`, then `{"exit": CODE}`. When the client goes away before
that (the pusher's Ctrl-C, a dropped connection), following stops and the
deployments the push started are canceled: git refuses a push whose hook did not
finish, so none of them may go live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..edges.hook_client import GIT_KEYS, SOCKET_NAME, VERSION, socket_address
from ..errors import TristageError

if TYPE_CHECKING:
    from ..api import Tristage

MAX_REQUEST = 4 * 1024 * 1024
REQUEST_TIMEOUT = 30.0  # a client that connects and sends nothing is let go
INTERVAL = 0.02  # how often a push's log and status are looked at
CANCELED = "canceled: the push was interrupted (the pusher disconnected)"

Cancel = Callable[[str, str], Awaitable[bool]]


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", creds)[1])


def parse_request(raw: bytes) -> tuple[str, list[str], dict[str, str]]:
    """(project, ref update lines, GIT_* variables) of a client's request; ValueError
    naming what is wrong."""
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise ValueError(f"a request of protocol version {VERSION} is expected")
    project, lines, git_env = data.get("project"), data.get("lines"), data.get("git", {})
    if not isinstance(project, str) or not project:
        raise ValueError("the request names no project")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise ValueError("the ref updates must be a list of lines")
    if not isinstance(git_env, dict):
        raise ValueError("the git variables must be an object")
    env = {k: v for k, v in git_env.items() if k in GIT_KEYS and isinstance(v, str)}
    cwd = data.get("cwd")
    if isinstance(cwd, str) and os.path.isabs(cwd):  # relative git paths: the hook's cwd
        env = {k: os.path.join(cwd, v) for k, v in env.items()}
    return project, lines, env


def _settle(job: asyncio.Future[int], code: int | None, exc: BaseException | None) -> None:
    if job.done():
        return
    if exc is not None:
        job.set_exception(exc)
    else:
        assert code is not None
        job.set_result(code)


class HookServer:
    """Serves the hook socket inside the control plane's loop."""

    def __init__(self, api: Tristage, cancel: Cancel, log: Callable[[str], None]) -> None:
        self.api = api
        self.cancel = cancel
        self.log = log
        self.path = api.home / SOCKET_NAME
        self.address = str(self.path)  # where it is bound (a stand-in for a deep home)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.address = socket_address(str(self.api.home))
        self._unlink()  # one left by a control plane killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)
            try:
                sock.bind(self.address)
            finally:
                os.umask(old)
            os.chmod(self.address, 0o600)
            if self.address != str(self.path):  # a stand-in: the hook looks for HOME/hook.sock
                os.symlink(self.address, self.path)
            sock.listen(16)
        except BaseException:
            sock.close()
            self._unlink()
            raise
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._unlink()
            self._server = None

    def _unlink(self) -> None:
        """Remove `HOME/hook.sock`, and the stand-in it links to for a deep home."""
        for path in {str(self.path), self.address}:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            if sock is None or _peer_uid(sock) != os.getuid():
                return
            try:
                raw = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                project, lines, git_env = parse_request(raw)
            except TimeoutError:
                return
            except (ValueError, asyncio.LimitOverrunError) as exc:
                await self._send(writer, {"out": f"tristage: error: bad hook request: {exc}"})
                await self._send(writer, {"exit": 2})
                return
            await self._push(reader, writer, project, lines, git_env)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()

    async def _push(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        project: str,
        lines: list[str],
        git_env: dict[str, str],
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        gone = threading.Event()
        started: list[str] = []

        def say(line: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, {"out": line})

        def work() -> int:
            try:
                return self.api.deploys.pre_receive(
                    project, lines, say, git_env=git_env, interval=INTERVAL,
                    stop=gone.is_set, started=started,
                )  # fmt: skip
            except TristageError as exc:
                say(f"tristage: error: {exc}")
                return exc.exit_code

        # a thread of its own, not the loop's executor: a push follows its deployment
        # for as long as it builds, and the builds need that executor's threads
        job: asyncio.Future[int] = loop.create_future()

        def run() -> None:
            try:
                code = work()
            except BaseException as exc:  # handed to the loop
                loop.call_soon_threadsafe(_settle, job, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, job, code, None)

        threading.Thread(target=run, name=f"push-{project}", daemon=True).start()
        eof = asyncio.ensure_future(reader.read(1))  # the client sends nothing more
        next_out = asyncio.ensure_future(queue.get())
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {job, eof, next_out}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if next_out in done:
                    await self._send(writer, next_out.result())
                    next_out = asyncio.ensure_future(queue.get())
                    continue
                if eof in done:
                    gone.set()
                    with contextlib.suppress(Exception):
                        await asyncio.shield(job)
                    for dep_id in started:
                        if await self.cancel(dep_id, CANCELED):
                            self.log(f"{dep_id} {CANCELED}")
                    return
                # the push is decided: what is still queued, then the verdict
                while not queue.empty():
                    await self._send(writer, queue.get_nowait())
                try:
                    code = job.result()
                except Exception as exc:  # the push is refused, never left hanging
                    await self._send(writer, {"out": f"tristage: internal error: {exc}"})
                    code = 1
                await self._send(writer, {"exit": code})
                return
        finally:
            next_out.cancel()
            eof.cancel()
