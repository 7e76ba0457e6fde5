DROP TABLE IF EXISTS market_data;
DROP FUNCTION IF EXISTS market_data_track_truncate();
DROP FUNCTION IF EXISTS market_data_track_rows();
DROP TABLE IF EXISTS market_data_changes;
