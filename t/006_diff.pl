
# replicator.diff: finds every planted difference and nothing else, validates
# load-generator data, and compares a million equal events while fetching
# next to nothing from the destination.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $source = source_node('source');
my $dest = destination_node('dest');
add_replica($source, 'd', $dest);

# diff's rows and its closing NOTICE (rows and bytes fetched)
sub diff
{
	my ($args) = @_;
	my ($ret, $out, $err) = $source->psql('postgres',
		"SELECT id, kind FROM replicator.diff('d'$args) ORDER BY kind, id");
	die "diff failed: $err" if $ret != 0;
	my ($rows, $bytes) = $err =~ /fetched (\d+) rows \((\d+) bytes\) from the destination/
	  or die "no fetch figures in: $err";
	return ($out, $rows, $bytes, $err);
}

# --- concurrent load with the person-data tool, validated on both sides
my $out = `bench/load_person_data.sh --clients 4 --events-per-call 7 --total 5600 --host @{[$source->host]} --port @{[$source->port]} 2>&1`;
is($?, 0, 'load_person_data.sh ran 4 clients') or diag($out);
like($out, qr/5600 events in [\d.]+ s/, 'it reports what it loaded');
ok(wait_replica($source, 'd'), 'the destination caught up');
my ($diff, $rows, $bytes, $notices) = diff(', validate => true');
is($diff, '', 'equal tables with valid load-generator data: no difference');
like($notices, qr/source: checked ids, ts order and 800 load-generator calls/, 'the source\'s 800 calls were validated');
like($notices, qr/destination: checked ids, ts order and 800 load-generator calls/, 'and the destination\'s');

# --- a million equal events, compared without shipping them
$source->safe_psql('postgres',
	q{SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('c', c, 'k', k, 'price', 1.50) FROM generate_series(1, 1000) k))
	  FROM generate_series(1, 995) c});
my $total = $source->safe_psql('postgres', 'SELECT count(*) FROM events');
cmp_ok($total, '>=', 1_000_000, "the source holds $total events");
ok(wait_replica($source, 'd'), 'the destination caught up');
my $size = $dest->safe_psql('postgres', q{SELECT pg_relation_size('events')});
($diff, $rows, $bytes) = diff('');
is($diff, '', "$total equal events: no difference");
cmp_ok($rows, '<=', 20, "fetched $rows rows from the destination");
cmp_ok($bytes, '<', $size / 10000, "fetched $bytes bytes of a $size-byte table");

# --- plant differences in the destination (streaming paused)
$source->safe_psql('postgres', q{SELECT replicator.pause_replica('d')});
$source->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'replicator streaming'})
  or die 'the worker did not stop';
my $extra = $total + 1;
$dest->safe_psql(
	'postgres', qq{
DELETE FROM events WHERE id = 123456;
INSERT INTO events VALUES ($extra, now(), '{"extra": true}');
UPDATE events SET ts = ts + interval '1 microsecond' WHERE id = 500000;
UPDATE events SET event = jsonb_set(event, '{k}', to_jsonb((event->>'k')::int + 1)) WHERE id = 700000;
-- jsonb holds these equal to the source's: not differences
UPDATE events SET event = (SELECT jsonb_object_agg(key, value) FROM (SELECT * FROM jsonb_each(event) ORDER BY key DESC) s) WHERE id = 800000;
UPDATE events SET event = jsonb_set(event, '{price}', '1.5') WHERE id = 900000;
});
is($dest->safe_psql('postgres', q{SELECT event->>'price' FROM events WHERE id = 900000}), '1.5',
	'the destination holds 1.5 where the source holds 1.50');

($diff, $rows, $bytes) = diff('');
is( $diff,
	join("\n", "700000|different event", "500000|different ts", "$extra|extra", "123456|missing"),
	'each planted difference is found, with its kind, and nothing else');
cmp_ok($rows, '<', 5000, "finding them fetched $rows rows, not the table");

($diff) = diff(', max_diffs => 2');
is(scalar(split /\n/, $diff), 2, 'max_diffs stops the search');

my ($ret, $stdout, $stderr) = $source->psql('postgres',
	q{SELECT id, kind, source, destination FROM replicator.diff('d') WHERE kind = 'different ts'});
like($stdout, qr/^500000\|different ts\|(\S+ \S+)\|(\S+ \S+)$/, 'a ts one microsecond off is shown with both values');

# --- validation: broken calls are found; an all-invalid table is invalid
($diff) = diff(', validate => true');
like($diff, qr/^\|invalid destination$/m, 'the destination\'s gap is reported');

$dest->safe_psql('postgres',
	q{UPDATE events SET event = jsonb_set(event, '{validation,k}', '0') WHERE event ? 'validation'});
$stdout = $source->safe_psql('postgres',
	q{SELECT destination FROM replicator.diff('d', validate => true) WHERE kind = 'invalid destination' AND destination LIKE '%calls%'});
is($stdout, '800 of 800 load-generator calls are incomplete or not contiguous',
	'a table whose every call is broken is reported invalid, not passed over');

# --- from a shell: a non-zero exit status when differences exist
my $oneliner = sprintf(q{psql -X -h %s -p %d -d postgres -Atc "SELECT count(*) FROM replicator.diff('d', 1)" | grep -qx 0},
	$source->host, $source->port);
system($oneliner);
isnt($?, 0, 'the shell one-liner fails while differences exist');
$dest->safe_psql('postgres', 'DROP TABLE events');
$source->safe_psql('postgres', q{SELECT replicator.resume_replica('d')});
ok(wait_replica($source, 'd'), 'a fresh destination table catches up');
system($oneliner);
is($?, 0, 'and the one-liner succeeds once the tables are equal');

$source->stop;
$dest->stop;
done_testing();
