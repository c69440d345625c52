# replicator: PGXS build.  One shared library from extension/ and worker/.
PG_CONFIG ?= pg_config

MODULE_big = replicator
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard extension/*.c worker/*.c)))

EXTENSION = replicator
# every install script and every update script (replicator--A--B.sql)
DATA = $(sort $(wildcard extension/replicator--*.sql))

# pg_regress runs on its own temporary instance with the library preloaded,
# so "make installcheck" needs no running server.
REGRESS = $(basename $(notdir $(sort $(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=tmp_check_regress --temp-config=sql/regress.conf
TAP_TESTS = 1

PG_CPPFLAGS = -I$(libpq_srcdir) -Iextension -Iworker
# -Wextra but for unused parameters: PostgreSQL's own inline headers (and
# every V1 function's fcinfo) have them.  -Werror only where we build to test
# (scripts/test.sh passes WERROR=1): a newer compiler's new warning must not
# break a user's build.
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter $(if $(WERROR),-Werror)
SHLIB_LINK = -lpq

EXTRA_CLEAN = tmp_check_regress

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# A header change rebuilds every object (shared memory layout above all).
$(OBJS): $(wildcard extension/*.h worker/*.h)
