; 32-bit protected mode with privilege levels: the guest loads its own GDT
; (ring 0 and ring 3 code and data, a 32-bit TSS) and IDT, enters ring 3
; with iret, calls into ring 0 through an int 0x80 trap gate of DPL 3 (the
; TSS supplies the ring-0 stack), returns with iret; cli at ring 3 with
; IOPL 0 raises #GP, whose handler records the error code and EIP and
; skips the instruction; int 0x81 ends in ring 0.
; mode: prot32
; expect: rax=10 rbx=10 rcx=0 rdi=0x7f000 rsp=0x7ffec cs=0x8 ss=0x10
; expect-mem: 0x30000 ec ff 07 00
; expect-mem: 0x30008 00 00 00 00
; kvm-host-limit: internal "this host's KVM (PVM) emulates CPL 0 code with KVM's instruction emulator, whose iret handles only real mode (emulation failure on the iret to ring 3)"
bits 32
%define ORG 0x10000
org ORG
%define A(x) ((x) - $$ + ORG)
    lgdt [gdtr]
    lidt [idtr]
    mov ax, 0x10
    mov ss, ax
    jmp 0x08:.k0                    ; CS from our GDT
.k0:
    mov esp, 0x80000
    mov ax, 0x23                    ; ring-3 data, usable in both rings
    mov ds, ax
    mov es, ax
    mov ax, 0x28
    ltr ax
    push 0x23                       ; iret to ring 3: ss, esp, eflags, cs, eip
    push 0x7f000
    push 0x2
    push 0x1b
    push user
    iret

user:
    mov eax, 5
    int 0x80                        ; eax *= 2 in ring 0
    mov ebx, eax
cli_at:
    cli                             ; #GP(0): IOPL is 0
    mov ecx, [0x30008]
    mov edx, [0x3000c]
    sub edx, cli_at                 ; 0: EIP of the cli
    add ecx, edx
    int 0x81

h80:
    add eax, eax
    mov [0x30000], esp              ; 0x80000 - 5 dwords pushed
    iret
hgp:
    pop dword [0x30008]             ; the error code
    mov edx, [esp]
    mov [0x3000c], edx              ; the faulting EIP
    inc dword [esp]                 ; cli is one byte
    iret
h81:
    mov edi, [esp + 12]             ; ring 3's ESP
    hlt

align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff           ; 0x08 ring 0 code
    dq 0x00cf92000000ffff           ; 0x10 ring 0 data
    dq 0x00cffa000000ffff           ; 0x18 ring 3 code
    dq 0x00cff2000000ffff           ; 0x20 ring 3 data
    dw 0x67, A(tss) & 0xffff        ; 0x28 32-bit TSS
    db (A(tss) >> 16) & 0xff, 0x89, 0, A(tss) >> 24
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt

%macro gate 2                       ; handler, type/attributes byte
    dw A(%1) & 0xffff, 0x08
    db 0, %2
    dw A(%1) >> 16
%endmacro
align 8
idt:
%assign v 0
%rep 0x82
%if v == 0x0d
    gate hgp, 0x8e
%elif v == 0x80
    gate h80, 0xef
%elif v == 0x81
    gate h81, 0xee
%else
    dq 0
%endif
%assign v v + 1
%endrep
idt_end:
idtr:
    dw idt_end - idt - 1
    dd idt

align 4
tss:
    dd 0
    dd 0x80000                      ; esp0
    dd 0x10                         ; ss0
    times 22 dd 0
    dw 0, 104                       ; no I/O bitmap
