/*
 * A freestanding virtio-balloon driver over virtio-mmio, the guest half of
 * tests/test_balloon.c and bench/balloon_reclaim.c. It runs in 64-bit user
 * mode (CPL 3) on identity-mapped memory, which KVM runs natively here; MMIO
 * and port I/O still reach the host. It follows the Linux driver's protocol:
 * feature negotiation, queues numbered compactly after the ones it uses, a
 * statistics buffer posted at start and refilled when the device returns
 * it, frame-number arrays for inflate and deflate, free memory handed over
 * as device-writable buffers on the reporting queue.
 *
 * The host passes struct bg_params at BG_PARAMS and sees progress through
 * sync writes to port 0xeb (see protocol.h); failures go to port 0xec with
 * the source line, plus a message on port 0xe9.
 *
 * Build: gcc -ffreestanding -nostdlib -static -fno-pic, linked at BG_LOAD
 * by link.ld, flattened with objcopy -O binary.
 */
#include "protocol.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define PAGE 4096ull
#define QN_MAX 256u

/* Register offsets and status bits (virtio 1.x 4.2.2). */
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEV_FEAT 0x010
#define R_DEV_FEAT_SEL 0x014
#define R_DRV_FEAT 0x020
#define R_DRV_FEAT_SEL 0x024
#define R_PAGE_SIZE 0x028
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_ALIGN 0x03c
#define R_QUEUE_PFN 0x040
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_ISR 0x060
#define R_ISR_ACK 0x064
#define R_STATUS 0x070
#define R_DESC_LO 0x080
#define R_DESC_HI 0x084
#define R_AVAIL_LO 0x090
#define R_AVAIL_HI 0x094
#define R_USED_LO 0x0a0
#define R_USED_HI 0x0a4
#define R_CFG 0x100
#define CFG_NUM_PAGES 0
#define CFG_ACTUAL 4

#define S_ACK 1u
#define S_DRIVER 2u
#define S_DRIVER_OK 4u
#define S_FEATURES_OK 8u
#define S_NEEDS_RESET 64u

#define D_NEXT 1u
#define D_WRITE 2u

/* The compiler may emit calls to these even in freestanding code. */
void *memset(void *d, int c, unsigned long n) {
  u8 *p = d;
  while (n--)
    *p++ = (u8)c;
  return d;
}

void *memcpy(void *d, const void *s, unsigned long n) {
  u8 *p = d;
  const u8 *q = s;
  while (n--)
    *p++ = *q++;
  return d;
}

static struct bg_params *const P = (struct bg_params *)BG_PARAMS;
static struct bg_result *const R = (struct bg_result *)BG_RESULT;

