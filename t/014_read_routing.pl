
# Read routing: a master and three plain PostgreSQL slaves.  read_replica()
# chooses among the connected, non-stale slaves by the strategy that
# set_read_routing() sets (least-lag, round-robin across all sessions,
# random), honours min_event_id, falls back to the master, and never shows
# a password; replica_status shows stale and tables.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $master = source_node('master');
my @dest = map { destination_node("s$_") } 1 .. 3;

# s2's database has two tables of its own before it is added
$dest[1]->safe_psql('postgres', 'CREATE TABLE a (x int); CREATE TABLE b (x int) PARTITION BY RANGE (x)');

my $master_conn = $master->connstr('postgres');
$master->safe_psql('postgres',
	"SELECT replicator.add_replica('m', \$\$$master_conn password=mastersecret\$\$, role => 'master')");
# add_replica(role => 'master') registers the node (topology work of issue
# 10); until it does, the row it makes
$master->safe_psql('postgres',
	q{INSERT INTO replicator.node_state (name, epoch, master) VALUES ('m', 1, 'm') ON CONFLICT DO NOTHING;
	  SELECT replicator.rescan()});

my %tolerance = (s1 => '1 h', s2 => '2 s', s3 => '500 ms');
for my $i (1 .. 3)
{
	my $conn = $dest[ $i - 1 ]->connstr('postgres');
	$master->safe_psql('postgres',
		"SELECT replicator.add_replica('s$i', \$\$$conn password=slavesecret\$\$,"
		  . " lag_tolerance => '$tolerance{\"s$i\"}')");
}

sub insert_event
{
	my ($n) = @_;
	return $master->safe_psql('postgres',
		qq{SELECT last_id FROM insert_events_array(ARRAY['{"n": $n}']::jsonb[])});
}

insert_event(0);
for my $s (qw(s1 s2 s3))
{
	ok(wait_replica($master, $s), "$s caught up");
}
$master->poll_query_until('postgres',
	q{SELECT count(*) = 3 FROM replicator.replica_status WHERE state = 'streaming'})
  or die 'slaves not streaming';

# n calls of read_replica(min) in one session: the names chosen
sub picks
{
	my ($n, $min, $node) = @_;
	$min //= 'NULL';
	$node //= $master;
	my $out = $node->safe_psql('postgres',
		join('', map { "SELECT coalesce(name, '-') FROM replicator.read_replica($min);\n" } 1 .. $n));
	return split /\n/, $out;
}

# 30 calls in one query, in order: name, and the name before it
my $sample = q{(SELECT r.name, lag(r.name) OVER (ORDER BY g) AS prev FROM generate_series(1, 30) g,
	LATERAL replicator.read_replica(CASE WHEN g > 0 THEN NULL::bigint END) r) c};

# The strategy takes effect once the scan has copied it to shared memory:
# wait until 30 calls look like it (round-robin: 3 slaves, never the same
# twice in a row; random: sometimes the same twice, which 30 rotating calls
# never do, and 30 random calls do but with odds of 1 in 10^5).
my %looks_like = (
	'round-robin' => q{count(DISTINCT name) = 3 AND NOT bool_or(name = prev)},
	'random' => q{bool_or(name = prev)});
sub set_routing
{
	my ($strategy, $ready) = @_;
	$ready //= $looks_like{$strategy};
	$master->safe_psql('postgres', "SELECT replicator.set_read_routing('$strategy')");
	$master->poll_query_until('postgres', "SELECT $ready FROM $sample")
	  or die "routing $strategy not in effect";
}

sub counts
{
	my %c;
	$c{$_}++ for @_;
	return join(' ', map { "$_=$c{$_}" } sort keys %c);
}

# ------------------------------------------------------------------
# Catalog-derived: conninfos without passwords, the master, tables
# ------------------------------------------------------------------
my $row = $master->safe_psql('postgres', 'SELECT name, conninfo FROM replicator.read_replica()');
my $port1 = $dest[0]->port;
like($row, qr/^s1\|.*port='$port1'/, 'least-lag (the default), all equal: the first name, with its conninfo');
unlike($row, qr/secret/, 'read_replica() shows no password');
$row = $master->safe_psql('postgres', 'SELECT name, conninfo FROM replicator.read_replica(1000000)');
my $mport = $master->port;
like($row, qr/^m\|.*port='$mport'/, 'no slave at min_event_id: the master, with its conninfo');
unlike($row, qr/secret/, 'the master\'s conninfo has no password');

