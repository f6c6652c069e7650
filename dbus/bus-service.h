/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>

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
