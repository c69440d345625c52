
# Switchover: promote(name) on the master.  (a) A refused switchover: the
# candidate C is paused and cannot hold every event within the timeout; the
# call fails saying why and nothing changes (A is still master at epoch 1
# and takes writes again, C is still a slave).  (b) A switchover to B under
# continuous writers, each of which writes to whatever node is master
# (asking node() when a call fails): afterwards B is master at epoch 2, A and
# C its slaves; every call that succeeded, on either node, is on every node,
# no failed call left anything, the epoch boundary separates the writes of
# A from those of B, and the three events tables are equal and gapless.
use strict;
use warnings;
use lib 't';
use IPC::Run ();
use POSIX ();
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $na = node_with_extension('a');
my $nb = node_with_extension('b', 'max_prepared_transactions = 2');
my $nc = node_with_extension('c');
my %nodes = (a => $na, b => $nb, c => $nc);

register_master($na, 'a');
add_slave($na, 'b', $nb, '5 s');
add_slave($na, 'c', $nc, '5 s');
insert_tagged($na, 'start', 10);
ok(wait_node($nb, 'b|slave|1|a') && wait_node($nc, 'c|slave|1|a'), 'B and C are slaves of a');
ok(wait_replica($na, 'b') && wait_replica($na, 'c'), 'B and C caught up');

