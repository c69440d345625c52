# Privileges (issue 9): a non-superuser member of replicator_admin cannot
# make a worker log in with the server's own credentials, by editing the
# catalog or through the API, and the password rule follows who last changed
# a replica when connecting; a database's search_path never runs a
# function of its owner's as superuser in the workers or the API; event
# contents of a failed check are for admins only.
use strict;
use warnings;
use lib 't';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ReplicatorTest;

my $source = source_node('source');
my $dest = destination_node('dest');    # trust: no password is ever asked

$source->safe_psql('postgres', q{
CREATE ROLE alice LOGIN IN ROLE replicator_admin;
CREATE ROLE bob LOGIN;
CREATE ROLE boss LOGIN SUPERUSER;
});
$dest->safe_psql('postgres', 'CREATE DATABASE ' . $_)
  for qw(legit stolen viaapi demoted mismatch s1db);

sub as
{
	my ($role, $sql, $dbname) = @_;
	return $source->safe_psql($dbname // 'postgres', $sql, extra_params => [ '-U', $role ]);
}

sub has_events_table
{
	my ($dbname) = @_;
	return $dest->safe_psql($dbname, q{SELECT to_regclass('events') IS NOT NULL});
}

sub state_is
{
	my ($name, $state, $dbname) = @_;
	return $source->poll_query_until($dbname // 'postgres',
		"SELECT state FROM replicator.replica_status WHERE name OPERATOR(pg_catalog.=) '$name'",
		$state);
}

# the source's first event holds something that is nobody else's business
$source->safe_psql('postgres',
	q{SELECT insert_events_array(ARRAY['{"secret": "source-s3cret"}', '{"a": 2}']::jsonb[])});

# --- the catalog, edited directly by a non-superuser admin
add_replica($source, 'legit', $dest, dbname => 'legit');    # by a superuser: no password needed
ok(wait_replica($source, 'legit'), 'a replica added by a superuser streams without a password');
my $stolen = $dest->connstr('stolen');
my ($ret, $out, $err) = $source->psql('postgres',
	"UPDATE replicator.replicas SET conninfo = \$\$$stolen\$\$ WHERE name = 'legit'",
	extra_params => [ '-U', 'alice' ]);
isnt($ret, 0, 'an admin cannot UPDATE the catalog');
like($err, qr/permission denied for table replicas/, 'the UPDATE is refused for want of privileges');
($ret, $out, $err) = $source->psql('postgres',
	"INSERT INTO replicator.replicas (name, conninfo) VALUES ('direct', \$\$$stolen\$\$)",
	extra_params => [ '-U', 'alice' ]);
like($err, qr/permission denied for table replicas/, 'an admin cannot INSERT into the catalog');
($ret, $out, $err) = $source->psql('postgres', 'SELECT conninfo FROM replicator.replicas',
	extra_params => [ '-U', 'alice' ]);
like($err, qr/permission denied for table replicas/, 'an admin cannot read conninfo unmasked');
# the worker connects again after a pause and a resume (which admins may do)
as('alice', q{SELECT replicator.pause_replica('legit')});
state_is('legit', 'paused') or die 'legit was not paused';
as('alice', q{SELECT replicator.resume_replica('legit')});
$source->safe_psql('postgres', q{SELECT insert_events_array(ARRAY['{"a": 3}']::jsonb[])});
ok(wait_replica($source, 'legit'), 'the superuser\'s replica streams on after the resume');
compare_events($source, $dest, 'legit equals the source', 'legit');
is(has_events_table('stolen'), 'f', 'no worker connected to the database the admin tried to put in the catalog');

# --- through the API: a password in the conninfo that the destination never asks for
my $viaapi = $dest->connstr('viaapi') . ' password=wrong';
as('alice', "SELECT replicator.add_replica('viaapi', \$\$$viaapi\$\$)");
state_is('viaapi', 'invalid') or die 'viaapi was not marked invalid';
like(
	$source->safe_psql('postgres', q{SELECT last_error FROM replicator.replica_status WHERE name = 'viaapi'}),
	qr/^password required: /,
	'a replica added by a non-superuser is invalid when the destination asks for no password');
is(has_events_table('viaapi'), 'f', 'the worker did nothing on that destination');
like( as('alice', q{SELECT string_agg(check_name || '=' || ok || ': ' || coalesce(detail, ''), ',') FROM replicator.validate('viaapi')}),
	qr/^connect=false: password required: /,
	'validate() applies the password rule');
($ret, $out, $err) = $source->psql('postgres', q{SELECT count(*) FROM replicator.diff('viaapi')},
	extra_params => [ '-U', 'alice' ]);
like($err, qr/password required/, 'diff() applies the password rule');
is(has_events_table('viaapi'), 'f', 'neither validate() nor diff() created anything there');

# admins' functions still read the catalog (as its owner)
is( as('alice', q{SELECT bool_and(ok) FROM replicator.validate('legit')}),
	't', 'an admin validates a replica');
# diff() shows the events themselves: it reads them with the caller's rights
$source->safe_psql('postgres', 'GRANT SELECT ON events TO alice');
is(as('alice', q{SELECT count(*) FROM replicator.diff('legit')}), '0', 'an admin diffs a replica');
is( as('alice', q{SELECT changed_by FROM replicator.replica_status WHERE name = 'viaapi'}),
	'alice', 'replica_status shows who added the replica');

# --- the rule is decided when connecting, from who last changed the replica
as('boss', "SELECT replicator.add_replica('demoted', \$\$@{[ $dest->connstr('demoted') ]}\$\$)");
ok(wait_replica($source, 'demoted'), 'a replica added by a superuser streams');
$source->safe_psql('postgres', 'ALTER ROLE boss NOSUPERUSER');
as('alice', q{SELECT replicator.pause_replica('demoted')});
state_is('demoted', 'paused') or die 'demoted was not paused';
as('alice', q{SELECT replicator.resume_replica('demoted')});
state_is('demoted', 'invalid') or die 'demoted was not marked invalid';
like(
	$source->safe_psql('postgres', q{SELECT last_error FROM replicator.replica_status WHERE name = 'demoted'}),
	qr/^password required: /,
	'once the role that added it is no superuser, the destination must ask for the password');

# --- a failed check's event contents: admins only
$dest->safe_psql('mismatch', q{
CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL);
INSERT INTO events VALUES (1, now(), '{"secret": "dest-s3cret"}');
});
add_replica($source, 'mismatch', $dest, dbname => 'mismatch');
state_is('mismatch', 'invalid') or die 'mismatch was not marked invalid';
my $seen = as('bob', q{SELECT s::text FROM replicator.replica_status s WHERE name = 'mismatch'});
like($seen, qr/same first event/, 'every role sees why the check failed');
unlike($seen, qr/s3cret/, 'a role that is no admin sees no event contents in replica_status');
my $detail = as('alice',
	q{SELECT detail FROM replicator.validate('mismatch') WHERE check_name = 'same first event'});
