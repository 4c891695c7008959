/*
 * The binary-translation engine: internal definitions shared by its files.
 * Design: docs/bt.md.
 */
#ifndef LIBVMM_BT_H
#define LIBVMM_BT_H

#include <stddef.h>
#include <stdint.h>

#include <Zydis/Zydis.h>

#include "../../internal.h"
#include "../x86.h"
#include "layout.h"

#if defined(__SANITIZE_ADDRESS__) /* gcc */
#define BT_ASAN 1
#elif defined(__has_feature) /* clang */
#if __has_feature(address_sanitizer)
#define BT_ASAN 1
#endif
#endif

#define BT_JC_TRACK 64
#define BT_DCACHE_SIZE 64 /* 2-way: 32 sets */
#define BT_XC_SIZE 64

/* A decoded instruction, cached by bt_decode(). */
struct bt_dcache {
  bool valid;
  uint8_t len;
  uint64_t gen; /* which fill this is: unique per vCPU (bt_decode_desc) */
  uint8_t bytes[15];
  ZydisMachineMode zmode;
  ZydisStackWidth zstack;
  ZydisDecodedInstruction di;
  ZydisDecodedOperand op[ZYDIS_MAX_OPERAND_COUNT];
};

/* Hardware register numbers (ModRM order), the index into ctx->gpr[]. */
enum {
  R_AX,
  R_CX,
  R_DX,
  R_BX,
  R_SP,
  R_BP,
  R_SI,
  R_DI,
  R_8,
  R_9,
  R_10,
  R_11,
  R_12,
  R_13,
  R_14,
  R_15
};
/* Segment registers in hardware order. */
enum { S_ES, S_CS, S_SS, S_DS, S_FS, S_GS, S_NONE = 7 };

/* Host-held part of RFLAGS: what translated code may keep in host flags. */
#define BT_HOST_FLAGS                                                          \
  (X86_RFLAGS_CF | X86_RFLAGS_PF | X86_RFLAGS_AF | X86_RFLAGS_ZF |             \
   X86_RFLAGS_SF | X86_RFLAGS_OF | X86_RFLAGS_DF)

/*
 * The part of the vCPU that translated code reaches through GS. Field
 * offsets are fixed in layout.h.
 */
struct bt_ctx {
  uint64_t gpr[16];
  uint64_t flags; /* BT_HOST_FLAGS | 2 while translated code is out */
  uint64_t rip;
  /* hit_mask[a]: the bits of (last byte - tag) that must be zero for a
     soft-TLB hit, checking a low address bits too (alignment 1 << a). */
  uint64_t hit_mask[5];
  uint64_t jc_mask;
  uint64_t scratch[1];
  uint64_t caller_rsp;
  /* Translated code and the glue reach the context as [rsp + offset]
     (see glue.S): host_rsp (R), the top of the vCPU's stack at which
     translated code runs, is this context's address (vcpu_map). */
  uint64_t host_rsp;
  uint64_t cont;
  uint64_t ret;
  uint64_t gate;
  uint64_t exit_link;
  uint64_t exit_jc;
  uint64_t self;
  uint32_t arg;
  _Atomic uint32_t in_tc;
  int64_t budget; /* counting mode: -(instructions left), see tc.c */
  uint64_t exit_budget;
  uint32_t mxcsr_host;
  uint16_t fcw_host;
  uint16_t pad0;
  uint64_t jmp;
  uint64_t post;
  uint64_t tlb_mask;
  uint8_t pad1[BT_OFF_SEGBASE - BT_OFF_TLB_MASK - 8];
  uint64_t segbase[6];
  uint8_t pad2[BT_OFF_FPU_FULL - BT_OFF_SEGBASE - 48];
  uint8_t fpu_full;
  uint8_t mx_live; /* during a callout: MXCSR is the guest's (glue.S) */
  /* Set for good once the vCPU translated code naming an XMM register:
     until then the image alone holds them, and the glue neither loads nor
     saves them (translate.c, glue.S). */
  uint8_t xmm_on;
  uint8_t pad3[BT_OFF_MX_DIRTY - BT_OFF_XMM_ON - 1];
  /* Non-zero once translated code ran an SSE instruction since MXCSR was
     last loaded from the image (translate.c, glue.S MX_SETTLE). */
  uint32_t mx_dirty;
  uint8_t pad3b[BT_OFF_X87 - BT_OFF_MX_DIRTY - 4];
  uint64_t x87; /* a glue.S stub: bt_x87_dirty, _clean or _away */
  uint8_t pad4[BT_OFF_FPU - BT_OFF_X87 - 8];
  uint8_t fpu[512] __attribute__((aligned(64)));
  uint64_t spill[16];
  uint64_t tlb_r[2][BT_TLB_SIZE];
  uint64_t tlb_w[2][BT_TLB_SIZE];
  uint64_t tlb_add[2][BT_TLB_SIZE];
  uint64_t jc_npc[BT_JC_SIZE];
  uint64_t jc_host[BT_JC_SIZE];
  uint64_t jc_warm[BT_JC_SIZE]; /* the same fragments' warm entries */
  struct bt_slot {
    uint64_t tag, add; /* as a TLB entry's; see BT_SLOT_EMPTY */
    uint64_t host;     /* the host address of the page */
  } slot[2][2][BT_SLOT_CLASSES][BT_SLOTS];
  uint64_t slot_pos; /* BT_SLOT_LIST - 1 */
  uint8_t pad5[BT_OFF_SLOT_CNT - BT_OFF_SLOT_POS - 8];
  /* Filled by translated code, emptied by flushes (mem.c). */
  uint64_t slot_cnt[BT_TLB_SIZE];
  uint32_t slot_list[BT_TLB_SIZE][BT_SLOT_LIST]; /* slots' ctx offsets */
};

