
# What a PostgreSQL user takes for granted: pg_dump + pg_restore of a source
# keeps every event exactly, the id allocator and the destinations (restored
# paused, never streaming into the original's destinations on their own),
# while the guards stay up; restore_events wants ids exactly 1..max; and
# ALTER EXTENSION UPDATE from 1.0 and from 1.1 to 1.2, then to 1.3, gives
# exactly the objects of a fresh install of each, compared object by object,
# and keeps the events and the replicas; 'master' rows (unused before 1.2)
# become plain destinations; a replica of 1.2 streams on after the update to
# 1.3, by itself; the dump keeps the rules of 1.3 (paused with their
# restored target), their conflicts and set-aside changes, and the ids go on.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $src = source_node('src');
my $dst = destination_node('dst');
add_replica($src, 'd', $dst);
my $paused_conn = $dst->connstr('postgres');
$src->safe_psql('postgres',
	"SELECT replicator.add_replica('p', \$\$$paused_conn\$\$, enabled => false)");

# events of both forms, with values only an exact copy keeps
$src->safe_psql('postgres', q{
SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('call', c, 'k', k, 'price', 1.50,
         'big', 12345678901234567890.123456789, 'text', E'tab\there "quoted" \\ back') FROM generate_series(1, 50) k))
  FROM generate_series(1, 40) c;
SELECT insert_events($$($1[1], $2, '{"slate": "text form", "n": 1e-7}'), ($1[2], $2, '{"b": [1, 2.50]}')$$);
});
ok(wait_replica($src, 'd'), 'the destination has every event');

# a rule, its target (registered for rules only), a conflict it met and a
# change it set aside: all in the dump
$src->safe_psql('postgres', qq{
CREATE TABLE orders (id int PRIMARY KEY, amount numeric);
INSERT INTO orders VALUES (1, 9.99), (2, 5);
SELECT replicator.add_replica('rt', \$\$$paused_conn\$\$, stream_events => false);
SELECT replicator.add_rule('orders.snap', 'rt', 'snapshot', '{orders}', conflict_resolution => 'target-wins');
INSERT INTO replicator.conflicts (rule, table_name, key, source_row, target_row, kind, resolution)
  VALUES ('orders.snap', 'public.orders', '{"id": 1}', '{"id": 1, "amount": 9.99}', '{"id": 1, "amount": 1}',
          'key exists', 'target-wins');
INSERT INTO replicator.rule_errors (rule, table_name, op, key, source_row, reason)
  VALUES ('orders.snap', 'public.orders', 'insert', '{"id": 2}', '{"id": 2, "amount": 5}', 'set aside');
});

# --- pg_dump, pg_restore into a server of its own
my $dump = $PostgreSQL::Test::Utils::tmp_check . '/src.dump';
$src->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $src->connstr('postgres') ],
	'pg_dump of the source');
my $rst = PostgreSQL::Test::Cluster->new('rst');
$rst->init(allows_streaming => 'logical');
$rst->append_conf('postgresql.conf', "shared_preload_libraries = 'replicator'\n");
$rst->start;
$rst->safe_psql('postgres', 'CREATE DATABASE restored');
my ($stdout, $stderr);
my $ok = IPC::Run::run([ 'pg_restore', '--exit-on-error', '-d', $rst->connstr('restored'), $dump ],
	'>', \$stdout, '2>', \$stderr);
ok($ok, 'pg_restore restores the dump without an error') or diag($stderr);

compare_events($src, $rst, 'every event restored exactly (id, ts to the microsecond, jsonb)', 'restored');
is( $rst->safe_psql('restored',
		q{SELECT i.id = e.max_id + 1, i.last_ts = e.max_ts
		  FROM id i, (SELECT max(id) AS max_id, max(ts) AS max_ts FROM events) e}),
	't|t', 'the id row continues after the restored events, last_ts is their max(ts)');
is($rst->safe_psql('restored', 'SELECT count(*) FROM id'), '1', 'the id table holds one row');

# the destinations are restored, paused, with the reason shown to an admin
is( $rst->safe_psql('restored',
		q{SELECT string_agg(name || ':' || enabled || ':' || (invalid_reason LIKE 'paused: not added by add_replica (restored from a dump?)%'), ',' ORDER BY name)
		  FROM replicator.replicas}),
	'd:false:true,p:false:true,rt:false:true', 'every destination is restored, paused, with a reason');
