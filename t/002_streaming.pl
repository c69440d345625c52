
# Streaming from a source to two destinations, each on its own server, under
# concurrent writers and through crashes: a destination stopped in immediate
# mode five times mid-stream, then the source.  After each phase the tables
# are compared row by row: nothing lost, nothing doubled, values exact.
# Batches never exceed replicator.max_events_per_write and end at call
# boundaries unless one call alone is larger.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use ReplicatorTest;

my $limit = 100;
my $source = source_node('source', "replicator.max_events_per_write = $limit");
my $dest1 = destination_node('dest1');
my $dest2 = destination_node('dest2');

# dest2 logs every statement's rows, and which statement it was: one
# statement is one batch.
$dest2->safe_psql(
	'postgres', q{
CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL);
CREATE TABLE batches (n int, first_id bigint, last_id bigint, how text);
CREATE FUNCTION log_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO batches
	SELECT count(*), min(id), max(id),
	       CASE WHEN current_query() LIKE 'COPY%' THEN 'copy'
	            WHEN current_query() LIKE '%unnest%' THEN 'insert arrays'
	            WHEN current_query() LIKE '%VALUES%' THEN 'insert values'
	            ELSE current_query() END
	  FROM new_rows;
	RETURN NULL;
END $$;
CREATE TRIGGER log_batch AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION log_batch();
});

add_replica($source, 'd1', $dest1);
add_replica($source, 'd2', $dest2);

# Writers: pgbench, calls of 1 to 150 events (some larger than a batch),
# rate-limited so that a run stays small.
my $script = $source->basedir . '/writer.sql';
PostgreSQL::Test::Utils::append_to_file($script, <<'EOS');
\set tag random(1, 1000000000000)
\set n random(1, 150)
SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('client', :client_id, 'tag', :tag, 'k', k, 'n', :n, 'entityName', 'Person', 'entityId', md5(:tag::text), 'pad', repeat('x', 300), 'num', 3.14159265358979323846264338327950288) FROM generate_series(1, :n) k));
EOS

sub start_writers
{
	my ($clients, $seconds, $rate) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'pgbench', '--no-vacuum', "--client=$clients", '--jobs=2',
			"--time=$seconds", "--rate=$rate", '-f', $script,
			'-h', $source->host, '-p', $source->port, 'postgres'
		],
		'>', \$out, '2>', \$err);
	return $h;
}

# --- live streaming under concurrent writers: 4 pgbench clients, and 2
# clients of the person-data tool (whose calls diff validates)
my $writers = start_writers(4, 8, 40);
my $person = `bench/load_person_data.sh --clients 2 --events-per-call 9 --total 9000 --host @{[$source->host]} --port @{[$source->port]} 2>&1`;
is($?, 0, 'load_person_data.sh ran meanwhile') or diag($person);
$writers->finish;
cmp_ok(events_count($source), '>', 1000, 'writers inserted events');
ok(wait_replica($source, 'd1'), 'd1 caught up with 4 concurrent writers');
ok(wait_replica($source, 'd2'), 'd2 caught up with 4 concurrent writers');
compare_events($source, $dest1, 'd1 equals the source');
compare_events($source, $dest2, 'd2 equals the source');

is( $source->safe_psql(
		'postgres',
		q{SELECT string_agg(name || ':' || state || ':' || lag_events || ':' || lag, ',' ORDER BY name)
		  FROM replicator.replica_status}),
	'd1:streaming:0:00:00:00,d2:streaming:0:00:00:00',
	'replica_status: both streaming, no lag');
is( $source->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity
		  WHERE backend_type = 'replicator streaming' AND application_name IN ('replicator:postgres:d1', 'replicator:postgres:d2')}),
	'2',
	'pg_stat_activity shows a streaming worker per destination, named');
is( $dest1->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replicator:postgres:d1'}),
	'2',
	'the destination sees application_name replicator:<source db>:<replica> on each of the worker\'s sessions (replicator.destination_sessions = 2)');

