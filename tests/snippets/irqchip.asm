; In-kernel interrupt controller snippet for test_vm (64-bit CPL 0, loaded
; at 0x10000, VMM_VM_IRQCHIP). The host loads IDTR with IDT (limit 0xfff).
;
;   0x000 entry_line  programs the master 8259 (vector base 0x20, only IRQ 4
;                     unmasked), writes port 0x10 ("ready": the host raises
;                     GSI 4 with vmm_vm_irq_line()), then sti; hlt. The
;                     halt waits in the kernel; IRQ 4 arrives as vector
;                     0x24.
;   0x080 entry_pit   programs the 8259 with only IRQ 0 unmasked and the
;                     8254 channel 0 as a 1 kHz rate generator, then
;                     sti; hlt: the PIT's IRQ 0 arrives as vector 0x20.
; Interrupt handlers write their vector to port 0x11 and send an EOI. After
; the halt returns, the guest writes port 0xeb (no handler: the run returns
; an I/O exit, since a halt with an in-kernel irqchip never leaves KVM).
bits 64
%define ORG 0x10000
org ORG

%macro pic_init 1
    mov al, 0x11            ; ICW1: edge, cascade, ICW4 follows
    out 0x20, al
    mov al, 0x20            ; ICW2: vectors 0x20-0x27
    out 0x21, al
    mov al, 0x04            ; ICW3: slave on IRQ 2
    out 0x21, al
    mov al, 0x01            ; ICW4: 8086 mode
    out 0x21, al
    mov al, %1              ; OCW1: interrupt mask
    out 0x21, al
%endmacro

entry_line:
    cli
    pic_init 0xef
    out 0x10, al
    sti
    hlt
    cli
    out 0xeb, al

times 0x80 - ($ - $$) db 0xcc
entry_pit:
    cli
    pic_init 0xfe
    mov al, 0x34            ; channel 0, lobyte/hibyte, mode 2
    out 0x43, al
    mov al, 1193 & 0xff     ; 1.193182 MHz / 1193: about 1 kHz
    out 0x40, al
    mov al, 1193 >> 8
    out 0x40, al
    sti
    hlt
    cli
    out 0xeb, al

times 0x100 - ($ - $$) db 0xcc
%macro irq 1
h_%1:
    push rax
    mov al, %1
    out 0x11, al
    mov al, 0x20            ; non-specific EOI
    out 0x20, al
    pop rax
    iretq
%endmacro
; The PIT handler masks IRQ 0 before its EOI: a 1 kHz timer may tick
; again before the guest's cli when the host is slow (a loaded machine,
; a first translation on BT), and the test counts exactly one interrupt.
h_0x20:
    push rax
    mov al, 0xff
    out 0x21, al
    mov al, 0x20
    out 0x11, al
    out 0x20, al            ; non-specific EOI
    pop rax
    iretq
irq 0x24
h_bad:
    mov al, 0xff
    out 0x1f, al
    cli
    hlt

%include "gate64.inc"

times 0x1000 - ($ - $$) db 0
idt:
%assign v 0
%rep 256
%if v == 0x20
    gate64 h_0x20
%elif v == 0x24
    gate64 h_0x24
%else
    gate64 h_bad
%endif
%assign v v + 1
%endrep
