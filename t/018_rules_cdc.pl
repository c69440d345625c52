
# cdc rules: a source and two targets.  A '*' rule copies tables of many
# types (TOASTed values an update leaves alone, NULLs, key changes,
# truncate, mixed transactions) and streams their changes; picks up a table
# created later without restarting, pauses alone one the target lacks and
# brings it in on resume_rule; every conflict strategy meets a conflict it
# resolves (conflicts, rule_errors); transactions committing out of the
# order they began; the target and then the source stopped in immediate
# mode mid-stream, applied exactly once; an initial copy interrupted by the
# target's crash.  Tables are compared row by row, never by counts.
use strict;
use warnings;
use lib 't';
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

# output_plugin_libraries only where the server knows it (15.19+): a line
# for an unknown parameter stops the server
my $describe = `postgres --describe-config 2>/dev/null`;
my @plugin_conf =
  $describe =~ /^output_plugin_libraries\t/m
  ? ("output_plugin_libraries = 'pgoutput, test_decoding, replicator'")
  : ();

my $source = source_node(
	'source', 'wal_level = logical', 'max_replication_slots = 16',
	'max_wal_senders = 16', 'max_worker_processes = 24', @plugin_conf);

sub target_node
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'replicator'\ntrack_commit_timestamp = on\n");
	$node->start;
	return $node;
}
my $t1 = target_node('t1');
my $t2 = target_node('t2');

for my $t ([ 't1', $t1 ], [ 't2', $t2 ])
{
	my $conn = $t->[1]->connstr('postgres');
	$source->safe_psql('postgres',
		"SELECT replicator.add_replica('$t->[0]', \$\$$conn\$\$, stream_events => false)");
}

# Each row of a table as "key md5(row text)", ordered by key, in a fixed
# rendering (UTC, exact floats).
sub rows_of
{
	my ($node, $table, $key) = @_;
	return split /\n/,
	  $node->safe_psql('postgres',
		"SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex';"
		  . " SELECT ($key)::text || ' ' || md5(t::text) FROM $table t ORDER BY $key");
}

