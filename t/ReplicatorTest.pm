
# Helpers shared by the TAP suites: servers with the extension, row-by-row
# comparison of events tables, and waits on conditions (never sleeps).
package ReplicatorTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Exporter 'import';
use IO::Socket::INET;

our @EXPORT = qw(source_node destination_node dump_events compare_events
  wait_replica add_replica events_count silent_listener
  node_with_extension register_master add_slave node_info wait_node
  psql_error insert_tagged);

# A source: library preloaded, extension created in database postgres.
sub source_node
{
	my ($name, @conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		join("\n", "shared_preload_libraries = 'replicator'",
			"max_worker_processes = 16", @conf) . "\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION replicator');
	return $node;
}

# A node of a topology: a server like a source (library preloaded,
# extension in database postgres), which may become master or slave.
sub node_with_extension
{
	my ($name, @conf) = @_;
	return source_node($name, @conf);
}

# This database becomes node $name, master of its topology (epoch 1).
sub register_master
{
	my ($node, $name) = @_;
	my $conn = $node->connstr('postgres');
	$node->safe_psql('postgres',
		"SELECT replicator.add_replica('$name', \$\$$conn\$\$, role => 'master')");
}

# $dest becomes slave $name of the master $master, with a lag tolerance.
sub add_slave
{
	my ($master, $name, $dest, $tolerance) = @_;
	my $conn = $dest->connstr('postgres');
	my $tol = defined $tolerance ? ", lag_tolerance => '$tolerance'" : '';
	$master->safe_psql('postgres',
		"SELECT replicator.add_replica('$name', \$\$$conn\$\$, role => 'slave'$tol)");
}

# What a node says of itself: "name|role|epoch|master".
sub node_info
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		'SELECT name, role, epoch, master FROM replicator.node()');
}

# Wait until node() says "name|role|epoch|master"; false on timeout.
sub wait_node
{
	my ($node, $expected) = @_;
	return $node->poll_query_until('postgres',
		q{SELECT concat_ws('|', name, role, epoch, master) FROM replicator.node()},
		$expected);
}

# Runs SQL expected to fail: the error (with its SQLSTATE: "ERROR:  25006:
# ..."), or undef if it succeeded.
sub psql_error
{
	my ($node, $sql) = @_;
	# a call that hangs fails the test instead of the whole run
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		timeout => $PostgreSQL::Test::Utils::timeout_default);
	return undef if $ret == 0;
	return $err;
}

# Inserts $n events {"tag": $tag, "k": 1..n} in one call; "first|last".
sub insert_tagged
{
	my ($node, $tag, $n) = @_;
	return $node->safe_psql('postgres',
		"SELECT first_id, last_id FROM insert_events_array(ARRAY(SELECT jsonb_build_object('tag', '$tag', 'k', k) FROM generate_series(1, $n) k))");
}

sub destination_node
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->start;
	return $node;
}

sub add_replica
{
	my ($source, $name, $dest, %opts) = @_;
	my $conn = $dest->connstr($opts{dbname} // 'postgres');
	$source->safe_psql('postgres', "SELECT replicator.add_replica('$name', \$\$$conn\$\$)");
}

sub events_count
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT count(*) FROM events');
}

# id, ts as microseconds since the epoch, event as jsonb text: exact values.
sub dump_events
{
	my ($node, $dbname) = @_;
	return $node->safe_psql($dbname // 'postgres',
		q{COPY (SELECT id, (extract(epoch FROM ts) * 1000000)::bigint, event::text
		        FROM events ORDER BY id) TO STDOUT});
}

# Row by row: same count, and every row identical; names the first difference.
# dest_dbname: the destination's database, postgres if not given.
sub compare_events
{
	my ($source, $dest, $test_name, $dest_dbname) = @_;
	my @src = split /\n/, dump_events($source);
	my @dst = split /\n/, dump_events($dest, $dest_dbname);
	my $n = @src > @dst ? scalar(@src) : scalar(@dst);
	for my $i (0 .. $n - 1)
	{
		my $s = $src[$i] // '(missing)';
		my $d = $dst[$i] // '(missing)';
		next if $s eq $d;
		fail($test_name);
		diag("first difference at row " . ($i + 1) . ":\n  source:      "
			  . substr($s, 0, 300) . "\n  destination: " . substr($d, 0, 300));
		return 0;
	}
	is(scalar(@dst), scalar(@src), "$test_name (" . scalar(@src) . " rows, all equal)");
	return 1;
}

# Wait until the destination holds every event committed before now.
sub wait_replica
{
	my ($source, $name, $timeout) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my $ok = $source->safe_psql('postgres',
		"SELECT replicator.wait_for_replica('$name', '$timeout s')");
	return $ok eq 't';
}

# An address on 127.0.0.1 that accepts TCP connections and never answers:
# the socket (keep it referenced) and its port.
sub silent_listener
{
	my $silent = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Listen => 64,
		ReuseAddr => 1) or die "cannot listen: $!";
	return ($silent, $silent->sockport);
}

1;
