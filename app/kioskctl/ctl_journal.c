/* ctl_journal.c — kioskctl's offline journal commands: init, check, export.
 * They work on the file itself (check and export read-only), so they also
 * work while kioskpayd is down, or on a copy taken off a broken kiosk. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "journal.h"
#include "kioskctl.h"

static void quiet_log(void *ctx, kp_log_level level, const char *msg)
{
	(void)ctx;
	(void)level;
	(void)msg; /* kioskctl says what failed itself, in one line */
}

static void env_init(kp_env *env)
{
	kp_env_init_system(env);
	env->log = quiet_log;
}

/* The one PATH argument of a journal command. */
static int one_path(const kctl_ctx *ctx, kctl_handler self, int argc, char **argv, const char **path)
{
	const kctl_cmd *cmd = kctl_cmd_of(self);
	*path = NULL;
	bool options_done = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!options_done && strcmp(a, "--") == 0) {
			options_done = true;
		} else if (!options_done && a[0] == '-' && a[1] != '\0') {
			return kctl_usage_error(ctx, cmd, "unknown option %s", a);
		} else if (*path) {
			return kctl_usage_error(ctx, cmd, "one PATH only, got also %s", a);
		} else {
			*path = a;
		}
	}
	if (!*path || !**path)
		return kctl_usage_error(ctx, cmd, "PATH missing");
	return KCTL_EXIT_OK;
}

static int cannot_open(const kctl_ctx *ctx, const char *what, kp_err err, const char *msg)
{
	fprintf(stderr, "%s journal %s: %s (%s)\n", ctx->prog, what, msg, kp_errname(err));
	return KCTL_EXIT_CANNOT_OPEN;
}

/* Open the journal; on failure, why holds one line for the technician. */
static kp_err open_journal(const char *path, unsigned flags, const kp_env *env, kp_journal **out,
			   char *why, size_t why_cap)
{
	char msg[512];
	kp_journal_opts opts = {.errbuf = msg, .errbuf_size = sizeof(msg)};
	kp_err err = kp_journal_open_ex(out, path, flags, env, &opts);
	why[0] = '\0';
	if (err == KP_OK)
		return KP_OK;
	const char *hint = "";
	switch (err) {
	case KP_ERR_CORRUPT:
		hint = "; the file was left untouched";
		break;
	case KP_ERR_FUTURE_VERSION:
		hint = "; written by a newer kioskpay, left untouched";
		break;
	case KP_ERR_STATE:
		hint = "; run kioskctl journal init on it (or start kioskpayd) to migrate";
		break;
	default:
		break;
	}
	if (!msg[0])
		snprintf(msg, sizeof(msg), "%s", kp_strerror(err));
	if (strstr(msg, path))
		snprintf(why, why_cap, "%s%s", msg, hint);
	else
		snprintf(why, why_cap, "%s: %s%s", path, msg, hint);
	return err;
}

/* ---------- init ---------- */

static bool add_num(cJSON *o, const char *k, int64_t v)
{
	return cJSON_AddNumberToObject(o, k, (double)v) != NULL;
}

static bool add_str(cJSON *o, const char *k, const char *v)
{
	return cJSON_AddStringToObject(o, k, v) != NULL;
}

static int print_json(cJSON *root)
{
	char *text = root ? cJSON_Print(root) : NULL;
	cJSON_Delete(root);
	if (!text) {
		fprintf(stderr, "kioskctl: out of memory building JSON\n");
		return KCTL_EXIT_FAILED;
	}
	puts(text);
	cJSON_free(text);
	return KCTL_EXIT_OK;
}


int kctl_journal_init(const kctl_ctx *ctx, int argc, char **argv)
{
	const char *path;
	int rc = one_path(ctx, kctl_journal_init, argc, argv, &path);
	if (rc != KCTL_EXIT_OK)
		return rc;
	kp_env env;
	env_init(&env);
	kp_journal *j = NULL;
	char why[640];
	kp_err err = open_journal(path, 0, &env, &j, why, sizeof(why));
	if (err != KP_OK)
		return cannot_open(ctx, "init", err, why);
	kp_journal_close(j);
	if (!ctx->json) {
		printf("ok: journal %s at schema version %d\n", path, KP_JOURNAL_SCHEMA_VERSION);
		return KCTL_EXIT_OK;
	}
	cJSON *root = cJSON_CreateObject();
	if (root && (!cJSON_AddTrueToObject(root, "ok") || !add_str(root, "path", path) ||
		     !add_num(root, "schema_version", KP_JOURNAL_SCHEMA_VERSION))) {
		cJSON_Delete(root);
		root = NULL;
	}
	return print_json(root);
}

