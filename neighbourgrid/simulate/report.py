"""The run's outputs for people: ``summary.json``, ``report.html`` and two CSV files.

The report is meant to be read by the homeowners and the community, on a phone as well as on a
desktop: headline numbers first, then what each home earned, paid and saved (in the configured
currency, with how "saved" is counted), four plots with a plain-language caption each (state of
charge per home; traded energy and price against the reference price; grid import with and
without trading; earnings per home) and the stages of the run in plain words. Figures are drawn
with matplotlib (Agg) and embedded as base64 PNG, so the page is one file with no external
resource; it links ``trades.csv`` and ``statements.csv`` (:func:`write_csvs`) beside it. Stages
that did not run are listed as such, and their figures say "not run" instead of a number.

Money is exact (:mod:`neighbourgrid.simulate.money`, Decimal) until it is shown.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from edge.configfile import atomic_write_text
from neighbourgrid.simulate.homes import Home
from neighbourgrid.simulate.inputs import INTERVAL_S
from neighbourgrid.simulate.money import EUR, Currency, plain
from neighbourgrid.simulate.physics import Neighbourhood

__all__ = [
    "HomeAccount",
    "ReportData",
    "home_accounts",
    "write_csvs",
    "write_overview_png",
    "write_report",
    "write_summary",
]

TRADES_CSV = "trades.csv"
STATEMENTS_CSV = "statements.csv"


@dataclass(kw_only=True)
class ReportData:
    """Everything the report shows. ``trading`` is None when the trading run did not happen.

    ``traded_wh``/``clearing_price``/``reference_price`` are per interval (price None where
    nothing traded or no reference price was set); ``statements`` per home is the gateway
    ledger's statement (edge.gateway.ledger.Ledger.statement: Wh and µticks bought and sold);
    ``trades`` the ledger's trades (Ledger.trades), in the engine's order (t1, t2, ...).
    ``grid_price`` and ``feed_in_price`` are the tariffs in ticks per kWh, ``currency`` what a
    tick is worth.
    """

    homes: Sequence[Home]
    start: date
    days: int
    baseline: Neighbourhood
    trading: Neighbourhood | None
    traded_wh: Sequence[int]
    clearing_price: Sequence[float | None]
    reference_price: Sequence[int | None]
    statements: Mapping[str, Mapping[str, int]]
    summary: Mapping[str, Any]
    stages: Mapping[str, str]
    grid_price: int = 320
    feed_in_price: int = 80
    currency: Currency = EUR
    trades: Sequence[Mapping[str, Any]] = ()
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class HomeAccount:
    """One home's trading, in Wh and in currency units (exact).

    ``delivered_wh``: of the energy it sold, what its meter measured as delivered;
    ``defaults``: its sales that fell short; ``received_wh``: of the energy it bought, what the
    sellers' meters delivered. ``earned``: paid to it for its sales (after the pool's
    commission); ``paid``: what it paid for its purchases (the price and the grid operator's
    network fee). ``saved_buying``: what the energy it received would have cost from the grid,
    minus ``paid``; ``saved_selling``: ``earned`` minus what the feed-in tariff would have paid
    for the energy it delivered.
    """

    home: str
    sold_wh: int
    delivered_wh: int
    defaults: int
    bought_wh: int
    received_wh: int
    earned: Decimal
    paid: Decimal
    saved_buying: Decimal
    saved_selling: Decimal

    @property
    def saved(self) -> Decimal:
        return self.saved_buying + self.saved_selling

    @property
    def net(self) -> Decimal:
        """Money in minus money out over the run."""
        return self.earned - self.paid


def home_accounts(data: ReportData) -> list[HomeAccount]:
    """Each home's account (the homes in ``data.homes`` order, then any other home with a
    statement), from the ledger's statements; the energy each buyer received comes from
    ``data.trades`` (a trade still pending counts as nothing delivered yet). Without trades,
    purchases count as delivered in full."""
    cur = data.currency
    received: dict[str, int] = {}
    for t in data.trades:
        got = t.get("delivered_wh")
        received[t["buyer"]] = received.get(t["buyer"], 0) + (got if got is not None else 0)
    ids = [h.id for h in data.homes]
    known = set(ids)
    ids += [h for h in data.statements if h not in known]
    out = []
    for home in ids:
        st = data.statements.get(home, {})
        bought = int(st.get("bought_wh", 0))
        got = received.get(home, 0) if data.trades else bought
        delivered = int(st.get("delivered_wh", 0))
        earned = cur.from_microticks(int(st.get("received_microticks", 0)))
        paid = cur.from_microticks(int(st.get("paid_microticks", 0)))
        out.append(
            HomeAccount(
                home=home,
                sold_wh=int(st.get("sold_wh", 0)),
                delivered_wh=delivered,
                defaults=int(st.get("defaulted_trades", 0)),
                bought_wh=bought,
                received_wh=got,
                earned=earned,
                paid=paid,
                saved_buying=cur.energy_cost(got, data.grid_price) - paid,
                saved_selling=earned - cur.energy_cost(delivered, data.feed_in_price),
            )
        )
    return out


def _kwh(wh: int) -> str:
    return f"{Decimal(wh) / 1000:,.1f}"


def _kwh_exact(wh: int) -> str:
    return f"{Decimal(wh) / 1000:.3f}"


def _local(interval: int) -> datetime:
    """The start of interval number ``interval`` in the run's local time (the simulation lays
    local standard time on the epoch as if it were UTC)."""
    return datetime.fromtimestamp(interval * INTERVAL_S, UTC).replace(tzinfo=None)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str | int]]) -> None:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_csvs(out_dir: Path, data: ReportData) -> tuple[Path, Path]:
    """Write ``trades.csv`` (one row per trade, in the order of ``data.trades``) and
    ``statements.csv`` (one row per home: the report's table) into ``out_dir``; return their
    paths. Amounts are in currency units, exact (not rounded), energy in Wh (trades) or kWh
    (statements)."""
    cur = data.currency
    c = cur.code
    trades = out_dir / TRADES_CSV
    _write_csv(
        trades,
        [
            "trade",
            "interval_start_local",
            "seller",
            "buyer",
            "wh",
            f"price_{c}_per_kWh",
            f"value_{c}",
            f"buyer_paid_{c}",
            f"seller_received_{c}",
            "status",
            "delivered_wh",
        ],
        [
            [
                t["id"],
                f"{_local(int(t['interval'])):%Y-%m-%d %H:%M}",
                t["seller"],
                t["buyer"],
                int(t["wh"]),
                plain(cur.from_ticks(int(t["price"]))),
                plain(cur.from_microticks(int(t["value"]))),
                plain(cur.from_microticks(int(t["buyer_pays"]))),
                plain(cur.from_microticks(int(t["seller_receives"]))),
                t["status"],
                "" if t.get("delivered_wh") is None else int(t["delivered_wh"]),
            ]
            for t in data.trades
        ],
    )
    statements = out_dir / STATEMENTS_CSV
    _write_csv(
        statements,
        [
            "home",
            f"earned_{c}",
            f"paid_{c}",
            f"saved_{c}",
            f"net_{c}",
            "sold_kWh",
            "delivered_kWh",
            "defaults",
            "bought_kWh",
            "received_kWh",
        ],
        [
            [
                a.home,
                plain(a.earned),
                plain(a.paid),
                plain(a.saved),
                plain(a.net),
                _kwh_exact(a.sold_wh),
                _kwh_exact(a.delivered_wh),
                a.defaults,
                _kwh_exact(a.bought_wh),
                _kwh_exact(a.received_wh),
            ]
            for a in home_accounts(data)
        ],
    )
    return trades, statements


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Write ``summary`` as indented JSON (written to a temporary file, then renamed)."""
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=False) + "\n")


