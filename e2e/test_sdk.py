"""End to end: the real memu-py 0.1.8 SDK and the real memU 0.1.8 server, through memu-proxy.

memu-py 0.1.8 is the version Open-LLM-VTuber PR #272 pins (Python 3.10/3.11, ``/api/v1``). Each
test's docstring says what it proves; each assertion fails if the proxy broke that behaviour.

The official SDK cannot parse the self-hosted server's *non-empty* retrievals (null
``created_at``/``updated_at``, memu-api.md §4), so non-empty answers are compared as raw JSON,
posted with httpx exactly as the SDK would (same headers, the SDK's own request models for the body).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from support import require_package  # noqa: E402

require_package("memu-py", "0.1.8", "the Python 3.11 venv")

from memu.sdk.python.exceptions import MemuAPIException, MemuValidationException  # noqa: E402
from memu.sdk.python.models import (  # noqa: E402
    DefaultCategoriesRequest,
    RelatedClusteredCategoriesRequest,
    RelatedMemoryItemsRequest,
)

from openai_stub import OpenAIStub  # noqa: E402
from support import (  # noqa: E402
    KEY_A,
    ROUTES,
    Memory,
    MemuServer,
    Proxy,
    SdkClient,
    check_config,
    free_port,
    is_hit,
    post_as_sdk,
    proxy_settings,
    render_toml,
    timed,
    wait_until,
)

KEY_B = "sk-e2e-tenant-b"
AGENT = "mao"
DEADLINE_S = 2.0  # the proxies' [upstream] timeout_ms
MARGIN_S = 0.5  # what a fallback may take beyond the deadline on a busy 2-core CI machine

ALICE_ACTIVITY = [
    Memory("a1", "Alice loves her black cat named Mochi."),
    Memory("a2", "Alice works at a bakery in Osaka."),
]
ALICE_PROFILE = [Memory("p1", "Alice is a university student who lives in Osaka.")]
ALICE_PETS = [Memory("e1", "Alice adopted a black cat named Mochi from a shelter.")]


# ------------------------------------------------------------------------------------------------
# Helpers


def seed_alice(memu: MemuServer, user: str) -> None:
    """Gives ``user`` activity memories (related items), a profile (default categories) and a
    ``pets`` category (clustered categories), written the way memU writes them."""
    memu.seed(AGENT, user, "activity", ALICE_ACTIVITY)
    memu.seed(AGENT, user, "profile", ALICE_PROFILE, embeddings=False)
    memu.seed(AGENT, user, "pets", ALICE_PETS, embeddings=False)


def items_body(user: str, query: str, agent: str | None = AGENT) -> dict[str, Any]:
    """The SDK's exact related-memory-items body."""
    return RelatedMemoryItemsRequest(
        user_id=user, agent_id=agent, query=query, top_k=5, min_similarity=0.3
    ).model_dump()


def default_body(user: str) -> dict[str, Any]:
    """The SDK's exact default-categories body."""
    return DefaultCategoriesRequest(user_id=user, agent_id=AGENT).model_dump()


def clustered_body(user: str, query: str) -> dict[str, Any]:
    """The SDK's exact related-clustered-categories body."""
    return RelatedClusteredCategoriesRequest(
        user_id=user, agent_id=AGENT, category_query=query, top_k=5, min_similarity=0.3
    ).model_dump()


# route name -> (path, body for a user); the queries match ALICE_* memories under the hash embedding
READS: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "related-memory-items": (ROUTES["items"], lambda user: items_body(user, "Does Alice have a black cat?")),
    "default-categories": (ROUTES["default"], default_body),
    "related-clustered-categories": (
        ROUTES["clustered"],
        lambda user: clustered_body(user, "black cat Mochi"),
    ),
}


def contents(answer: dict[str, Any]) -> list[str]:
    """Every memory text in a retrieval answer of any of the three routes."""
    if "related_memories" in answer:
        return [m["memory"]["content"] for m in answer["related_memories"]]
    categories = answer.get("categories") or answer.get("clustered_categories") or []
    return [m["content"] for c in categories for m in c.get("memories") or []]


