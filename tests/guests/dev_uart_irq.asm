; Interrupt-driven UART receiver for test_dev_uart.c (not a guest_runner
; program). 64-bit, CPL 0, with the VM's in-kernel PIC (VMM_VM_IRQCHIP).
; Kept short: CPL 0 code is emulated instruction by instruction on some
; hosts.
;
; Programs the master PIC (vectors 0x20-0x27, only IRQ 4 unmasked), loads
; an IDT whose vector 0x24 is the UART handler, sets the UART to FIFO mode
; with a 14-byte trigger (so a short burst arrives as a character-timeout
; interrupt), DTR|RTS|OUT2 and the receive interrupt, then halts with
; interrupts on until NBYTES bytes have arrived. The handler records IIR,
; drains the FIFO while LSR.DR is set, echoes every byte back through THR,
; and acknowledges the PIC. Results:
;   0x30000  dword  bytes received
;   0x30004  dword  interrupts taken
;   0x30008  byte   IIR seen by the first interrupt
;   0x30100  ...    the bytes
; Ends by writing the byte sum to the exit port.
bits 64
org 0x10000
COM equ 0x3f8
NBYTES equ 5
    mov al, 0x11            ; PIC: ICW1, edge triggered, ICW4 follows
    out 0x20, al
    mov al, 0x20            ; ICW2: vector base
    out 0x21, al
    mov al, 0x04            ; ICW3: slave on IRQ 2
    out 0x21, al
    mov al, 0x01            ; ICW4: 8086 mode
    out 0x21, al
    mov al, 0xef            ; OCW1: only IRQ 4
    out 0x21, al
    mov al, 0xff
    out 0xa1, al
    lidt [idtr]
    mov dx, COM + 3         ; LCR: 8N1
    mov al, 0x03
    out dx, al
    mov dx, COM + 2         ; FCR: FIFO on, clear both, trigger 14
    mov al, 0xc7
    out dx, al
    mov dx, COM + 4         ; MCR: DTR, RTS, OUT2
    mov al, 0x0b
    out dx, al
    mov dx, COM + 1         ; IER: receive data
    mov al, 0x01
    out dx, al
.wait:
    cmp dword [0x30000], NBYTES
    jae .done
    sti
    hlt
    cli
    jmp .wait
.done:
    xor eax, eax
    xor ecx, ecx
    mov esi, 0x30100
.sum:
    add al, [rsi + rcx]
    inc ecx
    cmp ecx, NBYTES
    jb .sum
    out 0xf4, al
.fallthrough:
    out 0xeb, al
    jmp .fallthrough

isr:
    push rax
    push rdx
    push rcx
    mov dx, COM + 2
    in al, dx
    cmp dword [0x30004], 0
    jne .counted
    mov [0x30008], al
.counted:
    inc dword [0x30004]
.drain:
    mov dx, COM + 5
    in al, dx
    test al, 1
    jz .eoi
    mov dx, COM
    in al, dx
    mov ecx, [0x30000]
    mov [0x30100 + rcx], al
    inc dword [0x30000]
    out dx, al              ; echo
    jmp .drain
.eoi:
    mov al, 0x20
    out 0x20, al
    pop rcx
    pop rdx
    pop rax
    iretq

ISR_ADDR equ isr - $$ + 0x10000
align 8
idtr:
    dw 256 * 16 - 1
    dq idt
align 16
idt:
    times 0x24 * 16 db 0
    dw ISR_ADDR & 0xffff
    dw 0x10                 ; 64-bit kernel code (vmm_vcpu_set_mode layout)
    db 0, 0x8e              ; present, DPL 0, interrupt gate
    dw (ISR_ADDR >> 16) & 0xffff
    dd 0
    dd 0
    times (256 - 0x25) * 16 db 0
