/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "bus-errors.h"
#include "bus-polkit.h"
#include "log.h"

#define POLKIT_CHECK_ALLOW_USER_INTERACTION 1U
/* A person may be typing a password: give the agent time. */
#define POLKIT_INTERACTIVE_TIMEOUT_USEC (UINT64_C(300) * USEC_PER_SEC)

struct BusAuthQuery {
        BusService *service;
        sd_bus_message *request;
        sd_bus_slot *slot; /* the call in flight: GetConnectionUnixUser, then polkit */
        char *action;
        char *vm_name;
        char *verb;
        BusAuthorizedHandler handler;
        uid_t uid; /* the caller's, from GetConnectionUnixUser */
        BusAuthQuery *prev, *next;
};

/* While an authorized call's handler runs (on the event loop thread): that call and its
 * caller's uid. */
static sd_bus_message *authorized_call;
static uid_t authorized_uid;

bool bus_authorized_uid(sd_bus_message *m, uid_t *ret) {
        if (!m || m != authorized_call)
                return false;
        *ret = authorized_uid;
        return true;
}

static BusAuthQuery *auth_query_free(BusAuthQuery *q) {
        if (!q)
                return NULL;
        if (q->service) {
                if (q->prev)
                        q->prev->next = q->next;
                else
                        q->service->auth_queries = q->next;
                if (q->next)
                        q->next->prev = q->prev;
                q->service->n_auth_queries--;
        }
        sd_bus_slot_unref(q->slot);
        sd_bus_message_unref(q->request);
        free(q->action);
        free(q->vm_name);
        free(q->verb);
        free(q);
        return NULL;
}

void bus_auth_queries_free(BusService *s) {
        while (s->auth_queries)
                auth_query_free(s->auth_queries);
}

/* Answers the original call: runs the handler when allowed, else replies 'denial'. */
static void auth_query_finish(BusAuthQuery *q, const sd_bus_error *denial) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        if (denial) {
                log_debug("Denied %s for %s: %s", q->action,
                          sd_bus_message_get_sender(q->request) ?: "?", denial->message);
                r = sd_bus_reply_method_error(q->request, denial);
        } else {
                r = sd_bus_message_rewind(q->request, true);
                if (r >= 0) {
                        /* The handler may want the caller's uid: it is known already. */
                        authorized_call = q->request;
                        authorized_uid = q->uid;
                        r = q->handler(q->service, q->request, &error);
                        authorized_call = NULL;
                }
                if (r < 0 || sd_bus_error_is_set(&error))
                        r = sd_bus_reply_method_errno(q->request, r < 0 ? r : -EIO, &error);
        }
        if (r < 0)
                log_debug_errno(r, "Failed to reply to %s: %m",
                                sd_bus_message_get_member(q->request) ?: "?");
        auth_query_free(q);
}

static void auth_query_deny(BusAuthQuery *q, const char *name, const char *reason) {
        _cleanup_(sd_bus_error_free) sd_bus_error denial = SD_BUS_ERROR_NULL;

        if (q->vm_name)
                sd_bus_error_setf(&denial, name, "Not authorized to %s VM '%s' (polkit action %s)%s%s",
                                  q->verb, q->vm_name, q->action, reason ? ": " : "",
                                  reason ?: "");
        else
                sd_bus_error_setf(&denial, name, "Not authorized to %s VMs (polkit action %s)%s%s",
                                  q->verb, q->action, reason ? ": " : "", reason ?: "");
        auth_query_finish(q, &denial);
}

static int on_polkit_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        BusAuthQuery *q = userdata;
        const sd_bus_error *e;
        int authorized, challenge, r;

        q->slot = sd_bus_slot_unref(q->slot);

        e = sd_bus_message_get_error(reply);
        if (e) {
                /* No polkit on this bus (or it failed): only root, handled earlier, may act. */
                log_debug("polkit CheckAuthorization failed: %s: %s", e->name, e->message);
                auth_query_deny(q, VMMD_ERROR_ACCESS_DENIED, "polkit is not available");
                return 0;
        }

        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0) {
                log_debug_errno(r, "Malformed reply from polkit: %m");
                auth_query_deny(q, VMMD_ERROR_ACCESS_DENIED, "malformed reply from polkit");
                return 0;
        }

        if (authorized)
                auth_query_finish(q, NULL);
        else if (challenge)
                auth_query_deny(q, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                "interactive authentication required");
        else
                auth_query_deny(q, VMMD_ERROR_ACCESS_DENIED, NULL);
        return 0;
}