is( $rst->safe_psql('restored',
		q{SELECT string_agg(name || ':' || state || ':' || (last_error LIKE '%resume_replica%'), ',' ORDER BY name) FROM replicator.replica_status}),
	'd:invalid:true,p:invalid:true,rt:rule target:true', 'replica_status shows them stopped, with the reason');
is( $rst->safe_psql('restored',
		q{SELECT conninfo = $$} . $dst->connstr('postgres') . q{$$ FROM replicator.replicas WHERE name = 'd'}),
	't', 'with their connection strings');
is($rst->safe_psql('restored', 'SELECT count(*) FROM replicator.worker_stats()'),
	'0', 'no worker streams from the restored copy');

# the rule, its target, its conflicts and set-aside changes
is( $rst->safe_psql('restored',
		q{SELECT string_agg(name || ':' || stream_events, ',' ORDER BY name) FROM replicator.replicas}),
	'd:true,p:true,rt:false', 'stream_events restored: rt is a rule target only');
is( $rst->safe_psql('restored',
		q{SELECT name, target, mode, tables, conflict_resolution, coalesce(timestamp_column, '-')
		  FROM replicator.rules}),
	'orders.snap|rt|snapshot|{public.orders}|target-wins|-', 'the rule is restored');
is( $rst->safe_psql('restored', q{SELECT rule, mode, state, target FROM replicator.rule_status}),
	'orders.snap|snapshot|paused|rt', 'rule_status shows it paused, as its target is');
is( $rst->safe_psql('restored',
		q{SELECT rule, table_name, key, source_row, target_row, kind, resolution FROM replicator.conflicts}),
	'orders.snap|public.orders|{"id": 1}|{"id": 1, "amount": 9.99}|{"id": 1, "amount": 1}|key exists|target-wins',
	'the conflict it met is restored');
is( $rst->safe_psql('restored',
		q{SELECT rule, table_name, op, key, source_row, reason FROM replicator.rule_errors}),
	'orders.snap|public.orders|insert|{"id": 2}|{"id": 2, "amount": 5}|set aside',
	'the change it set aside is restored');
is($rst->safe_psql('restored', 'SELECT count(*) FROM replicator.rule_worker_stats()'),
	'0', 'no rule worker runs in the restored copy');
# ids go on after the restored ones: rules, conflicts, rule_errors
my ($id_ret, $id_out, $id_err) = $rst->psql('restored',
	q{SELECT replicator.add_rule('orders.again', 'rt', 'snapshot', '{orders}')});
is($id_ret, 0, 'a rule is added after the restore, with an id of its own') or diag($id_err);
($id_ret, $id_out, $id_err) = $rst->psql('restored',
	q{INSERT INTO replicator.conflicts (rule, table_name, key, kind, resolution)
	  VALUES ('orders.again', 'public.orders', '{"id": 3}', 'row missing', 'source-wins')});
is($id_ret, 0, 'a conflict is recorded after the restore, with an id of its own') or diag($id_err);
($id_ret, $id_out, $id_err) = $rst->psql('restored',
	q{INSERT INTO replicator.rule_errors (rule, table_name, op, key, reason)
	  VALUES ('orders.again', 'public.orders', 'delete', '{"id": 3}', 'set aside')});
is($id_ret, 0, 'a change is set aside after the restore, with an id of its own') or diag($id_err);
$rst->safe_psql('restored', q{
SELECT replicator.drop_rule('orders.again');
DELETE FROM replicator.conflicts WHERE rule = 'orders.again';
DELETE FROM replicator.rule_errors WHERE rule = 'orders.again';
});

# a cdc rule needs the replicator output plugin allowed (15.19 and later
# approve output plugins by output_plugin_libraries)
my $plugins = $rst->safe_psql('restored',
	q{SELECT current_setting('output_plugin_libraries', true)});
