"""Helpers for the end-to-end suite: managed processes, the real memU server, the proxy, polls.

Everything binds 127.0.0.1. Ports are chosen at run time (bind port 0, read it, close). Every
child runs in its own process group, is registered in ``PROCESSES`` and is killed at interpreter
exit even if a fixture never got to tear it down. Every wait is a bounded poll.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

import httpx

def require_package(package: str, version: str, where: str) -> None:
    """Skips the calling test module unless ``package`` is installed at exactly ``version``: each
    client's scenarios run in the venv that pins it (scripts/e2e.sh), ``where`` names that venv."""
    import importlib.metadata

    import pytest

    try:
        found: str | None = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        found = None
    if found != version:
        pytest.skip(
            f"{package} {version} scenarios need {where} (found {package} {found})",
            allow_module_level=True,
        )


if TYPE_CHECKING:
    from tls import ServerCert

HOST = "127.0.0.1"
KEY_A = "sk-e2e-tenant-a"  # the API key SDK clients use unless a test says otherwise
T = TypeVar("T")

# The headers memu-py's MemuClient sends on every request (memu-api.md §3.0), minus Authorization.
SDK_HEADERS = {
    "User-Agent": "MemU-Python-SDK/0.1.3",
    "Content-Type": "application/json",
    "Accept": "application/json",
}
ROUTES = {
    "items": "/api/v1/memory/retrieve/related-memory-items",
    "default": "/api/v1/memory/retrieve/default-categories",
    "clustered": "/api/v1/memory/retrieve/related-clustered-categories",
    "memorize": "/api/v1/memory/memorize",
}


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Polls ``check`` until it returns a truthy value (exceptions count as "not yet").

    Raises ``TimeoutError`` naming ``what`` and the last exception after ``timeout`` seconds;
    ``ProcessExited`` is never retried.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as error:  # noqa: BLE001 (any other failure means "not ready yet")
            last_error = error
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.1f}s (last error: {last_error!r})")
        time.sleep(interval)


