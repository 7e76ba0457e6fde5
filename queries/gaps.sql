-- Gaps in FESX's 1-minute series: within a trading day, the places where more than one
-- minute passes between consecutive bars, and how many bars are missing there.
WITH series AS (
    SELECT ts, lag(ts) OVER (ORDER BY ts) AS previous
    FROM market_data
    WHERE symbol = 'FESX' AND timeframe = '1m'
)
SELECT previous AS last_bar,
       ts       AS next_bar,
       (CAST(ts AS BIGINT) - CAST(previous AS BIGINT)) / 60000000 - 1 AS missing_bars
FROM series
WHERE previous IS NOT NULL
  AND ts - previous > INTERVAL '1 minute'
  AND date_trunc('day', ts) = date_trunc('day', previous)
ORDER BY missing_bars DESC, last_bar
LIMIT 20;