if ($plugins ne '')
{
	($id_ret, $id_out, $id_err) = $rst->psql('restored',
		q{SELECT replicator.add_rule('orders.cdc', 'rt', 'cdc', '{orders}')});
	isnt($id_ret, 0, 'a cdc rule is refused while output_plugin_libraries leaves out replicator');
	like($id_err, qr/cdc rules need the replicator output plugin to be allowed.*output_plugin_libraries is "\Q$plugins\E".*ALTER SYSTEM SET output_plugin_libraries = pgoutput, test_decoding, replicator/s,
		'saying what the setting is and how to allow it');
	$rst->safe_psql('postgres',
		'ALTER SYSTEM SET output_plugin_libraries = pgoutput, test_decoding, replicator');
	$rst->reload;
	$rst->poll_query_until('restored',
		q{SELECT 'replicator' = ANY (string_to_array(replace(current_setting('output_plugin_libraries'), ' ', ''), ','))})
	  or die 'output_plugin_libraries was not reloaded';
}
# a cdc rule aimed at the restored (paused) target is paused with it: no
# worker starts for it
($id_ret, $id_out, $id_err) = $rst->psql('restored',
	q{SELECT replicator.add_rule('orders.cdc', 'rt', 'cdc', '{orders}')});
is($id_ret, 0, 'a cdc rule is added to the restored target') or diag($id_err);
$rst->safe_psql('restored', 'SELECT replicator.rescan()');
sleep 3;
is($rst->safe_psql('restored', 'SELECT count(*) FROM replicator.rule_worker_stats()'),
	'0', 'no worker starts for a cdc rule whose target is paused');
is($rst->safe_psql('restored', q{SELECT DISTINCT state FROM replicator.rule_status WHERE rule = 'orders.cdc'}),
	'paused', 'rule_status shows it paused');
is($rst->safe_psql('restored',
		q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'replicator_rule_%'}),
	'0', 'and no slot is created for it');
$rst->safe_psql('restored', q{SELECT replicator.drop_rule('orders.cdc')});

# a replicator.diff-style comparison with the original: no difference
my $orig = $src->connstr('postgres');
$rst->safe_psql('restored',
	"SELECT replicator.add_replica('orig', \$\$$orig\$\$, enabled => false)");
is($rst->safe_psql('restored', q{SELECT count(*) FROM replicator.diff('orig', validate => true)}),
	'0', 'replicator.diff: the restored database equals the original, both valid');

# it goes on from there; the original's destination never sees it
my $max = $src->safe_psql('postgres', 'SELECT max(id) FROM events');
is( $rst->safe_psql('restored',
		q{SELECT first_id FROM insert_events_array(ARRAY['{"after":"restore"}']::jsonb[])}),
	$max + 1, 'the next insert_events_array continues after max(id)');
is( $rst->safe_psql('restored',
		"SELECT (SELECT ts FROM events WHERE id = $max + 1) > (SELECT max(ts) FROM events WHERE id <= $max)"),
	't', 'with ts still increasing');
$src->safe_psql('postgres', q{SELECT insert_events_array(ARRAY['{"original":"goes on"}']::jsonb[])});
ok(wait_replica($src, 'd'), 'the original streams on');
compare_events($src, $dst, 'the original\'s destination holds the original\'s history only');

# the guards hold after the restore
for my $sql (
	q{INSERT INTO events VALUES (1000, now(), '{}')},
	q{UPDATE events SET event = '{}' WHERE id = 1},
	q{DELETE FROM events WHERE id = 1},
	q{TRUNCATE events},
	"COPY events FROM stdin;\n1000\t2030-01-01 00:00:00+00\t{}\n\\.\n",
	q{UPDATE id SET id = 1})
{
	my ($ret, $out, $err) = $rst->psql('restored', $sql);
	isnt($ret, 0, 'refused after the restore: ' . (split /\n/, $sql)[0]);
}
is($rst->safe_psql('restored', 'SELECT count(*) = max(id) FROM events'), 't', 'still gapless');

# --- COPY into an empty events table: only a superuser's, only ids 1..N
$rst->safe_psql('postgres', 'CREATE EXTENSION replicator');
sub copy_in
{
	my ($rows, $role) = @_;
	my $data = join('', map { "$_->[0]\t$_->[1]\t{\"k\": $_->[0]}\n" } @$rows);
	my $set = $role ? "SET ROLE $role;\n" : '';
	return $rst->psql('postgres', "${set}COPY events FROM stdin;\n$data\\.\n");
}
my @t = ('2030-01-01 00:00:00+00', '2030-01-01 00:00:01+00', '2030-01-01 00:00:02+00');
my ($ret, $out, $err) = copy_in([ [ 1, $t[0] ], [ 3, $t[1] ] ]);
like($err, qr/restored events must have ids exactly 1\.\.N.*\n.*2 events with ids from 1 to 3/,
	'a COPY with a gap is refused');