def _times(data: ReportData, count: int) -> list[datetime]:
    t0 = datetime.combine(data.start, datetime.min.time())
    return [t0 + timedelta(seconds=INTERVAL_S * i) for i in range(count)]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)


def _date_axis(ax: Any, days: int = 1) -> None:
    import matplotlib.dates as mdates

    hours = [0, 6, 12, 18] if days <= 1 else [0, 12] if days <= 3 else [0]
    ax.xaxis.set_major_locator(mdates.HourLocator(byhour=hours))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %H:%M"))
    for label in ax.get_xticklabels():
        label.set_rotation(0)
        label.set_fontsize("small")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _reserves(homes: Sequence[Home]) -> tuple[float, str]:
    """The lowest battery reserve (%) and how to name the reserves: "20 %" when every battery
    home has the same (the default), else "15-25 %" (a scenario file may set each home's)."""
    pct = sorted({h.battery.reserve_bp / 100 for h in homes if h.battery is not None})
    if not pct:
        return 20.0, "20 %"
    low, high = pct[0], pct[-1]
    return low, f"{low:g} %" if low == high else f"{low:g}-{high:g} %"


def _draw_soc(ax: Any, data: ReportData, *, legend: bool = True) -> None:
    """State of charge per battery home, with the reserve line."""
    hood = data.trading or data.baseline
    times = _times(data, hood.intervals)
    cmap = _plt().get_cmap("viridis")
    battery_homes = [h for h in data.homes if h.battery is not None]
    for i, home in enumerate(battery_homes):
        soc = [f.soc_bp / 100 for f in hood.history[home.id]]
        ax.plot(times, soc, lw=1.3, color=cmap(i / max(1, len(battery_homes) - 1)), label=home.id)
    low, named = _reserves(data.homes)
    ax.axhline(low, color="#c0392b", ls="--", lw=1)
    ax.text(
        times[-1],
        low - 4,
        f"{named} reserve: never sold below",
        color="#c0392b",
        fontsize="small",
        ha="right",
        va="top",
    )
    ax.set_ylim(0, 102)
    ax.set_ylabel("state of charge (%)")
    if legend and len(battery_homes) <= 14:
        ax.legend(
            ncol=4, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False
        )
    _style(ax)
    _date_axis(ax, data.days)


