; i8042 probe and reset for test_dev_i8042.c (not a guest_runner program).
; 64-bit, CPL 3. Controller self-test (0xAA -> expect 0x55), read the
; command byte (0x20), then pulse the reset line (0xFE). Results at
; 0x30000: [0] self-test answer, [1] command byte, [2] status after reads.
; A reset that does not happen falls through to a write to port 0xeb.
bits 64
org 0x10000
    mov al, 0xaa
    out 0x64, al
    call read_data
    mov [0x30000], al
    mov al, 0x20
    out 0x64, al
    call read_data
    mov [0x30001], al
    in al, 0x64
    mov [0x30002], al
    mov al, 0xfe
    out 0x64, al
.fallthrough:
    out 0xeb, al
    jmp .fallthrough

; Wait for the output buffer (status bit 0), then read the data port.
read_data:
    mov ecx, 1000
.poll:
    in al, 0x64
    test al, 1
    jnz .ready
    dec ecx
    jnz .poll
    mov al, 0xee            ; timed out
    ret
.ready:
    in al, 0x60
    ret
