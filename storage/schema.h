/* schema.h — the journal's schema migrations (internal to storage/).
 * Migration N turns a version N-1 file into version N; each runs in one
 * transaction and ends by setting PRAGMA user_version = N. Forward only. */
#ifndef KP_SCHEMA_H
#define KP_SCHEMA_H

#define KP_SCHEMA_LATEST 2
/* PRAGMA application_id of a kioskpay journal: "KPJL". */
#define KP_SCHEMA_APP_ID 0x4B504A4C

/* SQL text of the migration to `version` (1..KP_SCHEMA_LATEST); NULL otherwise.
 * Static storage; not to be freed. */
const char *kp_schema_migration(int version);

#endif