def memorize(client: SdkClient, user: str, *lines: str) -> str:
    """Memorizes a user/assistant exchange through ``client``; returns the task id."""
    conversation = [{"role": "user", "content": line} for line in lines] + [
        {"role": "assistant", "content": "Noted!"}
    ]
    task = client.api.memorize_conversation(
        conversation, user_id=user, user_name="Alice", agent_id=AGENT, agent_name="Mao"
    )
    assert task.task_id and task.status == "PENDING"
    return task.task_id


def wait_for_success(client: SdkClient, task_id: str, timeout: float = 20.0) -> None:
    """Polls the task status through ``client`` (bounded) until it finishes; it must be SUCCESS."""

    def finished() -> str | None:
        status = client.api.get_task_status(task_id).status
        return status if status in ("SUCCESS", "FAILURE") else None

    status = wait_until(finished, timeout=timeout, what=f"memorize task {task_id}", interval=0.1)
    assert status == "SUCCESS"


def sdk_reads(client: SdkClient, user: str) -> dict[str, Callable[[], Any]]:
    """The three SDK retrievals Open-LLM-VTuber-style code makes, as zero-argument calls."""
    return {
        "related-memory-items": lambda: client.api.retrieve_related_memory_items(
            user_id=user, agent_id=AGENT, query="Does Alice have a black cat?", top_k=3, min_similarity=0.3
        ),
        "default-categories": lambda: client.api.retrieve_default_categories(user_id=user, agent_id=AGENT),
        "related-clustered-categories": lambda: client.api.retrieve_related_clustered_categories(
            user_id=user, agent_id=AGENT, category_query="black cat Mochi"
        ),
    }


def is_empty(result: Any) -> bool:
    """True for a parsed SDK retrieval with nothing in it."""
    for attribute in ("related_memories", "categories", "clustered_categories"):
        if hasattr(result, attribute):
            return getattr(result, attribute) == []
    raise AssertionError(f"not a retrieval result: {result!r}")


def wait_until_recovered(proxy: Proxy, user: str, timeout: float = 20.0) -> httpx.Response:
    """Polls a related-memory-items read through the proxy until it is memU's real, non-empty answer."""

    def real_answer() -> httpx.Response | None:
        response = post_as_sdk(
            proxy.url, ROUTES["items"], items_body(user, "Does Alice have a black cat?"), KEY_A
        )
        return response if response.status_code == 200 and contents(response.json()) else None

    return wait_until(real_answer, timeout=timeout, what="proxy serving memU's answers again", interval=0.2)


# ------------------------------------------------------------------------------------------------
# Writes


def test_sdk_memorize_through_proxy_reaches_memu(
    memu: MemuServer, proxy: Proxy, sdk: Callable[..., SdkClient], uid: Callable[[str], str]
) -> None:
    """The SDK's memorize goes through the proxy to memU exactly once; its status, polled through
    the proxy, reaches SUCCESS (every poll reached memU: never cached; the proxy also polls the
    task itself, so memU may see more polls than the client sent) and memU stored the text."""
    user = uid("alice")
    client = sdk(proxy.url)
    posted = memu.requests("POST", ROUTES["memorize"])

    task_id = memorize(client, user, "Alice loves her black cat named Mochi")
    assert memu.requests("POST", ROUTES["memorize"]) == posted + 1
    wait_for_success(client, task_id)

    polls = [r for r in client.responses.responses if r.request.method == "GET"]
    assert memu.requests("GET", f"/api/v1/memory/memorize/status/{task_id}") >= len(polls)
    assert not any(is_hit(r) for r in polls)
    assert "Alice loves her black cat named Mochi" in memu.activity(AGENT, user)


