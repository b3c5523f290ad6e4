"""The HTTP server: a threaded `http.server` with keep-alive and a graceful stop.

On SIGTERM (or SIGINT) it stops accepting connections, closes idle keep-alive
connections, lets every request in flight finish, then exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .database import DatabaseUnavailable
from .settings import Settings, SettingsError
from .web import MAX_BODY, SECURITY_HEADERS, App, Request, Response, json_response

log = logging.getLogger("saasapp")


class AppServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for request threads
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        super().__init__(address, Handler)
        self.app = app
        self.draining = False
        self._lock = threading.Lock()
        self._idle: set[socket.socket] = set()

    def set_idle(self, sock: socket.socket, idle: bool) -> None:
        with self._lock:
            if idle:
                if self.draining:
                    raise ConnectionAbortedError
                self._idle.add(sock)
            else:
                self._idle.discard(sock)

    def drain(self) -> None:
        """Wake idle keep-alive connections so that their threads end."""
        with self._lock:
            self.draining = True
            for sock in self._idle:
                try:
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
            self._idle.clear()


class Handler(BaseHTTPRequestHandler):
    server: AppServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a connection may stay silent
    disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK stall

    def handle(self) -> None:
        self.close_connection = True
        try:
            while True:
                self.server.set_idle(self.connection, True)
                self.handle_one_request()
                self.server.set_idle(self.connection, False)
                if self.close_connection:
                    break
        except ConnectionAbortedError:
            pass
        finally:
            self.server.set_idle(self.connection, False)

    def parse_request(self) -> bool:
        self.server.set_idle(self.connection, False)
        return super().parse_request()

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_POST(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = b""
        response: Response
        if self.command == "POST":
            if "chunked" in headers.get("transfer-encoding", "").lower():
                response = json_response(411, {"error": "send a Content-Length"})
                self.close_connection = True
                return self._send(response, head, started, url.path)
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                response = json_response(413, {"error": f"body must be 0..{MAX_BODY} bytes"})
                return self._send(response, head, started, url.path)
            body = self.rfile.read(length)
            if len(body) != length:
                self.close_connection = True
                return
        request = Request(
            method="GET" if head else self.command,
            path=url.path,
            query=parse_qs(url.query, max_num_fields=50),
            headers=headers,
            body=body,
        )
        try:
            response = self.server.app.handle(request)
        except DatabaseUnavailable as exc:
            log.error("database unavailable: %s", exc)
            response = json_response(503, {"error": "database unavailable"})
        except Exception:
            log.exception("unhandled error on %s %s", self.command, url.path)
            response = json_response(500, {"error": "internal error"})
        self._send(response, head, started, url.path)

    def _send(self, response: Response, head: bool, started: float, path: str) -> None:
        if self.server.draining:
            self.close_connection = True
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in {**SECURITY_HEADERS, **response.headers}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(response.body)
        elapsed = (time.monotonic() - started) * 1000
        log.info("%s %s %d %.1fms", self.command, path, response.status, elapsed)

    def version_string(self) -> str:
        return "saas-app"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _send logs one line per request, without the query string

    def log_message(self, format: str, *args: Any) -> None:
        log.warning("http: " + format, *args)


def configure_logging() -> None:
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        force=True,
    )


def serve(settings: Settings) -> int:
    app = App(settings)
    server = AppServer((settings.host, settings.port), app)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing requests in flight", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = threading.Thread(target=server.serve_forever, name="accept", daemon=True)
    worker.start()
    host, port = server.server_address[:2]
    log.info(
        "saas-app listening on http://%s:%s environment=%s tier=%s deployment=%s commit=%s "
        "database=%s webhooks=%s",
        host,
        port,
        settings.environment,
        settings.tier,
        settings.deployment,
        settings.commit[:12],
        settings.database.describe(),
        "on" if settings.webhook_key else "off (CLERK_WEBHOOK_SECRET not set)",
    )
    stop.wait()  # a signal interrupts the wait and runs on_signal
    server.shutdown()  # no new connections
    server.drain()  # idle keep-alive connections end now
    server.server_close()  # waits for requests in flight
    log.info("stopped")
    return 0


def main() -> int:
    configure_logging()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        return serve(settings)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
