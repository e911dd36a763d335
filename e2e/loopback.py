"""A threaded HTTP server on 127.0.0.1 that really stops: its keep-alive connections close too.

``ThreadingHTTPServer.shutdown()`` only stops accepting: a client holding a keep-alive connection
(the proxy's pool, the openai client's pool) would go on being served, and ``server_close()``
would wait for those connections. Stopping this one drops them, as a killed server would.

Given an ``ssl.SSLContext`` it serves https: each accepted connection does its TLS handshake in
its own thread, and a handshake the client abandons (say, because it does not trust the
certificate) is counted in ``tls_failures`` and never reaches the request handler.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    HANDSHAKE_TIMEOUT_S = 5.0

    def __init__(
        self, port: int, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._tls = tls
        self.tls_handshakes = 0  # completed
        self.tls_failures: list[str] = []  # why each failed handshake failed

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        if self._tls is not None:
            # The handshake happens in the connection's own thread (finish_request), never here.
            connection = self._tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(self.HANDSHAKE_TIMEOUT_S)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as error:
                with self._lock:
                    self.tls_failures.append(repr(error))
                return
            request.settimeout(None)
            with self._lock:
                self.tls_handshakes += 1
        super().finish_request(request, client_address)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def start(self) -> None:
        """Serves in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name=f"loopback-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting, closes the listening socket and every open connection."""
        self.shutdown()
        self.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet request handler that answers JSON."""

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass
