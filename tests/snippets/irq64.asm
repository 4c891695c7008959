; Interrupt and NMI snippet for test_vcpu and test_threads (64-bit, loaded
; at 0x10000). The host loads the IDT at IDT below into IDTR itself, so the
; same table serves CPL 0 and CPL 3 entries (lidt is privileged).
;
; Layout (offsets from the load address, used as constants by the tests):
;   0x000 entry_inject  CPL 0. With IF=0: writes port 0x10 ("ready", the
;                       host queues an interrupt or NMI then), spins a
;                       little, writes port 0x13, executes sti, writes port
;                       0x14, then hlt. The order of port writes tells when
;                       the event was delivered.
;   0x080 entry_spin    CPL 3. Spins natively until FLAG becomes non-zero
;                       (set by the vector 0x50 handler), then writes port
;                       0xeb (no handler: the run returns an I/O exit).
;   0x400 FLAG          one byte.
;   0x1000 IDT          256 64-bit gates, selector 0x10 (libvmm's kernel
;                       code segment), limit 0xfff.
; Handlers: vectors 2, 0x40 and 0x41 write their vector number to port
; 0x11; vector 0x50 sets FLAG; every other vector writes 0xff to port 0x1f
; and halts.
bits 64
%define ORG 0x10000
org ORG

entry_inject:
    cli
    out 0x10, al
    mov ecx, 16
.wait:
    dec ecx
    jnz .wait
    out 0x13, al
    sti
    nop
    out 0x14, al
    hlt

times 0x80 - ($ - $$) db 0xcc
entry_spin:
.spin:
    cmp byte [rel flag], 0
    je .spin
    out 0xeb, al

times 0x100 - ($ - $$) db 0xcc
%macro report 1
h_%1:
    push rax
    mov al, %1
    out 0x11, al
    pop rax
    iretq
%endmacro
report 0x02
report 0x40
report 0x41
h_0x50:
    mov byte [rel flag], 1
    iretq
h_bad:
    mov al, 0xff
    out 0x1f, al
    hlt

times 0x400 - ($ - $$) db 0xcc
flag: db 0

%include "gate64.inc"

times 0x1000 - ($ - $$) db 0
idt:
%assign v 0
%rep 256
%if v == 0x02
    gate64 h_0x02
%elif v == 0x40
    gate64 h_0x40
%elif v == 0x41
    gate64 h_0x41
%elif v == 0x50
    gate64 h_0x50
%else
    gate64 h_bad
%endif
%assign v v + 1
%endrep
