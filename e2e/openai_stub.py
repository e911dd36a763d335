"""A loopback OpenAI-compatible stub that lets the real memU 0.1.8 server run offline.

memU reaches "OpenAI" through the ``openai`` package, which honours ``OPENAI_BASE_URL``. This stub
answers the two endpoints memU uses (memu-api.md §8.2):

* ``POST /v1/embeddings``: a deterministic bag-of-words hash embedding (256 dims, md5 of each
  lower-cased word mod 256, L2-normalised). Texts sharing words are similar, others are not. The
  openai client asks for ``encoding_format: "base64"`` unless told otherwise; both formats are served.
* ``POST /v1/chat/completions``: the scripted answers that drive memU's memorize agent
  (memu 0.1.8 ``memory/memory_agent.py`` and ``memory/actions/add_activity_memory.py``):

  1. a call with ``tools`` and no tool result yet: one tool call ``add_activity_memory`` with
     ``{"character_name": <CHARACTER>, "content": <CONVERSATION TO PROCESS>}`` parsed from the
     system prompt;
  2. a call with ``tools`` after a tool result: the content ``PROCESSING_COMPLETE``, which ends
     memU's agent loop;
  3. a call without tools (``simple_chat``, the activity formatting prompt): the conversation lines
     from ``Raw content to format:`` echoed back, one sentence per line. memU stores each line as
     one memory item.

It records every embedded text and every chat request so tests can tell whether memU did work
(each related-memory-items retrieval embeds its query exactly once).

Run standalone: ``python e2e/openai_stub.py --port 18090``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import re
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator

from loopback import JsonHandler, LoopbackHTTPServer

DIMS = 256

# memu 0.1.8 memory_agent.py: the system prompt of the function-calling loop contains
#   CONVERSATION TO PROCESS:\n{conversation_text}\n\nCHARACTER: {character_name}\nSESSION DATE: {date}
# The conversation group is greedy so a message that itself contains "CHARACTER: " stays whole.
AGENT_PROMPT = re.compile(
    r"CONVERSATION TO PROCESS:\n(?P<conversation>.*)\n\nCHARACTER: (?P<character>[^\n]*)\nSESSION DATE: ",
    re.S,
)
# memu 0.1.8 add_activity_memory.py: the formatting prompt (sent without tools) contains
#   Raw content to format:\n{content}\n\n**CRITICAL REQUIREMENT: GROUP RELATED CONTENT ...
FORMAT_PROMPT = re.compile(
    r"Raw content to format:\n(?P<content>.*)\n\n\*\*CRITICAL REQUIREMENT: GROUP RELATED CONTENT",
    re.S,
)
DONE = "PROCESSING_COMPLETE"


def embed(text: str) -> list[float]:
    """The stub's embedding: L2-normalised counts of md5(word) mod 256 (all zeros for no words)."""
    vector = [0.0] * DIMS
    for word in re.findall(r"\w+", text.lower()):
        vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIMS] += 1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def as_sentences(content: str) -> str:
    """Echoes conversation lines back, one sentence per line, each ending with a period."""
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    return "\n".join(line if line[-1] in ".!?" else line + "." for line in lines)


def chat_message(request: dict[str, Any]) -> dict[str, Any]:
    """The assistant message for one chat-completions request (see the module docstring)."""
    messages = request.get("messages") or []
    if request.get("tools"):
        if any(m.get("role") == "tool" for m in messages):
            return {"role": "assistant", "content": DONE}
        system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
        match = AGENT_PROMPT.search(system)
        if not match:
            return {"role": "assistant", "content": DONE}
        arguments = {"character_name": match["character"], "content": match["conversation"]}
        call = {
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": "add_activity_memory", "arguments": json.dumps(arguments)},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    prompt = "\n".join(str(m.get("content") or "") for m in messages)
    match = FORMAT_PROMPT.search(prompt)
    return {"role": "assistant", "content": as_sentences(match["content"] if match else prompt)}


def completion(request: dict[str, Any]) -> dict[str, Any]:
    """A full chat.completion object around :func:`chat_message`."""
    message = chat_message(request)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "stub"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def embeddings(request: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The embedded texts and the embeddings response (float lists, or base64 float32 if asked)."""
    inputs = request.get("input", "")
    texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs]
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        vector: Any = embed(text)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{DIMS}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
    return texts, {"object": "list", "data": data, "model": request.get("model", "stub"), "usage": usage}


class OpenAIStub:
    """The stub as a server on 127.0.0.1 in a background thread; ``port=0`` picks a free port."""

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self.embedded: list[str] = []
        self.chats: list[dict[str, Any]] = []
        self.chat_delay = 0.0  # seconds each chat completion takes (see slow_chat)
        self._server = LoopbackHTTPServer(port, self._handler_class())
        self.port = self._server.port

    @property
    def base_url(self) -> str:
        """The value for memU's ``OPENAI_BASE_URL``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "OpenAIStub":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @contextlib.contextmanager
    def slow_chat(self, seconds: float) -> Iterator[None]:
        """Makes every chat completion take ``seconds`` meanwhile, so a memorize stays in flight."""
        self.chat_delay = seconds
        try:
            yield
        finally:
            self.chat_delay = 0.0

    def embed_count(self, text: str | None = None) -> int:
        """How many embeddings were requested, in total or for exactly ``text``."""
        with self._lock:
            return sum(1 for t in self.embedded if text is None or t == text)

    def _record(self, texts: list[str] | None = None, chat: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.embedded.extend(texts or [])
            if chat is not None:
                self.chats.append(chat)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    return self._reply(400, {"error": {"message": "invalid JSON"}})
                if self.path.endswith("/embeddings"):
                    texts, answer = embeddings(request)
                    stub._record(texts=texts)
                    return self._reply(200, answer)
                if self.path.endswith("/chat/completions"):
                    stub._record(chat=request)
                    time.sleep(stub.chat_delay)
                    return self._reply(200, completion(request))
                return self._reply(404, {"error": {"message": f"no route {self.path}"}})

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    stub = OpenAIStub(args.port)
    print(f"OpenAI stub on {stub.base_url}", flush=True)
    try:
        stub._server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
