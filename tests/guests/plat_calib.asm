; TSC calibration against the 8254 as Linux does it (pit_calibrate_tsc()):
; counter 2 in mode 0 with its gate on through port 0x61 (speaker off),
; then poll port 0x61 bit 5 (OUT2) until the count of esi ticks has run
; out, reading the TSC before and after. Results: DATA+0 qword TSC ticks
; elapsed, DATA+8 dword polls. Ends with 0 on the exit port.
bits 64
%include "plat.inc"
org ORG
    cli
    in al, 0x61
    and al, 0xfd
    or al, 0x01
    out 0x61, al
    mov al, 0xb0                    ; counter 2, LSB/MSB, mode 0, binary
    out 0x43, al
    mov eax, esi
    out 0x42, al
    mov al, ah
    out 0x42, al
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r8, rax
    xor ecx, ecx
.poll:
    inc ecx
    in al, 0x61
    test al, 0x20
    jz .poll
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, r8
    mov [DATA], rax
    mov [DATA + 8], ecx
    xor eax, eax
    out EXIT_PORT, al
    hlt