# --- a destination stopped in immediate mode mid-stream, five times
$writers = start_writers(4, 120, 20);
for my $round (1 .. 5)
{
	my $before = events_count($dest1);
	$dest1->poll_query_until('postgres', "SELECT count(*) > $before FROM events")
	  or die "d1 did not advance before crash $round";
	$dest1->stop('immediate');
	my $src_count = events_count($source);
	$source->poll_query_until('postgres', "SELECT count(*) > $src_count + 300 FROM events")
	  or die "the source did not advance while d1 was down ($round)";
	$dest1->start;
}
$writers->kill_kill;
$writers->finish;
ok( $source->safe_psql('postgres',
		q{SELECT last_error IS NOT NULL FROM replicator.replica_status WHERE name = 'd1'}) eq 't',
	'the outages were reported in replica_status');
ok(wait_replica($source, 'd1'), 'd1 caught up after five immediate stops');
ok(wait_replica($source, 'd2'), 'd2 kept streaming meanwhile');
compare_events($source, $dest1, 'd1 equals the source after five crashes');
compare_events($source, $dest2, 'd2 equals the source');

# --- the source stopped in immediate mode mid-stream
$writers = start_writers(4, 60, 30);
my $mark = events_count($source);
$source->poll_query_until('postgres', "SELECT count(*) > $mark + 500 FROM events")
  or die 'the writers did not advance';
$source->stop('immediate');
$writers->kill_kill;
$writers->finish;
$source->start;
$source->safe_psql('postgres',
	q{SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('after', 'source crash', 'k', k) FROM generate_series(1, 50) k))});
ok(wait_replica($source, 'd1'), 'd1 caught up after the source crashed');
ok(wait_replica($source, 'd2'), 'd2 caught up after the source crashed');
is($source->safe_psql('postgres', 'SELECT count(*) = max(id) FROM events'), 't',
	'the source is still gapless after its crash');
compare_events($source, $dest1, 'd1 equals the source after the source crash');
compare_events($source, $dest2, 'd2 equals the source after the source crash');

for my $d ('d1', 'd2')
{
	is($source->safe_psql('postgres', "SELECT count(*) FROM replicator.diff('$d', validate => true)"),
		'0', "replicator.diff finds no difference on $d, and every person-data call whole on both sides");
}

# --- batches: never above the limit, ending at call boundaries
my $batches = $dest2->safe_psql('postgres', 'SELECT count(*), max(n) FROM batches');
my ($nbatches, $largest) = split /\|/, $batches;
cmp_ok($nbatches, '>', 20, "many batches were written ($nbatches)");
cmp_ok($largest, '<=', $limit, "no batch above max_events_per_write ($largest <= $limit)");
is( $dest2->safe_psql(
		'postgres', qq{
		SELECT count(*) FROM batches b
		  JOIN events last ON last.id = b.last_id
		  JOIN events next ON next.id = b.last_id + 1
		 WHERE next.ts = last.ts
		   AND (SELECT count(*) FROM events e WHERE e.ts = last.ts) <= $limit}),
	'0',
	'no batch ends inside a call that would have fitted in a batch');
is( $dest2->safe_psql(
		'postgres', q{SELECT count(*) FROM (SELECT first_id, last_id, n FROM batches) b
		  WHERE last_id - first_id + 1 <> n}),
	'0',
	'every batch is a contiguous range of ids');
is( $dest2->safe_psql(
		'postgres', q{SELECT string_agg(how || ':' || ok, ',' ORDER BY how) FROM (
		  SELECT how, bool_and(CASE how WHEN 'insert values' THEN n = 1
		                                WHEN 'insert arrays' THEN n BETWEEN 2 AND 64
		                                ELSE n >= 1 END) AS ok
		    FROM batches GROUP BY how) s}),
	'copy:true,insert arrays:true,insert values:true',
	'batches were written three ways: one event by INSERT VALUES, up to 64 by INSERT of arrays, more by COPY');

$source->stop;
$dest1->stop;
$dest2->stop;
done_testing();
