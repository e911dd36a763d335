"""End to end: the real memu-cli 0.10.0 cloud client (``memu.cloud.CloudMemoryClient``, the v4
API) through memu-proxy to an https v4 stand-in (cloud_standin.py) whose certificate is signed by
a CA made for this run, given to the proxy with ``--upstream-ca-file``.

memu-cli installs a top-level ``memu`` package that collides with memu-py's, so this module runs
only in its own venv (``.venv-e2e-cli``, scripts/e2e.sh) and skips itself elsewhere. The client
is used as a library, as memu-cli's commands use it (``default``/``default`` scope, the tenant is
the API key), with ``base_url=<proxy>/api/v4/memory/``. Its telemetry is off and its config file
is never read; every address is 127.0.0.1.

The client's ``transport`` argument (part of its constructor, used by memu-cli's own tests) wraps
httpx's real transport to record each response's status and ``Cache-Status``; the requests on
the wire are the client's own.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import httpx
import pytest

from support import require_package  # noqa: E402

require_package("memu-cli", "0.10.0", "the .venv-e2e-cli venv")

from memu.cloud import CloudMemoryClient, CloudMemoryError, CloudServiceError  # noqa: E402

from cloud_standin import V4StandIn  # noqa: E402
from support import Proxy, wait_until  # noqa: E402

KEY_A = "sk-e2e-cloud-a"
KEY_B = "sk-e2e-cloud-b"
EMPTY_LIST = {"recall_files": [], "next_cursor": None}
EMPTY_SEARCH = {"segments": [], "files": [], "resources": []}
MISS_STORED = "memu-proxy; fwd=miss; stored"
HIT = "memu-proxy; hit"

# Telemetry off and no ~/.memu/config.env: nothing of memu-cli's may leave 127.0.0.1.
for _name, _value in {"MEMU_TELEMETRY": "0", "MEMU_EVENTS_BASE_URL": "", "DO_NOT_TRACK": "1"}.items():
    os.environ[_name] = _value
os.environ["MEMU_CONFIG_ENV"] = os.devnull
os.environ.pop("MEMU_HTTP_PROXY", None)


# ------------------------------------------------------------------------------------------------
# The client


class RecordingTransport(httpx.AsyncBaseTransport):
    """httpx's real transport, recording every response; a fresh one per client call (the
    client closes its transport when each call's ``AsyncClient`` closes)."""

    def __init__(self, log: list[httpx.Response]) -> None:
        self.log = log
        self._inner: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            self._inner = httpx.AsyncHTTPTransport()
        response = await self._inner.handle_async_request(request)
        self.log.append(response)
        return response

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
            self._inner = None


@dataclass
class Cli:
    """A real ``CloudMemoryClient`` against ``base_url`` and every response it received."""

    base_url: str
    api_key: str
    responses: list[httpx.Response] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = CloudMemoryClient(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=httpx.Timeout(10.0, connect=5.0),
            transport=RecordingTransport(self.responses),
        )

    def list(self) -> dict[str, Any]:
        return asyncio.run(self.client.list_all_recall_files())

    def search(self, query: str) -> dict[str, Any]:
        return asyncio.run(self.client.progressive_retrieve(query))

    def commit(self, *files: dict[str, str]) -> dict[str, Any]:
        return asyncio.run(self.client.commit_results(recall_files=list(files)))

    @property
    def cache_status(self) -> str:
        """``Cache-Status`` of the latest response."""
        return self.responses[-1].headers.get("cache-status", "") if self.responses else ""

    @property
    def statuses(self) -> list[int]:
        return [r.status_code for r in self.responses]


def recall_file(name: str, content: str, track: str = "memory") -> dict[str, str]:
    return {"name": name, "track": track, "description": f"about {name}", "content": content}


def names(answer: dict[str, Any], key: str = "recall_files") -> list[str]:
    return [f["name"] for f in answer[key]]


# ------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def v4(server_cert: Any) -> Iterator[V4StandIn]:
    """An https v4 stand-in with this run's certificate."""
    standin = V4StandIn(server_cert).start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def cli_proxy(v4: V4StandIn, make_proxy: Callable[..., Proxy], test_ca: Any) -> Proxy:
    """A proxy in front of ``v4``, trusting this run's CA."""
    return make_proxy(v4.url, args=["--upstream-ca-file", str(test_ca.ca_file)])


@pytest.fixture
def cli(cli_proxy: Proxy) -> Callable[..., Cli]:
    """``cli(api_key=KEY_A)``: a real memu-cli client through ``cli_proxy``."""
    return lambda api_key=KEY_A: Cli(f"{cli_proxy.url}/api/v4/memory/", api_key)


# ------------------------------------------------------------------------------------------------
# Scenarios


