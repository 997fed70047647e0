// SPDX-License-Identifier: GPL-2.0
/*
 * Guest instructions per code address, for QEMU's TCG plugin interface
 * (API version 1: the QEMU 7.2 that scripts/install-deps.sh installs; later
 * QEMUs replaced the inline counters used here with per-vCPU ones).
 *
 * Every translated block gets an inline counter of its executions. When the
 * file named by the "req=" argument appears, a thread writes one line per
 * block executed since the last snapshot ("<count> <address of each of its
 * instructions>", hexadecimal) to "<req>.out", zeroes the counters and
 * removes the request file: the host takes a snapshot around a workload by
 * creating the request and waiting for it to go. A block left early (an
 * exception, an interrupt) counts whole, which the numbers tolerate.
 *
 * Declarations of the few functions used follow QEMU's documented
 * interface (include/qemu/qemu-plugin.h), so that no QEMU headers are
 * needed to build it.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
					      void *ptr, uint64_t imm);

EXPORT int qemu_plugin_version = 1;

/* One translation of one block; a block translated again gets another. */
struct block {
	uint64_t count;
	size_t n;
	uint64_t addr[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct block **blocks;
static size_t nr_blocks, cap_blocks;
static char *req, *out;

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);
	struct block *b = calloc(1, sizeof(*b) + n * sizeof(b->addr[0]));

	(void)id;
	if (!b)
		return;
	b->n = n;
	for (size_t i = 0; i < n; i++)
		b->addr[i] = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i));
	pthread_mutex_lock(&lock);
	if (nr_blocks == cap_blocks) {
		size_t cap = cap_blocks ? 2 * cap_blocks : 65536;
		struct block **p = realloc(blocks, cap * sizeof(*p));

		if (!p) {
			pthread_mutex_unlock(&lock);
			free(b);
			return;
		}
		blocks = p;
		cap_blocks = cap;
	}
	blocks[nr_blocks++] = b;
	pthread_mutex_unlock(&lock);
	qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
}

static void snapshot(void)
{
	FILE *f = fopen(out, "w");

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nr_blocks; i++) {
		/* The vCPU adds without atomics: a count racing with this is lost. */
		uint64_t c = __atomic_exchange_n(&blocks[i]->count, 0, __ATOMIC_RELAXED);

		if (!c || !f)
			continue;
		fprintf(f, "%llu", (unsigned long long)c);
		for (size_t j = 0; j < blocks[i]->n; j++)
			fprintf(f, " %llx", (unsigned long long)blocks[i]->addr[j]);
		fputc('\n', f);
	}
	pthread_mutex_unlock(&lock);
	if (f)
		fclose(f);
}

static void *watch(void *arg)
{
	(void)arg;
	for (;;) {
		usleep(20000);
		if (access(req, F_OK))
			continue;
		snapshot();
		unlink(req);
	}
	return NULL;
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	pthread_t t;

	(void)info;
	for (int i = 0; i < argc; i++)
		if (!strncmp(argv[i], "req=", 4))
			req = strdup(argv[i] + 4);
	if (!req || !(out = malloc(strlen(req) + 5))) {
		fprintf(stderr, "insn_count: usage: -plugin insn_count.so,req=FILE\n");
		return -1;
	}
	sprintf(out, "%s.out", req);
	qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
	if (pthread_create(&t, NULL, watch, NULL))
		return -1;
	pthread_detach(t);
	return 0;
}