/* ---------- check ---------- */

struct report {
	const kctl_ctx *ctx;
	cJSON *problems; /* --json */
	long count;
};

static void on_problem(void *arg, const char *problem)
{
	struct report *r = arg;
	r->count++;
	if (r->problems)
		cJSON_AddItemToArray(r->problems, cJSON_CreateString(problem));
	else
		printf("%s\n", problem);
}

static int64_t sum(const int64_t *v, int n)
{
	int64_t s = 0;
	for (int i = 0; i < n; i++)
		s += v[i];
	return s;
}

int kctl_journal_check(const kctl_ctx *ctx, int argc, char **argv)
{
	const char *path;
	int rc = one_path(ctx, kctl_journal_check, argc, argv, &path);
	if (rc != KCTL_EXIT_OK)
		return rc;
	kp_env env;
	env_init(&env);
	struct report r = {.ctx = ctx};
	cJSON *root = NULL;
	if (ctx->json) {
		root = cJSON_CreateObject();
		r.problems = cJSON_AddArrayToObject(root, "problems");
		if (!r.problems) {
			cJSON_Delete(root);
			return print_json(NULL);
		}
	}
	kp_journal *j = NULL;
	char why[640];
	kp_err err = open_journal(path, KP_JOURNAL_READONLY, &env, &j, why, sizeof(why));
	if (err == KP_ERR_CORRUPT) {
		/* Not openable because it is damaged: that is the check's finding. */
		char line[800];
		snprintf(line, sizeof(line), "integrity: %s", why);
		on_problem(&r, line);
		if (root) {
			cJSON_AddFalseToObject(root, "ok");
			(void)print_json(root);
		}
		return KCTL_EXIT_FAILED;
	}
	if (err != KP_OK) {
		cJSON_Delete(root);
		return cannot_open(ctx, "check", err, why);
	}
	err = kp_journal_check(j, on_problem, &r);
	kp_journal_stats st;
	kp_err serr = err == KP_OK ? kp_journal_stats_get(j, &st) : KP_OK;
	int exit_code = KCTL_EXIT_OK;
	if (err != KP_OK && err != KP_ERR_CORRUPT) {
		fprintf(stderr, "%s journal check: %s: the check could not run: %s (%s)\n", ctx->prog, path,
			kp_journal_errmsg(j), kp_errname(err));
		exit_code = KCTL_EXIT_FAILED;
	} else if (err == KP_ERR_CORRUPT || r.count > 0) {
		exit_code = KCTL_EXIT_FAILED;
	} else if (serr != KP_OK) {
		fprintf(stderr, "%s journal check: %s: cannot count records: %s (%s)\n", ctx->prog, path,
			kp_journal_errmsg(j), kp_errname(serr));
		exit_code = KCTL_EXIT_FAILED;
	}
	kp_journal_close(j);
	if (exit_code == KCTL_EXIT_OK) {
		int64_t orders = sum(st.orders, KP_ORDER__COUNT);
		int64_t attempts = sum(st.attempts, KP_ATTEMPT__COUNT);
		int64_t refunds = sum(st.refunds, KP_REFUND__COUNT);
		int64_t live = st.attempts[KP_ATTEMPT_CREATED] + st.attempts[KP_ATTEMPT_PAYING] +
			       st.attempts[KP_ATTEMPT_CANCELING];
		int64_t open = st.refunds[KP_REFUND_PENDING] + st.refunds[KP_REFUND_SENT];
		if (root) {
			cJSON_AddTrueToObject(root, "ok");
			cJSON_AddNumberToObject(root, "orders", (double)orders);
			cJSON_AddNumberToObject(root, "attempts", (double)attempts);
			cJSON_AddNumberToObject(root, "attempts_live", (double)live);
			cJSON_AddNumberToObject(root, "confirmations", (double)st.confirmations);
			cJSON_AddNumberToObject(root, "refunds", (double)refunds);
			cJSON_AddNumberToObject(root, "refunds_open", (double)open);
			cJSON_AddNumberToObject(root, "refunds_rejected", (double)st.refunds[KP_REFUND_REJECTED]);
			cJSON_AddNumberToObject(root, "attempts_unresolved",
						(double)st.attempts[KP_ATTEMPT_UNRESOLVED]);
			cJSON_AddNumberToObject(root, "events", (double)st.events);
			cJSON_AddNumberToObject(root, "file_bytes", (double)st.file_bytes);
		} else {
			printf("ok: %lld orders, %lld attempts (%lld live, %lld unresolved), %lld "
			       "confirmations, %lld refunds (%lld open, %lld rejected), %lld events, "
			       "%lld bytes\n",
			       (long long)orders, (long long)attempts, (long long)live,
			       (long long)st.attempts[KP_ATTEMPT_UNRESOLVED], (long long)st.confirmations,
			       (long long)refunds, (long long)open, (long long)st.refunds[KP_REFUND_REJECTED],
			       (long long)st.events, (long long)st.file_bytes);
		}
	} else if (root) {
		cJSON_AddFalseToObject(root, "ok");
	}
	if (root && print_json(root) != KCTL_EXIT_OK)
		return KCTL_EXIT_FAILED;
	return exit_code;
}

