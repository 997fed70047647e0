/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C wrappers for the static inline functions and macros that the Rust side of
 * virtio_scsi_rs needs. Each is a one-line forward to the kernel API of the
 * same name without the `vscsi_` prefix.
 */
#ifndef VSCSI_HELPERS_H
#define VSCSI_HELPERS_H

#include <linux/types.h>

struct virtio_device;
struct virtio_driver;
struct module;

int vscsi_register_virtio_driver(struct virtio_driver *drv, struct module *owner);

u16 vscsi_virtio_cread16(struct virtio_device *vdev, unsigned int offset);
u32 vscsi_virtio_cread32(struct virtio_device *vdev, unsigned int offset);
bool vscsi_virtio_has_feature(const struct virtio_device *vdev, unsigned int fbit);
bool vscsi_virtio_has_config_access(const struct virtio_device *vdev);

#endif /* VSCSI_HELPERS_H */
