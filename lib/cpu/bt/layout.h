/*
 * Offsets into struct bt_ctx that translated code and glue.S use as
 * [rsp + offset] (glue.S). Plain #defines so the assembler can include
 * this file; bt.h checks every one against offsetof().
 */
#ifndef LIBVMM_BT_LAYOUT_H
#define LIBVMM_BT_LAYOUT_H

/* Soft-TLB capacity (entries per privilege); hosts with a slow PEXT use
   the first 256 (bt_vcpu.tlb_size). */
#define BT_TLB_BITS 12
#define BT_TLB_SIZE 4096
#define BT_JC_BITS 12
#define BT_JC_SIZE 4096

#define BT_OFF_GPR 0x000 /* uint64_t gpr[16], hardware register order */
#define BT_OFF_FLAGS 0x080
#define BT_OFF_RIP 0x088
#define BT_OFF_HIT_MASK 0x090 /* uint64_t [5]: PEXT masks of a TLB hit test */
#define BT_OFF_JC_MASK 0x0b8  /* BT_JC_SIZE - 1, PEXT's mask */
#define BT_OFF_SCRATCH 0x0c0  /* 8 bytes free */
#define BT_OFF_CALLER_RSP 0x0c8 /* vmm__bt_enter's caller's, while it runs */
#define BT_OFF_HOST_RSP 0x0d0   /* R: the top of the vCPU's stack */
#define BT_OFF_CONT 0x0d8
#define BT_OFF_RET 0x0e0
#define BT_OFF_GATE 0x0e8
#define BT_OFF_EXIT_LINK 0x0f0
#define BT_OFF_EXIT_JC 0x0f8
#define BT_OFF_SELF 0x100
#define BT_OFF_ARG 0x108
#define BT_OFF_IN_TC 0x10c
#define BT_OFF_BUDGET 0x110
#define BT_OFF_EXIT_BUDGET 0x118
#define BT_OFF_MXCSR_HOST 0x120
#define BT_OFF_FCW_HOST 0x124
#define BT_OFF_JMP 0x128      /* scratch target for indirect jumps */
#define BT_OFF_POST 0x130     /* where real-mode memory paths continue */
#define BT_OFF_TLB_MASK 0x138 /* (tlb_size - 1) << 12, PEXT's mask */
#define BT_OFF_SEGBASE 0x140  /* uint64_t segbase[6]: ES CS SS DS FS GS */
#define BT_OFF_FPU_FULL 0x170 /* uint8_t: a callout saved the whole FPU */
#define BT_OFF_MX_LIVE 0x171  /* uint8_t: MXCSR holds the guest's (glue.S) */
#define BT_OFF_XMM_ON 0x172   /* uint8_t: guest XMM live in translated code */
#define BT_OFF_MX_DIRTY 0x174 /* uint32_t: guest SSE ran since MXCSR loaded */
#define BT_OFF_X87 0x178      /* where the guest x87 state is (glue.S) */
#define BT_OFF_FPU 0x180      /* 512-byte FXSAVE area, 64-byte aligned */
#define BT_OFF_SPILL                                                           \
  0x380                    /* uint64_t spill[16]: a borrowed register's guest  \
                              value, indexed by register number */
#define BT_OFF_TLB_R 0x400 /* uint64_t [2][BT_TLB_SIZE] negated read tags */
#define BT_OFF_TLB_W (BT_OFF_TLB_R + 2 * 8 * BT_TLB_SIZE)
#define BT_OFF_TLB_ADD (BT_OFF_TLB_W + 2 * 8 * BT_TLB_SIZE)
/* Every stored addend is (host page - guest page) + BT_TLB_BIAS, so its
   low six bits are a page shift that `shrx` takes as its count (the hit
   test of translate.c's lookups); an access through an addend subtracts
   the bias in its displacement. */
#define BT_TLB_BIAS 12
#define BT_OFF_JC_NPC (BT_OFF_TLB_ADD + 2 * 8 * BT_TLB_SIZE)
#define BT_OFF_JC_HOST (BT_OFF_JC_NPC + 8 * BT_JC_SIZE)
#define BT_OFF_JC_WARM (BT_OFF_JC_HOST + 8 * BT_JC_SIZE)
/* Lookup slots (translate.c, "Lookup slots" in docs/bt.md): struct
   bt_slot {tag, addend, host} [2 TLB sets][read, write][BT_SLOT_CLASSES access
   sizes][BT_SLOTS]; the constant BT_SLOT_LIST - 1 (a pext mask); and per
   TLB index, the number of slot fills for pages of that index since it was
   last flushed and the offsets of the last BT_SLOT_LIST slots filled. */
#define BT_SLOTS 128
#define BT_SLOT_CLASSES 6 /* 1, 2, 4, 8, 16 bytes, other sizes */
#define BT_SLOT_LIST 4
#define BT_SLOT_BYTES 24
#define BT_OFF_SLOT (BT_OFF_JC_WARM + 8 * BT_JC_SIZE)
#define BT_OFF_SLOT_POS                                                        \
  (BT_OFF_SLOT + 2 * 2 * BT_SLOT_CLASSES * BT_SLOT_BYTES * BT_SLOTS)
#define BT_OFF_SLOT_CNT (BT_OFF_SLOT_POS + 64)
#define BT_OFF_SLOT_LIST (BT_OFF_SLOT_CNT + 8 * BT_TLB_SIZE)
#define BT_CTX_SIZE (BT_OFF_SLOT_LIST + 4 * BT_SLOT_LIST * BT_TLB_SIZE)

/* Return values of bt_enter(): why translated code gave control back. */
#define BT_X_LINK 0    /* an unlinked direct exit; arg = link number */
#define BT_X_CALLOUT 1 /* a callout asked to leave */
#define BT_X_JC 2      /* indirect-jump miss; rip holds the target */
#define BT_X_BUDGET 3  /* counting mode: budget too small; arg = fragment */

#endif
