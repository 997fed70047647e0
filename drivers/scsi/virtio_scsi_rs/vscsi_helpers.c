// SPDX-License-Identifier: GPL-2.0
/*
 * Wrappers for static inline functions and macros used by virtio_scsi_rs: the
 * driver's module parameters and the SCSI abstraction's helpers. Those of the
 * virtio and sync abstractions are in vscsi_base_helpers.c.
 *
 * Rust cannot call a static inline function or expand a C macro, so each is
 * wrapped here in an out-of-line function. They are linked into the same
 * module and need no EXPORT_SYMBOL.
 */

#include <linux/blk-integrity.h>
#include <linux/device.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/pci.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/virtio_config.h>
#include <linux/workqueue.h>
#include <scsi/scsi_cmnd.h>
#include <scsi/scsi_device.h>
#include <scsi/scsi_host.h>

#include <vscsi_helpers.h>

/* The virtio and sync abstractions' helpers, which the virtio-rng sample shares. */
#include "vscsi_base_helpers.c"

/*
 * The virtio abstraction's Device::reset_and_restore(), which only this
 * driver's host reset uses, is here rather than in vscsi_base_helpers.c: its
 * message is a global, and a global of an included file would embed the
 * builder's path (see there).
 */

/*
 * The PCI transport's part of a restore (virtio_pci_restore() calls
 * pci_set_master() before virtio_device_restore()), which a reset outside
 * system sleep would otherwise skip: a device whose bus mastering was turned
 * off serves none of its queues (QEMU disables it), and a virtio reset does
 * not turn it back on. Said once per reset, as it should never happen.
 */
static void vscsi_virtio_restore_transport(struct virtio_device *vdev)
{
	struct pci_dev *pdev;
	u16 cmd;

	if (!vdev->dev.parent || !dev_is_pci(vdev->dev.parent))
		return;
	pdev = to_pci_dev(vdev->dev.parent);
	if (pci_read_config_word(pdev, PCI_COMMAND, &cmd) || (cmd & PCI_COMMAND_MASTER))
		return;
	dev_warn(&vdev->dev, "bus mastering was off: turning it on again\n");
	pci_set_master(pdev);
}

/*
 * Resets the device and initialises it again through the bound driver's
 * freeze and restore callbacks (what suspend and resume do). The device lock
 * keeps remove, bind and system sleep callbacks out meanwhile; it is only
 * tried, since its holder may be waiting for the caller (remove waits for
 * the SCSI error handler). -EAGAIN tells the caller to fall back to
 * something else: the lock is taken, the device is between system sleep
 * callbacks (is_prepared: the PM core does not hold the lock between its
 * freeze and restore), or the kernel has no CONFIG_PM_SLEEP. The caller may
 * be the SCSI error handler of disks that memory reclaim writes to:
 * allocations in here do no I/O.
 */
int vscsi_virtio_reset_restore(struct virtio_device *vdev)
{
#ifdef CONFIG_PM_SLEEP
	unsigned int noio;
	int ret;

	if (!device_trylock(&vdev->dev))
		return -EAGAIN;
	noio = memalloc_noio_save();
	if (!vdev->dev.driver)
		ret = -ENODEV;
	else if (vdev->dev.power.is_prepared)
		ret = -EAGAIN;
	else
		ret = virtio_device_freeze(vdev);
	if (!ret) {
		vscsi_virtio_restore_transport(vdev);
		ret = virtio_device_restore(vdev);
	}
	memalloc_noio_restore(noio);
	device_unlock(&vdev->dev);
	return ret;
#else
	return -EAGAIN;
#endif
}

/* The module! macro of 6.12 has no version key; VSCSI_VERSION comes from Kbuild. */
MODULE_VERSION(VSCSI_VERSION);

/*
 * Module parameters need C in 6.12. Same name, meaning and mode as the C
 * driver's: the value is read when a device is probed.
 */
static unsigned int virtscsi_poll_queues;
module_param(virtscsi_poll_queues, uint, 0644);
MODULE_PARM_DESC(virtscsi_poll_queues,
		 "Request queues dedicated to polled I/O, read at probe (default 0; at most one less than the request queues)");

unsigned int vscsi_param_poll_queues(void)
{
	return READ_ONCE(virtscsi_poll_queues);
}

/*
 * What a command timeout leads to (Rust's own; C always waits). Read at every
 * timeout, so it can be changed at run time.
 */
static const char *const timeout_policies[] = {
	[VSCSI_TIMEOUT_STALL] = "stall",
	[VSCSI_TIMEOUT_WAIT] = "wait",
	[VSCSI_TIMEOUT_ABORT] = "abort",
};
static unsigned int timeout_policy = VSCSI_TIMEOUT_STALL;

