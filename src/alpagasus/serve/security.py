"""Who may use `alpagasus serve`: an API key, the Host the server answers to, and no cross-origin browser calls.

- The key (`--api-key`, or $ALPAGASUS_SERVE_API_KEY) is checked on every route (`Authorization: Bearer KEY`,
  else 401 in the API's error shape). A server bound to an address other than loopback refuses to start without
  one: anyone on the network could otherwise use the model and read every uploaded file.
- DNS rebinding: a web page can point a name it controls at 127.0.0.1 and then call the server from the
  browser, with that name in `Host`. Requests whose Host is not the address served (127.0.0.1:PORT,
  localhost:PORT, [::1]:PORT, the --host given, or a name given with --allow-host) are refused (403).
- A request carrying an `Origin` (a browser's cross-origin call) is refused (403) unless that origin is the
  server itself; no CORS header is ever sent, so a browser never lets a page read an answer.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from email.message import Message
from typing import Mapping, TypeAlias
from urllib.parse import urlsplit

from alpagasus.errors import UserError
from alpagasus.serve.files import ApiError

# a request's headers: the handler's (an email Message) or a plain mapping (built in code and tests)
Headers: TypeAlias = Mapping[str, str] | Message
KEY_ENV = "ALPAGASUS_SERVE_API_KEY"
WILDCARDS = ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """A UserError when `host` is reachable from the network and no key protects it."""
    if not api_key and not is_loopback(host):
        raise UserError(
            f"--host {host} is reachable from other machines: give an API key (--api-key KEY or "
            f"${KEY_ENV}) that clients send as `Authorization: Bearer KEY` (the openai judge reads "
            "OPENAI_API_KEY), or serve on 127.0.0.1"
        )


def _split(hostport: str) -> tuple[str, int | None]:
    """'name:port' / '[::1]:port' / 'name' -> (lowercased host without brackets, port or None)."""
    try:
        u = urlsplit("//" + hostport)
        return (u.hostname or "").lower(), u.port
    except ValueError:
        return "", -1


@dataclass
class Guard:
    """The checks run on every request before its body is read."""

    host: str  # the address bound
    port: int
    api_key: str | None = None
    allow_hosts: tuple[str, ...] = ()

    def _host_ok(self, host: str, port: int | None) -> bool:
        if (port or 80) != self.port or not host:
            return False
        names = {"127.0.0.1", "localhost", "::1", self.host.lower().strip("[]"), *map(str.lower, self.allow_hosts)}
        if host in names:
            return True
        if self.host in WILDCARDS:  # bound to every interface: any address of this machine, by number
            try:
                ipaddress.ip_address(host)
                return True
            except ValueError:
                return False
        return False

    def check(self, headers: Headers) -> None:
        """Raise the ApiError (400, 401, 403) that refuses a request with these headers."""
        raw_host = headers.get("Host")
        if not raw_host:
            raise ApiError(400, "A Host header is required.", code="missing_host")
        if not self._host_ok(*_split(raw_host.strip())):
            raise ApiError(
                403,
                f"Host {raw_host[:100]!r} is not the address this server answers to (a DNS "
                "rebinding guard); use 127.0.0.1:PORT or start it with --allow-host NAME.",
                "permission_error",
                code="forbidden_host",
            )
        origin = headers.get("Origin")
        if origin is not None:
            u = urlsplit(origin.strip())
            try:
                port = u.port or {"http": 80, "https": 443}.get(u.scheme)
            except ValueError:
                port = None
            if not self._host_ok((u.hostname or "").lower(), port):
                raise ApiError(
                    403,
                    f"Cross-origin requests are refused (Origin {origin[:100]!r}).",
                    "permission_error",
                    code="forbidden_origin",
                )
        if self.api_key:
            auth = headers.get("Authorization") or ""
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
                raise ApiError(
                    401,
                    "Incorrect or missing API key: send `Authorization: Bearer KEY` with the key "
                    "the server was started with.",
                    code="invalid_api_key",
                )
