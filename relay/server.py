"""The relay's WSGI application and its gevent server. No Flask: a route table and the pipeline.

`build_relay()` wires the pieces from settings; `serve()` runs them. gevent must already be patched
by the process entry point (the `switchboard relay` / `up` commands do it first thing).
"""
from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from relay import openapi
from relay.billing import REDIS_DOWN, usage_event
from relay.cipher import Cipher
from relay.config_store import SnapshotHolder
from relay.context import ClientAddresses, RequestContext, Response, json_response, new_request_id
from relay.customer_api import PATHS as CUSTOMER_PATHS
from relay.customer_api import CustomerApi
from relay.egress import Egress, EgressPolicy
from relay.endpoints import ENDPOINTS, GEMINI_ACTIONS
from relay.endpoints.generate import gemini_route, is_gemini_path, list_models
from relay.errors import ANTHROPIC, GEMINI, OPENAI, RelayError
from relay.key_cache import CacheLimits
from relay.logs import REQUEST_ID
from relay.metrics import COUNTERS, counting_redis
from relay.ops_http import CONTENT_TYPE, MetricsAccess, exposition, readiness
from relay.pipeline import Pipeline
from relay.quota import Quota
from relay.resp import Script, connect_pool
from relay.settings import RelaySettings
from relay.telemetry import TELEMETRY, flush_forever
from relay.upstream import UpstreamClient

if TYPE_CHECKING:
    import socket
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from gevent import Greenlet
    from redis import Redis

    from relay.http_server import HttpServer

log = logging.getLogger(__name__)
# The output tokens per choice the relay told the upstream it may write, when the relay set or lowered
# the caller's own limit to what the request's hold pays for (docs/holds.md).
OUTPUT_CAP_HEADER = "X-Switchboard-Max-Tokens"



def read_body(environ: WSGIEnvironment, limit: int) -> bytes:
    """The request body, refused with 413 before reading when Content-Length is over the limit, with
    408 when it arrives too slowly and 400 when it ends early or is malformed (the server's
    `wsgi.input` raises TimeoutError or another OSError)."""
    try:
        return _read(environ, limit)
    except TimeoutError as exc:
        raise RelayError(408, "request_timeout", f"The request body did not arrive in time: {exc}.") from None
    except OSError as exc:
        raise RelayError(400, "incomplete_body", f"The request body could not be read: {exc}.") from None


def _read(environ: WSGIEnvironment, limit: int) -> bytes:
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            raise RelayError(400, "invalid_content_length", "Content-Length is not a number.") from None
        if size > limit:
            raise RelayError(413, "request_too_large", f"The request body is larger than the limit of {limit} bytes.")
        return environ["wsgi.input"].read(size) if size else b""
    body: bytes = environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        raise RelayError(413, "request_too_large", f"The request body is larger than the limit of {limit} bytes.")
    return body


def error_format_for(method: str, path: str, environ: WSGIEnvironment) -> str:
    """The format the caller understands: its endpoint's, and Anthropic's for a model listing
    asked for with `anthropic-version` (the Anthropic SDK sends it on every call)."""
    endpoint = ENDPOINTS.get((method, path)) or next((e for (_, p), e in ENDPOINTS.items() if p == path), None)
    if endpoint is not None:
        return endpoint.error_format
    if is_gemini_path(path, environ):
        return GEMINI
    if environ.get("HTTP_ANTHROPIC_VERSION"):
        return ANTHROPIC
    return OPENAI


def edge_error(status: int, code: str, message: str, path: str) -> bytes:
    """The body of an answer the HTTP server gives by itself (a malformed or slow request, too many
    connections), in the error format of the endpoint the request was for."""
    return RelayError(status, code, message).body(new_request_id(), error_format_for("", path, {}))


def redis_unavailable() -> RelayError:
    """Nothing can be held or settled without Redis: the request is refused before it costs anything.
    Callers are told to come back after a random 1-5 s so that they do not all return at once."""
    return RelayError(503, "service_unavailable", "The gateway is briefly unable to reach its datastore; retry shortly.",
                      retry_after=random.uniform(1, 5), type="server_error")  # jitter, not a secret  # nosec B311


