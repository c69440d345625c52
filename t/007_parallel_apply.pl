
# Catch-up applies large batches in two destination sessions side by side
# and commits them in id order: readers on the destination never see a gap,
# and a destination stopped in immediate mode while both sessions hold a
# batch loses nothing and doubles nothing (compared row by row).
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ReplicatorTest;

# batches of 1000 events of about 600 bytes: large enough to go side by side
my $source = source_node('source', 'replicator.max_events_per_write = 1000',
	'replicator.destination_sessions = 2');
my $dest = destination_node('dest');

my $total = 200_000;
$source->safe_psql(
	'postgres', qq{
DO \$\$
BEGIN
	FOR c IN 1 .. $total / 1000 LOOP
		PERFORM insert_events_array(ARRAY(SELECT jsonb_build_object('call', c, 'k', k, 'entityName', 'Person',
		                                                      'pad', repeat('x', 500))
		                            FROM generate_series(1, 1000) k));
	END LOOP;
END \$\$});

add_replica($source, 'd', $dest);
$dest->poll_query_until('postgres', q{SELECT to_regclass('events') IS NOT NULL})
  or die 'the worker did not create the events table';

# Sample the destination while it catches up: is what it shows gapless, and
# how many of the worker's sessions are inside a transaction at once?
my ($samples, $gapless, $side_by_side) = (0, 0, 0);
my $count = 0;

sub sample
{
	my ($ok, $busy, $n) = split /\|/, $dest->safe_psql(
		'postgres', q{
SELECT count(*) = coalesce(max(id), 0),
       (SELECT count(*) FROM pg_stat_activity
         WHERE application_name = 'replicator:postgres:d'
           AND state IN ('active', 'idle in transaction')),
       count(*)
  FROM events});
	$samples++;
	$gapless++ if $ok eq 't';
	$side_by_side++ if $busy >= 2;
	$count = $n;
}

sub sample_until
{
	my ($target) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		sample();
		return 1 if $count >= $target;
	}
	return 0;
}

for my $at (60_000, 120_000)
{
	sample_until($at) or die "the destination did not reach $at events";
	$dest->stop('immediate');
	$dest->start;
}
sample_until($total) or die 'the destination did not catch up';

is($gapless, $samples, "the destination showed a gapless prefix in all $samples samples");
ok($side_by_side > 0,
	"two sessions held a batch at the same time ($side_by_side of $samples samples)");
ok(wait_replica($source, 'd'), 'caught up after two immediate stops');
compare_events($source, $dest, 'the destination equals the source');
is($source->safe_psql('postgres', q{SELECT count(*) FROM replicator.diff('d')}),
	'0', 'replicator.diff finds no difference');
is( $source->safe_psql('postgres',
		q{SELECT events_sent >= 200000 AND last_error IS NOT NULL FROM replicator.replica_status}),
	't', 'replica_status counts the events sent and reports the outages');

# --- a second session that cannot be had: the worker applies in one
$dest->safe_psql('postgres',
	q{CREATE ROLE limited LOGIN CONNECTION LIMIT 1; CREATE DATABASE limited OWNER limited});
my $conn = $dest->connstr('limited') . ' user=limited';
$source->safe_psql('postgres', "SELECT replicator.add_replica('one_session', \$\$$conn\$\$)");
ok(wait_replica($source, 'one_session'), 'a destination that allows one session is streamed to');
is($dest->safe_psql('limited', 'SELECT count(*) = max(id) AND max(id) = ' . $total . ' FROM events'),
	't', 'it holds every event');
ok( $source->log_contains(
		'replicator:postgres:one_session: applying in 1 session\(s\) instead of 2'),
	'the log says it applies in one session, and why');

# --- timeouts set for the destination's users do not reach the worker's
# sessions: 1 ms would abort every COPY batch and every batch waiting its
# turn to commit, and streaming would never get anywhere
$dest->safe_psql('postgres', q{CREATE ROLE hurried LOGIN;
	ALTER ROLE hurried SET statement_timeout = '1ms';
	ALTER ROLE hurried SET idle_in_transaction_session_timeout = '1ms';
	CREATE DATABASE hurried OWNER hurried});
$conn = $dest->connstr('hurried') . ' user=hurried';
$source->safe_psql('postgres', "SELECT replicator.add_replica('hurried', \$\$$conn\$\$)");
ok(wait_replica($source, 'hurried'),
	'a destination whose role has 1 ms statement and idle-in-transaction timeouts catches up');
compare_events($source, $dest, 'it equals the source', 'hurried');

done_testing();
