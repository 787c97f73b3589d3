"""The kubernetes-asyncio column of the watchdrop matrix.

Follows the watcher contract in clients/README.md: settings come from WATCHDROP_* variables, and
what the `kubernetes_asyncio` package did is printed as JSON lines on stdout. The watch is the one
the library's examples show (examples/example2.py): ``await config.load_kube_config(...)``, one
``client.ApiClient()``, and ``async for event in watch.Watch().stream(v1.list_namespaced_config_map,
namespace)`` with library defaults, wrapped in the loop a long-running user program writes (stream
ended: stream again; exception: report it, pause, stream again).

What the library does by default, and so what is measured: no client timeout at all (rest.py
passes an empty ``aiohttp.ClientTimeout()``), no TCP keepalive (aiohttp's client sets none), and
inside one ``stream()`` without ``timeout_seconds`` the library re-watches by itself from the last
resourceVersion when the server ends a watch. Those re-watches show as ``reconnect`` then
``watch-opened``. Nothing else is added unless a variant asks for it:

- ``WATCHDROP_REQUEST_TIMEOUT=<s>``: ``timeout_seconds=<s>`` (the server ends each watch) and
  ``_request_timeout=<s>+10`` (aiohttp's total timeout for the request), the pair the kubernetes
  client docs describe for watches; the user's loop then re-watches after each one. The client's
  is the longer one so that the server's end of the watch, not a race between two equal timers,
  ends each healthy stream.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

CLIENT = "kubernetes-asyncio"
LIBRARY = "kubernetes_asyncio"
STYLES = ("watch",)

#: After an exception the loop waits this long before streaming again. Without it an
#: unreachable API server turns the loop into a busy spin that floods stdout; a user's loop
#: would sleep too. A stream that simply ended is restarted at once, as user code does.
RETRY_PAUSE_S = 1.0

#: WATCHDROP_REQUEST_TIMEOUT: the client's timeout exceeds the server's watch timeout by this much.
#: With equal values both timers fire within milliseconds of each other and which one wins is
#: chance (a read-timeout error or a clean end of stream), so repeated runs disagreed.
CLIENT_TIMEOUT_MARGIN_S = 10

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """A WATCHDROP_* setting is missing or malformed."""


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
    """Path of the cell's kubeconfig; None: in-cluster config (kubernetes backend)."""
    namespace: str
    scenario: str
    """``watch`` or ``idle-request``."""
    style: str
    rounds: int
    """idle-request: number of rounds."""
    idle_s: float
    """idle-request: seconds between the two requests of a round."""
    request_timeout_s: int | None
    """WATCHDROP_REQUEST_TIMEOUT: server-side watch timeout and client request timeout; None: off."""

    @classmethod
    def from_env(cls) -> Settings:
        """Parse and check the environment; raise UsageError on the first problem."""
        env = os.environ
        scenario = env.get("WATCHDROP_SCENARIO", "")
        style = env.get("WATCHDROP_STYLE", "") or STYLES[0]
        namespace = env.get("WATCHDROP_NAMESPACE", "")
        if style not in STYLES:
            raise UsageError(f"WATCHDROP_STYLE={style!r}: this client implements {list(STYLES)}")
        if not namespace:
            raise UsageError("WATCHDROP_NAMESPACE is not set")
        rounds, idle_s = 0, 0.0
        if scenario == "idle-request":
            try:
                rounds = int(env.get("WATCHDROP_ROUNDS", ""))
                idle_s = float(env.get("WATCHDROP_IDLE", ""))
            except ValueError:
                raise UsageError("idle-request needs WATCHDROP_ROUNDS and WATCHDROP_IDLE") from None
            if rounds < 1 or not 0 <= idle_s < float("inf"):
                raise UsageError(f"WATCHDROP_ROUNDS={rounds} WATCHDROP_IDLE={idle_s}: out of range")
        elif scenario != "watch":
            raise UsageError(f"WATCHDROP_SCENARIO={scenario!r}: want 'watch' or 'idle-request'")
        return cls(
            kubeconfig=env.get("WATCHDROP_KUBECONFIG") or None,
            namespace=namespace,
            scenario=scenario,
            style=style,
            rounds=rounds,
            idle_s=idle_s,
            request_timeout_s=_positive_int("WATCHDROP_REQUEST_TIMEOUT"),
        )


def reported_style() -> str:
    """The style for the started line, read before the settings are checked.

    idle-request uses no watch at all, only two list calls.
    """
    if os.environ.get("WATCHDROP_SCENARIO") == "idle-request":
        return "list"
    return os.environ.get("WATCHDROP_STYLE", "") or STYLES[0]


async def load_config(settings: Settings) -> None:
    """Load the credentials into the library's default Configuration, as its README does."""
    if settings.kubeconfig:
        await config.load_kube_config(config_file=settings.kubeconfig)
    else:
        config.load_incluster_config()


