"""The coordinator's HTTP service (aiohttp) over its SQLite store, anchoring in the background.

Endpoints (JSON; docs/coordinator.md has the shapes):

- ``POST /batches``: a gateway uploads a sealed batch, its canonical bytes as the body
  (edge.gateway's outbox: ``Content-Type: application/json``, ``Idempotency-Key:
  <gateway>:<seq>``). Answers ``200`` accepted, ``202`` held (a batch before it is missing;
  verified when the gap fills), ``422`` refused (findings say why), ``403`` unknown gateway,
  ``400`` not a batch, ``413`` too large. The same bytes again get the same answer from the
  store and are never verified or anchored twice.
- ``GET /batches/{gateway}/{seq}``: a batch's status, findings and anchoring.
- ``GET /receipts/{gateway}/{trade}``: a trade's receipt: the trade record, its RFC 6962
  inclusion path to the batch's Merkle root, the signed header (which holds that root), the
  header's hash (the value anchored on Soroban) and the anchoring transaction and ledger.
- ``GET /anomalies?after=ID&limit=N&gateway=G``: forks, refused batches, cross-gateway trades,
  refused registrations and anchorings.
- ``POST /gateways``: register a gateway from the ``registration.json`` that
  ``ngrid provision gateway`` writes (self-signed with the gateway's Ed25519 key). Needs
  ``Authorization: Bearer <admin token>``. ``GET /gateways`` lists them, ``GET /health`` counts.

Verification (:mod:`coordinator.verify`) runs in a worker thread, one batch at a time; the store
is only touched from the event loop. Anchoring (:class:`coordinator.soroban.Submitter`) runs in a
background task: every accepted batch, in sequence order per gateway, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from coordinator.config import CoordinatorConfig
from coordinator.errors import (
    AnchorRefusedError,
    CoordinatorError,
    RegistrationConflict,
    RegistrationError,
)
from coordinator.store import BatchRow, Registration, Store
from coordinator.verify import Finding, Verification, verify_batch
from edge.batch import (
    Batch,
    BatchError,
    MerkleTree,
    decode_batch,
    trade_leaf,
)

__all__ = ["Coordinator", "Reply", "make_app", "parse_registration", "serve"]

log = logging.getLogger("ngrid.coordinator")

_STATUS_CODES = {"accepted": 200, "held": 202, "refused": 422}


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Reply:
    """An HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]


def parse_registration(document: object) -> Registration:
    """Check a registration request (edge.gateway.registration's format and self-signature).

    Raises :class:`RegistrationError` naming what is wrong.
    """
    from edge.gateway.registration import verify_registration

    if not isinstance(document, dict):
        raise RegistrationError("expected a JSON object")
    if document.get("type") != "ngrid.gateway.registration" or document.get("version") != 1:
        raise RegistrationError("not an ngrid.gateway.registration version 1 request")
    if document.get("key_algorithm") != "ed25519":
        raise RegistrationError("key_algorithm must be ed25519")
    gateway = document.get("gateway_id")
    meters = document.get("meters")
    if not isinstance(gateway, str) or not gateway or len(gateway) > 64:
        raise RegistrationError("gateway_id must be a string of 1-64 characters")
    if not isinstance(meters, list) or not all(isinstance(m, str) and m for m in meters):
        raise RegistrationError("meters must be a list of meter ids")
    if len(set(meters)) != len(meters):
        raise RegistrationError("a meter is listed twice")
    try:
        public = verify_registration(document)
    except ValueError as err:
        raise RegistrationError(str(err)) from err
    return Registration(gateway=gateway, public_key=public, meters=tuple(meters), document=document)