def test_memorize_success_invalidates_reads_cached_meanwhile(
    memu: MemuServer, proxy: Proxy, stub: OpenAIStub, sdk: Callable[..., SdkClient], uid: Callable[[str], str]
) -> None:
    """A second memorize for the same user: a read made while memU is still processing it (and so
    cached with the old memories) is not served once a status poll through the proxy says SUCCESS;
    the next read shows the new memory."""
    user = uid("alice")
    client = sdk(proxy.url)
    wait_for_success(client, memorize(client, user, "Alice loves her black cat named Mochi"))
    body = items_body(user, "black cat")
    first = post_as_sdk(proxy.url, ROUTES["items"], body, KEY_A)
    assert any("Mochi" in c for c in contents(first.json()))
    assert is_hit(post_as_sdk(proxy.url, ROUTES["items"], body, KEY_A))

    with stub.slow_chat(0.6):  # memU's memorize now takes > 1 s: the next read surely races it
        task_id = memorize(client, user, "Alice adopted a second black cat named Luna")
        meanwhile = post_as_sdk(proxy.url, ROUTES["items"], body, KEY_A)
        assert not any("Luna" in c for c in contents(meanwhile.json())), "memorize finished too early to race"
        assert is_hit(post_as_sdk(proxy.url, ROUTES["items"], body, KEY_A)), (
            "the racing read should be cached"
        )
        wait_for_success(client, task_id)

    after = post_as_sdk(proxy.url, ROUTES["items"], body, KEY_A)
    assert not is_hit(after)
    assert any("Luna" in c for c in contents(after.json())) and any(
        "Mochi" in c for c in contents(after.json())
    )
    assert after.content == post_as_sdk(memu.url, ROUTES["items"], body, KEY_A).content


MEMORIZE_SPELLINGS = [
    "utf-8-bom",
    "utf-16",
    "utf-32",
    "nan",
    "infinity",
    "1e400",
    "lone-surrogate",
    "deep-nesting",
    "percent-encoded-path",
    "encoded-slash",
]


@pytest.mark.parametrize("spelling", MEMORIZE_SPELLINGS)
def test_a_memorize_memu_accepts_in_any_spelling_invalidates_the_users_reads(
    memu: MemuServer, proxy: Proxy, uid: Callable[[str], str], spelling: str
) -> None:
    """The real memU (uvicorn, FastAPI's ``json.loads``) accepts a memorize whose body has a UTF-8
    byte-order mark, is UTF-16 or UTF-32, holds ``NaN``, ``-Infinity``, ``1e400``, a lone surrogate
    or nesting deeper than serde_json's 128, and one whose path is percent-encoded (``%65``,
    ``%2F``): each is a real write (200, ``PENDING``), so the user's cached read must miss after it."""
    user = uid("alice")
    seed_alice(memu, user)
    read = items_body(user, "Does Alice have a black cat?")
    post_as_sdk(proxy.url, ROUTES["items"], read, KEY_A)
    assert is_hit(post_as_sdk(proxy.url, ROUTES["items"], read, KEY_A))

    body: dict[str, Any] = {
        "conversation": [{"role": "user", "content": "Alice bought a scratching post"}],
        "user_id": user,
        "user_name": "Alice",
        "agent_id": AGENT,
        "agent_name": "Mao",
    }
    path = ROUTES["memorize"]
    data = json.dumps(body).encode()
    if spelling == "utf-8-bom":
        data = codecs.BOM_UTF8 + data
    elif spelling == "utf-16":
        data = json.dumps(body).encode("utf-16")
    elif spelling == "utf-32":
        data = json.dumps(body).encode("utf-32")
    elif spelling == "nan":
        data = json.dumps({**body, "score": float("nan")}).encode()
    elif spelling == "infinity":
        data = json.dumps({**body, "score": float("-inf")}).encode()
    elif spelling == "1e400":
        data = json.dumps(body)[:-1].encode() + b', "score": 1e400}'
    elif spelling == "lone-surrogate":
        data = json.dumps({**body, "note": "\ud800"}).encode()
    elif spelling == "deep-nesting":
        data = json.dumps({**body, "deep": json.loads("[" * 200 + "]" * 200)}).encode()
    elif spelling == "percent-encoded-path":
        path = path.replace("memorize", "memoriz%65")
    elif spelling == "encoded-slash":
        path = path.replace("/memory/memorize", "/memory%2Fmemorize")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY_A}"}
    written = httpx.post(f"{proxy.url}{path}", content=data, headers=headers, timeout=10)
    assert written.status_code == 200, written.text
    assert written.json()["status"] == "PENDING", "memU took it as a memorize"
    assert not is_hit(post_as_sdk(proxy.url, ROUTES["items"], read, KEY_A))


# ------------------------------------------------------------------------------------------------
# Reads