def _draw_market(ax: Any, data: ReportData) -> None:
    """Traded energy per interval (bars) and clearing vs reference price (second axis), with
    the grid tariff and the feed-in tariff, in currency per kWh."""
    times = _times(data, len(data.traded_wh))
    width = INTERVAL_S / 86_400 * 0.9
    ax.bar(times, [w / 1000 for w in data.traded_wh], width=width, align="edge", color="#27ae60")
    ax.set_ylabel("traded per 15 min (kWh)", color="#27ae60")
    ax2 = ax.twinx()
    tick = float(data.currency.tick_value)
    ref = [p * tick if p is not None else float("nan") for p in data.reference_price]
    ax2.step(times, ref, where="post", color="#7f8c8d", lw=1.2, label="reference price")
    clear = [p * tick if p is not None else float("nan") for p in data.clearing_price]
    ax2.plot(times, clear, "o", ms=3, color="#e67e22", label="price paid")
    ax2.axhline(data.grid_price * tick, color="#c0392b", ls=":", lw=1, label="grid tariff")
    ax2.axhline(data.feed_in_price * tick, color="#2980b9", ls=":", lw=1, label="feed-in tariff")
    ax2.set_ylabel(f"{data.currency.code} per kWh")
    ax2.set_ylim(0, data.grid_price * tick * 1.15)
    ax2.legend(fontsize="small", loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    ax.spines[["top"]].set_visible(False)
    ax2.spines[["top"]].set_visible(False)
    _date_axis(ax, data.days)


def _community_import(data: ReportData, hood: Neighbourhood) -> list[float]:
    return [
        sum(hood.history[h.id][k].import_wh for h in data.homes) / 1000
        for k in range(hood.intervals)
    ]


def _draw_grid(ax: Any, data: ReportData) -> None:
    """The neighbourhood's grid import per interval, without (area) and with trading (line)."""
    times = _times(data, data.baseline.intervals)
    base = _community_import(data, data.baseline)
    ax.fill_between(times, base, step="post", color="#bdc3c7", alpha=0.8, label="without trading")
    if data.trading is not None:
        ax.step(
            times,
            _community_import(data, data.trading),
            where="post",
            color="#2980b9",
            lw=1.4,
            label="with trading",
        )
    ax.set_ylabel("neighbourhood grid import\nper 15 min (kWh)")
    ax.legend(fontsize="small", frameon=False)
    _style(ax)
    _date_axis(ax, data.days)


def _draw_earnings(ax: Any, data: ReportData, *, accounts: Sequence[HomeAccount]) -> None:
    """Per home: received for sales (up), paid for purchases (down) and what the grid would
    have charged for the energy received (dashed outline), in the currency."""
    labels = [a.home.replace("home-", "") for a in accounts]
    cost = data.currency.energy_cost
    earned = [float(a.earned) for a in accounts]
    paid = [-float(a.paid) for a in accounts]
    grid = [-float(cost(a.received_wh, data.grid_price)) for a in accounts]
    ax.bar(labels, earned, color="#27ae60", label="earned from sales")
    ax.bar(
        labels,
        grid,
        color="none",
        edgecolor="#7f8c8d",
        ls="--",
        lw=1,
        label="grid would have charged",
    )
    ax.bar(labels, paid, color="#8e44ad", label="paid to neighbours")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel(f"{data.currency.code} over the run")
    ax.set_xlabel("home")
    many = len(labels) > 12
    ax.tick_params(
        axis="x", labelsize="x-small" if many else "small", labelrotation=90 if many else 0
    )
    ax.legend(
        fontsize="small", frameon=False, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.22)
    )
    _style(ax)