($ret, $out, $err) = copy_in([ [ 2, $t[0] ], [ 3, $t[1] ] ]);
like($err, qr/ids exactly 1\.\.N/, 'a COPY not starting at 1 is refused');
($ret, $out, $err) = copy_in([ [ 1, $t[1] ], [ 2, $t[0] ] ]);
like($err, qr/ts never decreasing/, 'a COPY with ts decreasing as id grows is refused');
($ret, $out, $err) = $rst->psql('postgres', q{INSERT INTO events VALUES (1, now(), '{}')});
like($err, qr/only allowed through insert_events_array\(\)/, 'an INSERT into the empty table is refused');
$rst->safe_psql('postgres',
	'CREATE ROLE app; GRANT INSERT, SELECT ON events TO app; GRANT SELECT, UPDATE ON id TO app');
($ret, $out, $err) = copy_in([ [ 1, $t[0] ] ], 'app');
like($err, qr/COPY into table "events" is only allowed for a superuser restoring a dump/,
	'a non-superuser\'s COPY is refused');
is($rst->safe_psql('postgres', 'SELECT count(*) FROM events'), '0', 'nothing entered');
is($rst->safe_psql('postgres', 'SELECT id FROM id'), '1', 'and the id row is untouched');
($ret, $out, $err) = copy_in([ [ 1, $t[0] ], [ 2, $t[1] ], [ 3, $t[1] ] ]);
is($ret, 0, 'a superuser\'s COPY of ids 1..3 into the empty table goes in') or diag($err);
is($rst->safe_psql('postgres', q{SELECT id, last_ts = '2030-01-01 00:00:01+00' FROM id}),
	'4|t', 'the id row follows it');
($ret, $out, $err) = copy_in([ [ 4, $t[2] ] ]);
like($err, qr/COPY into table "events" is only allowed while it is empty/, 'a second COPY is refused');
is( $rst->safe_psql('postgres',
		q{SELECT first_id, ts > '2030-01-01 00:00:01+00' FROM insert_events_array(ARRAY['{}']::jsonb[])}),
	'4|t', 'insert_events_array continues after it');

# --- restore_events: ids exactly 1..max, not only as many as max(id)
$rst->safe_psql('postgres', q{
CREATE DATABASE skewed;
});
$rst->safe_psql('skewed', q{
CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL);
INSERT INTO events VALUES (-1, now(), '{}'), (1, now(), '{}'), (3, now(), '{}');
});
$rst->safe_psql('postgres', 'CREATE DATABASE empty_source');
$rst->safe_psql('empty_source', 'CREATE EXTENSION replicator');
($ret, $out, $err) = $rst->psql('empty_source',
	"SELECT restore_events('@{[$rst->host]}', 'skewed', NULL, NULL, @{[$rst->port]})");
like($err, qr/restore_events: the remote's ids are not exactly 1\.\.max\(id\): 3 events, min\(id\) -1, max\(id\) 3/,
	'restore_events refuses a remote whose ids do not start at 1');
is($rst->safe_psql('empty_source', 'SELECT count(*) FROM events'), '0', 'and the source stays empty');

# --- ALTER EXTENSION UPDATE from 1.0: exactly a fresh 1.2, events kept
$rst->safe_psql('postgres', 'CREATE DATABASE updated; CREATE DATABASE fresh; CREATE DATABASE fresh13');
$rst->safe_psql('updated', q{
CREATE EXTENSION replicator VERSION '1.0';
SELECT insert_events(ARRAY(SELECT jsonb_build_object('k', k, 'v', 1.50) FROM generate_series(1, 30) k)) FROM generate_series(1, 3);
SELECT insert_events($$($1[1], $2, '{"text": "form"}')$$);
-- as 1.0's add_replica would have: this library refuses to run 1.0's API
INSERT INTO replicator.replicas (name, conninfo, enabled) VALUES ('kept', 'host=/nonexistent dbname=x', false);
});
my $before = dump_events($rst, 'updated');
$rst->safe_psql('updated', q{ALTER EXTENSION replicator UPDATE TO '1.2'});
is($rst->safe_psql('updated', q{SELECT extversion FROM pg_extension WHERE extname = 'replicator'}),
	'1.2', 'updated to 1.2 (1.0 -> 1.1 -> 1.2)');