# any role may ask, and gets no password either
$master->safe_psql('postgres', 'CREATE ROLE app LOGIN');
$row = $master->safe_psql('postgres', 'SELECT name, conninfo FROM replicator.read_replica(1000000)',
	extra_params => [ '-U', 'app' ]);
like($row, qr/^m\|/, 'a role without privileges calls read_replica()');
unlike($row, qr/secret/, '... and sees no password');

is( $master->safe_psql('postgres',
		q{SELECT string_agg(name || '=' || tables, ' ' ORDER BY name) FROM replicator.replica_status WHERE role = 'slave'}),
	's1=1 s2=3 s3=1',
	'replica_status.tables: the user tables of each destination');

# ------------------------------------------------------------------
# set_read_routing: who, what, where
# ------------------------------------------------------------------
my ($ret, $out, $err) = $master->psql('postgres', q{SELECT replicator.set_read_routing('fastest')});
like($err, qr/invalid read routing strategy "fastest"/, 'an unknown strategy is refused, named');
($ret, $out, $err) = $master->psql('postgres', q{SELECT replicator.set_read_routing('random')},
	extra_params => [ '-U', 'app' ]);
like($err, qr/permission denied/, 'only admins set the strategy');
$master->safe_psql('postgres', 'CREATE DATABASE standalone');
$master->safe_psql('standalone', 'CREATE EXTENSION replicator');
($ret, $out, $err) = $master->psql('standalone', q{SELECT replicator.set_read_routing('random')});
like($err, qr/not a node of a replica topology.*\n.*\n?HINT:.*role => 'master'/s,
	'a standalone source has no strategy to set: register the node first');
is($master->safe_psql('standalone', 'SELECT count(*) FROM replicator.read_replica()'),
	'0', 'a standalone source with no slave: no row');

