"""``ngrid simulate --scenario`` as a user runs it: a real subprocess on the example scenario
(docs/examples/scenario.toml: six homes, a US tariff in dollars), one day."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NGRID = shutil.which("ngrid") or str(Path(sys.executable).with_name("ngrid"))
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "scenario.toml"


@pytest.mark.slow
def test_the_example_scenario_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ("--scenario", str(EXAMPLE), "--days", "1", "--out", str(out), "--no-progress")
    result = subprocess.run(
        [NGRID, "simulate", *args],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=tmp_path,  # the scenario's paths do not depend on the working directory
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["homes"] == 6
    assert summary["days"] == 1
    assert summary["scenario"] == {
        "name": "Six homes in Greensboro, NC",
        "weather": "723170TYA.CSV",
    }
    assert summary["run"]["scenario_file"] == str(EXAMPLE)  # with the run's other time and place
    assert summary["tariff"] == {"grid_price": 150, "feed_in_price": 50}
    assert summary["currency"] == {"code": "USD", "symbol": "$", "tick_value": "0.001"}
    assert summary["units"]["avg_price"] == "ticks per kWh (1 tick = 0.001 USD)"
    # The homes are the file's, and they traded at the file's prices.
    assert summary["trades"] > 0
    assert 50 <= summary["avg_price"] <= 150
    assert summary["manual_orders"] > 0
    assert summary["batches_anchored"] == summary["batches"]
    assert summary["replay_ok"] is True
    assert (out / "meters" / "maple-1").is_dir()
    assert (out / "report.html").is_file()
    # The CSV files are in the file's currency, one row per home and one per trade.
    with (out / "statements.csv").open(newline="", encoding="utf-8") as f:
        statements = list(csv.DictReader(f))
    assert [r["home"] for r in statements] == [
        "maple-1",
        "maple-3",
        "maple-5",
        "oak-2",
        "oak-4",
        "oak-6",
    ]
    assert "earned_USD" in statements[0] and "net_USD" in statements[0]
    with (out / "trades.csv").open(newline="", encoding="utf-8") as f:
        trades = list(csv.DictReader(f))
    assert len(trades) == summary["trades"]
    assert "price_USD_per_kWh" in trades[0]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "$0.15 per kWh" in page and "€" not in page  # the grid tariff, in dollars
