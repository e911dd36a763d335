"""End to end: the real memu-py 0.2.2 SDK (``/api/v2`` paths, Python >= 3.12) through memu-proxy.

The real self-hosted memU only serves ``/api/v1``, so the upstream here is a small Python stand-in
serving ``/api/v2/memory/...`` with the shapes of memu-api.md §3 (memu_v2_standin.py). Runs only
in the Python 3.12 venv (scripts/e2e.sh); elsewhere the module is skipped with a message.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from support import require_package  # noqa: E402

require_package("memu-py", "0.2.2", "the Python 3.12 venv")

from memu.sdk.python.exceptions import MemuAPIException  # noqa: E402

from memu_v2_standin import MemuV2StandIn  # noqa: E402
from support import Proxy, SdkClient, timed, wait_until  # noqa: E402

AGENT = "mao"
DEADLINE_S = 2.0  # the proxies' [upstream] timeout_ms
MARGIN_S = 0.5


@pytest.fixture
def standin() -> Iterator[MemuV2StandIn]:
    server = MemuV2StandIn().start()
    try:
        yield server
    finally:
        server.stop()


def seed_alice(standin: MemuV2StandIn, user: str) -> None:
    """Activity (related items), profile (default categories) and pets (clustered) memories."""
    standin.add(user, AGENT, "activity", "Alice loves her black cat named Mochi.")
    standin.add(user, AGENT, "profile", "Alice is a university student who lives in Osaka.")
    standin.add(user, AGENT, "pets", "Alice adopted a black cat named Mochi from a shelter.")


def sdk_reads(client: SdkClient, user: str) -> dict[str, Callable[[], Any]]:
    """route under /api/v2/memory -> the v2 SDK retrieval for ``user``."""
    return {
        "/retrieve/related-memory-items": lambda: client.api.retrieve_related_memory_items(
            user_id=user, agent_id=AGENT, query="Does Alice have a black cat?", top_k=3, min_similarity=0.3
        ),
        "/retrieve/default-categories": lambda: client.api.retrieve_default_categories(
            user_id=user, agent_id=AGENT
        ),
        "/retrieve/related-clustered-categories": lambda: client.api.retrieve_related_clustered_categories(
            user_id=user, agent_id=AGENT, category_query="black cat Mochi"
        ),
    }


def memory_texts(result: Any) -> list[str]:
    """Memory contents of a parsed v2 retrieval result of any route."""
    if hasattr(result, "related_memories"):
        return [m.memory.content for m in result.related_memories]
    if hasattr(result, "categories"):
        return [m.content for c in result.categories if c.memory_items for m in c.memory_items.memories]
    return [m.content for c in result.clustered_categories for m in c.memories or []]


def test_v2_retrievals_through_proxy_are_cached(
    standin: MemuV2StandIn,
    make_proxy: Callable[..., Proxy],
    sdk: Callable[..., SdkClient],
    uid: Callable[[str], str],
) -> None:
    """The v2 SDK's three retrievals go through the proxy to ``/api/v2/...`` and parse with the
    memories; their repeat is ``Cache-Status: memu-proxy; hit``, equal, and the stand-in is not
    asked again."""
    user = uid("alice")
    seed_alice(standin, user)
    client = sdk(make_proxy(standin.url).url)
    for route, call in sdk_reads(client, user).items():
        first = call()
        assert any("Alice" in t for t in memory_texts(first)), route
        assert "fwd=miss" in client.responses.cache_status, route
        assert standin.count("POST", route) == 1, route
        second = call()
        assert client.responses.cache_status == "memu-proxy; hit", route
        assert second == first, route
        assert standin.count("POST", route) == 1, route


def test_v2_memorize_passes_through_and_invalidates(
    standin: MemuV2StandIn,
    make_proxy: Callable[..., Proxy],
    sdk: Callable[..., SdkClient],
    uid: Callable[[str], str],
) -> None:
    """A v2 memorize goes through the proxy exactly once; its status, polled through the proxy,
    reaches every time the stand-in; once it is SUCCESS the cached retrieval is not served: the new
    memory shows up."""
    user = uid("alice")
    seed_alice(standin, user)
    client = sdk(make_proxy(standin.url).url)
    read = sdk_reads(client, user)["/retrieve/related-memory-items"]
    assert not any("Luna" in t for t in memory_texts(read()))
    read()
    assert client.responses.cache_status == "memu-proxy; hit"

    conversation = [{"role": "user", "content": "Alice adopted a second black cat named Luna"}]
    task = client.api.memorize_conversation(
        conversation, user_id=user, user_name="Alice", agent_id=AGENT, agent_name="Mao"
    )
    assert task.status == "PENDING"
    assert standin.count("POST", "/memorize") == 1
    status = wait_until(
        lambda: client.api.get_task_status(task.task_id).status == "SUCCESS",
        timeout=10,
        what="v2 task SUCCESS",
    )
    assert status and standin.count("GET", f"/memorize/status/{task.task_id}") >= 1

    after = read()
    assert "fwd=miss" in client.responses.cache_status
    assert any("Luna" in t for t in memory_texts(after))


def test_v2_stopped_upstream_falls_back_and_recovers(
    standin: MemuV2StandIn,
    make_proxy: Callable[..., Proxy],
    sdk: Callable[..., SdkClient],
    uid: Callable[[str], str],
) -> None:
    """Stand-in stopped: the v2 SDK's retrievals through the proxy parse as empty results within the
    deadline plus a small margin, and its memorize raises (no faked write). Restarted on the same
    port, the same proxy serves its answers again."""
    user = uid("alice")
    seed_alice(standin, user)
    proxy = make_proxy(standin.url)
    client = sdk(proxy.url)
    standin.stop()

    for route, call in sdk_reads(client, user).items():
        result, elapsed = timed(call)
        assert memory_texts(result) == [], route
        assert elapsed < DEADLINE_S + MARGIN_S, f"{route} took {elapsed:.2f}s"
        assert "detail=" in client.responses.cache_status, route
    with pytest.raises(MemuAPIException) as failure:
        client.api.memorize_conversation(
            "user: hi", user_id=user, user_name="Alice", agent_id=AGENT, agent_name="Mao"
        )
    assert failure.value.status_code in (502, 503, 504)

    standin.start()
    read = sdk_reads(client, user)["/retrieve/related-memory-items"]
    wait_until(
        lambda: memory_texts(read()), timeout=20, what="proxy serving the stand-in again", interval=0.2
    )
