; Multiboot v1 entry shared by libvmm's guest kernels (test and benchmark):
; 32-bit protected mode with EAX = 0x2BADB002 and EBX = the info structure;
; builds identity page tables for the first 4 GiB (user-accessible, so the
; kernels can run CPL 3 code anywhere), enters long mode and calls
; kmain(magic, info). Also the exception stubs and the syscall entry.
bits 32

MB_MAGIC equ 0x1BADB002
MB_FLAGS equ 0x00000003         ; align modules, want memory information

section .multiboot progbits alloc noexec nowrite align=4
    dd MB_MAGIC
    dd MB_FLAGS
    dd -(MB_MAGIC + MB_FLAGS)

section .text
global _start
extern kmain
_start:
    cli
    mov esp, boot_stack_top
    mov edi, eax                ; kmain's first argument
    mov esi, ebx                ; second

    ; PML4[0] -> PDPT; PDPT[0..3] -> PD0..3; each PD: 512 x 2 MiB pages
    mov eax, pdpt
    or eax, 7
    mov [pml4], eax
    mov ecx, 0
.pdpt:
    mov eax, ecx
    shl eax, 12
    add eax, pds
    or eax, 7
    mov [pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jne .pdpt
    mov ecx, 0
.pd:
    mov eax, ecx
    shl eax, 21
    or eax, 0x87                ; present, writable, user, 2 MiB
    mov [pds + ecx * 8], eax
    mov eax, ecx
    shr eax, 11                 ; bits 32+ of the physical address
    mov [pds + ecx * 8 + 4], eax
    inc ecx
    cmp ecx, 2048
    jne .pd

    lgdt [gdt_ptr]
    mov eax, cr4
    or eax, 1 << 5              ; PAE
    mov cr4, eax
    mov eax, pml4
    mov cr3, eax
    mov ecx, 0xc0000080         ; EFER
    rdmsr
    or eax, 1 << 8              ; LME
    wrmsr
    mov eax, cr0
    or eax, (1 << 31) | 1       ; PG, PE
    mov cr0, eax
    jmp 0x08:long_entry

bits 64
long_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, boot_stack_top
    call kmain
.halt:
    cli
    hlt
    jmp .halt

; Exception entry stubs: push a uniform frame (vector, error code) and call
; the C handler, which may change the saved RIP to skip the faulting code.
%macro STUB 1
global isr%1
isr%1:
%if %1 != 8 && %1 != 10 && %1 != 11 && %1 != 12 && %1 != 13 && %1 != 14 && %1 != 17
    push 0                      ; no error code from the processor
%endif
    push %1
    jmp isr_common
%endmacro
%assign v 0
%rep 32
STUB v
%assign v v + 1
%endrep

extern trap
isr_common:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    mov rdi, rsp                ; struct frame *
    call trap
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    add rsp, 16                 ; vector, error code
    iretq

; SYSCALL entry: rax = 0 returns at once (the benchmark's round trip);
; anything else ends user mode: back to the kernel stack saved by
; klib_enter_user() and return from it.
global syscall_entry
extern user_return_rsp
syscall_entry:
    test rax, rax
    jnz .leave
    o64 sysret
.leave:
    mov rsp, [rel user_return_rsp]
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

; void klib_enter_user(void (*fn)(void), uint64_t user_stack):
; run fn at CPL 3 until it executes syscall with rax != 0.
global klib_enter_user
klib_enter_user:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rel user_return_rsp], rsp
    push 0x1b                   ; SS: user data | 3
    push rsi                    ; RSP
    push 0x2                    ; RFLAGS: interrupts off
    push 0x23                   ; CS: user code 64 | 3
    push rdi                    ; RIP
    iretq

section .data
align 16
; 0x08 kernel code 64, 0x10 kernel data, 0x18 user data, 0x20 user code 64:
; the layout SYSRET wants with STAR[63:48] = 0x10.
gdt:
    dq 0
    dq 0x00af9a000000ffff
    dq 0x00cf92000000ffff
    dq 0x00cff2000000ffff
    dq 0x00affa000000ffff
gdt_end:
gdt_ptr:
    dw gdt_end - gdt - 1
    dq gdt

section .bss
align 4096
pml4: resb 4096
pdpt: resb 4096
pds: resb 4096 * 4
boot_stack: resb 16384
boot_stack_top:

section .note.GNU-stack noalloc noexec nowrite progbits
