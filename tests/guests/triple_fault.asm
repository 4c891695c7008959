; An exception with no IDT (limit 0) is a triple fault: shutdown.
; mode: prot32
; expect-exit: shutdown
; compare-mem: off
bits 32
org 0x10000
    mov eax, 0x1234
    ud2
    hlt