#define BT_CHECK_OFF(f, o) _Static_assert(offsetof(struct bt_ctx, f) == (o), #f)
BT_CHECK_OFF(gpr, BT_OFF_GPR);
BT_CHECK_OFF(flags, BT_OFF_FLAGS);
BT_CHECK_OFF(rip, BT_OFF_RIP);
BT_CHECK_OFF(hit_mask, BT_OFF_HIT_MASK);
BT_CHECK_OFF(jc_mask, BT_OFF_JC_MASK);
BT_CHECK_OFF(scratch, BT_OFF_SCRATCH);
BT_CHECK_OFF(caller_rsp, BT_OFF_CALLER_RSP);
BT_CHECK_OFF(spill, BT_OFF_SPILL);
BT_CHECK_OFF(slot, BT_OFF_SLOT);
_Static_assert(sizeof(struct bt_slot) == BT_SLOT_BYTES, "bt_slot");
BT_CHECK_OFF(slot_pos, BT_OFF_SLOT_POS);
BT_CHECK_OFF(slot_cnt, BT_OFF_SLOT_CNT);
BT_CHECK_OFF(slot_list, BT_OFF_SLOT_LIST);
BT_CHECK_OFF(host_rsp, BT_OFF_HOST_RSP);
BT_CHECK_OFF(cont, BT_OFF_CONT);
BT_CHECK_OFF(ret, BT_OFF_RET);
BT_CHECK_OFF(gate, BT_OFF_GATE);
BT_CHECK_OFF(exit_link, BT_OFF_EXIT_LINK);
BT_CHECK_OFF(exit_jc, BT_OFF_EXIT_JC);
BT_CHECK_OFF(self, BT_OFF_SELF);
BT_CHECK_OFF(arg, BT_OFF_ARG);
BT_CHECK_OFF(in_tc, BT_OFF_IN_TC);
BT_CHECK_OFF(budget, BT_OFF_BUDGET);
BT_CHECK_OFF(exit_budget, BT_OFF_EXIT_BUDGET);
BT_CHECK_OFF(mxcsr_host, BT_OFF_MXCSR_HOST);
BT_CHECK_OFF(fcw_host, BT_OFF_FCW_HOST);
BT_CHECK_OFF(jmp, BT_OFF_JMP);
BT_CHECK_OFF(post, BT_OFF_POST);
BT_CHECK_OFF(tlb_mask, BT_OFF_TLB_MASK);
BT_CHECK_OFF(segbase, BT_OFF_SEGBASE);
BT_CHECK_OFF(fpu_full, BT_OFF_FPU_FULL);
BT_CHECK_OFF(mx_live, BT_OFF_MX_LIVE);
BT_CHECK_OFF(xmm_on, BT_OFF_XMM_ON);
BT_CHECK_OFF(mx_dirty, BT_OFF_MX_DIRTY);
BT_CHECK_OFF(x87, BT_OFF_X87);
BT_CHECK_OFF(fpu, BT_OFF_FPU);
BT_CHECK_OFF(tlb_r, BT_OFF_TLB_R);
BT_CHECK_OFF(tlb_w, BT_OFF_TLB_W);
BT_CHECK_OFF(tlb_add, BT_OFF_TLB_ADD);
BT_CHECK_OFF(jc_npc, BT_OFF_JC_NPC);
BT_CHECK_OFF(jc_host, BT_OFF_JC_HOST);
BT_CHECK_OFF(jc_warm, BT_OFF_JC_WARM);
_Static_assert(sizeof(struct bt_ctx) == BT_CTX_SIZE, "ctx size");

/* ------------------------------------------------------------------------ */
/* Translation cache                                                        */

struct bt_frag;

