"""Stand-ins for memU's cloud API, generations v3 and v4 (memu-api-next.md §3, §4), over https.

The real cloud is never contacted, so the real clients (memu-cli 0.10.0's ``CloudMemoryClient``,
memu-sdk 1.0's requests replayed byte for byte) are exercised against these: the routes and the
exact JSON shapes of memu-api-next.md, state-backed so a write is visible to the next read.

* :class:`V4StandIn`: ``GET /api/v4/memory`` lists the recall files of ``(key, user_id,
  agent_id)`` ordered by ``(track, name, id)`` with ``next_cursor`` null; ``POST
  /api/v4/memory/search`` returns the files sharing a word with the query, each with a ``score``,
  best first, and ``segments: []``, ``resources: []``; ``POST /api/v4/memory`` (commit) upserts by
  ``(track, name)`` and answers the committed rows. The slashed ``/api/v4/memory/`` is 404, as
  upstream.
* :class:`V3StandIn`: ``retrieve`` (``query`` a string or a list of messages), ``categories``
  (``agent_id`` optional: absent means every agent of the user), ``memorize`` (asynchronous: a
  27-character task id, ``PENDING`` until the test calls :meth:`V3StandIn.complete`, then the
  memories are visible and ``status/{id}`` says ``SUCCESS``).

The tenant is the ``Authorization`` value, as in the cloud: two keys never see each other's data.
Every request that reaches a route handler is counted per route (``count("search")``) and kept
(``seen``); a TLS handshake that fails never reaches a handler and is counted in ``tls_failures``.
Each stand-in serves on 127.0.0.1 in a background thread and restarts on the same port.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from loopback import JsonHandler, LoopbackHTTPServer
from tls import ServerCert

Json = dict[str, Any]
# (method, path) -> (route name, handler(key, query params, body) -> (status, answer))
Routes = dict[tuple[str, str], tuple[str, Callable[[str, dict[str, str], Any], tuple[int, Json]]]]


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def score(query: str, text: str) -> float:
    """The share of the query's words found in ``text`` (0 when none)."""
    wanted = words(query)
    return len(wanted & words(text)) / len(wanted) if wanted else 0.0


def find_route(routes: Routes, method: str, path: str) -> Any:
    """The route for ``method path``: an exact path, or a path ending in ``/`` as a prefix."""
    exact = routes.get((method, path))
    if exact is not None:
        return exact
    prefixed = (r for (m, p), r in routes.items() if m == method and p.endswith("/") and path.startswith(p))
    return next(prefixed, None)


@dataclass(frozen=True)
class Seen:
    """One request a route handler saw."""

    route: str
    method: str
    target: str  # path and query string as received
    headers: dict[str, str]  # lower-cased names
    body: bytes


class StandIn:
    """What both generations share: the server, restarts, the tenant, counters, the request log."""

    def __init__(self, tls: ServerCert | None) -> None:
        self.tls = tls
        self.port = 0
        self.requests: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server: LoopbackHTTPServer | None = None
        self._past_tls_failures: list[str] = []
        self._past_tls_handshakes = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> "StandIn":
        """Serves on the previous port after a stop, else on a free one."""
        context = self.tls.server_context() if self.tls else None
        self._server = LoopbackHTTPServer(self.port, self._handler_class(), tls=context)
        self.port = self._server.port
        self._server.start()
        return self

    def stop(self) -> None:
        """Stops like a killed server: the port refuses, open connections are dropped."""
        if self._server is not None:
            self._server.stop()
            self._past_tls_failures += self._server.tls_failures
            self._past_tls_handshakes += self._server.tls_handshakes
            self._server = None

    def count(self, route: str | None = None) -> int:
        """Requests a route handler saw: for ``route`` (e.g. ``"search"``), or in total."""
        with self._lock:
            return self.requests[route] if route else sum(self.requests.values())

    @property
    def tls_failures(self) -> list[str]:
        """Why each failed TLS handshake failed (connections that never reached a handler)."""
        return self._past_tls_failures + (list(self._server.tls_failures) if self._server else [])

    @property
    def tls_handshakes(self) -> int:
        return self._past_tls_handshakes + (self._server.tls_handshakes if self._server else 0)

    def routes(self) -> Routes:
        raise NotImplementedError

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self
        routes = self.routes()

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                target = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                route = find_route(routes, method, target.path)
                if route is None:
                    return self._reply(404, {"detail": "Not Found"})
                name, handle = route
                with standin._lock:
                    standin.requests[name] += 1
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    standin.seen.append(Seen(name, method, self.path, headers, body))
                key = self.headers.get("Authorization", "")
                if not key.startswith("Bearer ") or not key.removeprefix("Bearer ").strip():
                    return self._reply(401, {"message": "Invalid API key"})
                try:
                    parsed = json.loads(body) if body else None
                except json.JSONDecodeError:
                    return self._reply(400, {"message": "invalid JSON"})
                params = dict(parse_qsl(target.query, keep_blank_values=True))
                status, answer = handle(key, {"path": target.path, **params}, parsed)
                return self._reply(status, answer)

            def _reply(self, status: int, body: Json) -> None:
                # Compact JSON with raw UTF-8, as a FastAPI/pydantic service answers.
                data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

        return Handler


