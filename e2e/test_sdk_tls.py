"""End to end over https: the real memu-py 0.1.8 SDK through memu-proxy to the real memU 0.1.8
server serving TLS (its FastAPI app under uvicorn with ``--ssl-certfile``/``--ssl-keyfile``), with
a certificate signed by a CA made for this run; the proxy trusts that CA through its
``[upstream] ca_file`` setting, or, in the wrong-CA scenario, through ``--upstream-ca-file``
naming another CA. Runs in the Python 3.11 venv, like test_sdk.py.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from support import require_package  # noqa: E402

require_package("memu-py", "0.1.8", "the Python 3.11 venv")

from memu.sdk.python.exceptions import MemuAPIException  # noqa: E402

from openai_stub import OpenAIStub, embed  # noqa: E402
from support import ROUTES, MemuServer, Proxy, SdkClient, wait_until  # noqa: E402

AGENT = "mao"
MISS_STORED = "memu-proxy; fwd=miss; stored"
HIT = "memu-proxy; hit"
# The SDK cannot parse the self-hosted server's non-empty retrievals without this (test_sdk.py).
COMPAT = {"compat": {"fill_null_timestamps": True}}


@pytest.fixture(scope="module")
def https_memu(
    memu_server_bin: Any,
    stub: OpenAIStub,
    server_cert: Any,
    test_ca: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MemuServer]:
    """The real memU 0.1.8 serving https with this run's certificate."""
    workdir = tmp_path_factory.mktemp("memu-https")
    verify = test_ca.client_context()  # the health check trusts this run's CA only
    server = MemuServer(memu_server_bin, stub.base_url, workdir, embed, tls=server_cert, verify=verify)
    try:
        yield server.start()
    finally:
        server.stop()


def memorize(client: SdkClient, user: str, text: str) -> str:
    task = client.api.memorize_conversation(
        [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted!"}],
        user_id=user,
        user_name="Alice",
        agent_id=AGENT,
        agent_name="Mao",
    )
    assert task.task_id and task.status == "PENDING"
    return task.task_id


def related(client: SdkClient, user: str) -> list[str]:
    result = client.api.retrieve_related_memory_items(
        user_id=user, agent_id=AGENT, query="Does Alice have a black cat?", top_k=3, min_similarity=0.3
    )
    return [m.memory.content for m in result.related_memories]


def test_sdk_memorize_and_retrieve_through_proxy_to_https_memu(
    https_memu: MemuServer,
    make_proxy: Callable[..., Proxy],
    sdk: Callable[..., SdkClient],
    test_ca: Any,
    uid: Callable[[str], str],
) -> None:
    """memorize through the proxy reaches memU over https once; its status polled through the proxy
    reaches SUCCESS; the retrieval then shows the memory (a miss, forwarded over https), and its
    repeat is ``Cache-Status: memu-proxy; hit`` without a request to memU."""
    assert https_memu.url.startswith("https://")
    upstream = {"upstream": {"ca_file": str(test_ca.ca_file)}}
    client = sdk(make_proxy(https_memu.url, extra={**upstream, **COMPAT}).url)
    user = uid("alice")

    posted = https_memu.requests("POST", ROUTES["memorize"])
    task_id = memorize(client, user, "Alice loves her black cat named Mochi")
    assert https_memu.requests("POST", ROUTES["memorize"]) == posted + 1

    def finished() -> str | None:
        status = client.api.get_task_status(task_id).status
        return status if status in ("SUCCESS", "FAILURE") else None

    assert wait_until(finished, timeout=20, what=f"memorize task {task_id}", interval=0.1) == "SUCCESS"
    assert "Alice loves her black cat named Mochi" in https_memu.activity(AGENT, user)

    asked = https_memu.requests("POST", ROUTES["items"])
    first = related(client, user)
    assert any("Mochi" in text for text in first), first
    assert client.responses.cache_status == MISS_STORED
    assert https_memu.requests("POST", ROUTES["items"]) == asked + 1
    assert related(client, user) == first
    assert client.responses.cache_status == HIT
    assert https_memu.requests("POST", ROUTES["items"]) == asked + 1


def test_wrong_ca_sdk_gets_empty_retrievals_and_memorize_raises(
    https_memu: MemuServer,
    make_proxy: Callable[..., Proxy],
    sdk: Callable[..., SdkClient],
    other_ca: Any,
    uid: Callable[[str], str],
) -> None:
    """The proxy trusts another CA than the one that signed memU's certificate: the SDK's retrieval
    parses as empty (``detail=tls``), its memorize raises on a 502; memU answered nothing."""
    client = sdk(make_proxy(https_memu.url, args=["--upstream-ca-file", str(other_ca.ca_file)]).url)
    user = uid("alice")
    items, posted = (
        https_memu.requests("POST", ROUTES["items"]),
        https_memu.requests("POST", ROUTES["memorize"]),
    )

    assert related(client, user) == []
    assert client.responses.cache_status == "memu-proxy; fwd=miss; detail=tls"
    with pytest.raises(MemuAPIException) as failure:
        memorize(client, user, "Alice bought a scratching post")
    assert failure.value.status_code == 502
    assert https_memu.requests("POST", ROUTES["items"]) == items
    assert https_memu.requests("POST", ROUTES["memorize"]) == posted
