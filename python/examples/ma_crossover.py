"""A moving-average crossover backtest on the quickstart's NVDA daily bars, read through quiver.

The slow average needs ``slow - 1`` bars before the first day of the test, so they are asked
for as warmup: quiver returns exactly that many bars before ``start`` (from earlier files if it
must), and ``Table.warmup`` says how many rows to skip once the averages are computed. Prices
come as float64 here, which is what strategy arithmetic wants; they are stored as exact decimals.

Run from the repository root after ``cargo run -- quickstart``::

    python python/examples/ma_crossover.py                  # ./config.toml's cache
    python python/examples/ma_crossover.py --cache data/cache --fast 10 --slow 30
"""

import argparse

import polars as pl

import quiver


def backtest(
    reader: quiver.Reader,
    symbol: str = "NVDA",
    timeframe: str = "1d",
    start: str = "2010-01-01",
    end: str = "2014-12-31",
    fast: int = 20,
    slow: int = 50,
    cash: float = 10_000.0,
) -> dict:
    """Long while the fast average of closes is above the slow one, flat otherwise; trades at
    the close of the day the averages cross. Returns the trades and the final equity."""
    bars = reader.bars(symbol, timeframe, start=start, end=end, warmup=slow - 1, prices="float64")
    frame = (
        pl.DataFrame(bars)
        .with_columns(
            fast=pl.col("close").rolling_mean(fast),
            slow=pl.col("close").rolling_mean(slow),
        )
        .slice(bars.warmup)  # from `start` on; the warmup made both averages defined here
    )
    if frame["slow"].null_count():
        raise ValueError(f"{symbol} has fewer than {slow} bars before {start}")

    shares, trades = 0.0, []
    for day, close, long in frame.select("ts", "close", pl.col("fast") > pl.col("slow")).iter_rows():
        if long and shares == 0:
            shares, cash = cash / close, 0.0
            trades.append(("buy", day.date(), close))
        elif not long and shares > 0:
            shares, cash = 0.0, shares * close
            trades.append(("sell", day.date(), close))
    equity = cash + shares * frame["close"][-1]
    return {
        "days": frame.height,
        "first_day": frame["ts"][0].date(),
        "trades": trades,
        "equity": equity,
        "buy_and_hold": 10_000.0 * frame["close"][-1] / frame["close"][0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", help="the cache folder (default: the config's)")
    parser.add_argument("--config", help="a quiver config file (default: ./config.toml)")
    parser.add_argument("--symbol", default="NVDA")
    parser.add_argument("--fast", type=int, default=20)
    parser.add_argument("--slow", type=int, default=50)
    args = parser.parse_args()

    reader = quiver.Reader(args.cache, config=args.config)
    result = backtest(reader, symbol=args.symbol, fast=args.fast, slow=args.slow)
    for side, day, price in result["trades"]:
        print(f"{day}  {side:<4}  {price:10.4f}")
    print(
        f"{args.symbol} SMA({args.fast})/SMA({args.slow}) from {result['first_day']}, "
        f"{result['days']} days: {len(result['trades'])} trades, "
        f"equity {result['equity']:.2f} (buy and hold {result['buy_and_hold']:.2f})"
    )


if __name__ == "__main__":
    main()
