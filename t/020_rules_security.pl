
# Rules never run a table owner's code as a superuser.  Rendering a row
# (col::text, to_json, row_to_json) runs the casts of its columns' types,
# and the owner of an enum may CREATE CAST from it WITH FUNCTION of theirs:
# mallory, no superuser, owns such a type and a table of it that a
# rule covers.  An admin (member of replicator_admin) syncs a snapshot rule
# and validates it; a cdc rule copies and streams the table.  Mallory's
# casts record who they run as (a RAISE LOG line, and a row of an unlogged
# table no rule covers): never a superuser, only mallory.
use strict;
use warnings;
use lib 't';
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
	'source', 'wal_level = logical', 'max_replication_slots = 8',
	'max_wal_senders = 8', @plugin_conf);

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
my $tsnap = target_node('tsnap');
my $tcdc = target_node('tcdc');

# the replicas are added by the superuser (no password needed); the rules
# by an admin who is not one
for my $t ([ 'tsnap', $tsnap ], [ 'tcdc', $tcdc ])
{
	my $conn = $t->[1]->connstr('postgres');
	$source->safe_psql('postgres',
		"SELECT replicator.add_replica('$t->[0]', \$\$$conn\$\$, stream_events => false)");
}

$source->safe_psql(
	'postgres', q{
CREATE ROLE mallory LOGIN;
CREATE ROLE admin LOGIN;
GRANT replicator_admin TO admin;
CREATE SCHEMA mallory AUTHORIZATION mallory;
});

