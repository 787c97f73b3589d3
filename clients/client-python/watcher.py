"""The client-python column of the watchdrop matrix.

Follows the watcher contract in clients/README.md: settings come from WATCHDROP_* variables, and
what the official `kubernetes` package did is printed as JSON lines on stdout. The watch is the
one the library's README shows: ``watch.Watch().stream(v1.list_namespaced_config_map, ...)``
with library defaults, wrapped in the loop a long-running user program writes (stream ended:
stream again; exception: report it and stream again). Nothing else is added unless a variant
asks for it through one of these settings:

- ``WATCHDROP_TCP_KEEPALIVE=<idle s>``: TCP keepalive on the library's sockets, set the way the
  library documents it (``Configuration.socket_options``; kubernetes-client/python#2067, #2693).
- ``WATCHDROP_REQUEST_TIMEOUT=<s>``: ``timeout_seconds=<s>`` (the server ends each watch) and
  ``_request_timeout=<s>+10`` (the client gives up a silent read), the pair the library's
  examples/watch/timeout-settings.md describes. The client's is the longer one so that the
  server's end of the watch, not a race between two equal timers, ends each healthy stream; the
  read timeout stays the backstop for a stream that went silent.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from types import FrameType
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

CLIENT = "client-python"
LIBRARY = "kubernetes"
STYLES = ("watch",)

#: After an exception the loop waits this long before streaming again. Without it an
#: unreachable API server turns the loop into a busy spin that floods stdout; a user's loop
#: would sleep too. A stream that simply ended is restarted at once, as user code does.
RETRY_PAUSE_S = 1.0

#: WATCHDROP_REQUEST_TIMEOUT: the client's timeout exceeds the server's watch timeout by this much.
#: With equal values both timers fire within milliseconds of each other and which one wins is
#: chance (a read-timeout error or a clean end of stream), so repeated runs disagreed.
CLIENT_TIMEOUT_MARGIN_S = 10

#: Probe interval and count for WATCHDROP_TCP_KEEPALIVE: the defaults of the library's own
#: helper (kubernetes.utils.keepalive), which copies what client-go gets from Go on Linux.
KEEPALIVE_INTERVAL_S = 15
KEEPALIVE_COUNT = 9

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USAGE = 2


class Stopped(BaseException):
    """Raised by the SIGTERM/SIGINT handler.

    A BaseException, so that neither the reconnect loop's ``except Exception`` nor the library's
    own error handling can swallow it, and it interrupts a read blocked in the socket.
    """


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
    tcp_keepalive_idle_s: int | None
    """WATCHDROP_TCP_KEEPALIVE: seconds of idle before the first keepalive probe; None: off."""
    request_timeout_s: int | None
    """WATCHDROP_REQUEST_TIMEOUT: server-side watch timeout and client read timeout; None: off."""

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
            tcp_keepalive_idle_s=_positive_int("WATCHDROP_TCP_KEEPALIVE"),
            request_timeout_s=_positive_int("WATCHDROP_REQUEST_TIMEOUT"),
        )


def reported_style() -> str:
    """The style for the started line, read before the settings are checked.

    idle-request uses no watch at all, only two list calls.
    """
    if os.environ.get("WATCHDROP_SCENARIO") == "idle-request":
        return "list"
    return os.environ.get("WATCHDROP_STYLE", "") or STYLES[0]


def keepalive_socket_options(idle_s: int) -> list[tuple[int, int, int]]:
    """Socket options that turn TCP keepalive on, as the library documents it.

    kubernetes 37 ships the helper (Configuration.keep_alive uses it with a fixed 30 s idle; the
    variant picks its own idle, so the helper is called directly). Older pins, which a variant's
    build_env may choose, lack it: then the same list is built by hand as #2067 describes,
    starting from urllib3's defaults because urllib3 replaces them rather than merging.
    """
    try:
        from kubernetes.utils.keepalive import tcp_keepalive_socket_options
    except ImportError:
        return [
            *urllib3.connection.HTTPConnection.default_socket_options,
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT),
        ]
    return list(tcp_keepalive_socket_options(idle=idle_s, interval=KEEPALIVE_INTERVAL_S, count=KEEPALIVE_COUNT))


def build_api(settings: Settings) -> client.CoreV1Api:
    """Load the credentials and make the one CoreV1Api every request of the run goes through."""
    if settings.kubeconfig:
        config.load_kube_config(config_file=settings.kubeconfig)
    else:
        config.load_incluster_config()
    if settings.tcp_keepalive_idle_s is None:
        return client.CoreV1Api()  # the README's way: the default configuration just loaded
    configuration = client.Configuration.get_default_copy()
    configuration.socket_options = keepalive_socket_options(settings.tcp_keepalive_idle_s)
    return client.CoreV1Api(client.ApiClient(configuration))


def _error(exc: BaseException) -> None:
    extra: dict[str, Any] = {"message": str(exc), "exception": type(exc).__name__}
    if isinstance(exc, ApiException) and exc.status:
        extra["status"] = exc.status
    emit("error", **extra)


def _event_seen(event: dict[str, Any]) -> None:
    # raw_object is the object exactly as the server sent it, the same in every library version.
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


def _observed(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap the list function so the watcher sees each watch request the library sends.

    Watch.stream calls it once per watch, including the re-watches it makes on its own after the
    server ended a stream, which nothing else would show. functools.wraps keeps the signature
    and docstring that Watch.stream reads to find the return type. The call itself is unchanged.
    """
    calls = 0

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        resource_version = kwargs.get("resource_version")
        if calls > 1:
            emit("reconnect", reason=f"library re-watch from resourceVersion {resource_version}")
        response = func(*args, **kwargs)
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