/* ---------- export ---------- */

struct export {
	kp_journal *j;
	cJSON *list; /* where the current walk adds its objects */
};

static cJSON *attempt_json(const kp_attempt *a)
{
	cJSON *o = cJSON_CreateObject();
	if (o && add_str(o, "attempt_id", a->attempt_id) && add_str(o, "order_id", a->order_id) &&
	    add_str(o, "channel", a->channel) && add_num(o, "amount", a->amount) &&
	    add_str(o, "state", kp_attempt_state_str(a->state)) && add_str(o, "host_txn", a->host_txn) &&
	    add_num(o, "created_at", a->created_at) &&
	    add_num(o, "updated_at", a->updated_at) && add_num(o, "next_check_at", a->next_check_at) &&
	    add_num(o, "tries", a->tries))
		return o;
	cJSON_Delete(o);
	return NULL;
}

static cJSON *refund_json(const kp_refund *r)
{
	cJSON *o = cJSON_CreateObject();
	if (o && add_str(o, "refund_id", r->refund_id) &&
	    (r->order_id[0] ? add_str(o, "order_id", r->order_id) : cJSON_AddNullToObject(o, "order_id") != NULL) &&
	    add_str(o, "attempt_id", r->attempt_id) && add_str(o, "host_txn", r->host_txn) &&
	    add_num(o, "amount", r->amount) && add_str(o, "reason", kp_refund_reason_str(r->reason)) &&
	    add_str(o, "state", kp_refund_state_str(r->state)) && add_num(o, "created_at", r->created_at) &&
	    add_num(o, "updated_at", r->updated_at) && add_num(o, "next_check_at", r->next_check_at) &&
	    add_num(o, "tries", r->tries))
		return o;
	cJSON_Delete(o);
	return NULL;
}

static kp_err add_attempt(void *arg, const kp_attempt *a)
{
	struct export *x = arg;
	cJSON *o = attempt_json(a);
	if (!o)
		return KP_ERR_NOMEM;
	cJSON_AddItemToArray(x->list, o);
	return KP_OK;
}

static kp_err add_refund(void *arg, const kp_refund *r)
{
	struct export *x = arg;
	cJSON *o = refund_json(r);
	if (!o)
		return KP_ERR_NOMEM;
	cJSON_AddItemToArray(x->list, o);
	return KP_OK;
}

static kp_err add_order(void *arg, const kp_order *ord)
{
	struct export *x = arg;
	cJSON *o = cJSON_CreateObject();
	cJSON *attempts = NULL, *refunds = NULL;
	if (!o || !add_str(o, "order_id", ord->order_id) || !add_str(o, "dedup_key", ord->dedup_key) ||
	    !add_num(o, "amount", ord->amount) || !add_str(o, "currency", ord->currency) ||
	    !add_str(o, "items", ord->items) || !add_str(o, "state", kp_order_state_str(ord->state)) ||
	    !add_num(o, "created_at", ord->created_at) || !add_num(o, "expires_at", ord->expires_at) ||
	    !add_num(o, "updated_at", ord->updated_at) ||
	    !(attempts = cJSON_AddArrayToObject(o, "attempts")) ||
	    !(refunds = cJSON_AddArrayToObject(o, "refunds"))) {
		cJSON_Delete(o);
		return KP_ERR_NOMEM;
	}
	cJSON_AddItemToArray(x->list, o);
	struct export sub = {.j = x->j, .list = attempts};
	kp_err err = kp_journal_attempts_each(x->j, ord->order_id, add_attempt, &sub);
	sub.list = refunds;
	if (err == KP_OK)
		err = kp_journal_refunds_each(x->j, ord->order_id, add_refund, &sub);
	return err;
}

