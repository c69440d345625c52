
# What a node says of itself and of its topology: replicator.node() on a
# master, a slave and a standalone source, with the master's password shown
# to superusers only; replicator.topology() as jsonb, never with a password;
# the file replicator.topology_file, rewritten at every change of the
# topology, equal to topology(), one per database (%d), none for a database
# that is in no topology; and pg_dump of a master keeping its topology.
use strict;
use warnings;
use lib 't';
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $dir = $PostgreSQL::Test::Utils::tmp_check;
my $master = source_node('master', "replicator.topology_file = '$dir/topology-%d.json'");
my $s1 = destination_node('s1');
my $s2 = destination_node('s2');
my $file = "$dir/topology-postgres.json";

# psql's output, '' on an error: an assertion fails, the suite goes on
sub query
{
	my ($db, $sql) = @_;
	my ($ret, $out, $err) = $master->psql($db, $sql);
	diag($err) if $ret != 0;
	return $ret == 0 ? $out : '';
}

sub slurp_file_or_empty
{
	my ($path) = @_;
	return -e $path ? slurp_file($path) : '';
}

$master->safe_psql('postgres', 'CREATE ROLE app LOGIN');

# --- a standalone source: no node
$master->safe_psql('postgres', 'CREATE DATABASE standalone');
$master->safe_psql('standalone', 'CREATE EXTENSION replicator');
my $s2_conn = $s2->connstr('postgres');
$master->safe_psql('standalone',
	"SELECT replicator.add_replica('plain', \$\$$s2_conn password=standalonesecret\$\$)");
is( query('standalone',
		q{SELECT coalesce(name, '-'), coalesce(role, '-'), epoch, coalesce(master, '-'),
		         coalesce(master_conninfo, '-') FROM replicator.node()}),
	'-|-|0|-|-', 'node() on a standalone source: no name, role, master; epoch 0');
is( query('standalone',
		q{SELECT t->>'node' IS NULL, t->>'epoch', t->>'master' IS NULL,
		         (SELECT string_agg(n->>'name' || ':' || (n->>'role') || ':' || (n->>'state'), ',')
		          FROM jsonb_array_elements(t->'nodes') n),
		         t->'epochs' FROM replicator.topology() t}),
	't|0|t|plain:slave:enabled|[]', 'topology() on a standalone source: its replicas, no node, no epoch');

# --- a master: registered with add_replica(role => 'master'), two slaves
my $m_conn = $master->connstr('postgres') . ' password=mastersecret';
my $s1_conn = $s1->connstr('postgres') . ' password=slavesecret';
# node_state and epochs as add_replica(role => 'master') makes them (the
# inserts do nothing where add_replica made them)
$master->safe_psql('postgres', qq{
BEGIN;
SELECT replicator.add_replica('m', \$\$$m_conn\$\$, role => 'master');
INSERT INTO replicator.node_state (name, epoch, master) VALUES ('m', 1, 'm') ON CONFLICT DO NOTHING;
INSERT INTO replicator.epochs (epoch, master, first_id, how) VALUES (1, 'm', 1, 'registered') ON CONFLICT DO NOTHING;
SELECT replicator.add_replica('s1', \$\$$s1_conn\$\$, lag_tolerance => '5 s');
SELECT replicator.add_replica('s2', \$\$$s2_conn\$\$);
COMMIT;
});

is(query('postgres', 'SELECT name, role, epoch, master, master_conninfo = $$' . $m_conn . '$$ FROM replicator.node()'),
	'm|master|1|m|t', 'node() on the master: itself, master, epoch 1, its conninfo with the password to a superuser');
my $as_app = query('postgres', 'SET ROLE app; SELECT name, role, epoch, master, master_conninfo FROM replicator.node()');
like($as_app, qr/^m\|master\|1\|m\|.*password='\*{8}'/, 'node() for anyone, the password masked for a non-superuser');
ok($as_app ne '' && $as_app !~ /mastersecret/, 'no password in it');

# --- topology()
my $topology = query('postgres', 'SELECT replicator.topology()');
ok($topology =~ /"nodes"/ && $topology !~ /secret/, 'no password anywhere in topology()');
is( query('postgres',
		q{SET TimeZone = 'Asia/Tokyo'; SET IntervalStyle = 'iso_8601';
		  SELECT replicator.topology(), current_setting('TimeZone'), current_setting('IntervalStyle')}),
	"$topology|Asia/Tokyo|iso_8601",
	'the same document whatever the session\'s TimeZone and IntervalStyle, which it leaves as they were');
my $app_topology = query('postgres', 'SET ROLE app; SELECT replicator.topology()');
ok($app_topology =~ /"nodes"/ && $app_topology !~ /secret/, 'nor in a non-superuser\'s');
is( query('postgres',
		q{SELECT t->>'database', t->>'node', t->>'epoch', t->>'master', t->>'routing' FROM replicator.topology() t}),
	'postgres|m|1|m|least-lag', 'topology(): this node, epoch, master, read routing');
is( query('postgres',
		q{SELECT string_agg(concat_ws(':', n->>'name', n->>'role', n->>'state', n->>'enabled',
		                              coalesce(n->>'lag_tolerance', 'null'), coalesce(n->>'lag_tolerance_ms', 'null'),
		                              n->>'conninfo' LIKE '%password=''********''%'), ',')
		  FROM replicator.topology() t, jsonb_array_elements(t->'nodes') n}),
	'm:master:this node:true:null:null:t,s1:slave:enabled:true:00:00:05:5000:t,s2:slave:enabled:true:null:null:f',
	'topology(): every node with its role, state, tolerance, and its conninfo masked');
