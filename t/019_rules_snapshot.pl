
# Snapshot rules: sync() makes the target's tables exact mirrors of the
# source's (missing rows inserted, different ones updated, extra ones
# deleted), returns what it did, records it in rule_tables, does nothing the
# second time, and re-syncs a million-row table that barely changed while
# moving only the rows that differ.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ReplicatorTest;

my $source = source_node('source');
my $target = destination_node('target');
my $tconn = $target->connstr('postgres');
$source->safe_psql('postgres',
	"SELECT replicator.add_replica('tgt', \$\$$tconn\$\$, stream_events => false)");

my $ddl = q{
CREATE SCHEMA app;
CREATE TABLE app.items (id int8 PRIMARY KEY, name text, amount numeric, at timestamptz,
                        doc jsonb, data bytea, ratio float8);
CREATE TABLE app.pairs (a text, b int, v text, PRIMARY KEY (a, b));
CREATE TABLE app.big (id int8 PRIMARY KEY, v text, n numeric);
};
$source->safe_psql('postgres', $ddl);
$target->safe_psql('postgres', $ddl);

$source->safe_psql(
	'postgres', q{
INSERT INTO app.items VALUES
 (1, 'same', 1.50, '2024-01-02 03:04:05.123456+00', '{"a": [1, 2]}', '\x00ff', 0.1),
 (2, 'changed on source', 2.00, '2024-02-29 12:00:00+05', '{"k": "v"}', '\xdeadbeef', 1e-300),
 (3, 'missing on target', NULL, NULL, NULL, NULL, NULL),
 (4, E'quote '' comma , paren ) backslash \\ newline \n', -0.000001, 'infinity', '"a string"', '\x', 'NaN'),
 (5, '', 12345678901234567890.123456789, '1999-12-31 23:59:59.999999-08', 'null', '\x01', -0.0);
INSERT INTO app.pairs VALUES ('x', 1, 'one'), ('x', 2, 'two'), ('a,b', 1, 'comma'), ('(', 1, 'paren'),
 ('"', 1, 'quote'), ('', 1, 'empty');
});
$target->safe_psql(
	'postgres', q{
INSERT INTO app.items VALUES
 (1, 'same', 1.50, '2024-01-02 03:04:05.123456+00', '{"a": [1, 2]}', '\x00ff', 0.1),
 (2, 'old value', 2.0, '2024-02-29 12:00:00+05', '{"k": "v"}', '\xdeadbeef', 1e-300),
 (99, 'only on target', 9, now(), '{}', '\x99', 9);
INSERT INTO app.pairs VALUES ('x', 1, 'one'), ('x', 2, 'TWO'), ('x', 3, 'extra');
});

# Every column of both tables, in a fixed rendering, ordered by key.
sub dump_table
{
	my ($node, $table, $key) = @_;
	return $node->safe_psql('postgres',
		"SET TimeZone = 'UTC'; SET extra_float_digits = 3; SELECT t::text FROM $table t ORDER BY $key");
}

# Row by row, source against target: the same rows, as exact text.
sub compare_table
{
	my ($table, $key, $name) = @_;
	my $s = dump_table($source, $table, $key);
	my $t = dump_table($target, $table, $key);
	my @s = split /\n/, $s;
	my @t = split /\n/, $t;
	my %in_t = map { $_ => 1 } @t;
	my %in_s = map { $_ => 1 } @s;
	my @only_s = grep { !$in_t{$_} } @s;
	my @only_t = grep { !$in_s{$_} } @t;
	ok(@only_s == 0 && @only_t == 0 && @s == @t, "$name: " . scalar(@s) . " rows, source EXCEPT target and target EXCEPT source empty")
	  or diag("only on source: @only_s[0 .. ($#only_s < 4 ? $#only_s : 4)]\nonly on target: @only_t[0 .. ($#only_t < 4 ? $#only_t : 4)]");
}

sub sync
{
	my ($rule) = @_;
	my ($ret, $out, $err) = $source->psql('postgres',
		"SET client_min_messages = debug1; SELECT * FROM replicator.sync('$rule') ORDER BY 1");
	die "sync('$rule') failed: $err" if $ret != 0;
	return ($out, $err);
}

# --- several types, NULLs, composite text keys
$source->safe_psql('postgres',
	q{SELECT replicator.add_rule('snap', 'tgt', 'snapshot', ARRAY['app.items', 'app.pairs'])});
is( $source->safe_psql('postgres', q{SELECT state FROM replicator.rule_status WHERE rule = 'snap' LIMIT 1}),
	'not synced', 'before the first sync the rule is not synced');

my ($out) = sync('snap');
is($out, "app.items|3|1|1\napp.pairs|4|1|1",
	'first sync: items 3 inserted, 1 updated, 1 deleted; pairs 4 inserted, 1 updated, 1 deleted');
compare_table('app.items', 'id', 'items mirrored');
compare_table('app.pairs', 'a, b', 'pairs mirrored');
is($target->safe_psql('postgres', q{SELECT count(*) FROM app.items WHERE id = 99}),
	'0', 'the target-only row is gone');

is( $source->safe_psql(
		'postgres',
		q{SELECT string_agg(concat_ws('|', table_name, state, inserted, updated, deleted, copied_at IS NOT NULL), ',' ORDER BY table_name)
		  FROM replicator.rule_tables WHERE rule = 'snap'}),
	'app.items|ready|3|1|1|t,app.pairs|ready|4|1|1|t',
	'rule_tables: ready, copied_at set, counters');