like($detail, qr/source-s3cret/, 'an admin sees the source\'s first event in validate()');
like($detail, qr/dest-s3cret/, 'an admin sees the destination\'s first event in validate()');

# --- a database's search_path: its owner's operator never runs as superuser
$source->safe_psql('postgres', 'CREATE ROLE mallory LOGIN; CREATE DATABASE src OWNER mallory');
$source->safe_psql('src', 'CREATE EXTENSION replicator SCHEMA public');
as('mallory', q{
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE TABLE evil.calls (superuser boolean, backend_type text);
GRANT INSERT ON evil.calls TO PUBLIC;
CREATE FUNCTION evil.record() RETURNS void LANGUAGE sql AS $$
	INSERT INTO evil.calls
	SELECT pg_catalog.current_setting('is_superuser') OPERATOR(pg_catalog.=) 'on', a.backend_type
	  FROM pg_catalog.pg_stat_activity a WHERE a.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
$$;
CREATE FUNCTION evil.eq(text, text) RETURNS boolean LANGUAGE sql AS $$
	SELECT evil.record(); SELECT $1 OPERATOR(pg_catalog.=) $2
$$;
CREATE FUNCTION evil.ne(text, text) RETURNS boolean LANGUAGE sql AS $$
	SELECT evil.record(); SELECT $1 OPERATOR(pg_catalog.<>) $2
$$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq);
CREATE OPERATOR evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.ne);
ALTER DATABASE src SET search_path = evil, pg_catalog;
}, 'src');
is(as('alice', q{SELECT 'a' = 'b'}, 'src'), 'f', 'a session of the database compares text');
is(as('mallory', q{SELECT count(*) FROM evil.calls}, 'src'), '1',
	'with the database owner\'s operator');

# the test's own superuser sessions leave the trap aside
my $clean = 'SET search_path = public, pg_catalog; ';
$source->safe_psql('src',
	$clean . "SELECT replicator.add_replica('s1', \$\$@{[ $dest->connstr('s1db') ]}\$\$)");
$source->safe_psql('src', $clean . q{SELECT insert_events_array(ARRAY['{"b": 1}', '{"b": 2}']::jsonb[])});
is($source->safe_psql('src', $clean . q{SELECT replicator.wait_for_replica('s1', '3 min')}),
	't', 'streaming in the database');
as('alice', q{SELECT replicator.pause_replica('s1')}, 'src');
state_is('s1', 'paused', 'src') or die 's1 was not paused';
$source->safe_psql('src', $clean . q{SELECT insert_events_array(ARRAY['{"b": 3}']::jsonb[])});
as('alice', q{SELECT replicator.resume_replica('s1')}, 'src');
is(as('alice', q{SELECT replicator.wait_for_replica('s1', '3 min')}, 'src'), 't',
	'resumed, it catches up');
is(as('alice', q{SELECT bool_and(ok) FROM replicator.validate('s1')}, 'src'), 't',
	'validated by an admin with that search_path');
is( $source->safe_psql('src',
		$clean . q{SELECT count(*) FILTER (WHERE superuser) || ' as superuser, ' || count(*) FILTER (WHERE backend_type IS DISTINCT FROM 'client backend') || ' in workers' FROM evil.calls}),
	'0 as superuser, 0 in workers',
	'the database owner\'s operator never ran as superuser, nor in a worker');

done_testing();
