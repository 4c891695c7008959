; Local APIC timer for test_platform.c: enables the APIC (spurious vector
; 0xff), then counts timer interrupts (vector 0x40) until edi arrived,
; halting in between. ebx selects the mode: 0 one-shot (re-armed with esi
; bus ticks by the handler), 1 periodic (initial count esi), 2 TSC-deadline
; (the handler arms rdtsc + esi). Divide by 1. EOI through the EOI
; register; r15 holds the APIC's address, r14 the TSC read just before the
; last write that armed the timer. Results: DATA+0 dword ticks, DATA+4 dword
; spurious vectors, DATA+8 qword r14 at the end, and per tick (the first
; MAX_TICKS) DATA+0x100 qword the TSC at its handler's entry and DATA+0x1100
; qword r14 then (when the timer that fired was armed). Ends with 0 on the
; exit port.
bits 64
%include "plat.inc"
org ORG
    cli
    lidt [rel idtr]
    mov r15d, LAPIC                     ; (a disp32 would sign-extend)
    mov dword [r15 + 0xf0], 0x1ff     ; SVR: enabled, vector 0xff
    mov dword [r15 + 0x3e0], 0xb      ; divide by 1
    mov eax, 0x40
    cmp ebx, 1
    jne .not_periodic
    or eax, 1 << 17
.not_periodic:
    cmp ebx, 2
    jne .lvt
    or eax, 2 << 17
.lvt:
    mov [r15 + 0x320], eax            ; LVT timer
    call arm
.wait:
    sti
    hlt
    cli
    cmp [DATA], edi
    jb .wait
    mov dword [r15 + 0x320], 0x10000  ; masked: no more ticks
    xor eax, eax
    out EXIT_PORT, al
    hlt

; (Re)start the timer for the mode in ebx; r14 = the TSC just before.
arm:
    push rax
    push rcx
    push rdx
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r14, rax
    mov [DATA + 8], rax
    cmp ebx, 2
    je .tsc
    mov [r15 + 0x380], esi            ; initial count
    jmp .done
.tsc:
    add rax, rsi
    mov rdx, rax
    shr rdx, 32
    mov ecx, 0x6e0                      ; IA32_TSC_DEADLINE
    wrmsr
.done:
    pop rdx
    pop rcx
    pop rax
    ret

tick:
    push rax
    push rcx
    push rdx
    record_tick r14
    inc dword [DATA]
    cmp ebx, 1
    je .eoi
    call arm
.eoi:
    mov dword [r15 + 0xb0], 0
    pop rdx
    pop rcx
    pop rax
    iretq

spurious:
    inc dword [DATA + 4]
    iretq

bad_handler
idtr_def
align 16
idt:
%assign v 0
%rep 256
%if v == 0x40
    gate64 tick
%elif v == 0xff
    gate64 spurious
%else
    gate64 bad
%endif
%assign v v + 1
%endrep
