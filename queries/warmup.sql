-- A warmup read: the 20 NVDA daily bars before 2010-01-04, then the bars of January 2010,
-- in time order. `quiver bars NVDA --timeframe 1d --start 2010-01-04 --end 2010-01-31
-- --warmup 20` prints the same rows, faster: it needs no SQL planning.
SELECT * FROM (
    SELECT * FROM market_data
    WHERE symbol = 'NVDA' AND timeframe = '1d' AND ts < TIMESTAMP '2010-01-04T00:00:00Z'
    ORDER BY ts DESC
    LIMIT 20
)
UNION ALL
SELECT * FROM market_data
WHERE symbol = 'NVDA' AND timeframe = '1d'
  AND ts BETWEEN TIMESTAMP '2010-01-04T00:00:00Z' AND TIMESTAMP '2010-01-31T23:59:59Z'
ORDER BY ts;
