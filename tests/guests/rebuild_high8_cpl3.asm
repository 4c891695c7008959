; A memory instruction naming AH..BH (no REX: its lookup's two scratch
; registers must come from rax, rbx, rdx, rsi, rdi, rbp) right after a
; cmp that BT runs again after the lookup (docs/bt.md, "Rebuilt flags"),
; whose registers must then hold their guest values too. cmpxchg names
; rax, rdx (DH), rbx and rsi; the cmp names rbx (so its lookup cannot be
; hoisted above it) and rbp: one legacy register is left, and BT's
; translation failed (an internal error) instead of leaving out the
; rebuilt form. Run twice (a miss, then a hit in the lookup slot); the
; flags afterwards are cmpxchg's (ZF, then clear: the byte changed).
; mode: long64-cpl3
; expect: rcx=0x0100 rdx=0x2200 rax=0x22 r8=2
; expect-mem: 0x30000 22
bits 64
org 0x10000
    mov ebx, 0x30000
    xor esi, esi
    mov ebp, 0x30000
    mov byte [rbx], 0x11
    mov edx, 0x2200
    xor ecx, ecx
    xor r8d, r8d
.again:
    mov eax, 0x11
    cmp ebx, ebp                    ; ZF: cmpxchg's own flags replace it
    cmpxchg [rbx + rsi], dh         ; 1st: equal, stores 0x22; 2nd: al = 0x22
    setz al
    shl ecx, 8
    or cl, al
    mov al, [rbx]
    inc r8d
    cmp r8d, 2
    jne .again
    out 0xeb, al
