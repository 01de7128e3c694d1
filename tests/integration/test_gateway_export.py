"""A gateway's batches as files: ``Ledger.batches``/``export_batches``, ``ngrid gateway
export-batches``, ``edge.gateway.export.export_for_verification``, and ``ngrid coordinator
verify`` reading what they write (a folder of batch files, a run directory)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from edge.batch import Batch, batch_hash, encode_batch
from edge.gateway.config import load_config
from edge.gateway.export import export_for_verification
from edge.gateway.ledger import Ledger, batch_file_name
from edge.gateway.registration import verify_registration
from edge.gateway.sample import write_sample
from neighbourgrid.cli import main as ngrid
from tests.unit.coordinator.pipeline import GatewaySim

GATEWAY = "gw-x"


@pytest.fixture(scope="module")
def sim() -> GatewaySim:
    sim = GatewaySim(gateway=GATEWAY, homes=4)
    sim.pair()
    sim.pair()
    sim.seal()
    sim.pair()
    sim.seal()
    sim.seal()  # a batch without trades
    return sim


@pytest.fixture
def gateway_toml(tmp_path: Path, sim: GatewaySim) -> Path:
    """A gateway directory (init-config) holding the sim's key, meters and ledger of batches."""
    path = write_sample(directory=tmp_path / "gw", gateway_id=GATEWAY)
    (tmp_path / "gw/gateway.key").write_bytes(
        sim.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    meters = "".join(
        f'\n[[meters]]\nid = "{GATEWAY}-m{i}"\nmac_key = "{"00" * 32}"\n'
        f'capacity_wh = 10000\nowner = "home-{i}"\n'
        for i in range(4)
    )
    path.write_text(path.read_text() + meters)
    ledger = Ledger(load_config(path).ledger_path)
    try:
        for batch in sim.batches:
            store(ledger, batch)
    finally:
        ledger.close()
    return path


def store(ledger: Ledger, batch: Batch) -> None:
    ledger.store_batch(
        seq=batch.header.seq,
        hash=batch_hash(batch),
        created_ts=batch.header.created_ts,
        log_last=batch.header.log_last,
        body=encode_batch(batch),
        trades=[],
        deliveries=[],
    )


def test_ledger_exports_each_batch_as_uploaded(
    gateway_toml: Path, sim: GatewaySim, tmp_path: Path
) -> None:
    ledger = Ledger(load_config(gateway_toml).ledger_path)
    try:
        assert [b.seq for b in ledger.batches()] == [1, 2, 3]
        assert [b.seq for b in ledger.batches(first=2)] == [2, 3]
        written = ledger.export_batches(tmp_path / "out")
        again = ledger.export_batches(tmp_path / "out")  # same names, same bytes
        later = ledger.export_batches(tmp_path / "later", first=3)
    finally:
        ledger.close()
    assert written == again == [(n, tmp_path / "out" / batch_file_name(n)) for n in (1, 2, 3)]
    assert [p.name for _, p in later] == ["batch-000003.json"]
    for (_, path), batch in zip(written, sim.batches, strict=True):
        assert path.read_bytes() == encode_batch(batch)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "batch-000001.json",
        "batch-000002.json",
        "batch-000003.json",
    ]  # no temporary files left


def test_export_batches_command_then_verify_the_folder(
    gateway_toml: Path, sim: GatewaySim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exported"
    assert (
        ngrid(["gateway", "export-batches", "--config", str(gateway_toml), "--out", str(out)]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{out / 'batch-000001.json'}  (batch 1, ")
    assert lines[-1] == f"wrote 3 batches of gateway {GATEWAY} to {out}"
    registration = tmp_path / "registration.json"
    registration.write_text(json.dumps(sim.registration()))
    assert ngrid(["coordinator", "verify", str(out), "--registry", str(registration)]) == 0
    trades = sum(len(b.trades) for b in sim.batches)
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"verified 3 batches from {GATEWAY} ({trades} trades): all checks passed"
    # The same summary for files given one by one; a folder without a registration is refused.
    files = [str(out / batch_file_name(n)) for n in (1, 2, 3)]
    assert ngrid(["coordinator", "verify", *files, "--registry", str(registration)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == last
    assert ngrid(["coordinator", "verify", str(out)]) == 2
    assert "no registration.json" in capsys.readouterr().err


def test_export_without_a_ledger_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_sample(directory=tmp_path / "gw", gateway_id=GATEWAY)
    assert ngrid(["gateway", "export-batches", "--config", str(path), "--out", "x"]) == 1
    assert capsys.readouterr().err.startswith("ngrid: error: no ledger at ")
    assert not (tmp_path / "gw/ledger.sqlite3").exists()


def test_export_for_verification_is_a_verifiable_run_directory(
    gateway_toml: Path, sim: GatewaySim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    exported = export_for_verification(load_config(gateway_toml), run)
    assert exported.registration == run / "registration.json"
    assert [p for _, p in exported.batches] == [
        run / "batches" / batch_file_name(n) for n in (1, 2, 3)
    ]
    document = json.loads(exported.registration.read_text())
    assert verify_registration(document) == sim.public_raw
    assert document["meters"] == [f"{GATEWAY}-m{i}" for i in range(4)]
    assert ngrid(["coordinator", "verify", str(run)]) == 0
    assert re.fullmatch(
        rf"verified 3 batches from {GATEWAY} \(\d+ trades\): all checks passed",
        capsys.readouterr().out.splitlines()[-1],
    )
    # A batch missing from the middle: the later one is held, and the summary names it.
    (run / "batches" / batch_file_name(2)).unlink()
    assert ngrid(["coordinator", "verify", str(run)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ngrid: error: FAILED: 1 of 2 batches from gw-x not accepted")
    assert f"{batch_file_name(3)} {GATEWAY}/3 held [chain.seq]" in err
