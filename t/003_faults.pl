
# Faults a destination can have, and what the others and the server see:
# a destination whose first event differs is marked invalid and receives
# nothing while another keeps streaming; an address that accepts TCP and
# never answers shows the error within connect_timeout, and never delays
# shutdown, DROP EXTENSION or DROP DATABASE; 5 MB events stream; passwords
# never reach the log or the views.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ReplicatorTest;

my $source = source_node('source', 'replicator.connect_timeout = 3s');
my $good = destination_node('good');
my $bad = destination_node('bad');

$source->safe_psql('postgres',
	q{SELECT insert_events_array(ARRAY['{"first": true}', '{"second": true}']::jsonb[])});

# --- a destination whose first event differs
$bad->safe_psql(
	'postgres', q{
CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL);
INSERT INTO events VALUES (1, now(), '{"first": true}');
});
add_replica($source, 'good', $good);
add_replica($source, 'bad', $bad);

$source->poll_query_until('postgres',
	q{SELECT state = 'invalid' FROM replicator.replica_status WHERE name = 'bad'})
  or die 'bad was not marked invalid';
like( $source->safe_psql('postgres',
		q{SELECT last_error FROM replicator.replica_status WHERE name = 'bad'}),
	qr/same first event: the destination's first event \(id 1, ts .*\) differs from the source's/,
	'a destination with a different first event is invalid, with the reason');
$source->safe_psql('postgres',
	q{SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('k', k) FROM generate_series(1, 300) k))});
ok(wait_replica($source, 'good'), 'the good destination keeps streaming');
compare_events($source, $good, 'good equals the source');
is($bad->safe_psql('postgres', 'SELECT count(*) FROM events'), '1', 'the invalid destination received nothing');
is( $source->safe_psql('postgres',
		q{SELECT string_agg(check_name || '=' || ok, ',') FROM replicator.validate('bad')}),
	'connect=true,not the source=true,distinct destination=true,no source objects=true,events table=true,no gaps=true,not ahead of source=true,same first event=false',
	'validate() reports each check');
is( $source->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replicator:postgres:bad'}),
	'0',
	'no worker retries an invalid destination in a loop');

# the operator fixes it and resumes: it catches up
$bad->safe_psql('postgres', 'TRUNCATE events');
$source->safe_psql('postgres', q{SELECT replicator.resume_replica('bad')});
ok(wait_replica($source, 'bad'), 'a fixed and resumed destination catches up');
compare_events($source, $bad, 'the resumed destination equals the source');

# --- a destination holding source objects is refused, as slate refuses it
my $other_source = destination_node('other_source');
$other_source->append_conf('postgresql.conf', "shared_preload_libraries = 'replicator'\n");
$other_source->restart;
$other_source->safe_psql('postgres', 'CREATE EXTENSION replicator');
add_replica($source, 'is_a_source', $other_source);
$source->poll_query_until('postgres',
	q{SELECT last_error LIKE 'no source objects: the destination holds event source objects (table id, function insert_events, trigger notify_insert)%'
	  FROM replicator.replica_status WHERE name = 'is_a_source' AND state = 'invalid'})
  or die 'a destination holding source objects was not refused';
pass('a destination holding source objects is refused');
$source->safe_psql('postgres', q{SELECT replicator.drop_replica('is_a_source')});
$other_source->stop;

# --- 5 MB events
$source->safe_psql('postgres',
	q{SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('k', k, 'blob', repeat(md5(k::text), 5 * 1024 * 1024 / 32)) FROM generate_series(1, 3) k))});
ok(wait_replica($source, 'good'), '5 MB events reach the destination');
compare_events($source, $good, 'good equals the source, 5 MB events included');

# --- an address that accepts TCP connections and never answers
my ($silent, $silent_port) = silent_listener();
$source->safe_psql('postgres',
	"SELECT replicator.add_replica('silent', 'host=127.0.0.1 port=$silent_port dbname=x password=s3cretpw')");
