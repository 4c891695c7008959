; Lookups that clobber the flags in place and make them again (BT's
; "rebuilt flags", docs/bt.md, "The memory path"): where the last flag
; writer before an access is and/or/xor (flags from its result) or
; cmp/test (run again), and nothing between names its registers. Each
; case keeps the lookup from being hoisted instead (the writer names the
; access's address register). Faults (2-4 MiB not present) record the
; pushed RFLAGS and CR2 and make the page present; the other cases find
; the page present but not in the TLB, so the lookup misses, fills and
; runs again, and read the flags after the access. A: xor, then a load
; faults (AF was set before the xor: it must be clear). G: the same with
; an add from memory, which writes every flag itself. C: two loads after
; one xor, the first hoisted, the second faulting. D: the xor's register
; rewritten before the access: its flags cannot be had from it, and the
; fault must still see them. B: cmp run again after a load and a store,
; the flags read afterwards. E: cmovz from memory reads test's flags.
; F: and on AH. 64-bit, CPL 0.
; mode: long64
; mem: 0x400000
; expect: r15=4 rcx=0 rdx=0x1234 rbx=0x5a r9=0x77 r11=0xabcd r12=0 r13=0
; expect: r10=0x91 r14=0x80 rsi=0x44
; expect-mem: 0x30000 84 00 00 00 00 00 00 00 44 00 00 00 00 00 00 00
; expect-mem: 0x30010 44 00 00 00 00 00 00 00 80 00 00 00 00 00 00 00
; expect-mem: 0x30040 00 00 20 00 00 00 00 00 10 00 20 00 00 00 00 00
; expect-mem: 0x30050 60 00 20 00 00 00 00 00 70 00 20 00 00 00 00 00
; expect-mem: 0x200044 03 00 00 00
bits 64
%define ORG 0x10000
org ORG
%include "identity_pd.inc"
%include "pf_flags.inc"
%define PAGE 0x200000

start:
    lidt [rel idtr]
    xor r15d, r15d
    mov dword [PAGE + 0x40], 0x77
    mov dword [PAGE + 0x80], 0x1234
    mov byte [PAGE + 0x90], 0x5a
    mov dword [0x30100], 0xabcd
    identity_pd
    mov [rel pd], rax

    ; A: xor leaves SF PF (0x84); AF set before it must not come back.
    unmap
    jmp .a
.a:
    mov ebx, 0x0f
    add bl, 0x0f                    ; AF
    mov eax, 0x80000001
    mov esi, 2
    xor eax, esi                    ; 0x80000003: SF PF
    mov ecx, [rsi + PAGE - 2]

    ; G: xor leaves ZF PF (0x44); add from memory faults.
    unmap
    jmp .g
.g:
    mov eax, 0x10
    mov esi, 0x10
    mov edx, 0
    xor eax, esi                    ; 0: ZF PF
    add edx, [rsi + PAGE]

    ; C: xor leaves ZF PF; a load from mapped memory (hoisted above the
    ; xor), then one that faults.
    unmap
    jmp .c
.c:
    mov eax, 0x40
    mov edx, 0x40
    xor eax, edx                    ; 0: ZF PF
    mov r11d, [0x30100]
    mov r12d, [rax + PAGE + 0x60]

    ; D: xor leaves SF (0x80); eax rewritten before the faulting load.
    unmap
    jmp .d
.d:
    mov eax, 0x80000000
    mov esi, 1
    xor eax, esi                    ; 0x80000001: SF
    mov eax, 0
    mov r13d, [rsi + PAGE + 0x6f]

    ; B: cmp leaves CF AF SF (3 - 5 = -2; 0xfe has seven bits: PF
    ; clear). A load and a store after it (the load names, not writes,
    ; r8) miss, fill and run again; the flags afterwards are cmp's.
    invlpg [PAGE]
    jmp .b
.b:
    mov r8d, 3
    cmp r8d, 5
    mov r9d, [r8 + PAGE + 0x3d]
    mov [r8 + PAGE + 0x41], r8d
    pushfq
    pop r10
    and r10d, 0x8d5

    ; E: test leaves ZF PF; cmovz from memory reads them.
    invlpg [PAGE]
    jmp .e
.e:
    mov ecx, 0
    mov edx, 7
    test ecx, ecx                   ; ZF PF
    cmovz edx, [rcx + PAGE + 0x80]
    pushfq
    pop rsi
    and esi, 0x8d5

    ; F: and on AH leaves SF (0x80), PF clear (one bit).
    invlpg [PAGE]
    jmp .f
.f:
    mov eax, 0x8000
    and ah, 0xc0
    mov bl, [rax + PAGE + 0x90 - 0x8000]
    pushfq
    pop r14
    and r14d, 0x8d5
    hlt

    pf_flags_handler

%define IDT_GATES 32
%define IDT_VECTOR 14
%define IDT_HANDLER h_pf
%include "idt64_one.inc"
