/*-------------------------------------------------------------------------
 *
 * rules.h
 *	  The rules' management API (rules.c), for the other SQL functions of
 *	  rules (rule_validate.c, rule_sync.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_RULES_H
#define REPLICATOR_RULES_H

#include "postgres.h"

#include "rule_catalog.h"

extern void replicator_rule_get(const char *name, RuleConfig *config);
extern bool replicator_rule_wait(const char *name, int64 timeout_ms);
extern void replicator_rule_want_counts(const char *name, bool want);

#endif							/* REPLICATOR_RULES_H */