is(dump_events($rst, 'updated'), $before, 'the update keeps every event');
$rst->safe_psql('fresh', q{CREATE EXTENSION replicator VERSION '1.2'});
$rst->safe_psql('fresh13', 'CREATE EXTENSION replicator');
is($rst->safe_psql('fresh13', q{SELECT extversion FROM pg_extension WHERE extname = 'replicator'}),
	'1.3', 'a fresh install is at 1.3');

# Every object the extension owns, and every object in its schemas, with
# its definition: functions, tables (columns in order), indexes,
# constraints, triggers, views, privileges, comments, config tables.
my $describe = q{
WITH ext AS (SELECT oid, extnamespace, extversion, extrelocatable, extconfig, extcondition
             FROM pg_extension WHERE extname = 'replicator'),
nsps AS (SELECT extnamespace AS oid FROM ext
         UNION SELECT objid FROM pg_depend, ext
         WHERE refclassid = 'pg_extension'::regclass AND refobjid = ext.oid AND deptype = 'e'
           AND classid = 'pg_namespace'::regclass),
members AS (SELECT classid, objid FROM pg_depend, ext
            WHERE refclassid = 'pg_extension'::regclass AND refobjid = ext.oid AND deptype = 'e'),
rels AS (SELECT c.oid FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM nsps)
           AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
         UNION SELECT objid FROM members WHERE classid = 'pg_class'::regclass),
procs AS (SELECT p.oid FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM nsps)
          UNION SELECT objid FROM members WHERE classid = 'pg_proc'::regclass)
