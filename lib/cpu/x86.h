/*
 * Architectural constants of x86 used across the library.
 */
#ifndef LIBVMM_CPU_X86_H
#define LIBVMM_CPU_X86_H

#define X86_CR0_PE (1ull << 0)
#define X86_CR0_MP (1ull << 1)
#define X86_CR0_EM (1ull << 2)
#define X86_CR0_TS (1ull << 3)
#define X86_CR0_ET (1ull << 4)
#define X86_CR0_NE (1ull << 5)
#define X86_CR0_WP (1ull << 16)
#define X86_CR0_AM (1ull << 18)
#define X86_CR0_NW (1ull << 29)
#define X86_CR0_CD (1ull << 30)
#define X86_CR0_PG (1ull << 31)

#define X86_CR4_VME (1ull << 0)
#define X86_CR4_PVI (1ull << 1)
#define X86_CR4_TSD (1ull << 2)
#define X86_CR4_DE (1ull << 3)
#define X86_CR4_PSE (1ull << 4)
#define X86_CR4_PAE (1ull << 5)
#define X86_CR4_MCE (1ull << 6)
#define X86_CR4_PGE (1ull << 7)
#define X86_CR4_PCE (1ull << 8)
#define X86_CR4_OSFXSR (1ull << 9)
#define X86_CR4_OSXMMEXCPT (1ull << 10)
#define X86_CR4_UMIP (1ull << 11)
#define X86_CR4_LA57 (1ull << 12)
#define X86_CR4_VMXE (1ull << 13)
#define X86_CR4_SMXE (1ull << 14)
#define X86_CR4_FSGSBASE (1ull << 16)
#define X86_CR4_PCIDE (1ull << 17)
#define X86_CR4_OSXSAVE (1ull << 18)
#define X86_CR4_SMEP (1ull << 20)
#define X86_CR4_SMAP (1ull << 21)
#define X86_CR4_PKE (1ull << 22)
#define X86_CR4_KNOWN                                                          \
  (X86_CR4_VME | X86_CR4_PVI | X86_CR4_TSD | X86_CR4_DE | X86_CR4_PSE |        \
   X86_CR4_PAE | X86_CR4_MCE | X86_CR4_PGE | X86_CR4_PCE | X86_CR4_OSFXSR |    \
   X86_CR4_OSXMMEXCPT | X86_CR4_UMIP | X86_CR4_LA57 | X86_CR4_VMXE |           \
   X86_CR4_SMXE | X86_CR4_FSGSBASE | X86_CR4_PCIDE | X86_CR4_OSXSAVE |         \
   X86_CR4_SMEP | X86_CR4_SMAP | X86_CR4_PKE)

#define X86_EFER_SCE (1ull << 0)
#define X86_EFER_LME (1ull << 8)
#define X86_EFER_LMA (1ull << 10)
#define X86_EFER_NXE (1ull << 11)
#define X86_EFER_FFXSR (1ull << 14)

#define X86_RFLAGS_CF (1ull << 0)
#define X86_RFLAGS_FIXED (1ull << 1)
#define X86_RFLAGS_PF (1ull << 2)
#define X86_RFLAGS_AF (1ull << 4)
#define X86_RFLAGS_ZF (1ull << 6)
#define X86_RFLAGS_SF (1ull << 7)
#define X86_RFLAGS_TF (1ull << 8)
#define X86_RFLAGS_IF (1ull << 9)
#define X86_RFLAGS_DF (1ull << 10)
#define X86_RFLAGS_OF (1ull << 11)
#define X86_RFLAGS_IOPL (3ull << 12)
#define X86_RFLAGS_NT (1ull << 14)
#define X86_RFLAGS_RF (1ull << 16)
#define X86_RFLAGS_VM (1ull << 17)
#define X86_RFLAGS_AC (1ull << 18)
#define X86_RFLAGS_VIF (1ull << 19)
#define X86_RFLAGS_VIP (1ull << 20)
#define X86_RFLAGS_ID (1ull << 21)

#define X86_XCR0_X87 (1ull << 0)
#define X86_XCR0_SSE (1ull << 1)
#define X86_XCR0_AVX (1ull << 2)
#define X86_XCR0_BNDREGS (1ull << 3)
#define X86_XCR0_BNDCSR (1ull << 4)
#define X86_XCR0_OPMASK (1ull << 5)
#define X86_XCR0_ZMM_HI256 (1ull << 6)
#define X86_XCR0_HI16_ZMM (1ull << 7)

#define X86_MSR_TSC 0x10u
#define X86_MSR_APIC_BASE 0x1bu
#define X86_MSR_SYSENTER_CS 0x174u
#define X86_MSR_SYSENTER_ESP 0x175u
#define X86_MSR_SYSENTER_EIP 0x176u
#define X86_MSR_PAT 0x277u
#define X86_MSR_TSC_DEADLINE 0x6e0u
#define X86_MSR_EFER 0xc0000080u
#define X86_MSR_STAR 0xc0000081u
#define X86_MSR_LSTAR 0xc0000082u
#define X86_MSR_CSTAR 0xc0000083u
#define X86_MSR_FMASK 0xc0000084u
#define X86_MSR_FS_BASE 0xc0000100u
#define X86_MSR_GS_BASE 0xc0000101u
#define X86_MSR_KERNEL_GS_BASE 0xc0000102u
#define X86_MSR_TSC_AUX 0xc0000103u

/* Exception vectors. */
#define X86_EXC_DE 0
#define X86_EXC_DB 1
#define X86_EXC_NMI 2
#define X86_EXC_BP 3
#define X86_EXC_OF 4
#define X86_EXC_BR 5
#define X86_EXC_UD 6
#define X86_EXC_NM 7
#define X86_EXC_DF 8
#define X86_EXC_TS 10
#define X86_EXC_NP 11
#define X86_EXC_SS 12
#define X86_EXC_GP 13
#define X86_EXC_PF 14
#define X86_EXC_MF 16
#define X86_EXC_AC 17
#define X86_EXC_MC 18
#define X86_EXC_XM 19

/* Segment descriptor types (the 4-bit type field with S = 1). */
#define X86_SEG_DATA_RW_ACCESSED 0x3
#define X86_SEG_CODE_RX_ACCESSED 0xb
/* System descriptor types (S = 0). */
#define X86_SEG_LDT 0x2
#define X86_SEG_TSS16_BUSY 0x3
#define X86_SEG_TSS_AVAILABLE 0x9
#define X86_SEG_TSS_BUSY 0xb

#endif
