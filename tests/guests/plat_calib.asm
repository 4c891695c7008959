; TSC calibration against the 8254 as Linux does it (pit_calibrate_tsc()):
; counter 2 in mode 0 with its gate on through port 0x61 (speaker off),
; then poll port 0x61 bit 5 (OUT2) until the count of esi ticks has run
; out, reading the TSC before and after and at every poll. Results:
; DATA+0 qword TSC ticks elapsed, DATA+8 dword polls, DATA+16 qword the
; longest gap between two polls (the measurement's resolution: Linux
; rejects a calibration whose gaps are too long), DATA+24 qword the TSC
; ticks from just before the write that starts the count to the start
; reading (the count starts somewhere in between, an I/O exit). Ends with
; 0 on the exit port.
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
    mov ebx, eax
    rdtsc                           ; before the count starts
    shl rdx, 32
    or rax, rdx
    mov [DATA + 24], rax
    mov al, bh
    out 0x42, al                    ; the MSB starts the count
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r8, rax                     ; start
    mov r10, rax                    ; previous poll
    sub rax, [DATA + 24]
    mov [DATA + 24], rax            ; how long the starting write took
    xor r9d, r9d                    ; longest gap
    xor ecx, ecx
.poll:
    inc ecx
    in al, 0x61
    mov r11d, eax
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov rdx, rax
    sub rdx, r10
    mov r10, rax
    cmp rdx, r9
    jbe .shorter
    mov r9, rdx
.shorter:
    test r11b, 0x20
    jz .poll
    sub rax, r8
    mov [DATA], rax
    mov [DATA + 8], ecx
    mov [DATA + 16], r9
    xor eax, eax
    out EXIT_PORT, al
    hlt
