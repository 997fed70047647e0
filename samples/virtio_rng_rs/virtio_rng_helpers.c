// SPDX-License-Identifier: GPL-2.0
/*
 * The C helpers of the virtio and sync abstractions, in an object of this
 * module: Kbuild links an object into one module only, so the sample compiles
 * the driver's file once more (as the driver's vscsi_helpers.c includes it).
 */

#include "../../drivers/scsi/virtio_scsi_rs/vscsi_base_helpers.c"
