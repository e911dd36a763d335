"""End to end: memu-sdk 1.0's cloud v3 requests, replayed byte for byte, through memu-proxy to an
https v3 stand-in (cloud_standin.py) whose certificate is signed by a CA made for this run.

memu-sdk 1.0 (NevaMind-AI/memU-sdk-py) is not on PyPI (memu-api-next.md §2), so its requests are
replayed as memu-api-next.md §3 captured them from the real SDK: the headers of §3.0
(``Authorization: Bearer``, ``Content-Type: application/json``, ``User-Agent:
memu-python-sdk/1.0.0``, httpx's ``Accept``/``Accept-Encoding``/``Connection``) and the compact,
raw-UTF-8 bodies of §3.1–§3.4, field order included. Every scenario checks that the stand-in got
exactly those bytes through the proxy.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import httpx
import pytest

pytest.importorskip("trustme", reason="the https stand-ins need trustme (scripts/e2e.sh installs it)")

from cloud_standin import V3StandIn  # noqa: E402
from support import Proxy, wait_until  # noqa: E402

KEY = "sk-e2e-v3"
V3 = "/api/v3/memory"
SDK_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "memu-python-sdk/1.0.0",
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
}
EMPTY_RETRIEVE = {"categories": [], "items": [], "resources": [], "next_step_query": None}
EMPTY_CATEGORIES = {"categories": []}
MISS_STORED = "memu-proxy; fwd=miss; stored"
HIT = "memu-proxy; hit"

# The bodies memu-sdk 1.0.0 sent (memu-api-next.md §3.1-§3.3), as bytes.
RETRIEVE_STRING = '{"user_id":"u1","agent_id":"a1","query":"café ☕"}'.encode()
RETRIEVE_MESSAGES = b'{"user_id":"u1","agent_id":"a1","query":[{"role":"user","content":"x"}]}'
CATEGORIES_NO_AGENT = b'{"user_id":"u1"}'
CATEGORIES_WITH_AGENT = b'{"user_id":"u1","agent_id":"a1"}'
MEMORIZE = (
    b'{"user_id":"u1","agent_id":"a1","user_name":"User","agent_name":"Assistant",'
    b'"conversation":[{"role":"user","content":"I like tea"}]}'
)


def sdk_body(**fields: Any) -> bytes:
    """A body as memu-sdk 1.0 with httpx 0.28.1 sends it: compact JSON, raw UTF-8, given order."""
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


class Sdk:
    """memu-sdk 1.0's wire requests (``MemUClient._request``), against ``base_url``."""

    def __init__(self, base_url: str, api_key: str = KEY) -> None:
        headers = {"Authorization": f"Bearer {api_key}", **SDK_HEADERS}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=10.0)

    def post(self, route: str, body: bytes) -> httpx.Response:
        return self.http.post(f"{V3}/{route}", content=body)

    def status(self, task_id: str) -> httpx.Response:
        # No body, Content-Type all the same (§3.4); the id interpolated raw.
        return self.http.get(f"{V3}/memorize/status/{task_id}")

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def v3(server_cert: Any) -> Iterator[V3StandIn]:
    standin = V3StandIn(server_cert).start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def sdk(v3: V3StandIn, make_proxy: Callable[..., Proxy], test_ca: Any) -> Iterator[Sdk]:
    """memu-sdk's requests through a proxy in front of ``v3`` that trusts this run's CA."""
    proxy = make_proxy(v3.url, args=["--upstream-ca-file", str(test_ca.ca_file)])
    client = Sdk(proxy.url)
    try:
        yield client
    finally:
        client.close()


def summaries(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["summary"] for item in response.json()["items"]]


def assert_forwarded(v3: V3StandIn, route: str, body: bytes) -> None:
    """The stand-in's latest request on ``route`` is the SDK's, byte for byte."""
    seen = [s for s in v3.seen if s.route == route][-1]
    assert seen.body == body
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"] == "memu-python-sdk/1.0.0"


# ------------------------------------------------------------------------------------------------
# Scenarios


