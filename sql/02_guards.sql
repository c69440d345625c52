-- events is append-only; rows enter only through insert_events.
INSERT INTO events VALUES (100, now(), '{}');
COPY events FROM stdin;
100	2020-01-01 00:00:00+00	{}
\.
UPDATE events SET event = '{}' WHERE id = 1;
DELETE FROM events WHERE id = 1;
TRUNCATE events;
-- the id table changes only through insert_events
UPDATE id SET id = 1;
INSERT INTO id VALUES (7);
DELETE FROM id;
TRUNCATE id;

-- a statement nested inside insert_events' own insert gets no pass
CREATE FUNCTION sneak() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO events VALUES (1000, now(), '{"sneaked":true}');
	RETURN NEW;
END $$;
CREATE TRIGGER sneak AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION sneak();
SELECT insert_events_array(ARRAY['{"a":1}']::jsonb[]);
DROP TRIGGER sneak ON events;
DROP FUNCTION sneak();

SELECT count(*) = max(id) AS gapless, count(*) FROM events;
SELECT id FROM id;