# Mallory's side: everything below is owned by mallory.  spy() runs with
# search_path pg_catalog, pg_temp as well as any other: every name is
# qualified.  The cast to json, which logical decoding runs too, is SQL:
# PL/pgSQL cannot run there without a snapshot.  It cannot log, so it fails
# when anyone but mallory runs it, with an error that names them (and the
# failure shows).
$source->safe_psql(
	'postgres', q{
SET ROLE mallory;
CREATE TYPE mallory.e AS ENUM ('a', 'b', 'c');
CREATE UNLOGGED TABLE mallory.log (who name, super bool, via text);
CREATE FUNCTION mallory.spy(via text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	v_who name := current_user;
	v_super bool;
BEGIN
	SELECT r.rolsuper INTO v_super FROM pg_catalog.pg_roles r
	 WHERE r.rolname OPERATOR(pg_catalog.=) v_who;
	RAISE LOG 'mallory-spy: via=% user=% super=%', via, v_who, v_super;
	BEGIN
		INSERT INTO mallory.log VALUES (v_who, v_super, via);
	EXCEPTION WHEN OTHERS THEN
		RAISE LOG 'mallory-spy: not logged in the table: %', SQLERRM;
	END;
END $$;
CREATE FUNCTION mallory.e_text(x mallory.e) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	PERFORM mallory.spy('text');
	RETURN pg_catalog.textin(pg_catalog.enum_out(x));
END $$;
CREATE FUNCTION mallory.e_json(x mallory.e) RETURNS json LANGUAGE sql AS $$
SELECT CASE WHEN current_user OPERATOR(pg_catalog.<>) 'mallory'
	THEN ('mallory-spy: via=json user=' OPERATOR(pg_catalog.||) current_user::pg_catalog.text
		  OPERATOR(pg_catalog.||) ' super=unknown')::pg_catalog.int4::pg_catalog.text::pg_catalog.json
	ELSE pg_catalog.to_json(pg_catalog.textin(pg_catalog.enum_out(x))) END
$$;
CREATE CAST (mallory.e AS text) WITH FUNCTION mallory.e_text(mallory.e);
CREATE CAST (mallory.e AS json) WITH FUNCTION mallory.e_json(mallory.e);
CREATE TABLE mallory.t (id int PRIMARY KEY, v mallory.e);
CREATE TABLE mallory.narrow (id int PRIMARY KEY, v mallory.e);
INSERT INTO mallory.t VALUES (1, 'a'), (2, 'b'), (3, 'c');
INSERT INTO mallory.narrow VALUES (1, 'a'), (2, 'c');
});
is($source->safe_psql('postgres', q{SELECT 'b'::mallory.e::text}),
	'b', "mallory's cast renders the label");
$source->safe_psql('postgres', 'TRUNCATE mallory.log');

# the targets: the same tables, but narrow.v a varchar(5), so that the
# compatibility report checks the source's values
my $target_ddl = q{
CREATE SCHEMA mallory;
CREATE TYPE mallory.e AS ENUM ('a', 'b', 'c');
CREATE TABLE mallory.t (id int PRIMARY KEY, v mallory.e);
CREATE TABLE mallory.narrow (id int PRIMARY KEY, v varchar(5));
};
$tsnap->safe_psql('postgres', $target_ddl);
$tcdc->safe_psql('postgres', $target_ddl);

sub as_admin
{
	my ($sql) = @_;
	return $source->safe_psql('postgres', $sql, extra_params => [ '-U', 'admin' ]);
}

# What mallory's functions recorded since the log file's offset $from:
# "via user super" for every run, from the server log and the table.
sub spy_runs
{
	my ($from) = @_;
	my @runs = slurp_file($source->logfile, $from) =~ /mallory-spy: via=(\w+) user=(\S+) super=(\S+)/g;
	my @lines;
	push @lines, join(' ', splice(@runs, 0, 3)) while @runs;
	my @rows = split /\n/,
	  $source->safe_psql('postgres', q{SELECT concat_ws(' ', via, who, super) FROM mallory.log});
	$source->safe_psql('postgres', 'TRUNCATE mallory.log');
	return (\@lines, \@rows);
}

# No run of mallory's code as a superuser or as anyone but mallory.
sub check_runs
{
	my ($what, $from, $must_run) = @_;
	my ($lines, $rows) = spy_runs($from);
	my @bad = grep { !/^\w+ mallory (f|false)$/ } @$lines, @$rows;
	ok(!@bad, "$what: mallory's casts never ran as a superuser, nor as anyone but mallory")
	  or diag("runs not as mallory: @bad[0 .. ($#bad < 5 ? $#bad : 5)]");
	ok(@$lines > 0, "$what: mallory's casts did run, as mallory (" . scalar(@$lines) . ' times)')
	  if $must_run;
	diag("$what: mallory's casts ran " . scalar(@$lines) . ' times (server log), '
		  . scalar(@$rows) . ' logged in mallory.log')
	  if !$must_run;
}

# Every row of a table, by key (v by its output function: no cast to text,
# which would run mallory's function as the test's superuser).
sub rows_of
{
	my ($node, $table) = @_;
	return $node->safe_psql('postgres', "SELECT id, v FROM $table ORDER BY id");
}

# ------------------------------------------------------------------
# snapshot: validate_rule and sync by an admin
# ------------------------------------------------------------------
# '*' would reach tables the admin may not read: superusers only; the
# admin names mallory's tables, which mallory lets them read
my ($sret, $sout, $serr) = $source->psql('postgres',
	q{SET ROLE admin; SELECT replicator.add_rule('star', 'tsnap', 'snapshot', tables => '{*}')});
ok($sret != 0 && $serr =~ /only a superuser may add a rule on '\*'/, "an admin's '*' rule is refused")
  or diag($serr);
$source->safe_psql('postgres',
	'GRANT USAGE ON SCHEMA mallory TO admin; GRANT SELECT ON mallory.t, mallory.narrow TO admin');
as_admin(q{SELECT replicator.add_rule('snap', 'tsnap', 'snapshot', tables => '{mallory.t, mallory.narrow}')});

my $from = -s $source->logfile;
is( as_admin(
		q{SELECT string_agg(concat_ws('|', table_name, column_name, severity, issue), E'\n' ORDER BY 1)
		  FROM replicator.validate_rule('snap')}),
	'mallory.narrow|v|warning|target type character varying(5) is narrower than source type mallory.e',
	"validate_rule: narrow.v's values are checked and fit");
check_runs('validate_rule', $from, 1);

$from = -s $source->logfile;
is( as_admin(q{SELECT table_name, inserted, updated, deleted FROM replicator.sync('snap') ORDER BY 1}),
	"mallory.narrow|2|0|0\nmallory.t|3|0|0", 'sync: both tables mirrored');
check_runs('sync', $from, 1);
is(rows_of($tsnap, 'mallory.t'), rows_of($source, 'mallory.t'), 'sync: mallory.t equal on the target');
is(rows_of($tsnap, 'mallory.narrow'), rows_of($source, 'mallory.narrow'),
	'sync: mallory.narrow equal on the target');

# a change, synced again: only what differs is rendered and sent
$source->safe_psql('postgres', q{UPDATE mallory.t SET v = 'a' WHERE id = 3; INSERT INTO mallory.t VALUES (4, 'b')});
$source->safe_psql('postgres', 'TRUNCATE mallory.log');
$from = -s $source->logfile;
is( as_admin(q{SELECT table_name, inserted, updated, deleted FROM replicator.sync('snap') ORDER BY 1}),
	"mallory.narrow|0|0|0\nmallory.t|1|1|0", 'sync again: one row inserted, one updated');
check_runs('second sync', $from, 1);
is(rows_of($tsnap, 'mallory.t'), rows_of($source, 'mallory.t'), 'second sync: mallory.t equal');

# the superuser's own sync is no different
$from = -s $source->logfile;
$source->safe_psql('postgres', q{SELECT * FROM replicator.sync('snap')});
check_runs("the superuser's sync", $from, 1);

# ------------------------------------------------------------------
# cdc: the worker validates, copies, and streams mallory's changes
# ------------------------------------------------------------------
$from = -s $source->logfile;
as_admin(q{SELECT replicator.add_rule('cdc', 'tcdc', 'cdc', tables => '{mallory.t, mallory.narrow}')});
my ($ret, $out, $err) = $source->psql('postgres', q{SELECT replicator.wait_for_rule('cdc', '90s')});
ok($ret == 0 && $out eq 't', 'cdc: the initial copy is done')
  or diag("wait_for_rule: $out $err\n"
	  . $source->safe_psql('postgres',
		  q{SELECT table_name, state, last_error FROM replicator.rule_status WHERE rule = 'cdc' ORDER BY 1}));
check_runs('cdc: validation and initial copy', $from, 0);

$from = -s $source->logfile;
$source->safe_psql('postgres',
	q{INSERT INTO mallory.t VALUES (5, 'c'), (6, 'a'); UPDATE mallory.t SET v = 'c' WHERE id = 1;
	  INSERT INTO mallory.narrow VALUES (3, 'b')});
($ret, $out, $err) = $source->psql('postgres', q{SELECT replicator.wait_for_rule('cdc', '90s')});
ok($ret == 0 && $out eq 't', 'cdc: the changes are applied')
  or diag("wait_for_rule: $out $err\n"
	  . $source->safe_psql('postgres',
		  q{SELECT table_name, state, last_error FROM replicator.rule_status WHERE rule = 'cdc' ORDER BY 1}));
check_runs('cdc: streamed changes', $from, 0);
is(rows_of($tcdc, 'mallory.t'), rows_of($source, 'mallory.t'), 'cdc: mallory.t equal on the target');
is(rows_of($tcdc, 'mallory.narrow'), rows_of($source, 'mallory.narrow'),
	'cdc: mallory.narrow equal on the target');

$source->safe_psql('postgres', q{SELECT replicator.drop_rule('cdc')});
$tcdc->stop;
$tsnap->stop;
$source->stop;
done_testing();
