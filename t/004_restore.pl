
# restore_events: a lost source is rebuilt empty and refills itself from a
# destination, checked like one; ids continue after the restored events and
# streaming to that destination resumes where it was.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $old = source_node('old_source');
my $dest = destination_node('dest');
add_replica($old, 'd', $dest);
$old->safe_psql('postgres',
	q{SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('call', c, 'k', k, 'x', 1.50) FROM generate_series(1, 40) k))
	  FROM generate_series(1, 50) c});
ok(wait_replica($old, 'd'), 'the destination has every event');
my $count = events_count($old);
is($count, '2000', '2000 events');
$old->stop('immediate');

my $new = source_node('new_source');
my $host = $dest->host;
my $port = $dest->port;
my $restore = "SELECT rows_restored, next_insert_id FROM restore_events('$host', 'postgres', NULL, NULL, $port)";

# restoring from oneself, or into a non-empty source, is refused
my ($ret, $out, $err) = $new->psql('postgres',
	"SELECT restore_events('@{[$new->host]}', 'postgres', NULL, NULL, @{[$new->port]})");
like($err, qr/restore_events: the remote database is this database \(\d+\/\d+\/postgres\)/,
	'restoring from the source itself is refused');

my ($listen_out) = $new->safe_psql('postgres', "LISTEN eventsinsert; $restore; SELECT 1;");
like($listen_out, qr/^2000\|2001$/m, 'restore_events returns rows_restored and next_insert_id');
like($listen_out, qr/payload "\{"table":"events","id":2000,"restored":true\}"/,
	'one notification announces the restored events');
compare_events($dest, $new, 'the restored source equals the destination');

($ret, $out, $err) = $new->psql('postgres', $restore);
like($err, qr/restore_events: table public.events is not empty/, 'a second restore is refused: the source is not empty');

is($new->safe_psql('postgres', q{SELECT first_id FROM insert_events_array(ARRAY['{"after":"restore"}']::jsonb[])}),
	'2001', 'ids continue after the restored events');
is($new->safe_psql('postgres', 'SELECT count(*) = max(id) FROM events'), 't', 'still gapless');
is( $new->safe_psql('postgres',
		q{SELECT (SELECT ts FROM events WHERE id = 2001) > (SELECT max(ts) FROM events WHERE id <= 2000)}),
	't',
	'ts continues to increase after the restored events');

# the destination validates against the restored source and streams on
add_replica($new, 'd', $dest);
ok(wait_replica($new, 'd'), 'streaming resumes to the destination it was restored from');
compare_events($new, $dest, 'the destination equals the restored source');

# a remote with gaps is refused, and nothing is restored
my $gappy = destination_node('gappy');
$gappy->safe_psql('postgres',
	q{CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL);
	  INSERT INTO events VALUES (1, now(), '{}'), (3, now(), '{}');});
my $empty = source_node('empty_source');
($ret, $out, $err) = $empty->psql('postgres',
	"SELECT restore_events('@{[$gappy->host]}', 'postgres', NULL, NULL, @{[$gappy->port]})");
like($err, qr/restore_events: the remote's events have gaps: 2 events, max\(id\) 3/, 'a remote with gaps is refused');
is(events_count($empty), '0', 'and nothing was restored');
is($empty->safe_psql('postgres', 'SELECT id FROM id'), '1', 'and the id allocator is untouched');

$new->stop;
$dest->stop;
$gappy->stop;
$empty->stop;
done_testing();
