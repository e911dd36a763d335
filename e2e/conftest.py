"""Fixtures for the end-to-end suite (the machinery itself lives in support.py).

Session-wide, shared by the tests that leave them healthy: the OpenAI stub (``stub``), the real
memU 0.1.8 server (``memu``) and a default proxy in front of it (``proxy``). Tests that stop,
freeze or reconfigure something build their own with ``make_memu`` / ``make_proxy``; those are
torn down at the end of the test, pass or fail. Every test works on fresh user ids (``uid``), so
the shared cache and memory directory never couple tests.

For the https upstreams: ``test_ca`` (a trustme CA made for this run, whose ``ca_file`` the proxy
is given with ``--upstream-ca-file``), ``server_cert`` (signed by it, valid for 127.0.0.1 and
localhost) and ``other_ca`` (a second CA that signed nothing the servers present). trustme is
imported only by those fixtures, so venvs without it (memu-py 0.2.2) still load this file.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from tls import ServerCert, TestCA

from openai_stub import OpenAIStub, embed
from support import KEY_A, PROCESSES, MemuServer, Proxy, ResponseLog, SdkClient, proxy_settings

REPO = Path(__file__).resolve().parent.parent


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# A CI timeout sends SIGTERM: turn it into KeyboardInterrupt so pytest still runs every teardown.
signal.signal(signal.SIGTERM, _interrupt)
# httpx honours *_proxy variables; nothing here may leave 127.0.0.1.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failure, appends the log tail of every running memU/proxy to the report."""
    report = yield
    if report.failed:
        for process in PROCESSES:
            report.sections.append((f"{process.name} log tail ({process.log_path.name})", process.log_tail()))
    return report


@pytest.fixture(scope="session")
def proxy_bin() -> Path:
    """The proxy binary: ``$MEMU_PROXY_BIN`` (set by scripts/e2e.sh), else cargo's release output."""
    explicit = os.environ.get("MEMU_PROXY_BIN")
    path = (
        Path(explicit)
        if explicit
        else REPO / os.environ.get("CARGO_TARGET_DIR", "target") / "release" / "memu-proxy"
    )
    if not path.is_file():
        pytest.fail(
            f"memu-proxy binary not found at {path}: run scripts/e2e.sh or set MEMU_PROXY_BIN", pytrace=False
        )
    return path


@pytest.fixture(scope="session")
def memu_server_bin() -> Path:
    """The ``memu-server`` console script of the venv running pytest (memu-py 0.1.8)."""
    path = Path(sys.executable).parent / "memu-server"
    if not path.exists():
        pytest.skip(f"no memu-server next to {sys.executable}")
    return path


@pytest.fixture(scope="session")
def stub() -> Iterator[OpenAIStub]:
    """The loopback OpenAI stub every memU instance talks to."""
    server = OpenAIStub().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def memu(
    memu_server_bin: Path, stub: OpenAIStub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MemuServer]:
    """The shared real memU server (never stopped by a test)."""
    server = MemuServer(memu_server_bin, stub.base_url, tmp_path_factory.mktemp("memu"), embed)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def proxy(proxy_bin: Path, memu: MemuServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The shared proxy in front of ``memu``, default configuration (``[upstream] timeout_ms = 2000``)."""
    server = Proxy(proxy_bin, memu.url, tmp_path_factory.mktemp("proxy"), proxy_settings())
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> "TestCA":
    """The CA of this run: it signs ``server_cert``; the proxy trusts it via ``--upstream-ca-file``."""
    from tls import TestCA

    return TestCA(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> "TestCA":
    """Another CA, which signed nothing any server presents (the "wrong CA" scenarios)."""
    from tls import TestCA

    return TestCA(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture(scope="session")
def server_cert(test_ca: "TestCA") -> "ServerCert":
    """A server certificate for 127.0.0.1 and localhost, signed by ``test_ca``."""
    return test_ca.issue_server_cert()


@pytest.fixture
def make_memu(memu_server_bin: Path, stub: OpenAIStub, tmp_path: Path) -> Iterator[Callable[[], MemuServer]]:
    """A factory of private memU servers (for tests that stop, freeze or restart memU)."""
    servers: list[MemuServer] = []

    def make() -> MemuServer:
        server = MemuServer(memu_server_bin, stub.base_url, tmp_path / f"memu-{len(servers)}", embed)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def make_proxy(proxy_bin: Path, tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    """A factory of private proxies:
    ``make_proxy(upstream, timeout_ms=2000, extra={table: {key: v}}, args=[extra CLI args])``."""
    proxies: list[Proxy] = []

    def make(
        upstream: str,
        timeout_ms: int = 2000,
        extra: dict[str, dict[str, Any]] | None = None,
        args: list[str] | None = None,
    ) -> Proxy:
        server = Proxy(proxy_bin, upstream, tmp_path, proxy_settings(timeout_ms, extra), args)
        proxies.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in proxies:
            server.stop()


@pytest.fixture
def sdk() -> Iterator[Callable[..., SdkClient]]:
    """A factory of SDK clients: ``sdk(base_url, api_key=KEY_A, timeout=10.0)``; max_retries=0."""
    from memu import MemuClient

    clients: list[SdkClient] = []

    def make(base_url: str, api_key: str = KEY_A, timeout: float = 10.0) -> SdkClient:
        log = ResponseLog()
        api = MemuClient(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=0,
            event_hooks={"response": [log]},
        )
        clients.append(SdkClient(api, log))
        return clients[-1]

    try:
        yield make
    finally:
        for client in clients:
            client.api.close()


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Fresh, file-name-safe ids for this test: ``uid("alice")`` -> ``alice-<test>-<random>``."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    token = uuid.uuid4().hex[:6]
    return lambda label: f"{label}-{stem}-{token}"
