"""The front behind the LB emulator: what answers the client in kube-apiserver's place (docs/facts.md, "Fronts").

A profile's `front` decides what the client hears of kube-apiserver's own connection handling:

* `tcp`: HAProxy in TCP mode, as a provider's TCP front end is. kube-apiserver's 3-minute keepalive
  probes end at the front; its closes (the 90 s idle close of a pooled connection) are passed on.
* `http`: HAProxy in HTTP mode, as an L7 front (AKS's of 2025) is: it ends the client's TLS with a
  certificate of the cluster's CA, keeps its own client-side connections (never closed for
  idleness) and its own pool of connections to kube-apiserver, so the server's idle close reaches
  only the front. Requests keep the client's bearer token, which kube-apiserver checks as usual.
* `passthrough`: no front; the LB's DNAT goes straight to kube-apiserver (no config here).

Only the configuration text lives here; runner/embedded/lb.py starts the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.config.matrix import MAX_SECONDS
from runner.config.profiles import Front
from runner.contract import API_PORT

#: Every timeout of the front, in seconds: longer than the longest wait a matrix may ask for, so the
#: front never ends a flow, an idle client connection or a watch by itself; what the client meets
#: is the LB's doing or the server's.
FRONT_TIMEOUT_S = 2 * MAX_SECONDS
FRONT_TIMEOUT = f"{FRONT_TIMEOUT_S}s"
#: The name the front checks on kube-apiserver's certificate (one of the `kubernetes` Service's
#: names, which the embedded cluster's serving certificate always carries).
APISERVER_NAME = "kubernetes.default.svc"


@dataclass(frozen=True)
class FrontTls:
    """What an `http` front needs to end TLS for the client and start it again toward kube-apiserver."""

    #: The front's serving certificate and key in one PEM file (runner/credentials/pki.issue_front).
    cert_pem: Path
    #: The cluster's CA: the front trusts kube-apiserver only under it.
    ca_file: Path


class FrontError(ValueError):
    """A front that cannot be configured as asked."""


def haproxy_config(front: Front, bind: str, target: str, tls: FrontTls | None = None) -> str:
    """HAProxy's whole configuration for a front listening on `bind` and forwarding to `target`
    (both on kube-apiserver's port). `tls` is required for `http` and unused by `tcp`."""
    if front == "tcp":
        return _tcp(bind, target)
    if front == "http":
        if tls is None:
            raise FrontError("an http front needs its serving certificate and the cluster's CA")
        return _http(bind, target, tls)
    raise FrontError(f"front {front!r} runs no proxy")


def _tcp(bind: str, target: str) -> str:
    # No `option clitcpka`: the front sends no TCP keepalive toward clients, like a cloud front end.
    return f"""global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client {FRONT_TIMEOUT}
    timeout server {FRONT_TIMEOUT}
    timeout tunnel {FRONT_TIMEOUT}
frontend api
    bind {bind}:{API_PORT}
    default_backend apiserver
backend apiserver
    server kube-apiserver {target}:{API_PORT}
"""


def _http(bind: str, target: str, tls: FrontTls) -> str:
    # - `timeout http-keep-alive` (and `client`, which HTTP/2 idle connections fall back to) longer
    #   than any scenario: the front never closes an idle client connection itself, so a pooled
    #   connection lives until the LB forgets it, as the seed's AKS capture shows.
    # - No `option http-server-close` / `httpclose`: keep-alive on both sides, each side its own.
    # - `http-reuse always`: the front's backend connections form one pool shared by all clients,
    #   which kube-apiserver's 90 s idle close trims; requests carry their own bearer token, so a
    #   shared connection mixes no identities (client certificates could not be passed on).
    # - `retry-on conn-failure empty-response`: a request sent on a pooled backend connection just as
    #   kube-apiserver closes it is sent again on a new one, as a managed front does; the clients here
    #   only read (list, watch), so a retry repeats no write.
    # - `timeout server`/`tunnel` long: a watch is one long response; it must not be cut for silence.
    # - No `option clitcpka`/`srvtcpka`: no TCP keepalive on either side of the front.
    # - One log line per request to stdout (front.log in the LB's evidence): method, path, status,
    #   times; no header, so no token.
    return f"""global
    maxconn 4096
    log stdout format raw daemon
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client {FRONT_TIMEOUT}
    timeout server {FRONT_TIMEOUT}
    timeout tunnel {FRONT_TIMEOUT}
    timeout http-request {FRONT_TIMEOUT}
    timeout http-keep-alive {FRONT_TIMEOUT}
frontend api
    bind {bind}:{API_PORT} ssl crt {tls.cert_pem} alpn h2,http/1.1
    default_backend apiserver
backend apiserver
    http-reuse always
    retry-on conn-failure empty-response
    server kube-apiserver {target}:{API_PORT} ssl verify required ca-file {tls.ca_file} verifyhost {APISERVER_NAME}
"""
