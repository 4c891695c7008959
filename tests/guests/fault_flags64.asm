; A page fault in the middle of a translation unit hands the guest's
; handler the arithmetic flags as they were before the faulting
; instruction, even where a later instruction of the unit (or the faulting
; instruction itself) overwrites every flag: flags that are dead for the
; rest of the unit are still visible in the exception frame. Each case sets
; the flags, then accesses a not-present page (2-4 MiB), then overwrites
; the flags; the #PF handler records the pushed RFLAGS (the six arithmetic
; flags) and CR2, makes the page present and returns, so the access is
; retried and completes. Guards the soft-TLB lookup, which must not change
; the guest's flags even where they are dead (docs/bt.md, "The memory
; path"). Cases 5-7 are the shape BT hoists the lookup for (before an
; instruction that writes every flag, with the access's address registers
; untouched up to it): the fault must see that instruction's flags, which
; ran exactly once, and a hoisted lookup that misses and fills the TLB
; (case 7, a load and a store) must leave its flags for later readers.
; 64-bit, CPL 0.
; mode: long64
; mem: 0x400000
; expect: r15=6 rbx=0x11223344 rdx=0x11223349 r10=0x8d5 r11=1 r14=0
; expect: rbp=0x55667788 rdi=6 rax=5 rcx=1 r13=0x99
; expect-mem: 0x30000 94 08 00 00 00 00 00 00 95 00 00 00 00 00 00 00
; expect-mem: 0x30010 44 00 00 00 00 00 00 00 d5 08 00 00 00 00 00 00
; expect-mem: 0x30020 00 00 00 00 00 00 00 00 55 00 00 00 00 00 00 00
; expect-mem: 0x30040 00 00 20 00 00 00 00 00 00 00 20 00 00 00 00 00
; expect-mem: 0x30050 10 00 20 00 00 00 00 00 08 00 20 00 00 00 00 00
; expect-mem: 0x30060 18 00 20 00 00 00 00 00 20 00 20 00 00 00 00 00
; expect-mem: 0x200034 06 00 00 00
; expect-mem: 0x200010 05 00 00 00
bits 64
%define ORG 0x10000
org ORG
%include "identity_pd.inc"
%include "pf_flags.inc"
%define PAGE 0x200000

start:
    lidt [rel idtr]
    xor r15d, r15d
    mov dword [PAGE], 0x11223344
    mov dword [PAGE + 0x20], 0x99
    mov dword [PAGE + 0x30], 0x55667788
    identity_pd
    mov [rel pd], rax

    ; 1: add sets OF SF AF PF; a load faults; xor overwrites every flag.
    unmap
    mov eax, 0x7fffffff
    add eax, 1                      ; 0x80000000: OF SF AF PF = 0x894
    mov ebx, [PAGE]
    xor ecx, ecx
    mov ecx, 7

    ; 2: sub sets SF AF PF CF; an add from memory (which writes every
    ; flag itself) faults; test overwrites them.
    unmap
    mov eax, 1
    mov edx, 5
    sub eax, 2                      ; 0xffffffff: SF AF PF CF = 0x95
    add edx, [PAGE]
    test eax, eax

    ; 3: cmp sets ZF PF; a store faults; sub overwrites them; the store's
    ; address register is not written between the flags and the access.
    unmap
    mov r8d, 5
    mov r9d, 3
    cmp r8d, 5                      ; ZF PF = 0x44
    mov [PAGE + 0x10], r8d
    sub r9d, r9d

    ; 4: every flag set by popfq, a read-modify-write faults; cmp
    ; overwrites them.
    unmap
    mov eax, 0x8d5 | 2
    push rax
    popfq
    or dword [PAGE + 8], 0
    cmp eax, eax

    ; 5: every flag clear (xor then add 0), a load with an index faults
    ; right after a flag writer that names neither address register; the
    ; flags read afterwards are the load's unit's own.
    unmap
    jmp .c5
.c5:
    mov esi, 0x18
    mov eax, 1
    add eax, 1                      ; 2: no flag set
    mov r12d, [rsi + PAGE]
    sub eax, 2                      ; ZF PF
    setz r11b
    movzx r11d, r11b
    mov r10d, 0x8d5

    ; 6: add writes CF ZF AF PF (not what the lookup's own test leaves);
    ; the load faults; add must have run once (eax 0, not -1).
    unmap
    jmp .c6
.c6:
    mov esi, 0x20
    mov eax, 1
    add eax, -1                     ; 0: CF ZF AF PF = 0x55
    mov r13d, [rsi + PAGE]
    sub r9d, r9d
    mov r14d, eax

    ; 7: the page present but not in the TLB: a load and a store after
    ; flag writers miss and fill; setnz reads test's flags afterwards.
    invlpg [PAGE]
    jmp .c7
.c7:
    mov esi, 0x30
    mov eax, 5
    cmp eax, 5                      ; ZF PF
    lea edi, [rax + 1]
    mov ebp, [rsi + PAGE]
    test edi, edi
    mov [rsi + PAGE + 4], edi
    setnz cl                        ; test's ZF clear: 1
    movzx ecx, cl
    hlt

    pf_flags_handler

%define IDT_GATES 32
%define IDT_VECTOR 14
%define IDT_HANDLER h_pf
%include "idt64_one.inc"
