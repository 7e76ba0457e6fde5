-- The change log tells a sync pass which kind of change each day had, so that bars written
-- after a partition's last published bar are published as a small new file (an append)
-- instead of a rewrite of the partition. Every log row belongs to one statement of one
-- transaction, so it is consumed exactly once: `rewrite` says an update or a delete touched
-- the day, `min_ts` is the earliest bar an insert (COPY included) wrote there.
ALTER TABLE market_data_changes
    ADD COLUMN rewrite BOOLEAN NOT NULL DEFAULT true,
    ADD COLUMN min_ts  TIMESTAMPTZ;

CREATE OR REPLACE FUNCTION market_data_track_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
        WITH logged AS (
            INSERT INTO market_data_changes (symbol, timeframe, day, rewrite, min_ts)
            SELECT symbol, timeframe, (ts AT TIME ZONE 'UTC')::date - date '1970-01-01',
                   TG_OP = 'UPDATE', min(ts)
            FROM new_rows
            GROUP BY 1, 2, 3
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
        INSERT INTO market_data_changes (symbol, timeframe, day, rewrite, min_ts)
        SELECT DISTINCT symbol, timeframe, (ts AT TIME ZONE 'UTC')::date - date '1970-01-01',
               true, NULL::timestamptz
        FROM old_rows;
    END IF;
    -- Delivered at commit, once per transaction and channel/payload; wakes `quiver sync --watch`.
    PERFORM pg_notify('quiver_market_data', current_schema());
    RETURN NULL;
END;
$$;
