/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "bus-errors.h"
#include "bus-polkit.h"
#include "bus-service.h"

int bus_service_new(sd_bus *bus, Manager *manager, BusService **ret) {
        _cleanup_(bus_service_freep) BusService *s = NULL;
        int r;

        if (!bus || !manager || !ret)
                return -EINVAL;

        r = bus_errors_register();
        if (r < 0)
                return r;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->bus = sd_bus_ref(bus);
        s->manager = manager;

        r = sd_bus_add_object_vtable(bus, &s->manager_slot, VMMD_MANAGER_PATH,
                                     VMMD_MANAGER_INTERFACE, bus_manager_vtable, s);
        if (r < 0)
                return r;
        r = sd_bus_add_fallback_vtable(bus, &s->vm_slot, VMMD_VM_PATH_PREFIX, VMMD_VM_INTERFACE,
                                       bus_vm_vtable, bus_vm_find, s);
        if (r < 0)
                return r;
        r = sd_bus_add_node_enumerator(bus, &s->vm_enumerator_slot, VMMD_VM_PATH_PREFIX,
                                       bus_vm_enumerate, s);
        if (r < 0)
                return r;
        r = sd_bus_add_fallback_vtable(bus, &s->job_slot, VMMD_JOB_PATH_PREFIX, VMMD_JOB_INTERFACE,
                                       bus_job_vtable, bus_job_find, s);
        if (r < 0)
                return r;
        r = sd_bus_add_node_enumerator(bus, &s->job_enumerator_slot, VMMD_JOB_PATH_PREFIX,
                                       bus_job_enumerate, s);
        if (r < 0)
                return r;
        r = sd_bus_add_object_manager(bus, &s->object_manager_slot, VMMD_MANAGER_PATH);
        if (r < 0)
                return r;

        r = manager_add_observer(manager, &bus_vm_observer, s);
        if (r < 0)
                return r;
        r = manager_add_observer(manager, &bus_job_observer, s);
        if (r < 0) {
                manager_remove_observer(manager, &bus_vm_observer, s);
                return r;
        }
        s->observing = true;

        *ret = TAKE_PTR(s);
        return 0;
}

BusService *bus_service_free(BusService *s) {
        if (!s)
                return NULL;
        if (s->observing) {
                manager_remove_observer(s->manager, &bus_vm_observer, s);
                manager_remove_observer(s->manager, &bus_job_observer, s);
        }
        bus_auth_queries_free(s);
        bus_jobs_free(s);
        sd_bus_slot_unref(s->job_enumerator_slot);
        sd_bus_slot_unref(s->job_slot);
        sd_bus_slot_unref(s->object_manager_slot);
        sd_bus_slot_unref(s->vm_enumerator_slot);
        sd_bus_slot_unref(s->vm_slot);
        sd_bus_slot_unref(s->manager_slot);
        sd_bus_unref(s->bus);
        free(s);
        return NULL;
}

size_t bus_service_pending_calls(const BusService *s) {
        return s->n_auth_queries;
}

BusService *bus_service_current(sd_bus_message *m) {
        /* The slot of the running vtable carries the userdata it was registered with. */
        return sd_bus_slot_get_userdata(sd_bus_get_current_slot(sd_bus_message_get_bus(m)));
}
