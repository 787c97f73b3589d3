"""The kopf column of the watchdrop matrix: a namespaced, standalone kopf operator.

Follows the watcher contract in clients/README.md, as far as an operator framework can: settings
come from WATCHDROP_* variables, and every ConfigMap event kopf hands to the operator is printed
as a JSON line on stdout. kopf's own logs go to stderr (kopf.configure's handler), so stdout
carries only the contract's lines.

The operator is what kopf's docs show: an ``@kopf.on.event('', 'v1', 'configmaps')`` handler, run
with ``kopf.run(standalone=True, namespaces=[ns])`` (the same as ``kopf run --standalone
--namespace NS``), logging in from the cell's kubeconfig with ``kopf.login_with_kubeconfig`` in an
``@kopf.on.login()`` handler. kopf's watching settings keep their defaults (server_timeout,
client_timeout and connect_timeout are None; inactivity_timeout is 70 s in this version), so what
is measured is kopf as shipped. Two settings are changed because the watcher's RBAC is only
get/list/watch on ConfigMaps in its namespace, and they are what kopf documents for that case:

- ``settings.scanning.disabled = True``: no cluster-wide list/watch of namespaces and CRDs (kopf
  would only log a 403 warning and carry on, but each attempt is another connection through
  the LB, which would blur the capture);
- ``settings.posting.enabled = False``: no Kubernetes Events are posted for log messages (no
  `create events` permission).

An on.event handler makes kopf neither patch the object nor add finalizers, so nothing else
needs write access. Opt-in variant setting:

- ``WATCHDROP_REQUEST_TIMEOUT=<s>``: ``settings.watching.server_timeout`` and ``client_timeout``,
  the pair kopf's configuration docs describe under "API timeouts" (nolar/kopf#847 is among the
  field reports in docs/facts.md).

kopf gives the operator no hook for "a watch request was sent", and it re-watches silently when a
stream breaks (watching.watch_objs swallows connection errors and its inactivity timeout). So the
watcher wraps kopf's internal streaming call, ``kopf._cogs.clients.api.stream``, to print
``watch-opened`` for each watch request and ``reconnect`` (with how the previous stream ended)
for each one after the first. The wrapper only observes: every argument, item and exception
passes through unchanged. kopf reports none of those stream ends itself, so they are never
printed as ``error``.

idle-request is not implemented: kopf is an operator framework that makes no user-driven
requests, so the watcher says so on stderr and exits 2 (see client.yaml).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import kopf

CLIENT = "kopf"
LIBRARY = "kopf"
STYLES = ("operator",)

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """A WATCHDROP_* setting is missing or malformed, or asks for what kopf cannot do."""


def emit(event: str, **extra: Any) -> None:
    """Print one contract line and flush it at once, so ts stays honest against the pcap."""
    line = {"ts": time.time(), "event": event, **extra}
    sys.stdout.write(json.dumps(line, default=str) + "\n")
    sys.stdout.flush()


def _positive_int(name: str) -> int | None:
    raw = os.environ.get(name, "")
    if raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r}: want a whole number of seconds") from None
    if value < 1:
        raise UsageError(f"{name}={raw!r}: want at least 1")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the runner and the variant pass through the environment."""

    kubeconfig: str | None
    """Path of the cell's kubeconfig; None: kopf's in-cluster service-account login."""
    namespace: str
    style: str
    request_timeout_s: int | None
    """WATCHDROP_REQUEST_TIMEOUT: kopf's watching server_timeout and client_timeout; None: off."""

    @classmethod
    def from_env(cls) -> Settings:
        """Parse and check the environment; raise UsageError on the first problem."""
        env = os.environ
        scenario = env.get("WATCHDROP_SCENARIO", "")
        style = env.get("WATCHDROP_STYLE", "") or STYLES[0]
        namespace = env.get("WATCHDROP_NAMESPACE", "")
        if scenario == "idle-request":
            raise UsageError(
                "WATCHDROP_SCENARIO=idle-request is not supported by the kopf column: kopf is an operator "
                "framework that only lists and watches on its own; it makes no user-driven requests to repeat "
                "after an idle period"
            )
        if scenario != "watch":
            raise UsageError(f"WATCHDROP_SCENARIO={scenario!r}: want 'watch'")
        if style not in STYLES:
            raise UsageError(f"WATCHDROP_STYLE={style!r}: this client implements {list(STYLES)}")
        if not namespace:
            raise UsageError("WATCHDROP_NAMESPACE is not set")
        return cls(
            kubeconfig=env.get("WATCHDROP_KUBECONFIG") or None,
            namespace=namespace,
            style=style,
            request_timeout_s=_positive_int("WATCHDROP_REQUEST_TIMEOUT"),
        )