/* A direct exit of a fragment, patchable to jump to another fragment. */
struct bt_link {
  struct bt_frag *from;
  struct bt_frag *to;      /* linked target, or NULL */
  struct bt_link *next_in; /* next link on listed->in */
  struct bt_frag *listed;  /* the fragment whose in-list holds it */
  uint64_t target_rip;     /* guest RIP of the successor */
  uint32_t key;            /* its mode (the source's, but after syscall) */
  uint32_t patch;          /* TC offset of the rel32 field */
  uint32_t stub;           /* TC offset of the exit stub */
  uint32_t head; /* self loop: TC offset of its loop head (0: none); it is
                    linked there, and only to its own fragment */
  bool warm; /* left with the registers a warm entry expects borrowed:
                patched to the target's warm entry */
  uint16_t kset; /* loop region: left with these borrowed; patched only to a
                    target keeping the same set, at its kept entry */
  uint8_t flen;    /* loop region: the bytes of the instruction whose flags */
  uint64_t fbytes; /* it leaves (flen 0: none), for a flags entry */
  bool backward;           /* target pc <= source pc: unlinked by kicks */
  bool cross_page;         /* unlinked on TLB flushes */
};

struct bt_frag {
  uint64_t pc;  /* linear address of the first instruction */
  uint64_t rip; /* its RIP (pc - CS base) */
  uint64_t cs_base;
  uint64_t phys[2]; /* guest-physical pages of its code; [1] = ~0 if one */
  uint64_t lin[2];  /* linear pages of the same */
  uint32_t key;
  uint32_t entry; /* TC offset */
  /* TC offset of the warm entry, reached with the registers translate.c
     keeps (STD_KEPT) borrowed, their guest values in their slots; equal
     to entry in modes without warm entries */
  uint32_t warm;
  /* Loop regions (translate.c): the registers this fragment keeps
     borrowed from its entry on (0: none), and the TC offset reached with
     them borrowed */
  uint16_t kset;
  uint32_t kwarm;
  /* Its flags entry (translate.c, flags_producers): the TC offset of a
     kept entry that expects the flags of the instruction of flen bytes
     fbytes (flen 0: none) */
  uint32_t kflags;
  uint8_t flen;
  uint64_t fbytes;
  uint32_t start; /* TC offset of the fragment's first byte */
  uint32_t size;
  uint16_t ninsn;
  bool valid;
  struct bt_frag *hnext;    /* fragment hash chain */
  struct bt_frag *pnext[2]; /* per-code-page lists */
  struct bt_link *in;       /* links into this fragment */
};

/* Descriptor of one callout site (kind BT_D_*). */
enum bt_desc_kind {
  BT_D_MEM,     /* soft-TLB miss of a native instruction's memory operand */
  BT_D_MEMPOST, /* after running such an instruction on the bounce buffer */
  BT_D_EMUL,    /* emulate the whole instruction in C */
  BT_D_RAISE,   /* raise an exception (arg: vector | error code << 8) */
  BT_D_PIO,     /* in/out, decoded once: arg is BT_PIO_* (bt_pio) */
};

/* A BT_D_PIO descriptor's arg: the port (an immediate, or BT_PIO_DX), the
   direction and the access size in bytes. */
#define BT_PIO_DX (1u << 16)
#define BT_PIO_IN (1u << 17)
#define BT_PIO_SIZE_SHIFT 18

struct bt_desc {
  uint8_t kind;
  uint8_t len;     /* instruction length */
  uint8_t idx;     /* position in the TU */
  uint8_t n;       /* TU length */
  uint8_t s1;      /* register receiving the host address (BT_D_MEM) */
  uint16_t spill;  /* registers borrowed here: guest values in ctx->spill */
  uint8_t park;    /* register holding rcx's guest value, or 0xff */
  uint8_t ends_tu; /* EMUL: always leave the fragment afterwards */
  uint8_t bytes[15];
  uint8_t dslot;   /* EMUL: the decode cache entry of its last decoding... */
  uint32_t arg;
  uint64_t dgen;   /* ... while that entry's gen is this (0: none) */
  uint64_t rip;    /* RIP of the instruction */
  uint64_t retry;  /* host address: redo the TLB lookup */
  uint64_t after;  /* host address: continue after the instruction */
  uint64_t bounce; /* host address: the instruction copy run on bounce */
  struct bt_frag *frag;
  uint32_t traps; /* slow-path count, for adaptive retranslation */
};

/* Arena sizes of one translation cache (flushed together) scale with its
   code size: a fragment is a few hundred bytes of code on average. */
#define BT_FRAG_BYTES 512
#define BT_FRAG_HASH 4096
#define BT_PAGE_HASH 1024

struct bt_pagelist {
  uint64_t page;
  struct bt_frag *frags;
  struct bt_pagelist *next;
};

struct bt_tc {
  int fd;
  uint8_t *rw; /* writable view */
  uint8_t *rx; /* executable view */
  size_t size, used;
  struct bt_frag *frags;
  unsigned nfrags, max_frags;
  struct bt_link *links;
  unsigned nlinks, max_links;
  struct bt_desc *descs;
  unsigned ndescs, max_descs;
  struct bt_pagelist *pages; /* arena, two per fragment */
  unsigned npages;
  struct bt_frag *hash[BT_FRAG_HASH];
  struct bt_pagelist *phash[BT_PAGE_HASH];
  uint64_t flushes;
};

