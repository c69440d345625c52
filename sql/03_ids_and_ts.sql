-- Ids are gapless across rollbacks; ts is one per call and strictly increasing.
BEGIN;
SELECT first_id, last_id FROM insert_events_array(ARRAY['{"r":1}','{"r":2}']::jsonb[]);
ROLLBACK;
BEGIN;
SELECT insert_events($$($1[1], $2, '{"r":3}')$$);
ROLLBACK;
SELECT first_id, last_id FROM insert_events_array(ARRAY['{"after":"rollback"}']::jsonb[]);
SELECT count(*) = max(id) AS gapless, min(id) = 1 AS starts_at_1 FROM events;

-- a failed call inside a transaction leaves no trace either
BEGIN;
SELECT first_id FROM insert_events_array(ARRAY['{"kept":1}']::jsonb[]);
SAVEPOINT s;
SELECT insert_events($$($1[1], $2, 'bad json')$$);
ROLLBACK TO s;
SELECT first_id FROM insert_events_array(ARRAY['{"kept":2}']::jsonb[]);
COMMIT;
SELECT count(*) = max(id) AS gapless FROM events;

-- several calls in one transaction: each call its own ts, strictly increasing
BEGIN;
SELECT last_id FROM insert_events_array(ARRAY(SELECT jsonb_build_object('call', 1, 'k', k) FROM generate_series(1, 50) k));
SELECT last_id FROM insert_events_array(ARRAY(SELECT jsonb_build_object('call', 2, 'k', k) FROM generate_series(1, 50) k));
SELECT last_id FROM insert_events_array(ARRAY['{"call":3}']::jsonb[]);
COMMIT;
SELECT event->>'call' AS call, count(*), count(DISTINCT ts) AS distinct_ts
  FROM events WHERE event ? 'call' GROUP BY 1 ORDER BY 1;
SELECT bool_and(a.ts < b.ts) AS strictly_increasing
  FROM (SELECT DISTINCT ON (event->>'call') event->>'call' AS call, ts FROM events WHERE event ? 'call') a
  JOIN (SELECT DISTINCT ON (event->>'call') event->>'call' AS call, ts FROM events WHERE event ? 'call') b
    ON b.call::int = a.call::int + 1;

-- across all events: ts never decreases as id grows, and changes only between calls
SELECT count(*) FILTER (WHERE ts < prev) AS decreasing FROM
  (SELECT ts, lag(ts) OVER (ORDER BY id) AS prev FROM events) s;
SELECT last_ts = (SELECT max(ts) FROM events) AS id_row_keeps_last_ts FROM id;
