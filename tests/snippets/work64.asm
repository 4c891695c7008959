; Guest work for test_threads and test_vm (64-bit CPL 3, loaded at 0x10000).
;
;   0x000 entry_sum   rax = 1 + 2 + ... + rcx (rcx set by the host, > 0),
;                     stored at 0x20000 + 8 * rbx (rbx set by the host),
;                     then out 0xeb (no handler: the run returns).
;   0x080 entry_spin  jmp $ (until kicked or stopped).
bits 64
org 0x10000

entry_sum:
    xor eax, eax
.loop:
    add rax, rcx
    dec rcx
    jnz .loop
    mov [0x20000 + rbx * 8], rax
    out 0xeb, al

times 0x80 - ($ - $$) db 0xcc
entry_spin:
    jmp entry_spin
