; The same translated loads and stores see every change the guest makes to
; their page's mapping: BT keeps a copy of the TLB entry each access site
; hit last (its lookup slot, docs/bt.md "Lookup slots"), and invlpg, a CR3
; write and a CR0 write must empty it as they empty the TLB. One piece of
; code (`probe`: a load, a store, a load after a flag writer, which BT
; hoists, a store, and a load from another 4 KiB page) runs six times on 2-4 MiB linear, which maps
; 2 MiB physical, then 4 MiB (invlpg), then 2 MiB again (CR3 written
; back), then 2 MiB read-only with CR0.WP set (its first store faults: the
; handler records the error code and CR2 and makes the page writable),
; then 4 MiB once more and 2 MiB again (invlpg of another address of the
; same 2 MiB page; run 4's fault left its stores' slots empty, run 5 fills
; them all).
; After each run `note` logs the first two loads, the dword at 4 MiB + 0xc
; (through 4-6 MiB linear), which only runs on 4 MiB may change, and the
; last load. Only
; probe's accesses use slots (note and remap use string instructions,
; and are entered and left by jumps): each flush follows probe's fills,
; the last of them included.
; 64-bit, CPL 0.
; mode: long64
; mem: 0x600000
; expect: r12=6 r13=3 r14=0x200008 r15=1
; expect-mem: 0x30000 11 11 11 11 11 11 00 00 00 00 00 00 33 33 00 00
; expect-mem: 0x30010 22 22 22 22 22 22 00 00 02 00 00 00 44 44 00 00
; expect-mem: 0x30020 11 11 11 11 11 11 00 00 02 00 00 00 33 33 00 00
; expect-mem: 0x30030 11 11 11 11 11 11 00 00 02 00 00 00 33 33 00 00
; expect-mem: 0x30040 22 22 22 22 22 22 00 00 05 00 00 00 44 44 00 00
; expect-mem: 0x30050 11 11 11 11 11 11 00 00 05 00 00 00 33 33 00 00
; expect-mem: 0x200008 06 00 00 00 06 00 00 00
; expect-mem: 0x400008 05 00 00 00 05 00 00 00
bits 64
%define ORG 0x10000
org ORG
%include "identity_pd.inc"
%define PAGE 0x200000

; PDE 1 (2-4 MiB linear) := physical %1, present, writable iff %2, 2 MiB.
%macro map 2
    mov eax, %1 | 0x81 | (%2 << 1)
    lea rbp, [rel %%back]
    jmp remap
%%back:
%endmacro

; One run of probe with ebx = %1, then its log entry.
%macro run 1
    mov ebx, %1
    lea rbp, [rel %%probed]
    jmp probe
%%probed:
    lea rbp, [rel %%noted]
    jmp note
%%noted:
%endmacro

start:
    lidt [rel idtr]
    xor r12d, r12d
    xor r15d, r15d
    mov dword [0x200000], 0x11111111
    mov dword [0x200010], 0x1111
    mov dword [0x400000], 0x22222222
    mov dword [0x400010], 0x2222
    mov dword [0x203000], 0x3333
    mov dword [0x403000], 0x4444
    identity_pd
    mov r11, rax                    ; the page directory
    mov edi, 0x30000                ; note's log
    mov rax, cr0
    and eax, ~(1 << 16)             ; WP clear: supervisor writes ignore R/W
    mov cr0, rax

    map 0x200000, 1
    invlpg [PAGE]
    run 1                           ; fills probe's slots from 2 MiB

    map 0x400000, 1
    invlpg [PAGE]
    run 2                           ; 4 MiB's data, not the slots' copies

    map 0x200000, 1
    mov rax, cr3
    mov cr3, rax
    run 3

    map 0x200000, 0                 ; read-only, and WP on: the store faults
    mov rax, cr0
    or eax, 1 << 16
    mov cr0, rax
    run 4

    map 0x400000, 1
    invlpg [PAGE + 0x1000]          ; another address of the same 2 MiB page
    run 5

    map 0x200000, 1                 ; and back: run 5 filled every slot
    invlpg [PAGE + 0x1000]
    run 6
    hlt

probe:
    mov eax, [PAGE]
    mov [PAGE + 8], ebx
    add ecx, 0                      ; writes every flag: the load is hoisted
    mov edx, [PAGE + 0x10]
    mov [PAGE + 0xc], ebx
    mov r10d, [PAGE + 0x3000]       ; another 4 KiB page: its own index
    jmp rbp

note:                               ; string instructions: no slots
    mov r8d, edx
    stosd                           ; eax, at rdi
    mov eax, r8d
    stosd
    mov esi, 0x40000c
    lodsd
    stosd
    mov eax, r10d
    stosd
    inc r12
    jmp rbp

remap:                              ; stosq: no slot either
    mov r9, rdi
    lea rdi, [r11 + 8]
    stosq
    mov rdi, r9
    jmp rbp

h_pf:
    push rax
    push rbp
    mov r13, [rsp + 16]             ; error code: present, write
    mov r14, cr2
    inc r15
    map 0x200000, 1
    invlpg [PAGE]
    pop rbp
    pop rax
    add rsp, 8
    iretq

%define IDT_GATES 32
%define IDT_VECTOR 14
%define IDT_HANDLER h_pf
%include "idt64_one.inc"
