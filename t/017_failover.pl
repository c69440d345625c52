
# Failover: promote() without a name, on a slave, after the master was
# stopped in immediate mode holding events it never sent.
# Round 1 (master A, epoch 1): C holds more events than B.  promote() on B
# is refused (C, reachable, holds more) and changes nothing; promote() on C,
# the right slave, makes it master at epoch 2; C streams to B and takes
# writes.  A restarted never streams into the nodes of epoch 2: C's worker
# reaches it, A becomes slave of c, refuses writes, and the events it held
# beyond the common history are in its diverged_events (exactly those C never
# had), reported in replica_status and the log.
# Round 2 (master C, epoch 2): B, a slow destination, is behind by more
# than its tolerance at its last contact, A even more; C stopped in
# immediate mode holding events neither has.
# promote() on B is refused (its lag at its last contact exceeded its
# tolerance); promote(force => true) makes it master at epoch 3, recorded as
# a forced failover; C restarted is demoted the same way.  Finally the three
# events tables are equal row by row.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $na = node_with_extension('a');
my $nb = node_with_extension('b', 'max_prepared_transactions = 2');
my $nc = node_with_extension('c');

my $epochs_sql = q{SELECT epoch, master, first_id, how FROM replicator.epochs ORDER BY epoch};
my $diverged_sql = q{COPY (SELECT id, (extract(epoch FROM ts) * 1000000)::bigint, event::text
                           FROM replicator.diverged_events ORDER BY id) TO STDOUT};

# the rows of a dump_events() text with id > $after
sub rows_after
{
	my ($dump, $after) = @_;
	return join "\n", grep { (split /\t/)[0] > $after } split /\n/, $dump;
}

sub max_id
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM events');
}

register_master($na, 'a');
add_slave($na, 'b', $nb, '2 s');
add_slave($na, 'c', $nc, '2 s');
ok(wait_node($nb, 'b|slave|1|a') && wait_node($nc, 'c|slave|1|a'), 'B and C are slaves of a');

# ---------------------------------------------------------------------------
# Round 1.  B stops with 10 events, C with 15, A holds 18.
insert_tagged($na, 'common', 10);
ok(wait_replica($na, 'b') && wait_replica($na, 'c'), '1: B and C caught up');
# while the master answers, a failover is refused even by force
my $err = psql_error($nb, q{SELECT * FROM replicator.promote(force => true)});
like($err // '', qr/ERROR: .*master "a" is reachable/s,
	'1: promote(force => true) on B is refused while master a answers');
is(node_info($nb), 'b|slave|1|a', '1: B is still slave of a at epoch 1');
is(node_info($na), 'a|master|1|a', '1: A is still master at epoch 1');
$nb->stop;
insert_tagged($na, 'c-only', 5);
ok(wait_replica($na, 'c'), '1: C caught up');
$nc->stop;
insert_tagged($na, 'a-only', 3);
my $a_dump = dump_events($na);
$na->stop('immediate');
$nb->start;
$nc->start;
is(max_id($nb) . ' ' . max_id($nc), '10 15', '1: B holds 10 events, C 15, A held 18');

