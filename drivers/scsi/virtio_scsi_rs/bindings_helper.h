/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Headers whose declarations virtio_scsi_rs needs and `kernel::bindings`
 * lacks. bindgen reads this file; bindgen_parameters selects the items.
 */
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include <vscsi_helpers.h>
