"""The homes' HTTP API (aiohttp), authenticated per home with a bearer token from the config.

Every request carries ``Authorization: Bearer <token>``; the token names the home. Bodies and
answers are JSON; integers only (Wh, ticks per kWh, µticks, ms). Errors answer
``{"error": "..."}`` with 400 (bad input), 401 (no or unknown token), 404, 409.

========  ======================  ========================================================
POST      /v1/orders              ``{"side","wh","price","interval"?}`` -> 201 ``{"id",...}``
DELETE    /v1/orders/{id}         cancel the unfilled rest -> 200
GET       /v1/orders              the home's orders (intervals not yet pruned), their state
GET       /v1/trades              settled trades (ledger) and trades awaiting their lock
GET       /v1/meter               the home's meter: capacity, reserve, locks, last telemetry
GET       /v1/statement           totals: bought, sold, paid, received, yield, carbon
PUT       /v1/policy              standing policies (``sell_above_bp``, ``sell_price``,
                                  ``buy_below_bp``, ``buy_price``; null clears)
GET       /v1/status              gateway status: log position, reference price, refusals
========  ======================  ========================================================

A placed order is in the fsynced order log before the 201 is sent.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge.gateway.core import OrderRejected

if TYPE_CHECKING:
    from edge.gateway.service import GatewayService

__all__ = ["make_app"]

SERVICE: web.AppKey[GatewayService] = web.AppKey("service")
HOMES_BY_TOKEN: web.AppKey[dict[bytes, str]] = web.AppKey("homes_by_token")
_POLICY_FIELDS = ("sell_above_bp", "sell_price", "buy_below_bp", "buy_price")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _home(request: web.Request) -> str:
    """The home whose bearer token the request carries, or 401.

    Tokens are looked up by their SHA-256 digest: one dict lookup whatever the number of homes,
    and what the lookup's timing could reveal is a digest, which says nothing usable about a
    token (a linear scan of ``compare_digest`` over 500 homes cost ~0.2 ms a request)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        found = request.app[HOMES_BY_TOKEN].get(_token_digest(token.strip()))
        if found is not None:
            return found
    raise web.HTTPUnauthorized(
        text=json.dumps({"error": "missing or unknown bearer token"}),
        content_type="application/json",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return body


async def place(request: web.Request) -> web.Response:
    home = _home(request)
    body = await _json(request)
    unknown = sorted(set(body) - {"side", "wh", "price", "interval"})
    if unknown:
        return _error(400, f"unknown field {unknown[0]!r}")
    service = request.app[SERVICE]
    arrived = time.perf_counter()
    try:
        order_id, effects = service.core.place(
            home=home,
            side=body.get("side"),  # type: ignore[arg-type]
            wh=body.get("wh"),  # type: ignore[arg-type]
            price=body.get("price"),  # type: ignore[arg-type]
            interval=body.get("interval"),
            now=service.clock(),
        )
    except OrderRejected as err:
        return _error(err.status, str(err))
    service.order_arrival[order_id] = arrived
    if len(service.order_arrival) > 10_000:
        del service.order_arrival[next(iter(service.order_arrival))]
    await service.perform(effects)  # the order is fsynced in the log when this returns
    state = next((o for o in service.core.orders_of(home) if o["id"] == order_id), None)
    return web.json_response(state or {"id": order_id, "status": "queued"}, status=201)


async def cancel(request: web.Request) -> web.Response:
    home = _home(request)
    service = request.app[SERVICE]
    order_id = request.match_info["order_id"]
    try:
        effects = service.core.cancel(home=home, order_id=order_id, now=service.clock())
    except OrderRejected as err:
        return _error(err.status, str(err))
    await service.perform(effects)
    state = next(o for o in service.core.orders_of(home) if o["id"] == order_id)
    return web.json_response(state)


async def list_orders(request: web.Request) -> web.Response:
    home = _home(request)
    return web.json_response({"orders": request.app[SERVICE].core.orders_of(home)})


async def list_trades(request: web.Request) -> web.Response:
    home = _home(request)
    service = request.app[SERVICE]
    return web.json_response(
        {
            "trades": await service.disk(service.ledger.trades_of, home),
            "locking": service.core.pending_of(home),
        }
    )


async def meter(request: web.Request) -> web.Response:
    home = _home(request)
    state = request.app[SERVICE].core.meter_state(home)
    if state is None:
        return _error(404, "this home has no registered meter")
    return web.json_response(state)


async def statement(request: web.Request) -> web.Response:
    home = _home(request)
    service = request.app[SERVICE]
    statement = await service.disk(service.ledger.statement, home)
    return web.json_response({"home": home, **statement})


async def policy(request: web.Request) -> web.Response:
    home = _home(request)
    body = await _json(request)
    unknown = sorted(set(body) - set(_POLICY_FIELDS))
    if unknown:
        return _error(400, f"unknown field {unknown[0]!r}")
    for name, value in body.items():
        if value is not None and (type(value) is not int or value < 0):
            return _error(400, f"{name} must be a non-negative integer or null")
        if name.endswith("_bp") and value is not None and value > 10_000:
            return _error(400, f"{name} must be at most 10000")
    service = request.app[SERVICE]
    current = service.core.homes[home]
    merged = {name: body.get(name, getattr(current, name)) for name in _POLICY_FIELDS}
    if (merged["sell_above_bp"] is None) != (merged["sell_price"] is None) or (
        merged["buy_below_bp"] is None
    ) != (merged["buy_price"] is None):
        return _error(400, "set a policy's threshold and price together")
    service.core.set_policy(home, **merged)
    return web.json_response({"home": home, **merged})


async def status(request: web.Request) -> web.Response:
    _home(request)
    service = request.app[SERVICE]
    latencies = sorted(service.lock_latency)
    return web.json_response(
        {
            **service.core.status(),
            "order_to_lock_ms": {
                "n": len(latencies),
                "p50": latencies[len(latencies) // 2] if latencies else None,
                "p99": latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)]
                if latencies
                else None,
            },
            "outbox": await service.disk(service.ledger.outbox_count),
            "uploads": service.uploads,
            "mqtt_connected": service.mqtt_connected.is_set(),
        }
    )


def make_app(service: GatewayService) -> web.Application:
    """The aiohttp application serving ``service``."""
    app = web.Application(client_max_size=64 * 1024)
    app[SERVICE] = service
    app[HOMES_BY_TOKEN] = {_token_digest(h.token): h.id for h in service.config.homes}
    app.add_routes(
        [
            web.post("/v1/orders", place),
            web.delete("/v1/orders/{order_id}", cancel),
            web.get("/v1/orders", list_orders),
            web.get("/v1/trades", list_trades),
            web.get("/v1/meter", meter),
            web.get("/v1/statement", statement),
            web.put("/v1/policy", policy),
            web.get("/v1/status", status),
        ]
    )
    return app