$err = psql_error($nb, q{SELECT * FROM replicator.promote()});
ok(defined $err, '1: promote() on B is refused: C holds more events');
like($err // '', qr/ERROR: .*"c".*\d+ events/s, '1: the error names the slave that holds more');
is(node_info($nb), 'b|slave|1|a', '1: B is still slave of a at epoch 1');
is($nb->safe_psql('postgres', $epochs_sql), '1|a|1|registered', '1: no new epoch on B');

is($nc->safe_psql('postgres', q{SELECT master, epoch, last_event_id FROM replicator.promote()}),
	'c|2|15', '1: promote() on C, which holds the most: master c, epoch 2, after event 15');
is(node_info($nc), 'c|master|2|c', '1: C is master at epoch 2');
is($nc->safe_psql('postgres', $epochs_sql), "1|a|1|registered\n2|c|16|failover", '1: epoch 2 recorded as a failover');
ok(wait_node($nb, 'b|slave|2|c'), '1: B became slave of c at epoch 2');
is(insert_tagged($nc, 'epoch2', 4), '16|19', '1: C takes writes, from id 16');
ok(wait_replica($nc, 'b'), '1: B caught up with C');
compare_events($nc, $nb, '1: B equals C');
my $err_b = psql_error($nb, q{SELECT insert_events_array(ARRAY['{"on": "b"}']::jsonb[])});
like($err_b // '', qr/ERROR:  25006: .*master "c".*epoch 2\b/s, '1: B refuses writes, naming c');

# The former master comes back: it believes it is master at epoch 1.
$na->start;
ok(wait_node($na, 'a|slave|2|c'), '1: A, reached by C\'s worker, became slave of c at epoch 2');
my $err_a = psql_error($na, q{SELECT insert_events_array(ARRAY['{"on": "a"}']::jsonb[])});
like($err_a // '', qr/ERROR:  25006: .*master "c".*epoch 2\b/s, '1: A refuses writes, naming c');
is($na->safe_psql('postgres', $diverged_sql), rows_after($a_dump, 15),
	'1: A\'s diverged_events hold exactly the events C never had (ids 16 to 18), with their ts and contents');
is($na->safe_psql('postgres', q{SELECT string_agg(DISTINCT epoch::text, ',') FROM replicator.diverged_events}),
	'1', '1: diverged in epoch 1');
ok($nc->poll_query_until('postgres', q{SELECT diverged FROM replicator.replica_status WHERE name = 'a'}, '3'),
	'1: replica_status on C reports 3 diverged events on a');
ok($na->log_contains('diverged') || $nc->log_contains('diverged'), '1: the diverged events are reported in the log');
ok(wait_replica($nc, 'a'), '1: A caught up with C');
compare_events($nc, $na, '1: A equals C');
is($nb->safe_psql('postgres', q{SELECT count(*) FROM events WHERE event->>'tag' = 'a-only'}), '0',
	'1: the stale master never streamed into B');
is($na->safe_psql('postgres', $epochs_sql), $nc->safe_psql('postgres', $epochs_sql), '1: A holds the epochs of C');

# ---------------------------------------------------------------------------
# Round 2.  B is a slow destination: an event marked "slow" takes 0.1 s to
# apply there while public.hold has a row, and one marked "gate" waits for
# the row lock of a prepared transaction.  A refuses both meanwhile, so that
# it holds fewer events than B.
ok(wait_replica($nc, 'a') && wait_replica($nc, 'b'), '2: A and B caught up with C');
$nb->safe_psql('postgres', q{
	CREATE TABLE public.hold ();
	INSERT INTO public.hold DEFAULT VALUES;
	CREATE TABLE public.gate (x int);
	INSERT INTO public.gate VALUES (1);
	CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.event ? 'slow' AND EXISTS (SELECT FROM public.hold) THEN
			PERFORM pg_sleep(0.1);
		END IF;
		IF NEW.event ? 'gate' THEN
			PERFORM FROM public.gate FOR UPDATE;
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER slow BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION public.slow();
	ALTER TABLE events ENABLE ALWAYS TRIGGER slow;
	BEGIN;
	UPDATE public.gate SET x = 2;
	PREPARE TRANSACTION 'gate';
});
$na->safe_psql('postgres', q{
	CREATE TABLE public.hold ();
	INSERT INTO public.hold DEFAULT VALUES;
	CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF (NEW.event ? 'slow' OR NEW.event ? 'gate') AND EXISTS (SELECT FROM public.hold) THEN
			RAISE EXCEPTION 'held';
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION public.refuse();
	ALTER TABLE events ENABLE ALWAYS TRIGGER refuse;
});

# 50 slow events: B applies them for 5 s.  Once it is at it, the gate
# event: it waits on C while that batch applies, so that the heartbeat
# after the batch finds B behind by it (by about 5 s); then it waits at B
# for the gate, and B hears nothing more from C.  Then 3 events B never
# gets.
my $sessions_b = q{SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'replicator:%'};
$nc->safe_psql('postgres',
	q{SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('slow', k) FROM generate_series(1, 50) k))});
ok($nb->poll_query_until('postgres', "$sessions_b AND wait_event = 'PgSleep'", '1'),
	'2: B is applying the slow events');
$nc->safe_psql('postgres', q{SELECT insert_events_array(ARRAY['{"gate": true}']::jsonb[])});
ok($nb->poll_query_until('postgres', "$sessions_b AND wait_event_type = 'Lock'", '1'),
	'2: B waits at the gate');
ok($nb->poll_query_until('postgres',
		q{SELECT coalesce(contact_lag > interval '2 s', false) FROM replicator.node_state}),
	'2: B\'s last contact with its master found it behind by more than its tolerance (2 s)');
insert_tagged($nc, 'c-only', 3);
my $c_dump = dump_events($nc);
$nc->stop('immediate');
# the gate opens: the batch C sent last commits at B, then the session ends
$nb->safe_psql('postgres', q{COMMIT PREPARED 'gate'});
ok($nb->poll_query_until('postgres', $sessions_b, '0'), '2: C\'s sessions at B are gone');
$_->safe_psql('postgres', 'DELETE FROM public.hold') for ($na, $nb);
my $b_max = max_id($nb);
cmp_ok(max_id($na), '<', $b_max, '2: A holds fewer events than B');

$err = psql_error($nb, q{SELECT * FROM replicator.promote()});
ok(defined $err, '2: promote() on B is refused: its lag at its last contact exceeded its tolerance');
like($err // '', qr/ERROR: .*lag.*toleran/is, '2: the error says it is the lag');
is(node_info($nb), 'b|slave|2|c', '2: B is still slave of c at epoch 2');

is($nb->safe_psql('postgres', q{SELECT master, epoch, last_event_id FROM replicator.promote(force => true)}),
	"b|3|$b_max", '2: promote(force => true) on B: master b, epoch 3, after its last event');
is(node_info($nb), 'b|master|3|b', '2: B is master at epoch 3');
is($nb->safe_psql('postgres', q{SELECT epoch, master, first_id, how FROM replicator.epochs WHERE epoch = 3}),
	"3|b|" . ($b_max + 1) . "|forced failover", '2: the override is recorded: epoch 3 is a forced failover');
ok(wait_node($na, 'a|slave|3|b'), '2: A became slave of b at epoch 3');
ok(wait_replica($nb, 'a'), '2: A caught up with B');
is(insert_tagged($nb, 'epoch3', 2), ($b_max + 1) . '|' . ($b_max + 2), '2: B takes writes');
ok(wait_replica($nb, 'a'), '2: A caught up with B\'s writes');
compare_events($nb, $na, '2: A equals B');

# C comes back believing it is master at epoch 2, with a worker for b.
$nc->start;
ok(wait_node($nc, 'c|slave|3|b'), '2: C, reached by B\'s worker, became slave of b at epoch 3');
my $diverged_c = rows_after($c_dump, $b_max);
isnt($diverged_c, '', '2: C held events B never had');
is($nc->safe_psql('postgres', $diverged_sql), $diverged_c,
	'2: C\'s diverged_events hold exactly the events B never had');
is($nc->safe_psql('postgres', q{SELECT string_agg(DISTINCT epoch::text, ',') FROM replicator.diverged_events}),
	'2', '2: diverged in epoch 2');
my $n_diverged = scalar(split /\n/, $diverged_c);
ok($nb->poll_query_until('postgres', q{SELECT diverged FROM replicator.replica_status WHERE name = 'c'}, $n_diverged),
	"2: replica_status on B reports $n_diverged diverged events on c");
is($na->safe_psql('postgres', $diverged_sql), rows_after($a_dump, 15), '2: A\'s diverged events of round 1 are kept');
my $err_c = psql_error($nc, q{SELECT insert_events_array(ARRAY['{"on": "c"}']::jsonb[])});
like($err_c // '', qr/ERROR:  25006: .*master "b".*epoch 3\b/s, '2: C refuses writes, naming b');

insert_tagged($nb, 'end', 3);
ok(wait_replica($nb, 'a') && wait_replica($nb, 'c'), '2: A and C caught up with B');
compare_events($nb, $na, 'end: A equals B');
compare_events($nb, $nc, 'end: C equals B');
is($nb->safe_psql('postgres', 'SELECT count(*) = max(id) AND min(id) = 1 FROM events'), 't', 'end: ids are gapless');
is($nb->safe_psql('postgres', $epochs_sql),
	"1|a|1|registered\n2|c|16|failover\n3|b|" . ($b_max + 1) . "|forced failover", 'end: the history of the masters');
is($na->safe_psql('postgres', $epochs_sql), $nb->safe_psql('postgres', $epochs_sql), 'end: A holds the epochs of B');
is($nc->safe_psql('postgres', $epochs_sql), $nb->safe_psql('postgres', $epochs_sql), 'end: C holds the epochs of B');

# ---------------------------------------------------------------------------
# Round 3.  Two sessions hold C's events table in a transaction, as a
# master's stream does when its master stops answering in the middle of a
# batch: one attached as B's stream (it is given the topology B pushes),
# one an application's.  B stops.  promote() on C ends the stream's
# session, but waits for the other at most its timeout, then fails saying
# what to do and changing nothing; once that one ends, it goes ahead.
my $push_doc = $nb->safe_psql('postgres', q{
SELECT jsonb_build_object('master', n.master, 'epoch', n.epoch, 'routing', n.routing,
	'nodes', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', r.name, 'conninfo', r.conninfo, 'role', r.role,
		'lag_tolerance', r.lag_tolerance, 'enabled', r.enabled, 'incarnation', r.incarnation,
		'created_at', r.created_at, 'created_by', r.created_by,
		'superuser_set', coalesce((SELECT a.rolsuper FROM pg_roles a WHERE a.rolname = r.changed_by), false))
		ORDER BY r.name), '[]') FROM replicator.replicas r),
	'epochs', (SELECT coalesce(jsonb_agg(jsonb_build_object('epoch', e.epoch, 'master', e.master,
		'first_id', e.first_id, 'started_at', e.started_at, 'how', e.how, 'detail', e.detail)
		ORDER BY e.epoch), '[]') FROM replicator.epochs e))
FROM replicator.node_state n});
my $stream = $nc->background_psql('postgres');
$stream->query_safe("SELECT max_id FROM replicator.attach_to_master('b', 3, 'c', \$\$$push_doc\$\$)");
my $stream_pid = $stream->query_safe('SELECT pg_backend_pid()');
$stream->query_safe('BEGIN; LOCK TABLE events IN ROW EXCLUSIVE MODE');
my $holder = $nc->background_psql('postgres');
$holder->query_safe('BEGIN; LOCK TABLE events IN ROW EXCLUSIVE MODE');
$nb->stop('immediate');
# (forced: C's last contact with B may date from its catch-up after it rejoined)
$err = psql_error($nc, q{SELECT * FROM replicator.promote(timeout => '2 s', force => true)});
like($err // '', qr/ERROR: .*failover abandoned: sessions of the former master still hold this node's events after 2000 ms/,
	'3: promote() on C gives up within its timeout while a session holds its events table');
like($err // '', qr/HINT: .*pg_terminate_backend/, '3: and says how to end such sessions');
is($nc->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $stream_pid"), '0',
	'3: the session attached as the former master\'s stream was ended');
ok($nc->log_contains("ending session $stream_pid, a stream of a master of an epoch before 4"), '3: and the log says so');
is(node_info($nc), 'c|slave|3|b', '3: C is still slave of b at epoch 3');
$holder->query_safe('COMMIT');
$holder->quit;
eval { $stream->quit };
my $c_max = max_id($nc);
is($nc->safe_psql('postgres', q{SELECT master, epoch, last_event_id FROM replicator.promote(timeout => '2 s', force => true)}),
	"c|4|$c_max", '3: once the other ended, promote() on C: master c, epoch 4');
$nb->start;
ok(wait_node($nb, 'b|slave|4|c') && wait_node($na, 'a|slave|4|c'), '3: A and B became slaves of c at epoch 4');
ok(wait_replica($nc, 'a') && wait_replica($nc, 'b'), '3: A and B caught up with C');
compare_events($nc, $na, '3: A equals C');
compare_events($nc, $nb, '3: B equals C');

$_->stop for ($na, $nb, $nc);
done_testing();
