"""The run's outputs: ``summary.json`` and a self-contained ``report.html``.

The report is meant to be looked at: headline numbers first, then four plots with a plain-language
caption each (state of charge per home; traded energy and clearing price against the reference
price; grid import with and without trading; earnings per home). Figures are drawn with
matplotlib (Agg) and embedded as base64 PNG, so the page is one file with no external resource.
Stages that did not run are listed as such, and their figures say "not run" instead of a number.
"""

from __future__ import annotations

import base64
import html
import io
import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from neighbourgrid.simulate.homes import Home
from neighbourgrid.simulate.inputs import INTERVAL_S
from neighbourgrid.simulate.physics import Neighbourhood

__all__ = ["ReportData", "write_overview_png", "write_report", "write_summary"]

TICK_CT = 0.1  # one price tick is 0.1 euro cent (edge.market.settlement.Rates)


@dataclass(kw_only=True)
class ReportData:
    """Everything the report shows. ``trading`` is None when the trading run did not happen.

    ``traded_wh``/``clearing_price``/``reference_price`` are per interval (price None where
    nothing traded or no reference price was set); ``statements`` per home is the gateway
    ledger's statement (edge.gateway.ledger.Ledger.statement: Wh and µticks bought and sold).
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
    notes: list[str] = field(default_factory=list)


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Write ``summary`` as indented JSON (written to a temporary file, then renamed)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


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


def _date_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    ax.xaxis.set_major_locator(mdates.HourLocator(byhour=[0, 6, 12, 18]))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %H:%M"))
    for label in ax.get_xticklabels():
        label.set_rotation(0)
        label.set_fontsize(8)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_soc(ax: Any, data: ReportData, *, legend: bool = True) -> None:
    """State of charge per battery home, with the reserve line."""
    hood = data.trading or data.baseline
    times = _times(data, hood.intervals)
    cmap = _plt().get_cmap("viridis")
    battery_homes = [h for h in data.homes if h.battery is not None]
    for i, home in enumerate(battery_homes):
        soc = [f.soc_bp / 100 for f in hood.history[home.id]]
        ax.plot(times, soc, lw=1.3, color=cmap(i / max(1, len(battery_homes) - 1)), label=home.id)
    ax.axhline(20, color="#c0392b", ls="--", lw=1)
    ax.text(
        times[-1],
        16,
        "20 % reserve: never sold below",
        color="#c0392b",
        fontsize=8,
        ha="right",
        va="top",
    )
    ax.set_ylim(0, 102)
    ax.set_ylabel("state of charge (%)")
    if legend and len(battery_homes) <= 14:
        ax.legend(
            ncol=7, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, -0.42), frameon=False
        )
    _style(ax)
    _date_axis(ax)


def _draw_market(ax: Any, data: ReportData) -> None:
    """Traded energy per interval (bars) and clearing vs reference price (second axis)."""
    times = _times(data, len(data.traded_wh))
    width = INTERVAL_S / 86_400 * 0.9
    ax.bar(times, [w / 1000 for w in data.traded_wh], width=width, align="edge", color="#27ae60")
    ax.set_ylabel("traded per 15 min (kWh)", color="#27ae60")
    ax2 = ax.twinx()
    ref = [p if p is not None else float("nan") for p in data.reference_price]
    ax2.step(times, ref, where="post", color="#7f8c8d", lw=1.2, label="reference price")
    clear = [p if p is not None else float("nan") for p in data.clearing_price]
    ax2.plot(times, clear, "o", ms=3, color="#e67e22", label="clearing price (mean per interval)")
    ax2.axhline(data.grid_price, color="#c0392b", ls=":", lw=1, label="grid tariff")
    ax2.set_ylabel("ticks per kWh (1 tick = 0.1 ct)")
    ax2.set_ylim(0, data.grid_price * 1.15)
    ax2.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False)
    ax.spines[["top"]].set_visible(False)
    ax2.spines[["top"]].set_visible(False)
    _date_axis(ax)


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
    ax.legend(fontsize=8, frameon=False)
    _style(ax)
    _date_axis(ax)


def _draw_earnings(ax: Any, data: ReportData) -> None:
    """Per home: received for sales (up), paid for purchases (down) and what the grid would
    have charged for the same purchases (dashed outline), in EUR."""
    ids = [h.id for h in data.homes]
    labels = [i.replace("home-", "") for i in ids]
    st = [data.statements.get(i, {}) for i in ids]
    received = [x.get("received_microticks", 0) / 1e6 * TICK_CT / 100 for x in st]
    paid = [-x.get("paid_microticks", 0) / 1e6 * TICK_CT / 100 for x in st]
    grid = [-x.get("bought_wh", 0) * data.grid_price / 1000 * TICK_CT / 100 for x in st]
    ax.bar(labels, received, color="#27ae60", label="received for energy sold")
    ax.bar(
        labels,
        grid,
        color="none",
        edgecolor="#7f8c8d",
        ls="--",
        lw=1,
        label="the grid would have charged",
    )
    ax.bar(labels, paid, color="#8e44ad", label="paid to neighbours")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("EUR over the run")
    ax.set_xlabel("home")
    ax.legend(fontsize=8, frameon=False, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    _style(ax)


def _figures(data: ReportData) -> dict[str, str]:
    plt = _plt()
    figs: dict[str, str] = {}
    for key, draw, height in (
        ("soc", _draw_soc, 3.6),
        ("market", _draw_market, 3.6),
        ("grid", _draw_grid, 3.6),
        ("earnings", _draw_earnings, 3.4),
    ):
        fig, ax = plt.subplots(figsize=(10, height))
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
    cards = _headline(data)
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
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#222}
main{max-width:1080px;margin:0 auto;padding:24px}
h1{font-size:28px;margin:0 0 4px}
.lede{color:#555;margin:0 0 20px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px;margin-bottom:24px}
.card{background:#fff;border-radius:10px;padding:14px 16px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.card b{display:block;font-size:26px;color:#1e8449}
.card span{font-size:13px;color:#555}
figure{background:#fff;border-radius:10px;padding:16px;margin:0 0 20px;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
figure img{width:100%}
figcaption{font-size:15px;color:#333;margin-top:6px}
figcaption b{display:block;font-size:17px;margin-bottom:4px}
table{border-collapse:collapse;font-size:13px;background:#fff}
td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
.notrun{color:#c0392b;font-weight:600}
details{margin:12px 0}
"""