static kp_err add_conf(void *arg, const kp_confirmation *c)
{
	struct export *x = arg;
	cJSON *o = cJSON_CreateObject();
	if (o && add_str(o, "host_txn", c->host_txn) && add_num(o, "seq", c->seq) &&
	    add_str(o, "attempt_id", c->attempt_id) && add_str(o, "status", kp_confirm_status_str(c->status)) &&
	    add_num(o, "amount", c->amount) && add_str(o, "currency", c->currency) &&
	    add_num(o, "at", c->at) && add_num(o, "received_at", c->received_at)) {
		cJSON_AddItemToArray(x->list, o);
		return KP_OK;
	}
	cJSON_Delete(o);
	return KP_ERR_NOMEM;
}

static kp_err add_events(kp_journal *j, cJSON *list)
{
	static kp_event ev[256];
	int64_t since = 0;
	for (;;) {
		size_t n = 0;
		kp_err err = kp_journal_events(j, since, ev, sizeof(ev) / sizeof(ev[0]), &n);
		if (err != KP_OK)
			return err;
		for (size_t i = 0; i < n; i++) {
			cJSON *o = cJSON_CreateObject();
			if (!o || !add_num(o, "seq", ev[i].seq) || !add_num(o, "at", ev[i].at) ||
			    !add_str(o, "kind", ev[i].kind) || !add_str(o, "record_id", ev[i].record_id) ||
			    !add_str(o, "from", ev[i].from_state) || !add_str(o, "to", ev[i].to_state) ||
			    !add_str(o, "cause", ev[i].cause)) {
				cJSON_Delete(o);
				return KP_ERR_NOMEM;
			}
			cJSON_AddItemToArray(list, o);
			since = ev[i].seq;
		}
		if (n < sizeof(ev) / sizeof(ev[0]))
			return KP_OK;
	}
}

int kctl_journal_export(const kctl_ctx *ctx, int argc, char **argv)
{
	const char *path;
	int rc = one_path(ctx, kctl_journal_export, argc, argv, &path);
	if (rc != KCTL_EXIT_OK)
		return rc;
	kp_env env;
	env_init(&env);
	kp_journal *j = NULL;
	char why[640];
	kp_err err = open_journal(path, KP_JOURNAL_READONLY, &env, &j, why, sizeof(why));
	if (err != KP_OK)
		return cannot_open(ctx, "export", err, why);
	cJSON *root = cJSON_CreateObject();
	struct export x = {.j = j};
	cJSON *orders = NULL, *orphans = NULL, *confs = NULL, *events = NULL;
	if (!root || !add_num(root, "schema_version", KP_JOURNAL_SCHEMA_VERSION) ||
	    !(orders = cJSON_AddArrayToObject(root, "orders")) ||
	    !(orphans = cJSON_AddArrayToObject(root, "orphan_refunds")) ||
	    !(confs = cJSON_AddArrayToObject(root, "confirmations")) ||
	    !(events = cJSON_AddArrayToObject(root, "events"))) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	x.list = orders;
	err = kp_journal_orders_each(j, add_order, &x);
	x.list = orphans;
	if (err == KP_OK)
		err = kp_journal_refunds_each(j, "", add_refund, &x);
	x.list = confs;
	if (err == KP_OK)
		err = kp_journal_confirmations_each(j, add_conf, &x);
	if (err == KP_OK)
		err = add_events(j, events);
out:
	if (err != KP_OK) {
		fprintf(stderr, "%s journal export: %s: %s (%s)\n", ctx->prog, path,
			kp_journal_errmsg(j)[0] ? kp_journal_errmsg(j) : kp_strerror(err), kp_errname(err));
		cJSON_Delete(root);
		kp_journal_close(j);
		return KCTL_EXIT_FAILED;
	}
	kp_journal_close(j);
	return print_json(root);
}
