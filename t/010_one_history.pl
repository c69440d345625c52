
# One destination, one history: a destination only ever holds a gapless
# prefix of one source's history.  (a) an event committed with
# synchronous_commit = off leaves only once its commit is durable, so a
# source crash cannot leave it on the destination alone; (b) a pg_basebackup
# clone started as a server of its own and racing the original for one
# destination: one of the two ends invalid, the destination holds one
# history; (c) a primary-key violation while applying is a validation
# failure; (d) a replica dropped and added again in one transaction, and
# the extension dropped and created again in one transaction, make the
# running worker start over with full checks.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

sub state_of
{
	my ($node, $name) = @_;
	return $node->safe_psql('postgres',
		"SELECT state FROM replicator.replica_status WHERE name = '$name'");
}

sub last_error_of
{
	my ($node, $name) = @_;
	return $node->safe_psql('postgres',
		"SELECT last_error FROM replicator.replica_status WHERE name = '$name'");
}

sub insert
{
	my ($node, $tag, $n) = @_;
	$node->safe_psql('postgres',
		"SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('tag', '$tag', 'k', k) FROM generate_series(1, $n) k))");
}

# ---------------------------------------------------------------------------
# (a) durable before sent.  The WAL writer flushes only every 10 s, so an
# asynchronous commit stays in memory until something flushes it.
my $source = source_node('source', 'wal_writer_delay = 10s');
my $dest_a = destination_node('dest_a');
insert($source, 'before', 5);
add_replica($source, 'a', $dest_a);
ok(wait_replica($source, 'a'), 'a: the destination caught up');

# small, so that the WAL writer is not woken by a full page of async WAL
$source->safe_psql('postgres',
	q{SET synchronous_commit = off; SELECT insert_events_array(ARRAY['{"async": 1}', '{"async": 2}']::jsonb[])});
$dest_a->poll_query_until('postgres', 'SELECT count(*) = 7 FROM events')
  or die 'the asynchronously committed events did not reach the destination';
$source->stop('immediate');
$source->start;
insert($source, 'after', 5);
ok(wait_replica($source, 'a'), 'a: the destination caught up after the crash');
compare_events($source, $dest_a,
	'a: after a crash, the destination equals the source: no event of an asynchronous commit got out before it was durable');
isnt(state_of($source, 'a'), 'invalid', 'a: the replica is valid');

# ---------------------------------------------------------------------------
# (c) a row at the destination ahead of the stream: a primary-key violation
# while applying marks the replica invalid, it is never skipped.
my $dest_c = destination_node('dest_c');
add_replica($source, 'c', $dest_c);
ok(wait_replica($source, 'c'), 'c: the destination caught up');
my $next = $dest_c->safe_psql('postgres', 'SELECT max(id) + 1 FROM events');
$dest_c->safe_psql('postgres',
	qq{INSERT INTO events VALUES ($next, now(), '{"written": "at the destination"}')});
insert($source, 'secret-contents', 3);
$source->poll_query_until('postgres',
	"SELECT state = 'invalid' FROM replicator.replica_status WHERE name = 'c'")
  or die 'c was not marked invalid';
my $reason = last_error_of($source, 'c');
like($reason, qr/^unique violation on constraint "events_pkey" while applying events $next to \d+: the destination holds events this source did not send/,
	'c: a primary-key violation while applying marks the replica invalid, with the reason');
unlike($reason, qr/secret-contents|at the destination/, 'c: the reason holds no event contents');
is($dest_c->safe_psql('postgres', "SELECT count(*), max(id) = $next FROM events WHERE id >= $next"),
	'1|t', 'c: nothing was applied past the foreign row');
ok(wait_replica($source, 'a'), 'c: the other replica keeps streaming');
compare_events($source, $dest_a, 'c: the other destination equals the source');
$source->safe_psql('postgres', q{SELECT replicator.drop_replica('c')});
$dest_c->stop;

# ---------------------------------------------------------------------------
# (d) the replica dropped and added again in one transaction, to another
# destination: the running worker notices and starts over there.
my $dest_d = destination_node('dest_d');
my $conn_d = $dest_d->connstr('postgres');
$source->safe_psql('postgres',
	"BEGIN; SELECT replicator.drop_replica('a'); SELECT replicator.add_replica('a', \$\$$conn_d\$\$); COMMIT;");