def error_response(error: RelayError, request_id: str, error_format: str) -> Response:
    extra = [("Retry-After", str(max(1, int(round(error.retry_after)))))] if error.retry_after else None
    return json_response(error.status, error.body(request_id, error_format), extra)


class RelayApp:
    """The WSGI callable for /v1/* (and /healthz when the relay runs on its own)."""

    def __init__(self, settings: RelaySettings, holder: SnapshotHolder, pipeline: Pipeline, quota: Quota) -> None:
        self.settings = settings
        self.holder = holder
        self.pipeline = pipeline
        self.quota = quota
        self.customer = CustomerApi(quota.redis, pipeline.authenticate)
        self.started = time.time()
        self.clients = ClientAddresses(settings.trusted_proxies)
        self.metrics_access = MetricsAccess.from_env()
        self.server: HttpServer | None = None  # set by `attach`: its in-flight count and whether it drains

    def attach(self, server: HttpServer) -> None:
        self.server = server

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        COUNTERS.requests += 1
        request_id = new_request_id()
        # Every record logged while this greenlet answers the request carries its id (relay/logs.py);
        # the next request on the connection replaces it.
        REQUEST_ID.set(request_id)
        method: str = environ["REQUEST_METHOD"]
        path: str = environ.get("PATH_INFO") or "/"
        ctx = RequestContext(request_id=request_id, endpoint=path, client_ip=self.clients.of(environ))
        error_format = error_format_for(method, path, environ)
        try:
            response = self.dispatch(ctx, environ, method, path)
        except RelayError as error:
            response = error_response(error, request_id, error_format)
            self._log_refusal(ctx, error)
        except REDIS_DOWN as error:
            log.warning("Redis unavailable for %s %s (%s): %s", method, path, request_id, error)
            response = error_response(redis_unavailable(), request_id, error_format)
        except Exception:
            log.exception("unhandled error in %s %s (%s)", method, path, request_id)
            response = error_response(RelayError(500, "internal_error", "The gateway failed to handle this request."), request_id, error_format)
        request_id = ctx.request_id  # a replayed answer names the request that was charged
        ids = [("X-Request-Id", request_id)]
        if error_format == ANTHROPIC:
            ids.append(("request-id", request_id))  # where the Anthropic SDK looks for it (`_request_id`)
        if ctx.output_cap is not None:
            ids.append((OUTPUT_CAP_HEADER, str(ctx.output_cap)))
        start_response(_status_line(response.status), response.headers + ids)
        return response.body

    def dispatch(self, ctx: RequestContext, environ: WSGIEnvironment, method: str, path: str) -> Response:
        endpoint = ENDPOINTS.get((method, path))
        if endpoint is not None:
            # The body is read only once the caller is known: an unauthenticated upload is never received.
            return self.pipeline.handle(endpoint, ctx, environ, partial(read_body, environ, self.settings.max_body_bytes))
        if is_gemini_path(path, environ):
            return self.gemini(ctx, environ, method, path)
        if path == "/v1/models" and method == "GET":
            return self.pipeline.models(ctx, environ)
        if path in CUSTOMER_PATHS and method == "GET":
            return self.customer.handle(ctx, environ, path, self.holder.current)
        if path in ("/healthz", "/v1/healthz"):
            return self.health()
        if path == "/readyz":
            return self.ready()
        if path == "/metrics" and method == "GET":
            return self.metrics(ctx, environ)
        if path == "/v1/openapi.json" and method == "GET":
            return json_response(200, openapi.document_bytes())
        if any(path == p for (_, p) in ENDPOINTS) or path in ("/v1/models", "/v1/openapi.json") or path in CUSTOMER_PATHS:
            raise RelayError(405, "method_not_allowed", f"{method} is not allowed on {path}.")
        raise RelayError(404, "unknown_url", f"Unknown request URL: {method} {path}.")

    def gemini(self, ctx: RequestContext, environ: WSGIEnvironment, method: str, path: str) -> Response:
        """Gemini's routes, whose paths carry the model: an action on a model, or the model list."""
        route = gemini_route(path, GEMINI_ACTIONS)
        if route is None:
            raise RelayError(404, "unknown_url", f"Unknown request URL: {method} {path}.")
        wanted = "POST" if route.endpoint is not None else "GET"
        if method != wanted:
            raise RelayError(405, "method_not_allowed", f"{method} is not allowed on {path}.")
        ctx.endpoint = route.log_path
        if route.endpoint is None:
            return list_models(self.pipeline, ctx, environ, route.model)
        environ["switchboard.model"] = route.model
        return self.pipeline.handle(route.endpoint, ctx, environ, partial(read_body, environ, self.settings.max_body_bytes))

    def health(self) -> Response:
        snap = self.holder.current
        keys = self.holder.keys
        body = {"status": "ok", "snapshot_version": snap.version, "channels": len(snap.channels), "uptime_s": int(time.time() - self.started),
                "requests": COUNTERS.requests, "redis_round_trips": COUNTERS.redis_round_trips,
                "key_changes_seen": keys.seen or 0, "key_cache": {"entries": len(keys), **vars(keys.stats)}}
        return json_response(200, orjson.dumps(body))

    def ready(self) -> Response:
        """Whether this process should be sent traffic: Redis answers, its snapshot is loaded and
        confirmed current recently, and it is not draining. 503 names what failed."""
        status, body = readiness(self.ready_checks())
        return json_response(status, orjson.dumps(body))

    def ready_checks(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            self.quota.redis.ping()
            checks["redis"] = "ok"
        except Exception as error:
            checks["redis"] = f"unreachable: {type(error).__name__}"
        limit = self.settings.ready_snapshot_max_age
        checked = self.holder.checked_at
        if not self.holder.current.version:
            checks["snapshot"] = "none loaded"
        elif time.time() - checked > limit:
            checks["snapshot"] = f"stale: last confirmed current {time.time() - checked:.0f} s ago (limit {limit:g} s)"
        else:
            checks["snapshot"] = "ok"
        checks["accepting"] = "draining" if self.server is not None and self.server.draining else "ok"
        return checks

    def metrics(self, ctx: RequestContext, environ: WSGIEnvironment) -> Response:
        if not self.metrics_access.allows(environ.get("HTTP_AUTHORIZATION"), ctx.client_ip):
            raise RelayError(404, "unknown_url", "Unknown request URL: GET /metrics.")
        self.flush_metrics()  # this process's latest; the others' are at most a flush interval old
        body = exposition(multiprocess=bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")), extra=lambda: RedisState(self.quota))
        return Response(200, [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))], [body])

    def flush_metrics(self) -> None:
        TELEMETRY.flush(self.holder.current, self.server.in_flight if self.server is not None else None, self.holder.checked_at)

    def _log_refusal(self, ctx: RequestContext, error: RelayError) -> None:
        """Refusals after the key was known are logged without a charge (held requests log themselves)."""
        if ctx.key is None or ctx.held:
            return
        try:
            self.quota.log_only(ctx.key.account_id, usage_event(ctx, error.status, error.code).encode())
        except Exception:
            log.exception("could not log refused request %s", ctx.request_id)


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            413: "Payload Too Large", 429: "Too Many Requests", 499: "Client Closed Request", 500: "Internal Server Error",
            501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Unknown')}"


