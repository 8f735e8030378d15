-- broker-example schema: a small stand-in for the broker's Postgres schema.
-- Run once by the postgres image from /docker-entrypoint-initdb.d.

CREATE TABLE IF NOT EXISTS sources (
    source_name TEXT PRIMARY KEY
);

INSERT INTO sources (source_name) VALUES ('ttn'), ('ydoc'), ('wombat')
    ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS physical_devices (
    uid SERIAL PRIMARY KEY,
    source_name TEXT NOT NULL REFERENCES sources,
    name TEXT NOT NULL,
    location POINT,
    last_seen TIMESTAMPTZ,
    source_ids JSONB NOT NULL DEFAULT '{}',
    properties JSONB NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS logical_devices (
    uid SERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    location POINT,
    last_seen TIMESTAMPTZ,
    properties JSONB NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS physical_logical_map (
    physical_uid INTEGER NOT NULL REFERENCES physical_devices,
    logical_uid INTEGER NOT NULL REFERENCES logical_devices,
    start_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    end_time TIMESTAMPTZ,
    PRIMARY KEY (physical_uid, logical_uid, start_time)
);

CREATE TABLE IF NOT EXISTS raw_messages (
    uid SERIAL PRIMARY KEY,
    source_name TEXT NOT NULL REFERENCES sources,
    physical_uid INTEGER REFERENCES physical_devices,
    ts TIMESTAMPTZ NOT NULL DEFAULT now(),
    json_msg JSONB NOT NULL
);

CREATE INDEX IF NOT EXISTS raw_messages_physical_uid_ts ON raw_messages (physical_uid, ts);
