-- Daily returns of NVDA: each day's close against the previous day's close, in percent
-- (the first day has no previous close, so no return).
SELECT ts,
       close,
       round(CAST(close / lag(close) OVER (ORDER BY ts) - 1 AS DOUBLE) * 100, 4) AS return_pct
FROM market_data
WHERE symbol = 'NVDA' AND timeframe = '1d'
ORDER BY ts;