class Coordinator:
    """The service's logic without HTTP: submit, status, receipts, anomalies, registration,
    and the anchoring loop. ``submitter`` is an entered :class:`coordinator.soroban.Submitter`
    (None: batches stay ``pending``); ``clock`` gives ms since the epoch."""

    def __init__(
        self,
        *,
        config: CoordinatorConfig,
        store: Store,
        submitter: Any = None,
        contract_id: str = "",
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.config = config
        self.store = store
        self.submitter = submitter
        self.contract_id = contract_id
        self.clock = clock
        self.lock = asyncio.Lock()
        self.anchor_wake = asyncio.Event()
        self.anchored = 0
        self._trees: OrderedDict[int, tuple[Batch, MerkleTree]] = OrderedDict()

    # ------------------------------------------------------------------ batches

    async def submit(self, body: bytes) -> Reply:
        """Verify and record an uploaded batch (idempotent on its bytes)."""
        digest = hashlib.sha256(body).digest()
        async with self.lock:
            known = self.store.by_digest(digest)
            if known is not None:
                return self._reply(known, repeated=True)
            try:
                batch = decode_batch(body)
            except BatchError as err:
                finding = Finding(check="format", status="fail", detail=str(err))
                return Reply(400, {"status": "refused", "findings": [finding.to_json()]})
            verification = await self._verify(batch)
            if verification.verdict == "duplicate":
                row = self.store.batch(batch.header.gateway, batch.header.seq)
                assert row is not None
                return self._reply(row, repeated=True)
            if any(f.check == "gateway.registered" and f.failed for f in verification.findings):
                return Reply(
                    403,
                    {
                        "status": "refused",
                        "gateway": batch.header.gateway,
                        "seq": batch.header.seq,
                        "findings": [f.to_json() for f in verification.findings],
                    },
                )
            row = self.store.record(
                batch=batch, body=body, digest=digest, verification=verification, now=self.clock()
            )
            self._log(row)
            if row.status == "accepted":
                await self._release_held(batch.header.gateway, batch.header.seq + 1)
                self.anchor_wake.set()
            return self._reply(row, repeated=False)

    async def _verify(self, batch: Batch) -> Verification:
        registry = self.store.registry()
        chain = self.store.chain(batch.header.gateway)
        history = self.store.history_for(batch)
        return await asyncio.to_thread(
            verify_batch,
            batch,
            registry=registry,
            chain=chain,
            history=history,
            rules=self.config.rules,
        )

    async def release_held(self) -> None:
        """At start: verify held batches whose gap was filled before a crash or restart."""
        async with self.lock:
            for gateway in self.store.held_gateways():
                await self._release_held(gateway, self.store.chain(gateway).seq + 1)

    async def _release_held(self, gateway: str, seq: int) -> None:
        """The gap before ``seq`` is filled: verify the held batches in order."""
        while True:
            progressed = False
            for row in self.store.held(gateway, seq):
                batch = decode_batch(self.store.body(row.id))
                verification = await self._verify(batch)
                if verification.verdict == "held":  # pragma: no cover - seq is last + 1 here
                    continue
                done = self.store.record(
                    batch=batch,
                    body=b"",
                    digest=row.digest,
                    verification=verification,
                    now=self.clock(),
                    row_id=row.id,
                )
                self._log(done)
                if done.status == "accepted":
                    progressed = True
            if not progressed:
                return
            seq += 1

    def _log(self, row: BatchRow) -> None:
        failed = [f["check"] for f in row.findings if f["status"] == "fail"]
        log.info(
            "batch %s %s/%d (%d trades)%s",
            row.status,
            row.gateway,
            row.seq,
            row.trades,
            f": {', '.join(sorted(set(failed)))}" if failed else "",
        )

    def _reply(self, row: BatchRow, *, repeated: bool) -> Reply:
        body = row.to_json()
        body["repeated"] = repeated
        return Reply(_STATUS_CODES[row.status], body)

    def status(self, gateway: str, seq: int) -> Reply:
        row = self.store.batch(gateway, seq)
        if row is None:
            return Reply(404, {"error": f"no batch {seq} of gateway {gateway}"})
        return Reply(200, row.to_json())

    # ------------------------------------------------------------------ receipts

    def _batch_tree(self, row: BatchRow) -> tuple[Batch, MerkleTree]:
        """The batch and its Merkle tree, for its receipts (the last four batches are kept:
        a gateway fetches its receipts batch by batch)."""
        cached = self._trees.get(row.id)
        if cached is None:
            batch = decode_batch(self.store.body(row.id))
            cached = (batch, MerkleTree([trade_leaf(t) for t in batch.trades]))
            self._trees[row.id] = cached
            while len(self._trees) > 4:
                self._trees.popitem(last=False)
        else:
            self._trees.move_to_end(row.id)
        return cached

    def receipt(self, gateway: str, trade: str) -> Reply:
        found = self.store.trade_batch(gateway, trade)
        if found is None:
            return Reply(404, {"error": f"no settled trade {trade} of gateway {gateway}"})
        row, index = found
        batch, tree = self._batch_tree(row)
        record = batch.trades[index]
        assert record.id == trade
        anchor = row.to_json()["anchor"]
        if anchor is not None:
            anchor = {
                **anchor,
                "contract_id": self.contract_id or None,
                "network_passphrase": self.config.soroban.network_passphrase,
            }
        return Reply(
            200,
            {
                "gateway": gateway,
                "batch_seq": row.seq,
                "trade": record.to_json(),
                "index": index,
                "size": len(tree),
                "path": [p.hex() for p in tree.inclusion_proof(index)],
                "merkle_root": batch.header.merkle_root.hex(),
                "header": batch.header.to_json(),
                "batch_hash": row.hash.hex(),
                "anchor": anchor,
            },
        )

    # ------------------------------------------------------------------ registry, anomalies

    def register(self, document: object) -> Reply:
        try:
            reg = parse_registration(document)
        except RegistrationError as err:
            return Reply(400, {"error": str(err)})
        try:
            outcome = self.store.register(reg, now=self.clock())
        except RegistrationConflict as err:
            self.store.add_anomaly(
                kind=f"registration_{err.reason}",
                gateway=reg.gateway,
                detail=str(err),
                now=self.clock(),
            )
            return Reply(409, {"error": str(err), "reason": err.reason})
        log.info("gateway %s %s (%d meters)", reg.gateway, outcome, len(reg.meters))
        return Reply(
            201 if outcome == "created" else 200,
            {"gateway": reg.gateway, "outcome": outcome, "meters": sorted(reg.meters)},
        )

    def anomalies(self, *, after: int, limit: int, gateway: str | None) -> Reply:
        items = self.store.anomalies(after=after, limit=limit, gateway=gateway)
        return Reply(200, {"anomalies": [a.to_json() for a in items]})

    # ------------------------------------------------------------------ anchoring

    async def run_anchoring(self) -> None:
        """Anchor every pending accepted batch, in order per gateway; retry what fails."""
        if self.submitter is None:
            return
        delay = 0.5
        cap = self.config.soroban.retry_max_s
        while True:
            try:
                await self.submitter.resume()
                break
            except Exception as err:  # the RPC may be down: try again
                log.warning("anchoring: resume failed (%r); retrying in %.1f s", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)
        delay = 0.5
        while True:
            self.anchor_wake.clear()
            failed = await self.anchor_pending()
            if failed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)
                continue
            delay = 0.5
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.anchor_wake.wait(), timeout=cap)

    async def anchor_pending(self) -> bool:
        """One pass over the pending batches; True if one failed and should be retried."""
        blocked: set[str] = set()
        failed = False
        for row in self.store.pending_anchors():
            if row.gateway in blocked:
                continue
            try:
                result = await self.submitter.anchor(row.gateway, row.seq, row.hash, row.trades)
            except AnchorRefusedError as err:
                log.error("anchoring %s/%d refused: %s", row.gateway, row.seq, err)
                self.store.set_anchor_error(
                    row.id, error=f"{err.case}: {err}", refused=True, now=self.clock()
                )
                blocked.add(row.gateway)
                continue
            except Exception as err:  # network, RPC, transaction failures: retried later
                log.warning("anchoring %s/%d failed: %r", row.gateway, row.seq, err)
                self.store.set_anchor_error(
                    row.id, error=repr(err), refused=False, now=self.clock()
                )
                blocked.add(row.gateway)
                failed = True
                continue
            self.store.set_anchored(
                row.id, tx_hash=result.tx_hash, ledger=result.ledger, chain=result.chain
            )
            self.anchored += 1
            log.info(
                "anchored %s/%d in ledger %d (tx %s)",
                row.gateway,
                row.seq,
                result.ledger,
                result.tx_hash,
            )
        return failed