def _error_fields(exc: BaseException) -> dict[str, Any]:
    extra: dict[str, Any] = {"message": str(exc) or repr(exc), "exception": type(exc).__name__}
    if isinstance(exc, ApiException) and exc.status:
        extra["status"] = exc.status
    return extra


def _event_seen(event: dict[str, Any]) -> None:
    # raw_object is the object exactly as the server sent it.
    raw = event.get("raw_object") or {}
    metadata_ = raw.get("metadata") or {}
    data = raw.get("data") or {}
    emit(
        "event-seen",
        type=event.get("type"),
        name=metadata_.get("name"),
        value=data.get("value"),
        resourceVersion=metadata_.get("resourceVersion"),
    )


def observed(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap the list coroutine so the watcher sees each watch request the library sends.

    Watch.stream calls it once per watch, including the re-watches it makes on its own after the
    server ended a stream or aiohttp timed out a read, which nothing else would show.
    functools.wraps keeps the docstring that Watch.stream reads (``:rtype:``) to find the event
    type. The call itself is unchanged.
    """
    calls = 0

    @functools.wraps(func)
    async def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        resource_version = kwargs.get("resource_version")
        if calls > 1:
            emit("reconnect", reason=f"library re-watch from resourceVersion {resource_version}")
        response = await func(*args, **kwargs)
        status = getattr(response, "status", None)
        if isinstance(status, int) and 200 <= status <= 299:
            extra: dict[str, Any] = {"status": status}
            if resource_version is not None:
                extra["resourceVersion"] = resource_version
            emit("watch-opened", **extra)
        return response

    return call


def watch_timeouts(request_timeout_s: int | None) -> dict[str, int]:
    """WATCHDROP_REQUEST_TIMEOUT as the stream's keyword arguments (none when unset)."""
    if request_timeout_s is None:
        return {}
    return {"timeout_seconds": request_timeout_s, "_request_timeout": request_timeout_s + CLIENT_TIMEOUT_MARGIN_S}


async def run_watch(v1: client.CoreV1Api, settings: Settings) -> None:
    """Stream ConfigMap events until cancelled, streaming again whenever a stream ends."""
    kwargs: dict[str, Any] = {}
    kwargs.update(watch_timeouts(settings.request_timeout_s))
    w = watch.Watch()
    try:
        while True:
            try:
                async for event in w.stream(observed(v1.list_namespaced_config_map), settings.namespace, **kwargs):
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        _event_seen(event)
            except Exception as exc:  # aiohttp errors and TimeoutError alike
                emit("error", **_error_fields(exc))
                emit("reconnect", reason=f"stream raised {type(exc).__name__}")
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            emit("reconnect", reason="stream ended")
    finally:
        await w.close()


async def run_idle_requests(v1: client.CoreV1Api, settings: Settings) -> None:
    """List twice per round with the idle time between, through the same ApiClient and pool."""
    for round_ in range(1, settings.rounds + 1):
        for request in (1, 2):
            if request == 2:
                await asyncio.sleep(settings.idle_s)
            emit("request-sent", round=round_, request=request)
            try:
                result = await v1.list_namespaced_config_map(settings.namespace)
            except Exception as exc:  # aiohttp errors and TimeoutError alike
                emit("request-done", round=round_, request=request, ok=False, **_error_fields(exc))
                continue
            # The generated method returns only for a 2xx answer (rest.py raises ApiException
            # otherwise), and kube-apiserver answers a successful LIST with 200.
            emit("request-done", round=round_, request=request, ok=True, status=200, items=len(result.items or []))


async def run(settings: Settings) -> int:
    try:
        await load_config(settings)
    except Exception as exc:
        emit("error", **_error_fields(exc))
        return EXIT_CRASH
    # One ApiClient for the whole run, as in the library's examples: its aiohttp session is the
    # pool every request of the run goes through.
    async with client.ApiClient() as api:
        v1 = client.CoreV1Api(api)
        if settings.scenario == "idle-request":
            await run_idle_requests(v1, settings)
        else:
            await run_watch(v1, settings)
    return EXIT_OK


async def main_async() -> int:
    emit(
        "started",
        client=CLIENT,
        library=LIBRARY,
        version=metadata.version(LIBRARY),
        style=reported_style(),
        aiohttp=aiohttp.__version__,
        python=".".join(map(str, sys.version_info[:3])),
    )
    try:
        settings = Settings.from_env()
    except UsageError as exc:
        emit("error", message=str(exc))
        return EXIT_USAGE
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        task.cancel()

    # SIGTERM/SIGINT cancel the main task: the cancellation reaches the read the watch is
    # blocked in, and no `except Exception` in the loop can swallow it.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    try:
        return await run(settings)
    except asyncio.CancelledError:
        if stopped:
            return EXIT_OK
        raise


def main() -> int:
    # Library warnings go to stderr with a timestamp, so the kept stderr can be lined up with
    # the pcap.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(main_async())


if __name__ == "__main__":
    sys.exit(main())
