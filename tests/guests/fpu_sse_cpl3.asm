; x87, SSE, SSE2 and SSE4.2 at CPL 3 in long mode. Expected values were
; computed independently (exact rational arithmetic with IEEE rounding;
; CRC-32C bit by bit): sqrt(2) * 1000 rounded by fistp; 0.1 + 0.2 in
; extended precision stored as a double; a packed float multiply, square
; root and add; 1e10 / 3 in double converted with rounding; crc32 of a
; dword; popcnt; pcmpistri finding the first ',' or '!'.
; mode: long64-cpl3
; expect: rax=4 rbx=3333333333 rcx=5 rdx=29 r8=0x0dacdc3a
; expect-mem: 0x30000 86 05 00 00
; expect-mem: 0x30008 34 33 33 33 33 33 d3 3f
; expect-mem: 0x30010 3d 41 8d 40 00 00 30 41 0d fb 4a bf 00 00 c0 3f
bits 64
org 0x10000
    finit
    fld qword [rel two]
    fsqrt
    fmul qword [rel thousand]
    fistp dword [0x30000]           ; 1414
    fld qword [rel tenth]
    fadd qword [rel fifth]
    fstp qword [0x30008]            ; 0.30000000000000004

    movaps xmm0, [rel v1]
    movaps xmm1, [rel v2]
    mulps xmm0, xmm1
    sqrtps xmm2, xmm1
    addps xmm0, xmm2
    movups [0x30010], xmm0
    cvttss2si eax, xmm0             ; 4

    movsd xmm3, [rel big]
    divsd xmm3, [rel three]
    cvtsd2si rbx, xmm3              ; 3333333333

    mov r8d, 0xffffffff
    crc32 r8d, dword [rel word4]    ; CRC-32C of "libv"
    popcnt rdx, [rel pattern]       ; 29
    movdqu xmm5, [rel text]
    movdqu xmm4, [rel set]
    pcmpistri xmm4, xmm5, 0x00      ; equal any, unsigned bytes: ecx = 5
    out 0xeb, al

align 16
v1: dd 1.5, 2.25, -3.0, 4.0
v2: dd 2.0, 4.0, 0.5, 0.25
two: dq 2.0
thousand: dq 1000.0
tenth: dq 0.1
fifth: dq 0.2
big: dq 1.0e10
three: dq 3.0
pattern: dq 0xf0f0f0f012345678
word4: db "libv"
align 16
text: db "hello, world!", 0, 0, 0
set: db ",!", 0
times 13 db 0
