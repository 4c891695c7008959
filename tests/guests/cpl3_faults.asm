; User-mode (CPL 3, IOPL 0) cases the differential tester (tools/difftest)
; found BT getting wrong, each checked through what a CPL 0 handler sees.
; Every handler records the vector, error code, and the frame's RIP,
; RFLAGS and RSP, plus its own RSP (the TSS stack switch), into the
; record the user code chose (+0 vector, +8 error code, +16 RIP less the
; expected one, +24 handler RSP, +40 RFLAGS, +48 RSP), and resumes at the
; address it chose.
;  1. rdpmc with CR4.PCE clear: #GP(0) (BT raised #UD).
;  2. pop qword [not present]: #PF with the frame holding the RSP before
;     the pop and the handler on the kernel stack (BT pushed RSP + 8 and
;     then put the user's RSP back over the kernel's).
;  3. popfq setting TF: #DB after the next instruction, RIP after it (BT
;     let the link to the next fragment overwrite the handler's RIP).
;  4. stmxcsr after divps of (1, 0, 0, 0) by zero: ZE and IE set (BT
;     reported the flags of the last ldmxcsr only).
;  5. port I/O checks one bitmap bit per port (BT checked `size` bytes'
;     worth of bits): with port 0xec denied, "in al, 0xea" works and
;     "in al, 0xec" raises #GP(0).
;  6. alignment checks at CPL 3 with CR0.AM and RFLAGS.AC: #AC(0) for a
;     misaligned mov, push, lodsd, an 80-bit fld not 8-byte aligned and
;     an fnstenv area not 4-byte aligned (BT had none).
;  7. enter whose final RSP is misaligned: #AC with RSP as it was (BT
;     did not probe the final stack pointer, as the SDM's #PF condition
;     and the hosts do).
; mode: long64-cpl3
; reg: rflags=0x202
; kernel-stack: 0x70000
; idt: 0x12000 0x1ff
; cr0-set: 0x40000
; expect: r15=7
; expect-mem: 0x30000 0d 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 ff 06 00 00 00 00 00
; expect-mem: 0x30028 46 02 01 00 00 00 00 00 00 00 08 00 00 00 00 00
; expect-mem: 0x30040 0e 00 00 00 00 00 00 00 06 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 ff 06 00 00 00 00 00
; expect-mem: 0x30068 02 02 01 00 00 00 00 00 f8 ff 07 00 00 00 00 00
; expect-mem: 0x30080 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 ff 06 00 00 00 00 00
; expect-mem: 0x300a8 02 03 00 00 00 00 00 00 00 00 08 00 00 00 00 00
; expect-mem: 0x300c0 85 1f 00 00
; expect-mem: 0x30100 0d 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 ff 06 00 00 00 00 00
; expect-mem: 0x30128 02 02 01 00 00 00 00 00 00 00 08 00 00 00 00 00
; expect-mem: 0x30140 11 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 ff 06 00 00 00 00 00
; expect-mem: 0x30180 11 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 ff 06 00 00 00 00 00
; expect-mem: 0x301b0 fc ff 07 00 00 00 00 00
; expect-mem: 0x301c0 11 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 ff 06 00 00 00 00 00
; expect-mem: 0x30240 11 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 ff 06 00 00 00 00 00
; expect-mem: 0x30280 11 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 ff 06 00 00 00 00 00
; expect-mem: 0x30200 11 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 ff 06 00 00 00 00 00
; expect-mem: 0x30230 00 00 08 00 00 00 00 00
bits 64
%define ORG 0x10000
org ORG
%define RESUME 0x31000
%define RECORD 0x31008
%define TSS_IOMAP 0x1000e8  ; tables 0x100000, TSS at +0x80, bitmap at +0x68

user:
    xor r15d, r15d
    ; 1. rdpmc
    mov qword [RECORD], 0x30000
    lea rax, [rel .c2]
    mov [RESUME], rax
.pmc:
    rdpmc
    ud2
.c2:
    lea rax, [rel .pmc]
    sub [0x30010], rax              ; 0: the faulting instruction
    inc r15
    ; 2. pop to a not-present address
    mov qword [RECORD], 0x30040
    lea rax, [rel .c3]
    mov [RESUME], rax
    mov rbx, 0x100000000000
    push rbx
.pop:
    pop qword [rbx]
    ud2
.c3:
    lea rax, [rel .pop]
    sub [0x30050], rax
    add rsp, 8
    inc r15
    ; 3. popfq setting TF traps after the next instruction
    mov qword [RECORD], 0x30080
    lea rax, [rel .c4]
    mov [RESUME], rax
    push 0x302
    popfq
    nop
