; The guest's own trap flag at CPL 3, #DB taken through the guest's IDT:
; popfq sets TF, and each following instruction (a nop falling through, a
; direct jmp, a lea, an indirect jmp) traps with the frame's RIP on the
; next instruction; the CPL 0 handler counts the traps, counts the RIPs
; matching the expected ones and clears TF in the frame after the fourth.
; Twice, so that the second round runs code translated in the first.
; BT used to deliver the #DB with the RIP the translation unit started at
; (a trap after an instruction ending in a chained jump, before RIP was set
; to the target) and then overwrote the handler's RIP with the target, so
; the handler never ran (fixed with difftest's finding, push 0x302; popfq;
; nop; this is the same through the guest's IDT on both engines).
; mode: long64-cpl3
; kernel-stack: 0x70000
; idt: 0x11000 0x1f
; reg: rflags=0x202
; expect: r14=4 r15=4 r12=2
bits 64
%define ORG 0x10000
org ORG
user:
    xor r14d, r14d
    xor r15d, r15d
    xor r12d, r12d
.round:
    pushfq
    or qword [rsp], 0x100
    popfq
    nop
.s1:
    jmp .s2
    ud2
.s2:
    lea rax, [rel .s4]
.s3:
    jmp rax
    ud2
.s4:
    inc r12d
    cmp r12d, 2                    ; the same code again, chained or not
    je .done
    xor r14d, r14d
    xor r15d, r15d
    jmp .round
.done:
    out 0xeb, al

align 8
expected:
    dq user.s1, user.s2, user.s3, user.s4

times 0x100 - ($ - $$) db 0xcc
h_db:
    mov rcx, [rsp]                 ; RIP (no error code)
    cmp rcx, [expected + r15 * 8]
    jne .other
    inc r14
.other:
    inc r15
    cmp r15, 4
    jb .ret
    and qword [rsp + 16], ~0x100   ; TF off in the frame
.ret:
    iretq

%include "gate64.inc"

times 0x1000 - ($ - $$) db 0
idt:
    dq 0, 0
    gate64 h_db