/* ------------------------------------------------------------------------ */
/* vCPU and VM state                                                        */

/* Mode key bits (struct bt_frag.key). */
#define BT_K_CODE16 0u
#define BT_K_CODE32 1u
#define BT_K_CODE64 2u
#define BT_K_CODE_MASK 3u
#define BT_K_STACK32 (1u << 2)
#define BT_K_CPL_SHIFT 3
#define BT_K_CPL_MASK (3u << BT_K_CPL_SHIFT)
#define BT_K_PE (1u << 5)
#define BT_K_FLAT (1u << 6) /* CS/DS/ES/SS flat: inline memory paths */
#define BT_K_LMA (1u << 7)
#define BT_K_TS (1u << 8)
#define BT_K_EM (1u << 9)
#define BT_K_OSFXSR (1u << 10)
#define BT_K_MP (1u << 11)
#define BT_K_COUNT (1u << 12)
#define BT_K_SINGLE (1u << 13) /* one-instruction TUs */
/* Alignment checking: CPL 3, CR0.AM and RFLAGS.AC (inline lookups of 2-,
   4- and 8-byte accesses then miss on misaligned addresses). */
#define BT_K_AC (1u << 14)

/*
 * The jump cache holds the fragments of two modes that differ only in
 * privilege (a kernel and its user space) side by side, so that syscall,
 * sysret, interrupts and iret between them keep it. An entry for PC in a
 * mode of privilege CPL sits at slot PC mod BT_JC_SIZE with the tag
 * -(PC + D), D = bt_jc_disp(CPL), and a lookup adds D (a displacement in
 * translated code's lea) before the tag: with the four Ds distinct and
 * below BT_JC_SIZE modulo BT_JC_SIZE, PC + D of one privilege equals
 * PC' + D' of another only when PC and PC' fall in different slots, so no
 * lookup finds another privilege's fragment. User code (CPL 3) has D = 0.
 */
static inline uint64_t bt_jc_disp(uint32_t key) {
  static const uint16_t disp[4] = {2u << (BT_JC_BITS - 2),
                                   1u << (BT_JC_BITS - 2),
                                   3u << (BT_JC_BITS - 2), 0};
  return disp[(key & BT_K_CPL_MASK) >> BT_K_CPL_SHIFT];
}

static inline uint64_t bt_jc_tag(uint64_t pc, uint32_t key) {
  return -(pc + bt_jc_disp(key));
}

/* Whether the jump cache's entries for mode a serve mode b too. */
static inline bool bt_jc_same(uint32_t a, uint32_t b) {
  return ((a ^ b) & ~BT_K_CPL_MASK) == 0;
}

/* A VM-level record of translated bytes in one guest page. */
struct bt_codepage {
  uint64_t page;
  uint64_t cover[64]; /* one bit per byte of the page */
  struct bt_codepage *next;
};

#define BT_CODE_HASH 1024

/* Host CPU features the engine may pass through (bt_vm.host). */
#define BT_H_SSE3 (1u << 0)
#define BT_H_SSSE3 (1u << 1)
#define BT_H_SSE4 (3u << 2) /* SSE4.1 and SSE4.2 (with POPCNT) */
#define BT_H_LZCNT (1u << 4)
#define BT_H_BMI1 (1u << 5)
#define BT_H_BMI2 (1u << 6)
#define BT_H_ADX (1u << 7)
#define BT_H_MOVBE (1u << 8)
#define BT_H_AES (1u << 9)
#define BT_H_PCLMUL (1u << 10)

struct bt_vm {
  uint32_t host;        /* BT_H_* */
  bool fast_pext;       /* PEXT is a single fast instruction on this host */
  bool ac16;            /* #AC covers 16-byte operands too (AMD hosts) */
  bool fast_loop;       /* LOOP is a single fast instruction (AMD hosts) */
  pthread_mutex_t lock; /* code pages, invalidation queues */
  struct bt_codepage *code[BT_CODE_HASH];
  /* Per slot id: one bit per page holding translated code. */
  _Atomic uint64_t *codebits[VMM_MEM_MAX_SLOTS];
  uint64_t slot_pages[VMM_MEM_MAX_SLOTS];
  _Atomic uint64_t wp_gen; /* write-protect generation, see mem.c */
  /* No membarrier(2): vCPUs order their in_tc store before the
     generation load with a full fence (bt_in_tc, mem.c). */
  bool wp_fence;
  struct vmm_cpuid_entry supported[64];
  size_t nsupported;
};

/*
 * MMIO reads of the instruction at `rip`, in program order. An instruction
 * needing MMIO data exits for each read in turn and is re-executed from
 * the start each time: reads already served replay from this log (in
 * order, matched by address and size). The log is cleared when the
 * instruction (or a string iteration) completes.
 */
