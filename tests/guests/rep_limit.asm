; An instruction limit stops a rep stosb of 2^40 bytes after a few of its
; iterations: each iteration counts as one instruction, and the
; instruction is left half done (RIP on it, RCX and RDI advanced), as an
; interrupt would leave it. KVM has no instruction limits (skipped).
; mode: long64
; insn-limit: 1000
; expect-exit: insn-limit
; expect: rcx=0xfffffffc1b rdi=0x403e5 rax=0x5a rip=0x10014
; expect-mem: 0x40000 5a 5a 5a 5a
; expect-mem: 0x403e3 5a 5a 00 00
bits 64
org 0x10000
    mov rdi, 0x40000
    mov rcx, 1 << 40
    mov eax, 0x5a
    rep stosb
    hlt