def _headline(data: ReportData) -> list[tuple[str, str]]:
    """The headline numbers: (value, what it is), most telling first."""
    s = data.summary
    saved = None
    if s.get("grid_import_wh_with_trading") is not None:
        saved = s["grid_import_wh_without_trading"] - s["grid_import_wh_with_trading"]
    saved_eur = None
    if data.statements:
        bought = sum(x.get("bought_wh", 0) for x in data.statements.values())
        paid = sum(x.get("paid_microticks", 0) for x in data.statements.values()) / 1e6
        saved_eur = round((bought * data.grid_price / 1000 - paid) * TICK_CT / 100, 2)
    cards = [
        (_fmt(s.get("homes")), "homes"),
        (
            _fmt(None if s.get("wh_traded") is None else s["wh_traded"] / 1000, " kWh"),
            "traded between neighbours",
        ),
        (_fmt(None if saved is None else saved / 1000, " kWh"), "less bought from the grid"),
        (_fmt(s.get("self_sufficiency_pct"), " %"), "of the neighbourhood's use met locally"),
        (
            _fmt(None if s.get("avg_price") is None else s["avg_price"] * TICK_CT, " ct/kWh"),
            f"average price paid between neighbours (grid: {data.grid_price * TICK_CT:.0f} ct)",
        ),
        (
            _fmt(None if s.get("carbon_mg") is None else s["carbon_mg"] / 1e6, " kg"),
            "CO2 credited (820 g per kWh)",
        ),
        (_fmt(saved_eur, " EUR"), "saved by buyers against the grid tariff"),
        (_fmt(s.get("trades")), f"trades, {_fmt(s.get('defaults'))} defaulted"),
        (
            f"{_fmt(s.get('batches_anchored'))} / {_fmt(s.get('batches'))}",
            "settlement batches anchored on Soroban",
        ),
        (_fmt(s.get("proofs_verified")), "range proofs verified"),
        (_fmt(s.get("replay_ok")), "coordinator's replay agrees"),
    ]
    return cards