def run_watch(v1: client.CoreV1Api, settings: Settings) -> None:
    """Stream ConfigMap events until SIGTERM, streaming again whenever a stream ends."""
    kwargs: dict[str, Any] = {"namespace": settings.namespace}
    kwargs.update(watch_timeouts(settings.request_timeout_s))
    w = watch.Watch()
    while True:
        try:
            for event in w.stream(_observed(v1.list_namespaced_config_map), **kwargs):
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    _event_seen(event)
        except Exception as exc:
            _error(exc)
            emit("reconnect", reason=f"stream raised {type(exc).__name__}")
            time.sleep(RETRY_PAUSE_S)
            continue
        emit("reconnect", reason="stream ended")


def run_idle_requests(v1: client.CoreV1Api, settings: Settings) -> None:
    """List twice per round with the idle time between, through the same ApiClient and pool."""
    for round_ in range(1, settings.rounds + 1):
        for request in (1, 2):
            if request == 2:
                time.sleep(settings.idle_s)
            emit("request-sent", round=round_, request=request)
            try:
                result = v1.list_namespaced_config_map(namespace=settings.namespace)
            except Exception as exc:
                extra: dict[str, Any] = {"message": str(exc), "exception": type(exc).__name__}
                if isinstance(exc, ApiException) and exc.status:
                    extra["status"] = exc.status
                emit("request-done", round=round_, request=request, ok=False, **extra)
                continue
            # The generated method returns only for a 2xx answer, and kube-apiserver answers a
            # successful LIST with 200.
            emit("request-done", round=round_, request=request, ok=True, status=200, items=len(result.items or []))


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def main() -> int:
    # Library warnings (urllib3's "Retrying ..." among them) go to stderr with a timestamp, so
    # the kept stderr can be lined up with the pcap.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        emit(
            "started",
            client=CLIENT,
            library=LIBRARY,
            version=metadata.version(LIBRARY),
            style=reported_style(),
            urllib3=urllib3.__version__,
            python=".".join(map(str, sys.version_info[:3])),
        )
        try:
            settings = Settings.from_env()
        except UsageError as exc:
            emit("error", message=str(exc))
            return EXIT_USAGE
        try:
            v1 = build_api(settings)
        except Exception as exc:
            _error(exc)
            return EXIT_CRASH
        if settings.scenario == "idle-request":
            run_idle_requests(v1, settings)
        else:
            run_watch(v1, settings)
    except Stopped:
        return EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
