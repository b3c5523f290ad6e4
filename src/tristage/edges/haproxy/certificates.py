"""Certificates through ACME (the `acme` library certbot is built on) with HTTP-01
challenges, for the HAProxy edge.

- `ChallengeServer`: a small HTTP server on a loopback port; HAProxy sends
  `/.well-known/acme-challenge/*` of its plain HTTP port to it, so the CA's validation
  request is answered with the key authorization of a pending challenge (404 otherwise).
- `AcmeIssuer.issue(host)`: a fresh key, an order for `host`, each HTTP-01 challenge
  answered, the order finalized; returns the chain and the key as one PEM (what HAProxy
  loads). The account key and its registration are kept (0600) in the edge's
  directory, so one account serves every certificate and every run.
- `expires_at(pem)`: when a certificate stops being valid (renewal is due 30 days before).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ...errors import TristageError
from ...paths import private_mkdirs, private_open

RENEW_BEFORE = dt.timedelta(days=30)
ORDER_TIMEOUT = 90  # seconds for the CA to validate and issue
MAX_HEAD = 8192


class AcmeError(TristageError):
    """A certificate could not be obtained."""


class ChallengeServer:
    """token -> key authorization, served at GET /.well-known/acme-challenge/<token>."""

    PREFIX = "/.well-known/acme-challenge/"

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self.port = 0

    def put(self, token: str, validation: str) -> None:
        with self._lock:
            self.tokens[token] = validation

    def drop(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)

    async def start(self, host: str = "127.0.0.1") -> int:
        self._server = await asyncio.start_server(self._handle, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def answer(self, target: str) -> str | None:
        if not target.startswith(self.PREFIX):
            return None
        with self._lock:
            return self.tokens.get(target[len(self.PREFIX) :])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            line = head[:MAX_HEAD].split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            found = self.answer(line[1]) if len(line) == 3 and line[0] == "GET" else None
            body = (found or "").encode()
            status = b"200 OK" if found is not None else b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()


def expires_at(pem: str | bytes) -> dt.datetime:
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificate(data).not_valid_after_utc


def due(pem: str | bytes, now: dt.datetime | None = None) -> bool:
    """Whether a certificate should be renewed now."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        return expires_at(pem) - now < RENEW_BEFORE
    except ValueError:
        return True


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip


class AcmeIssuer:
    def __init__(
        self,
        directory_url: str,
        account_dir: Path,
        challenges: ChallengeServer,
        ca_roots: Iterable[Path] = (),
        email: str | None = None,
    ) -> None:
        self.directory_url = directory_url
        self.account_dir = account_dir
        self.challenges = challenges
        self.email = email
        self.ca_roots = tuple(ca_roots)
        self._client: Any = None
        self._lock = threading.Lock()

    def _verify(self) -> bool | str:
        if not self.ca_roots:
            return True
        bundle = self.account_dir / "ca-roots.pem"
        with private_open(bundle) as f:
            for root in self.ca_roots:
                f.write(root.read_bytes().rstrip(b"\n") + b"\n")
        return str(bundle)

    def _account(self) -> Any:
        """(locked) The ACME client with this edge's account (made on first use)."""
        from acme import client, messages
        from josepy.jwk import JWKRSA

        if self._client is not None:
            return self._client
        private_mkdirs(self.account_dir)
        key_path = self.account_dir / "account-key.pem"
        regr_path = self.account_dir / "account.json"
        if key_path.exists():
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
            assert isinstance(loaded, rsa.RSAPrivateKey)
            key = loaded
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            with private_open(key_path) as f:
                f.write(_key_pem(key))
        jwk = JWKRSA(key=key)
        net = client.ClientNetwork(
            jwk,
            user_agent="tristage",
            verify_ssl=self._verify(),  # type: ignore[arg-type]
        )
        try:
            directory = client.ClientV2.get_directory(self.directory_url, net)
        except Exception as exc:
            raise AcmeError(
                f"the ACME server {self.directory_url} did not answer: {type(exc).__name__}",
                "check --acme-ca (and --acme-ca-root for a private CA)",
            ) from None
        acme = client.ClientV2(directory, net=net)
        regr = None
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            saved = json.loads(regr_path.read_text())
            if saved["directory"] == self.directory_url:
                regr = messages.RegistrationResource.from_json(saved["registration"])
        if regr is None:
            regr = acme.new_account(
                messages.NewRegistration.from_data(email=self.email, terms_of_service_agreed=True)
            )
            record = {"directory": self.directory_url, "registration": regr.to_json()}
            with private_open(regr_path) as f:
                f.write(json.dumps(record).encode())
        net.account = regr
        self._client = acme
        return acme

    def issue(self, host: str) -> str:
        """(thread) A certificate for `host`: the chain and its key, one PEM."""
        from acme import challenges, crypto_util, messages

        with self._lock:
            try:
                acme = self._account()
                key = ec.generate_private_key(ec.SECP256R1())
                key_pem = _key_pem(key)
                csr = crypto_util.make_csr(key_pem, [host])
                order = acme.new_order(csr)
                tokens: list[str] = []
                try:
                    for authz in order.authorizations:
                        if authz.body.status == messages.STATUS_VALID:
                            continue  # validated earlier (the CA reuses it)
                        for chall in authz.body.challenges:
                            if isinstance(chall.chall, challenges.HTTP01):
                                response, validation = chall.response_and_validation(acme.net.key)
                                token = chall.chall.encode("token")
                                self.challenges.put(token, validation)
                                tokens.append(token)
                                acme.answer_challenge(chall, response)
                                break
                    deadline = dt.datetime.now() + dt.timedelta(seconds=ORDER_TIMEOUT)
                    done = acme.poll_and_finalize(order, deadline)
                finally:
                    for token in tokens:
                        self.challenges.drop(token)
            except AcmeError:
                raise
            except Exception as exc:
                raise AcmeError(
                    f"no certificate for {host} from {self.directory_url}: "
                    f"{type(exc).__name__}: {str(exc)[:300]}",
                    "check that the name resolves to this machine and port 80 reaches it",
                ) from None
        chain: str = done.fullchain_pem
        return chain.rstrip("\n") + "\n" + key_pem.decode()