.after_nop:
    nop
    ud2
.c4:
    lea rax, [rel .after_nop]
    sub [0x30090], rax
    inc r15
    ; 4. SSE exception flags reach stmxcsr
    mov eax, 0x3f800000
    movd xmm0, eax
    pxor xmm1, xmm1
    divps xmm0, xmm1
    stmxcsr [0x300c0]
    inc r15
    ; 5. the I/O permission bitmap, one bit per port
    mov qword [RECORD], 0x30100
    lea rax, [rel .c6]
    mov [RESUME], rax
    or byte [TSS_IOMAP + 0xec / 8], 1 << (0xec & 7)
    in al, 0xea                     ; allowed: no record
.in:
    in al, 0xec
    ud2
.c6:
    lea rax, [rel .in]
    sub [0x30110], rax
    inc r15
    ; 6. alignment checks (CR0.AM from the host, RFLAGS.AC from popfq):
    ;    an inline memory operand, a push, a string element
    push 0x40202
    popfq
    mov qword [RECORD], 0x30140
    lea rax, [rel .c6b]
    mov [RESUME], rax
    mov eax, [0x32000]              ; aligned: no record
.ac_mov:
    mov eax, [0x32001]
    ud2
.c6b:
    lea rax, [rel .ac_mov]
    sub [0x30150], rax
    mov qword [RECORD], 0x30180
    lea rax, [rel .c6c]
    mov [RESUME], rax
    sub rsp, 4
.ac_push:
    push rax
    ud2
.c6c:
    add rsp, 4
    lea rax, [rel .ac_push]
    sub [0x30190], rax
    mov qword [RECORD], 0x301c0
    lea rax, [rel .c7]
    mov [RESUME], rax
    mov esi, 0x32002
.ac_lods:
    lodsd
    ud2
.c7:
    lea rax, [rel .ac_lods]
    sub [0x301d0], rax
    mov qword [RECORD], 0x30240
    lea rax, [rel .c6e]
    mov [RESUME], rax
    fld tword [0x32008]             ; 8-byte aligned: no record
    fstp st0
.ac_fld:
    fld tword [0x32004]
    ud2
.c6e:
    lea rax, [rel .ac_fld]
    sub [0x30250], rax
    mov qword [RECORD], 0x30280
    lea rax, [rel .c6f]
    mov [RESUME], rax
    fnstenv [0x32004]               ; 4-byte aligned: no record
    xor eax, eax                    ; (BT does not virtualize the x87
%assign a 0x32004                   ; FIP/FDP the image holds: wiped,
%rep 7                              ; dword by dword: AC is on)
    mov [a], eax
%assign a a + 4
%endrep
.ac_env:
    fnstenv [0x32002]
    ud2
.c6f:
    lea rax, [rel .ac_env]
    sub [0x30290], rax
    inc r15
    ; 7. enter probes the final stack pointer (#AC here) before it
    ;    commits anything
    mov qword [RECORD], 0x30200
    lea rax, [rel .c8]
    mov [RESUME], rax
.enter:
    enter 2, 0
    ud2
.c8:
    lea rax, [rel .enter]
    sub [0x30210], rax
    push 0x202
    popfq
    inc r15
    out 0xeb, al
    ud2

; CPL 0 handlers: [rsp] vector, then error code, RIP, CS, RFLAGS, RSP, SS.
h_common:
    push rax
    push rbx
    mov rbx, [RECORD]
    lea rax, [rsp + 16]
    mov [rbx + 24], rax             ; the handler's RSP (below the frame)
    mov rax, [rsp + 16]
    mov [rbx], rax                  ; vector
    mov rax, [rsp + 24]
    mov [rbx + 8], rax              ; error code
    mov rax, [rsp + 32]
    mov [rbx + 16], rax             ; RIP
    mov rax, [rsp + 48]
    mov [rbx + 40], rax             ; RFLAGS
    mov rax, [rsp + 56]
    mov [rbx + 48], rax             ; RSP
    mov rax, [RESUME]
    mov [rsp + 32], rax
    and qword [rsp + 48], ~0x100    ; TF off
    pop rbx
    pop rax
    add rsp, 16
    iretq

%assign v 0
%rep 32
h %+ v:
%if v != 8 && v != 10 && v != 11 && v != 12 && v != 13 && v != 14 && v != 17
    push 0
%endif
    push v
    jmp h_common
%assign v v + 1
%endrep

%include "gate64.inc"

times 0x2000 - ($ - $$) db 0
idt:
%assign v 0
%rep 32
    gate64 h %+ v
%assign v v + 1
%endrep
