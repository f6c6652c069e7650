/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <string.h>

#include <systemd/sd-bus.h>

#include "daemon/manager.h"
#include "macro.h"

/* The Manager on the bus: the objects, interfaces and signals of SPEC §2 (docs/dbus-api.md).
 * Handlers are thin: read and validate the arguments, authorize (bus-polkit.h), make one
 * Manager call, map its errno to a named error, reply. */

typedef struct BusAuthQuery BusAuthQuery;

typedef struct BusService {
        sd_bus *bus;
        Manager *manager;
        sd_bus_slot *manager_slot;
        sd_bus_slot *vm_slot;
        sd_bus_slot *vm_enumerator_slot;
        sd_bus_slot *object_manager_slot;
        sd_bus_slot *job_slot;
        sd_bus_slot *job_enumerator_slot;
        struct BusJob **bus_jobs; /* waiters and rate limits of job objects */
        size_t n_bus_jobs;
        BusAuthQuery *auth_queries; /* authorizations in flight */
        size_t n_auth_queries;
        bool observing;
} BusService;

/* Registers the objects on 'bus' (which the caller attaches to its event loop and on which
 * it requests VMMD_BUS_NAME) and follows the Manager's changes to emit signals. */
int bus_service_new(sd_bus *bus, Manager *manager, BusService **ret);
BusService *bus_service_free(BusService *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(BusService *, bus_service_free);

/* Method calls waiting for an authorization: the daemon is not idle while there are any. */
size_t bus_service_pending_calls(const BusService *s);

/* The BusService of the vtable whose handler is running (for handlers whose userdata is
 * the object found under a fallback path). */
BusService *bus_service_current(sd_bus_message *m);

/* Shared by the vtables. */
extern const sd_bus_vtable bus_manager_vtable[];
extern const sd_bus_vtable bus_vm_vtable[];
int bus_vm_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                void **ret_found, sd_bus_error *error);
int bus_vm_enumerate(sd_bus *bus, const char *path, void *userdata, char ***ret_nodes,
                     sd_bus_error *error);
/* The object path of a VM name: VMMD_VM_PATH_PREFIX "/" + sd_bus_path_encode(). */
int bus_vm_path(const char *name, char **ret);
extern const ManagerObserver bus_vm_observer;

extern const sd_bus_vtable bus_job_vtable[];
extern const ManagerObserver bus_job_observer;
int bus_job_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **ret_found,
                 sd_bus_error *error);
int bus_job_enumerate(sd_bus *bus, const char *path, void *userdata, char ***ret_nodes, sd_bus_error *error);
int bus_job_path(uint32_t id, char **ret);
int bus_caller_uid(sd_bus_message *m, uid_t *ret);
void bus_jobs_free(BusService *s);
/* The a{sv} of libvirt's job statistics keys, and libvirt's job type, for a job. */
int bus_append_libvirt_stats(sd_bus_message *m, ManagedJob *j);
int bus_job_libvirt_type(ManagedJob *j);

static inline const char *startswith_prefix(const char *s, const char *prefix) {
        size_t n = strlen(prefix);
        return strncmp(s, prefix, n) == 0 ? s + n : NULL;
}
