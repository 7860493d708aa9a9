"""A stdlib HTTP endpoint on 127.0.0.1 for tests that stand in for a remote provider's HTTP API."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["JsonHandler", "LocalEndpoint"]


class JsonHandler(BaseHTTPRequestHandler):
    """Answers JSON and OpenAI-style error bodies; `endpoint` is the LocalEndpoint serving it."""

    endpoint: Any
    protocol_version = "HTTP/1.1"
    error_code_is_type = True  # the chat API repeats the error type as its code; the Images API sends null

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_json(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        code = kind if self.error_code_is_type else None
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, headers)


class LocalEndpoint:
    """Serves `handler` on 127.0.0.1:<free port> in a daemon thread while used as a context manager."""

    handler: type[JsonHandler]

    def __init__(self) -> None:
        handler = type("Handler", (self.handler,), {"endpoint": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
