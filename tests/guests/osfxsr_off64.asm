; With CR4.OSFXSR clear (as early in a kernel's boot), the SSE-family
; instructions the SDM exempts still run (prefetches, fences, movnti,
; clflush), while an SSE instruction raises #UD (64-bit, CPL 0).
; Regression: BT raised #UD on prefetcht0 there (Debian's kernel hit it
; in __free_pages_core).
; mode: long64
; expect: r15=1 rbx=0x1234
; expect-mem: 0x30000 06 00 00 00 00 00 00 00
; expect-mem: 0x30040 34 12 00 00
bits 64
%define ORG 0x10000
org ORG

start:
    lidt [rel idtr]
    xor r15d, r15d
    mov rax, cr4
    and eax, ~0x600                 ; OSFXSR and OSXMMEXCPT off
    mov cr4, rax
    mov rsi, 0x30040
    prefetcht0 [rsi]
    prefetchnta [rsi + 64]
    prefetcht1 [rsi]
    prefetcht2 [rsi]
    sfence
    lfence
    mfence
    mov ebx, 0x1234
    movnti [rsi], ebx
    clflush [rsi]
.sse:
    movaps xmm0, [rsi]              ; #UD
    hlt

h_ud:
    mov qword [0x30000], 6
    lea rax, [rel start.sse]
    cmp [rsp], rax                  ; the faulting RIP
    jne h_bad
    inc r15
    hlt
h_bad:
    mov al, 0xff
    out 0xe9, al
    hlt

%include "gate64.inc"

align 16
idt:
%assign v 0
%rep 32
%if v == 6
    gate64 h_ud
%else
    gate64 h_bad
%endif
%assign v v + 1
%endrep
idtr:
    dw 32 * 16 - 1
    dq idt
