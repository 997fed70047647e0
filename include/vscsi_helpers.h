/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C wrappers for the static inline functions and macros that the Rust side of
 * virtio_scsi_rs needs. Each forwards to the kernel API of the same name
 * without the `vscsi_` prefix (or, for the `_ops` ones, to the transport op).
 */
#ifndef VSCSI_HELPERS_H
#define VSCSI_HELPERS_H

#include <linux/types.h>

struct device;
struct irq_affinity;
struct module;
struct Scsi_Host;
struct completion;
struct scsi_device;
struct work_struct;
struct spinlock;
struct virtio_device;
struct virtio_driver;
struct virtqueue;
struct virtqueue_info;

/* linux/virtio.h, linux/virtio_config.h */
int vscsi_register_virtio_driver(struct virtio_driver *drv, struct module *owner);
u16 vscsi_virtio_cread16(struct virtio_device *vdev, unsigned int offset);
u32 vscsi_virtio_cread32(struct virtio_device *vdev, unsigned int offset);
void vscsi_virtio_cwrite32(struct virtio_device *vdev, unsigned int offset, u32 val);
bool vscsi_virtio_has_feature(const struct virtio_device *vdev, unsigned int fbit);
bool vscsi_virtio_has_config_ops(const struct virtio_device *vdev, bool write);
int vscsi_virtio_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
			  struct virtqueue *vqs[], struct virtqueue_info vqs_info[],
			  struct irq_affinity *desc);
void vscsi_virtio_del_vqs(struct virtio_device *vdev);
void vscsi_virtio_device_ready(struct virtio_device *vdev);
/* The device status has DEVICE_NEEDS_RESET (config->get_status()). */
bool vscsi_virtio_needs_reset(struct virtio_device *vdev);
/* Waits for running virtqueue and configuration callbacks to finish. */
void vscsi_virtio_synchronize_cbs(struct virtio_device *vdev);
/* virtio_device_freeze() then virtio_device_restore(), under the device lock. */
int vscsi_virtio_reset_restore(struct virtio_device *vdev);

/* linux/sched/mm.h */
unsigned int vscsi_memalloc_noio_save(void);
void vscsi_memalloc_noio_restore(unsigned int flags);

/* Module parameters (vscsi_helpers.c) */
unsigned int vscsi_param_poll_queues(void);
enum vscsi_timeout_policy {
	VSCSI_TIMEOUT_STALL = 0,
	VSCSI_TIMEOUT_WAIT = 1,
	VSCSI_TIMEOUT_ABORT = 2,
};
unsigned int vscsi_param_timeout_policy(void);
/* Seconds. */
unsigned int vscsi_param_stall_limit(void);
/* Seconds. */
unsigned int vscsi_param_tmf_timeout(void);

/* linux/spinlock.h */
unsigned long vscsi_spin_lock_irqsave(struct spinlock *lock);
void vscsi_spin_unlock_irqrestore(struct spinlock *lock, unsigned long flags);

/* linux/rcupdate.h */
void vscsi_rcu_read_lock(void);
void vscsi_rcu_read_unlock(void);

/* scsi/scsi_host.h, scsi/scsi_cmnd.h */
struct scsi_cmnd;
int vscsi_scsi_add_host(struct Scsi_Host *shost, struct device *dev);
u32 vscsi_scsi_prot_bytes(struct scsi_cmnd *sc);
/* Milliseconds since the command was first issued (jiffies_at_alloc). */
u32 vscsi_scmd_age_ms(struct scsi_cmnd *sc);
/* scsi_execute_cmd() for a data-in command, default arguments. */
int vscsi_scsi_execute_in(struct scsi_device *sdev, const u8 *cdb,
			  unsigned int cdb_len, void *buf, unsigned int len,
			  int timeout, int retries);

/* linux/completion.h, linux/workqueue.h */
void vscsi_init_completion(struct completion *x);
void vscsi_init_work(struct work_struct *work, void (*func)(struct work_struct *));
bool vscsi_queue_work_freezable(struct work_struct *work);
void vscsi_might_sleep(void);

#endif /* VSCSI_HELPERS_H */
