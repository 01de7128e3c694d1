"""``ngrid simulate`` as a newcomer runs it: a real subprocess, a small neighbourhood, one day.

Checks the identities the summary must satisfy (issue 9) against the run's own files: the
gateway's ledger copied into --out, the coordinator's store and the report.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import Broker

NGRID = shutil.which("ngrid") or str(Path(sys.executable).with_name("ngrid"))
SMALL = ("--homes", "4", "--days", "1", "--seed", "7", "--no-progress")


def simulate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGRID, "simulate", *args], capture_output=True, text=True, timeout=170, cwd=cwd
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A relative --out, as `make demo` gives it (runs/<timestamp>): the paths the run writes
    # into its gateway.toml and coordinator.toml must still lead to its files.
    base = tmp_path_factory.mktemp("sim")
    result = simulate(*SMALL, "--out", "runs/small", cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "report:" in result.stdout
    return base / "runs" / "small"


@pytest.fixture(scope="module")
def summary(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "summary.json").read_text()))


def test_the_run_traded(summary: dict[str, Any]) -> None:
    assert summary["homes"] == 4
    assert summary["days"] == 1
    assert summary["trades"] > 0
    assert summary["wh_traded"] > 0


def test_tokens_burned_equal_wh_traded(summary: dict[str, Any]) -> None:
    assert summary["tokens_burned"] == summary["wh_traded"]


def test_carbon_is_820_mg_per_wh_traded(summary: dict[str, Any]) -> None:
    assert summary["carbon_mg"] == 820 * summary["wh_traded"]


def test_every_batch_anchored_every_proof_verified_replay_agrees(summary: dict[str, Any]) -> None:
    assert summary["batches"] >= 1
    assert summary["batches_anchored"] == summary["batches"]
    assert summary["proofs_verified"] == summary["trades"]
    assert summary["replay_ok"] is True


def test_trading_does_not_raise_grid_import(summary: dict[str, Any]) -> None:
    assert summary["grid_import_wh_with_trading"] <= summary["grid_import_wh_without_trading"]
    assert 0 <= summary["self_sufficiency_pct"] <= 100


def test_delivery_figures_are_consistent(summary: dict[str, Any]) -> None:
    assert 0 <= summary["wh_delivered"] <= summary["wh_traded"]
    assert 0 <= summary["defaults"] <= summary["trades"]
    assert summary["lp_commission"] > 0


def test_summary_agrees_with_the_ledger_file(run_dir: Path, summary: dict[str, Any]) -> None:
    db = sqlite3.connect(run_dir / "gateway" / "ledger.sqlite3")
    try:
        trades, wh = db.execute("SELECT COUNT(*), SUM(wh) FROM trades").fetchone()
        burned = db.execute("SELECT SUM(tokens) FROM token_burns").fetchone()[0]
        batches = db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        unbatched = db.execute("SELECT COUNT(*) FROM trades WHERE batch_seq IS NULL").fetchone()[0]
    finally:
        db.close()
    assert (trades, wh, burned) == (summary["trades"], summary["wh_traded"], summary["wh_traded"])
    assert batches == summary["batches"]
    assert unbatched == 0


def test_order_log_replays_to_the_ledgers_trades(run_dir: Path, summary: dict[str, Any]) -> None:
    log = run_dir / "gateway" / "orderlog.jsonl"
    lines = []
    voided = set()
    for line in log.read_text().splitlines():
        record = json.loads(line)
        record.pop("seq")
        if record["op"] == "void":
            voided.add(record["trade"])
        lines.append(json.dumps(record))
    plain = run_dir / "plain.jsonl"
    plain.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [NGRID, "market", "replay", str(plain)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    replayed = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    kept = [t for t in replayed if t["id"] not in voided]
    assert len(kept) == summary["trades"]


def test_coordinator_store_holds_every_batch_anchored(
    run_dir: Path, summary: dict[str, Any]
) -> None:
    db = sqlite3.connect(run_dir / "coordinator" / "coordinator.sqlite3")
    try:
        rows = db.execute(
            "SELECT status, anchor_status, COUNT(*), SUM(trades) FROM batches GROUP BY 1, 2"
        ).fetchall()
    finally:
        db.close()
    assert rows == [("accepted", "anchored", summary["batches"], summary["trades"])]
    assert summary["receipts_verified"] == summary["trades"]


def test_outputs_for_inspection_exist(run_dir: Path) -> None:
    assert (run_dir / "gateway" / "gateway.toml").exists()
    assert (run_dir / "coordinator" / "coordinator.toml").exists()
    page = (run_dir / "report.html").read_text()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 4
    assert "http://" not in page and "https://" not in page  # self-contained


def test_csv_files_beside_the_report_agree_with_the_ledger(
    run_dir: Path, summary: dict[str, Any]
) -> None:
    import csv
    from decimal import Decimal

    with (run_dir / "trades.csv").open(newline="", encoding="utf-8") as f:
        trades = list(csv.DictReader(f))
    with (run_dir / "statements.csv").open(newline="", encoding="utf-8") as f:
        homes = list(csv.DictReader(f))
    assert len(trades) == summary["trades"]
    assert sum(int(t["wh"]) for t in trades) == summary["wh_traded"]
    assert len(homes) == summary["homes"]
    # money moves between the homes but for the pool's commission and the grid operator's fee
    db = sqlite3.connect(run_dir / "gateway" / "ledger.sqlite3")
    try:
        (kept,) = db.execute("SELECT SUM(commission) + SUM(grid_fee) FROM trades").fetchone()
    finally:
        db.close()
    net = sum(Decimal(h["net_EUR"]) for h in homes)
    assert net == -Decimal(kept) * Decimal("0.001") / 1_000_000  # µticks; 1 tick = EUR 0.001
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert 'href="trades.csv"' in page and 'href="statements.csv"' in page


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    result = simulate("--homes", "1", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "homes" in result.stderr
    result = simulate("--start", "2024-02-30", "--out", str(tmp_path / "y"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    result = simulate("--broker", "http://example", "--out", str(tmp_path / "z"))
    assert result.returncode == 2
    assert "broker" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "z").exists()  # refused before anything is written
    result = simulate("--start", "2025-12-31", "--days", "2", "--out", str(tmp_path / "w"))
    assert result.returncode == 2
    assert "2025" in result.stderr and "Traceback" not in result.stderr


def test_runs_on_mosquitto_with_broker_option(mosquitto: Broker, tmp_path: Path) -> None:
    out = tmp_path / "mq"
    result = simulate(*SMALL, "--broker", mosquitto.url, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trades"] > 0
    assert summary["tokens_burned"] == summary["wh_traded"]
    assert summary["batches_anchored"] == summary["batches"]
    assert summary["stages"]["broker"] == "ran (the broker at --broker)"


def test_vm_runs_the_firmware_in_the_micropython_vm(tmp_path: Path) -> None:
    from hil.virtual.vm import vm_available

    if not vm_available():
        pytest.fail("the MicroPython VM is missing: run `npm ci` in the repository root")
    out = tmp_path / "vm"
    result = simulate(*SMALL, "--vm", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert "MicroPython VM" in summary["stages"]["meters"]
    assert summary["trades"] > 0
    assert summary["tokens_burned"] == summary["wh_traded"]
    assert summary["carbon_mg"] == 820 * summary["wh_traded"]
    assert summary["batches_anchored"] == summary["batches"]
    assert summary["proofs_verified"] == summary["trades"]
    assert summary["replay_ok"] is True
    assert summary["grid_import_wh_with_trading"] <= summary["grid_import_wh_without_trading"]
    # the meters' flash, copied out of their VMs: counters moved, sequence numbers reserved
    states = [json.loads(p.read_text()) for p in (out / "meters").glob("*/state.json")]
    assert states and all(s["seq_ceil"] > 0 and s["export_wh"] > 0 for s in states)


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGRID, "coordinator", "verify", *args], capture_output=True, text=True, timeout=170
    )


def test_the_run_directory_verifies_offline(run_dir: Path, summary: dict[str, Any]) -> None:
    assert (run_dir / "registration.json").is_file()
    files = sorted((run_dir / "batches").glob("batch-*.json"))
    assert [f.name for f in files] == [
        f"batch-{seq:06d}.json" for seq in range(1, summary["batches"] + 1)
    ]
    result = verify(str(run_dir))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"verified {summary['batches']} batches from gw-sim ({summary['trades']} trades): "
        "all checks passed"
    )


def test_a_tampered_batch_fails_verification_by_name(run_dir: Path, tmp_path: Path) -> None:
    from edge.batch import canonical_bytes, parse_canonical

    copy = tmp_path / "run"
    (copy / "batches").mkdir(parents=True)
    shutil.copy(run_dir / "registration.json", copy / "registration.json")
    files = sorted((run_dir / "batches").glob("batch-*.json"))
    for f in files:
        shutil.copy(f, copy / "batches" / f.name)
    victim = next(f for f in files if parse_canonical(f.read_bytes())["trades"])
    batch = parse_canonical(victim.read_bytes())
    batch["trades"][0]["wh"] += 1
    (copy / "batches" / victim.name).write_bytes(canonical_bytes(batch))
    result = verify(str(copy))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("ngrid: error: FAILED: ") and f"of {len(files)} batches" in line
    assert f"{victim.name} gw-sim/{int(victim.stem.split('-')[1])} refused" in line
    assert "FAIL merkle_root" in result.stdout


def test_a_file_that_is_not_a_batch_is_a_clear_error(run_dir: Path) -> None:
    result = verify(str(run_dir / "summary.json"), "--registry", str(run_dir / "registration.json"))
    assert result.returncode == 1
    assert "summary.json is not a batch" in result.stderr and "Traceback" not in result.stderr