SELECT line FROM (
  SELECT 'extension version ' || extversion || ' relocatable ' || extrelocatable AS line FROM ext
  UNION ALL
  SELECT 'config table ' || t.c::regclass || ' condition ' || quote_literal(coalesce(t.cond, ''))
  FROM ext, unnest(ext.extconfig, ext.extcondition) AS t(c, cond)
  UNION ALL
  SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM members
  UNION ALL
  SELECT 'not a member: ' || pg_describe_object(o.classid, o.objid, 0)
  FROM (SELECT 'pg_class'::regclass AS classid, oid AS objid FROM rels
        UNION SELECT 'pg_proc'::regclass, oid FROM procs) o
  WHERE (o.classid, o.objid) NOT IN (SELECT classid, objid FROM members)
    AND NOT (o.classid = 'pg_class'::regclass AND (SELECT relkind FROM pg_class WHERE oid = o.objid) = 'c'
             AND EXISTS (SELECT FROM pg_type WHERE typrelid = o.objid AND typtype = 'c'))
  UNION ALL
  SELECT 'schema ' || n.nspname || ' owner ' || n.nspowner::regrole
         || ' acl ' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text)
                                 FROM unnest(coalesce(n.nspacl, acldefault('n', n.nspowner))) a), '')
         || ' comment ' || coalesce(obj_description(n.oid, 'pg_namespace'), '-')
  FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM nsps)
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure
         || ' owner ' || p.proowner::regrole
         || ' secdef ' || p.prosecdef || ' config ' || coalesce(p.proconfig::text, '-')
         || ' acl ' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text)
                                 FROM unnest(coalesce(p.proacl, acldefault('f', p.proowner))) a), '')
         || ' comment ' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
         || E'\n' || CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(p.oid) END
  FROM pg_proc p WHERE p.oid IN (SELECT oid FROM procs)
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' kind ' || c.relkind::text || ' owner ' || c.relowner::regrole
         || ' options ' || coalesce(c.reloptions::text, '-')
         || ' rls ' || c.relrowsecurity || ' ' || c.relforcerowsecurity
         || ' persistence ' || c.relpersistence::text
         || ' acl ' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text)
                                 FROM unnest(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a), '')
         || ' comment ' || coalesce(obj_description(c.oid, 'pg_class'), '-')
  FROM pg_class c WHERE c.oid IN (SELECT oid FROM rels)
  UNION ALL
  SELECT 'column ' || a.attrelid::regclass || ' #'
         || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) || ' ' || quote_ident(a.attname)
         || ' ' || format_type(a.atttypid, a.atttypmod)
         || ' notnull ' || a.attnotnull
         || ' default ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
         || ' identity ' || quote_literal(a.attidentity::text) || ' generated ' || quote_literal(a.attgenerated::text)
         || ' collation ' || coalesce((SELECT collname FROM pg_collation WHERE oid = a.attcollation), '-')
         || ' acl ' || coalesce(a.attacl::text, '-')
         || ' comment ' || coalesce(col_description(a.attrelid, a.attnum), '-')
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE a.attrelid IN (SELECT oid FROM rels) AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid) || ' comment ' || coalesce(obj_description(i.indexrelid, 'pg_class'), '-')
  FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM rels)
  UNION ALL
  SELECT 'constraint ' || c.conrelid::regclass || ' ' || quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid)
         || ' deferrable ' || c.condeferrable || ' ' || c.condeferred
  FROM pg_constraint c WHERE c.conrelid IN (SELECT oid FROM rels)
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled ' || t.tgenabled::text
         || ' comment ' || coalesce(obj_description(t.oid, 'pg_trigger'), '-')
  FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rels) AND NOT t.tgisinternal
  UNION ALL
  SELECT 'view ' || c.oid::regclass || E'\n' || pg_get_viewdef(c.oid)
  FROM pg_class c WHERE c.oid IN (SELECT oid FROM rels) AND c.relkind IN ('v', 'm')
  UNION ALL
  SELECT 'rule ' || pg_get_ruledef(r.oid)
  FROM pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM rels) AND r.rulename <> '_RETURN'
  UNION ALL
  SELECT 'policy ' || p.polrelid::regclass || ' ' || p.polname || ' ' || p.polcmd::text || ' ' || p.polpermissive
         || ' roles ' || p.polroles::regrole[]::text
         || ' using ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '-')
         || ' check ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-')
  FROM pg_policy p WHERE p.polrelid IN (SELECT oid FROM rels)
  UNION ALL
  SELECT 'type ' || format_type(t.oid, NULL) || ' ' || t.typtype::text
         || ' ' || coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid), '')
         || ' ' || coalesce(pg_get_constraintdef((SELECT c.oid FROM pg_constraint c WHERE c.contypid = t.oid LIMIT 1)), '')
  FROM pg_type t WHERE t.oid IN (SELECT objid FROM members WHERE classid = 'pg_type'::regclass)
  UNION ALL
  SELECT 'event trigger ' || e.evtname || ' ' || e.evtevent || ' ' || e.evtfoid::regproc
         || ' ' || coalesce(e.evttags::text, '') || ' ' || e.evtenabled::text
  FROM pg_event_trigger e WHERE e.oid IN (SELECT objid FROM members WHERE classid = 'pg_event_trigger'::regclass)
) all_lines
ORDER BY line
};
my $updated = $rst->safe_psql('updated', $describe);
my $fresh = $rst->safe_psql('fresh', $describe);
# the definitions separated into objects: one per line that starts a new one
my $object_start = qr/\n(?=(?:extension|config table|member|schema|function|relation|column|index|constraint|trigger|view|rule|policy|type|event trigger) |not a member: )/;
my @objects_updated = split $object_start, $updated;
my @objects_fresh = split $object_start, $fresh;
my %in_fresh = map { $_ => 1 } @objects_fresh;
my %in_updated = map { $_ => 1 } @objects_updated;
my @only_updated = grep { !$in_fresh{$_} } @objects_updated;
my @only_fresh = grep { !$in_updated{$_} } @objects_fresh;
cmp_ok(scalar(@objects_fresh), '>', 50, scalar(@objects_fresh) . ' object descriptions of a fresh 1.2 install');
is( join("\n---\n",
		(map { "only after UPDATE: $_" } @only_updated),
		(map { "only in a fresh install: $_" } @only_fresh)),
	'', 'ALTER EXTENSION UPDATE from 1.0 gives exactly the objects of a fresh 1.2 install');
like($fresh, qr/^function insert_events_array\(jsonb\[\]\)/m, 'the description names the functions');
like($fresh, qr/^config table replicator\.replicas condition ''$/m, 'and the config tables');

# and the updated source works on
is( ($rst->psql('updated',
		q{SELECT first_id FROM insert_events_array(ARRAY['{"after":"update"}']::jsonb[])}))[1],
	'92', 'and ids continue');