my $t0 = time;
$source->poll_query_until('postgres',
	q{SELECT last_error LIKE 'could not connect within connect_timeout (3000 ms)%'
	  FROM replicator.replica_status WHERE name = 'silent'})
  or die 'the silent destination reported no timeout';
my $elapsed = time - $t0;
cmp_ok($elapsed, '<', 3 + 10, "the timeout shows in replica_status (after ${elapsed}s, connect_timeout 3s)");

# SIGHUP: a new connect_timeout is used by the running worker
$source->safe_psql('postgres', q{ALTER SYSTEM SET replicator.connect_timeout = '2s'; SELECT pg_reload_conf()});
$source->poll_query_until('postgres',
	q{SELECT last_error LIKE 'could not connect within connect_timeout (2000 ms)%'
	  FROM replicator.replica_status WHERE name = 'silent'})
  or die 'the worker did not take the new connect_timeout';
pass('the worker honours SIGHUP: the new connect_timeout applies');

ok(wait_replica($source, 'good'), 'the good destination is not held back by the silent one');

# passwords never reach the log or the views: the only line that holds it is
# log_statement's copy of the add_replica call itself (the test harness logs
# every statement, as it would log ALTER ROLE ... PASSWORD)
my @leaks = grep { /s3cretpw/ && !/LOG:  statement: SELECT replicator\.add_replica\('silent'/ }
  split /\n/, slurp_file($source->logfile);
is(scalar(@leaks), 0, 'the password is in no log line written by replicator')
  or diag(join("\n", @leaks));
unlike($source->safe_psql('postgres', 'SELECT replica_status::text FROM replicator.replica_status'),
	qr/s3cretpw/, 'nor in replica_status');

# a connect that would hang for an hour delays neither DDL nor shutdown
$source->safe_psql('postgres', q{ALTER SYSTEM SET replicator.connect_timeout = '1h'; SELECT pg_reload_conf()});
$source->safe_psql('postgres', q{SELECT replicator.pause_replica('silent'); SELECT replicator.resume_replica('silent')});
$source->poll_query_until('postgres',
	q{SELECT state = 'connecting' FROM replicator.replica_status WHERE name = 'silent'})
  or die 'the silent worker is not connecting';

$source->safe_psql('postgres', 'CREATE DATABASE doomed');
$source->safe_psql('doomed', 'CREATE EXTENSION replicator');
$source->safe_psql('doomed',
	"SELECT replicator.add_replica('silent', 'host=127.0.0.1 port=$silent_port dbname=x')");
$source->poll_query_until('doomed',
	q{SELECT state = 'connecting' FROM replicator.replica_status WHERE name = 'silent'})
  or die 'the doomed worker is not connecting';
$t0 = time;
$source->safe_psql('postgres', 'DROP DATABASE doomed');
$elapsed = time - $t0;
cmp_ok($elapsed, '<', 10, "DROP DATABASE is not held up by a hanging destination (${elapsed}s)");

$t0 = time;
$source->stop('fast');
$elapsed = time - $t0;
cmp_ok($elapsed, '<', 20, "shutdown is prompt while a worker waits on a silent destination (${elapsed}s)");

# DROP EXTENSION too (no local lock is held while waiting on a destination)
$source->start;
$source->poll_query_until('postgres',
	q{SELECT state = 'connecting' FROM replicator.replica_status WHERE name = 'silent'})
  or die 'the silent worker is not connecting after restart';
$t0 = time;
$source->safe_psql('postgres', 'DROP EXTENSION replicator');
$source->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'replicator streaming'})
  or die 'workers outlived DROP EXTENSION';
$elapsed = time - $t0;
cmp_ok($elapsed, '<', 10, "DROP EXTENSION stops the workers promptly (${elapsed}s)");

$source->stop;
$good->stop;
$bad->stop;
close($silent);
done_testing();
