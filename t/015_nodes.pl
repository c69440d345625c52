
# Nodes of a topology: three servers with the extension.  A registers itself
# as master "a" and B, C as its slaves; a fourth, plain server D (no
# extension) is a slave that only receives.  Asserts: events stream to B, C
# and D; on a slave insert_events fails naming the master (SQLSTATE 25006)
# and a plain INSERT fails; node() on every node; the master's topology
# (replicas, epochs) pushed to the slaves, also after it changes; only the
# master runs streaming workers; replica_status on A and on a slave; a plain
# destination cannot be promoted.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $na = node_with_extension('a');
my $nb = node_with_extension('b');
my $nc = node_with_extension('c');
my $nd = destination_node('d');

# events from before A joined a topology are streamed too
insert_tagged($na, 'before', 5);
register_master($na, 'a');
is(node_info($na), 'a|master|1|a', 'A registered itself: node "a", master, epoch 1');
is($na->safe_psql('postgres', 'SELECT epoch, master, first_id, how FROM replicator.epochs'),
	'1|a|1|registered', 'A: epoch 1 of master a, from the first event');
# C's database owner (not a superuser) sets a trap for the master's
# sessions, which are a superuser's there: an events table of its own first
# on the database's search_path, with a trigger that runs as the inserter.
$nc->safe_psql('postgres', q{
CREATE ROLE owner_c LOGIN;
ALTER DATABASE postgres OWNER TO owner_c;
SET ROLE owner_c;
CREATE SCHEMA trap;
CREATE TABLE trap.events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL);
CREATE TABLE trap.fired (who text);
GRANT INSERT ON trap.fired TO PUBLIC;
CREATE FUNCTION trap.fire() RETURNS trigger LANGUAGE plpgsql
	AS $$BEGIN INSERT INTO trap.fired VALUES (current_user); RETURN NEW; END$$;
CREATE TRIGGER fire BEFORE INSERT ON trap.events FOR EACH ROW EXECUTE FUNCTION trap.fire();
ALTER DATABASE postgres SET search_path = trap, public;
});
add_slave($na, 'b', $nb, '5 s');
add_slave($na, 'c', $nc, '5 s');

ok(wait_node($nb, 'b|slave|1|a'), 'B became slave "b" of master "a" at epoch 1 when A\'s worker reached it');
ok(wait_node($nc, 'c|slave|1|a'), 'C became slave "c" of master "a" at epoch 1');

insert_tagged($na, "after$_", 7) for 1 .. 3;
ok(wait_replica($na, 'b'), 'B caught up');
ok(wait_replica($na, 'c'), 'C caught up');
is( $nc->safe_psql('postgres',
		q{SELECT (SELECT count(*) FROM public.events) || '|' || (SELECT count(*) FROM trap.events) || '|'
		  || (SELECT count(*) FROM trap.fired)}),
	$na->safe_psql('postgres', 'SELECT max(id) FROM events') . '|0|0',
	'the master\'s stream wrote the node\'s own events table, never the one its owner put first on the search_path');
$nc->safe_psql('postgres', 'ALTER DATABASE postgres RESET search_path; DROP SCHEMA trap CASCADE');
compare_events($na, $nb, 'B equals A');
compare_events($na, $nc, 'C equals A');

# ---------------------------------------------------------------------------
# A slave refuses writes: only the master's stream writes its events.
my $before_b = dump_events($nb);
for my $call (
	q{SELECT insert_events_array(ARRAY['{"on": "b"}']::jsonb[])},
	q{SELECT insert_events($$($1[1], $2, '{"on": "b"}')$$)})
{
	my $err = psql_error($nb, $call);
	ok(defined $err, "on a slave, $call fails");
	like($err // '', qr/ERROR:  25006: .*master "a".*epoch 1\b/s,
		'the error names the master and the epoch, SQLSTATE 25006 (read_only_sql_transaction)');
}
my $err = psql_error($nb, q{INSERT INTO events VALUES (1000, now(), '{"on": "b"}')});
ok(defined $err, 'on a slave, a plain INSERT into events fails');
is(dump_events($nb), $before_b, 'nothing was written on the slave');
# and the slave keeps receiving
insert_tagged($na, 'after-refusal', 3);
ok(wait_replica($na, 'b'), 'B caught up after refusing writes');
compare_events($na, $nb, 'B still equals A');

# ---------------------------------------------------------------------------
# node() on each node, and where the master is.
my $a_port = $na->port;
my ($name, $role, $epoch, $master, $master_conninfo) = split /\|/,
  $nb->safe_psql('postgres', 'SELECT * FROM replicator.node()');
