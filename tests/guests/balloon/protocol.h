/*
 * What the balloon guest driver (driver.c) and the host programs that run
 * it (tests/test_balloon.c, bench/balloon_reclaim.c) agree on: where the
 * parameters and results live in guest memory, the ports, the phases.
 */
#ifndef LIBVMM_BALLOON_GUEST_PROTOCOL_H
#define LIBVMM_BALLOON_GUEST_PROTOCOL_H

#include <stdint.h>

/* Guest-physical layout. */
#define BG_PARAMS 0x1000ull   /* struct bg_params, written by the host */
#define BG_RESULT 0x1800ull   /* struct bg_result, written by the guest */
#define BG_LOAD 0x10000ull    /* the driver image */
#define BG_STACK 0x80000ull   /* initial stack pointer */
#define BG_TABLES 0x100000ull /* mode tables (GDT, TSS, page tables) */
#define BG_QUEUES 0x200000ull /* 16 KiB per virtqueue */
#define BG_STATS_BUF 0x280000ull
#define BG_PFN_AREA 0x300000ull /* frame number arrays, 1 MiB */
#define BG_PFN_AREA_SIZE 0x100000ull
#define BG_POOL_MIN 0x400000ull /* pools start here at the earliest */

/* Ports: 0xe9 text out, 0xeb sync (phase in eax), 0xec failure code. */
#define BG_PORT_OUT 0xe9
#define BG_PORT_SYNC 0xeb
#define BG_PORT_FAIL 0xec

#define BG_MAGIC 0x504e4c42u /* "BLNP" */

/* Driver flags. */
#define BG_F_NO_TOUCH 1u     /* the host populates memory itself (benchmark) */
#define BG_F_SCATTER 2u      /* inflate even pages first, then odd ones */
#define BG_F_INFLATE_ONLY 4u /* stop after the inflate phase */

/* Sync phases, in order. */
#define BG_SYNC_READY 1u    /* driver up, pools touched */
#define BG_SYNC_INFLATED 2u /* balloon at the target */
#define BG_SYNC_DEFLATED 3u /* balloon back at the (lower) target */
#define BG_SYNC_REPORTED 4u /* free pages reported */
#define BG_SYNC_DONE 0xffu

/* Virtio balloon feature bits (and VERSION_1) as the driver sees them. */
#define BG_FEAT_STATS (1ull << 1)
#define BG_FEAT_DEFLATE_ON_OOM (1ull << 2)
#define BG_FEAT_REPORTING (1ull << 5)
#define BG_FEAT_VERSION_1 (1ull << 32)

struct bg_params {
  uint32_t magic;
  uint32_t version; /* virtio-mmio version the driver expects */
  uint64_t mmio_base;
  uint64_t accept;              /* feature bits the driver accepts if offered */
  uint64_t pool_gpa, pool_size; /* touched, inflated, deflated */
  uint64_t report_gpa, report_size; /* touched, then reported free */
  uint64_t ram_size;                /* reported as total memory */
  uint32_t pfns_per_desc;           /* frame numbers per descriptor */
  uint32_t flags;                   /* BG_F_* */
};

struct bg_result {
  uint32_t phase;
  uint32_t fail_line;
  uint64_t fail_detail;
  uint64_t features;         /* negotiated */
  int32_t q_stats, q_report; /* queue indices, -1 when absent */
  uint32_t queue_size;
  uint32_t notifies;
  uint64_t inflated_pages, deflated_pages, reported_pages;
  uint64_t stats_sent;
  uint64_t zero_pages_seen; /* deflated/reported pages that read as zero */
};

#endif
