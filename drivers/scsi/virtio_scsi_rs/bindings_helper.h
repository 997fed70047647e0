/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Headers whose declarations the abstractions need and `kernel::bindings`
 * lacks. bindgen reads this file; bindgen_parameters selects the items. The
 * virtio-rng sample (samples/virtio_rng_rs) uses the same bindings.
 */
#include <linux/blk-mq-virtio.h>
#include <linux/debugfs.h>
#include <linux/hw_random.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_ring.h>
#include <scsi/scsi_cmnd.h>
#include <scsi/scsi_device.h>
#include <scsi/scsi_devinfo.h>
#include <scsi/scsi_host.h>

#include <vscsi_helpers.h>