@pytest.mark.parametrize("route", list(READS))
def test_read_through_proxy_equals_direct_and_repeat_is_hit(
    route: str, memu: MemuServer, proxy: Proxy, stub: OpenAIStub, uid: Callable[[str], str]
) -> None:
    """A non-empty retrieval through the proxy is byte for byte what memU answers directly to the
    same SDK body; the repeat is a cache hit: ``Cache-Status: memu-proxy; hit``, counted as a read
    hit in /metrics, and memU is not asked again (no request in its access log, no embedding)."""
    path, make_body = READS[route]
    user = uid("alice")
    seed_alice(memu, user)
    body = make_body(user)
    direct = post_as_sdk(memu.url, path, body, KEY_A)
    assert direct.status_code == 200 and contents(direct.json()), direct.text

    asked = memu.requests("POST", path)
    first = post_as_sdk(proxy.url, path, body, KEY_A)
    assert first.status_code == 200 and first.content == direct.content
    assert "fwd=miss" in first.headers["cache-status"]
    assert memu.requests("POST", path) == asked + 1

    hits, embeddings = proxy.metrics().requests("read", "hit"), stub.embed_count()
    second = post_as_sdk(proxy.url, path, body, KEY_A)
    assert second.status_code == 200 and second.content == direct.content
    assert second.headers["cache-status"] == "memu-proxy; hit"
    assert memu.requests("POST", path) == asked + 1
    assert stub.embed_count() == embeddings
    assert proxy.metrics().requests("read", "hit") == hits + 1


def test_sdk_empty_retrievals_parse_and_repeat_is_hit(
    memu: MemuServer, proxy: Proxy, sdk: Callable[..., SdkClient], uid: Callable[[str], str]
) -> None:
    """For a user without memories (the case the SDK can parse), all three SDK retrievals through
    the proxy succeed with empty results, and repeating them is served from the cache."""
    user = uid("newcomer")
    client = sdk(proxy.url)
    for name, call in sdk_reads(client, user).items():
        path = READS[name][0]
        assert is_empty(call()), name
        assert "fwd=miss" in client.responses.cache_status, name
        asked = memu.requests("POST", path)
        assert is_empty(call()), name
        assert client.responses.cache_status == "memu-proxy; hit", name
        assert memu.requests("POST", path) == asked, name


def test_users_never_see_each_others_cached_answers(
    memu: MemuServer, proxy: Proxy, uid: Callable[[str], str]
) -> None:
    """Two users, same agent, same query: the second user's read is a miss answered with their own
    memories, never the first user's cached ones (related items and default categories, whose body
    differs only in user_id)."""
    alice, bob = uid("alice"), uid("bob")
    memu.seed(AGENT, alice, "activity", [Memory("a1", "Alice loves her black cat named Mochi.")])
    memu.seed(AGENT, alice, "profile", [Memory("p1", "Alice is a student in Osaka.")], embeddings=False)
    memu.seed(AGENT, bob, "activity", [Memory("b1", "Bob loves his black dog named Rex.")])
    memu.seed(AGENT, bob, "profile", [Memory("p2", "Bob is a chef in Kyoto.")], embeddings=False)

    for path, make_body in [
        (ROUTES["items"], lambda u: items_body(u, "who loves black")),
        (ROUTES["default"], default_body),
    ]:
        for_alice = post_as_sdk(proxy.url, path, make_body(alice), KEY_A)
        assert any("Alice" in c for c in contents(for_alice.json())), path
        for_bob = post_as_sdk(proxy.url, path, make_body(bob), KEY_A)
        assert not is_hit(for_bob), path
        assert for_bob.content == post_as_sdk(memu.url, path, make_body(bob), KEY_A).content
        assert contents(for_bob.json()) and not any("Alice" in c for c in contents(for_bob.json())), path
        again = post_as_sdk(proxy.url, path, make_body(alice), KEY_A)
        assert is_hit(again) and again.content == for_alice.content, path


def test_api_keys_never_share_cached_answers(
    memu: MemuServer, proxy: Proxy, uid: Callable[[str], str]
) -> None:
    """The same body under two API keys (and under no key at all) is three tenants: each one's first
    read reaches memU; each one's repeat is a hit on its own entry."""
    user = uid("alice")
    seed_alice(memu, user)
    body = items_body(user, "black cat")
    path = ROUTES["items"]
    for key in (KEY_A, KEY_B, None):
        asked = memu.requests("POST", path)
        first = post_as_sdk(proxy.url, path, body, key)
        assert first.status_code == 200 and not is_hit(first), key
        assert memu.requests("POST", path) == asked + 1, key
    for key in (KEY_A, KEY_B, None):
        assert is_hit(post_as_sdk(proxy.url, path, body, key)), key


