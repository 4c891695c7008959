; 32-bit compatibility mode at CPL 3 (long mode, CS 0x23: L=0, D=1,
; DPL 3), entered from 64-bit user code by a far return and left by
; another: the instructions that exist only outside 64-bit mode (0x40-0x4f
; inc/dec, pusha/popa, daa/das/aaa/aas/aam/aad, push/pop of segment
; registers, bound, arpl, les/lds, far call/jmp/ret, 16-bit loop and push)
; and 32-bit stack, jecxz, loop, xlat and flags. Each case starts from the
; same registers and stores EAX at 0x30000 + 4 * case; the expected values
; follow the SDM's descriptions of each instruction.
; mode: long64-cpl3
; expect: rsp=0x80000 cs=0x33
; expect-mem: 0x30000 16 00 00 00 14 00 00 00 00 00 08 00 20 10 03 00 42 00 00 00 08 00 00 00 00 01 00 00 08 ff 00 00
; expect-mem: 0x30020 01 02 00 00 33 00 00 00 23 00 00 00 2b 00 00 00 00 00 08 00 15 00 00 00 17 00 00 00 34 12 00 00
; expect-mem: 0x30040 34 12 00 00 15 00 00 00 03 00 00 00 71 02 01 00 ff ff ff ff 99 00 00 00 ff ff 01 00 00 00 08 00
; expect-mem: 0x30060 fe ff 07 00 54 00 00 00 96 00 00 00 15 00 00 00
; kvm-host-limit: shutdown "this host's KVM (PVM) does not run compatibility-mode code natively: it is emulated (about 1 us per instruction), and daa, das, aam, aad, push/pop of segment registers, into and far call raise #UD there, aaa, aas, bound and les/lds end in an internal error (raw-ioctl repro in tests/kvm_host_probe.c)"
bits 64
org 0x10000
    push 0x23
    push c32
    retfq
back64:
    out 0xeb, al

bits 32
%macro init 0
    mov eax, 0x15
    mov ecx, 3
    mov ebx, 0x31000
    mov edi, 0x31020
%endmacro
%assign n 0
%macro save 0
    mov [0x30000 + 4*n], eax
%assign n n+1
%endmacro
c32:
    mov esp, 0x80000
    mov dword [0x31000], 0
    mov dword [0x31004], 0x100
    mov dword [0x31030], 0x1234
    mov dword [0x31034], 0x2b
    mov byte [0x31015], 0x99
    init
    inc eax
    save            ; 0: 0x16
    init
    dec eax
    save            ; 1: 0x14
    init
    pusha
    popa
    mov eax, esp
    save            ; 2: 0x80000
    init
    pusha
    pop eax
    add esp, 28
    save            ; 3: 0x31020
    init
    add al, 0x27
    daa
    save            ; 4: 0x42
    init
    sub al, 7
    das
    save            ; 5: 0x08
    init
    add al, 5
    aaa
    save            ; 6: 0x100
    init
    sub al, 7
    aas
    save            ; 7: 0xff08
    init
    aam
    save            ; 8: 0x201
    init
    mov ah, 3
    aad
    save            ; 9: 0x33
    init
    push cs
    pop eax
    save            ; 10: 0x23
    init
    push ds
    pop eax
    save            ; 11: 0x2b
    init
    push 0x2b
    pop ds
    mov eax, esp
    save            ; 12: 0x80000
    init
    bound eax, [ebx]
    save            ; 13: 0x15
    init
    arpl ax, cx
    save            ; 14: 0x17
    init
    les eax, [ebx+0x30]
    save            ; 15: 0x1234
    init
    lds eax, [ebx+0x30]
    save            ; 16: 0x1234
    init
    xor ecx, ecx
    jecxz .j
    mov al, 1
.j: save            ; 17: 0x15
    init
    mov al, 0
.l: inc al
    loop .l
    save            ; 18: 3
    init
    call 0x23:farfn
    save            ; 19: ret addr
    init
    push -1
    pop eax
    save            ; 20: -1
    init
    xlatb
    save            ; 21: 0x99
    init
    mov ecx, 0x10000
    a16 loop .m     ; counts in CX only: 0 -> 0xffff, ECX[31:16] kept
.m: mov eax, ecx
    save            ; 22: 0x1ffff
    init
    push word 0x1234
    pop ax
    mov eax, esp
    save            ; 23: 0x80000
    init
    o16 push cs
    mov eax, esp
    pop cx
    save            ; 24: 0x7fffe
    init
    mov ecx, 0xffffffff
    inc ecx
    pushfd
    pop eax
    and eax, 0x8d5
    save            ; 25: ZF PF AF = 0x54
    init
    mov eax, 0x7fffffff
    inc eax
    lahf
    movzx eax, ah
    save            ; 26: SF AF PF and bit 1: 0x96
    init
    jmp 0x23:.fj    ; a far jump to the same code segment
    mov eax, 0
.fj:save            ; 27: 0x15
    push dword 0x33 ; back to 64-bit code: retf pops EIP and CS
    push dword back64
    retf
farfn:
    mov eax, [esp]
    retf