# The columns of one row that differ, both versions (first 80 characters)
sub column_differences
{
	my ($target, $table, $key, $k) = @_;
	my @cols = split /\n/, $source->safe_psql('postgres',
		"SELECT attname FROM pg_attribute WHERE attrelid = '$table'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum");
	my $sql = "SET TimeZone = 'UTC'; SET extra_float_digits = 3; SELECT "
	  . join(" || E'\\n' || ", map { "'$_=' || coalesce(replace(quote_literal(left(${_}::text, 80)), E'\\n', '\\n'), 'SQL NULL')" } @cols)
	  . " FROM $table t WHERE ($key)::text = " . $source->safe_psql('postgres', "SELECT quote_literal(\$\$$k\$\$)");
	my %s = map { split /=/, $_, 2 } split /\n/, $source->safe_psql('postgres', $sql);
	my %t = map { split /=/, $_, 2 } split /\n/, $target->safe_psql('postgres', $sql);
	return "row $k: " . join('; ', map { "$_ source $s{$_} target " . ($t{$_} // '(no row)') }
		  grep { ($s{$_} // '') ne ($t{$_} // '') } @cols);
}

# Row by row: the target holds exactly the source's rows.
sub compare_table
{
	my ($target, $table, $key, $name) = @_;
	my @s = rows_of($source, $table, $key);
	my @t = rows_of($target, $table, $key);
	my %in_t = map { $_ => 1 } @t;
	my %in_s = map { $_ => 1 } @s;
	my @only_s = grep { !$in_t{$_} } @s;
	my @only_t = grep { !$in_s{$_} } @t;
	my $ok = ok(@only_s == 0 && @only_t == 0 && @s == @t,
		"$name: $table equal, " . scalar(@s) . " rows, row by row");
	if (!$ok)
	{
		diag("$table: " . scalar(@s) . " rows on the source, " . scalar(@t) . " on the target");
		diag("only on source (key md5): @only_s[0 .. ($#only_s < 5 ? $#only_s : 5)]") if @only_s;
		diag("only on target (key md5): @only_t[0 .. ($#only_t < 5 ? $#only_t : 5)]") if @only_t;
		my ($k) = split / /, ($only_s[0] // $only_t[0] // '');
		diag(column_differences($target, $table, $key, $k)) if defined $k && $k ne '';
	}
	return $ok;
}

# For a big table: one md5 over every row in key order on each side.
sub compare_big
{
	my ($target, $table, $key, $name) = @_;
	my $sql = "SELECT count(*) || ' ' || md5(string_agg(t::text, E'\\n' ORDER BY $key)) FROM $table t";
	my $s = $source->safe_psql('postgres', $sql);
	my $t = $target->safe_psql('postgres', $sql);
	is($t, $s, "$name: $table equal (count and md5 of every row in key order)");
}

sub wait_rule
{
	my ($rule, $name) = @_;
	my ($ret, $out, $err) = $source->psql('postgres',
		"SELECT replicator.wait_for_rule('$rule', '90s')");
	my $ok = ok($ret == 0 && $out eq 't', "wait_for_rule('$rule'): $name");
	diag("wait_for_rule('$rule'): $out $err\n" . status($rule)) if !$ok;
	return $ok;
}

sub status
{
	my ($rule) = @_;
	return $source->safe_psql('postgres',
		"SELECT table_name, state, rows_copied, rows_total, lag_changes, applied_lsn, inserted, updated,"
		  . " deleted, conflicts, last_error FROM replicator.rule_status WHERE rule = '$rule' ORDER BY 1");
}

sub q_source { return $source->safe_psql('postgres', $_[0]); }

# ------------------------------------------------------------------
# 1. a '*' rule: initial copy of several types, then every kind of change
# ------------------------------------------------------------------
my $ddl = q{
CREATE SCHEMA app;
CREATE TABLE app.items (id int8 PRIMARY KEY, name text, amount numeric, at timestamptz,
                        doc jsonb, data bytea, ratio float8, big text, n int);
CREATE TABLE app.pairs (a text, b int, v text, PRIMARY KEY (a, b));
CREATE TABLE app.plain (id int PRIMARY KEY, v text);
CREATE TABLE app.conc (id int PRIMARY KEY, who text, v int);
CREATE TABLE app.ctr (id serial PRIMARY KEY, c int NOT NULL DEFAULT 0);
CREATE TABLE app.jnull (id int8 PRIMARY KEY, doc jsonb);
CREATE SCHEMA cf;
CREATE TABLE cf.sw (id int PRIMARY KEY, v text, big text);
CREATE TABLE cf.tw (id int PRIMARY KEY, v text);
CREATE TABLE cf.er (id int PRIMARY KEY, v text);
CREATE TABLE cf.lw (id int PRIMARY KEY, v text, ts timestamptz);
};
$source->safe_psql('postgres', $ddl);
$t1->safe_psql('postgres', $ddl);
$t2->safe_psql('postgres', $ddl);
$source->safe_psql('postgres', 'ALTER TABLE cf.tw REPLICA IDENTITY FULL');

# A value that compresses badly: stored out of line (TOAST)
my $toast = q{(SELECT string_agg(md5(i::text || 'salt' || $1), '') FROM generate_series(1, 3000) i)};
sub toast_value { my ($seed) = @_; (my $v = $toast) =~ s/\$1/'$seed'/; return $v; }

$source->safe_psql('postgres', qq{
INSERT INTO app.items VALUES
 (1, 'plain', 1.50, '2024-01-02 03:04:05.123456+00', '{"a": [1, 2, {"b": null}]}', '\\x00ff00', 0.1, 'small', 1),
 (2, E'quote '' comma , paren ) backslash \\\\ newline \\n tab \\t', -0.000001, 'infinity', '"a string"', '\\x', 'NaN', NULL, 2),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 'ünïcødé ✓', 12345678901234567890.123456789012, '1999-12-31 23:59:59.999999-08', '{"k": null}', '\\x01', -0.0, @{[toast_value(4)]}, 4),
 (5, '', 'NaN', '-infinity', '[]', '\\xdeadbeef', 1e-300, @{[toast_value(5)]}, 5);
INSERT INTO app.items SELECT i, 'row ' || i, i * 1.25, '2024-01-01'::timestamptz + i * interval '1 min',
  jsonb_build_object('i', i), decode(md5(i::text), 'hex'), i / 7.0, NULL, i
  FROM generate_series(6, 500) i;
INSERT INTO app.pairs VALUES ('x', 1, 'one'), ('x', 2, 'two'), ('a,b', 1, 'comma'), ('(', 1, 'paren'),
 ('"', 1, 'quote'), ('', 1, 'empty');
INSERT INTO app.plain SELECT i, 'p' || i FROM generate_series(1, 50) i;
INSERT INTO app.ctr (c) SELECT 0 FROM generate_series(1, 100);
INSERT INTO app.jnull VALUES (1, 'null'), (2, NULL), (3, '{"a": null}'), (4, '[null]');
INSERT INTO cf.sw VALUES (1, 'one', NULL), (2, 'two', NULL), (3, 'three', @{[toast_value(33)]});
INSERT INTO cf.tw VALUES (1, 'one'), (2, 'two'), (3, 'three');
INSERT INTO cf.er VALUES (1, 'one'), (2, 'two'), (3, 'three');
INSERT INTO cf.lw VALUES (1, 'one', '2024-01-01'), (2, 'two', '2024-01-01'), (3, 'three', '2024-01-01');
});
my $toast_rel = q_source(q{SELECT reltoastrelid::regclass FROM pg_class WHERE oid = 'app.items'::regclass});
ok(q_source("SELECT count(DISTINCT chunk_id) >= 2 FROM $toast_rel") eq 't',
	'app.items holds values stored out of line (TOAST)');

# On t1: a trigger that records any update of app.ctr that is not +1: a
# change applied twice (or out of order) shows there
$t1->safe_psql('postgres', q{
CREATE SCHEMA audit;
CREATE TABLE audit.violations (id int, old_c int, new_c int, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION audit.check_ctr() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.c IS DISTINCT FROM OLD.c + 1 THEN
		INSERT INTO audit.violations (id, old_c, new_c) VALUES (NEW.id, OLD.c, NEW.c);
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER check_ctr AFTER UPDATE ON app.ctr FOR EACH ROW EXECUTE FUNCTION audit.check_ctr();
ALTER TABLE app.ctr ENABLE ALWAYS TRIGGER check_ctr;
});

q_source(q{SELECT replicator.add_rule('all', 't1', 'cdc', tables => '{*}', conflict_resolution => 'source-wins')});
ok( $source->poll_query_until('postgres',
		q{SELECT count(*) FILTER (WHERE state = 'ready') = count(*) AND count(*) = 10
		  FROM replicator.rule_status WHERE rule = 'all'}),
	'rule all: every table of the database copied and ready')
  or diag(status('all'));
wait_rule('all', 'initial copy');
compare_table($t1, 'app.items', 'id', 'initial copy');
compare_table($t1, 'app.pairs', 'a, b', 'initial copy');
compare_table($t1, 'app.plain', 'id', 'initial copy');
compare_table($t1, 'app.ctr', 'id', 'initial copy');
is( $t1->safe_psql('postgres', q{SELECT string_agg(id || ':' || coalesce(doc::text, 'SQL NULL'), ',' ORDER BY id) FROM app.jnull}),
	'1:null,2:SQL NULL,3:{"a": null},4:[null]',
	'initial copy: a jsonb JSON null stays a JSON null, distinct from SQL NULL');
is( q_source(q{SELECT string_agg(DISTINCT table_name, ',') FROM replicator.rule_status WHERE rule = 'all' AND table_name LIKE 'replicator%'}),
	'', 'the extension\'s own tables are not in the \'*\' rule');

# changes of every kind
q_source(qq{
INSERT INTO app.items VALUES (1001, 'new', 3.14, now(), '{"new": true}', '\\x0102', 2.5, @{[toast_value(1001)]}, 1),
                             (1002, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE app.items SET name = 'updated', amount = amount * 2, doc = doc || '{"u": 1}' WHERE id BETWEEN 6 AND 60;
UPDATE app.items SET n = n + 100 WHERE id IN (4, 5, 1001);  -- big (TOASTed) left unchanged
UPDATE app.items SET big = @{[toast_value('5b')]} WHERE id = 5;  -- a TOASTed value changed
UPDATE app.items SET name = NULL, at = NULL, data = NULL WHERE id = 1;  -- values to NULL
UPDATE app.items SET name = 'from null', data = '\\x00' WHERE id = 3;   -- NULLs to values
DELETE FROM app.items WHERE id BETWEEN 100 AND 150;
UPDATE app.items SET id = id + 10000 WHERE id IN (2, 61, 62);           -- key changes
UPDATE app.pairs SET b = 7 WHERE a = 'x' AND b = 1;                       -- part of a key
UPDATE app.pairs SET a = 'y' WHERE a = 'a,b';
DELETE FROM app.pairs WHERE a = '(';
TRUNCATE app.plain;
INSERT INTO app.plain SELECT i, 'after truncate ' || i FROM generate_series(40, 60) i;
INSERT INTO app.jnull VALUES (5, 'null'), (6, NULL);
UPDATE app.jnull SET doc = 'null' WHERE id = 2;
UPDATE app.jnull SET doc = NULL WHERE id = 4;
});
# a transaction mixing them, with a savepoint rolled back
q_source(q{
BEGIN;
INSERT INTO app.items (id, name, n) VALUES (2000, 'mixed', 1);
UPDATE app.items SET name = 'mixed update', n = n + 1 WHERE id = 2000;
UPDATE app.items SET id = 2001 WHERE id = 2000;
DELETE FROM app.items WHERE id = 7;
INSERT INTO app.items (id, name) VALUES (7, 'reinserted');
SAVEPOINT s;
INSERT INTO app.items (id, name) VALUES (2002, 'rolled back');
DELETE FROM app.items WHERE id = 8;
ROLLBACK TO SAVEPOINT s;
UPDATE app.items SET n = n + 1 WHERE id = 4;
TRUNCATE app.plain;
INSERT INTO app.plain VALUES (1, 'truncated in a transaction'), (2, 'and refilled');
INSERT INTO app.pairs VALUES ('z', 1, 'mixed');
COMMIT;
BEGIN;
INSERT INTO app.items (id, name) VALUES (3000, 'never committed');
DELETE FROM app.items WHERE id = 9;
ROLLBACK;
});
wait_rule('all', 'inserts, updates, deletes, key changes, truncates, a mixed transaction');
compare_table($t1, 'app.items', 'id', 'after changes');
compare_table($t1, 'app.pairs', 'a, b', 'after changes');
compare_table($t1, 'app.plain', 'id', 'after truncates');
is( $t1->safe_psql('postgres', q{SELECT string_agg(id || ':' || coalesce(doc::text, 'SQL NULL'), ',' ORDER BY id) FROM app.jnull WHERE id IN (2, 4, 5, 6)}),
	'2:null,4:SQL NULL,5:null,6:SQL NULL',
	'streaming: a jsonb JSON null stays a JSON null, distinct from SQL NULL');
is( $t1->safe_psql('postgres', q{SELECT length(big), md5(big) FROM app.items WHERE id = 4}),
	q_source(q{SELECT length(big), md5(big) FROM app.items WHERE id = 4}),
	'the TOASTed value an update left unchanged is still there on the target');
is(q_source(q{SELECT coalesce(sum(conflicts), 0) FROM replicator.rule_status WHERE rule = 'all'}),
	'0', 'no conflict met on a target written by the rule only');

# ------------------------------------------------------------------
# 2. tables created later
# ------------------------------------------------------------------
my $pid = q_source(q{SELECT DISTINCT pid FROM replicator.rule_status WHERE rule = 'all'});
$t1->safe_psql('postgres', 'CREATE TABLE app.later (id int PRIMARY KEY, v text, at timestamptz)');
q_source(q{
BEGIN;
CREATE TABLE app.later (id int PRIMARY KEY, v text, at timestamptz);
INSERT INTO app.later SELECT i, 'before ' || i, now() FROM generate_series(1, 200) i;
COMMIT;
INSERT INTO app.later SELECT i, 'after ' || i, now() FROM generate_series(201, 300) i;
UPDATE app.later SET v = v || ' updated' WHERE id % 10 = 0;
INSERT INTO app.items (id, name) VALUES (4000, 'while later joins');
});
ok( $source->poll_query_until('postgres',
		q{SELECT state = 'ready' FROM replicator.rule_status WHERE rule = 'all' AND table_name = 'app.later'}),
	'a table created later (on the target first) joins the \'*\' rule')
  or diag(status('all'));
wait_rule('all', 'the later table');
compare_table($t1, 'app.later', 'id', 'table created later: initial copy and stream');
compare_table($t1, 'app.items', 'id', 'while a later table joined');
is(q_source(q{SELECT DISTINCT pid FROM replicator.rule_status WHERE rule = 'all'}),
	$pid, 'the worker took it in without restarting (same pid)');

# a table created on the source only: paused alone, with the reason
q_source(q{
CREATE TABLE app.orphan (id int PRIMARY KEY, v text);
INSERT INTO app.orphan SELECT i, 'orphan ' || i FROM generate_series(1, 100) i;
});
ok( $source->poll_query_until('postgres',
		q{SELECT state = 'paused' AND last_error IS NOT NULL FROM replicator.rule_status
		  WHERE rule = 'all' AND table_name = 'app.orphan'}),
	'a table the target lacks is paused')
  or diag(status('all'));
my $reason = q_source(q{SELECT last_error FROM replicator.rule_status WHERE rule = 'all' AND table_name = 'app.orphan'});
like($reason, qr/orphan/, "with a reason naming it: $reason");
is( q_source(q{SELECT string_agg(table_name, ',') FROM replicator.rule_status WHERE rule = 'all' AND state <> 'ready'}),
	'app.orphan', 'alone: every other table stays ready');
q_source(q{
INSERT INTO app.orphan VALUES (101, 'while paused');
UPDATE app.items SET name = 'while orphan paused' WHERE id BETWEEN 10 AND 20;
INSERT INTO app.later VALUES (301, 'while orphan paused', now());
});
wait_rule('all', 'the others stream while one table is paused');
compare_table($t1, 'app.items', 'id', 'streaming with a paused table');
compare_table($t1, 'app.later', 'id', 'streaming with a paused table');

$t1->safe_psql('postgres', 'CREATE TABLE app.orphan (id int PRIMARY KEY, v text)');
q_source(q{SELECT replicator.resume_rule('all')});
ok( $source->poll_query_until('postgres',
		q{SELECT state = 'ready' FROM replicator.rule_status WHERE rule = 'all' AND table_name = 'app.orphan'}),
	'resume_rule brings the paused table in once the target has it')
  or diag(status('all'));
q_source(q{UPDATE app.orphan SET v = 'after resume' WHERE id <= 5});
wait_rule('all', 'after resume_rule');
compare_table($t1, 'app.orphan', 'id', 'resumed table');
compare_table($t1, 'app.items', 'id', 'after resume_rule');

# The target's table gains a column (and a dropped one) while the worker
# streams to it: rows are written as the target's row type, which has
# changed under the worker; it learns it again instead of pausing.
$t1->safe_psql('postgres', q{
ALTER TABLE app.later ADD COLUMN gone int, ADD COLUMN note text DEFAULT 'target only';
ALTER TABLE app.later DROP COLUMN gone;
});
q_source(q{
INSERT INTO app.later VALUES (302, 'after the target changed', now()),
 (303, 'NULL', now()), (304, E' spaced, (paren) "quote" \\\\back\\\\ ', now()), (305, '', NULL);
UPDATE app.later SET v = v || ', again' WHERE id % 7 = 0;
DELETE FROM app.later WHERE id % 11 = 0;
});
wait_rule('all', 'a column added on the target');
is( q_source(q{SELECT state || ' ' || coalesce(last_error, '') FROM replicator.rule_status WHERE rule = 'all' AND table_name = 'app.later'}),
	'ready ', 'a column added on the target does not pause the table');
my $later_sql = q{SET TimeZone = 'UTC'; SELECT count(*) || ' ' || md5(string_agg((id, v, at)::text, ',' ORDER BY id)) FROM app.later};
is($t1->safe_psql('postgres', $later_sql), q_source($later_sql),
	'the source\'s columns of the changed target table are equal, row by row');
is( $t1->safe_psql('postgres', q{SELECT string_agg(coalesce(v, 'SQL NULL'), '|' ORDER BY id) FROM app.later WHERE id BETWEEN 303 AND 305}),
	q{NULL| spaced, (paren) "quote" \\back\\ |}, 'the text NULL, quotes, backslashes, commas, parentheses and spaces arrive as they were');
is( $t1->safe_psql('postgres', q{SELECT count(*) FILTER (WHERE note = 'target only') = count(*) FROM app.later}),
	't', 'the target\'s own column has its default on every row, new ones too');

# The target's table replaced by another of the name, rows kept: the
# statements the session prepared were for the old one.
$t1->safe_psql('postgres', q{
CREATE TABLE app.later_new (LIKE app.later INCLUDING ALL);
INSERT INTO app.later_new SELECT * FROM app.later;
DROP TABLE app.later;
ALTER TABLE app.later_new RENAME TO later;
});
q_source(q{
INSERT INTO app.later VALUES (306, 'after the target table was replaced', now());
UPDATE app.later SET v = v || ', replaced' WHERE id % 5 = 0;
});
wait_rule('all', 'the target table replaced');
is( q_source(q{SELECT state || ' ' || coalesce(last_error, '') FROM replicator.rule_status WHERE rule = 'all' AND table_name = 'app.later'}),
	'ready ', 'a target table replaced by another of its name does not pause the table');
is($t1->safe_psql('postgres', $later_sql), q_source($later_sql),
	'the replaced target table is equal to the source, row by row');

# ------------------------------------------------------------------
# 3. conflict strategies, on t2
# ------------------------------------------------------------------
q_source(q{
SELECT replicator.add_rule('r_sw', 't2', 'cdc', tables => '{cf.sw}', conflict_resolution => 'source-wins');
SELECT replicator.add_rule('r_tw', 't2', 'cdc', tables => '{cf.tw}', conflict_resolution => 'target-wins');
SELECT replicator.add_rule('r_er', 't2', 'cdc', tables => '{cf.er}', conflict_resolution => 'error');
SELECT replicator.add_rule('r_lw', 't2', 'cdc', tables => '{cf.lw}', conflict_resolution => 'last-write-wins',
                           timestamp_column => 'ts');
});
for my $r (qw(r_sw r_tw r_er r_lw))
{
	ok( $source->poll_query_until('postgres',
			"SELECT bool_and(state = 'ready') FROM replicator.rule_status WHERE rule = '$r'"),
		"$r: copied and ready") or diag(status($r));
	wait_rule($r, 'initial copy');
}
compare_table($t2, 'cf.sw', 'id', 'r_sw initial copy');
compare_table($t2, 'cf.tw', 'id', 'r_tw initial copy');
compare_table($t2, 'cf.er', 'id', 'r_er initial copy');
compare_table($t2, 'cf.lw', 'id', 'r_lw initial copy');

sub conflicts_of
{
	my ($rule) = @_;
	return q_source(
		"SELECT string_agg(concat_ws('|', table_name, key, kind, resolution, coalesce(source_row->>'v', ''), coalesce(target_row->>'v', '')), E'\\n' ORDER BY id)"
		  . " FROM replicator.conflicts WHERE rule = '$rule'");
}

# source-wins: an insert on a key the target has with other content, an
# update and a delete of rows the target lacks
$t2->safe_psql('postgres', q{
INSERT INTO cf.sw VALUES (10, 'target', NULL);
DELETE FROM cf.sw WHERE id IN (1, 2);
});
q_source(q{
INSERT INTO cf.sw VALUES (10, 'source', NULL);
UPDATE cf.sw SET v = 'one updated' WHERE id = 1;
DELETE FROM cf.sw WHERE id = 2;
INSERT INTO cf.sw VALUES (11, 'no conflict', NULL);
});
wait_rule('r_sw', 'source-wins conflicts');
compare_table($t2, 'cf.sw', 'id', 'source-wins: the target has the source\'s rows');
is( conflicts_of('r_sw'),
	join("\n",
		'cf.sw|{"id": 10}|key exists|source-wins|source|target',
		'cf.sw|{"id": 1}|row missing|source-wins|one updated|',
		'cf.sw|{"id": 2}|row missing|source-wins||'),
	'source-wins: conflicts records the key that existed and the rows that were missing');

# source-wins, hot rows: a backlog of many updates of the same rows (in one
# transaction and across many, a key changed between them, a row missing on
# the target) ends exactly as on the source, its missing row met once
q_source(q{SELECT replicator.pause_rule('r_sw')});
$t2->safe_psql('postgres', q{DELETE FROM cf.sw WHERE id = 11});
q_source(q{
INSERT INTO cf.sw VALUES (20, 'h0', NULL), (21, 'h0', NULL), (22, 'h0', NULL);
BEGIN;
UPDATE cf.sw SET v = 'in one 1' WHERE id = 11;
UPDATE cf.sw SET v = 'in one 2' WHERE id = 11;
UPDATE cf.sw SET v = 'in one 3' WHERE id = 11;
COMMIT;
});
for my $i (1 .. 40)
{
	q_source(qq{
UPDATE cf.sw SET v = 'h$i' WHERE id IN (20, 21);
UPDATE cf.sw SET id = id + 100, v = 'moved $i' WHERE id IN (22, 122) AND $i % 10 = 0;
UPDATE cf.sw SET v = v || '.' WHERE id IN (22, 122);
});
}
q_source(q{SELECT replicator.resume_rule('r_sw')});
wait_rule('r_sw', 'hot rows');
compare_table($t2, 'cf.sw', 'id', 'source-wins, hot rows: the target ends as the source');
is( q_source(q{SELECT count(*) FROM replicator.conflicts WHERE rule = 'r_sw' AND key = '{"id": 11}' AND kind = 'row missing'}),
	'1', 'source-wins, hot rows: the missing row is one conflict');

# source-wins, a row missing on the target whose TOASTed value the update
# leaves unchanged: the decoded change lacks that value, so the target must
# not get NULL; the change is set aside, and retry_rule_error brings the
# source's row whole
$t2->safe_psql('postgres', q{DELETE FROM cf.sw WHERE id = 3});
q_source(q{UPDATE cf.sw SET v = 'three updated' WHERE id = 3});
wait_rule('r_sw', 'a missing row with an unchanged TOASTed value');
is( $t2->safe_psql('postgres', q{SELECT count(*) FROM cf.sw WHERE id = 3}),
	'0', 'source-wins: a missing row whose TOASTed value the WAL lacks is not inserted with a NULL');
is( q_source(q{SELECT op, key FROM replicator.rule_errors WHERE rule = 'r_sw'}),
	'update|{"id": 3}', 'it is set aside in rule_errors');
q_source(q{SELECT replicator.retry_rule_error(id) FROM replicator.rule_errors WHERE rule = 'r_sw'});
is( $t2->safe_psql('postgres', q{SELECT v, length(big), md5(big) FROM cf.sw WHERE id = 3}),
	q_source(q{SELECT v, length(big), md5(big) FROM cf.sw WHERE id = 3}),
	'retry_rule_error writes the source\'s row, TOASTed value included');
is( q_source(q{SELECT count(*) FROM replicator.rule_errors WHERE rule = 'r_sw'}),
	'0', 'and the set aside change is gone');

# the same row, its TOASTed value rewritten on the source: whatever the
# check above found, the tables compared later start equal
q_source(q{UPDATE cf.sw SET big = big || '' WHERE id = 3});
wait_rule('r_sw', 'a TOASTed value rewritten');
compare_table($t2, 'cf.sw', 'id', 'source-wins: a TOASTed value rewritten');

# target-wins: an insert on an existing key, a row changed on the target
# (REPLICA IDENTITY FULL on the source)
$t2->safe_psql('postgres', q{
INSERT INTO cf.tw VALUES (10, 'target');
UPDATE cf.tw SET v = 'changed on target' WHERE id = 1;
});
q_source(q{
INSERT INTO cf.tw VALUES (10, 'source');
UPDATE cf.tw SET v = 'changed on source' WHERE id = 1;
UPDATE cf.tw SET v = 'two updated' WHERE id = 2;
INSERT INTO cf.tw VALUES (11, 'no conflict');
});
wait_rule('r_tw', 'target-wins conflicts');
is( $t2->safe_psql('postgres', q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM cf.tw}),
	'1:changed on target,2:two updated,3:three,10:target,11:no conflict',
	'target-wins: the target keeps its rows, takes the others');
is( conflicts_of('r_tw'),
	join("\n",
		'cf.tw|{"id": 10}|key exists|target-wins|source|target',
		'cf.tw|{"id": 1}|changed on target|target-wins|changed on source|changed on target'),
	'target-wins: conflicts records the existing key and the row changed on the target');

# error: the conflicting change set aside, the rest goes on
$t2->safe_psql('postgres', q{INSERT INTO cf.er VALUES (10, 'target')});
q_source(q{
INSERT INTO cf.er VALUES (10, 'source');
INSERT INTO cf.er VALUES (11, 'after the error');
UPDATE cf.er SET v = 'one updated' WHERE id = 1;
});
wait_rule('r_er', 'error: the stream goes on');
is( $t2->safe_psql('postgres', q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM cf.er}),
	'1:one updated,2:two,3:three,10:target,11:after the error',
	'error: the conflicting insert set aside, the changes after it applied');
is( q_source(q{SELECT string_agg(concat_ws('|', table_name, op, key, source_row->>'v', reason <> ''), E'\n' ORDER BY id)
               FROM replicator.rule_errors WHERE rule = 'r_er'}),
	'cf.er|insert|{"id": 10}|source|t', 'error: rule_errors holds the change with a reason');
is(conflicts_of('r_er'), 'cf.er|{"id": 10}|key exists|set aside|source|target',
	'error: conflicts says it was set aside');
is( q_source(q{SELECT state FROM replicator.rule_status WHERE rule = 'r_er'}),
	'ready', 'error: the table stays ready');

# retry of a change whose row the source no longer has: the target's row
# of that key goes (found by the key recorded with the change)
q_source(q{DELETE FROM cf.er WHERE id = 10});
wait_rule('r_er', 'error: the source deletes the set aside row');
$t2->safe_psql('postgres', q{INSERT INTO cf.er VALUES (10, 'stray')});
q_source(q{SELECT replicator.retry_rule_error(id) FROM replicator.rule_errors WHERE rule = 'r_er'});
is( $t2->safe_psql('postgres', q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM cf.er}),
	'1:one updated,2:two,3:three,11:after the error',
	'retry_rule_error of a row gone from the source deletes the target\'s row of its key');
is(q_source(q{SELECT count(*) FROM replicator.rule_errors WHERE rule = 'r_er'}),
	'0', 'and the retried change is no longer set aside');

# last-write-wins on ts: the target's newer row stays, its older one is
# overwritten
$t2->safe_psql('postgres', q{
UPDATE cf.lw SET v = 'target newer', ts = '2100-01-01' WHERE id = 1;
UPDATE cf.lw SET v = 'target older', ts = '2000-01-01' WHERE id = 2;
});
q_source(q{
UPDATE cf.lw SET v = 'source', ts = now() WHERE id IN (1, 2);
UPDATE cf.lw SET v = 'source three', ts = now() WHERE id = 3;
});
wait_rule('r_lw', 'last-write-wins conflicts');
is( $t2->safe_psql('postgres', q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM cf.lw}),
	'1:target newer,2:source,3:source three',
	'last-write-wins: the newer target row kept, the older one overwritten');
is( $t2->safe_psql('postgres', q{SELECT ts = '2100-01-01' FROM cf.lw WHERE id = 1}),
	't', 'last-write-wins: with its timestamp');
is( conflicts_of('r_lw'),
	'cf.lw|{"id": 1}|changed on target|target-wins|source|target newer',
	'last-write-wins: conflicts records the row the target wrote later');

# ------------------------------------------------------------------
# 4. transactions committing out of the order they began
# ------------------------------------------------------------------
my @sessions;
for my $i (1 .. 6)
{
	my $s = $source->background_psql('postgres', on_error_stop => 1);
	$s->query_safe('BEGIN');
	$s->query_safe("INSERT INTO app.conc VALUES ($i, 'session $i', 0)");
	push @sessions, $s;
}
# each writes again, in the opposite order, on rows the others will touch
for my $i (reverse 1 .. 6)
{
	$sessions[ $i - 1 ]->query_safe(
		"INSERT INTO app.conc SELECT 100 * $i + k, 'session $i', k FROM generate_series(1, 50) k;"
		  . " UPDATE app.items SET name = 'session $i', n = $i WHERE id = 300 + $i;"
		  . " DELETE FROM app.items WHERE id = 400 + $i");
}
q_source(q{INSERT INTO app.conc VALUES (1000, 'autocommit while they hold', 0)});
# commit in reverse order; the first one begun commits last
for my $i (reverse 1 .. 6)
{
	$sessions[ $i - 1 ]->query_safe("UPDATE app.conc SET v = v + 1 WHERE who = 'session $i'");
	$sessions[ $i - 1 ]->query_safe('COMMIT');
	q_source("UPDATE app.conc SET v = v + 10 WHERE id = 1000") if $i % 2;
}
$_->quit for @sessions;
wait_rule('all', 'out-of-order commits');
compare_table($t1, 'app.conc', 'id', 'out-of-order commits');
compare_table($t1, 'app.items', 'id', 'out-of-order commits');

# ------------------------------------------------------------------
# 5. crashes mid-stream: exactly once
# ------------------------------------------------------------------
my $script = $source->basedir . '/ctr.sql';
append_to_file($script, <<'EOS');
\set r random(1, 100)
BEGIN;
INSERT INTO app.ctr (c) VALUES (0);
UPDATE app.ctr SET c = c + 1 WHERE id = :r;
UPDATE app.ctr SET c = c + 1 WHERE id = currval('app.ctr_id_seq');
DELETE FROM app.ctr WHERE id = currval('app.ctr_id_seq') - 3 AND id % 5 = 0;
COMMIT;
EOS

sub start_writers
{
	my ($seconds) = @_;
	my ($out, $err) = ('', '');
	return IPC::Run::start(
		[
			'pgbench', '--no-vacuum', '--client=4', '--jobs=2', "--time=$seconds",
			'--rate=300', '-f', $script, '-h', $source->host, '-p', $source->port, 'postgres'
		],
		'>', \$out, '2>', \$err);
}

sub ctr_count { my ($node) = @_; return $node->safe_psql('postgres', 'SELECT count(*) FROM app.ctr'); }

# the target stopped in immediate mode
my $writers = start_writers(10);
my $base = ctr_count($t1);
ok($t1->poll_query_until('postgres', "SELECT count(*) > $base + 100 FROM app.ctr"),
	't1 streams under the writers');
$t1->stop('immediate');
my $src = ctr_count($source);
ok($source->poll_query_until('postgres', "SELECT count(*) > $src + 300 FROM app.ctr"),
	'the source goes on while t1 is down');
$t1->start;
$writers->finish;
wait_rule('all', 'after the target\'s crash');
compare_table($t1, 'app.ctr', 'id', 'after the target\'s crash');
is($t1->safe_psql('postgres', 'SELECT count(*) FROM audit.violations'), '0',
	'after the target\'s crash: every update applied once (counter always +1)');
is( q_source(q{SELECT coalesce(sum(conflicts), 0) FROM replicator.rule_status WHERE rule = 'all'}),
	'0', 'after the target\'s crash: no conflict (no change applied twice)');

# the source stopped in immediate mode
$writers = start_writers(10);
$base = ctr_count($t1);
ok($t1->poll_query_until('postgres', "SELECT count(*) > $base + 100 FROM app.ctr"),
	't1 streams under the writers, again');
$source->stop('immediate');
$writers->finish;    # the writers fail with their server: that is expected
$source->start;
$writers = start_writers(2);
$writers->finish;
wait_rule('all', 'after the source\'s crash');
compare_table($t1, 'app.ctr', 'id', 'after the source\'s crash');
is($t1->safe_psql('postgres', 'SELECT count(*) FROM audit.violations'), '0',
	'after the source\'s crash: every update applied once (counter always +1)');
is( q_source(q{SELECT coalesce(sum(conflicts), 0) FROM replicator.rule_status WHERE rule = 'all'}),
	'0', 'after the source\'s crash: no conflict (no change applied twice)');
compare_table($t1, 'app.items', 'id', 'after the crashes');

# a backlog of many batches (10,000 changes each: one commits on the target
# while the next is decoded), the target stopped in immediate mode while it
# catches up
q_source(q{SELECT replicator.pause_rule('all')});
q_source(q{INSERT INTO app.ctr (c) SELECT 0 FROM generate_series(1, 1500)});
q_source("UPDATE app.ctr SET c = c + 1") for 1 .. 30;
my $ctr_at = $t1->safe_psql('postgres', 'SELECT sum(c) FROM app.ctr');
q_source(q{SELECT replicator.resume_rule('all')});
ok( $t1->poll_query_until('postgres', "SELECT sum(c) > $ctr_at + 15000 FROM app.ctr"),
	'backlog: t1 catches up batch after batch');
$t1->stop('immediate');
$t1->start;
wait_rule('all', 'after the target\'s crash in a backlog');
compare_table($t1, 'app.ctr', 'id', 'after the target\'s crash in a backlog');
is($t1->safe_psql('postgres', 'SELECT count(*) FROM audit.violations'), '0',
	'after the target\'s crash in a backlog: every update applied once (counter always +1)');

# ------------------------------------------------------------------
# 6. an initial copy interrupted by the target's crash
# ------------------------------------------------------------------
$t2->safe_psql('postgres', 'CREATE SCHEMA bulk; CREATE TABLE bulk.t (id int8 PRIMARY KEY, v text, n numeric)');
q_source(q{
CREATE SCHEMA bulk;
CREATE TABLE bulk.t (id int8 PRIMARY KEY, v text, n numeric);
INSERT INTO bulk.t SELECT i, md5(i::text), i * 1.5 FROM generate_series(1, 300000) i;
SELECT replicator.add_rule('bulk', 't2', 'cdc', tables => '{bulk.t}');
});
ok( $source->poll_query_until('postgres',
		q{SELECT state = 'copying' AND rows_copied > 0 FROM replicator.rule_status WHERE rule = 'bulk'}),
	'the copy of 300k rows is under way')
  or diag(status('bulk'));
my $progress = q_source(q{SELECT rows_copied || '/' || rows_total FROM replicator.rule_status WHERE rule = 'bulk'});
$t2->stop('immediate');
note("t2 stopped at $progress rows");
q_source(q{
UPDATE bulk.t SET v = 'changed during the copy' WHERE id % 1000 = 0;
DELETE FROM bulk.t WHERE id % 1000 = 1;
INSERT INTO bulk.t SELECT i, 'new', 0 FROM generate_series(300001, 300100) i;
});
$t2->start;
$source->poll_query_until('postgres',
	q{SELECT state IN ('ready', 'paused') FROM replicator.rule_status WHERE rule = 'bulk'});
is(q_source(q{SELECT state FROM replicator.rule_status WHERE rule = 'bulk'}), 'ready',
	'the interrupted copy is done again by itself and the table ready')
  or diag(status('bulk'));
if (q_source(q{SELECT state FROM replicator.rule_status WHERE rule = 'bulk'}) eq 'paused')
{
	q_source(q{SELECT replicator.resume_rule('bulk')});
	ok( $source->poll_query_until('postgres',
			q{SELECT state = 'ready' FROM replicator.rule_status WHERE rule = 'bulk'}),
		'paused by the crash, it is copied by resume_rule')
	  or diag(status('bulk'));
}
wait_rule('bulk', 'after the interrupted copy');
compare_big($t2, 'bulk.t', 'id', 'interrupted initial copy');
# the other rules on t2 came back too
q_source(q{INSERT INTO cf.sw VALUES (12, 'after t2 came back', NULL)});
wait_rule('r_sw', 'after t2\'s crash');
compare_table($t2, 'cf.sw', 'id', 'r_sw after t2\'s crash');
ok( q_source(q{SELECT state FROM replicator.rule_status WHERE rule = 'all' AND table_name = 'bulk.t'}) eq 'paused',
	'on t1, which lacks bulk.t, the \'*\' rule paused it alone');
wait_rule('all', 'still streaming at the end');
compare_table($t1, 'app.items', 'id', 'at the end');

# ------------------------------------------------------------------
# 7. a conflict a batch left on the target (its transaction committed, the
# worker stopped before recording it here) is recorded once at restart
# ------------------------------------------------------------------
my $er_slot = q_source(q{SELECT 'replicator_rule_' || d.oid || '_' || r.id FROM replicator.rules r,
                         pg_database d WHERE r.name = 'r_er' AND d.datname = current_database()});
my $sysid = q_source(q{SELECT system_identifier FROM pg_control_system()});
q_source(q{SELECT replicator.pause_rule('r_er')});
$source->poll_query_until('postgres', q{SELECT pid IS NULL FROM replicator.rule_status WHERE rule = 'r_er'});
$t2->safe_psql('postgres', qq{
INSERT INTO replicator_apply.conflicts (source, slot, table_name, op, kind, key, source_row, target_row, resolution, set_aside)
VALUES ('$sysid', '$er_slot', 'cf.er', 'insert', 'key exists', '{"id": 77}', '{"id": 77, "v": "left on the target"}', '{"id": 77, "v": "t"}', 'set aside', true)});
for my $round (1, 2)
{
	q_source(q{SELECT replicator.resume_rule('r_er')});
	wait_rule('r_er', "restart $round with a conflict left on the target");
	q_source(q{SELECT replicator.pause_rule('r_er')});
	$source->poll_query_until('postgres', q{SELECT pid IS NULL FROM replicator.rule_status WHERE rule = 'r_er'});
}
is( q_source(q{SELECT count(*) FROM replicator.rule_errors WHERE rule = 'r_er' AND key = '{"id": 77}'}),
	'1', 'a set aside change left on the target is recorded here, once');
is( $t2->safe_psql('postgres', qq{SELECT count(*) FROM replicator_apply.conflicts WHERE slot = '$er_slot'}),
	'0', 'and the target forgets it once recorded');

$t1->stop;
$t2->stop;
$source->stop;
done_testing();