#define BT_MMIO_LOG 8
struct bt_mmio {
  uint64_t rip;
  unsigned n;      /* entries in log */
  unsigned cursor; /* next entry the current execution replays */
  bool waiting;    /* the last entry's data comes with the next run() */
  struct {
    uint64_t gpa;
    uint8_t size;
    uint8_t data[8];
  } log[BT_MMIO_LOG];
};

/* The bounce buffer state between BT_D_MEM and BT_D_MEMPOST. */
struct bt_bounce {
  bool active;
  bool write;
  bool mmio;
  bool code; /* a code page is written */
  uint8_t npart;
  uint64_t gpa[2];
  uint8_t *hva[2]; /* NULL for MMIO */
  uint32_t len[2];
  uint8_t buf[64] __attribute__((aligned(64)));
};

#define BT_IOBUF 4096
#define BT_ADAPT_SIZE 512
/* Slow-path trips of one memory instruction before it becomes a callout. */
#define BT_ADAPT_TRAPS 16

struct bt_vcpu {
  struct bt_ctx ctx; /* first: the vCPU's stack ends here (vcpu_map) */
  vmm_vcpu *vcpu;
  struct bt_vm *vm;

  /* Guest state not held in ctx. */
  uint64_t vflags; /* RFLAGS bits outside BT_HOST_FLAGS (IF, IOPL, TF, ...) */
  struct vmm_segment seg[6];
  struct vmm_segment ldt, tr;
  struct vmm_dtable gdt, idt;
  uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base, xcr0;
  uint64_t dr[8];
  uint64_t star, lstar, cstar, sfmask, kgsbase;
  uint64_t sysenter_cs, sysenter_esp, sysenter_eip;
  uint64_t tsc_aux, pat, misc_enable, tsc_offset;
  uint16_t fcw;   /* guest-visible x87 control word */
  uint32_t mxcsr; /* the guest's MXCSR exception masks (bt_guest_mxcsr) */
  unsigned cpl;
  bool halted;
  uint64_t shadow_rip; /* interrupt shadow covers the instruction here */
  bool shadow;
  bool nmi_blocked;
  uint64_t nevents; /* exceptions and interrupts raised or delivered */
  /* Exception delivery in progress and the fault it ran into (sys.c). */
  int delivering;
  int nest_vec;
  bool nest_has_err;
  uint32_t nest_err;

  /* Paging features from the vCPU's CPUID (set_cpuid). */
  unsigned maxphy;
  bool gbpages;
  bool last_user_page; /* U/S of the last bt_translate() */
  uint64_t last_page_size; /* page size of the last bt_translate() */
  /* Per TLB set, for invlpg: the 2 MiB pages entries were filled from
     (tlb_lover: more than fit), and whether any came from a 4 MiB or
     1 GiB page (tlb_huge). */
  uint64_t tlb_lbase[2][8];
  uint8_t tlb_nl[2];
  bool tlb_lover[2];
  bool tlb_huge[2];
  uint64_t jc_lo, jc_hi; /* range of the PCs in the jump cache */
  /* Range of the pages of fragments that cross-page links were made to
     since the last full unlink (a superset of those still linked). */
  uint64_t xl_lo, xl_hi;
  /* The dispatcher's cache of lookups, (PC, mode) -> fragment: unlike the
     jump cache it survives mode changes (a syscall round trip looked both
     ends up through a page walk); emptied with the TLB (paging changes,
     invlpg, a TC flush). */
  struct {
    uint64_t pc;
    struct bt_frag *f;
  } xc[BT_XC_SIZE];
  /* Jump-cache indexes filled since the last flush; jc_nused above
     BT_JC_TRACK: too many, flush all. */
  uint16_t jc_used[BT_JC_TRACK];
  unsigned jc_nused;
  bool tpr_lowered; /* the last emulated instruction lowered CR8 */
  struct bt_dcache dcache[BT_DCACHE_SIZE];
  uint8_t dcache_victim[BT_DCACHE_SIZE / 2]; /* per set: the way to replace */
  int dcache_pin; /* entry bt_decode_ref() lent out (never replaced), or -1 */
  uint64_t dcache_gen; /* fills so far */

  /* Derived mode. */
  uint32_t key;
  ZydisMachineMode zmode;
  ZydisStackWidth zstack;
  unsigned tlb_set;  /* 0 supervisor, 1 user */
  unsigned tlb_size; /* entries in use: BT_TLB_SIZE, or 256 (slow PEXT) */
  /* Lookup slots: the next one translation hands out, and the page empty
     slots map BT_SLOT_EMPTY to (3 pages, page-aligned: the middle one,
     with a page either side for accesses that start before it or cross
     it). */
  unsigned slot_next;
  uint8_t (*slot_guard)[4096];

