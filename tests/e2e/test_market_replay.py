"""``ngrid market replay`` as a user runs it: the installed console script in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.market import Engine, MarketParams, Order, encode_event

NGRID = shutil.which("ngrid") or str(Path(sys.executable).with_name("ngrid"))
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "market.jsonl"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGRID, "market", "replay", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_the_example_log_replays_to_canonical_trade_lines():
    result = run(str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines, "the example log makes trades"
    for line in lines:
        trade = json.loads(line)
        assert {"buy", "sell", "buyer", "seller", "wh", "price", "interval", "ts"} <= set(trade)
        assert line == json.dumps(trade, sort_keys=True, separators=(",", ":"))
    # Same input, same bytes out; from stdin too.
    assert run(str(EXAMPLE)).stdout == result.stdout
    assert run("-", stdin=EXAMPLE.read_text()).stdout == result.stdout


def test_output_equals_the_python_api(tmp_path):
    events = [
        Order(f"o{i}", f"h{i % 5}", "buy" if i % 3 else "sell", 10 + i, 100 + (i * 7) % 11, i)
        for i in range(200)
    ]
    log = tmp_path / "log.jsonl"
    log.write_text("".join(encode_event(e) + "\n" for e in events))
    for policy, bound in [("price-time", None), ("value-time", 2)]:
        args = [str(log), "--policy", policy] + (["--max-matches", str(bound)] if bound else [])
        result = run(*args)
        assert result.returncode == 0, result.stderr
        engine = Engine(params=MarketParams(policy=policy, max_matches=bound))
        want = [t.to_json() for e in events for t in engine.submit(e)]
        assert result.stdout.splitlines() == want


def test_reservations_are_printed_on_request():
    result = run(str(EXAMPLE), "--reservations")
    assert result.returncode == 0, result.stderr
    kinds = [json.loads(line).get("kind") for line in result.stdout.splitlines()]
    assert "reservation" in kinds


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"op":"order","id":"x","owner":"h","side":"buy","wh":0,"price":5,"ts":1}',
            "field 'wh': must be a positive integer",
        ),
        ('{"op":"order","id":"x","owner":"h","side":"buy","price":5,"ts":1}', "field 'wh'"),
        ('{"op":"order","id":"o1","owner":"h","side":"buy","wh":1,"price":5,"ts":1}', "'id'"),
        ('{"op":"teleport","ts":1}', "field 'op': unknown op 'teleport'"),
        ("{oops", "not valid JSON"),
    ],
)
def test_a_bad_line_exits_nonzero_with_one_line_naming_it(tmp_path, line, message):
    good = '{"op":"order","id":"o1","owner":"h","side":"sell","wh":1,"price":5,"ts":0}'
    log = tmp_path / "bad.jsonl"
    log.write_text(f"{good}\n{line}\n{good.replace('o1', 'o9')}\n")
    result = run(str(log))
    assert result.returncode != 0
    assert result.stdout == ""  # all or nothing
    assert result.stderr.startswith(f"ngrid: error: {log}:2: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_usage_errors():
    assert run("/no/such/log.jsonl").returncode == 2
    assert run(str(EXAMPLE), "--policy", "pro-rata").returncode == 2
    assert run(str(EXAMPLE), "--max-matches", "0").returncode == 2