insert($source, 'readded', 3);
ok(wait_replica($source, 'a'), 'd: the re-added replica caught up');
compare_events($source, $dest_d, 'd: a replica dropped and added again in one transaction streams to its new destination');
$dest_d->stop;

# The extension dropped and created again in one transaction, with a
# replica of the same name and destination: the old worker must not append
# the new source's events to the old history.
my $conn_a = $dest_a->connstr('postgres');
$source->safe_psql('postgres',
	"SELECT replicator.drop_replica('a'); SELECT replicator.add_replica('a', \$\$$conn_a\$\$)");
insert($source, 'old', 2);
ok(wait_replica($source, 'a'), 'd: the destination caught up with the old history');
my $old_history = dump_events($dest_a);
my $old_count = events_count($dest_a);
$source->safe_psql('postgres',
	"BEGIN; DROP EXTENSION replicator; CREATE EXTENSION replicator;"
	  . " SELECT replicator.add_replica('a', \$\$$conn_a\$\$); COMMIT;");
# more events than the destination holds: an old position would take them
insert($source, 'new', $old_count + 5);
$source->poll_query_until('postgres',
	"SELECT state = 'invalid' FROM replicator.replica_status WHERE name = 'a'")
  or die 'a was not marked invalid after the extension was created again';
like(last_error_of($source, 'a'), qr/^(not ahead of source|same first event|same last event):/,
	'd: after DROP and CREATE EXTENSION in one transaction the old destination is invalid');
is(dump_events($dest_a), $old_history, 'd: nothing of the new source was appended to the old history');
$source->stop;
$dest_a->stop;

# ---------------------------------------------------------------------------
# (b) a pg_basebackup clone started as a server of its own: the same
# catalog, streaming to the same destination as the original.
my $orig = PostgreSQL::Test::Cluster->new('orig');
$orig->init(allows_streaming => 1);
$orig->append_conf('postgresql.conf',
	"shared_preload_libraries = 'replicator'\nmax_worker_processes = 16\n");
$orig->start;
$orig->safe_psql('postgres', 'CREATE EXTENSION replicator');
my $dest_b = destination_node('dest_b');
insert($orig, 'common', 10);
add_replica($orig, 'b', $dest_b);
ok(wait_replica($orig, 'b'), 'b: the destination caught up with the original');

$orig->backup('clone_backup');
my $clone = PostgreSQL::Test::Cluster->new('clone');
$clone->init_from_backup($orig, 'clone_backup');
$clone->start;

# both write, each its own history, while both workers stream
for my $i (1 .. 10)
{
	insert($orig, "orig$i", 3);
	insert($clone, "clone$i", 3);
}
my $invalid_sql = q{SELECT count(*) FROM replicator.replica_status WHERE name = 'b' AND state = 'invalid'};
my $poll = 0;
while ($orig->safe_psql('postgres', $invalid_sql) + $clone->safe_psql('postgres', $invalid_sql) == 0)
{
	die 'neither source was marked invalid' if ++$poll > $PostgreSQL::Test::Utils::timeout_default * 5;
	insert($orig, "orig-more", 1);
	insert($clone, "clone-more", 1);
}
my ($winner, $loser) = $orig->safe_psql('postgres', $invalid_sql) ? ($clone, $orig) : ($orig, $clone);
note('the ' . $loser->name . ' lost the race');
insert($winner, 'winner', 5);
ok(wait_replica($winner, 'b'), 'b: the winner keeps streaming');
is($orig->safe_psql('postgres', $invalid_sql) + $clone->safe_psql('postgres', $invalid_sql),
	1, 'b: exactly one of the two sources has its replica invalid');
like(last_error_of($loser, 'b'),
	qr/^(unique violation on constraint "events_pkey" while applying events|same last event: the destination's event at its max\(id\) \d+ differs|not ahead of source:)/,
	'b: with a clear reason');
compare_events($winner, $dest_b, 'b: the destination holds exactly one source\'s history');

$clone->stop;
$orig->stop;
$dest_b->stop;
done_testing();
