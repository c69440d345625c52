# Shared by scripts/test.sh, scripts/demo.sh and bench/*.sh: install what is
# missing, build and install the extension, run things as a non-root user.
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=15
# PG_BINDIR may name another (relocated) copy of the server, to test side by side.
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/$PG_MAJOR/bin}
# PostgreSQL refuses to run as root; servers and tests run as this user.
PG_USER=${PG_USER:-postgres}

PACKAGES=(make gcc "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR"
          "postgresql-client-$PG_MAJOR" libpq-dev libipc-run-perl perl)

log() { printf '\n==> %s\n' "$*"; }

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
	local missing=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]}"
		as_root apt-get update -qq
		# The Debian package starts a default cluster where it can; we never
		# use it, so keep it from starting.
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			-o Dpkg::Options::=--force-confdef "${missing[@]}" >/dev/null
	fi
	id "$PG_USER" >/dev/null 2>&1 || { echo "user $PG_USER does not exist" >&2; exit 1; }
}

# build_and_install [make variables...]
build_and_install() {
	log "building and installing replicator"
	make -C "$REPO" -s PG_CONFIG="$PG_BINDIR/pg_config" "$@" >/dev/null
	as_root make -C "$REPO" -s PG_CONFIG="$PG_BINDIR/pg_config" install >/dev/null
}

# Run a command as the PostgreSQL user, with the server binaries first on PATH.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$PG_USER" -- env PATH="$PG_BINDIR:$PATH" "$@"
	else
		env PATH="$PG_BINDIR:$PATH" "$@"
	fi
}

# A copy of the tree that the PostgreSQL user can write test output into.
work_copy() {
	local dir
	dir=$(mktemp -d /tmp/replicator-work.XXXXXX)
	tar -C "$REPO" --exclude=.git --exclude='tmp_check*' --exclude=results -cf - . | tar -C "$dir" -xf -
	[ "$(id -u)" -eq 0 ] && chown -R "$PG_USER" "$dir"
	echo "$dir"
}

# start_pg DIR PORT [postgresql.conf lines...]: a throwaway server owned by
# the PostgreSQL user, on 127.0.0.1 and a unix socket in /tmp.
start_pg() {
	local dir=$1 port=$2; shift 2
	as_root rm -rf "$dir"
	as_root install -d -o "$PG_USER" "$dir"
	as_pg initdb -D "$dir" -A trust -U postgres --no-sync >/dev/null
	{
		echo "port = $port"
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = '/tmp'"
		echo "shared_preload_libraries = 'replicator'"
		for line in "$@"; do echo "$line"; done
	} | as_pg tee -a "$dir/postgresql.conf" >/dev/null
	as_pg pg_ctl -D "$dir" -l "$dir/server.log" -w start >/dev/null
}

# Settings a source of cdc rules needs: logical WAL, and (on minors that have
# the setting) the extension's output plugin allowed.
logical_settings() {
	echo "wal_level = logical"
	if as_pg postgres --describe-config 2>/dev/null | grep -q '^output_plugin_libraries'; then
		echo "output_plugin_libraries = 'pgoutput, test_decoding, replicator'"
	fi
}

stop_pg() {
	[ -f "$1/postmaster.pid" ] && as_pg pg_ctl -D "$1" -m fast -w stop >/dev/null || true
}
