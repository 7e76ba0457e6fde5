-- market_data as DESIGN.md §1. The price and volume rules are CHECK constraints. The syntax of
-- symbol and timeframe is checked by the statement-level change trigger below, once per distinct
-- value a statement writes: a per-row regex CHECK more than doubled the cost of a bulk load
-- (2.4 s per million rows measured on this project's 2-core machine).
CREATE TABLE market_data (
    symbol    TEXT          NOT NULL,
    timeframe TEXT          NOT NULL,
    ts        TIMESTAMPTZ   NOT NULL,
    open      NUMERIC(28,8) NOT NULL,
    high      NUMERIC(28,8) NOT NULL,
    low       NUMERIC(28,8) NOT NULL,
    close     NUMERIC(28,8) NOT NULL,
    volume    NUMERIC(28,8) NOT NULL CHECK (volume >= 0),
    PRIMARY KEY (symbol, timeframe, ts),
    CHECK (high >= low AND high >= open AND high >= close AND low <= open AND low <= close)
);

-- Change tracking for the sync daemon.
--
-- Statement-level triggers append one row per (transaction, symbol, timeframe, UTC day) that a
-- statement touched, stamped with the writing transaction's id. Transactions commit in an order
-- unrelated to their ids and to any sequence, so a reader never uses "id > last seen" alone:
-- it only treats a transaction id as finished once it is below pg_snapshot_xmin() of its
-- snapshot, and remembers the finished ids above that horizon it has already consumed (see
-- src/db/postgres.rs). A row with NULL symbol means "everything" (TRUNCATE).
CREATE TABLE market_data_changes (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid      XID8   NOT NULL DEFAULT pg_current_xact_id(),
    symbol    TEXT,
    timeframe TEXT,
    day       BIGINT -- whole UTC days since the Unix epoch
);
CREATE INDEX market_data_changes_txid ON market_data_changes (txid);

CREATE FUNCTION market_data_track_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
        WITH logged AS (
            INSERT INTO market_data_changes (symbol, timeframe, day)
            SELECT DISTINCT symbol, timeframe, (ts AT TIME ZONE 'UTC')::date - date '1970-01-01'
            FROM new_rows
            RETURNING symbol, timeframe
        )
        SELECT symbol, timeframe INTO bad FROM logged
        WHERE symbol !~ '^[A-Z0-9._/:^=-]{1,32}$' OR timeframe !~ '^[1-9][0-9]*(s|m|h|d|w|mo)$'
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'market_data check violated: symbol % / timeframe % (symbol: 1-32 of A-Z 0-9 . _ - / : ^ =; timeframe: <n><s|m|h|d|w|mo>)',
                quote_literal(bad.symbol), quote_literal(bad.timeframe)
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' OR TG_OP = 'UPDATE' THEN
        INSERT INTO market_data_changes (symbol, timeframe, day)
        SELECT DISTINCT symbol, timeframe, (ts AT TIME ZONE 'UTC')::date - date '1970-01-01'
        FROM old_rows;
    END IF;
    -- Delivered at commit, once per transaction and channel/payload; wakes `quiver sync --watch`.
    PERFORM pg_notify('quiver_market_data', current_schema());
    RETURN NULL;
END;
$$;

CREATE FUNCTION market_data_track_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO market_data_changes (symbol, timeframe, day) VALUES (NULL, NULL, NULL);
    PERFORM pg_notify('quiver_market_data', current_schema());
    RETURN NULL;
END;
$$;

CREATE TRIGGER market_data_track_insert AFTER INSERT ON market_data
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION market_data_track_rows();
CREATE TRIGGER market_data_track_update AFTER UPDATE ON market_data
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION market_data_track_rows();
CREATE TRIGGER market_data_track_delete AFTER DELETE ON market_data
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION market_data_track_rows();
CREATE TRIGGER market_data_track_truncate AFTER TRUNCATE ON market_data
    FOR EACH STATEMENT EXECUTE FUNCTION market_data_track_truncate();