  /* Dispatcher / exits. */
  bool exit_ready; /* vcpu->exit holds an exit to report */
  struct bt_mmio mmio;
  struct bt_bounce bounce;
  /* Port I/O left half-done by an exit (IN, INS or OUTS to finish). */
  struct {
    bool valid;
    bool in;
    bool string;
    uint8_t size;
    uint32_t count;
    uint64_t rip, next_rip;
    uint8_t len; /* the instruction's */
    uint8_t *buf;
  } pio;
  uint32_t pio_arg; /* set by an emulated in/out: its BT_PIO_* form */
  uint8_t iobuf[BT_IOBUF];

  /* Translation. */
  struct bt_tc tc;
  pthread_mutex_t link_lock; /* links and jump cache vs kicks */
  _Atomic bool kicked;
  uint32_t jc_key;
  /* Fragments translate syscall and sysret inline against these values of
     STAR, LSTAR and FMASK (with EFER.SCE set): the dispatcher flushes the
     translation cache when they change (sys_stale in engine.c); a flush
     clears the flag. */
  bool sys_inline;
  uint64_t sys_star, sys_lstar, sys_sfmask;
  uint64_t mem_gen;
  uint64_t wp_gen;
  bool tlb_flush_links; /* a TLB flush must unlink cross-page links */
  struct bt_frag *cur;  /* fragment whose callout is running */
  bool cur_invalid;     /* ... and it was invalidated meanwhile */
  /* Invalidation requests from other threads (lock: bt_vm.lock). */
  uint64_t inval[32];
  unsigned ninval;
  bool inval_all;
  _Atomic bool inval_pending;

  /* Instructions retranslated as callouts (linear PC + 1, 0 = empty). */
  uint64_t adapt[BT_ADAPT_SIZE];
  uint64_t stat_adapted;

  /* Counting mode. */
  bool counting;    /* compile fragments for counting */
  bool count_valid; /* counting has been on since the first run */
  bool ran;
  uint64_t icount; /* instructions retired before the current budget */
  int64_t budget_start;
  uint64_t limit; /* 0: none */
  bool limit_hit;

  /* Debug. */
  uint32_t exc_mask;
  struct vmm_debug dbg;
  bool dbg_on;
  uint64_t bp_skip_rip; /* resume over a hardware breakpoint once */
  bool bp_skip;

#ifdef BT_ASAN
  /* AddressSanitizer's view of the stacks around a callout (engine.c,
     asan_switch_in): the vCPU stack's fake frames, kept from one callout to
     the next, and the stack and fake frames of the callout's caller. */
  void *asan_fake, *asan_caller_fake;
  const void *asan_caller_bottom;
  size_t asan_caller_size;
#endif
};

static inline struct bt_vcpu *BV(vmm_vcpu *v) {
  return v->engine;
}
static inline struct bt_vm *BM(vmm_vm *vm) {
  return vm->engine;
}

/* ------------------------------------------------------------------------ */
/* Internal entry points                                                    */

/* glue.S */
int vmm__bt_enter(struct bt_ctx *ctx, uint64_t host_target);
void vmm__bt_gate(void);
void vmm__bt_fpu_sync(struct bt_ctx *ctx);
void vmm__bt_fpu_host(struct bt_ctx *ctx);
void vmm__bt_x87_dirty(void);
void vmm__bt_x87_clean(void);
void vmm__bt_x87_away(void);
void vmm__bt_exit_link(void);
void vmm__bt_exit_jc(void);
void vmm__bt_exit_budget(void);
/* Called by the gate; returns 0 to resume at ctx->cont, 1 to leave. */
int vmm__bt_callout(struct bt_ctx *ctx);

/* engine.c */
void bt_update_mode(struct bt_vcpu *b);
uint64_t bt_get_rflags(const struct bt_vcpu *b);
void bt_set_rflags(struct bt_vcpu *b, uint64_t rflags);
/* Retired-instruction bookkeeping when leaving a TU early. */
void bt_unretire(struct bt_vcpu *b, unsigned n);
void bt_kick_internal(struct bt_vcpu *b);
/* Call the host program's code from a callout (a port handler): with the
   ABI's FPU state, outside translated code for write-protect
   shootdowns. */
void bt_host_call(struct bt_vcpu *b);

/* tc.c */
int bt_tc_init(struct bt_tc *tc, size_t size);
void bt_tc_fini(struct bt_tc *tc);
void bt_tc_flush(struct bt_vcpu *b);
struct bt_frag *bt_frag_find(struct bt_vcpu *b, uint64_t pc, uint64_t phys0);
struct bt_frag *bt_frag_alloc(struct bt_vcpu *b);
void bt_frag_insert(struct bt_vcpu *b, struct bt_frag *f);
struct bt_link *bt_link_alloc(struct bt_vcpu *b);
struct bt_desc *bt_desc_alloc(struct bt_vcpu *b, uint32_t *index);
void bt_link_patch(struct bt_vcpu *b, struct bt_link *l, struct bt_frag *to);
void bt_unlink_backward(struct bt_vcpu *b);
void bt_unlink_cross_page(struct bt_vcpu *b);
void bt_unlink_region(struct bt_vcpu *b, uint64_t lin, uint64_t size);
void bt_xc_flush(struct bt_vcpu *b);
void bt_invalidate_page(struct bt_vcpu *b, uint64_t page);
void bt_frag_drop(struct bt_vcpu *b, struct bt_frag *f);
bool bt_adaptive(const struct bt_vcpu *b, uint64_t pc);
void bt_adaptive_add(struct bt_vcpu *b, uint64_t pc);
void bt_jc_flush(struct bt_vcpu *b);
void bt_jc_fill(struct bt_vcpu *b, struct bt_frag *f);
uint64_t bt_tc_addr(const struct bt_tc *tc, uint32_t off);