# ---------------------------------------------------------------------- HTTP


def _json(reply: Reply) -> web.Response:
    return web.json_response(reply.body, status=reply.status)


def make_app(coordinator: Coordinator, *, admin_token: str | None) -> web.Application:
    """The aiohttp application over ``coordinator``."""
    max_body = coordinator.config.http.max_body_mb * 1024 * 1024
    app = web.Application(client_max_size=max_body)
    routes = web.RouteTableDef()

    @routes.post("/batches")
    async def post_batch(request: web.Request) -> web.Response:
        body = await request.read()
        return _json(await coordinator.submit(body))

    @routes.get("/batches/{gateway}/{seq}")
    async def get_batch(request: web.Request) -> web.Response:
        try:
            seq = int(request.match_info["seq"])
        except ValueError:
            return _json(Reply(400, {"error": "seq must be an integer"}))
        return _json(coordinator.status(request.match_info["gateway"], seq))

    @routes.get("/receipts/{gateway}/{trade}")
    async def get_receipt(request: web.Request) -> web.Response:
        return _json(
            coordinator.receipt(request.match_info["gateway"], request.match_info["trade"])
        )

    @routes.get("/anomalies")
    async def get_anomalies(request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        except ValueError:
            return _json(Reply(400, {"error": "after and limit must be integers"}))
        return _json(
            coordinator.anomalies(after=after, limit=limit, gateway=request.query.get("gateway"))
        )

    def authorised(request: web.Request) -> Reply | None:
        if admin_token is None:
            return Reply(403, {"error": "registration is disabled: no admin token configured"})
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {admin_token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return Reply(401, {"error": "admin bearer token required"})
        return None

    @routes.post("/gateways")
    async def post_gateway(request: web.Request) -> web.Response:
        denied = authorised(request)
        if denied is not None:
            return _json(denied)
        try:
            document = await request.json()
        except ValueError:
            return _json(Reply(400, {"error": "the body is not JSON"}))
        return _json(coordinator.register(document))

    @routes.get("/gateways")
    async def get_gateways(request: web.Request) -> web.Response:
        return web.json_response({"gateways": coordinator.store.gateways()})

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "batches": coordinator.store.counts(),
                "anchoring": coordinator.submitter is not None,
            }
        )

    app.add_routes(routes)

    @web.middleware
    async def too_large(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _json(Reply(413, {"error": f"body larger than {max_body} bytes"}))

    app.middlewares.append(too_large)
    return app


@contextlib.asynccontextmanager
async def running(
    config: CoordinatorConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    submitter: Any = None,
    clock: Callable[[], int] = wall_ms,
) -> AsyncIterator[tuple[Coordinator, str]]:
    """Run the service: ``async with running(config) as (coordinator, url): ...``.

    Opens the store, makes the submitter from ``[soroban]`` unless one is given (or anchoring
    is disabled), starts the anchoring task and the HTTP listener; stops them all on exit.
    """
    from coordinator.soroban import SqliteEnvelopeStore, Submitter, anchor_contract_id

    admin_token = config.http.admin_token()
    store = Store(path=config.store_path)
    envelopes = None
    own_submitter = False
    contract_id = ""
    try:
        if submitter is None and config.soroban.enabled:
            sc = config.soroban.submitter_config("")
            keypair = sc.keypair()
            contract_id = config.soroban.contract_id or anchor_contract_id(
                deployer=keypair.public_key,
                salt=bytes(32),
                network_passphrase=config.soroban.network_passphrase,
            )
            envelopes = SqliteEnvelopeStore(path=config.store_path)
            submitter = Submitter(
                config=config.soroban.submitter_config(contract_id),
                store=envelopes,
                keypair=keypair,
                poll_interval_s=config.soroban.poll_interval_s,
            )
            own_submitter = True
        elif submitter is not None:
            contract_id = submitter.config.contract_id
        coordinator = Coordinator(
            config=config, store=store, submitter=submitter, contract_id=contract_id, clock=clock
        )
        await coordinator.release_held()
        app = make_app(coordinator, admin_token=admin_token)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner,
            host if host is not None else config.http.host,
            port if port is not None else config.http.port,
        )
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise CoordinatorError(
                f"cannot listen on {config.http.host}:{config.http.port}: {err.strerror}"
            ) from err
        bound = runner.addresses[0]  # the port the OS chose when port = 0
        url = f"http://{bound[0]}:{bound[1]}"
        task = asyncio.create_task(coordinator.run_anchoring(), name="anchoring")
        try:
            yield coordinator, url
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await runner.cleanup()
    finally:
        if own_submitter and submitter is not None:
            await submitter.close()
        if envelopes is not None:
            envelopes.close()
        store.close()


async def serve(config: CoordinatorConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Run until cancelled (``ngrid coordinator serve``)."""
    async with running(config) as (_, url):
        if ready is not None:
            ready(url)
        await asyncio.Event().wait()