def clean_env(**overrides: str) -> dict[str, str]:
    """The test environment without proxies or memU/OpenAI settings, plus ``overrides``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.startswith(("MEMU_", "OPENAI_"))
    }
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    env.update(overrides)
    return env


# ------------------------------------------------------------------------------------------------
# Processes


PROCESSES: list["ManagedProcess"] = []


class ProcessExited(RuntimeError):
    """A managed process died while it was expected to run."""


class ManagedProcess:
    """A child process in its own process group, logging to a file, stopped with TERM then KILL."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log_path: Path):
        self.name, self.argv, self.env, self.cwd, self.log_path = name, argv, env, cwd, log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        PROCESSES.append(self)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Sends ``sig`` to the whole process group (no-op once it is gone)."""
        if self.popen is not None:
            try:
                os.killpg(self.popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self, grace: float = 5.0) -> None:
        """SIGCONT + SIGTERM, then SIGKILL after ``grace`` seconds; reaps the child."""
        if self.popen is None:
            return
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=5)
        self.signal(signal.SIGKILL)  # any grandchild left in the group
        if self in PROCESSES:
            PROCESSES.remove(self)
        self.popen = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def ensure_alive(self) -> None:
        if not self.alive():
            raise ProcessExited(f"{self.name} exited; log tail:\n{self.log_tail()}")


@atexit.register
def _kill_leftovers() -> None:
    for process in list(PROCESSES):
        process.signal(signal.SIGCONT)
        process.signal(signal.SIGKILL)


def http_status(url: str, timeout: float = 1.0, verify: ssl.SSLContext | bool = True) -> int:
    return httpx.get(url, timeout=timeout, verify=verify).status_code


# ------------------------------------------------------------------------------------------------
# The real memU 0.1.8 server


@dataclass
class Memory:
    """One memory line as memU stores it: ``[id][mentioned at YYYY-MM-DD] text [links]``."""

    memory_id: str
    text: str
    day: str = "2025-01-01"

    @property
    def line(self) -> str:
        return f"[{self.memory_id}][mentioned at {self.day}] {self.text} []"


class MemuServer:
    """The real ``memu-server`` from the venv, on a fixed port for its whole life (restartable).

    With ``tls`` it serves https: its FastAPI app (``memu.server.main:app``, what ``memu-server
    start`` runs) under uvicorn with ``--ssl-certfile``/``--ssl-keyfile``, same environment, same
    access log; ``verify`` is what the health check trusts (the test CA's context).
    """

    def __init__(
        self,
        memu_server_bin: Path,
        openai_base_url: str,
        workdir: Path,
        embed: Callable[[str], list[float]],
        tls: "ServerCert | None" = None,
        verify: ssl.SSLContext | bool = True,
    ):
        self.port = free_port()
        self.memory_dir = workdir / "memory"
        self.embed = embed
        self.tls, self.verify = tls, verify
        cwd = workdir / "cwd"  # the CLI calls load_dotenv() in its working directory: keep it empty
        cwd.mkdir(parents=True, exist_ok=True)
        env = clean_env(
            MEMU_HOST=HOST,
            MEMU_PORT=str(self.port),
            MEMU_MEMORY_DIR=str(self.memory_dir),
            MEMU_LLM_PROVIDER="openai",
            MEMU_ENABLE_EMBEDDINGS="true",
            OPENAI_API_KEY="sk-local",
            OPENAI_BASE_URL=openai_base_url,
        )
        argv = [str(memu_server_bin), "start"]
        if tls is not None:
            self.memory_dir.mkdir(parents=True, exist_ok=True)  # what `memu-server start` does first
            python = memu_server_bin.parent / "python"  # the venv of the console script
            argv = [str(python), "-m", "uvicorn", "memu.server.main:app", "--host", HOST, "--port"]
            argv += [str(self.port), "--log-level", "info"]
            argv += ["--ssl-certfile", str(tls.cert_chain), "--ssl-keyfile", str(tls.key)]
        self.process = ManagedProcess("memu-server", argv, env=env, cwd=cwd, log_path=workdir / "memu.log")

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> "MemuServer":
        """Starts memU and waits until ``GET /health`` answers 200."""
        self.process.start()

        def healthy() -> bool:
            self.process.ensure_alive()
            return http_status(f"{self.url}/health", verify=self.verify) == 200

        wait_until(healthy, timeout=timeout, what=f"memU /health on {self.url}")
        return self

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        """Stops and starts memU again on the same port with the same memory directory."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung memU)."""
        self.process.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.signal(signal.SIGCONT)

    def requests(self, method: str, path: str) -> int:
        """How many ``method path`` requests memU answered (uvicorn's access log, across restarts).

        uvicorn writes the access line before the response bytes, so a client that has its answer
        can count on the line being there.
        """
        marker = f'"{method} {path} HTTP/1.1"'
        return self.process.log_path.read_text(errors="replace").count(marker)

    def seed(
        self,
        agent_id: str,
        user_id: str,
        category: str,
        memories: Iterable[Memory],
        *,
        embeddings: bool = True,
    ) -> None:
        """Writes ``<agent>/<user>/<category>.md`` and, optionally, its embeddings file, as memU does.

        ``profile.md`` feeds default-categories, any non-basic category feeds clustered categories,
        and the embeddings files feed related-memory-items (memu 0.1.8 ``recall_agent.py``).
        """
        memories = list(memories)
        md = self.memory_dir / agent_id / user_id / f"{category}.md"
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text("\n".join(m.line for m in memories), encoding="utf-8")
        if embeddings:
            self._write_embeddings(agent_id, user_id, category, memories)

    def _write_embeddings(self, agent_id: str, user_id: str, category: str, memories: list[Memory]) -> None:
        entries = [
            {
                "item_id": f"{user_id}_{category}_item_{i}",
                "memory_id": m.memory_id,
                "text": m.text,
                "full_line": m.line,
                "embedding": self.embed(m.text),
                "line_number": i + 1,
                "metadata": {
                    "character": user_id,
                    "category": category,
                    "length": len(m.text),
                    "mentioned_at": m.day,
                    "timestamp": datetime.now().isoformat(),
                },
            }
            for i, m in enumerate(memories)
        ]
        path = self.memory_dir / "embeddings" / agent_id / user_id / f"{category}_embeddings.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "category": category,
            "timestamp": datetime.now().isoformat(),
            "embeddings": entries,
            "total_embeddings": len(entries),
        }
        path.write_text(json.dumps(document), encoding="utf-8")

    def activity(self, agent_id: str, user_id: str) -> str:
        """The user's ``activity.md`` as memorize left it ("" if none)."""
        path = self.memory_dir / agent_id / user_id / "activity.md"
        return path.read_text(encoding="utf-8") if path.exists() else ""


# ------------------------------------------------------------------------------------------------
# The proxy


