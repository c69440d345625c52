
# What a worker checks each time it connects, judged by what the destination
# server says, and the worker's life: woken at commit, started again when it
# dies.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

# The poll interval is an hour: events can only arrive promptly if the
# commit wakes the worker.  One destination session: batches one at a time.
my $source = source_node('source', 'replicator.poll_interval = 1h',
	'replicator.destination_sessions = 1', "listen_addresses = '127.0.0.1'");
my $dest = destination_node('dest');
$dest->append_conf('postgresql.conf', "listen_addresses = '127.0.0.1'\n");
$dest->restart;

$source->safe_psql('postgres',
	q{SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('k', k) FROM generate_series(1, 10) k))});

sub invalid_with
{
	my ($name, $pattern, $test_name) = @_;
	$source->poll_query_until('postgres',
		"SELECT state = 'invalid' FROM replicator.replica_status WHERE name = '$name'")
	  or die "$name was not marked invalid";
	like($source->safe_psql('postgres', "SELECT last_error FROM replicator.replica_status WHERE name = '$name'"),
		$pattern, $test_name);
}

# --- woken at commit
add_replica($source, 'main', $dest);
ok(wait_replica($source, 'main'), 'the destination caught up');
$source->safe_psql('postgres', q{SELECT insert_events_array(ARRAY['{"woken":"at commit"}']::jsonb[])});
ok(wait_replica($source, 'main', 10), 'a committed event arrives within seconds with poll_interval = 1h: the commit woke the worker');

# --- the same servers reached by other addresses
my ($src_port, $dst_port) = ($source->port, $dest->port);
$source->safe_psql('postgres',
	"SELECT replicator.add_replica('self', 'host=127.0.0.1 port=$src_port dbname=postgres')");
invalid_with('self', qr/^not the source: the destination is the source database itself \(\d+\/$src_port\/postgres\)$/,
	'the source over TCP is recognised as the source itself');
$source->safe_psql('postgres',
	"SELECT replicator.add_replica('again', 'host=localhost port=$dst_port dbname=postgres')");
invalid_with('again', qr/^distinct destination: replica "main" already streams to this database/,
	'a destination reached by another address (localhost, not the socket) is the same destination');

# --- destinations whose events table cannot be right
$dest->safe_psql('postgres', 'CREATE DATABASE wrong_columns');
$dest->safe_psql('wrong_columns', 'CREATE TABLE events (id int PRIMARY KEY, ts timestamptz, event json)');
add_replica($source, 'wrong_columns', $dest, dbname => 'wrong_columns');
invalid_with('wrong_columns',
	qr/^events table: table events has columns \(id integer, ts timestamp with time zone, event json\); it must be/,
	'an events table with other columns is refused');

$dest->safe_psql('postgres', 'CREATE DATABASE gap');
$dest->safe_psql('gap',
	q{CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL);
	  INSERT INTO events SELECT id, ts, event FROM (VALUES (1, now(), '{}'::jsonb), (3, now(), '{}')) v(id, ts, event)});
add_replica($source, 'gap', $dest, dbname => 'gap');
invalid_with('gap', qr/^no gaps: the destination holds 2 events but its max\(id\) is 3$/, 'a destination with a gap is refused');

$dest->safe_psql('postgres', 'CREATE DATABASE ahead');
$dest->safe_psql('ahead',
	q{CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL);
	  INSERT INTO events SELECT g, now(), '{}' FROM generate_series(1, 100) g});
add_replica($source, 'ahead', $dest, dbname => 'ahead');
invalid_with('ahead', qr/^not ahead of source: the destination's max\(id\) 100 is above the source's 11$/,
	'a destination ahead of the source is refused');

# --- a replica added by a non-superuser must authenticate with its password
$source->safe_psql('postgres',
	q{CREATE ROLE ops LOGIN IN ROLE replicator_admin; GRANT USAGE ON SCHEMA replicator TO ops});
$dest->safe_psql('postgres', 'CREATE DATABASE trusting');
$source->safe_psql('postgres',
	"SET ROLE ops; SELECT replicator.add_replica('borrowed', 'host=127.0.0.1 port=$dst_port dbname=trusting password=unused')");
invalid_with('borrowed', qr/^password required/,
	'a non-superuser\'s replica to a server that never asks for the password is refused');
is($dest->safe_psql('trusting', q{SELECT to_regclass('events') IS NULL}), 't',
	'and nothing was written there');

# --- a worker that dies is started again
my $pid = $source->safe_psql('postgres', q{SELECT pid FROM replicator.replica_status WHERE name = 'main'});
$source->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$source->poll_query_until('postgres',
	"SELECT pid IS NOT NULL AND pid <> $pid FROM replicator.replica_status WHERE name = 'main'")
  or die 'the worker was not started again';
pass('a terminated worker is started again');
$source->safe_psql('postgres', q{SELECT insert_events_array(ARRAY['{"after":"restart"}']::jsonb[])});
ok(wait_replica($source, 'main', 30), 'and it streams');
compare_events($source, $dest, 'the destination equals the source');

# --- invalid destinations are left alone: no worker retries them
is( $source->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'replicator streaming'}),
	'1',
	'only the valid destination has a worker');

# --- a check that cannot run for now (here a lock timeout) is tried again
# like a failed connection; one refused for good (no privilege) parks the
# destination as invalid
$dest->safe_psql('postgres', 'CREATE DATABASE locked');
$dest->safe_psql('locked',
	'CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL)');
$dest->safe_psql('postgres', q{ALTER DATABASE locked SET lock_timeout = '100ms'});
my $locker = $dest->background_psql('locked');
$locker->query_safe('BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE');
add_replica($source, 'locked', $dest, dbname => 'locked');
$source->poll_query_until('postgres',
	q{SELECT last_error LIKE 'no gaps: %lock timeout%' FROM replicator.replica_status WHERE name = 'locked'})
  or die 'the lock timeout was not reported';
is( $source->safe_psql('postgres',
		q{SELECT state <> 'invalid' AND r.invalid_reason IS NULL
		  FROM replicator.replica_status s JOIN replicator.replicas r USING (name) WHERE name = 'locked'}),
	't',
	'a check that timed out on a lock is reported, and the destination is not marked invalid');
$locker->query_safe('COMMIT');
$locker->quit;
ok(wait_replica($source, 'locked'), 'once the lock is gone the worker validates and streams by itself');
compare_events($source, $dest, 'the destination equals the source', 'locked');

$dest->safe_psql('postgres', 'CREATE ROLE reader LOGIN; CREATE DATABASE denied');
$dest->safe_psql('denied',
	'CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL)');
$source->safe_psql('postgres',
	"SELECT replicator.add_replica('denied', \$\$@{[ $dest->connstr('denied') ]} user=reader\$\$)");
invalid_with('denied', qr/^no gaps: .*permission denied for table events/,
	'a check refused for lack of privilege marks the destination invalid');
$source->safe_psql('postgres',
	q{SELECT replicator.drop_replica('locked'); SELECT replicator.drop_replica('denied')});

# --- one session: a backlog of several COPY batches, one at a time (last:
# the checks above count on the source's small max(id))
$source->safe_psql('postgres',
	q{SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('backlog', c, 'k', k, 'pad', repeat('y', 40)) FROM generate_series(1, 2000) k))
	    FROM generate_series(1, 15) c});
ok(wait_replica($source, 'main'), 'a backlog arrives with replicator.destination_sessions = 1');
compare_events($source, $dest, 'the destination equals the source');
is($dest->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replicator:postgres:main'}),
	'1', 'the worker holds one session to the destination');

$source->stop;
$dest->stop;
done_testing();