def test_list_is_cached_after_one_upstream_request(v4: V4StandIn, cli: Callable[..., Cli]) -> None:
    """``list_all_recall_files`` through the proxy: the stand-in's page after one GET upstream (the
    client's own slashless URL and query string); the repeat is ``Cache-Status: memu-proxy; hit``,
    equal, and the stand-in is not asked again."""
    v4.put(KEY_A, recall_file("tea", "Prefers oolong tea"), recall_file("cat", "Has a cat named Mochi"))
    client = cli()
    first = client.list()
    assert names(first) == ["cat", "tea"] and first["next_cursor"] is None
    assert client.cache_status == MISS_STORED
    assert v4.count("list") == 1
    assert v4.seen[-1].target == "/api/v4/memory?user_id=default&agent_id=default"
    assert v4.seen[-1].headers["authorization"] == f"Bearer {KEY_A}"
    assert v4.url.startswith("https://") and v4.tls_handshakes >= 1  # the proxy spoke TLS to it

    second = client.list()
    assert client.cache_status == HIT
    assert second == first
    assert v4.count("list") == 1


def test_search_miss_then_hit(v4: V4StandIn, cli: Callable[..., Cli]) -> None:
    """``progressive_retrieve`` through the proxy: the matching file with its score (``segments``
    and ``resources`` empty), one POST upstream; the repeat is a hit and the stand-in is not asked
    again; another query is a miss of its own."""
    v4.put(
        KEY_A,
        recall_file("tea", "Prefers oolong tea, café au lait ☕ on Sundays"),
        recall_file("cat", "Mochi"),
    )
    client = cli()
    first = client.search("oolong café")
    assert names(first, "files") == ["tea"] and first["files"][0]["score"] == 1.0
    assert first["segments"] == [] and first["resources"] == []
    assert client.cache_status == MISS_STORED
    assert v4.count("search") == 1
    assert v4.seen[-1].body == '{"query":"oolong café","user_id":"default","agent_id":"default"}'.encode()

    assert client.search("oolong café") == first
    assert client.cache_status == HIT
    assert v4.count("search") == 1

    assert names(client.search("Mochi"), "files") == ["cat"]
    assert client.cache_status == MISS_STORED
    assert v4.count("search") == 2


def test_commit_invalidates_cached_list_and_search(v4: V4StandIn, cli: Callable[..., Cli]) -> None:
    """A commit through the proxy reaches the stand-in once and answers the committed row; the
    list and the search cached before it are not served again: both miss and show the new file."""
    v4.put(KEY_A, recall_file("cat", "Has a cat named Mochi"))
    client = cli()
    assert names(client.list()) == ["cat"]
    assert client.search("oolong") == EMPTY_SEARCH
    client.list()
    assert client.cache_status == HIT
    client.search("oolong")
    assert client.cache_status == HIT
    assert (v4.count("list"), v4.count("search")) == (1, 1)

    committed = client.commit(recall_file("tea", "Prefers oolong tea"))
    assert names(committed) == ["tea"]
    assert client.statuses[-1] == 200 and client.cache_status == "memu-proxy; fwd=bypass"
    assert v4.count("commit") == 1

    listed = client.list()
    assert client.cache_status == MISS_STORED
    assert names(listed) == ["cat", "tea"]
    found = client.search("oolong")
    assert client.cache_status == MISS_STORED
    assert names(found, "files") == ["tea"]
    assert (v4.count("list"), v4.count("search")) == (2, 2)
    assert client.list() == listed and client.cache_status == HIT


def test_api_keys_never_share_a_cached_list(v4: V4StandIn, cli: Callable[..., Cli]) -> None:
    """Two API keys, both ``default``/``default`` (what every memu-cli command sends): the second
    key's list is a miss answered with its own (empty) files, never the first key's cached page;
    each key's repeat is a hit on its own entry."""
    v4.put(KEY_A, recall_file("tea", "Prefers oolong tea"))
    alice, bob = cli(KEY_A), cli(KEY_B)
    assert names(alice.list()) == ["tea"]
    assert bob.list() == EMPTY_LIST
    assert bob.cache_status == MISS_STORED
    assert v4.count("list") == 2
    assert [s.headers["authorization"] for s in v4.seen] == [f"Bearer {KEY_A}", f"Bearer {KEY_B}"]

    assert names(alice.list()) == ["tea"] and alice.cache_status == HIT
    assert bob.list() == EMPTY_LIST and bob.cache_status == HIT
    assert v4.count("list") == 2


