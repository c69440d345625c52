
# The one way the extension connects to a remote server: session settings
# travel in the startup packet (a destination role's 1 ms statement, idle
# and idle-in-transaction timeouts reach none of our sessions, and the
# user's own options are kept), the password rule holds on every path, and
# a cancel while connecting leaves no socket behind in the user's backend.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $source = source_node('source', 'replicator.connect_timeout = 5s',
	'replicator.max_events_per_write = 500',
	'replicator.destination_sessions = 2',
	q{replicator.destination_synchronous_commit = 'local'});
my $dest = destination_node('dest');

$source->safe_psql(
	'postgres', q{
DO $$
BEGIN
	FOR c IN 1 .. 10 LOOP
		PERFORM insert_events_array(ARRAY(SELECT jsonb_build_object('call', c, 'k', k, 'pad', repeat('x', 200))
		                            FROM generate_series(1, 500) k));
	END LOOP;
END $$});

# --- a destination role whose timeouts would cancel or end every session of
# ours that does not override them before its first statement.  A statement
# trigger on its events table records the settings the worker's sessions
# run with.
$dest->safe_psql(
	'postgres', q{CREATE ROLE hurried LOGIN;
	ALTER ROLE hurried SET statement_timeout = '1ms';
	ALTER ROLE hurried SET idle_in_transaction_session_timeout = '1ms';
	ALTER ROLE hurried SET idle_session_timeout = '1ms';
	CREATE DATABASE hurried OWNER hurried});
$dest->safe_psql(
	'hurried', q{
CREATE TABLE public.events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL);
CREATE TABLE public.seen (statement_timeout text, idle_session_timeout text,
	idle_in_transaction_session_timeout text, synchronous_commit text,
	work_mem text, mark text);
CREATE FUNCTION public.record_settings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.seen VALUES (pg_catalog.current_setting('statement_timeout'),
		pg_catalog.current_setting('idle_session_timeout'),
		pg_catalog.current_setting('idle_in_transaction_session_timeout'),
		pg_catalog.current_setting('synchronous_commit'),
		pg_catalog.current_setting('work_mem'),
		pg_catalog.current_setting('test.mark', true));
	RETURN NULL;
END $$;
CREATE TRIGGER record_settings AFTER INSERT ON public.events
	FOR EACH STATEMENT EXECUTE FUNCTION public.record_settings();
ALTER TABLE public.events OWNER TO hurried;
ALTER TABLE public.seen OWNER TO hurried;
ALTER FUNCTION public.record_settings() OWNER TO hurried;
});

# the user's own options, one of them a setting ours override
my $conn = $dest->connstr('hurried')
  . q{ user=hurried options='-c work_mem=1234kB -c test.mark=theirs -c statement_timeout=1ms'};
$source->safe_psql('postgres', "SELECT replicator.add_replica('hurried', \$\$$conn\$\$)");
ok(wait_replica($source, 'hurried', 60),
	'the worker catches up with a destination role of 1 ms statement, idle and idle-in-transaction timeouts');
compare_events($source, $dest, 'the destination equals the source', 'hurried');

is( $dest->safe_psql('hurried',
		q{SELECT DISTINCT statement_timeout || ' ' || idle_session_timeout || ' ' ||
		    idle_in_transaction_session_timeout || ' ' || synchronous_commit FROM seen}),
	'0 0 0 local',
	'every apply statement ran without timeouts, with replicator.destination_synchronous_commit');
is($dest->safe_psql('hurried', q{SELECT DISTINCT work_mem || '|' || mark FROM seen}),
	'1234kB|theirs', "the conninfo's own options hold beside ours");

is( $source->safe_psql('postgres',
		q{SELECT count(*) > 1 AND bool_and(ok) FROM replicator.validate('hurried')}),
	't', 'validate passes every check against that role');
my ($ret, $out, $err) = $source->psql('postgres', q{SELECT count(*) FROM replicator.diff('hurried', validate => false)});
is($out, '0', 'diff runs against that role and finds no difference');

$source->safe_psql('postgres', 'CREATE DATABASE restored');
$source->safe_psql('restored', 'CREATE EXTENSION replicator');
($ret, $out, $err) = $source->psql('restored',
	sprintf(q{SELECT rows_restored FROM restore_events('%s', 'hurried', 'hurried', NULL, %d)},
		$dest->host, $dest->port));
is($out, events_count($source), 'restore_events reads every event through that role');
is(dump_events($source, 'restored'), dump_events($source),
	'the restored events equal the source, row by row');

