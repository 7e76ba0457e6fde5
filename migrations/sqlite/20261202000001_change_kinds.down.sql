-- Back to one change-log row per (symbol, timeframe, day), marked with its newest epoch.
CREATE TABLE market_data_changes_v1 (
    symbol    TEXT    NOT NULL CHECK (
                  length(symbol) BETWEEN 1 AND 32
                  AND symbol NOT GLOB '*[^A-Z0-9._/:^=-]*'),
    timeframe TEXT    NOT NULL CHECK (
                  timeframe GLOB '[1-9]*'
                  AND substr(timeframe, length(rtrim(timeframe, 'smhdwo')) + 1) IN ('s', 'm', 'h', 'd', 'w', 'mo')
                  AND rtrim(timeframe, 'smhdwo') NOT GLOB '*[^0-9]*'),
    day       INTEGER NOT NULL,
    epoch     INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe, day)
) WITHOUT ROWID;
INSERT INTO market_data_changes_v1 (symbol, timeframe, day, epoch)
    SELECT symbol, timeframe, day, max(epoch) FROM market_data_changes
    GROUP BY symbol, timeframe, day;
DROP TRIGGER market_data_track_insert;
DROP TRIGGER market_data_track_update;
DROP TRIGGER market_data_track_delete;
DROP TABLE market_data_changes;
ALTER TABLE market_data_changes_v1 RENAME TO market_data_changes;
CREATE INDEX market_data_changes_epoch ON market_data_changes (epoch);

CREATE TRIGGER market_data_track_insert AFTER INSERT ON market_data
WHEN (SELECT bulk FROM quiver_clock WHERE id = 1) = 0
BEGIN
    INSERT INTO market_data_changes (symbol, timeframe, day, epoch)
    VALUES (NEW.symbol, NEW.timeframe,
            (NEW.ts - ((NEW.ts % 86400000000) + 86400000000) % 86400000000) / 86400000000,
            (SELECT epoch FROM quiver_clock WHERE id = 1))
    ON CONFLICT (symbol, timeframe, day) DO UPDATE SET epoch = excluded.epoch
        WHERE market_data_changes.epoch < excluded.epoch;
END;

CREATE TRIGGER market_data_track_delete AFTER DELETE ON market_data
BEGIN
    INSERT INTO market_data_changes (symbol, timeframe, day, epoch)
    VALUES (OLD.symbol, OLD.timeframe,
            (OLD.ts - ((OLD.ts % 86400000000) + 86400000000) % 86400000000) / 86400000000,
            (SELECT epoch FROM quiver_clock WHERE id = 1))
    ON CONFLICT (symbol, timeframe, day) DO UPDATE SET epoch = excluded.epoch
        WHERE market_data_changes.epoch < excluded.epoch;
END;

CREATE TRIGGER market_data_track_update AFTER UPDATE ON market_data
BEGIN
    INSERT INTO market_data_changes (symbol, timeframe, day, epoch)
    VALUES (OLD.symbol, OLD.timeframe,
            (OLD.ts - ((OLD.ts % 86400000000) + 86400000000) % 86400000000) / 86400000000,
            (SELECT epoch FROM quiver_clock WHERE id = 1))
    ON CONFLICT (symbol, timeframe, day) DO UPDATE SET epoch = excluded.epoch
        WHERE market_data_changes.epoch < excluded.epoch;
    INSERT INTO market_data_changes (symbol, timeframe, day, epoch)
    VALUES (NEW.symbol, NEW.timeframe,
            (NEW.ts - ((NEW.ts % 86400000000) + 86400000000) % 86400000000) / 86400000000,
            (SELECT epoch FROM quiver_clock WHERE id = 1))
    ON CONFLICT (symbol, timeframe, day) DO UPDATE SET epoch = excluded.epoch
        WHERE market_data_changes.epoch < excluded.epoch;
END;