# ---------------------------------------------------------------------------
# (a) refused: the candidate is paused.
$na->safe_psql('postgres', q{SELECT replicator.pause_replica('c')});
insert_tagged($na, 'while-c-paused', 5);
my $epochs_sql = q{SELECT epoch, master, first_id, how FROM replicator.epochs ORDER BY epoch};
my $replicas_sql = q{SELECT name, role FROM replicator.replicas ORDER BY name};
my $replicas_before = $na->safe_psql('postgres', $replicas_sql);
my $err = psql_error($na, q{SELECT * FROM replicator.promote('c', '2 s')});
ok(defined $err, 'a: promote(c) with c paused fails');
like($err // '', qr/ERROR: .*"c"/, 'a: the error names the candidate');
like($err // '', qr/ERROR: .*(paused|within|timed out|timeout|behind)/is, 'a: the error says why');
is(node_info($na), 'a|master|1|a', 'a: A is still master at epoch 1');
is($na->safe_psql('postgres', $epochs_sql), '1|a|1|registered', 'a: no new epoch on A');
is($na->safe_psql('postgres', $replicas_sql), $replicas_before, 'a: roles unchanged on A');
ok(defined insert_tagged($na, 'after-refused', 5), 'a: A takes writes again (unfenced)');
is(node_info($nc), 'c|slave|1|a', 'a: C is still slave of a at epoch 1');
is($nc->safe_psql('postgres', $epochs_sql), '1|a|1|registered', 'a: no new epoch on C');
is(node_info($nb), 'b|slave|1|a', 'a: B is still slave of a at epoch 1');
$na->safe_psql('postgres', q{SELECT replicator.resume_replica('c')});
ok(wait_replica($na, 'b') && wait_replica($na, 'c'), 'a: B and C caught up after C was resumed');
compare_events($na, $nb, 'a: B equals A');
compare_events($na, $nc, 'a: C equals A');
is(node_info($nc), 'c|slave|1|a', 'a: C is still slave of a after it was resumed');

# ---------------------------------------------------------------------------
# (b) switchover to B under continuous writers.
my $dir = PostgreSQL::Test::Utils::tempdir();
my $stop = "$dir/stop";
my $nwriters = 3;

# A writer: one insert_events_array call of 3 events {"w", "k", "j"} after
# the other on the node it believes is master; every attempt is recorded,
# "ok k node first last" or "fail k node error".  When a call fails it asks
# the nodes where the master is.
sub writer
{
	my ($w, $file) = @_;
	open my $fh, '>', $file or die "$file: $!";
	$fh->autoflush(1);
	my $target = 'a';
	my $k = 0;
	while (!-e $stop)
	{
		$k++;
		my $events = join ', ', map { qq{'{"w": $w, "k": $k, "j": $_}'} } 1 .. 3;
		my ($ret, $out, $err) = $nodes{$target}->psql('postgres',
			"SELECT first_id, last_id FROM insert_events_array(ARRAY[$events]::jsonb[])");
		if ($ret == 0 && $out =~ /^(\d+)\|(\d+)$/)
		{
			print $fh "ok $k $target $1 $2\n";
			next;
		}
		$err =~ s/\n.*//s;
		$err =~ s/^psql:[^:]*:\d+: //;
		print $fh "fail $k $target $err\n";
		for my $n ($target, grep { $_ ne $target } sort keys %nodes)
		{
			my ($r, $o) = $nodes{$n}->psql('postgres', 'SELECT master FROM replicator.node()');
			if ($r == 0 && $o =~ /^[abc]$/)
			{
				$target = $o;
				last;
			}
		}
	}
	close $fh;
}

sub records
{
	my @r;
	for my $w (1 .. $nwriters)
	{
		open my $fh, '<', "$dir/writer$w" or next;
		while (my $line = <$fh>)
		{
			next unless $line =~ /\n$/;
			chomp $line;
			my ($status, $k, $node, @rest) = split / /, $line;
			push @r, { w => $w, status => $status, k => $k, node => $node, rest => [@rest] };
		}
		close $fh;
	}
	return @r;
}

# Polls (not a sleep as synchronisation) until every writer has at least $n
# successful calls on $node.
sub wait_writers
{
	my ($node, $n) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		my %ok;
		$ok{ $_->{w} }++ for grep { $_->{status} eq 'ok' && $_->{node} eq $node } records();
		return 1 if scalar(grep { ($ok{$_} // 0) >= $n } 1 .. $nwriters) == $nwriters;
		usleep(50_000);
	}
	return 0;
}

my @pids;
# if the test dies, the writers stop too
END
{
	if (@pids)
	{
		open my $fh, '>', $stop;
		close $fh;
		kill 'TERM', @pids;
	}
}
for my $w (1 .. $nwriters)
{
	my $pid = fork;
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		writer($w, "$dir/writer$w");
		# no END blocks: they would stop the servers of the parent
		POSIX::_exit(0);
	}
	push @pids, $pid;
}
ok(wait_writers('a', 5), 'b: every writer wrote on A');

my $promoted = $na->safe_psql('postgres', q{SELECT master, epoch, last_event_id FROM replicator.promote('b')});
my ($new_master, $new_epoch, $last_event_id) = split /\|/, $promoted;
is("$new_master|$new_epoch", 'b|2', 'b: promote(b) on A returns master b, epoch 2');
ok(wait_writers('b', 5), 'b: every writer went on writing, on B');
open my $sf, '>', $stop or die;
close $sf;
waitpid($_, 0) for @pids;
@pids = ();

is(node_info($nb), 'b|master|2|b', 'b: B is master at epoch 2');
ok(wait_node($na, 'a|slave|2|b'), 'b: A is slave of b at epoch 2');
ok(wait_node($nc, 'c|slave|2|b'), 'b: C is slave of b at epoch 2');
is($nb->safe_psql('postgres', $epochs_sql), "1|a|1|registered\n2|b|" . ($last_event_id + 1) . "|switchover",
	'b: epoch 2 of master b starts after the last event of epoch 1 that promote() returned');
is($nb->safe_psql('postgres', $replicas_sql), "a|slave\nb|master\nc|slave", 'b: on B, b is the master, a and c slaves');
my $err_a = psql_error($na, q{SELECT insert_events_array(ARRAY['{"late": true}']::jsonb[])});
like($err_a // '', qr/ERROR:  25006: .*master "b".*epoch 2\b/s, 'b: A refuses writes, naming the new master');

ok(wait_replica($nb, 'a'), 'b: A caught up with B');
ok(wait_replica($nb, 'c'), 'b: C caught up with B');
ok($na->poll_query_until('postgres', $epochs_sql, $nb->safe_psql('postgres', $epochs_sql)), 'b: A holds the epochs of B');
ok($nc->poll_query_until('postgres', $epochs_sql, $nb->safe_psql('postgres', $epochs_sql)), 'b: C holds the epochs of B');
ok($na->poll_query_until('postgres', $replicas_sql, "a|slave\nb|master\nc|slave"), 'b: A holds the roles of B');
ok($na->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'replicator streaming'}, '0'),
	'b: A, now a slave, runs no streaming worker');

# Every acknowledged call is on every node, with its contents.
my @records = records();
my @ok = grep { $_->{status} eq 'ok' } @records;
my @failed = grep { $_->{status} eq 'fail' && join(' ', @{ $_->{rest} }) =~ /^ERROR:/ } @records;
my %on;
$on{ $_->{node} }++ for @ok;
note('acknowledged calls per node: ' . join(', ', map { "$_ $on{$_}" } sort keys %on)
	  . '; failed calls: ' . scalar(grep { $_->{status} eq 'fail' } @records));
for my $r (grep { $_->{status} eq 'fail' } @records)
{
	note("failed: writer $r->{w} call $r->{k} on $r->{node}: @{ $r->{rest} }");
}
is(scalar(grep { $_->{node} eq 'c' } @ok), 0, 'b: no call succeeded on C');
is(scalar(grep { $_->{node} eq 'a' && $_->{rest}[1] > $last_event_id } @ok), 0,
	'b: every call acknowledged by A is in epoch 1');
is(scalar(grep { $_->{node} eq 'b' && $_->{rest}[0] <= $last_event_id } @ok), 0,
	'b: every call acknowledged by B is in epoch 2');

for my $n (sort keys %nodes)
{
	my %event;
	for my $row (split /\n/, $nodes{$n}->safe_psql('postgres',
			q{SELECT id, event->>'w', event->>'k', event->>'j' FROM events WHERE event ? 'w'}))
	{
		my ($id, @v) = split /\|/, $row;
		$event{$id} = join ' ', @v;
	}
	my %seen = map { $_ => 1 } map { join ' ', (split / /)[0, 1] } values %event;
	my $missing = 0;
	for my $r (@ok)
	{
		my ($first, $last) = @{ $r->{rest} };
		$missing++ if $last - $first != 2;
		for my $j (1 .. 3)
		{
			$missing++ unless ($event{ $first + $j - 1 } // '') eq "$r->{w} $r->{k} $j";
		}
	}
	is($missing, 0, "b: node $n holds every acknowledged call (" . scalar(@ok) . ") with its contents at its ids");
	is(scalar(grep { $seen{"$_->{w} $_->{k}"} } @failed), 0, "b: node $n holds nothing of a call that failed");
	is($nodes{$n}->safe_psql('postgres', 'SELECT count(*) = max(id) AND min(id) = 1 FROM events'),
		't', "b: node $n: ids are gapless");
}
is($nb->safe_psql('postgres',
		'SELECT count(*) FROM (SELECT ts < lag(ts) OVER (ORDER BY id) AS back FROM events) s WHERE back'),
	'0', 'b: on B, ts never decreases as id grows, across the epochs');
compare_events($nb, $na, 'b: A equals B');
compare_events($nb, $nc, 'b: C equals B');
is($nb->safe_psql('postgres', q{SELECT string_agg(name || ':' || state, ' ' ORDER BY name) FROM replicator.replica_status}),
	'a:streaming b:this node c:streaming', 'b: replica_status on B: a and c are streaming');

# ---------------------------------------------------------------------------
# (c) a transaction that called insert_events and sits idle holds the id
# row: the switchover gives up within its timeout, and nothing changed.
my $idle = $nb->background_psql('postgres');
$idle->query_safe(q{BEGIN; SELECT insert_events_array(ARRAY['{"idle": true}']::jsonb[])});
$err = psql_error($nb, q{SELECT * FROM replicator.promote('a', '2 s')});
like($err // '', qr/ERROR: .*did not end within 2000 ms/,
	'c: promote() behind an idle insert_events transaction gives up within its timeout');
is(node_info($nb), 'b|master|2|b', 'c: B is still master at epoch 2');
$idle->query_safe('COMMIT');
$idle->quit;
ok(defined insert_tagged($nb, 'after-c', 2), 'c: B takes writes again, the idle call committed too');

# ---------------------------------------------------------------------------
# (d) promote() in a transaction block rolled back after A took over: B
# must not take writes as master of epoch 2 again (it stays fenced until
# A's stream makes it a slave), so nothing acknowledged is set aside.
ok(wait_replica($nb, 'a') && wait_replica($nb, 'c'), 'd: A and C caught up with B');
my ($ret, $out);
($ret, $out, $err) = $nb->psql('postgres', q{
BEGIN;
SELECT master, epoch FROM replicator.promote('a');
ROLLBACK;
SELECT insert_events_array(ARRAY['{"after": "rollback"}']::jsonb[]);
});
like($out, qr/^a\|3$/m, 'd: promote(a) returned before the rollback');
like($err, qr/ERROR:  (this node is handing over to "a"|this node is a slave)/,
	'd: after the rollback B refuses insert_events: fenced, or a slave already');
ok(wait_node($na, 'a|master|3|a'), 'd: A is master at epoch 3');
ok(wait_node($nb, 'b|slave|3|a'), 'd: B became slave of a at epoch 3 when A\'s stream reached it');
is($nb->safe_psql('postgres', 'SELECT count(*) FROM replicator.diverged_events'), '0',
	'd: nothing B acknowledged was set aside');
ok(defined insert_tagged($na, 'after-d', 2), 'd: A takes writes');
ok(wait_replica($na, 'b') && wait_replica($na, 'c'), 'd: B and C caught up with A');
compare_events($na, $nb, 'd: B equals A');
compare_events($na, $nc, 'd: C equals A');

# ---------------------------------------------------------------------------
# (e) the connection breaks while the candidate takes over: promote() asks
# the candidate again once that session has ended; it did not take over, so
# nothing changed and A is unfenced.
my $hold = $nb->background_psql('postgres');
$hold->query_safe('BEGIN; LOCK TABLE events IN ROW EXCLUSIVE MODE');
my ($pout, $perr) = ('', '');
my $promote = IPC::Run::start(
	[ 'psql', '-X', '-d', $na->connstr('postgres'), '-c', q{SELECT * FROM replicator.promote('b', '30 s')} ],
	'>', \$pout, '2>', \$perr);
ok( $nb->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'replicator:promote' AND wait_event_type = 'Lock'}),
	'e: take_over waits at B for a lock');
$nb->safe_psql('postgres',
	q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'replicator:promote'});