def test_retrieve_string_query_miss_then_hit(v3: V3StandIn, sdk: Sdk) -> None:
    """The SDK's retrieve with a string query (§3.1's captured body): the stand-in's answer after
    one upstream request that got the SDK's exact bytes; the repeat is a hit, byte-identical, and
    the stand-in is not asked again."""
    v3.add(KEY, "u1", "a1", "Loves a café ☕ every morning")
    v3.add(KEY, "u1", "a1", "Has a cat named Mochi")
    first = sdk.post("retrieve", RETRIEVE_STRING)
    assert summaries(first) == ["Loves a café ☕ every morning"]
    assert first.json()["categories"][0]["name"] == V3StandIn.CATEGORY
    assert first.headers["cache-status"] == MISS_STORED
    assert v3.count("retrieve") == 1
    assert_forwarded(v3, "retrieve", RETRIEVE_STRING)
    assert v3.url.startswith("https://") and v3.tls_handshakes >= 1  # the proxy spoke TLS to it

    second = sdk.post("retrieve", RETRIEVE_STRING)
    assert second.headers["cache-status"] == HIT
    assert second.content == first.content
    assert v3.count("retrieve") == 1


def test_retrieve_message_list_query(v3: V3StandIn, sdk: Sdk) -> None:
    """The SDK's retrieve with a list of messages (§3.1): cached as the whole list, so the same
    list hits, and a list whose earlier turn differs (same last message) is a miss of its own."""
    v3.add(KEY, "u1", "a1", "Favourite letter: x")
    first = sdk.post("retrieve", RETRIEVE_MESSAGES)
    assert summaries(first) == ["Favourite letter: x"]
    assert first.headers["cache-status"] == MISS_STORED
    assert_forwarded(v3, "retrieve", RETRIEVE_MESSAGES)
    again = sdk.post("retrieve", RETRIEVE_MESSAGES)
    assert again.headers["cache-status"] == HIT and again.content == first.content
    assert v3.count("retrieve") == 1

    longer = sdk_body(
        user_id="u1",
        agent_id="a1",
        query=[{"role": "user", "content": "letters"}, {"role": "user", "content": "x"}],
    )
    other = sdk.post("retrieve", longer)
    assert other.headers["cache-status"] == MISS_STORED
    assert summaries(other) == ["Favourite letter: x"]
    assert v3.count("retrieve") == 2
    assert_forwarded(v3, "retrieve", longer)


def test_categories_without_agent_id(v3: V3StandIn, sdk: Sdk) -> None:
    """``list_categories(user_id=...)`` omits ``agent_id`` (§3.2): the user's categories over every
    agent, cached; with the agent id it is another entry."""
    v3.add(KEY, "u1", "a1", "Likes green tea")
    v3.add(KEY, "u1", "a2", "Plays the violin")
    first = sdk.post("categories", CATEGORIES_NO_AGENT)
    assert first.status_code == 200
    [category] = first.json()["categories"]
    assert category["item_count"] == 2 and "violin" in category["summary"]
    assert first.headers["cache-status"] == MISS_STORED
    assert_forwarded(v3, "categories", CATEGORIES_NO_AGENT)
    again = sdk.post("categories", CATEGORIES_NO_AGENT)
    assert again.headers["cache-status"] == HIT and again.content == first.content
    assert v3.count("categories") == 1

    with_agent = sdk.post("categories", CATEGORIES_WITH_AGENT)
    assert with_agent.headers["cache-status"] == MISS_STORED
    assert with_agent.json()["categories"][0]["item_count"] == 1
    assert v3.count("categories") == 2


