// SPDX-License-Identifier: GPL-2.0
/*
 * Wrappers for static inline functions and macros used by virtio_scsi_rs.
 *
 * Rust cannot call a static inline function or expand a C macro, so each is
 * wrapped here in an out-of-line function. They are linked into the same
 * module and need no EXPORT_SYMBOL.
 */

#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include <vscsi_helpers.h>

int vscsi_register_virtio_driver(struct virtio_driver *drv, struct module *owner)
{
	return __register_virtio_driver(drv, owner);
}

u16 vscsi_virtio_cread16(struct virtio_device *vdev, unsigned int offset)
{
	return virtio_cread16(vdev, offset);
}

u32 vscsi_virtio_cread32(struct virtio_device *vdev, unsigned int offset)
{
	return virtio_cread32(vdev, offset);
}

bool vscsi_virtio_has_feature(const struct virtio_device *vdev, unsigned int fbit)
{
	return virtio_has_feature(vdev, fbit);
}

bool vscsi_virtio_has_config_access(const struct virtio_device *vdev)
{
	return vdev->config->get != NULL;
}