is( query('postgres',
		q{SELECT string_agg(concat_ws(':', e->>'epoch', e->>'master', e->>'first_id', e->>'how',
		                              (e->>'started_at')::timestamptz = (SELECT started_at FROM replicator.epochs WHERE epoch = 1)), ',')
		  FROM replicator.topology() t, jsonb_array_elements(t->'epochs') e}),
	'1:m:1:registered:t', 'topology(): the epochs');

# --- the file: written by the scan after every change, equal to topology()
sub file_follows
{
	my ($condition, $test_name) = @_;
	my $ok = $master->poll_query_until('postgres',
		"SELECT pg_read_file('$file', 0, 10000000, true)::jsonb = replicator.topology()"
		  . " AND ($condition) FROM replicator.topology() t");
	ok($ok, $test_name);
	my $text = slurp_file_or_empty($file);
	my $json = eval { JSON::PP->new->decode($text) };
	my $topology = JSON::PP->new->decode(query('postgres', 'SELECT replicator.topology()') || '{}');
	is_deeply($json, $topology, "$test_name: valid JSON, equal to topology()");
	ok($text ne '' && $text !~ /secret/, "$test_name: no password in it");
	return $json;
}

my $json = file_follows(q{jsonb_array_length(t->'nodes') = 3}, 'the topology file is written');
is(join(',', map { $_->{name} } @{ $json->{nodes} }), 'm,s1,s2', 'it names every node');
$master->safe_psql('postgres',
	"SELECT replicator.add_replica('s3', \$\$@{[$s2->connstr('s3db')]} password=s3secret\$\$, enabled => false)");
file_follows(q{t->'nodes' @> '[{"name": "s3", "state": "paused"}]'}, 'rewritten when a replica is added');
$master->safe_psql('postgres', q{SELECT replicator.pause_replica('s2')});
file_follows(q{t->'nodes' @> '[{"name": "s2", "state": "paused", "enabled": false}]'},
	'rewritten when a replica is paused');
$master->safe_psql('postgres', q{SELECT replicator.drop_replica('s3')});
$json = file_follows(q{jsonb_array_length(t->'nodes') = 3}, 'rewritten when a replica is dropped');
is(join(',', map { $_->{name} } @{ $json->{nodes} }), 'm,s1,s2', 'without the dropped one');
ok(!-e "$dir/topology-standalone.json", 'no file for a database in no topology');

# --- a slave node: its node_state names its master, whose row it holds
# (as the master's push makes them)
$master->safe_psql('standalone', qq{
BEGIN;
SELECT replicator.drop_replica('plain');
INSERT INTO replicator.replicas (name, conninfo, role) VALUES ('m', \$\$$m_conn\$\$, 'master');
INSERT INTO replicator.node_state (name, epoch, master) VALUES ('s9', 3, 'm');
COMMIT;
});
is(query('standalone', 'SELECT name, role, epoch, master, master_conninfo = $$' . $m_conn . '$$ FROM replicator.node()'),
	's9|slave|3|m|t', 'node() on a slave: its name, slave, its epoch, its master and where to reach it');
$as_app = query('standalone', 'SET ROLE app; SELECT name, role, master, master_conninfo FROM replicator.node()');
like($as_app, qr/^s9\|slave\|m\|.*password='\*{8}'/, 'the master\'s password masked for a non-superuser');
ok($as_app ne '' && $as_app !~ /mastersecret/, 'not shown');
my $slave_file = "$dir/topology-standalone.json";
$master->safe_psql('standalone', 'SELECT replicator.rescan()');
ok( $master->poll_query_until('standalone',
		"SELECT pg_read_file('$slave_file', 0, 10000000, true)::jsonb = replicator.topology()"),
	'a second database in a topology: its own file (%d)');
like(slurp_file_or_empty($slave_file), qr/"node": "s9"/, 'with its own topology');
my $slave_text = slurp_file_or_empty($slave_file);
ok($slave_text ne '' && $slave_text !~ /secret/, 'no password in it');
like(slurp_file_or_empty($file), qr/"node": "m"/, 'the master\'s file is its own');

# --- pg_dump of the master keeps its topology; the copy's replicas paused
my $dump = "$dir/master.dump";
$master->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $master->connstr('postgres') ],
	'pg_dump of the master');
$master->safe_psql('postgres', 'CREATE DATABASE copy');
my ($stdout, $stderr);
my $restored = IPC::Run::run([ 'pg_restore', '--exit-on-error', '-d', $master->connstr('copy'), $dump ],
	'>', \$stdout, '2>', \$stderr);
ok($restored, 'pg_restore restores it') or diag($stderr);
for my $table (qw(node_state epochs))
{
	is(query('copy', "SELECT * FROM replicator.$table"),
		query('postgres', "SELECT * FROM replicator.$table"), "the copy has the master's $table");
}
is( query('copy', q{SELECT string_agg(name || ':' || role || ':' || enabled || ':' || conninfo, ',' ORDER BY name)
                    FROM replicator.replicas}),
	query('postgres', q{SELECT string_agg(name || ':' || role || ':false:' || conninfo, ',' ORDER BY name)
                        FROM replicator.replicas}),
	'and its replicas, with their conninfo, paused');
is(query('copy', 'SELECT name, role, epoch, master FROM replicator.node()'), 'm|master|1|m',
	'node() on the copy');
my $original = query('postgres', q{SELECT replicator.topology() - 'database' - 'nodes'});
ok($original =~ /"node": "m"/ && query('copy', q{SELECT replicator.topology() - 'database' - 'nodes'}) eq $original,
	'topology() on the copy: the same node, epoch, routing and epochs');

$master->stop;
$s1->stop;
$s2->stop;
done_testing();
