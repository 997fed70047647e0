// SPDX-License-Identifier: GPL-2.0
/*
 * Wrappers for the static inline functions and macros that the virtio and
 * sync abstractions (abstractions/virtio/, abstractions/sync.rs) call.
 *
 * Every module built on those abstractions compiles this file into a C file
 * of its own, which includes it: virtio_scsi_rs's vscsi_helpers.c, the
 * virtio-rng sample's virtio_rng_helpers.c (Kbuild links an object into one
 * module only). Nothing here is module-specific and nothing is exported.
 *
 * No globals here, string literals included: KASAN describes a global by the
 * path of the file that defines it, and -ffile-prefix-map does not map that
 * of an included file, so the module would embed the builder's path a second
 * time (scripts/test-install.sh allows the one of the compiled file).
 */

#include <linux/completion.h>
#include <linux/interrupt.h>
#include <linux/rcupdate.h>
#include <linux/sched/mm.h>
#include <linux/spinlock.h>
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

void vscsi_virtio_cwrite32(struct virtio_device *vdev, unsigned int offset, u32 val)
{
	virtio_cwrite32(vdev, offset, val);
}

bool vscsi_virtio_has_feature(const struct virtio_device *vdev, unsigned int fbit)
{
	return virtio_has_feature(vdev, fbit);
}

/* Whether the transport can read (and, if @write, write) the config space. */
bool vscsi_virtio_has_config_ops(const struct virtio_device *vdev, bool write)
{
	return vdev->config->get && (!write || vdev->config->set);
}

/*
 * One affinity set spread over every managed vector, as the kernel's default
 * (default_calc_sets() in kernel/irq/affinity.c) does. Naming the callback
 * keeps irq_calc_affinity_vectors() from reading cpu_possible_mask under the
 * CPU hotplug lock. Queues re-created in a host reset must not wait for that
 * lock: a CPU going offline holds it while blk-mq waits for the CPU's
 * requests, which the error handler owns until its reset returns. Without
 * the lock, the vector count is not capped at the number of possible CPUs;
 * callers keep their request queues within nr_cpu_ids, as C's does.
 */
static void vscsi_one_affinity_set(struct irq_affinity *affd, unsigned int affvecs)
{
	affd->nr_sets = 1;
	affd->set_size[0] = affvecs;
}

int vscsi_virtio_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
			  struct virtqueue *vqs[], struct virtqueue_info vqs_info[],
			  struct irq_affinity *desc)
{
	/* A second set would leak the first (re-creation after a reset). */
	if (!list_empty(&vdev->vqs))
		return -EBUSY;
	if (desc && !desc->calc_sets)
		desc->calc_sets = vscsi_one_affinity_set;
	return virtio_find_vqs(vdev, nvqs, vqs, vqs_info, desc);
}

void vscsi_virtio_del_vqs(struct virtio_device *vdev)
{
	vdev->config->del_vqs(vdev);
}

void vscsi_virtio_device_ready(struct virtio_device *vdev)
{
	virtio_device_ready(vdev);
}

void vscsi_virtio_synchronize_cbs(struct virtio_device *vdev)
{
	virtio_synchronize_cbs(vdev);
}

unsigned int vscsi_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void vscsi_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

bool vscsi_virtio_needs_reset(struct virtio_device *vdev)
{
	return vdev->config->get_status(vdev) & VIRTIO_CONFIG_S_NEEDS_RESET;
}

unsigned long vscsi_spin_lock_irqsave(struct spinlock *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

void vscsi_spin_unlock_irqrestore(struct spinlock *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}

void vscsi_rcu_read_lock(void)
{
	rcu_read_lock();
}

void vscsi_rcu_read_unlock(void)
{
	rcu_read_unlock();
}

void vscsi_init_completion(struct completion *x)
{
	init_completion(x);
}