is($rst->safe_psql('updated', q{SELECT count(*) FROM replicator.replicas WHERE name = 'kept'}),
	'1', 'and the destinations');

# --- ALTER EXTENSION UPDATE from 1.1, with replicas, one of them 'master'
# the comparison above, for another updated database
sub differences_from
{
	my ($db, $fresh_objects) = @_;
	my %in_fresh_db = map { $_ => 1 } @$fresh_objects;
	my @objects = split $object_start, $rst->safe_psql($db, $describe);
	my %in_db = map { $_ => 1 } @objects;
	return join("\n---\n",
		(map { "only after UPDATE: $_" } grep { !$in_fresh_db{$_} } @objects),
		(map { "only in a fresh install: $_" } grep { !$in_db{$_} } @$fresh_objects));
}
sub differences_from_fresh { return differences_from($_[0], \@objects_fresh); }
$rst->safe_psql('postgres', 'CREATE DATABASE updated11');
$rst->safe_psql('updated11', q{
CREATE EXTENSION replicator VERSION '1.1';
SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('k', k, 'v', 1.50) FROM generate_series(1, 30) k));
-- as 1.1's add_replica would have: this library refuses to run 1.1's API
INSERT INTO replicator.replicas (name, conninfo, role, lag_tolerance) VALUES
	('m11', 'host=/nonexistent dbname=m', 'master', NULL),
	('s11', 'host=/nonexistent dbname=s password=s11secret', 'slave', '5 s');
});
$before = dump_events($rst, 'updated11');
($ret, $out, $err) = $rst->psql('updated11', q{ALTER EXTENSION replicator UPDATE TO '1.2'});
is($ret, 0, 'ALTER EXTENSION UPDATE from 1.1 with a master row succeeds');
like($err, qr/WARNING:  replicas 'm11' keep streaming as destinations \(role 'slave'\)/,
	'saying that the master row stays a destination');
is($rst->safe_psql('updated11', q{SELECT extversion FROM pg_extension WHERE extname = 'replicator'}),
	'1.2', 'updated from 1.1 to 1.2');
is(dump_events($rst, 'updated11'), $before, 'the update from 1.1 keeps every event');
is( $rst->safe_psql('updated11',
		q{SELECT string_agg(name || ':' || role || ':' || coalesce(lag_tolerance::text, '-'), ',' ORDER BY name)
		  FROM replicator.replicas}),
	'm11:slave:-,s11:slave:00:00:05', 'and the replicas, the master row as a slave');
is($rst->safe_psql('updated11', 'SELECT count(*) FROM replicator.node_state'),
	'0', 'the updated database is in no topology until it registers itself');
is(differences_from_fresh('updated11'), '',
	'ALTER EXTENSION UPDATE from 1.1 gives exactly the objects of a fresh 1.2 install');

# two 'master' rows (1.1 allowed them) do not stop the update either, from
# 1.1 to the default version in one step
$rst->safe_psql('postgres', 'CREATE DATABASE twomasters');
$rst->safe_psql('twomasters', q{
CREATE EXTENSION replicator VERSION '1.1';
INSERT INTO replicator.replicas (name, conninfo, role) VALUES
	('m1', 'host=/nonexistent dbname=a', 'master'), ('m2', 'host=/nonexistent dbname=b', 'master');
});
$rst->safe_psql('twomasters', 'ALTER EXTENSION replicator UPDATE');
is( $rst->safe_psql('twomasters',
		q{SELECT extversion || ':' || (SELECT string_agg(name || '=' || role || '=' || stream_events, ',' ORDER BY name)
		                               FROM replicator.replicas)
		  FROM pg_extension WHERE extname = 'replicator'}),
	'1.3:m1=slave=true,m2=slave=true',
	'an update from 1.1 straight to 1.3 with two master rows keeps both, as slaves streaming events');

# --- ALTER EXTENSION UPDATE TO '1.3': exactly a fresh 1.3; the replicas
# stream events on, a replica of 1.2 among them
my @objects_fresh13 = split $object_start, $rst->safe_psql('fresh13', $describe);
cmp_ok(scalar(@objects_fresh13), '>', scalar(@objects_fresh),
	scalar(@objects_fresh13) . ' object descriptions of a fresh 1.3 install');