def _figures(data: ReportData, accounts: Sequence[HomeAccount]) -> dict[str, str]:
    """The report's four figures, drawn narrow enough to read on a phone."""
    plt = _plt()
    figs: dict[str, str] = {}
    with plt.rc_context({"font.size": 12.5}):
        for key, draw, height in (
            ("soc", _draw_soc, 4.0),
            ("market", _draw_market, 4.0),
            ("grid", _draw_grid, 3.6),
            ("earnings", partial(_draw_earnings, accounts=accounts), 3.8),
        ):
            fig, ax = plt.subplots(figsize=(5.2, height))
            draw(ax, data)
            figs[key] = _png(fig)
            plt.close(fig)
    return figs


def write_overview_png(path: Path, data: ReportData) -> None:
    """One picture of the run for a README: headline numbers, grid import with and without
    trading, what was traded at what price, and the batteries."""
    plt = _plt()
    s = data.summary
    fig = plt.figure(figsize=(11, 11.5))
    grid = fig.add_gridspec(4, 1, height_ratios=[0.8, 2, 2, 2], hspace=0.45)
    head = fig.add_subplot(grid[0])
    head.axis("off")
    head.text(
        0,
        1.0,
        f"{s.get('homes')} neighbours, {data.days} day{'s' if data.days != 1 else ''} from "
        f"{data.start:%d %B} (ngrid simulate, seed {s.get('seed')})",
        fontsize=15,
        weight="bold",
        va="top",
    )
    cards = _headline(data, home_accounts(data))
    figures = [cards[i] for i in (1, 2, 3, 6)]
    for i, (value, label) in enumerate(figures):
        x = i / len(figures)
        head.text(x, 0.45, value, fontsize=18, color="#1e8449", weight="bold", va="center")
        head.text(x, 0.0, textwrap.fill(label, 28), fontsize=9, color="#555", va="center")
    _draw_grid(fig.add_subplot(grid[1]), data)
    _draw_market(fig.add_subplot(grid[2]), data)
    _draw_soc(fig.add_subplot(grid[3]), data, legend=False)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "not run"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return html.escape(str(value)) + unit