($out) = sync('snap');
is($out, "app.items|0|0|0\napp.pairs|0|0|0", 'second sync: nothing to do');
is( $source->safe_psql(
		'postgres',
		q{SELECT string_agg(concat_ws('|', table_name, inserted, updated, deleted), ',' ORDER BY table_name)
		  FROM replicator.rule_tables WHERE rule = 'snap'}),
	'app.items|3|1|1,app.pairs|4|1|1',
	'the counters stay as they were');
is( $source->safe_psql('postgres', q{SELECT string_agg(DISTINCT state, ',') FROM replicator.rule_status WHERE rule = 'snap'}),
	'ready', 'rule_status says ready');

# a change on the source, and a row changed behind the rule's back
$source->safe_psql('postgres', q{UPDATE app.items SET doc = '{"b": 2}' WHERE id = 5});
$target->safe_psql('postgres', q{UPDATE app.items SET amount = 1.5 WHERE id = 1});
($out) = sync('snap');
is($out, "app.items|0|2|0\napp.pairs|0|0|0",
	'numeric 1.50 against 1.5 and a source change: two rows updated');
compare_table('app.items', 'id', 'items mirrored again');

# --- a target that cannot be reached: a clear error, no password
$source->safe_psql('postgres',
	q{SELECT replicator.add_replica('nowhere', 'host=127.0.0.1 port=1 dbname=postgres user=x password=secret123', stream_events => false)});
$source->safe_psql('postgres',
	q{SELECT replicator.add_rule('lost', 'nowhere', 'snapshot', ARRAY['app.items'])});
my $err = psql_error($source, q{SELECT * FROM replicator.sync('lost')});
like($err, qr/could not connect to replica "nowhere", the target of rule "lost"/,
	'an unreachable target: the error names the replica');
unlike($err, qr/secret123/, 'and not the password');
is($source->safe_psql('postgres', q{SELECT count(*) FROM replicator.rule_tables WHERE rule = 'lost'}),
	'0', 'nothing recorded');

like(psql_error($source, q{SELECT * FROM replicator.sync('no_such_rule')}),
	qr/rule "no_such_rule" does not exist/, 'an unknown rule');

# --- a million rows, then 0.1% of them changed on the target
$source->safe_psql('postgres',
	q{INSERT INTO app.big SELECT i, 'value ' || i, i * 1.25 FROM generate_series(1, 1000000) i});
$source->safe_psql('postgres',
	q{SELECT replicator.add_rule('big', 'tgt', 'snapshot', ARRAY['app.big'])});
my $t0 = time;
($out) = sync('big');
my $first = time - $t0;
is($out, 'app.big|1000000|0|0', sprintf('first sync copies 1,000,000 rows (%.1f s)', $first));

$target->safe_psql(
	'postgres', q{
UPDATE app.big SET v = 'changed' WHERE id % 1000 = 0 AND id <= 980000;
DELETE FROM app.big WHERE id BETWEEN 500001 AND 500010;
INSERT INTO app.big SELECT i, 'extra', 0 FROM generate_series(2000001, 2000010) i;
});

# what the target's tables saw, from its statistics
sub target_writes
{
	return $target->safe_psql('postgres',
		q{SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relid = 'app.big'::regclass});
}
$target->poll_query_until('postgres',
	q{SELECT n_tup_ins >= 1000010 AND n_tup_upd >= 980 AND n_tup_del >= 10 FROM pg_stat_user_tables WHERE relid = 'app.big'::regclass})
  or die 'target statistics did not show the planted changes';
my $writes_before = target_writes();

$t0 = time;
my $notices;
($out, $notices) = sync('big');
my $second = time - $t0;
is($out, 'app.big|10|980|10', sprintf('re-sync: 10 inserted, 980 updated, 10 deleted (%.1f s)', $second));
my ($sent, $sent_bytes, $received, $received_bytes, $ndiff, $nbuckets) =
  $notices =~ /sent (\d+) rows \((\d+) bytes\), received (\d+) rows \((\d+) bytes\); (\d+) of (\d+) buckets differed/
  or die "no figures in: $notices";
cmp_ok($sent, '<', 10000, "re-sync sent $sent rows ($sent_bytes bytes) to the target: under 1% of 1,000,000");
cmp_ok($sent_bytes, '<', 1_000_000, 'under a megabyte');
diag(sprintf('1M-row re-sync: %.1f s, sent %d rows (%d bytes), received %d rows (%d bytes) of bucket hashes and key hashes; %d of %d buckets differed; first sync %.1f s',
	$second, $sent, $sent_bytes, $received, $received_bytes, $ndiff, $nbuckets, $first));

$target->poll_query_until('postgres',
	"SELECT n_tup_ins + n_tup_upd + n_tup_del >= $writes_before + 1000 FROM pg_stat_user_tables WHERE relid = 'app.big'::regclass")
  or die 'target statistics did not show the re-sync';
my $writes = target_writes() - $writes_before;
cmp_ok($writes, '<', 10000, "the target's statistics: $writes rows written by the re-sync");

compare_table('app.big', 'id', 'big mirrored');
($out) = sync('big');
is($out, 'app.big|0|0|0', 'a third sync: nothing to do');

done_testing();