for my $config (
	qw(replicas rules rules_id_seq rule_tables conflicts conflicts_id_seq rule_errors rule_errors_id_seq))
{
	ok((grep { $_ eq "config table replicator.$config condition ''" } @objects_fresh13),
		"replicator.$config is dumped with the database");
}

# 'updated' (1.0 -> 1.2) gains a replica as 1.2's add_replica added it (this
# library refuses to run 1.2's API): not paused as a restored row would be
$dst->safe_psql('postgres', 'CREATE DATABASE from12');
my $from12 = $dst->connstr('from12');
$rst->safe_psql('updated', qq{
SET session_replication_role = replica;
INSERT INTO replicator.replicas (name, conninfo) VALUES ('s12', \$\$$from12\$\$);
});
$before = dump_events($rst, 'updated');
($ret, $out, $err) = $rst->psql('updated', q{ALTER EXTENSION replicator UPDATE TO '1.3'});
is($ret, 0, 'ALTER EXTENSION UPDATE TO 1.3 from 1.2 succeeds') or diag($err);
is($rst->safe_psql('updated', q{SELECT extversion FROM pg_extension WHERE extname = 'replicator'}),
	'1.3', 'updated to 1.3 (1.0 -> 1.1 -> 1.2 -> 1.3)');
is(dump_events($rst, 'updated'), $before, 'the update to 1.3 keeps every event');
is( $rst->safe_psql('updated',
		q{SELECT string_agg(name || ':' || stream_events || ':' || enabled, ',' ORDER BY name) FROM replicator.replicas}),
	'kept:true:false,s12:true:true', 'the replicas of 1.2 stream events (stream_events true), as before');
is(differences_from('updated', \@objects_fresh13), '',
	'ALTER EXTENSION UPDATE from 1.0 to 1.2, then to 1.3, gives exactly the objects of a fresh 1.3 install');
# ALTER EXTENSION UPDATE asks the launcher to read the database again
is($rst->safe_psql('updated', "SELECT replicator.wait_for_replica('s12', '10 s')"),
	't', 'the replica of 1.2 streams after the update to 1.3, by itself');
is(dump_events($dst, 'from12'), dump_events($rst, 'updated'), 'it holds every event exactly');
$rst->safe_psql('updated', q{SELECT insert_events_array(ARRAY['{"after":"1.3"}', '{"n": 2}']::jsonb[])});
is( $rst->safe_psql('updated',
		"SELECT replicator.wait_for_replica('s12', '$PostgreSQL::Test::Utils::timeout_default s')"),
	't', 'and keeps streaming');
is(dump_events($dst, 'from12'), dump_events($rst, 'updated'), 'the new events too');
is($rst->safe_psql('updated', q{SELECT state FROM replicator.replica_status WHERE name = 's12'}),
	'streaming', 'replica_status: streaming, not a rule target');

$before = dump_events($rst, 'updated11');
$rst->safe_psql('updated11', q{ALTER EXTENSION replicator UPDATE TO '1.3'});
is($rst->safe_psql('updated11', q{SELECT extversion FROM pg_extension WHERE extname = 'replicator'}),
	'1.3', 'updated from 1.1 to 1.2, then to 1.3');
is(dump_events($rst, 'updated11'), $before, 'every event kept');
is( $rst->safe_psql('updated11',
		q{SELECT string_agg(name || ':' || role || ':' || stream_events, ',' ORDER BY name) FROM replicator.replicas}),
	'm11:slave:true,s11:slave:true', 'the replicas stream events (stream_events true)');
is(differences_from('updated11', \@objects_fresh13), '',
	'ALTER EXTENSION UPDATE from 1.1 to 1.2, then to 1.3, gives exactly the objects of a fresh 1.3 install');
is( $rst->safe_psql('updated11', q{SELECT count(*) FROM replicator.rules}),
	'0', 'and no rule');
is( $rst->safe_psql('updated11',
		q{SELECT string_agg(n->>'name' || ':' || (n->>'role'), ',') FROM jsonb_array_elements(replicator.topology()->'nodes') n}),
	'm11:slave,s11:slave', 'topology() after the update');
like($rst->safe_psql('updated11', 'SELECT replicator.topology()'), qr/"conninfo": "[^"]*password='\*{8}'/, 'without the password');

$src->stop;
$dst->stop;
$rst->stop;
done_testing();