_CSS = """
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#222;font-size:16px;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:20px}
h1{font-size:clamp(22px,6vw,30px);line-height:1.2;margin:0 0 6px}
h2{font-size:20px;margin:26px 0 10px}
.lede{color:#555;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;
margin-bottom:8px}
.card{background:#fff;border-radius:10px;padding:12px 14px;box-shadow:0 1px 3px rgba(0,0,0,.08);
min-width:0}
.card b{display:block;font-size:22px;color:#1e8449;overflow-wrap:anywhere}
.card span{font-size:14px;color:#555}
.panel{background:#fff;border-radius:10px;padding:14px;box-shadow:0 1px 3px rgba(0,0,0,.08);
margin:0 0 18px}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}
table{border-collapse:collapse;font-size:14px;background:#fff}
th,td{padding:6px 10px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
th{font-weight:600;vertical-align:bottom}
.num{text-align:right;font-variant-numeric:tabular-nums}
.accounts{min-width:100%}
.accounts th:first-child,.accounts td:first-child{position:sticky;left:0;background:#fff;
box-shadow:1px 0 0 #eee}
.accounts tfoot td{font-weight:600;border-top:2px solid #ccc;border-bottom:0}
.neg{color:#a93226}
.how{font-size:14px;color:#444;margin:12px 0 0}
.how li{margin:4px 0}
.downloads{margin:12px 0 0;font-size:15px}
.downloads a{display:inline-block;margin:4px 12px 4px 0;color:#1a5276}
.figs{display:grid;grid-template-columns:minmax(0,1fr);gap:18px}
@media (min-width:1000px){.figs{grid-template-columns:repeat(2,minmax(0,1fr))}}
figure{background:#fff;border-radius:10px;padding:12px;margin:0;
box-shadow:0 1px 3px rgba(0,0,0,.08);min-width:0}
figure img{display:block;width:100%;max-width:100%;height:auto}
figcaption{font-size:15px;color:#333;margin-top:8px}
figcaption b{display:block;font-size:17px;margin-bottom:4px}
.stages{padding-left:20px;margin:0}
.stages li{margin:8px 0}
.notrun{color:#c0392b;font-weight:600}
details{margin:14px 0}
summary{cursor:pointer;font-weight:600;padding:6px 0}
.wrap{white-space:normal;overflow-wrap:anywhere}
.hint{display:none;font-size:13px;color:#666;margin:0 0 6px}
@media (max-width:700px){.hint{display:block}}
@media (max-width:480px){main{padding:12px}table{font-size:13px}th,td{padding:5px 8px}
.card b{font-size:20px}}
"""


def _headline(data: ReportData, accounts: Sequence[HomeAccount]) -> list[tuple[str, str]]:
    """The headline numbers: (value, what it is), most telling first (``accounts``:
    :func:`home_accounts` of ``data``)."""
    s = data.summary
    cur = data.currency
    saved = s.get("grid_import_saving_net_wh")
    buyers = sellers = None
    if data.statements:
        buyers = cur.format(sum((a.saved_buying for a in accounts), Decimal(0)))
        sellers = cur.format(sum((a.saved_selling for a in accounts), Decimal(0)))
    avg = s.get("avg_price")
    avg_text = None if avg is None else cur.format(cur.from_ticks(Decimal(str(avg))), decimals=3)
    tariffs = (
        f"grid: {cur.format(cur.from_ticks(data.grid_price))}, "
        f"feed-in: {cur.format(cur.from_ticks(data.feed_in_price))}"
    )
    cards = [
        (_fmt(s.get("homes")), "homes"),
        (
            _fmt(None if s.get("wh_traded") is None else s["wh_traded"] / 1000, " kWh"),
            "traded between neighbours",
        ),
        (
            _fmt(None if saved is None else saved / 1000, " kWh"),
            "less bought from the grid, net of what the batteries hold less at the end",
        ),
        (_fmt(s.get("self_sufficiency_pct"), " %"), "of the neighbourhood's use met locally"),
        (_fmt(avg_text), f"average price per kWh between neighbours ({tariffs})"),
        (
            _fmt(None if s.get("carbon_mg") is None else s["carbon_mg"] / 1e6, " kg"),
            "CO2 credited (820 g per kWh)",
        ),
        (_fmt(buyers), "saved by buyers against the grid tariff"),
        (_fmt(sellers), "earned by sellers above the feed-in tariff"),
        (_fmt(s.get("trades")), f"trades, {_fmt(s.get('defaults'))} fell short"),
        (
            f"{_fmt(s.get('batches_anchored'))} / {_fmt(s.get('batches'))}",
            "batches of trades put on public record",
        ),
        (_fmt(s.get("proofs_verified")), "battery checks verified independently"),
        (_fmt(s.get("replay_ok")), "independent re-check of the market agrees"),
    ]
    return cards