def test_memu_down_reads_are_empty_and_commit_raises(
    v4: V4StandIn, make_proxy: Callable[..., Proxy], test_ca: Any
) -> None:
    """The stand-in stopped: ``list_all_recall_files`` and ``progressive_retrieve`` return the empty
    answers of memu-api-next.md §6 without raising (``Cache-Status`` says why), a commit raises
    after the client's own retries (a 5xx each time: never a faked success). The stand-in back on
    its port, the same proxy serves its answers again."""
    v4.put(KEY_A, recall_file("tea", "Prefers oolong tea"))
    # Five failed upstream attempts open the circuit breaker: let it probe again soon.
    circuit = {"circuit": {"failure_threshold": 5, "cool_down_ms": 300}}
    proxy = make_proxy(v4.url, extra=circuit, args=["--upstream-ca-file", str(test_ca.ca_file)])
    client = Cli(f"{proxy.url}/api/v4/memory/", KEY_A)
    v4.stop()

    assert client.list() == EMPTY_LIST
    assert client.cache_status == "memu-proxy; fwd=miss; detail=connect"
    assert client.search("oolong") == EMPTY_SEARCH
    assert client.cache_status == "memu-proxy; fwd=miss; detail=connect"
    with pytest.raises(CloudMemoryError) as failure:
        client.commit(recall_file("cat", "Has a cat named Mochi"))
    assert failure.value.status_code in (502, 503, 504), failure.value
    assert client.statuses[-3:] == [failure.value.status_code] * 3  # the client retried twice
    assert v4.count() == 0

    v4.start()
    wait_until(
        lambda: names(client.list()) == ["tea"], timeout=15, what="the proxy serving v4 again", interval=0.1
    )
    assert v4.count("list") >= 1


def test_memu_down_a_search_gets_a_local_answer_the_client_parses(
    v4: V4StandIn, make_proxy: Callable[..., Proxy], test_ca: Any
) -> None:
    """With ``cache.local_answers`` on, the recall files listed once through the proxy, then the
    stand-in stopped: a new search gets the file it is about from the proxy's memory mirror
    (``Cache-Status: …; local``), which memu-cli's ``progressive_retrieve`` returns as it does
    memU's own answer (a JSON object, ``files`` with a ``score``, ``segments`` and ``resources``
    empty lists); another API key gets the empty answer."""
    v4.put(KEY_A, recall_file("tea", "Prefers oolong tea"), recall_file("cat", "Has a cat named Mochi"))
    local = {"cache": {"local_answers": True}}
    proxy = make_proxy(v4.url, extra=local, args=["--upstream-ca-file", str(test_ca.ca_file)])
    client = Cli(f"{proxy.url}/api/v4/memory/", KEY_A)
    listed = client.list()
    assert names(listed) == ["cat", "tea"] and client.cache_status == MISS_STORED
    v4.stop()

    found = client.search("What is my cat called?")
    assert client.cache_status == "memu-proxy; fwd=miss; detail=connect; local"
    assert set(found) == set(EMPTY_SEARCH)
    assert names(found, "files") == ["cat"]
    cat = found["files"][0]
    assert 0 < cat.pop("score") <= 1
    assert cat == listed["recall_files"][0]  # the file as memU listed it
    assert found["segments"] == [] and found["resources"] == []

    other = Cli(f"{proxy.url}/api/v4/memory/", KEY_B)
    assert other.search("What is my cat called?") == EMPTY_SEARCH
    assert other.cache_status == "memu-proxy; fwd=miss; detail=connect"


def test_wrong_ca_reads_fall_back_and_writes_fail(
    v4: V4StandIn, make_proxy: Callable[..., Proxy], other_ca: Any
) -> None:
    """The proxy trusts another CA than the one that signed the stand-in's certificate: the reads
    get the empty answers with ``detail=tls`` (the client accepts them), the commit gets 502 and the
    client raises; no route handler of the stand-in saw a request (the proxy abandoned each TLS
    handshake), and the proxy's 502 says why."""
    v4.put(KEY_A, recall_file("tea", "Prefers oolong tea"))
    # Six upstream attempts below: whether or not a rejected certificate counts towards the circuit
    # breaker (5 failures by default), this test is about the answers to the TLS failure itself.
    circuit = {"circuit": {"failure_threshold": 10}}
    proxy = make_proxy(v4.url, extra=circuit, args=["--upstream-ca-file", str(other_ca.ca_file)])
    client = Cli(f"{proxy.url}/api/v4/memory/", KEY_A)

    assert client.list() == EMPTY_LIST
    assert client.cache_status == "memu-proxy; fwd=miss; detail=tls"
    assert client.search("oolong") == EMPTY_SEARCH
    assert client.cache_status == "memu-proxy; fwd=miss; detail=tls"
    with pytest.raises(CloudServiceError) as failure:
        client.commit(recall_file("cat", "Has a cat named Mochi"))
    assert failure.value.status_code == 502
    assert client.statuses[-3:] == [502, 502, 502]

    direct = httpx.post(
        f"{proxy.url}/api/v4/memory",
        json={"user": {"user_id": "default", "agent_id": "default"}, "recall_files": [], "resource": []},
        headers={"Authorization": f"Bearer {KEY_A}"},
        timeout=10,
    )
    assert direct.status_code == 502
    assert "certificate" in direct.json()["detail"].lower(), direct.text
    assert v4.count() == 0 and v4.tls_handshakes == 0
    failures = wait_until(lambda: v4.tls_failures, timeout=5, what="the stand-in seeing failed handshakes")
    assert all("UNKNOWN_CA" in failure for failure in failures), failures  # the proxy's alert
