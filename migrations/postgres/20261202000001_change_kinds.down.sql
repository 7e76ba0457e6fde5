CREATE OR REPLACE FUNCTION market_data_track_rows() RETURNS trigger LANGUAGE plpgsql AS $$
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
    PERFORM pg_notify('quiver_market_data', current_schema());
    RETURN NULL;
END;
$$;
ALTER TABLE market_data_changes DROP COLUMN min_ts, DROP COLUMN rewrite;