# --- a cancel while connecting: a replica at an address that accepts TCP
# and never answers, validated under a statement_timeout shorter than
# connect_timeout.  The backend keeps no socket of any attempt.
my ($silent, $silent_port) = silent_listener();
$source->safe_psql('postgres',
	"SELECT replicator.add_replica('silent', 'host=127.0.0.1 port=$silent_port dbname=x', enabled => false)");

my $psql = $source->background_psql('postgres', on_error_stop => 0);
my $pid = $psql->query_safe('SELECT pg_backend_pid()');
chomp $pid;

sub sockets
{
	my $n = 0;
	opendir(my $dh, "/proc/$pid/fd") or die "cannot read /proc/$pid/fd: $!";
	for my $fd (readdir $dh)
	{
		my $target = readlink("/proc/$pid/fd/$fd");
		$n++ if defined $target && $target =~ /^socket:/;
	}
	closedir $dh;
	return $n;
}

sub cancelled_validate
{
	$psql->{stderr} = '';    # BackgroundPsql keeps what earlier queries wrote
	$psql->query(q{SET statement_timeout = '300ms'; SELECT * FROM replicator.validate('silent'); RESET statement_timeout});
	return $psql->{stderr};
}

# once first: anything a first call opens for good is open before counting
like(cancelled_validate(), qr/canceling statement due to statement timeout/,
	'validate of a silent destination is cancelled by statement_timeout while connecting');
my $before = sockets();
my $errors = 0;
for (1 .. 5)
{
	$errors++ if cancelled_validate() =~ /canceling statement due to statement timeout/;
}
is($errors, 5, 'five more validates are cancelled while connecting');
is(sockets(), $before, "the backend holds no socket of the cancelled connections ($before before and after)");
$psql->{stderr} = '';
is($psql->query_safe('SELECT 1'), '1', 'the session goes on');
$psql->quit;

# --- host names: resolved by the extension before libpq connects, each
# address passed as hostaddr beside its name (localhost: ::1 and
# 127.0.0.1, tried in turn), in a list beside a unix socket that fails
$dest->append_conf('postgresql.conf', "listen_addresses = '127.0.0.1'\n");
$dest->restart;
my $dport = $dest->port;
$source->safe_psql('postgres',
	"SELECT replicator.add_replica('named', 'host=/nonexistent,localhost port=$dport dbname=hurried user=hurried', enabled => false)");
is( $source->safe_psql('postgres',
		q{SELECT ok FROM replicator.validate('named') WHERE check_name = 'connect'}),
	't', 'a host list with a socket and a host name connects');
$source->safe_psql('postgres',
	"SELECT replicator.add_replica('nowhere', 'host=no-such-host.invalid port=$dport dbname=x', enabled => false)");
like( $source->safe_psql('postgres',
		q{SELECT ok || ' ' || detail FROM replicator.validate('nowhere') WHERE check_name = 'connect'}),
	qr/^false could not translate host name "no-such-host.invalid" to address/,
	'a name that does not resolve is reported');

# --- the password rule on the SQL functions' paths: a replica added by a
# non-superuser member of replicator_admin, to a destination that asks for
# no password (trust), is refused by validate and diff as by the worker,
# whoever calls them (here a superuser)
$source->safe_psql('postgres', q{CREATE ROLE alice LOGIN; GRANT replicator_admin TO alice});
my $trusting = $dest->connstr('postgres') . ' password=unused';
$source->safe_psql('postgres',
	"SET ROLE alice; SELECT replicator.add_replica('trusting', \$\$$trusting\$\$, enabled => false)");
($ret, $out, $err) = $source->psql('postgres',
	q{SELECT ok || ' ' || coalesce(detail, '') FROM replicator.validate('trusting') WHERE check_name = 'connect'});
like($out,
	qr/^false password required: .*did not ask for its password$/,
	'validate refuses a destination that did not ask for the password');
($ret, $out, $err) = $source->psql('postgres', q{SELECT * FROM replicator.diff('trusting')});
like($err, qr/diff: could not connect to replica "trusting": password required/,
	'diff refuses a destination that did not ask for the password');
unlike($err, qr/unused/, 'the error does not show the password');
$source->safe_psql('postgres', q{SELECT replicator.resume_replica('trusting')});
$source->poll_query_until('postgres',
	q{SELECT state = 'invalid' AND last_error LIKE 'password required%' FROM replicator.replica_status WHERE name = 'trusting'})
  or die 'the worker did not refuse the trusting destination';
pass('the worker refuses it too');

$source->stop;
$dest->stop;
done_testing();