static int timeout_policy_set(const char *val, const struct kernel_param *kp)
{
	int i = sysfs_match_string(timeout_policies, val);

	if (i < 0) {
		pr_err("virtio_scsi_rs: timeout_policy: '%s' is not one of stall, wait, abort\n",
		       val);
		return -EINVAL;
	}
	WRITE_ONCE(timeout_policy, i);
	return 0;
}

static int timeout_policy_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%s\n", timeout_policies[READ_ONCE(timeout_policy)]);
}

static const struct kernel_param_ops timeout_policy_ops = {
	.set = timeout_policy_set,
	.get = timeout_policy_get,
};
module_param_cb(timeout_policy, &timeout_policy_ops, NULL, 0644);
MODULE_PARM_DESC(timeout_policy,
		 "What a command timeout leads to: stall (default: wait as the C driver does while the command is younger than stall_limit, then error handling), wait (always wait, as the C driver), abort (error handling at the first timeout)");

/* A uint parameter of seconds, from 1 to max: a bad value is refused, with a message. */
static int seconds_param_set(const char *val, const struct kernel_param *kp, unsigned int max)
{
	int ret = param_set_uint_minmax(val, kp, 1, max);

	if (ret)
		pr_err("virtio_scsi_rs: %s: '%s' is not a number of seconds from 1 to %u\n",
		       kp->name, val, max);
	return ret;
}

static unsigned int stall_limit = 180;

static int stall_limit_set(const char *val, const struct kernel_param *kp)
{
	return seconds_param_set(val, kp, 86400);
}

static const struct kernel_param_ops stall_limit_ops = {
	.set = stall_limit_set,
	.get = param_get_uint,
};
module_param_cb(stall_limit, &stall_limit_ops, &stall_limit, 0644);
MODULE_PARM_DESC(stall_limit,
		 "With timeout_policy=stall: seconds a command may be outstanding before error handling starts (default 180, 1 to 86400)");

/*
 * How long a task management function may take before the error handler
 * escalates (Rust's own; C waits forever). Read at every TMF.
 */
static unsigned int tmf_timeout = 30;

static int tmf_timeout_set(const char *val, const struct kernel_param *kp)
{
	return seconds_param_set(val, kp, 3600);
}

static const struct kernel_param_ops tmf_timeout_ops = {
	.set = tmf_timeout_set,
	.get = param_get_uint,
};
module_param_cb(tmf_timeout, &tmf_timeout_ops, &tmf_timeout, 0644);
MODULE_PARM_DESC(tmf_timeout,
		 "Seconds a task management function (abort, LUN, target reset) may go unanswered before error handling escalates (default 30, 1 to 3600)");

unsigned int vscsi_param_timeout_policy(void)
{
	return READ_ONCE(timeout_policy);
}

unsigned int vscsi_param_stall_limit(void)
{
	return READ_ONCE(stall_limit);
}

unsigned int vscsi_param_tmf_timeout(void)
{
	return READ_ONCE(tmf_timeout);
}

u32 vscsi_scmd_age_ms(struct scsi_cmnd *sc)
{
	return jiffies_to_msecs(jiffies - READ_ONCE(sc->jiffies_at_alloc));
}

int vscsi_scsi_add_host(struct Scsi_Host *shost, struct device *dev)
{
	return scsi_add_host(shost, dev);
}

/*
 * scsi_execute_cmd() copies COMMAND_SIZE(cdb[0]) bytes of the CDB, however
 * long the caller's is: a shorter one is refused, not read past its end.
 */
int vscsi_scsi_execute_in(struct scsi_device *sdev, const u8 *cdb,
			  unsigned int cdb_len, void *buf, unsigned int len,
			  int timeout, int retries)
{
	if (!cdb_len || cdb_len < COMMAND_SIZE(cdb[0]))
		return -EINVAL;
	return scsi_execute_cmd(sdev, cdb, REQ_OP_DRV_IN, buf, len, timeout,
				retries, NULL);
}

void vscsi_init_work(struct work_struct *work, work_func_t func)
{
	INIT_WORK(work, func);
}

bool vscsi_queue_work_freezable(struct work_struct *work)
{
	return queue_work(system_freezable_wq, work);
}

void vscsi_might_sleep(void)
{
	might_sleep();
}

/*
 * Bytes of protection information that travel with the command's data, as
 * the C driver computes them for pi_bytesout/pi_bytesin.
 */
u32 vscsi_scsi_prot_bytes(struct scsi_cmnd *sc)
{
#ifdef CONFIG_BLK_DEV_INTEGRITY
	struct request *rq = scsi_cmd_to_rq(sc);

	if (!scsi_prot_sg_count(sc))
		return 0;
	return bio_integrity_bytes(blk_get_integrity(rq->q->disk), blk_rq_sectors(rq));
#else
	return 0;
#endif
}