def build_relay(settings: RelaySettings, redis: Redis[bytes] | None = None) -> RelayApp:
    given_redis = redis is not None
    if redis is None:
        redis = counting_redis(settings.redis_url, max_connections=settings.redis_pool_size, health_check_interval=30)
    if not settings.encryption_key:
        raise RuntimeError("no encryption key: set SWITCHBOARD_ENCRYPTION_KEY or run `switchboard db upgrade` to create one")
    cipher = Cipher(settings.encryption_key)
    holder = SnapshotHolder(redis, cipher.decrypt, settings.snapshot_poll_seconds, CacheLimits(
        settings.key_cache_size, settings.key_cache_ttl, settings.key_negative_cache_size, settings.key_negative_cache_ttl))
    quota = Quota(redis)
    # The per-request scripts (admit, failover, settle) go through the lean RESP client, unless the
    # caller brought its own Redis client (tests that watch every command).
    register: Callable[[str], Callable[..., Any]] | None = None
    if not given_redis:
        scripts = connect_pool(settings.redis_url, settings.redis_pool_size)
        register = lambda text: Script(scripts, text)  # noqa: E731
    if settings.egress_allow:  # an operator's decision worth seeing in every relay's log
        log.warning("upstreams may be in these private ranges (SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS): %s",
                    ", ".join(map(str, settings.egress_allow)))
    upstream = UpstreamClient(settings.upstream_pool_size, egress=Egress(EgressPolicy(settings.egress_allow)),
                              max_response_bytes=settings.max_response_bytes)
    pipeline = Pipeline(settings, holder, quota, upstream, register_script=register)
    return RelayApp(settings, holder, pipeline, quota)