def test_community_fork_client_through_proxy(
    memu: MemuServer, proxy: Proxy, uid: Callable[[str], str]
) -> None:
    """A raw httpx client posting like the community fork's memu_client.py (AsyncClient, no
    Authorization, body ``{user_id, agent_id, query, top_k, min_similarity}``, ``raise_for_status()``,
    dict access on ``related_memories[].memory.content``) gets through the proxy exactly the
    memories it gets from memU directly, and its repeat is a hit."""
    user = uid("alice")
    seed_alice(memu, user)

    async def fork_retrieve(base_url: str) -> tuple[list[dict[str, Any]], httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:
            body = {
                "user_id": user,
                "agent_id": AGENT,
                "query": "black cat",
                "top_k": 5,
                "min_similarity": 0.3,
            }
            response = await http.post("/api/v1/memory/retrieve/related-memory-items", json=body)
            response.raise_for_status()
            memories = [
                {
                    "content": m["memory"]["content"],
                    "category": m["memory"]["category"],
                    "score": m["similarity_score"],
                }
                for m in response.json()["related_memories"]
            ]
            return memories, response

    direct, _ = asyncio.run(fork_retrieve(memu.url))
    first, _ = asyncio.run(fork_retrieve(proxy.url))
    second, response = asyncio.run(fork_retrieve(proxy.url))
    assert direct and first == direct and second == direct
    assert is_hit(response)


# ------------------------------------------------------------------------------------------------
# memU down


def test_memu_stopped_reads_degrade_fast_writes_fail_and_proxy_recovers(
    make_memu: Callable[[], MemuServer],
    make_proxy: Callable[..., Proxy],
    sdk: Callable[..., SdkClient],
    uid: Callable[[str], str],
) -> None:
    """memU stopped: each SDK retrieval through the proxy returns a parseable empty result within
    the deadline plus a small margin, the fork's raw client gets a 200 with no memories, and an SDK
    memorize raises (an honest 5xx, no faked write). memU restarted on the same port: the same
    proxy process serves memU's real answers again and accepts a memorize."""
    memu = make_memu()
    proxy = make_proxy(memu.url)
    user = uid("alice")
    seed_alice(memu, user)
    client = sdk(proxy.url)
    memu.stop()

    for name, call in sdk_reads(client, user).items():
        result, elapsed = timed(call)
        assert is_empty(result), name
        assert elapsed < DEADLINE_S + MARGIN_S, f"{name} took {elapsed:.2f}s"
        assert "detail=" in client.responses.cache_status, (name, client.responses.cache_status)
    fork = httpx.post(
        f"{proxy.url}{ROUTES['items']}",
        json={"user_id": user, "agent_id": AGENT, "query": "cat", "top_k": 5, "min_similarity": 0.3},
        timeout=10,
    )
    fork.raise_for_status()
    assert fork.json()["related_memories"] == []
    with pytest.raises(MemuAPIException) as failure:
        memorize(client, user, "Alice bought a scratching post")
    assert failure.value.status_code in (502, 503, 504)
    assert proxy.metrics().requests("read", "fallback") >= 3

    memu.start()
    recovered = wait_until_recovered(proxy, user)
    assert any("Mochi" in c for c in contents(recovered.json()))
    wait_for_success(client, memorize(client, user, "Alice bought a scratching post"))
    assert proxy.process.alive()


def test_hung_memu_is_cut_at_the_deadline(
    make_memu: Callable[[], MemuServer],
    make_proxy: Callable[..., Proxy],
    sdk: Callable[..., SdkClient],
    uid: Callable[[str], str],
) -> None:
    """memU frozen (SIGSTOP: connections are accepted, nothing answers): an SDK retrieval through the
    proxy gets the empty fallback at the proxy's deadline (not the SDK's 10 s timeout) and an SDK
    memorize gets a 504 at the writes' own deadline (``upstream.write_timeout_ms``, 30 s by default,
    1 s here); thawed, memU's answers come back through the same proxy."""
    memu = make_memu()
    proxy = make_proxy(memu.url, timeout_ms=1000, extra={"upstream": {"write_timeout_ms": 1000}})
    user = uid("alice")
    seed_alice(memu, user)
    client = sdk(proxy.url)
    memu.freeze()
    try:
        result, elapsed = timed(sdk_reads(client, user)["related-memory-items"])
        assert is_empty(result)
        assert elapsed < 1.0 + MARGIN_S, f"took {elapsed:.2f}s"
        assert "detail=timeout" in client.responses.cache_status
        started = time.monotonic()
        with pytest.raises(MemuAPIException) as failure:
            memorize(client, user, "Alice bought a scratching post")
        assert failure.value.status_code == 504
        assert time.monotonic() - started < 1.0 + MARGIN_S
    finally:
        memu.thaw()
    wait_until_recovered(proxy, user)


def test_cache_disabled_still_degrades_to_empty_results(
    make_proxy: Callable[..., Proxy], sdk: Callable[..., SdkClient], uid: Callable[[str], str]
) -> None:
    """README, ``cache.enabled``: "false: no caching (deadline and fallback still apply)". With
    nothing listening upstream, an SDK retrieval through such a proxy still gets a parseable empty
    result within the deadline."""
    proxy = make_proxy(f"http://127.0.0.1:{free_port()}", extra={"cache": {"enabled": False}})
    client = sdk(proxy.url)
    result, elapsed = timed(sdk_reads(client, uid("alice"))["related-memory-items"])
    assert is_empty(result)
    assert elapsed < DEADLINE_S + MARGIN_S


# ------------------------------------------------------------------------------------------------
# Forgetting


def test_deleted_memories_are_not_served_when_memu_freezes_after_the_delete(
    make_memu: Callable[[], MemuServer],
    make_proxy: Callable[..., Proxy],
    sdk: Callable[..., SdkClient],
    uid: Callable[[str], str],
) -> None:
    """The issue "Forgetting is final", as a user meets it: the SDK memorizes an address and reads it
    back (stored, then a hit); it asks memU to delete the user's memories; memU then freezes
    (SIGSTOP). The next SDK read is answered within the budget with no memories: the cached answer
    that holds the address does not stand in, although it is inside the stale window. The self-hosted
    server has no delete route (404, memu-api.md §3.6): the proxy purges before forwarding, whatever
    memU answers."""
    memu = make_memu()
    extra = {
        "compat": {"fill_null_timestamps": True},
        "cache": {"stale_if_error_secs": 3600},
        "latency": {"budget_ms": 500},
    }
    proxy = make_proxy(memu.url, timeout_ms=1000, extra=extra)
    user = uid("alice")
    client = sdk(proxy.url)
    wait_for_success(client, memorize(client, user, "Alice lives at 12 Elm Street"))

    def where_does_alice_live() -> Any:
        return client.api.retrieve_related_memory_items(
            user_id=user, agent_id=AGENT, query="Where does Alice live on Elm Street?", top_k=3, min_similarity=0.3
        )

    stored = where_does_alice_live()
    assert any("Elm Street" in m.content for m in _sdk_memories(stored))
    assert any("Elm Street" in m.content for m in _sdk_memories(where_does_alice_live()))
    assert client.responses.cache_status == "memu-proxy; hit"

    with pytest.raises(MemuAPIException) as refused:
        client.api.delete_memories(user_id=user, agent_id=AGENT)
    assert refused.value.status_code == 404
    memu.freeze()
    try:
        result, elapsed = timed(where_does_alice_live)
        assert is_empty(result)
        assert elapsed < 0.5 + MARGIN_S, f"took {elapsed:.2f}s"
        assert client.responses.cache_status == "memu-proxy; fwd=miss; detail=budget"
    finally:
        memu.thaw()
    assert proxy.metrics().value("memu_proxy_stale_refused_total", why="purged") == 1


def test_a_new_question_while_memu_is_frozen_gets_the_memories_already_seen(
    make_memu: Callable[[], MemuServer],
    make_proxy: Callable[..., Proxy],
    sdk: Callable[..., SdkClient],
    uid: Callable[[str], str],
) -> None:
    """``cache.local_answers``: the SDK reads Alice's two activity memories once; memU then
    freezes (SIGSTOP). A question never asked before, about one of them, is answered within the
    budget from what the proxy has seen (``…; local``), and the SDK parses an answer that holds
    that memory."""
    memu = make_memu()
    extra = {
        "compat": {"fill_null_timestamps": True},
        "cache": {"local_answers": True},
        "latency": {"budget_ms": 500},
    }
    proxy = make_proxy(memu.url, timeout_ms=1000, extra=extra)
    user = uid("alice")
    seed_alice(memu, user)
    client = sdk(proxy.url)

    def seen() -> Any:
        # The first read may miss the budget (and be answered locally, from the listing the proxy
        # fetched on first sight); its fetch goes on and stores memU's own answer, which is what
        # this waits for.
        result = client.api.retrieve_related_memory_items(
            user_id=user, agent_id=AGENT, query="Alice cat Mochi bakery Osaka", top_k=5, min_similarity=0.0
        )
        local = "local" in (client.responses.cache_status or "")
        return result if _sdk_memories(result) and not local else None

    assert len(_sdk_memories(wait_until(seen, timeout=10, what="memU's answer", interval=0.2))) == 2
    memu.freeze()
    try:
        result, elapsed = timed(
            lambda: client.api.retrieve_related_memory_items(
                user_id=user, agent_id=AGENT, query="Which bakery does Alice work at?", top_k=3, min_similarity=0.3
            )
        )
        assert elapsed < 0.5 + MARGIN_S, f"took {elapsed:.2f}s"
        assert client.responses.cache_status == "memu-proxy; fwd=miss; detail=budget; local"
        assert any("bakery" in m.content for m in _sdk_memories(result)), result
    finally:
        memu.thaw()


# ------------------------------------------------------------------------------------------------
# Compat repair


def test_sdk_cannot_parse_nonempty_self_hosted_answers_by_default(
    memu: MemuServer, proxy: Proxy, sdk: Callable[..., SdkClient], uid: Callable[[str], str]
) -> None:
    """Without ``[compat]``, the proxy passes memU's null ``created_at``/``updated_at`` through
    untouched, so the official SDK raises on every non-empty retrieval (memu-api.md §4)."""
    user = uid("alice")
    seed_alice(memu, user)
    client = sdk(proxy.url)
    for name, call in sdk_reads(client, user).items():
        with pytest.raises(MemuValidationException, match="created_at"):
            call()
        assert client.responses.responses[-1].status_code == 200, name


def test_compat_fill_null_timestamps_lets_the_sdk_parse(
    memu: MemuServer,
    make_proxy: Callable[..., Proxy],
    proxy_bin: Path,
    sdk: Callable[..., SdkClient],
    uid: Callable[[str], str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """With ``[compat] fill_null_timestamps = true`` the SDK parses the self-hosted server's
    non-empty retrievals, first from memU and again from the cache: the memories' content is there
    and the nulls were filled from ``happened_at``."""
    compat = {"compat": {"fill_null_timestamps": True}}
    probe = tmp_path / "compat-probe.toml"
    probe.write_text(render_toml(proxy_settings(extra=compat)))
    checked = check_config(proxy_bin, probe)
    if checked.returncode != 0:
        reason = (
            f"proxy rejects [compat] fill_null_timestamps: {(checked.stderr or checked.stdout).strip()[:300]}"
        )
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))

    user = uid("alice")
    seed_alice(memu, user)
    client = sdk(make_proxy(memu.url, extra=compat).url)
    for name, call in sdk_reads(client, user).items():
        for attempt in ("miss", "hit"):
            result = call()
            assert (client.responses.cache_status == "memu-proxy; hit") == (attempt == "hit"), (name, attempt)
            memories = _sdk_memories(result)
            assert memories, (name, attempt)
            assert any("Alice" in m.content for m in memories)
            assert all(m.created_at == m.updated_at == m.happened_at for m in memories)


def _sdk_memories(result: Any) -> list[Any]:
    """The parsed MemoryItems of an SDK retrieval result of any of the three routes."""
    if hasattr(result, "related_memories"):
        return [m.memory for m in result.related_memories]
    categories = getattr(result, "categories", None) or getattr(result, "clustered_categories", None) or []
    return [m for c in categories for m in c.memories or []]