# ------------------------------------------------------------------------------------------------
# v4: /api/v4/memory (memu-cli's CloudMemoryClient)

V4 = "/api/v4/memory"


def scope_value(value: Any) -> str:
    """v4's scope rule: missing, null or blank ids are ``"default"`` (memu-api-next.md §4.0)."""
    resolved = str(value).strip() if value is not None else ""
    return resolved or "default"


class V4StandIn(StandIn):
    """Cloud v4: list, search and commit of recall files, per ``(key, user_id, agent_id)``."""

    def __init__(self, tls: ServerCert | None) -> None:
        super().__init__(tls)
        # (key, user_id, agent_id) -> (track, name) -> RecallFile
        self.files: dict[tuple[str, str, str], dict[tuple[str, str], Json]] = {}

    def routes(self) -> Routes:
        return {
            ("GET", V4): ("list", self.list_files),
            ("POST", V4 + "/search"): ("search", self.search),
            ("POST", V4): ("commit", self.commit),
        }

    def _files(self, key: str, user_id: Any, agent_id: Any) -> list[Json]:
        scope = (key, scope_value(user_id), scope_value(agent_id))
        with self._lock:
            rows = list(self.files.get(scope, {}).values())
        return sorted(rows, key=lambda f: (f["track"], f["name"], f["id"]))

    def list_files(self, key: str, params: dict[str, str], body: Any) -> tuple[int, Json]:
        rows = self._files(key, params.get("user_id"), params.get("agent_id"))
        return 200, {"recall_files": rows, "next_cursor": None}

    def search(self, key: str, params: dict[str, str], body: Any) -> tuple[int, Json]:
        if not isinstance(body, dict) or not isinstance(body.get("query"), str) or not body["query"].strip():
            return 422, {"message": "query must be a non-empty string"}
        scored = [
            {**f, "score": round(s, 4)}
            for f in self._files(key, body.get("user_id"), body.get("agent_id"))
            if (s := score(body["query"], f"{f['name']} {f['description']} {f['content']}")) > 0
        ]
        scored.sort(key=lambda f: -f["score"])
        return 200, {"segments": [], "files": scored, "resources": []}

    def commit(self, key: str, params: dict[str, str], body: Any) -> tuple[int, Json]:
        if not isinstance(body, dict) or not isinstance(body.get("recall_files", []), list):
            return 422, {"message": "invalid commit"}
        user = body.get("user") or {}
        scope = (key, scope_value(user.get("user_id")), scope_value(user.get("agent_id")))
        return 200, {"resources": [], "recall_files": self._upsert(scope, body.get("recall_files") or [])}

    def put(self, api_key: str, *files: Json, user_id: str = "default", agent_id: str = "default") -> None:
        """Upserts ``files`` as a commit with ``api_key`` would, without a request (seeding)."""
        self._upsert((f"Bearer {api_key}", user_id, agent_id), list(files))

    def _upsert(self, scope: tuple[str, str, str], files: list[Json]) -> list[Json]:
        """Upserts by ``(track, name)``; returns the committed rows."""
        committed = []
        with self._lock:
            rows = self.files.setdefault(scope, {})
            for given in files:
                track, name = given.get("track", "memory"), given["name"]
                stamp = now()
                row = rows.get((track, name)) or {"id": uuid.uuid4().hex, "created_at": stamp}
                row.update(
                    updated_at=stamp,
                    name=name,
                    track=track,
                    description=given.get("description", ""),
                    content=given.get("content", ""),
                    user_id=scope[1],
                    agent_id=scope[2],
                )
                rows[(track, name)] = row
                committed.append(dict(row))
        return committed


# ------------------------------------------------------------------------------------------------
# v3: /api/v3/memory/... (memu-sdk 1.0)

V3 = "/api/v3/memory"
KSUID_ALPHABET = string.digits + string.ascii_letters


def query_text(query: Any) -> str:
    """The text a v3 query stands for: the string, or every message's content of a list."""
    if isinstance(query, str):
        return query
    if isinstance(query, list):
        return " ".join(str(m.get("content", "")) for m in query if isinstance(m, dict))
    return ""


