
# The event source under concurrency: 8 sessions call both forms of
# insert_events, some transactions rolling back; ids must stay gapless,
# every call contiguous, and ts must never decrease as id grows.
# Also: notification payloads, and the warning when not preloaded.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('source');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'replicator'\n");
$node->start;

my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION replicator');
is($ret, 0, 'CREATE EXTENSION with the library preloaded');
unlike($err, qr/WARNING/, 'no warning when preloaded');

# Each event records its call: client, a random tag, its number k of n, the
# form used, and whether the transaction is going to roll back.
my $event = q{jsonb_build_object('client', :client_id, 'tag', :tag, 'k', k, 'n', :n, 'form', '%s', 'rb', :rb, 'pad', repeat('p', 200))};
my $tail = <<'EOS';
\if :rb = 0
ROLLBACK;
\else
COMMIT;
\endif
EOS
my $head = <<'EOS';
\set tag random(1, 1000000000000)
\set n random(1, 25)
\set rb random(0, 3)
BEGIN;
EOS
my $jsonb_call = sprintf(
	"SELECT insert_events_array(ARRAY(SELECT %s FROM generate_series(1, :n) k));\n",
	sprintf($event, 'jsonb'));
my $text_call = sprintf(
	"SELECT insert_events((SELECT string_agg(format('(\$1[%%s], \$2, %%L)', k, %s), ',' ORDER BY k) FROM generate_series(1, :n) k));\n",
	sprintf($event, 'text'));

$node->pgbench(
	'--no-vacuum --client=8 --jobs=2 --transactions=150',
	0,
	[qr{processed: 1200/1200}],
	[qr{^$}],
	'8 concurrent sessions insert with both forms, a quarter rolling back',
	{
		'insert_jsonb' => $head . $jsonb_call . $tail,
		'insert_text' => $head . $text_call . $tail,
		'insert_two_calls' => $head . $jsonb_call . $text_call . $tail,
	});

my $q = sub { $node->safe_psql('postgres', shift) };

my $total = $q->('SELECT count(*) FROM events');
cmp_ok($total, '>', 1000, "events were inserted ($total)");
is($q->('SELECT count(*) = max(id) AND min(id) = 1 FROM events'), 't',
	'count = max(id): ids are exactly 1..max, no gap');
is($q->("SELECT count(*) FROM events WHERE (event->>'rb')::int = 0"), '0',
	'no event of a rolled-back transaction is visible');
is($q->('SELECT id FROM id'), $total + 1, 'the id table holds max(id) + 1');

# A call is (client, tag, form): all its events contiguous, in k order,
# sharing one ts, and complete.
is( $q->(
		q{SELECT count(*) FROM (
			SELECT event->>'client', event->>'tag', event->>'form',
				   count(*) AS c, max((event->>'n')::int) AS n,
				   max(id) - min(id) + 1 AS span, count(DISTINCT ts) AS ts_values,
				   bool_and(id - (event->>'k')::int = min_id - 1) AS in_order
			FROM (SELECT *, min(id) OVER w AS min_id FROM events
				  WINDOW w AS (PARTITION BY event->>'client', event->>'tag', event->>'form')) e
			GROUP BY 1, 2, 3) calls
		  WHERE c <> n OR span <> n OR ts_values <> 1 OR NOT in_order}),
	'0',
	'every call is complete, contiguous, in order and has one ts');

is( $q->(
		q{SELECT count(*) FROM (SELECT ts, lag(ts) OVER (ORDER BY id) AS prev FROM events) s
		  WHERE ts < prev}),
	'0',
	'ts never decreases as id grows');
is( $q->(
		q{SELECT count(DISTINCT ts) = count(DISTINCT (event->>'client', event->>'tag', event->>'form'))
		  FROM events}),
	't',
	'each call has a ts of its own');
is($q->('SELECT count(DISTINCT event->>\'form\') FROM events'), '2', 'both forms were exercised');

# Notifications: slate's payload, with the event only where it fits.
my $listen = $node->safe_psql(
	'postgres', q{
LISTEN eventsinsert;
SELECT insert_events_array(ARRAY['{"small":true}']::jsonb[]);
SELECT insert_events_array(ARRAY[jsonb_build_object('big', repeat('x', 5 * 1024 * 1024))]);
SELECT insert_events_array(ARRAY[jsonb_build_object('fits', repeat('f', 7900))]);
SELECT insert_events_array(ARRAY[jsonb_build_object('edge', repeat('y', 7980))]);
SELECT 1;
});
my @payloads = $listen =~ /with payload "(.*?)" received/g;
is(scalar(@payloads), 4, 'one notification per event');
my $small = $total + 1;
like($payloads[0], qr/^\{"table":"events","id":$small,"event":\{"small": true\}\}$/,
	'a small event is notified with table, id and event');
my $big = $total + 2;
is($payloads[1], qq({"table":"events","id":$big}), 'a 5 MB event is notified without its body');
my $fits = $total + 3;
like($payloads[2], qr/^\{"table":"events","id":$fits,"event":\{"fits": "f{7900}"\}\}$/,
	'an event of 7.9 kB still travels in its notification');
my $edge = $total + 4;
is($payloads[3], qq({"table":"events","id":$edge}), 'an event just over the limit is notified without its body');

# Without shared_preload_libraries the event source works but warns.
my $plain = PostgreSQL::Test::Cluster->new('not_preloaded');
$plain->init;
$plain->start;
($ret, $out, $err) = $plain->psql('postgres', 'CREATE EXTENSION replicator');
is($ret, 0, 'CREATE EXTENSION works without preloading');
like($err, qr/WARNING:  replicator is not loaded through shared_preload_libraries/, 'it warns that streaming needs preloading');
like($err, qr/HINT:  Add shared_preload_libraries = 'replicator' to postgresql.conf/, 'the hint gives the setting');
is($plain->safe_psql('postgres', q{SELECT last_id FROM insert_events_array(ARRAY['{}']::jsonb[])}), '1',
	'insert_events works without preloading');
$plain->stop;

$node->stop;
done_testing();