def render_toml(settings: dict[str, dict[str, Any]]) -> str:
    """A tiny TOML writer for ``{table: {key: bool | int | float | str}}``."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return json.dumps(str(v))

    return "".join(
        f"[{table}]\n" + "".join(f"{key} = {value(v)}\n" for key, v in keys.items()) + "\n"
        for table, keys in settings.items()
    )


def proxy_settings(
    timeout_ms: int = 2000, extra: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """The per-fixture ``proxy.toml``: ``[upstream] timeout_ms`` plus any ``extra`` tables/keys."""
    settings: dict[str, dict[str, Any]] = {"upstream": {"timeout_ms": timeout_ms}}
    for table, keys in (extra or {}).items():
        settings.setdefault(table, {}).update(keys)
    return settings


def check_config(binary: Path, config_path: Path) -> subprocess.CompletedProcess[str]:
    """``memu-proxy --check-config --config PATH`` (exit 0 when the configuration is valid)."""
    return subprocess.run(
        [str(binary), "--check-config", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=15,
        env=clean_env(),
    )


class Proxy:
    """The memu-proxy binary in front of ``upstream``, configured by a ``proxy.toml`` of its own
    plus any extra command-line ``args`` (e.g. ``["--upstream-ca-file", path]``)."""

    def __init__(
        self,
        binary: Path,
        upstream: str,
        workdir: Path,
        settings: dict[str, dict[str, Any]],
        args: list[str] | None = None,
    ):
        self.port = free_port()
        self.config_path = workdir / f"proxy-{self.port}.toml"
        self.config_path.write_text(render_toml(settings))
        argv = [
            str(binary),
            "--listen",
            f"{HOST}:{self.port}",
            "--upstream",
            upstream,
            "--config",
            str(self.config_path),
            *(args or []),
        ]
        env = clean_env(RUST_LOG="info", NO_COLOR="1")
        self.process = ManagedProcess(
            "memu-proxy", argv, env=env, cwd=workdir, log_path=workdir / f"proxy-{self.port}.log"
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> "Proxy":
        """Starts the proxy and waits until ``GET /healthz`` answers 200."""
        self.process.start()

        def healthy() -> bool:
            self.process.ensure_alive()
            return http_status(f"{self.url}/healthz") == 200

        wait_until(healthy, timeout=timeout, what=f"proxy /healthz on {self.url}")
        return self

    def stop(self) -> None:
        self.process.stop()

    def metrics(self) -> "Metrics":
        response = httpx.get(f"{self.url}/metrics", timeout=5)
        response.raise_for_status()
        return Metrics(response.text)


_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    """A parsed Prometheus text exposition."""

    text: str
    samples: list[tuple[str, dict[str, str], float]] = field(init=False)

    def __post_init__(self) -> None:
        self.samples = []
        for line in self.text.splitlines():
            match = _SAMPLE.match(line)
            if match and not line.startswith("#"):
                labels = dict(_LABEL.findall(match["labels"] or ""))
                self.samples.append((match["name"], labels, float(match["value"])))

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(v for n, ls, v in self.samples if n == name and labels.items() <= ls.items())

    def requests(self, route_class: str, outcome: str) -> float:
        return self.value("memu_proxy_requests_total", route_class=route_class, outcome=outcome)


# ------------------------------------------------------------------------------------------------
# Clients


class ResponseLog:
    """An httpx response hook that keeps every response's status and headers (for SDK calls)."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def __call__(self, response: httpx.Response) -> None:
        self.responses.append(response)

    @property
    def cache_status(self) -> str:
        """``Cache-Status`` of the latest response ("" if it had none)."""
        return self.responses[-1].headers.get("cache-status", "") if self.responses else ""


@dataclass
class SdkClient:
    """A real ``memu.MemuClient`` (``api``) plus every HTTP response it received (``responses``)."""

    api: Any
    responses: ResponseLog


def post_as_sdk(
    base_url: str, path: str, body: dict[str, Any], api_key: str | None, timeout: float = 10.0
) -> httpx.Response:
    """POSTs ``body`` as MemuClient does (same headers, httpx ``json=``); no auth if ``api_key`` is None."""
    headers = dict(SDK_HEADERS)
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx.post(f"{base_url}{path}", json=body, headers=headers, timeout=timeout)


def is_hit(response: httpx.Response) -> bool:
    return response.headers.get("cache-status", "").startswith("memu-proxy; hit")


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """``call()`` and how long it took, in seconds."""
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start