static inline void outb(u16 port, u8 v) {
  __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(u16 port, u32 v) {
  __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static void puts_(const char *s) {
  while (*s)
    outb(BG_PORT_OUT, (u8)*s++);
}

static void put_hex(u64 v) {
  char buf[19] = "0x";
  for (int i = 0; i < 16; i++)
    buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 15];
  buf[18] = 0;
  puts_(buf);
}

static void sync_host(u32 phase) {
  R->phase = phase;
  outl(BG_PORT_SYNC, phase);
}

/* The host stops us here; spin if it resumes anyway. */
static void __attribute__((noreturn))
fail(u32 line, u64 detail, const char *what) {
  R->fail_line = line;
  R->fail_detail = detail;
  puts_("balloon driver: ");
  puts_(what);
  puts_(" ");
  put_hex(detail);
  puts_("\n");
  for (;;)
    outl(BG_PORT_FAIL, line);
}

#define CHECK(cond, detail)                                                    \
  do {                                                                         \
    if (!(cond))                                                               \
      fail(__LINE__, (u64)(detail), #cond);                                    \
  } while (0)

static volatile u8 *mmio;

static u32 rd(u32 off) {
  return *(volatile u32 *)(mmio + off);
}
static void wr(u32 off, u32 v) {
  *(volatile u32 *)(mmio + off) = v;
}

static void barrier(void) {
  __asm__ volatile("mfence" ::: "memory");
}

/* ------------------------------------------------------------------------ */
/* Virtqueues (legacy layout, usable by both register layouts)              */

struct vq {
  u32 index;
  u32 num;
  volatile u8 *desc;
  volatile u16 *avail; /* flags, idx, ring[num], used_event */
  volatile u8 *used;   /* flags, idx, ring[num] of {u32 id, u32 len} */
  u16 avail_idx;
  u16 used_seen;
};

static struct vq queues[4];

static void vq_setup(struct vq *q, u32 index, u32 version) {
  u64 base = BG_QUEUES + (u64)index * 0x4000;
  wr(R_QUEUE_SEL, index);
  CHECK((version == 2 ? rd(R_QUEUE_READY) : rd(R_QUEUE_PFN)) == 0, index);
  u32 max = rd(R_QUEUE_NUM_MAX);
  CHECK(max >= 2, max);
  q->index = index;
  q->num = max < QN_MAX ? max : QN_MAX;
  q->desc = (volatile u8 *)base;
  q->avail = (volatile u16 *)(base + 16ull * q->num);
  u64 used =
      (base + 16ull * q->num + 2ull * (3 + q->num) + PAGE - 1) & ~(PAGE - 1);
  CHECK(used + 6 + 8ull * q->num <= base + 0x4000, used);
  q->used = (volatile u8 *)used;
  memset((void *)base, 0, 0x4000);
  q->avail_idx = 0;
  q->used_seen = 0;
  R->queue_size = q->num;
  wr(R_QUEUE_NUM, q->num);
  if (version == 2) {
    wr(R_DESC_LO, (u32)base);
    wr(R_DESC_HI, 0);
    wr(R_AVAIL_LO, (u32)(u64)q->avail);
    wr(R_AVAIL_HI, 0);
    wr(R_USED_LO, (u32)used);
    wr(R_USED_HI, 0);
    wr(R_QUEUE_READY, 1);
    CHECK(rd(R_QUEUE_READY) == 1, index);
  } else {
    wr(R_QUEUE_ALIGN, (u32)PAGE);
    wr(R_QUEUE_PFN, (u32)(base / PAGE));
  }
}

static void set_desc(struct vq *q, u32 i, u64 addr, u32 len, u16 flags,
                     u16 next) {
  volatile u8 *d = q->desc + 16ull * i;
  *(volatile u64 *)d = addr;
  *(volatile u32 *)(d + 8) = len;
  *(volatile u16 *)(d + 12) = flags;
  *(volatile u16 *)(d + 14) = next;
}

static void publish(struct vq *q, u16 head) {
  q->avail[2 + q->avail_idx % q->num] = head;
  barrier();
  q->avail_idx++;
  q->avail[1] = q->avail_idx;
  barrier();
}

static void kick(struct vq *q) {
  wr(R_QUEUE_NOTIFY, q->index);
  R->notifies++;
}

static u16 used_idx(struct vq *q) {
  barrier();
  return *(volatile u16 *)(q->used + 2);
}

/* The device works synchronously inside the notify exit; a short poll
   still tolerates one that does not. */
static void wait_all_used(struct vq *q) {
  for (u64 spin = 0; used_idx(q) != q->avail_idx; spin++)
    CHECK(spin < 100000000ull, used_idx(q));
  CHECK((rd(R_STATUS) & S_NEEDS_RESET) == 0, rd(R_STATUS));
  q->used_seen = q->avail_idx;
  u32 isr = rd(R_ISR);
  if (isr)
    wr(R_ISR_ACK, isr);
}

/* ------------------------------------------------------------------------ */
/* Balloon                                                                  */

static u32 cfg_read(u32 off) {
  return rd(R_CFG + off);
}
static void cfg_write(u32 off, u32 v) {
  wr(R_CFG + off, v);
}

static u64 features;
static int q_stats = -1, q_report = -1;
static u64 stats_seq;

static void put_stat(volatile u8 *p, u16 tag, u64 val) {
  *(volatile u16 *)p = tag;
  /* Packed 10-byte entries: the value is misaligned on purpose. */
  for (int i = 0; i < 8; i++)
    p[2 + i] = (u8)(val >> (8 * i));
}

/* Fill and post the statistics buffer (minor-faults carries a sequence
   number so the host can tell fresh statistics from old ones). */
static void post_stats(void) {
  struct vq *q = &queues[q_stats];
  volatile u8 *b = (volatile u8 *)BG_STATS_BUF;
  stats_seq++;
  u64 inballoon = (R->inflated_pages - R->deflated_pages) * PAGE;
  put_stat(b + 0, 3 /* minor faults */, stats_seq);
  put_stat(b + 10, 5 /* total memory */, P->ram_size);
  put_stat(b + 20, 4 /* free memory */, P->pool_size - inballoon);
  put_stat(b + 30, 0x7777 /* unknown tag: ignored */, 1);
  set_desc(q, 0, BG_STATS_BUF, 40, 0, 0);
  publish(q, 0);
  kick(q);
  R->stats_sent++;
}

/* If the device returned the statistics buffer, answer with a fresh one. */
static void service_stats(void) {
  if (q_stats < 0)
    return;
  struct vq *q = &queues[q_stats];
  if (used_idx(q) == q->used_seen)
    return;
  q->used_seen = used_idx(q);
  post_stats();
}

static u64 pool_pages(void) {
  return P->pool_size / PAGE;
}

/* The i-th frame the balloon takes: in order, or even pages then odd. */
static u32 pool_pfn(u64 i) {
  u64 n = pool_pages();
  u64 page = i;
  if (P->flags & BG_F_SCATTER)
    page = i < (n + 1) / 2 ? 2 * i : 2 * (i - (n + 1) / 2) + 1;
  return (u32)(P->pool_gpa / PAGE + page);
}

/*
 * Send frames [first, first + count) of the pool to queue q, as many
 * requests in flight per notification as the ring allows. Each request is
 * a chain of two descriptors when it has two or more frames, to exercise
 * the device's chain handling.
 */
static void send_pfns(struct vq *q, u64 first, u64 count) {
  u64 per = P->pfns_per_desc;
  u64 area_pfns = BG_PFN_AREA_SIZE / 4;
  u32 *area = (u32 *)BG_PFN_AREA;
  while (count > 0) {
    u32 slots = q->num / 2;
    u32 k = 0;
    u64 used_pfns = 0;
    while (count > 0 && k < slots && used_pfns + per <= area_pfns) {
      u64 n = count < per ? count : per;
      u32 *arr = area + used_pfns;
      for (u64 i = 0; i < n; i++)
        arr[i] = pool_pfn(first + i);
      u16 d0 = (u16)(2 * k);
      if (n >= 2) {
        u64 half = n / 2;
        set_desc(q, d0, (u64)arr, (u32)(half * 4), D_NEXT, (u16)(d0 + 1));
        set_desc(q, d0 + 1u, (u64)(arr + half), (u32)((n - half) * 4), 0, 0);
      } else {
        set_desc(q, d0, (u64)arr, 4, 0, 0);
      }
      publish(q, d0);
      used_pfns += n;
      first += n;
      count -= n;
      k++;
    }
    kick(q);
    wait_all_used(q);
  }
}

static u64 pattern(u64 gpa) {
  return gpa ^ 0x5a5aa5a5c3c33c3cull;
}

static void touch(u64 gpa, u64 size) {
  for (u64 a = gpa; a < gpa + size; a += PAGE) {
    *(volatile u64 *)a = pattern(a);
    *(volatile u64 *)(a + 2048) = pattern(a + 2048);
  }
}

/* Pages that were discarded read as zero; count them. */
static u64 count_zero(u64 gpa, u64 size) {
  u64 n = 0;
  for (u64 a = gpa; a < gpa + size; a += PAGE)
    if (*(volatile u64 *)a == 0 && *(volatile u64 *)(a + 2048) == 0)
      n++;
  return n;
}

static void report_free(void) {
  struct vq *q = &queues[q_report];
  /* Like Linux: one chain of up to 32 device-writable ranges. */
  u64 chunk = P->report_size / 8;
  CHECK(chunk >= PAGE && chunk % PAGE == 0, chunk);
  for (u32 i = 0; i < 8; i++)
    set_desc(q, i, P->report_gpa + i * chunk, (u32)chunk,
             (u16)(D_WRITE | (i < 7 ? D_NEXT : 0)), (u16)(i + 1));
  publish(q, 0);
  kick(q);
  wait_all_used(q);
  R->reported_pages += P->report_size / PAGE;
}

void main_(void) {
  CHECK(P->magic == BG_MAGIC, P->magic);
  mmio = (volatile u8 *)P->mmio_base;
  R->q_stats = R->q_report = -1;

  /* Discovery (4.2.3.1). */
  CHECK(rd(R_MAGIC) == 0x74726976, rd(R_MAGIC));
  u32 version = rd(R_VERSION);
  CHECK(version == P->version, version);
  CHECK(rd(R_DEVICE_ID) == 5, rd(R_DEVICE_ID));

  /* Initialization (3.1.1). */
  wr(R_STATUS, 0);
  CHECK(rd(R_STATUS) == 0, rd(R_STATUS));
  wr(R_STATUS, S_ACK);
  wr(R_STATUS, S_ACK | S_DRIVER);
  wr(R_DEV_FEAT_SEL, 1);
  u64 offered = (u64)rd(R_DEV_FEAT) << 32;
  wr(R_DEV_FEAT_SEL, 0);
  offered |= rd(R_DEV_FEAT);
  features = offered & P->accept;
  if (version == 2)
    CHECK(features & BG_FEAT_VERSION_1, offered);
  wr(R_DRV_FEAT_SEL, 1);
  wr(R_DRV_FEAT, (u32)(features >> 32));
  wr(R_DRV_FEAT_SEL, 0);
  wr(R_DRV_FEAT, (u32)features);
  if (version == 2) {
    wr(R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    CHECK(rd(R_STATUS) & S_FEATURES_OK, rd(R_STATUS));
  } else {
    wr(R_PAGE_SIZE, (u32)PAGE);
  }
  R->features = features;

  /* Queues, numbered compactly over the ones we use, as Linux does. */
  u32 next = 2;
  if (features & BG_FEAT_STATS)
    q_stats = (int)next++;
  if (features & BG_FEAT_REPORTING)
    q_report = (int)next++;
  R->q_stats = q_stats;
  R->q_report = q_report;
  for (u32 i = 0; i < next; i++)
    vq_setup(&queues[i], i, version);
  wr(R_QUEUE_SEL, next);
  CHECK(rd(R_QUEUE_NUM_MAX) == 0, next);

  /* Linux posts the first statistics before DRIVER_OK. */
  if (q_stats >= 0)
    post_stats();
  wr(R_STATUS, rd(R_STATUS) | S_DRIVER_OK);
  CHECK((rd(R_STATUS) & (S_DRIVER_OK | S_NEEDS_RESET)) == S_DRIVER_OK,
        rd(R_STATUS));

  if (!(P->flags & BG_F_NO_TOUCH)) {
    touch(P->pool_gpa, P->pool_size);
    if (P->report_size)
      touch(P->report_gpa, P->report_size);
  }
  sync_host(BG_SYNC_READY);

  /* The host set a target: a configuration change, then num_pages. */
  u32 isr = rd(R_ISR);
  CHECK(isr & 2, isr);
  wr(R_ISR_ACK, isr);
  u64 target = cfg_read(CFG_NUM_PAGES);
  CHECK(target > 0 && target <= pool_pages(), target);
  send_pfns(&queues[0], 0, target);
  R->inflated_pages = target;
  cfg_write(CFG_ACTUAL, (u32)target);
  sync_host(BG_SYNC_INFLATED);
  if (P->flags & BG_F_INFLATE_ONLY) {
    sync_host(BG_SYNC_DONE);
    for (;;)
      ;
  }

  /* The host asked for statistics and lowered the target meanwhile. */
  service_stats();
  isr = rd(R_ISR);
  CHECK(isr & 2, isr);
  wr(R_ISR_ACK, isr);
  u64 lower = cfg_read(CFG_NUM_PAGES);
  CHECK(lower < target, lower);
  u64 give_back = target - lower;
  send_pfns(&queues[1], lower, give_back);
  R->deflated_pages = give_back;
  /* Pages the host took came back zero-filled; put our data back. */
  u64 first = P->pool_gpa + lower * PAGE;
  if (!(P->flags & BG_F_SCATTER)) {
    u64 zero = count_zero(first, give_back * PAGE);
    R->zero_pages_seen += zero;
    CHECK(zero == give_back, zero);
    touch(first, give_back * PAGE);
  }
  cfg_write(CFG_ACTUAL, (u32)lower);
  sync_host(BG_SYNC_DEFLATED);

  if (q_report >= 0 && P->report_size) {
    report_free();
    /* Reading a page maps it again: let the host measure first. */
    sync_host(BG_SYNC_REPORTED);
    u64 zero = count_zero(P->report_gpa, P->report_size);
    R->zero_pages_seen += zero;
    CHECK(zero == P->report_size / PAGE, zero);
  }
  service_stats();
  sync_host(BG_SYNC_DONE);
  for (;;)
    ;
}

/* Entry: the host set RSP; clear .bss (the image leaves it out), go. */
__asm__(".section .text.start, \"ax\"\n"
        ".global _start\n"
        "_start:\n"
        "  lea __bss_start(%rip), %rdi\n"
        "  lea __bss_end(%rip), %rcx\n"
        "  sub %rdi, %rcx\n"
        "  xor %eax, %eax\n"
        "  rep stosb\n"
        "  call main_\n"
        "1: jmp 1b\n"
        ".previous\n");
