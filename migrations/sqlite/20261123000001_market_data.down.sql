DROP TRIGGER IF EXISTS market_data_track_update;
DROP TRIGGER IF EXISTS market_data_track_delete;
DROP TRIGGER IF EXISTS market_data_track_insert;
DROP TABLE IF EXISTS market_data_changes;
DROP TABLE IF EXISTS quiver_clock;
DROP TABLE IF EXISTS market_data;
