-- Resample FESX's 1-minute bars to 1-hour OHLCV bars: the first open, highest high, lowest
-- low, last close and total volume of each hour, with the number of minutes it holds.
SELECT symbol,
       time_bucket('1 hour', ts)      AS hour,
       first_value(open ORDER BY ts)  AS open,
       max(high)                      AS high,
       min(low)                       AS low,
       last_value(close ORDER BY ts)  AS close,
       sum(volume)                    AS volume,
       count(*)                       AS bars
FROM market_data
WHERE symbol = 'FESX' AND timeframe = '1m'
GROUP BY symbol, hour
ORDER BY hour;