def _stage_name(key: str) -> str:
    """A stage key's plain name: its words before any parenthesis."""
    return key.split(" (")[0].strip().capitalize()


def _stage_text(key: str, value: str, data: ReportData) -> str:
    """One stage of the run in plain words (summary.json keeps the technical line)."""
    s = data.summary
    word = key.split()[0].lower() if key.split() else ""
    if not value.startswith("ran"):
        names = {
            "inputs": "Weather and household use",
            "no-trading": "The comparison without trading",
            "broker": "The messaging link",
            "gateway": "The neighbourhood gateway",
            "meters": "The meters",
            "coordinator": "The independent check",
            "soroban": "The public record",
            "receipts": "The receipts",
        }
        return f"{names.get(word, _stage_name(key))}: did not run."
    if word == "inputs":
        return (
            "Weather and household use: each home uses electricity like a standard household "
            "profile (BDEW H0), and its solar panels produce what a typical year's weather gives."
        )
    if word == "no-trading":
        return (
            "Comparison: the same homes, weather and batteries were also run with trading "
            "switched off, to show what trading changed."
        )
    if word == "broker":
        return (
            "Messaging: meters and the gateway talked over the same kind of message link (MQTT) "
            "a real installation uses."
        )
    if word == "gateway":
        trades = s.get("trades")
        settled = f"settled {trades:,} trades" if isinstance(trades, int) else "settled the trades"
        return (
            "Neighbourhood gateway: took the meters' readings and the homes' orders, matched "
            "buyers with sellers, checked that each seller's battery could cover the sale above "
            f"its reserve without learning how full it is, and {settled}."
        )
    if word == "meters":
        vm = " (in a MicroPython emulator, as on the device)" if "MicroPython" in value else ""
        text = (
            f"Meters: every battery home's meter ran its real firmware{vm} and checked each sale "
            "itself before setting energy aside for it."
        )
        m = re.search(r"refusals[^0-9]*(\d+)", value)
        if m:
            n = int(m.group(1))
            text += (
                " Meters turned down none of the gateway's requests."
                if n == 0
                else f" Meters turned down {n:,} of the gateway's requests (a sale a meter turns "
                "down is called off and never paid; a meter too busy to read a request is asked "
                "again)."
            )
        return text
    if word == "coordinator":
        verdict = {
            True: "it agreed with every batch",
            False: "it did not agree with every batch (see the notes)",
        }.get(s.get("replay_ok"), "see the notes for what it found")
        return (
            "Independent check: a separate coordinator re-checked every batch of trades the "
            f"gateway sent, including running the market again from the gateway's records: "
            f"{verdict}."
        )
    if word == "soroban":
        return (
            f"Public record: {_fmt(s.get('batches_anchored'))} of {_fmt(s.get('batches'))} "
            "batches of trades were written to a blockchain record (Stellar Soroban; in this "
            "simulation a local stand-in, so nothing was published)."
        )
    if word == "receipts":
        return (
            f"Receipts: {_fmt(s.get('receipts_verified'))} of {_fmt(s.get('trades'))} trades "
            "have a receipt from the coordinator that proves the trade is in the recorded batch."
        )
    return f"{_stage_name(key)}: ran."


def _amount(value: Decimal, cur: Currency) -> str:
    text = html.escape(cur.format(value))
    return (
        f'<td class="num neg">{text}</td>'
        if text.startswith("-")
        else f'<td class="num">{text}</td>'
    )