class V3StandIn(StandIn):
    """Cloud v3: retrieve, categories, asynchronous memorize and its status."""

    CATEGORY = "personal_info"

    def __init__(self, tls: ServerCert | None) -> None:
        super().__init__(tls)
        self.items: dict[tuple[str, str], list[Json]] = {}  # (key, user_id) -> items
        self.tasks: dict[str, Json] = {}

    def routes(self) -> Routes:
        return {
            ("POST", V3 + "/retrieve"): ("retrieve", self.retrieve),
            ("POST", V3 + "/categories"): ("categories", self.categories),
            ("POST", V3 + "/memorize"): ("memorize", self.memorize),
            ("GET", V3 + "/memorize/status/"): ("status", self.status),
        }

    def add(self, key: str, user_id: str, agent_id: str, text: str) -> None:
        """Stores one memory item for ``(key, user_id, agent_id)``, as a finished memorize would."""
        stamp = now()
        item = {
            "id": uuid.uuid4().hex,
            "resource_id": None,
            "memory_type": "profile",
            "summary": text,
            "happened_at": None,
            "extra": {},
            "created_at": stamp,
            "updated_at": stamp,
            "user_id": user_id,
            "agent_id": agent_id,
            "category_name": self.CATEGORY,
        }
        with self._lock:
            self.items.setdefault((f"Bearer {key}", user_id), []).append(item)

    def _items(self, key: str, user_id: Any, agent_id: Any) -> list[Json]:
        with self._lock:
            rows = list(self.items.get((key, user_id), []))
        return [r for r in rows if agent_id in (None, "") or r["agent_id"] == agent_id]

    def retrieve(self, key: str, params: dict[str, str], body: Any) -> tuple[int, Json]:
        if not isinstance(body, dict) or "query" not in body:
            return 422, {"detail": "query is required"}
        text = query_text(body["query"])
        items = [
            {**{k: v for k, v in i.items() if k != "category_name"}, "score": round(s, 4)}
            for i in self._items(key, body.get("user_id"), body.get("agent_id"))
            if (s := score(text, i["summary"])) > 0
        ]
        items.sort(key=lambda i: -i["score"])
        categories = []
        if items:
            summary = " ".join(i["summary"] for i in items)
            categories.append(
                {
                    "name": self.CATEGORY,
                    "description": "Personal information",
                    "summary": summary,
                    "score": items[0]["score"],
                }
            )
        return 200, {
            "needs_retrieval": True,
            "original_query": text,
            "rewritten_query": text,
            "next_step_query": None,
            "categories": categories,
            "items": items,
            "resources": [],
        }

    def categories(self, key: str, params: dict[str, str], body: Any) -> tuple[int, Json]:
        if not isinstance(body, dict) or not body.get("user_id"):
            return 422, {"detail": "user_id is required"}
        items = self._items(key, body["user_id"], body.get("agent_id"))
        if not items:
            return 200, {"categories": []}
        category = {
            "name": self.CATEGORY,
            "description": "Personal information",
            "summary": " ".join(i["summary"] for i in items),
            "item_count": len(items),
            "user_id": body["user_id"],
            "agent_id": body.get("agent_id"),
        }
        return 200, {"categories": [category]}

    def memorize(self, key: str, params: dict[str, str], body: Any) -> tuple[int, Json]:
        if not isinstance(body, dict) or not body.get("user_id"):
            return 422, {"detail": "user_id is required"}
        lines = [str(m.get("content", "")) for m in body.get("conversation") or [] if m.get("role") == "user"]
        lines += [
            line.partition(": ")[2] or line for line in (body.get("conversation_text") or "").splitlines()
        ]
        task_id = "".join(secrets.choice(KSUID_ALPHABET) for _ in range(27))
        with self._lock:
            self.tasks[task_id] = {
                "key": key.removeprefix("Bearer "),
                "user_id": body["user_id"],
                "agent_id": body.get("agent_id") or "",
                "lines": lines,
                "status": "PENDING",
            }
        user, agent = body.get("user_name", "User"), body.get("agent_name", "Assistant")
        return 200, {
            "task_id": task_id,
            "status": "PENDING",
            "message": f"Memorization task registered for user {user} and agent {agent}",
        }

    def complete(self, task_id: str) -> None:
        """Finishes a memorize task: its memories become visible, its status ``SUCCESS``."""
        with self._lock:
            task = self.tasks[task_id]
            assert task["status"] == "PENDING", task
        for line in task["lines"]:
            self.add(task["key"], task["user_id"], task["agent_id"], line)
        with self._lock:
            task["status"] = "SUCCESS"

    def status(self, key: str, params: dict[str, str], body: Any) -> tuple[int, Json]:
        task_id = params["path"].removeprefix(V3 + "/memorize/status/")
        with self._lock:
            task = self.tasks.get(task_id)
        if task is None:
            return 404, {"detail": f"Task {task_id} not found"}
        return 200, {"task_id": task_id, "status": task["status"], "detail_info": ""}
