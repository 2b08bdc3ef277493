-- A week of the shop's recorded load, as TimescaleDB's continuous aggregate
-- `metrics_1m` holds it (HIP-0059): the gateway's requests per second per
-- minute, from Friday 2026-02-20 to Thursday 2026-02-26 (UTC). A daily cycle
-- peaking at 15:00, quieter weekends, and a two-hour sale on Tuesday evening
-- at 1.8 times the load; plus a service the shop's topology lacks (billing),
-- which a replay leaves out and names.
--   psql "$HANZO_TWIN_TIMESERIES_URL" -f configs/infra/week/recorded-week.sql
CREATE TABLE IF NOT EXISTS metrics_1m (
    bucket timestamptz NOT NULL,
    metric text NOT NULL,
    service text NOT NULL,
    avg_value double precision NOT NULL
);
DELETE FROM metrics_1m
WHERE bucket >= '2026-02-20 00:00+00' AND bucket < '2026-02-27 00:00+00'
  AND service IN ('gateway', 'billing');
INSERT INTO metrics_1m
SELECT b, 'hanzo_requests_per_second', 'gateway',
       (110 + 70 * sin(2 * pi() * (extract(epoch FROM b) / 3600 - 9) / 24))
       * CASE WHEN extract(isodow FROM b) IN (6, 7) THEN 0.7 ELSE 1 END
       * CASE WHEN b >= '2026-02-24 18:00+00' AND b < '2026-02-24 20:00+00' THEN 1.8 ELSE 1 END
FROM generate_series(timestamptz '2026-02-20 00:00+00', timestamptz '2026-02-26 23:59+00',
                     interval '1 minute') AS b;
INSERT INTO metrics_1m
SELECT bucket, metric, 'billing', 4 FROM metrics_1m
WHERE service = 'gateway' AND bucket >= '2026-02-20 00:00+00' AND bucket < '2026-02-27 00:00+00';