def _accounts_html(data: ReportData, accounts: Sequence[HomeAccount], links: Sequence[str]) -> str:
    """The per-home table (``accounts``: :func:`home_accounts` of ``data``), how "saved" is
    counted, and the links to the CSV files."""
    cur = data.currency
    if data.trading is None:
        return '<section class="panel"><p>Trading did not run: no home traded.</p></section>'
    head = (
        "<thead><tr><th>Home</th><th class=num>Earned</th><th class=num>Paid</th>"
        "<th class=num>Saved</th><th class=num>Net</th><th class=num>Sold<br>kWh</th>"
        "<th class=num>Delivered<br>kWh</th><th class=num>Fell<br>short</th>"
        "<th class=num>Bought<br>kWh</th></tr></thead>"
    )

    def row(name: str, parts: Sequence[HomeAccount]) -> str:
        def money(attr: str) -> Decimal:
            return sum((getattr(p, attr) for p in parts), Decimal(0))

        return (
            f"<tr><td>{html.escape(name)}</td>"
            + "".join(_amount(money(k), cur) for k in ("earned", "paid", "saved", "net"))
            + f"<td class=num>{_kwh(sum(p.sold_wh for p in parts))}</td>"
            f"<td class=num>{_kwh(sum(p.delivered_wh for p in parts))}</td>"
            f"<td class=num>{sum(p.defaults for p in parts):,}</td>"
            f"<td class=num>{_kwh(sum(p.bought_wh for p in parts))}</td></tr>"
        )

    body = "".join(row(a.home, [a]) for a in accounts)
    foot = row("All homes", accounts)
    table = (
        '<p class="hint">Swipe the table sideways for the energy figures.</p>'
        f'<div class="scroll"><table class="accounts">{head}<tbody>{body}</tbody>'
        f"<tfoot>{foot}</tfoot></table></div>"
    )
    grid = cur.format(cur.from_ticks(data.grid_price))
    feed = cur.format(cur.from_ticks(data.feed_in_price))
    fees = ""
    if data.trades:
        commission = cur.format(cur.from_microticks(sum(int(t["commission"]) for t in data.trades)))
        fee = cur.format(cur.from_microticks(sum(int(t["grid_fee"]) for t in data.trades)))
        fees = (
            "<li><b>All homes</b>: money only moves between neighbours, except the community "
            f"pool's commission on each sale ({html.escape(commission)} in all) and the grid "
            f"operator's network fee buyers pay per kWh ({html.escape(fee)}): together they "
            "are why the homes' net adds up to less than zero.</li>"
        )
    how = (
        '<ul class="how">'
        "<li><b>Sold</b>: energy the home sold to neighbours; <b>delivered</b>: what its meter "
        "measured going out for those sales; <b>fell short</b>: sales where the meter measured "
        "less than was sold (the sale is still paid in full).</li>"
        "<li><b>Earned</b>: paid to the home for its sales, after the community pool's "
        "commission. <b>Paid</b>: what it paid neighbours for energy, including the grid "
        "operator's network fee. <b>Net</b> = earned - paid.</li>"
        f"<li><b>Saved</b>, as a buyer: what the energy that reached the home would have cost "
        f"from the grid at {html.escape(grid)} per kWh, minus what it paid. As a seller: what it "
        f"earned, minus what the grid's feed-in tariff of {html.escape(feed)} per kWh would have "
        "paid for the energy it delivered. Both compare with the grid's prices only: they leave "
        "out that energy sold from a battery is no longer there for the home's own use later."
        "</li>"
        f"{fees}"
        f"<li>Amounts in {html.escape(cur.code)}, rounded to the cent for display only.</li>"
        "</ul>"
    )
    downloads = ""
    if links:
        downloads = (
            '<p class="downloads">Download: '
            + "".join(
                f'<a href="{html.escape(name)}" download>{html.escape(label)}</a>'
                for name, label in (
                    (TRADES_CSV, "every trade (trades.csv)"),
                    (STATEMENTS_CSV, "this table (statements.csv)"),
                )
                if name in links
            )
            + "</p>"
        )
    return f'<section class="panel">{table}{how}{downloads}</section>'


