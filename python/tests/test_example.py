"""The example backtest runs on the quickstart's data, and its warmup read gives the same
trades as the same strategy computed straight from the bundled CSV file."""

import csv
import datetime as dt
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import quiver

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "python" / "examples" / "ma_crossover.py"
BIN = os.environ.get("QUIVER_BIN") or shutil.which("quiver")


def load_example():
    spec = importlib.util.spec_from_file_location("ma_crossover", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def from_csv(start, end, fast, slow):
    """The same crossover from the raw file, averages over the whole history."""
    with open(REPO / "data" / "samples" / "nvda-1999-2014.txt") as f:
        rows = [(dt.date.fromisoformat(r["Date"]), float(r["Close"])) for r in csv.DictReader(f)]
    trades, shares, cash = [], 0.0, 10_000.0
    for i, (day, close) in enumerate(rows):
        if not (start <= day <= end):
            continue
        closes = [c for _, c in rows[: i + 1]]
        long = sum(closes[-fast:]) / fast > sum(closes[-slow:]) / slow
        if long and shares == 0:
            shares, cash = cash / close, 0.0
            trades.append(("buy", day))
        elif not long and shares > 0:
            shares, cash = 0.0, shares * close
            trades.append(("sell", day))
    last = [c for d, c in rows if d <= end][-1]
    return trades, cash + shares * last


def test_example_on_the_quickstart_data(db, tmp_path):
    assert BIN, "QUIVER_BIN must name the quiver binary (cargo test sets it)"
    quickstart = subprocess.run([BIN, "quickstart"], env=db.env(), cwd=tmp_path, capture_output=True, text=True)
    assert quickstart.returncode == 0, quickstart.stderr

    run = subprocess.run(
        [sys.executable, str(EXAMPLE), "--cache", str(db.cache)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    assert summary.startswith("NVDA SMA(20)/SMA(50) from 2010-01-04, 1258 days: ")

    example = load_example()
    result = example.backtest(quiver.Reader(db.cache))
    trades, equity = from_csv(dt.date(2010, 1, 1), dt.date(2014, 12, 31), 20, 50)
    assert len(trades) > 10
    assert [(side, day) for side, day, _ in result["trades"]] == trades
    assert abs(result["equity"] - equity) < 1e-6 * equity
    assert f"{len(trades)} trades" in summary