$promote->finish;
like($perr, qr/ERROR:  switchover to "b" abandoned: .*\nDETAIL:  It did not take over\. Nothing changed/s,
	'e: promote() learns that B did not take over, and says nothing changed');
$hold->query_safe('COMMIT');
$hold->quit;
is(node_info($na), 'a|master|3|a', 'e: A is still master at epoch 3');
is(node_info($nb), 'b|slave|3|a', 'e: B is still slave of a at epoch 3');
ok(defined insert_tagged($na, 'after-e', 2), 'e: A takes writes (unfenced)');
ok(wait_replica($na, 'b') && wait_replica($na, 'c'), 'e: B and C caught up with A');
compare_events($na, $nb, 'e: B equals A');

# ---------------------------------------------------------------------------
# (f) a switchover in doubt stays in doubt when promote() is run again and
# fails before asking the candidate.  A's demotion by B is held up (a lock
# on A's id table, which attach_to_master needs) so that the doubt lasts.
my $blocker = $na->background_psql('postgres');
$blocker->query_safe('BEGIN; LOCK TABLE id IN ROW EXCLUSIVE MODE');
($ret, $out, $err) = $na->psql('postgres', q{
BEGIN;
SELECT master, epoch FROM replicator.promote('b');
ROLLBACK;
});
like($out, qr/^b\|4$/m, 'f: promote(b) returned before the rollback: B took over at epoch 4');
# B's attach_to_master waits at A for the id table, holding A's node_state
# row: promote() must give up on that row within its timeout too.
ok( $na->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%attach_to_master%' AND wait_event_type = 'Lock'}),
	'f: B\'s attach waits at A, holding its node_state row');