/* mem.c: guest memory for C code and the soft TLB. */
enum bt_acc { BT_R = 0, BT_W = 1, BT_X = 2 };
/* An empty lookup slot's page: non-canonical, so no access through the
   TLB reaches it; through an empty slot it reaches b->slot_guard. */
#define BT_SLOT_EMPTY 0xa5a5a5a5a5a5a000ull
void bt_slots_reset(struct bt_vcpu *b); /* every lookup slot empty */
void bt_tlb_flush(struct bt_vcpu *b);
void bt_tlb_flush_writes(struct bt_vcpu *b);
void bt_tlb_flush_page(struct bt_vcpu *b, uint64_t lin);
/*
 * Guest linear accesses from C at the current CPL (or as supervisor with
 * sys set, for descriptor tables and TSS). Return 0, or -1 with an
 * exception raised (b->... pending) / an MMIO exit prepared (returns -2).
 */
int bt_read(struct bt_vcpu *b, uint64_t lin, void *buf, unsigned len, bool sys);
int bt_write(struct bt_vcpu *b, uint64_t lin, const void *buf, unsigned len,
             bool sys);
int bt_fetch(struct bt_vcpu *b, uint64_t lin, uint8_t *buf, unsigned len,
             uint64_t *phys0, uint64_t *phys1, unsigned *got);
int bt_translate(struct bt_vcpu *b, uint64_t lin, unsigned acc, bool sys,
                 uint64_t *gpa);
void bt_paging(const struct bt_vcpu *b, struct vmm__paging *pg);
uint8_t *bt_ram_writable(struct bt_vcpu *b, uint64_t gpa, unsigned len);
uint8_t *bt_ram_readable(struct bt_vcpu *b, uint64_t gpa, unsigned len);
void bt_ram_written(struct bt_vcpu *b, uint64_t gpa, unsigned len);
int bt_mem_miss(struct bt_vcpu *b, struct bt_desc *d);
int bt_mem_post(struct bt_vcpu *b, struct bt_desc *d);
/* Code pages (SMC): mark before translating; check after writes. */
int bt_code_mark(struct bt_vcpu *b, uint64_t gpa, unsigned len);
void bt_code_recheck(struct bt_vcpu *b, uint64_t gpa, const uint8_t *bytes,
                     unsigned len);
void bt_code_written(vmm_vm *vm, struct bt_vcpu *writer, uint64_t gpa,
                     uint64_t len);
bool bt_is_code_page(vmm_vm *vm, uint64_t gpa);
void bt_vm_code_fini(struct bt_vm *m);

/* Return codes of C emulation steps. */
#define BT_OK 0
#define BT_FAULT (-1) /* an exception was raised (delivered or exit made) */
#define BT_EXIT (-2)  /* an exit to the host was prepared (MMIO, I/O) */

/* sys.c */
/* Raise an exception at the current ctx->rip (precise state already). */
int bt_raise(struct bt_vcpu *b, unsigned vec, bool has_err, uint32_t err);
int bt_raise_pf(struct bt_vcpu *b, uint64_t lin, uint32_t err);
/* Deliver an event (exception, interrupt, software int). */
int bt_deliver(struct bt_vcpu *b, unsigned vec, int type, bool has_err,
               uint32_t err, uint64_t next_rip);
#define BT_EV_EXC 0
#define BT_EV_EXT 1
#define BT_EV_SOFT 2  /* int n */
#define BT_EV_SOFTX 3 /* int3 / into: software exception */
#define BT_EV_NMI 4
int bt_load_seg(struct bt_vcpu *b, int sreg, uint16_t sel);
void bt_seg_changed(struct bt_vcpu *b);
int bt_set_cr(struct bt_vcpu *b, int cr, uint64_t v);
uint64_t bt_get_cr8(struct bt_vcpu *b);
int bt_rdmsr(struct bt_vcpu *b, uint32_t idx, uint64_t *v);
int bt_wrmsr(struct bt_vcpu *b, uint32_t idx, uint64_t v);
int bt_far_transfer(struct bt_vcpu *b, uint16_t sel, uint64_t off, int kind,
                    unsigned osize, uint64_t next_rip);
