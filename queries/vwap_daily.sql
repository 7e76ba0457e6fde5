-- Volume-weighted average price of FESX per UTC day, from its 1-minute bars: the sum of
-- close × volume over the sum of volume, exact decimals throughout.
SELECT date_trunc('day', ts)              AS day,
       sum(close * volume) / sum(volume)  AS vwap,
       sum(volume)                        AS volume,
       count(*)                           AS bars
FROM market_data
WHERE symbol = 'FESX' AND timeframe = '1m'
GROUP BY day
ORDER BY day;
