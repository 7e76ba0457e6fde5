-- The change log tells a sync pass which kind of change each day had, so that bars written
-- after a partition's last published bar are published as a small new file (an append)
-- instead of a rewrite of the partition.
--
-- One row per (symbol, timeframe, day, epoch) instead of per day: `rewrite` is 1 when an
-- update or a delete touched the day in that epoch, `min_ts` is the earliest bar an insert
-- wrote there. A pass reads the rows of the epochs it consumes; keeping epochs apart means no
-- row's kind is ever overwritten by a later epoch's before a pass has seen it. The rows of
-- epochs already committed to the cache are deleted by the next pass, so the log stays the
-- size of what a pass consumes. INSERT OR REPLACE reaches only the insert trigger (SQLite runs
-- no delete trigger for the row it replaces), and is still right: a replaced bar is at or
-- before the partition's last published bar, so its min_ts makes the pass rewrite.
CREATE TABLE market_data_changes_v2 (
    -- DESIGN.md §1 syntax: 1-32 of A-Z 0-9 . _ - / : ^ = ; <n><unit> with unit s m h d w mo.
    symbol    TEXT    NOT NULL CHECK (
                  length(symbol) BETWEEN 1 AND 32
                  AND symbol NOT GLOB '*[^A-Z0-9._/:^=-]*'),
    timeframe TEXT    NOT NULL CHECK (
                  timeframe GLOB '[1-9]*'
                  AND substr(timeframe, length(rtrim(timeframe, 'smhdwo')) + 1) IN ('s', 'm', 'h', 'd', 'w', 'mo')
                  AND rtrim(timeframe, 'smhdwo') NOT GLOB '*[^0-9]*'),
    day       INTEGER NOT NULL, -- whole UTC days since the Unix epoch
    epoch     INTEGER NOT NULL,
    rewrite   INTEGER NOT NULL DEFAULT 1,
    min_ts    INTEGER,
    PRIMARY KEY (symbol, timeframe, day, epoch)
) WITHOUT ROWID;
INSERT INTO market_data_changes_v2 (symbol, timeframe, day, epoch, rewrite, min_ts)
    SELECT symbol, timeframe, day, epoch, 1, NULL FROM market_data_changes;

DROP TRIGGER market_data_track_insert;
DROP TRIGGER market_data_track_update;
DROP TRIGGER market_data_track_delete;
DROP TABLE market_data_changes;
ALTER TABLE market_data_changes_v2 RENAME TO market_data_changes;
CREATE INDEX market_data_changes_epoch ON market_data_changes (epoch);

CREATE TRIGGER market_data_track_insert AFTER INSERT ON market_data
WHEN (SELECT bulk FROM quiver_clock WHERE id = 1) = 0
BEGIN
    INSERT INTO market_data_changes (symbol, timeframe, day, epoch, rewrite, min_ts)
    VALUES (NEW.symbol, NEW.timeframe,
            (NEW.ts - ((NEW.ts % 86400000000) + 86400000000) % 86400000000) / 86400000000,
            (SELECT epoch FROM quiver_clock WHERE id = 1), 0, NEW.ts)
    ON CONFLICT (symbol, timeframe, day, epoch) DO UPDATE SET min_ts = min(min_ts, excluded.min_ts);
END;

CREATE TRIGGER market_data_track_delete AFTER DELETE ON market_data
BEGIN
    INSERT INTO market_data_changes (symbol, timeframe, day, epoch, rewrite, min_ts)
    VALUES (OLD.symbol, OLD.timeframe,
            (OLD.ts - ((OLD.ts % 86400000000) + 86400000000) % 86400000000) / 86400000000,
            (SELECT epoch FROM quiver_clock WHERE id = 1), 1, NULL)
    ON CONFLICT (symbol, timeframe, day, epoch) DO UPDATE SET rewrite = 1;
END;

-- An update may move a bar to another symbol, timeframe or day: both places are rewritten.
CREATE TRIGGER market_data_track_update AFTER UPDATE ON market_data
BEGIN
    INSERT INTO market_data_changes (symbol, timeframe, day, epoch, rewrite, min_ts)
    VALUES (OLD.symbol, OLD.timeframe,
            (OLD.ts - ((OLD.ts % 86400000000) + 86400000000) % 86400000000) / 86400000000,
            (SELECT epoch FROM quiver_clock WHERE id = 1), 1, NULL)
    ON CONFLICT (symbol, timeframe, day, epoch) DO UPDATE SET rewrite = 1;
    INSERT INTO market_data_changes (symbol, timeframe, day, epoch, rewrite, min_ts)
    VALUES (NEW.symbol, NEW.timeframe,
            (NEW.ts - ((NEW.ts % 86400000000) + 86400000000) % 86400000000) / 86400000000,
            (SELECT epoch FROM quiver_clock WHERE id = 1), 1, NULL)
    ON CONFLICT (symbol, timeframe, day, epoch) DO UPDATE SET rewrite = 1;
END;
