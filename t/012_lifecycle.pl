
# Server and database life cycle around the workers: a DROP DATABASE that
# cannot go ahead (not the owner, database in use) does not stop streaming;
# databases without the extension free their launcher entry for one that has
# it; no worker runs in binary-upgrade mode (pg_upgrade); a destination
# synchronous_commit the server would refuse is refused when set.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $source = source_node('source');
my $dest = destination_node('dest');

$source->safe_psql('postgres', 'CREATE DATABASE app');
$source->safe_psql('app', 'CREATE EXTENSION replicator');
my $conn = $dest->connstr('postgres');
$source->safe_psql('app', "SELECT replicator.add_replica('d', \$\$$conn\$\$)");
$source->safe_psql('app', q{SELECT insert_events($$($1[1], $2, '{"n": 0}')$$)});
is($source->safe_psql('app', q{SELECT replicator.wait_for_replica('d', '60 s')}),
	't', 'streaming from database app');

sub worker_pid
{
	return $source->safe_psql('app',
		q{SELECT pid FROM replicator.replica_status WHERE name = 'd' AND state = 'streaming'});
}

sub streams_within
{
	my ($n, $timeout) = @_;
	$source->safe_psql('app', qq{SELECT insert_events(\$\$(\$1[1], \$2, '{"n": $n}')\$\$)});
	return $source->safe_psql('app',
		qq{SELECT replicator.wait_for_replica('d', '$timeout')}) eq 't';
}

$source->poll_query_until('app', q{SELECT pid IS NOT NULL FROM replicator.replica_status WHERE name = 'd' AND state = 'streaming'})
  or die 'worker not streaming';
my $pid = worker_pid();

# Anyone may try DROP DATABASE; only the owner's can go ahead.
$source->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');
for my $i (1 .. 5)
{
	my ($ret, $out, $err) = $source->psql('postgres', 'DROP DATABASE app',
		extra_params => [ '-U', 'mallory' ]);
	like($err, qr/must be owner/, "non-owner DROP DATABASE $i fails");
}
is(worker_pid(), $pid, 'failed DROP DATABASE by a non-owner did not stop the worker');
ok(streams_within(1, '10 s'), 'events still stream after the failed drops');

# The owner's DROP DATABASE fails while someone is connected: the workers it
# stopped start again at once, not after the 30 s pause for a real drop.
my $session = $source->background_psql('app');
$session->query_safe('SELECT 1');
my ($ret, $o, $err) = $source->psql('postgres', 'DROP DATABASE app');
like($err, qr/being accessed by other users/, 'DROP DATABASE of a database in use fails');
$session->quit;
ok(streams_within(2, '10 s'), 'streaming resumes at once after the failed drop');
is(dump_events($dest), dump_events($source, 'app'),
	'destination equals source row by row after the failed drops');

# replicator.max_databases is 64: postgres and app hold two entries;
# databases without the extension are scanned and leave theirs free.
for my $i (1 .. 70)
{
	$source->safe_psql('postgres', "CREATE DATABASE plain$i");
}
$source->safe_psql('postgres', 'CREATE DATABASE late');
$source->safe_psql('late', 'CREATE EXTENSION replicator');
$dest->safe_psql('postgres', 'CREATE DATABASE late_copy');
my $conn2 = $dest->connstr('late_copy');
$source->safe_psql('late', "SELECT replicator.add_replica('late', \$\$$conn2\$\$)");
$source->safe_psql('late', q{SELECT insert_events($$($1[1], $2, '{"late": 1}')$$)});
is($source->safe_psql('late', q{SELECT replicator.wait_for_replica('late', '60 s')}),
	't', 'a database created after 70 without the extension is served');

# A bad destination synchronous_commit is refused where it is set.
($ret, $o, $err) = $source->psql('postgres',
	q{ALTER SYSTEM SET replicator.destination_synchronous_commit = 'sometimes'});
like($err, qr/invalid value for parameter "replicator.destination_synchronous_commit"/,
	'a synchronous_commit value the destination would refuse is refused');
$source->safe_psql('postgres',
	q{ALTER SYSTEM SET replicator.destination_synchronous_commit = 'local'});
$source->reload;
ok(streams_within(3, '30 s'), 'streaming goes on with a valid new value');

# pg_upgrade starts servers in binary-upgrade mode: no launcher, no worker.
$source->stop;
my $log_offset = -s $source->logfile;
system_or_bail('pg_ctl', '-D', $source->data_dir, '-l', $source->logfile,
	'-o', '-b', '-w', 'start');
is($source->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'replicator%'}),
	'0', 'no replicator process in binary-upgrade mode');
system_or_bail('pg_ctl', '-D', $source->data_dir, '-m', 'fast', '-w', 'stop');
unlike(substr(slurp_file($source->logfile), $log_offset), qr/replicator launcher started/,
	'the launcher did not start in binary-upgrade mode');
$source->start;
$source->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'replicator launcher'})
  or die 'launcher did not start';
pass('the launcher starts again in normal mode');

$source->stop;
$dest->stop;
done_testing();
