"""Test certificate authorities for the https upstreams of the end-to-end suite (``trustme``).

Each CA is made when the tests run, in memory, and written to a directory of its own so the proxy
can be given it with ``--upstream-ca-file``. Server certificates are valid for ``127.0.0.1`` and
``localhost`` (the proxy always verifies the host name). Nothing here touches the system's roots.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

# The names every server certificate is valid for: the upstream URLs use 127.0.0.1.
SERVER_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class ServerCert:
    """A server's certificate chain and key as PEM files (what uvicorn's ``ssl_*file`` want)."""

    cert_chain: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting this certificate (TLS 1.2 and up)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_chain, self.key)
        return context


class TestCA:
    """A fresh trustme CA whose root certificate is ``ca_file`` (PEM)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        self._issued = 0

    def issue_server_cert(self) -> ServerCert:
        """A new leaf certificate for :data:`SERVER_NAMES`, signed by this CA."""
        self._issued += 1
        leaf = self._ca.issue_cert(*SERVER_NAMES)
        chain = self.directory / f"server-{self._issued}.pem"
        key = self.directory / f"server-{self._issued}.key"
        chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return ServerCert(chain, key)

    def client_context(self) -> ssl.SSLContext:
        """A client-side context trusting only this CA (for the tests' own direct requests)."""
        return ssl.create_default_context(cafile=str(self.ca_file))
