"""A tiny stdlib-only web app for deploy tests.

GET /        -> JSON naming the deployment, environment, branch and commit
GET /health  -> 200, or 500 when the file MODE says "unhealthy"
MODE "crash" -> answers its health check, then exits shortly after (a crash loop)
GET /slow?ms=N -> answers after N milliseconds (drain tests)
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODE = Path("MODE").read_text().strip() if Path("MODE").exists() else "ok"
STARTED = time.time()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffered: the head and the body leave in one write when the request is done. Written
    # apart, a reused keep-alive connection waits on the client's delayed ACK (~40 ms).
    wbufsize = 64 * 1024

    def do_GET(self) -> None:
        if self.path.startswith("/health"):
            code = 500 if MODE == "unhealthy" else 200
            self._send(code, {"ok": code == 200})
            return
        if self.path.startswith("/slow"):
            ms = int(self.path.partition("ms=")[2] or "100")
            time.sleep(ms / 1000)
        self._send(
            200,
            {
                "deployment": os.environ.get("TRISTAGE_DEPLOYMENT"),
                "environment": os.environ.get("TRISTAGE_ENV"),
                "branch": os.environ.get("TRISTAGE_GIT_BRANCH"),
                "commit": os.environ.get("TRISTAGE_GIT_COMMIT"),
                "database": bool(os.environ.get("DATABASE_URL")),
                "greeting": os.environ.get("GREETING", "hello"),
                "url": os.environ.get("TRISTAGE_URL"),
                "hosts": os.environ.get("TRISTAGE_HOSTS", "").split(","),
                "proto": self.headers.get("X-Forwarded-Proto"),
            },
        )

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {fmt % args}\n")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]} mode={MODE}", flush=True)
    if MODE == "crash":
        threading.Timer(0.3, lambda: os._exit(3)).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
