"""The aiohttp shell around :class:`coordinator.soroban.rpc.LocalRpc`, the local RPC stand-in.

``POST /`` takes Stellar RPC's JSON-RPC requests; ``GET /friendbot?addr=G…`` funds an account the
way testnet's friendbot does. A background task closes a ledger every ``ledger_close_ms``. With
``state_path`` the state is saved as JSON (funded accounts and closed ledgers, replayed on start)
after every funding and every ledger with transactions, after empty ledgers at most once a second,
and on stop. What the stand-in models and what it does not: :mod:`coordinator.soroban.rpc`.

``async with local_soroban() as rpc:`` starts one on a free loopback port for tests and scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from coordinator.errors import ConfigError
from coordinator.soroban.rpc import LOCAL_PASSPHRASE, LocalRpc, RpcError

__all__ = ["LocalSoroban", "local_soroban"]

log = logging.getLogger(__name__)


class LocalSoroban:
    """A running stand-in: ``url`` (JSON-RPC endpoint), ``rpc`` (the core, for test controls)."""

    def __init__(
        self,
        *,
        rpc: LocalRpc,
        ledger_close_ms: int,
        clock: Callable[[], float] = time.time,
        state_path: Path | None = None,
    ) -> None:
        if ledger_close_ms < 10:
            raise ConfigError("must be at least 10", key="ledger_close_ms")
        self.rpc = rpc
        self.ledger_close_ms = ledger_close_ms
        self.clock = clock
        self.state_path = state_path
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._closer: asyncio.Task[None] | None = None
        self._saved_at = time.monotonic()

    def app(self) -> web.Application:
        """The aiohttp application (routes only; no background task)."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/", self._post)
        app.router.add_get("/friendbot", self._friendbot)
        return app

    async def _post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            reply: Any = {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32700, "message": "parse error"},
            }
        else:
            reply = self.rpc.handle(body)
            if isinstance(body, dict) and body.get("method") == "sendTransaction":
                self._save()
        return web.json_response(reply)

    async def _friendbot(self, request: web.Request) -> web.Response:
        try:
            self.rpc.fund(request.query.get("addr", ""))
        except RpcError as err:
            return web.json_response({"status": 400, "detail": err.message}, status=400)
        self._save()
        return web.json_response({"successful": True})

    SAVE_EMPTY_S = 1.0  # empty ledgers are saved at most this often (module docstring)

    def close_ledger(self) -> int:
        """Close one ledger now (also what the timer does). A ledger with transactions is
        saved before this returns; empty ones at most every :attr:`SAVE_EMPTY_S` seconds (the
        state file holds every ledger, so saving each of 20 a second cost more the longer the
        stand-in ran): a crash may forget the last second's empty ledgers, never a
        transaction."""
        seq = self.rpc.close_ledger(int(self.clock()))
        applied = bool(self.rpc.history and self.rpc.history[-1].get("txs"))
        if applied or time.monotonic() - self._saved_at >= self.SAVE_EMPTY_S:
            self._save()
        return seq

    async def _close_ledgers(self) -> None:
        while True:
            await asyncio.sleep(self.ledger_close_ms / 1000)
            self.close_ledger()

    def _save(self) -> None:
        self._saved_at = time.monotonic()
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(self.state_path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.rpc.snapshot()), encoding="utf-8")
        os.replace(tmp, self.state_path)

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = a free port), start closing ledgers; return the URL."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            raise ConfigError(
                f"cannot listen on {host}:{port}: {err.strerror}", key="port"
            ) from err
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{host}:{bound}/"
        self.rpc.friendbot_url = f"http://{host}:{bound}/friendbot"
        self._closer = asyncio.create_task(self._close_ledgers(), name="soroban-local-ledgers")
        return self.url

    async def stop(self) -> None:
        """Stop the ledger timer and the HTTP server; save the state."""
        if self._closer is not None:
            self._closer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._closer
            self._save()
        if self._runner is not None:
            await self._runner.cleanup()

    async def fund(self, account_id: str) -> None:
        """Create ``account_id`` (as friendbot does)."""
        self.rpc.fund(account_id)
        self._save()


def load_rpc(
    *, state_path: Path | None, passphrase: str, clock: Callable[[], float] = time.time
) -> LocalRpc:
    """A fresh core, or the one saved at ``state_path`` (replayed) when that file exists."""
    if state_path is not None and state_path.exists():
        try:
            snapshot = json.loads(state_path.read_text(encoding="utf-8"))
            rpc = LocalRpc.restore(snapshot)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"cannot load {state_path}: {err}", key="state") from err
        if rpc.passphrase != passphrase:
            raise ConfigError(
                f"{state_path} holds network {rpc.passphrase!r}, not {passphrase!r}", key="state"
            )
        return rpc
    return LocalRpc(now=int(clock()), passphrase=passphrase)


@contextlib.asynccontextmanager
async def local_soroban(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ledger_close_ms: int = 100,
    passphrase: str = LOCAL_PASSPHRASE,
    state_path: Path | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[LocalSoroban]:
    """Run the stand-in in-process: ``async with local_soroban() as rpc: rpc.url …``."""
    server = LocalSoroban(
        rpc=load_rpc(state_path=state_path, passphrase=passphrase, clock=clock),
        ledger_close_ms=ledger_close_ms,
        clock=clock,
        state_path=state_path,
    )
    await server.start(host=host, port=port)
    try:
        yield server
    finally:
        await server.stop()