def test_memorize_status_then_retrieve_shows_the_memory(v3: V3StandIn, sdk: Sdk) -> None:
    """memorize (§3.3's body) reaches the stand-in once and answers its task id; a retrieve made
    while the task is ``PENDING`` is cached without the memory; the status polls (never cached)
    say ``PENDING``, then ``SUCCESS`` once the stand-in finished it, and the next retrieve misses
    and shows "I like tea"."""
    tea = sdk_body(user_id="u1", agent_id="a1", query="tea")
    assert summaries(sdk.post("retrieve", tea)) == []
    assert sdk.post("retrieve", tea).headers["cache-status"] == HIT

    memorized = sdk.post("memorize", MEMORIZE)
    assert memorized.status_code == 200, memorized.text
    task = memorized.json()
    assert task["status"] == "PENDING" and len(task["task_id"]) == 27
    assert v3.count("memorize") == 1
    assert_forwarded(v3, "memorize", MEMORIZE)

    meanwhile = sdk.post("retrieve", tea)
    assert meanwhile.headers["cache-status"] == MISS_STORED  # the memorize invalidated u1
    assert summaries(meanwhile) == []
    assert sdk.post("retrieve", tea).headers["cache-status"] == HIT

    pending = sdk.status(task["task_id"])
    assert pending.status_code == 200 and pending.json()["status"] == "PENDING"
    assert pending.headers["cache-status"] == "memu-proxy; fwd=bypass"
    v3.complete(task["task_id"])
    polls = 1

    def succeeded() -> bool:
        nonlocal polls
        polls += 1
        answer = sdk.status(task["task_id"])
        assert answer.status_code == 200 and answer.headers["cache-status"] == "memu-proxy; fwd=bypass"
        return answer.json()["status"] == "SUCCESS"

    wait_until(succeeded, timeout=10, what="the v3 task SUCCESS through the proxy")
    assert v3.count("status") >= polls  # the proxy polls the task too

    after = sdk.post("retrieve", tea)
    assert after.headers["cache-status"] == MISS_STORED
    assert summaries(after) == ["I like tea"]


def test_memu_down_reads_answer_empty_and_memorize_fails(v3: V3StandIn, sdk: Sdk) -> None:
    """The stand-in stopped: retrieve and categories get HTTP 200 with the empty answers of
    memu-api-next.md §6, memorize gets an honest 5xx (never a faked task)."""
    v3.add(KEY, "u1", "a1", "Loves a café ☕ every morning")
    v3.stop()
    retrieved = sdk.post("retrieve", RETRIEVE_STRING)
    assert retrieved.status_code == 200 and retrieved.json() == EMPTY_RETRIEVE
    assert retrieved.headers["cache-status"] == "memu-proxy; fwd=miss; detail=connect"
    listed = sdk.post("categories", CATEGORIES_NO_AGENT)
    assert listed.status_code == 200 and listed.json() == EMPTY_CATEGORIES
    assert listed.headers["cache-status"] == "memu-proxy; fwd=miss; detail=connect"
    memorized = sdk.post("memorize", MEMORIZE)
    assert memorized.status_code in (502, 503, 504), memorized.text
    assert "task_id" not in memorized.text
    assert v3.count() == 0


def test_wrong_ca_reads_fall_back_and_memorize_gets_502(
    v3: V3StandIn, make_proxy: Callable[..., Proxy], other_ca: Any
) -> None:
    """The proxy trusts another CA than the stand-in's: retrieve and categories get the empty
    answers with ``detail=tls``, memorize gets 502 whose ``detail`` names the certificate problem;
    no route handler of the stand-in saw a request."""
    v3.add(KEY, "u1", "a1", "Loves a café ☕ every morning")
    client = Sdk(make_proxy(v3.url, args=["--upstream-ca-file", str(other_ca.ca_file)]).url)
    try:
        retrieved = client.post("retrieve", RETRIEVE_STRING)
        assert retrieved.status_code == 200 and retrieved.json() == EMPTY_RETRIEVE
        assert retrieved.headers["cache-status"] == "memu-proxy; fwd=miss; detail=tls"
        listed = client.post("categories", CATEGORIES_NO_AGENT)
        assert listed.status_code == 200 and listed.json() == EMPTY_CATEGORIES
        assert listed.headers["cache-status"] == "memu-proxy; fwd=miss; detail=tls"
        memorized = client.post("memorize", MEMORIZE)
        assert memorized.status_code == 502
        assert "certificate" in memorized.json()["detail"].lower(), memorized.text
    finally:
        client.close()
    assert v3.count() == 0 and v3.tls_handshakes == 0
    failures = wait_until(lambda: v3.tls_failures, timeout=5, what="the stand-in seeing failed handshakes")
    assert all("UNKNOWN_CA" in failure for failure in failures), failures  # the proxy's alert
