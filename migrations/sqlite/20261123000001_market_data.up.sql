-- market_data as DESIGN.md §1: ts in microseconds since the Unix epoch (UTC); prices and volume
-- as TEXT holding the canonical decimal string, because TEXT affinity keeps them exact.
-- The CHECKs repeat the import's rules so that a plain sqlite3 client cannot store a bar quiver
-- would refuse. Price relations are compared as REAL: rounding is monotonic, so a valid bar is
-- never refused; the importer checks them exactly.
CREATE TABLE market_data (
    symbol    TEXT    NOT NULL CHECK (
                  length(symbol) BETWEEN 1 AND 32
                  AND symbol NOT GLOB '*[^A-Z0-9._/:^=-]*'),
    timeframe TEXT    NOT NULL CHECK (
                  timeframe GLOB '[1-9]*'
                  AND substr(timeframe, length(rtrim(timeframe, 'smhdwo')) + 1) IN ('s', 'm', 'h', 'd', 'w', 'mo')
                  AND rtrim(timeframe, 'smhdwo') NOT GLOB '*[^0-9]*'),
    ts        INTEGER NOT NULL CHECK (typeof(ts) = 'integer'),
    open      TEXT    NOT NULL CHECK (typeof(open) = 'text' AND open GLOB '*[0-9]*' AND open NOT GLOB '*[^0-9.-]*' AND open NOT GLOB '*.?????????*'),
    high      TEXT    NOT NULL CHECK (typeof(high) = 'text' AND high GLOB '*[0-9]*' AND high NOT GLOB '*[^0-9.-]*' AND high NOT GLOB '*.?????????*'),
    low       TEXT    NOT NULL CHECK (typeof(low) = 'text' AND low GLOB '*[0-9]*' AND low NOT GLOB '*[^0-9.-]*' AND low NOT GLOB '*.?????????*'),
    close     TEXT    NOT NULL CHECK (typeof(close) = 'text' AND close GLOB '*[0-9]*' AND close NOT GLOB '*[^0-9.-]*' AND close NOT GLOB '*.?????????*'),
    volume    TEXT    NOT NULL CHECK (typeof(volume) = 'text' AND volume GLOB '*[0-9]*' AND volume NOT GLOB '*[^0-9.]*' AND volume NOT GLOB '*.?????????*'),
    PRIMARY KEY (symbol, timeframe, ts),
    CHECK (CAST(high AS REAL) >= CAST(low AS REAL)
       AND CAST(high AS REAL) >= CAST(open AS REAL)
       AND CAST(high AS REAL) >= CAST(close AS REAL)
       AND CAST(low AS REAL) <= CAST(open AS REAL)
       AND CAST(low AS REAL) <= CAST(close AS REAL))
) WITHOUT ROWID;

-- Change tracking for the sync daemon.
--
-- SQLite runs one write transaction at a time, so a counter read inside a writing transaction
-- orders changes exactly as they commit. quiver_clock.epoch is the open epoch: every change
-- marks its (symbol, timeframe, UTC day) with it. A sync pass closes the epoch by incrementing
-- the counter in its own short write transaction; every change marked with an epoch at or below
-- the closed one has then committed, so the pass reads them all and records the closed epoch as
-- its position. One row per (symbol, timeframe, day) keeps the log as small as the data's
-- calendar, with no pruning. The triggers catch every client: quiver, sqlite3, any driver.
CREATE TABLE quiver_clock (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO quiver_clock (id, epoch) VALUES (1, 1);

CREATE TABLE market_data_changes (
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    day       INTEGER NOT NULL, -- whole UTC days since the Unix epoch
    epoch     INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe, day)
) WITHOUT ROWID;
CREATE INDEX market_data_changes_epoch ON market_data_changes (epoch);

CREATE TRIGGER market_data_track_insert AFTER INSERT ON market_data
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

-- An update may move a bar to another symbol, timeframe or day: both places change.
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