is("$name|$role|$epoch|$master", 'b|slave|1|a', 'node() on B: (b, slave, 1, a, ...)');
like($master_conninfo, qr/port='?$a_port\b/, 'node() on B: how to reach the master');
is((split /\|/, $nc->safe_psql('postgres', 'SELECT * FROM replicator.node()'))[4],
	$master_conninfo, 'node() on C: the same master conninfo');
like($na->safe_psql('postgres', 'SELECT master_conninfo FROM replicator.node()'),
	qr/port='?$a_port\b/, 'node() on A: its own conninfo as master');

# ---------------------------------------------------------------------------
# The push: every slave with the extension holds the master's topology.
my $replicas_sql = q{SELECT name, role, conninfo, lag_tolerance, enabled FROM replicator.replicas ORDER BY name};
my $epochs_sql = q{SELECT epoch, master, first_id, started_at, how, detail FROM replicator.epochs ORDER BY epoch};
my $topology = $na->safe_psql('postgres', $replicas_sql);
like($topology, qr/^a\|master\|.*\nb\|slave\|.*\|00:00:05\|t\nc\|slave\|.*\|00:00:05\|t$/s,
	'A: master a, slaves b and c with their tolerance');
is($nb->safe_psql('postgres', $replicas_sql), $topology, "B's replicas are A's");
is($nc->safe_psql('postgres', $replicas_sql), $topology, "C's replicas are A's");
is($nb->safe_psql('postgres', $epochs_sql), $na->safe_psql('postgres', $epochs_sql), "B's epochs are A's");
is($nc->safe_psql('postgres', $epochs_sql), $na->safe_psql('postgres', $epochs_sql), "C's epochs are A's");

# a plain PostgreSQL destination is a slave that only receives; the change
# of topology reaches the slaves
# (its conninfo has a password, which D's trust authentication ignores)
$na->safe_psql('postgres',
	"SELECT replicator.add_replica('d', \$\$" . $nd->connstr('postgres') . " password=pushedsecret\$\$)");
$topology = $na->safe_psql('postgres', $replicas_sql);
ok($nb->poll_query_until('postgres', $replicas_sql, $topology), 'B: the new replica d was pushed');
ok($nc->poll_query_until('postgres', $replicas_sql, $topology), 'C: the new replica d was pushed');
# the push carries passwords; the slaves log every statement (log_statement = all)
my @leaks = grep { /pushedsecret/ } map { split /\n/, slurp_file($_->logfile) } ($nb, $nc);
is(scalar(@leaks), 0, 'the pushed password is in no log line of the slaves') or diag(join("\n", @leaks));
ok(wait_replica($na, 'd'), 'D (plain PostgreSQL) caught up');
compare_events($na, $nd, 'D equals A');
is($nd->safe_psql('postgres', q{SELECT count(*) FROM pg_namespace WHERE nspname = 'replicator'}),
	'0', 'D did not become a node (no replicator schema)');

# ---------------------------------------------------------------------------
# Who streams: only the master, to its slaves other than itself.
my $workers_sql = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'replicator streaming'};
is($na->safe_psql('postgres', $workers_sql), '3', 'A runs one streaming worker per slave (b, c, d), none for itself');
is($nb->safe_psql('postgres', $workers_sql), '0', 'B, a slave, runs no streaming worker');
is($nc->safe_psql('postgres', $workers_sql), '0', 'C, a slave, runs no streaming worker');

is($na->safe_psql('postgres', q{SELECT string_agg(name || ':' || state, ' ' ORDER BY name) FROM replicator.replica_status}),
	'a:this node b:streaming c:streaming d:streaming',
	'replica_status on A: a is this node, b, c and d are streaming');
is($na->safe_psql('postgres', q{SELECT string_agg(name || ':' || lag_events || ':' || stale, ' ' ORDER BY name) FROM replicator.replica_status WHERE role = 'slave'}),
	'b:0:false c:0:false d:0:false', 'replica_status on A: no lag, not stale');
is($na->safe_psql('postgres', q{SELECT string_agg(name || '=' || tables, ' ' ORDER BY name) FROM replicator.replica_status WHERE name IN ('b', 'd')}),
	'b=2 d=1', 'replica_status.tables: a node counts events and id, not the extension\'s replicator schema; a plain destination its events');
is($nb->safe_psql('postgres', q{SELECT string_agg(name || ':' || state, ' ' ORDER BY name) FROM replicator.replica_status}),
	'a:master b:this node c:streamed by a d:streamed by a', 'replica_status on B: the master streams');

# ---------------------------------------------------------------------------
# A plain destination cannot be promoted; nothing changes.
$err = psql_error($na, q{SELECT * FROM replicator.promote('d', '2 s')});
like($err // '', qr/ERROR: .*"d"/, 'promote(d) on a plain destination is refused, naming it');
is(node_info($na), 'a|master|1|a', 'A is still master at epoch 1');
ok(defined insert_tagged($na, 'after-promote-d', 2), 'A still takes writes');
ok(wait_replica($na, 'b') && wait_replica($na, 'c') && wait_replica($na, 'd'), 'all caught up');
compare_events($na, $_->[1], "$_->[0] equals A at the end") for (['B', $nb], ['C', $nc], ['D', $nd]);
is(node_info($nb), 'b|slave|1|a', 'B is still slave of a at epoch 1');

$_->stop for ($na, $nb, $nc, $nd);
done_testing();