def write_report(path: Path, data: ReportData) -> None:
    """Write the self-contained HTML report for ``data`` to ``path``."""
    s = data.summary
    figs = _figures(data)
    end = data.start + timedelta(days=data.days - 1)
    cards = _headline(data)
    card_html = "".join(
        f'<div class="card"><b>{v}</b><span>{html.escape(t)}</span></div>' for v, t in cards
    )
    stage_rows = "".join(
        f'<tr><td>{html.escape(k)}</td><td class="{"" if v.startswith("ran") else "notrun"}">'
        f"{html.escape(v)}</td></tr>"
        for k, v in data.stages.items()
    )
    summary_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>"
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
                "manual orders" if h.manual else ("policy" if h.battery else "home app"),
            )
        )
        + "</tr>"
        for h in data.homes
    )
    home_table = (
        "<tr><th>home</th><th>kind</th><th>persons</th><th>kWh/year</th><th>PV kWp</th>"
        f"<th>battery kWh</th><th>sells / buys via</th></tr>{home_rows}"
    )
    kinds: dict[str, int] = {}
    for h in data.homes:
        kinds[h.kind] = kinds.get(h.kind, 0) + 1
    mix = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))

    def fig(key: str, title: str, caption: str) -> str:
        return (
            f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{figs[key]}">'
            f"<figcaption><b>{html.escape(title)}</b>{html.escape(caption)}</figcaption>"
            "</figure>"
        )

    battery_title = "Batteries over the run"
    captions = [
        fig(
            "soc",
            battery_title,
            "Each line is one home's battery. They fill up from the roof around midday and "
            "empty through the evening; sales never take a battery below the dashed 20 % reserve.",
        ),
        fig(
            "market",
            "What was traded, and at what price",
            "Green bars: energy sold between neighbours in each 15-minute slot. Orange dots: "
            "the average price those trades cleared at. Grey line: the reference price the "
            "gateway sets (it rises as the neighbourhood's batteries run low). Red dotted line: "
            "what the grid charges.",
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
            "Green: what each home received for the energy it sold. Purple: what it paid its "
            "neighbours, with the dashed outline showing what the grid would have charged for "
            "the same energy: the gap is what buying locally saved.",
        ),
    ]
    plural = "s" if data.days != 1 else ""
    notes_html = (
        f"<details open><summary>Notes</summary><ul>{notes}</ul></details>" if notes else ""
    )
    title = f"neighbourgrid: {s.get('homes')} homes, {data.start:%d %b}"
    body = "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>",
            f"<h1>{s.get('homes')} neighbours, {data.days} day{plural} of sharing energy</h1>",
            f'<p class="lede">{data.start:%A %d %B} to {end:%A %d %B} (simulated; seed '
            f"{s.get('seed')}). Homes: {html.escape(mix)}. Household use follows the BDEW H0 "
            "profile, solar output is computed from a typical-year weather file; every trade "
            "went through the gateway's market.</p>",
            f'<div class="cards">{card_html}</div>',
            *captions,
            f"<details><summary>The homes</summary><table>{home_table}</table></details>",
            f"<details open><summary>Stages of the run</summary><table>{stage_rows}</table>",
            "</details>",
            "<details><summary>All figures (summary.json)</summary>",
            f"<table>{summary_rows}</table></details>",
            notes_html,
            "</main></body></html>\n",
        ]
    )
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(body)
    tmp.replace(path)
