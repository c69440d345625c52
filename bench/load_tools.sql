-- Load tools for tests and benchmarks: not part of the extension.  Load
-- with psql into a database that has the extension (again at will: it
-- replaces what it created):
--     psql -d db -f bench/load_tools.sql
-- bench/load_person_data.sh and bench/load_perf_data.sh load it themselves.

CREATE SCHEMA IF NOT EXISTS replicator_load;
COMMENT ON SCHEMA replicator_load IS 'replicator load tools for tests and benchmarks (bench/load_tools.sql)';

-- A realistic person event of about 500 bytes, carrying validation data
-- (program, call, k of n) that diff(..., validate => true) checks.
CREATE OR REPLACE FUNCTION replicator_load.person_event(program text, call bigint, k integer, n integer)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
SELECT jsonb_build_object(
	'entityName', 'Person',
	'entityId', md5(program || ':' || call || ':' || k),
	'operation', (ARRAY['created', 'updated', 'updated', 'updated', 'deleted'])[1 + floor(random() * 5)::int],
	'propertyName', (ARRAY['name', 'address', 'email', 'phone'])[1 + floor(random() * 4)::int],
	'value', jsonb_build_object(
		'firstName', first,
		'lastName', last,
		'address', jsonb_build_object(
			'street', (100 + floor(random() * 9800))::int || ' ' ||
					  (ARRAY['Maple', 'Oak', 'Cedar', 'Elm', 'Pine', 'Washington', 'Lake', 'Hill', 'Park', 'Main'])[1 + floor(random() * 10)::int] ||
					  ' ' || (ARRAY['Street', 'Avenue', 'Road', 'Lane', 'Drive'])[1 + floor(random() * 5)::int],
			'city', (ARRAY['Springfield', 'Riverside', 'Fairview', 'Madison', 'Georgetown', 'Franklin', 'Clinton', 'Salem'])[1 + floor(random() * 8)::int],
			'state', (ARRAY['CA', 'NY', 'TX', 'WA', 'IL', 'OR', 'MA', 'FL'])[1 + floor(random() * 8)::int],
			'zip', lpad(floor(random() * 99999)::int::text, 5, '0')),
		'email', lower(first) || '.' || lower(last) || floor(random() * 100)::int || '@example.com',
		'phone', '+1 ' || (200 + floor(random() * 799))::int || ' 555 ' || lpad(floor(random() * 9999)::int::text, 4, '0')),
	'metadata', jsonb_build_object(
		'command', (ARRAY['CreatePerson', 'ChangeName', 'ChangeAddress', 'ChangeEmail'])[1 + floor(random() * 4)::int],
		'initiatorId', md5(program),
		'sessionId', md5(random()::text)),
	'validation', jsonb_build_object('program', program, 'call', call, 'k', k, 'n', n))
FROM (SELECT (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken', 'Margaret', 'Dennis'])[1 + floor(random() * 10)::int] AS first,
			 (ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen', 'Thompson', 'Hamilton', 'Ritchie'])[1 + floor(random() * 10)::int] AS last) names
$$;

-- Load person events: calls of events_per_call events, one transaction
-- per call.  Run several at once (with different programs) for concurrency.
CREATE OR REPLACE PROCEDURE replicator_load.load_person_data(program text, calls integer,
											 events_per_call integer DEFAULT 5,
											 progress_every integer DEFAULT 0)
LANGUAGE plpgsql
AS $$
DECLARE
	-- the event source is in the extension's schema
	source_schema name := (SELECT e.extnamespace::regnamespace::name
						   FROM pg_catalog.pg_extension e WHERE e.extname = 'replicator');
	insert_sql text;
BEGIN
	IF source_schema IS NULL THEN
		RAISE EXCEPTION 'extension replicator is not installed in this database';
	END IF;
	insert_sql := format('SELECT %I.insert_events_array($1)', source_schema);
	IF calls < 1 OR events_per_call < 1 THEN
		RAISE EXCEPTION 'calls and events_per_call must be at least 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR c IN 1..calls LOOP
		EXECUTE insert_sql USING ARRAY(
			SELECT replicator_load.person_event(program, c, k, events_per_call)
			FROM generate_series(1, events_per_call) k);
		COMMIT;
		IF progress_every > 0 AND c % progress_every = 0 THEN
			RAISE NOTICE 'load_person_data %: % of % calls', program, c, calls;
		END IF;
	END LOOP;
END
$$;

-- A small event (about 230 bytes) for latency measurements at a set rate.
CREATE OR REPLACE FUNCTION replicator_load.perf_event()
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
SELECT jsonb_build_object(
	'entityName', 'Sensor',
	'entityId', md5(random()::text),
	'operation', 'measured',
	'propertyName', 'reading',
	'value', round((random() * 1000)::numeric, 3),
	'metadata', jsonb_build_object('command', 'Measure', 'sentAt', clock_timestamp()))
$$;
