; String instructions with rep prefixes at CPL 3: stosb, movsq forward,
; movsb backward (DF=1), overlapping movsb (pattern propagation), stosd,
; repe cmpsb stopping at the first difference, repne scasb finding a byte,
; and lodsb in a loop.
; mode: long64-cpl3
; expect: r8=26 r9=0x30026 r10=57 r11=0x3002b r12=120
; expect-mem: 0x31000 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f
; expect-mem: 0x32010 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f
; expect-mem: 0x3200f 00 10
; expect-mem: 0x33000 ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab 00
; expect-mem: 0x34000 44 33 22 11 44 33 22 11 44 33 22 11 44 33 22 11 00
bits 64
org 0x10000
    cld
    mov rdi, 0x30000               ; 0x30000.. = 0, 1, ..., 63
    xor eax, eax
.fill:
    stosb
    inc al
    cmp al, 64
    jne .fill
    mov rsi, 0x30000               ; 64 bytes to 0x31000
    mov rdi, 0x31000
    mov ecx, 8
    rep movsq
    std                            ; 0x30010..0x3001f to 0x32010.., backwards
    mov rsi, 0x3001f
    mov rdi, 0x3201f
    mov ecx, 16
    rep movsb
    cld
    mov byte [0x33000], 0xab       ; overlapping copy spreads the byte
    mov rsi, 0x33000
    mov rdi, 0x33001
    mov ecx, 31
    rep movsb
    mov eax, 0x11223344
    mov rdi, 0x34000
    mov ecx, 4
    rep stosd
    mov byte [0x31025], 0xff       ; first difference at index 0x25
    mov rsi, 0x30000
    mov rdi, 0x31000
    mov ecx, 64
    repe cmpsb
    mov r8, rcx
    mov r9, rsi
    mov al, 0x2a                   ; 0x2a is at index 42
    mov rdi, 0x30000
    mov ecx, 100
    repne scasb
    mov r10, rcx
    mov r11, rdi
    mov rsi, 0x30000               ; 0 + 1 + ... + 15
    mov ecx, 16
    xor edx, edx
.sum:
    lodsb
    add dl, al
    loop .sum
    mov r12, rdx
    mov byte [0x31025], 0x25
    out 0xeb, al
