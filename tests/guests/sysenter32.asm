; 32-bit fast system calls: the guest loads a GDT laid out for sysenter
; (ring 0 code/data at SYSENTER_CS and +8, ring 3 code/data at +16 and
; +24), programs the SYSENTER MSRs with wrmsr, drops to ring 3 with
; sysexit (EIP from edx, ESP from ecx), and calls back with sysenter
; twice. The kernel side checks what sysenter loaded (CS, SS, ESP from the
; MSR, IF cleared) and what ring 3 saw (CS 0x1b, SS 0x23).
; mode: prot32
; expect: rax=142 rbx=0xdead rsp=0x80000 cs=0x8 ss=0x10
; expect-mem: 0x30000 00 00 08 00
; expect-mem: 0x30004 1b 00 23 00
; expect-mem: 0x30008 00 00 00 00
; expect-mem: 0x3000c 00 f0 07 00
; expect-mem: 0x30010 08 00
bits 32
%define ORG 0x10000
org ORG
    lgdt [gdtr]
    mov ax, 0x10
    mov ss, ax
    jmp 0x08:.k0
.k0:
    mov ax, 0x23                    ; ring-3 data, usable in both rings
    mov ds, ax
    mov es, ax
    xor edx, edx
    mov ecx, 0x174                  ; IA32_SYSENTER_CS
    mov eax, 0x08
    wrmsr
    mov ecx, 0x175                  ; IA32_SYSENTER_ESP
    mov eax, 0x80000
    wrmsr
    mov ecx, 0x176                  ; IA32_SYSENTER_EIP
    mov eax, kentry
    wrmsr
    mov esi, 3
    mov ecx, 0x7f000                ; ring 3's stack
    mov edx, user
    sti                             ; sysenter must clear it again
    sysexit

user:
    mov [0x30004], cs
    mov [0x30006], ss
    mov eax, 7
    imul eax, esi                   ; 21
    mov ecx, esp                    ; our convention: ecx = user ESP,
    mov edx, back                   ; edx = where to come back
    sysenter
back:
    add eax, 100                    ; 142
    mov [0x3000c], esp
    mov ebx, 0xdead
    sysenter

kentry:
    pushfd
    pop dword [0x30008]
    and dword [0x30008], 0x200      ; IF
    cmp ebx, 0xdead
    je .done
    add eax, eax                    ; 42
    mov [0x30000], esp
    mov [0x30010], cs
    sysexit
.done:
    hlt

align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff           ; 0x08 ring 0 code (SYSENTER_CS)
    dq 0x00cf92000000ffff           ; 0x10 ring 0 data
    dq 0x00cffa000000ffff           ; 0x18 ring 3 code
    dq 0x00cff2000000ffff           ; 0x20 ring 3 data
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt
