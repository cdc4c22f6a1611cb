"""`callcharge report chart`: the month of a tenant drawn with matplotlib (headless, Agg):
the balance over the month with fundings, recharges, expiries and the zero crossing marked,
and the pool minutes used per day against the pools' size. The series are
`processors.reports.chart_data`, from the committed ledger."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI

from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from processors.reports import ChartData

SIZE_IN = (10.0, 6.0)
DPI = 100  # 1000 x 600 pixels
MARK_COLOURS = {"funding": "tab:green", "recharge": "tab:blue", "expiry": "tab:orange", "zero": "tab:red"}


def figure(data: ChartData, title: str, currency: str, month: str | None = None) -> Figure:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=SIZE_IN, dpi=DPI, height_ratios=(3, 2), sharex=True)
    fig.suptitle(title)
    if month is not None:  # the whole month on the time axis
        year, mon = (int(x) for x in month.split("-"))
        start = datetime(year, mon, 1, tzinfo=UTC)
        end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
        top.set_xlim(start, end)
    points = list(data.balance)
    if month is not None:  # from the opening balance at the month's start to its end
        points = [(start, data.opening), *points, (min(end, datetime.now(UTC)), data.closing)]
    if points:
        xs = [at for at, _ in points]
        ys = [b / 1_000_000 for _, b in points]
        top.step(xs, ys, where="post", color="black", label="balance", gid="balance")
    top.axhline(0, color="grey", linewidth=0.8)
    for kind, colour in MARK_COLOURS.items():
        marks = [at for at, k, _ in data.marks if k == kind]
        for i, at in enumerate(marks):
            top.axvline(at, color=colour, linestyle="--", linewidth=1, label=kind if i == 0 else None, gid=kind)
    top.set_ylabel(currency)
    top.legend(loc="upper right", fontsize="small")
    days = [datetime.combine(date.fromisoformat(d), time(12), UTC) for d, _ in data.pool_used]
    used = [n for _, n in data.pool_used]
    bottom.bar(days, used, width=0.8, color="tab:purple", label="pool minutes used (cumulative)", gid="pool_used")
    if not data.pool_total:
        bottom.text(0.5, 0.5, "no minute pools", transform=bottom.transAxes, ha="center", va="center")
    bottom.axhline(data.pool_total, color="tab:purple", linestyle=":", label="pool size", gid="pool_total")
    bottom.set_ylabel("minutes")
    bottom.legend(loc="upper left", fontsize="small")
    fig.autofmt_xdate()
    return fig


def write(data: ChartData, title: str, currency: str, out: Path, month: str | None = None) -> Path:
    fig = figure(data, title, currency, month)
    try:
        fig.savefig(out, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return out


def series(fig: Figure) -> dict[str, Any]:
    """The data a figure plots, by series id (for the tests: the chart shows the ledger)."""
    out: dict[str, Any] = {}
    top, bottom = fig.axes[0], fig.axes[1]
    for line in top.get_lines():
        if line.get_gid() == "balance":
            out["balance"] = list(cast(Any, line.get_ydata()))
    out["marks"] = sorted({str(line.get_gid()) for line in top.get_lines() if line.get_gid() in MARK_COLOURS})
    out["pool_used"] = [patch.get_height() for patch in bottom.patches if isinstance(patch, Rectangle)]
    out["pool_total"] = [
        cast(Any, line.get_ydata())[0] for line in bottom.get_lines() if line.get_gid() == "pool_total"
    ]
    return out
