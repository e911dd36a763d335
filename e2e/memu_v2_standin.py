"""A small stand-in for a memU server speaking ``/api/v2/memory/...`` (memu-py 0.2.2's paths).

The real self-hosted server only serves ``/api/v1`` (memu-api.md §2), so the v2 SDK is exercised
against this: the routes and JSON shapes of memu-api.md §3 as memu-py 0.2.2's models want them
(categories carry ``memory_items{memories, memory_count}``; timestamps are filled, as the cloud
presumably sends them). Retrieval ranks memories with the OpenAI stub's hash embedding.

memorize is asynchronous like memU's: the task is PENDING and its memories become visible when a
status poll reports SUCCESS. ``requests`` counts every request by ``(method, path)``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback import JsonHandler, LoopbackHTTPServer
from openai_stub import embed

PREFIX = "/api/v2/memory"
DEFAULT_CATEGORIES = ("profile", "event")
BASIC_CATEGORIES = ("profile", "event", "activity")


def similarity(a: str, b: str) -> float:
    """Cosine similarity of the stub embeddings (they are unit vectors)."""
    return sum(x * y for x, y in zip(embed(a), embed(b), strict=True))


def memory_item(memory_id: str, category: str, content: str) -> dict[str, Any]:
    now = datetime(2025, 1, 1, tzinfo=timezone.utc).isoformat()
    return {
        "memory_id": memory_id,
        "category": category,
        "content": content,
        "happened_at": now,
        "created_at": now,
        "updated_at": now,
    }


class MemuV2StandIn:
    """The stand-in as a server on 127.0.0.1 in a background thread; restartable on its port."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.memories: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.requests: Counter[tuple[str, str]] = Counter()
        self.port = 0
        self._server: LoopbackHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MemuV2StandIn":
        """Serves on the previous port after a stop, else on a free one."""
        self._server = LoopbackHTTPServer(self.port, self._handler_class())
        self.port = self._server.port
        self._server.start()
        return self

    def stop(self) -> None:
        """Stops like a killed server: the port refuses, open connections are dropped."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def add(self, user_id: str, agent_id: str, category: str, content: str) -> None:
        with self._lock:
            items = self.memories.setdefault((user_id, agent_id), [])
            items.append(memory_item(uuid.uuid4().hex[:6], category, content))

    def count(self, method: str, route: str) -> int:
        """Requests seen for ``PREFIX + route`` (e.g. ``count("POST", "/memorize")``)."""
        return self.requests[(method, PREFIX + route)]

    # -- routes ------------------------------------------------------------------------------

    def _user_memories(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.memories.get((body["user_id"], body.get("agent_id")), []))

    def related_memory_items(self, body: dict[str, Any]) -> dict[str, Any]:
        scored = [(similarity(body["query"], m["content"]), m) for m in self._user_memories(body)]
        kept = sorted((s, m) for s, m in scored if s >= body.get("min_similarity", 0.3))[::-1][
            : body.get("top_k", 10)
        ]
        related = [
            {"memory": m, "user_id": body["user_id"], "agent_id": body.get("agent_id"), "similarity_score": s}
            for s, m in kept
        ]
        params = {k: body.get(k) for k in ("query", "top_k", "min_similarity", "include_categories")}
        return {
            "related_memories": related,
            "query": body["query"],
            "total_found": len(related),
            "search_params": params,
        }

    def default_categories(self, body: dict[str, Any]) -> dict[str, Any]:
        categories = []
        for name in DEFAULT_CATEGORIES:
            items = [m for m in self._user_memories(body) if m["category"] == name]
            if items:
                categories.append(
                    {
                        "name": name,
                        "type": "default",
                        "user_id": body["user_id"],
                        "agent_id": body.get("agent_id"),
                        "description": f"Default {name} memories",
                        "memory_items": {"memories": items, "memory_count": len(items)},
                        "summary": None,
                    }
                )
        return {"categories": categories, "total_categories": len(categories)}

    def related_clustered_categories(self, body: dict[str, Any]) -> dict[str, Any]:
        by_category: dict[str, list[dict[str, Any]]] = {}
        for m in self._user_memories(body):
            if m["category"] not in BASIC_CATEGORIES:
                by_category.setdefault(m["category"], []).append(m)
        clustered = []
        for name, items in by_category.items():
            score = similarity(body["category_query"], " ".join(m["content"] for m in items))
            if score >= body.get("min_similarity", 0.3):
                clustered.append(
                    {"name": name, "similarity_score": score, "memories": items, "memory_count": len(items)}
                )
        clustered = sorted(clustered, key=lambda c: -c["similarity_score"])[: body.get("top_k", 5)]
        params = {k: body.get(k) for k in ("category_query", "top_k", "min_similarity")}
        return {
            "clustered_categories": clustered,
            "category_query": body["category_query"],
            "total_categories_found": len(clustered),
            "search_params": params,
        }

    def memorize(self, body: dict[str, Any]) -> dict[str, Any]:
        task_id = str(uuid.uuid4())
        lines = [f"{m['role'].upper()}: {m['content']}" for m in body.get("conversation") or []]
        lines += (body.get("conversation_text") or "").splitlines()
        with self._lock:
            self.tasks[task_id] = {
                "user_id": body["user_id"],
                "agent_id": body["agent_id"],
                "lines": lines,
                "status": "PENDING",
            }
        return {"task_id": task_id, "status": "PENDING", "message": "Memorization task started successfully"}

    def status(self, task_id: str) -> dict[str, Any] | None:
        """Finishes the task on its first poll (its memories appear), then reports SUCCESS."""
        with self._lock:
            task = self.tasks.get(task_id)
        if task is None:
            return None
        if task["status"] == "PENDING":
            for line in task["lines"]:
                self.add(task["user_id"], task["agent_id"], "activity", line)
            task["status"] = "SUCCESS"
        return {"task_id": task_id, "status": task["status"], "detail_info": ""}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self
        posts = {
            "/retrieve/related-memory-items": standin.related_memory_items,
            "/retrieve/default-categories": standin.default_categories,
            "/retrieve/related-clustered-categories": standin.related_clustered_categories,
            "/memorize": standin.memorize,
        }

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                standin.requests[("POST", self.path)] += 1
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                route = posts.get(self.path.removeprefix(PREFIX)) if self.path.startswith(PREFIX) else None
                if route is None:
                    return self._reply(404, {"detail": "Not Found"})
                return self._reply(200, route(body))

            def do_GET(self) -> None:  # noqa: N802
                standin.requests[("GET", self.path)] += 1
                marker = f"{PREFIX}/memorize/status/"
                answer = (
                    standin.status(self.path.removeprefix(marker)) if self.path.startswith(marker) else None
                )
                if answer is None:
                    return self._reply(404, {"detail": "Task not found"})
                return self._reply(200, answer)

        return Handler
