-- An event of any size inserts and notifies without error (slate fails above ~8 kB).
SELECT first_id = last_id AS one_event
  FROM insert_events_array(ARRAY[jsonb_build_object('entityName', 'Blob', 'data', repeat('x', 5 * 1024 * 1024))]);
SELECT insert_events(format('($1[1], $2, %L)', jsonb_build_object('data', repeat('y', 9000))));
SELECT length(event->>'data') FROM events WHERE event ? 'data' ORDER BY id;
