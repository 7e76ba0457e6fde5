-- Top movers: the daily series ranked by how far their close moved over the 20 bars up to
-- their last bar, largest moves (up or down) first.
WITH ranked AS (
    SELECT symbol, ts, close,
           row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) AS age
    FROM market_data
    WHERE timeframe = '1d'
),
ends AS (
    SELECT symbol,
           max(CASE WHEN age = 1 THEN ts END)     AS last_bar,
           max(CASE WHEN age = 21 THEN close END) AS close_before,
           max(CASE WHEN age = 1 THEN close END)  AS close
    FROM ranked
    WHERE age IN (1, 21)
    GROUP BY symbol
)
SELECT symbol, last_bar, close_before, close,
       round(CAST((close - close_before) / close_before AS DOUBLE) * 100, 2) AS change_pct
FROM ends
WHERE close_before IS NOT NULL
ORDER BY abs(CAST((close - close_before) / close_before AS DOUBLE)) DESC, symbol
LIMIT 10;