# ------------------------------------------------------------------
# round-robin: one rotation for all sessions
# ------------------------------------------------------------------
set_routing('round-robin');
my @sessions = map { $master->background_psql('postgres') } 1 .. 3;
my @seq;
for my $i (0 .. 89)
{
	push @seq, $sessions[ $i % 3 ]->query_safe('SELECT name FROM replicator.read_replica()');
}
my %next = (s1 => 's2', s2 => 's3', s3 => 's1');
my $rotates = 1;
for my $i (1 .. $#seq)
{
	$rotates = 0 if ($next{ $seq[ $i - 1 ] } // '') ne $seq[$i];
}
ok($rotates, 'round-robin: calls from 3 sessions take s1, s2, s3 in turn')
  or diag(join(' ', @seq));
is(counts(@seq), 's1=30 s2=30 s3=30', 'round-robin: 90 calls, 30 each');

# ------------------------------------------------------------------
# random: every slave, about equally
# ------------------------------------------------------------------
set_routing('random');
@seq = ();
for my $i (0 .. 299)
{
	push @seq, $sessions[ $i % 3 ]->query_safe('SELECT name FROM replicator.read_replica()');
}
my %c;
$c{$_}++ for @seq;
ok((grep { $seq[$_] eq $seq[ $_ - 1 ] } 1 .. $#seq) > 0, 'random: not a rotation');
ok( (grep { ($c{$_} // 0) >= 50 && ($c{$_} // 0) <= 150 } qw(s1 s2 s3)) == 3,
	'random: 300 calls over s1, s2, s3, each between 50 and 150 times')
  or diag(counts(@seq));

# ------------------------------------------------------------------
# s1 held back (its destination's events locked): lag, least-lag and
# min_event_id; within its 1 h tolerance it stays a candidate
# ------------------------------------------------------------------
my $s1_pos = $master->safe_psql('postgres', q{SELECT position FROM replicator.replica_status WHERE name = 's1'});
my $lock = $dest[0]->background_psql('postgres');
$lock->query_safe('BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE');
my $last = insert_event(1);
ok(wait_replica($master, 's2') && wait_replica($master, 's3'), 's2 and s3 have the new event');
$dest[0]->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'})
  or die 's1 is not waiting for the lock';

set_routing('round-robin');
is(counts(picks(30, $last)), 's2=15 s3=15',
	'round-robin with min_event_id: s1, which lacks it, is never returned');
is(counts(picks(30, $s1_pos)), 's1=10 s2=10 s3=10',
	'round-robin with min_event_id s1 holds: s1 too (1 h tolerance: not stale)');
is(counts(picks(3, $last + 1)), 'm=3', 'no slave holds min_event_id: the master');

set_routing('least-lag', q{bool_and(name = 's2')});
is(counts(picks(30)), 's2=30', 'least-lag: the freshest (s2 before s3 among equals), never s1 behind');
is(counts(picks(10, $s1_pos)), 's2=10', 'least-lag with an old min_event_id: still the freshest');

$lock->query_safe('COMMIT');
$lock->quit;
ok(wait_replica($master, 's1'), 's1 caught up once released');
$master->poll_query_until('postgres',
	q{SELECT name = 's1' FROM replicator.read_replica()})
  or die 'least-lag does not return s1 again';
is(counts(picks(10, $last)), 's1=10', 'least-lag, all caught up: s1 again (first name)');

# ------------------------------------------------------------------
# stale: s3 held back beyond its 500 ms tolerance
# ------------------------------------------------------------------
set_routing('round-robin');
$lock = $dest[2]->background_psql('postgres');
$lock->query_safe('BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE');
$last = insert_event(2);
ok(wait_replica($master, 's1') && wait_replica($master, 's2'), 's1 and s2 have the new event');
ok( $master->poll_query_until('postgres',
		q{SELECT stale FROM replicator.replica_status WHERE name = 's3'}),
	'replica_status: s3 stale once its lag exceeds 500 ms');
is($master->safe_psql('postgres', q{SELECT state FROM replicator.replica_status WHERE name = 's3'}),
	'streaming', 's3 is connected all the while');
ok( $master->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM generate_series(1, 30) g,
		  LATERAL replicator.read_replica(CASE WHEN g > 0 THEN NULL::bigint END) r WHERE r.name = 's3'}),
	'read_replica() leaves stale s3 out');
is(counts(picks(30)), 's1=15 s2=15', 'round-robin over the two fresh slaves only');
is($master->safe_psql('postgres',
		q{SELECT string_agg(name, ' ' ORDER BY name) FROM replicator.replica_status WHERE stale}),
	's3', 'only s3 is stale');

$lock->query_safe('COMMIT');
$lock->quit;
ok(wait_replica($master, 's3'), 's3 caught up once released');
ok( $master->poll_query_until('postgres',
		q{SELECT NOT stale FROM replicator.replica_status WHERE name = 's3'}),
	'replica_status: s3 no longer stale');
ok( $master->poll_query_until('postgres',
		q{SELECT count(DISTINCT r.name) = 3 FROM generate_series(1, 30) g,
		  LATERAL replicator.read_replica(CASE WHEN g > 0 THEN NULL::bigint END) r}),
	'read_replica() returns s3 again');

# ------------------------------------------------------------------
# stale: s2 paused while events arrive, beyond its 2 s tolerance
# ------------------------------------------------------------------
$master->safe_psql('postgres', q{SELECT replicator.pause_replica('s2')});
$last = insert_event(3);
ok( $master->poll_query_until('postgres',
		q{SELECT stale FROM replicator.replica_status WHERE name = 's2'}),
	'replica_status: paused s2 stale once its lag exceeds 2 s');
$master->poll_query_until('postgres', "SELECT count(*) FILTER (WHERE name = 's2') = 0 FROM $sample")
  or die 'paused s2 still returned';
is(counts(picks(30)), 's1=15 s3=15', 'paused s2 is never returned');
$master->safe_psql('postgres', q{SELECT replicator.resume_replica('s2')});
ok(wait_replica($master, 's2'), 's2 caught up once resumed');
ok( $master->poll_query_until('postgres',
		q{SELECT NOT stale FROM replicator.replica_status WHERE name = 's2'}),
	'replica_status: s2 no longer stale');
ok( $master->poll_query_until('postgres',
		q{SELECT count(DISTINCT r.name) = 3 FROM generate_series(1, 30) g,
		  LATERAL replicator.read_replica(CASE WHEN g > 0 THEN NULL::bigint END) r}),
	'read_replica() returns s2 again');

$_->quit for @sessions;
done_testing();
