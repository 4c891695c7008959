; An interrupt that arrives while an MMIO read is being served is taken
; after the reading instruction completes, not in the middle of it: the
; host injects it from the device's read callback; the handler reads the
; device too. Three accesses in all (the write, the read, the handler's
; read), and the read's value. Regression: BT delivered the interrupt
; before re-executing the half-done read; the handler's MMIO read replaced
; the served read in its log, and the instruction read the device again.
; mode: long64
; inject-on-mmio-read: 32
; expect: rax=0x1234 rbx=0 r15=1
; expect-mmio: 3
bits 64
%define ORG 0x10000
org ORG
%define MMIO 0xd0000000

start:
    lidt [rel idtr]
    xor r15d, r15d
    mov ebx, 1
    mov rsi, MMIO
    mov dword [rsi], 0x1234
    sti
    mov eax, [rsi]                  ; the interrupt arrives during this read
.wait:
    test r15, r15                   ; KVM may take it a few instructions later
    jz .wait
    cli
    mov ecx, 5                      ; clear the frame (its RIP is the engine's
.clear:                             ; choice) for the RAM comparison
    mov qword [rsp + rcx * 8 - 48], 0
    loop .clear
    hlt

h_irq:
    mov ebx, [rsi + 4]
    inc r15
    iretq
%include "idt64_irq32.inc"