def _resource_version(url: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get("resourceVersion")
    return values[0] if values else None


def _ended(exc: BaseException | None) -> str:
    """How a watch stream ended, for the next `reconnect` line."""
    if exc is None:
        return "the stream ended"
    if isinstance(exc, asyncio.CancelledError):
        # watching.watch_objs wraps the stream in asyncio.timeout(inactivity_timeout): when it
        # fires, the stream is cancelled and kopf logs the re-watch only at DEBUG level.
        return "the stream was cancelled (kopf's watching.inactivity_timeout)"
    return f"the stream raised {type(exc).__name__}: {exc}"


def observe_watch_requests(original: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Wrap kopf's streaming call so that each watch request it makes is printed.

    Non-watch streams pass straight through. For a watch request: `reconnect` (from the second on,
    with how the previous one ended), then `watch-opened` as the request is sent. Items and
    exceptions are passed on unchanged: kopf decides what to do with them, as it would unwrapped.
    """
    calls = 0
    last_end: str | None = None

    @functools.wraps(original)
    async def stream(url: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        nonlocal calls, last_end
        if "watch=true" not in url:
            async for item in original(url, *args, **kwargs):
                yield item
            return
        calls += 1
        resource_version = _resource_version(url)
        if calls > 1:
            emit("reconnect", reason=f"kopf re-watch from resourceVersion {resource_version} after {last_end}")
        extra: dict[str, Any] = {}
        if resource_version is not None:
            extra["resourceVersion"] = resource_version
        emit("watch-opened", **extra)
        try:
            async for item in original(url, *args, **kwargs):
                yield item
        except BaseException as exc:
            last_end = _ended(exc)
            raise
        last_end = _ended(None)

    return stream


def install_observer() -> None:
    """Put the observing wrapper where kopf's watcher looks the streaming call up at each use."""
    from kopf._cogs.clients import api

    api.stream = observe_watch_requests(api.stream)  # type: ignore[assignment]


def register(cfg: Settings) -> None:
    """Register the operator's handlers with kopf's default registry."""
    timeout = cfg.request_timeout_s
    kubeconfig = cfg.kubeconfig

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.scanning.disabled = True
        settings.posting.enabled = False
        if timeout is not None:
            settings.watching.server_timeout = timeout
            settings.watching.client_timeout = timeout

    @kopf.on.login()
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # kopf's kubeconfig login reads the path from KUBECONFIG, as kubectl does (set in main()).
        if kubeconfig is not None:
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)

    @kopf.on.event("", "v1", "configmaps")
    async def configmap_event(event: dict[str, Any], **_: Any) -> None:
        # `event` is the raw watch event. Objects from kopf's initial listing come with type None
        # (kopf's convention), watch events with ADDED/MODIFIED/DELETED.
        obj = event.get("object") or {}
        metadata_ = obj.get("metadata") or {}
        data = obj.get("data") or {}
        emit(
            "event-seen",
            type=event.get("type"),
            name=metadata_.get("name"),
            value=data.get("value"),
            resourceVersion=metadata_.get("resourceVersion"),
        )


def main() -> int:
    emit(
        "started",
        client=CLIENT,
        library=LIBRARY,
        version=metadata.version(LIBRARY),
        style=os.environ.get("WATCHDROP_STYLE", "") or STYLES[0],
        aiohttp=aiohttp.__version__,
        python=".".join(map(str, sys.version_info[:3])),
    )
    try:
        settings = Settings.from_env()
    except UsageError as exc:
        print(f"kopf watcher: {exc}", file=sys.stderr, flush=True)
        emit("error", message=str(exc))
        return EXIT_USAGE
    if settings.kubeconfig is not None:
        os.environ["KUBECONFIG"] = settings.kubeconfig
    # kopf's log format and level, as `kopf run` sets them; the handler writes to stderr.
    kopf.configure()
    install_observer()
    register(settings)
    # kopf.run handles SIGTERM/SIGINT itself: it stops the operator gracefully and returns.
    try:
        kopf.run(standalone=True, namespaces=[settings.namespace], clusterwide=False)
    except Exception as exc:
        emit("error", message=str(exc) or repr(exc), exception=type(exc).__name__)
        return EXIT_CRASH
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