def write_report(path: Path, data: ReportData) -> None:
    """Write the self-contained HTML report for ``data`` to ``path``. It links the CSV files
    (:func:`write_csvs`) that exist beside it when it is written."""
    s = data.summary
    accounts = home_accounts(data)
    figs = _figures(data, accounts)
    end = data.start + timedelta(days=data.days - 1)
    cards = _headline(data, accounts)
    card_html = "".join(
        f'<div class="card"><b>{v}</b><span>{html.escape(t)}</span></div>' for v, t in cards
    )
    stage_items = "".join(
        ("<li>" if v.startswith("ran") else '<li class="notrun">')
        + f"{html.escape(_stage_text(k, v, data))}</li>"
        for k, v in data.stages.items()
    )
    summary_rows = "".join(
        f'<tr><td>{html.escape(k)}</td><td class="wrap">{_fmt(v)}</td></tr>'
        for k, v in s.items()
        if not isinstance(v, dict | list)
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    home_rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                h.id,
                h.kind,
                h.persons,
                f"{h.annual_kwh:,.0f}",
                f"{h.pv_kwp:g}" if h.pv_kwp else "-",
                f"{h.battery.capacity_wh / 1000:g}" if h.battery else "-",
                "by hand" if h.manual else ("automatically" if h.battery else "home app"),
            )
        )
        + "</tr>"
        for h in data.homes
    )
    home_table = (
        "<tr><th>Home</th><th>Kind</th><th>Persons</th><th>kWh a year</th><th>Solar kWp</th>"
        f"<th>Battery kWh</th><th>Sells / buys</th></tr>{home_rows}"
    )
    kinds: dict[str, int] = {}
    for h in data.homes:
        kinds[h.kind] = kinds.get(h.kind, 0) + 1
    mix = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
    links = [n for n in (TRADES_CSV, STATEMENTS_CSV) if (path.parent / n).is_file()]

    def fig(key: str, title: str, caption: str) -> str:
        return (
            f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{figs[key]}">'
            f"<figcaption><b>{html.escape(title)}</b>{html.escape(caption)}</figcaption>"
            "</figure>"
        )

    captions = [
        fig(
            "soc",
            "Batteries over the run",
            "Each line is one home's battery. They fill up from the roof around midday and "
            "empty through the evening; sales never take a battery below its reserve "
            f"({_reserves(data.homes)[1]}, the dashed line marks the lowest).",
        ),
        fig(
            "market",
            "What was traded, and at what price",
            "Green bars: energy sold between neighbours in each 15-minute slot. Orange dots: "
            "the average price those trades were made at. Grey line: the reference price the "
            "gateway sets (it rises as the neighbourhood's batteries run low). Dotted lines: "
            "what the grid charges (red) and what it pays for energy fed in (blue).",
        ),
        fig(
            "grid",
            "Buying less from the grid",
            "Grey: what the neighbourhood would have bought from the grid with the same homes "
            "and weather but no trading. Blue: what it bought with trading.",
        ),
        fig(
            "earnings",
            "Who earned what",
            "Green: what each home earned from the energy it sold. Purple: what it paid its "
            "neighbours, with the dashed outline showing what the grid would have charged for "
            "the same energy: the gap is what buying locally saved.",
        ),
    ]
    plural = "s" if data.days != 1 else ""
    when = f"{data.start:%A %d %B}" + (f" to {end:%A %d %B}" if data.days > 1 else "")
    notes_html = (
        f"<details open><summary>Notes</summary><ul>{notes}</ul></details>" if notes else ""
    )
    title = f"neighbourgrid: {s.get('homes')} homes, {data.start:%d %b}"
    body = "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>",
            f"<h1>{s.get('homes')} neighbours, {data.days} day{plural} of sharing energy</h1>",
            f'<p class="lede">{when} (simulated; seed '
            f"{s.get('seed')}). Homes: {html.escape(mix)}. Household use follows a standard "
            "household profile and solar output a typical year's weather; every trade went "
            "through the neighbourhood's market, as it would for real.</p>",
            f'<div class="cards">{card_html}</div>',
            '<h2 id="homes">What each home earned and saved</h2>',
            _accounts_html(data, accounts, links),
            '<h2>The run in pictures</h2><div class="figs">',
            *captions,
            "</div>",
            '<h2>How the run went</h2><section class="panel">',
            f'<ul class="stages">{stage_items}</ul></section>',
            "<details><summary>The homes</summary>",
            f'<div class="scroll"><table>{home_table}</table></div></details>',
            "<details><summary>All figures (as in summary.json)</summary>",
            f'<div class="scroll"><table>{summary_rows}</table></div></details>',
            notes_html,
            "</main></body></html>\n",
        ]
    )
    atomic_write_text(path, body)