$nb->stop('fast');
$err = psql_error($na, q{SELECT * FROM replicator.promote('b', '2 s')});
like($err // '', qr/ERROR: .*switchover to "b" abandoned/, 'f: promote(b) again fails: B is down');
$err = psql_error($na, q{SELECT insert_events_array(ARRAY['{"f": "in doubt"}']::jsonb[])});
like($err // '', qr/ERROR: .*handing over to "b"/, 'f: A still refuses insert_events: the failed retry kept the doubt');
$err = psql_error($na, q{SELECT * FROM replicator.promote('c', '2 s')});
like($err // '', qr/ERROR: .*a switchover to "b" is in doubt/, 'f: nor may another candidate take over meanwhile');
$nb->start;
$blocker->query_safe('COMMIT');
$blocker->quit;
ok(wait_node($na, 'a|slave|4|b'), 'f: A became slave of b at epoch 4 when B\'s stream reached it');
is($na->safe_psql('postgres', 'SELECT count(*) FROM replicator.diverged_events'), '0',
	'f: nothing A acknowledged was set aside');
ok(wait_replica($nb, 'a') && wait_replica($nb, 'c'), 'f: A and C caught up with B');
compare_events($nb, $na, 'f: A equals B');

# (g) a transaction that ran a switchover cannot be prepared: its outcome
# would wait for COMMIT PREPARED while the candidate is master already.
($ret, $out, $err) = $nb->psql('postgres', q{
BEGIN;
SELECT master, epoch FROM replicator.promote('a');
PREPARE TRANSACTION 'switchover';
});
like($err, qr/ERROR:  cannot PREPARE a transaction that ran a switchover/, 'g: PREPARE TRANSACTION is refused');
$nb->safe_psql('postgres', q{SELECT 1 FROM pg_prepared_xacts WHERE gid = 'switchover'} ) eq ''
  or $nb->safe_psql('postgres', q{ROLLBACK PREPARED 'switchover'});
ok(wait_node($nb, 'b|slave|5|a'), 'g: B, fenced meanwhile, became slave of a at epoch 5');
is($nb->safe_psql('postgres', 'SELECT count(*) FROM replicator.diverged_events'), '0',
	'g: nothing B acknowledged was set aside');
ok(wait_replica($na, 'b') && wait_replica($na, 'c'), 'g: B and C caught up with A');
compare_events($na, $nb, 'g: B equals A');
compare_events($na, $nc, 'g: C equals A');

$_->stop for ($na, $nb, $nc);
done_testing();