#define BT_FAR_JMP 0
#define BT_FAR_CALL 1
int bt_far_ret(struct bt_vcpu *b, unsigned osize, uint16_t imm);
int bt_iret(struct bt_vcpu *b, unsigned osize);
uint64_t bt_cs_base(const struct bt_vcpu *b);
unsigned bt_addr_bits(const struct bt_vcpu *b);

/* interp.c */
int bt_emulate(struct bt_vcpu *b, struct bt_desc *d);
/* The flat segment SYSCALL, SYSRET, SYSENTER and SYSEXIT load. */
void bt_flat_seg(struct vmm_segment *s, uint16_t sel, bool code, bool l,
                 unsigned dpl);
/* An in/out whose operands a BT_D_PIO descriptor holds (arg), at rip. */
int bt_pio(struct bt_vcpu *b, uint32_t arg, uint64_t rip, uint64_t next);
void bt_cpuid(struct bt_vcpu *b, uint32_t fn, uint32_t idx, uint32_t out[4]);

/* translate.c */
/* Translate a TU at the current rip; NULL with an exception raised (or an
   internal error exit) on failure. */
struct bt_frag *bt_translate_tu(struct bt_vcpu *b, uint64_t pc);
bool bt_host_ok(void);

/* Odds and ends shared across files. */
void bt_check_wp(struct bt_vcpu *b);
void bt_in_tc(struct bt_vcpu *b);
void bt_wp_shootdown(vmm_vm *vm, struct bt_vcpu *self);
void bt_process_invalidations(struct bt_vcpu *b);
void bt_code_forget_range(struct bt_vm *m, uint64_t gpa, uint64_t size);
int bt_complete_pio(struct bt_vcpu *b);
/* Start executing the instruction at ctx->rip (MMIO replay), and mark it
   (or one string iteration) complete. */
void bt_mmio_begin(struct bt_vcpu *b);
void bt_mmio_retire(struct bt_vcpu *b);
void bt_unspill(struct bt_vcpu *b, const struct bt_desc *d);
int bt_decode(struct bt_vcpu *b, const uint8_t *bytes, unsigned len,
              ZydisDecodedInstruction *di, ZydisDecodedOperand *op);
/* As bt_decode(), without the copy: *di and *op point into the cache entry,
   which stays valid (pinned) until dcache_pin changes; the caller saves and
   restores dcache_pin around its use. */
int bt_decode_ref(struct bt_vcpu *b, const uint8_t *bytes, unsigned len,
                  const ZydisDecodedInstruction **di,
                  const ZydisDecodedOperand **op);
/* As bt_decode_ref() for a callout's instruction, without hashing or
   comparing its bytes when the entry it was decoded into last time still
   holds that decoding. */
int bt_decode_desc(struct bt_vcpu *b, struct bt_desc *d,
                   const ZydisDecodedInstruction **di,
                   const ZydisDecodedOperand **op);
int bt_find_memop(const ZydisDecodedInstruction *di,
                  const ZydisDecodedOperand *op);
bool bt_needs_align16(const ZydisDecodedInstruction *di,
                      const ZydisDecodedOperand *o);
int bt_operand_lin(struct bt_vcpu *b, const ZydisDecodedInstruction *di,
                   const ZydisDecodedOperand *o, unsigned size, bool write,
                   uint64_t *lin);
uint64_t bt_tsc(struct bt_vcpu *b);
uint64_t bt_popf_mask(struct bt_vcpu *b, unsigned osize);
void bt_write_flags(struct bt_vcpu *b, uint64_t v, uint64_t mask);
void bt_fpu_set_controls(struct bt_vcpu *b, uint16_t fcw, uint32_t mxcsr);
/* The MXCSR the guest sees: the saved host MXCSR (exception flags set by
   guest instructions, rounding, DAZ, FZ) with the guest's masks. */
uint32_t bt_guest_mxcsr(const struct bt_vcpu *b);
/* Would an access of len bytes at lin raise #AC now? 2-, 4- and 8-byte
   data accesses at CPL 3 with CR0.AM and RFLAGS.AC set, and on AMD hosts
   16-byte ones (SSE operands that need no alignment: Intel's SDM leaves
   them out, AMD's manual and its processors check them); docs/bt.md.
   80-bit x87 operands (8-byte alignment) are checked by the miss path. */
static inline bool bt_ac_fault(const struct bt_vcpu *b, uint64_t lin,
                               unsigned len) {
  return (b->key & BT_K_AC) &&
         (len == 2 || len == 4 || len == 8 || (len == 16 && b->vm->ac16)) &&
         (lin & (len - 1)) != 0;
}
void bt_supported_cpuid(struct bt_vm *m, bool platform);
uint64_t bt_reg_get(struct bt_vcpu *b, ZydisRegister r);
void bt_reg_set(struct bt_vcpu *b, ZydisRegister r, uint64_t v);

/* Fill vcpu->exit with an internal error and log why. */
void bt_internal_error(struct bt_vcpu *b, uint32_t code, const char *fmt, ...)
    VMM__PRINTF(3, 4);

#endif