static int auth_query_ask_polkit(BusAuthQuery *q) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        sd_bus *bus = q->service->bus;
        bool interactive = sd_bus_message_get_allow_interactive_authorization(q->request) > 0;
        int r;

        r = sd_bus_message_new_method_call(bus, &call, "org.freedesktop.PolicyKit1",
                                           "/org/freedesktop/PolicyKit1/Authority",
                                           "org.freedesktop.PolicyKit1.Authority",
                                           "CheckAuthorization");
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "(sa{sv})s", "system-bus-name", 1, "name", "s",
                                  sd_bus_message_get_sender(q->request), q->action);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(call, 'a', "{ss}");
        if (r < 0)
                return r;
        if (q->vm_name) {
                r = sd_bus_message_append(call, "{ss}", "vm", q->vm_name);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_append(call, "{ss}", "verb", q->verb);
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(call);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "us",
                                  interactive ? POLKIT_CHECK_ALLOW_USER_INTERACTION : 0U, "");
        if (r < 0)
                return r;

        return sd_bus_call_async(bus, &q->slot, call, on_polkit_reply, q,
                                 interactive ? POLKIT_INTERACTIVE_TIMEOUT_USEC : 0);
}

static int on_unix_user_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        BusAuthQuery *q = userdata;
        uint32_t uid;
        int r;

        q->slot = sd_bus_slot_unref(q->slot);

        if (sd_bus_message_is_method_error(reply, NULL)) {
                auth_query_deny(q, VMMD_ERROR_ACCESS_DENIED, "cannot identify the caller");
                return 0;
        }
        r = sd_bus_message_read(reply, "u", &uid);
        if (r < 0) {
                auth_query_deny(q, VMMD_ERROR_ACCESS_DENIED, "cannot identify the caller");
                return 0;
        }

        q->uid = (uid_t)uid;
        if (uid == 0) {
                auth_query_finish(q, NULL);
                return 0;
        }

        r = auth_query_ask_polkit(q);
        if (r < 0) {
                log_debug_errno(r, "Failed to ask polkit: %m");
                auth_query_deny(q, VMMD_ERROR_ACCESS_DENIED, "polkit could not be asked");
        }
        return 0;
}

int bus_authorize(BusService *s, sd_bus_message *m, const char *action, const char *vm_name,
                  const char *verb, BusAuthorizedHandler handler, sd_bus_error *error) {
        BusAuthQuery *q;
        const char *sender;
        int r;

        sender = sd_bus_message_get_sender(m);
        if (!sender)
                return sd_bus_error_set(error, VMMD_ERROR_ACCESS_DENIED,
                                        "Not authorized: the caller has no bus name");
        /* A caller cannot make the daemon hold unbounded calls while polkit thinks. */
        size_t mine = 0;
        for (BusAuthQuery *o = s->auth_queries; o; o = o->next)
                if (strcmp(sd_bus_message_get_sender(o->request) ?: "", sender) == 0)
                        mine++;
        if (mine >= BUS_AUTH_MAX_PER_CALLER || s->n_auth_queries >= BUS_AUTH_MAX)
                return sd_bus_error_setf(error, VMMD_ERROR_LIMIT_EXCEEDED,
                                         "Too many calls waiting for authorization (at most %d per caller, %d in all)",
                                         BUS_AUTH_MAX_PER_CALLER, BUS_AUTH_MAX);

        q = calloc(1, sizeof *q);
        if (!q)
                return -ENOMEM;
        q->request = sd_bus_message_ref(m);
        q->handler = handler;
        q->action = strdup(action);
        q->verb = strdup(verb);
        q->vm_name = vm_name ? strdup(vm_name) : NULL;
        if (!q->action || !q->verb || (vm_name && !q->vm_name)) {
                auth_query_free(q);
                return -ENOMEM;
        }

        /* The uid is asked of the bus asynchronously too: the loop never waits. */
        r = sd_bus_call_method_async(s->bus, &q->slot, "org.freedesktop.DBus",
                                     "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                     "GetConnectionUnixUser", on_unix_user_reply, q, "s", sender);
        if (r < 0) {
                auth_query_free(q);
                return r;
        }

        q->service = s;
        q->next = s->auth_queries;
        if (q->next)
                q->next->prev = q;
        s->auth_queries = q;
        s->n_auth_queries++;
        return 1;
}