class RedisState:
    """Gauges read from Redis when scraped: the fleet's, so any process gives the same answer."""

    def __init__(self, quota: Quota) -> None:
        self.quota = quota

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("switchboard_relay_redis_up", "Whether Redis answered this scrape")
        try:
            holds = self.quota.open_holds()
        except Exception:
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, GaugeMetricFamily("switchboard_holds_open", "Holds open in Redis (requests in flight on every relay, and any a dead relay left)",
                                      value=holds)]


class Background:
    """A relay process's background greenlets. A process that stops them before it lets go of Redis
    (`up`, which then shuts down its embedded Redis) is not told by them that Redis went away."""

    def __init__(self, holder: SnapshotHolder, greenlets: list[Greenlet]) -> None:
        self.holder = holder
        self.greenlets = greenlets

    def stop(self, timeout: float = 5.0) -> None:
        import gevent

        self.holder.following = False
        gevent.killall(self.greenlets, block=True, timeout=timeout)


def start_follower(app: RelayApp) -> Background:
    """The process's background work: follow the published snapshot, replay journaled settles,
    write metrics (relay/telemetry.py)."""
    import gevent

    app.holder.refresh()
    return Background(app.holder, [gevent.spawn(replay_journals, app.pipeline), gevent.spawn(flush_forever, app.flush_metrics),
                                   gevent.spawn(app.holder.follow)])


JOURNAL_RETRY_SECONDS = 5.0


def replay_journals(pipeline: Pipeline, once: bool = False) -> None:
    """Apply journaled settles (relay/journal.py): the journals of dead processes at start, this
    process's own whenever it has some, until Redis takes them."""
    import gevent

    orphans = True
    while True:
        try:
            if orphans:
                done = pipeline.charges.replay_orphans()
                orphans = False
                if done:
                    log.warning("replayed %d settles from the journals of stopped relay processes", done)
            done = pipeline.charges.replay_own()
            if done:
                log.warning("replayed %d journaled settles", done)
        except Exception as error:  # Redis still away: try again shortly
            log.info("journaled settles wait for Redis: %s", error)
        if once:
            return
        gevent.sleep(JOURNAL_RETRY_SECONDS)


def make_server(listener: tuple[str, int] | socket.socket, wsgi_app: WSGIApplication, settings: RelaySettings | None = None) -> HttpServer:
    """The relay's HTTP server (relay/http_server.py) with the settings' limits: headers and body go
    out together, Nagle off, its own refusals in the endpoints' error formats."""
    from relay.http_server import HttpServer

    settings = settings or RelaySettings(redis_url="", encryption_key=None)
    return HttpServer(listener, wsgi_app, max_body=settings.max_body_bytes, limits=settings.edge,
                      trusted=settings.trusted_proxies, render_error=edge_error)


def serve(settings: RelaySettings) -> None:
    app = build_relay(settings)
    start_follower(app)
    server = make_server((settings.host, settings.port), app, settings)
    log.info("relay listening on %s:%s", settings.host, settings.port)
    server.serve_forever()
