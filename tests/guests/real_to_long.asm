; The guest goes from real mode to protected mode to long mode by itself:
; lgdt, CR0.PE and a far jump to 32-bit code; identity page tables, PAE,
; EFER.LME and CR0.PG; a far jump to 64-bit code, which stores a 64-bit
; value and halts.
; mode: real
; expect: rax=0x123456789abcdef0 cs=0x18 ds=0x10 cr0=0x80000011 cr4=0x20 cr3=0x20000 efer=0x500
; expect-mem: 0x30000 f0 de bc 9a 78 56 34 12
bits 16
org 0x1000
    cli
    o32 lgdt [gdtr]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    jmp 0x08:prot

bits 32
prot:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x8000
    mov dword [0x20000], 0x21003        ; PML4[0] -> PDPT
    mov dword [0x21000], 0x22003        ; PDPT[0] -> PD
    mov dword [0x22000], 0x83           ; PD[0]: 2 MiB identity page
    mov eax, 0x20000
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20                        ; PAE
    mov cr4, eax
    mov ecx, 0xc0000080                 ; EFER
    rdmsr
    or eax, 0x100                       ; LME
    wrmsr
    mov eax, cr0
    or eax, 0x80000000                  ; PG: long mode becomes active
    mov cr0, eax
    jmp 0x18:lm64

bits 64
lm64:
    mov rax, 0x123456789abcdef0
    mov [0x30000], rax
    hlt

align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff               ; 0x08: 32-bit code
    dq 0x00cf92000000ffff               ; 0x10: data
    dq 0x00af9a000000ffff               ; 0x18: 64-bit code
gdtr:
    dw gdtr - gdt - 1
    dd gdt
