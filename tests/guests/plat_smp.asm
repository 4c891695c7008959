; INIT/SIPI start of an application processor for test_platform.c.
; Two entry points in one image at ORG:
;   ORG + 0x000  the AP, in real mode: a SIPI with vector 0x10 starts it at
;                0x1000:0000. With interrupts off it records DATA+0x12 = its
;                CS, increments DATA+0x14 (starts), writes the mark
;                DATA+0x10 = 0xa55a last and halts right after it: the BSP
;                ends the run once it sees the mark, so anything the AP did
;                after it could be cut off (on BT, where the BSP reacts in
;                nanoseconds, now and then it was).
;   ORG + 0x100  the BSP, 64-bit: enables its APIC and sends APIC ID 1 an
;                INIT, an INIT level de-assert (a no-op, as Linux sends it)
;                and a SIPI; waits for the AP's mark (up to 10^10 TSC
;                cycles, seconds: the AP is a host thread, and a loaded
;                host may not run it for a while), sends a second SIPI
;                (the AP runs: ignored), and writes 0 on the exit port, or
;                1 if the AP never came.
bits 16
%include "plat.inc"
org ORG
ap:
    cli
    mov ax, (DATA >> 4)
    mov ds, ax
    mov [0x12], cs
    inc word [0x14]
    mov word [0x10], 0xa55a
.halt:
    hlt
    jmp .halt

times 0x100 - ($ - $$) db 0
bits 64
bsp:
    mov r15d, LAPIC
    mov dword [r15 + 0xf0], 0x1ff       ; SVR: enabled
    mov dword [r15 + 0x310], 1 << 24    ; ICR high: APIC ID 1
    mov dword [r15 + 0x300], 0x4500     ; INIT, assert
    mov dword [r15 + 0x300], 0x8500     ; INIT, level de-assert
    mov dword [r15 + 0x300], 0x4600 | (ORG >> 12) ; SIPI
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov rsi, rax
    mov r14, 10000000000
.wait:
    cmp word [DATA + 0x10], 0xa55a
    je .up
    pause
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, rsi
    cmp rax, r14
    jb .wait
    mov al, 1
    out EXIT_PORT, al
    hlt
.up:
    mov dword [r15 + 0x300], 0x4600 | (ORG >> 12) ; ignored: it runs
    xor eax, eax
    out EXIT_PORT, al
    hlt
