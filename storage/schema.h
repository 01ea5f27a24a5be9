/* schema.h — the journal's schema migrations (internal to storage/).
 * Migration N turns a version N-1 file into version N; each runs in one
 * transaction and ends by setting PRAGMA user_version = N. Forward only. */
#ifndef KP_SCHEMA_H
#define KP_SCHEMA_H

#define KP_SCHEMA_LATEST 6
/* PRAGMA application_id of a kioskpay journal: "KPJL". */
#define KP_SCHEMA_APP_ID 0x4B504A4C
/* What the per-order triggers of schema 3 answer (SQLite's error message). */
#define KP_SCHEMA_ONE_LIVE "order has a live attempt already"
#define KP_SCHEMA_ONE_KEPT "order has a kept success already"
/* What schema 6's attempts_rid trigger answers: an attempt's rid is its
 * order's rid * 65536 + its number (at most 65,536 attempts per order). */
#define KP_SCHEMA_RID "attempt rid outside the range of its order (at most 65536 attempts per order)"

/* "Column c holds a live attempt state" and "an open refund state", as the
 * triggers of schema 3 and 5 say it. Comparisons, not a constant IN list,
 * which SQLite answers by building a temporary B-tree. */
#define KP_SCHEMA_LIVE(c) "(" c " = 'created' OR " c " = 'paying' OR " c " = 'canceling')"
#define KP_SCHEMA_REFUND_OPEN(c) "(" c " = 'pending' OR " c " = 'sent')"
/* How many attempts and refunds are not final, read from the due table of
 * schema 5 only (the journal's replay count; the replay bench polls it from
 * outside). */
#define KP_SCHEMA_COUNT_OPEN "SELECT count(*) FROM due WHERE kind = 'attempt' OR kind = 'refund'"

/* SQL text of the migration to `version` (1..KP_SCHEMA_LATEST); NULL otherwise.
 * Static storage; not to be freed. */
const char *kp_schema_migration(int version);

#endif
