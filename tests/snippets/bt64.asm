; Guest code for test_bt (64-bit, CPL 0 unless a test says otherwise,
; loaded at 0x10000). Entry points at fixed offsets:
;
;   0x000 count      rax = 1 + ... + 1000 in a loop, hlt: 3003 instructions.
;   0x040 rep_huge   rep stosb of 2^40 bytes at 0x40000000 (the host maps
;                    that gigabyte onto RAM), then hlt.
;   0x080 fault_mid  rsi = 0x7f0000000000, eax = 7, ebx = 9, cmp (sets CF
;                    and SF), then a load through rsi, which the identity
;                    map does not cover (#PF).
;   0x0c0 ud         eax = 1, ud2.
;   0x0d0 de         divide by zero.
;   0x0e0 gp         load through a non-canonical pointer.
;   0x100 int3       eax = 0x77, int3, eax = 0x88, hlt.
;   0x120 steps      three adds (eax = 6), hlt.
;   0x140 call_fn    call 0x11000 (code the host writes), out 0xeb.
;   0x160 smc_self   patch the immediate of an instruction further on in
;                    the same translation unit, then out 0xeb with al.
;   0x180 mmio_rmw   add [0xd0000000], eax (eax = 5): a read and a write.
;   0x1a0 dirty      write 0x200000 and 0x201000, out 0xeb; write 0x202000
;                    and 0x200000, out 0xeb.
;   0x1e0 spin       jmp $.
;   0x1f0 avx        an AVX instruction (the engine does not offer AVX).
;   0x200 mid_insn   jump into the immediate of a mov, whose bytes are ud2.
;   0x220 wild       load from 0xfee00000 (no RAM, no handler: MMIO exit).
;   0x240 fpu        x87: 1 + 1 stored as an integer at 0x30000; then an
;                    invalid operation with the exception unmasked in FCW.
;   0x280 cpuid      cpuid leaf in eax, then hlt.
;   0x2a0 loop_mem   a loop of 1000 loads and stores, hlt.
;   0x2c0 cross      a 4-byte store and load across the page boundary at
;                    0x30000 (TLB indices never used before), hlt.
;   0x340 spin_patch loops until another vCPU patches its mov eax, 1 into
;                    mov eax, 2 (at 0x340), then out 0xeb.
;   0x360 patcher    patches spin_patch's immediate, hlt.
;   0x380 tf         sets RFLAGS.TF with popf; #DB after the next insn.
;   0x3a0 fpu_callouts  XMMi = i + 1, x87 stack {0, 1}, then callouts that
;                    resume translated code (cpuid, rdtsc, a TLB miss) and
;                    a trip through the dispatcher (a jump), hlt.
;   0x480 invlpg_remap  remaps 4 KiB pages and a 2 MiB page at 1 GiB under
;                    cached TLB entries, with invlpg: rcx, rdx = 0x1111,
;                    0x2222 (first mapping), r8 = 0x3333 (remapped),
;                    r9 = 0x2222 (its neighbour), r10 = 0x4444 (through the
;                    2 MiB page), then #PF at the last load: the large page
;                    is gone after invlpg of another of its 4 KiB.
;   0x600 self_loop_mem  rcx, r8..r15 = 0x1111, 0x8888..0xffff; a counted
;                    self loop adding 3 to [0x30000] 100000 times (rdx = 0,
;                    rsi = 300000 after it), then an endless one incrementing
;                    [0x30008] (at 0x651): only kicks stop it.
;   0x700 many_ints  80 different `int n` (n = 0x30..0x7f) twice, each
;                    through its own IDT gate to a stub setting ebx = n,
;                    stored at 0x31000 + 8 * (n - 0x30) + 640 * pass;
;                    more emulated instructions than the decode cache
;                    holds, so callouts find their entries reused; hlt.
;   0xd00 dirty_once  forever: wait until the qword at 0x30000 changes,
;                    then store it once to 0x200000 (add/mov: the store's
;                    lookup is hoisted above the add); for test_bt's
;                    dirty-log race.
;   0x680 warm_spin  the same registers as self_loop_mem (rdx = 0, rsi =
;                    300000), then two blocks (at 0x6c1 and 0x6c8) jumping
;                    to each other, counting in [0x30010] and [0x30018].
;   0xf00 region_smc  a loop region (three TUs) whose block skipped by a
;                    forward jcc is never run; after 1000 iterations the
;                    guest patches that block's 5-byte nop into mov r9, r9
;                    (uncovered bytes: no invalidation) and runs the loop
;                    1000 times more through the block: [0x30000] =
;                    1001000, [0x30008] = 6000, [0x30010] = 1000, rcx =
;                    0x1111, r9 = 0x9999, hlt.
;   0xe00 region_spin  the same registers as self_loop_mem (rdx = 0, rsi =
;                    300000, [0x30020] = 300000), then an endless loop of
;                    three TUs (at 0xea4) counting in [0x30028], with twice
;                    the count in [0x30030].
;   0x320 mmio_loop  40 stores to MMIO at 0xd0000000 (ecx = 40..1), hlt.
;   0x2e0 bitmem     lock bts [0x30000], eax with eax = 100 (bit 4 of byte
;                    0x3000c), rbx = CF of a second bts there; then bts
;                    with rax = 2^44: the element is 2^41 bytes away (#PF).
bits 64
org 0x10000

count:
    mov ecx, 1000
    xor eax, eax
.l: add rax, rcx
    dec ecx
    jnz .l
    hlt

times 0x40 - ($ - $$) db 0xcc
rep_huge:
    mov rdi, 0x40000000
    mov rcx, 1 << 40
    mov al, 0x5a
    cld
    rep stosb
    hlt

times 0x80 - ($ - $$) db 0xcc
fault_mid:
    mov rsi, 0x7f0000000000
    mov eax, 7
    mov ebx, 9
    cmp eax, ebx
    mov rdx, [rsi]
    hlt

times 0xc0 - ($ - $$) db 0xcc
ud:
    mov eax, 1
    ud2

times 0xd0 - ($ - $$) db 0xcc
de:
    xor ecx, ecx
    mov eax, 5
    xor edx, edx
    div ecx

times 0xe0 - ($ - $$) db 0xcc
gp:
    mov rax, 0x8000000000000000
    mov rbx, [rax]

times 0x100 - ($ - $$) db 0xcc
int3_:
    mov eax, 0x77
    int3
    mov eax, 0x88
    hlt

times 0x120 - ($ - $$) db 0xcc
steps:
    mov eax, 1
    add eax, 2
    add eax, 3
    hlt

times 0x140 - ($ - $$) db 0xcc
call_fn:
    mov rsp, 0x80000
    call 0x11000
    out 0xeb, al

times 0x160 - ($ - $$) db 0xcc
smc_self:
    lea rdi, [rel .patch + 1]
    mov byte [rdi], 0x42
.patch:
    mov al, 0x11
    out 0xeb, al

times 0x180 - ($ - $$) db 0xcc
mmio_rmw:
    mov rdi, 0xd0000000
    mov eax, 5
    add [rdi], eax
    hlt

times 0x1a0 - ($ - $$) db 0xcc
dirty:
    mov byte [0x200000], 1
    mov byte [0x201000], 2
    out 0xeb, al
    mov byte [0x202000], 3
    mov byte [0x200000], 4
    out 0xeb, al

times 0x1e0 - ($ - $$) db 0xcc
spin:
    jmp spin

times 0x1f0 - ($ - $$) db 0xcc
avx:
    vaddps ymm0, ymm1, ymm2
    hlt

times 0x200 - ($ - $$) db 0xcc
mid_insn:
    jmp .mov + 1
.mov:
    mov eax, 0x90900b0f             ; bytes b8 0f 0b 90 90: ud2 inside

times 0x220 - ($ - $$) db 0xcc
wild:
    mov esi, 0xfee00000
    mov rax, [rsi]
    hlt

times 0x240 - ($ - $$) db 0xcc
fpu:
    fninit
    fld1
    fadd st0, st0
    fistp word [0x30000]
    fldcw [rel .cw]
    fldz
    fdiv st0, st0                   ; 0/0: invalid, unmasked in .cw
    fstp qword [0x30008]
    fnstcw [0x30010]
    hlt
.cw: dw 0x37e

times 0x280 - ($ - $$) db 0xcc
cpuid_:
    cpuid
    hlt

times 0x2a0 - ($ - $$) db 0xcc
loop_mem:
    mov ecx, 1000
    mov rdi, 0x30000
.l: mov rax, [rdi]
    add rax, rcx
    mov [rdi + 8], rax
    dec ecx
    jnz .l
    hlt

times 0x2c0 - ($ - $$) db 0xcc
cross:
    mov dword [0x2fffe], 0x11223344
    mov eax, [0x2fffe]
    hlt

times 0x2e0 - ($ - $$) db 0xcc
bitmem:
    mov eax, 100
    lock bts [0x30000], eax
    bts [0x30000], eax
    setc bl
    movzx ebx, bl
    mov rax, 1 << 44
    bts [0x30000], rax
    hlt

times 0x320 - ($ - $$) db 0xcc
mmio_loop:
    mov edi, 0xd0000000
    mov ecx, 40
.l: mov [rdi], ecx
    dec ecx
    jnz .l
    hlt

times 0x340 - ($ - $$) db 0xcc
spin_patch:
.l: mov eax, 1
    cmp eax, 2
    jne .l
    out 0xeb, al

times 0x360 - ($ - $$) db 0xcc
patcher:
    mov byte [spin_patch + 1], 2
    hlt

times 0x380 - ($ - $$) db 0xcc
tf:
    pushfq
    or qword [rsp], 0x100
    popfq
    mov eax, 1
    mov eax, 2
    hlt

times 0x3a0 - ($ - $$) db 0xcc
fpu_callouts:
    mov eax, 1
    movd xmm0, eax
    mov eax, 2
    movd xmm1, eax
    mov eax, 3
    movd xmm2, eax
    mov eax, 4
    movd xmm3, eax
    mov eax, 5
    movd xmm4, eax
    mov eax, 6
    movd xmm5, eax
    mov eax, 7
    movd xmm6, eax
    mov eax, 8
    movd xmm7, eax
    mov eax, 9
    movd xmm8, eax
    mov eax, 10
    movd xmm9, eax
    mov eax, 11
    movd xmm10, eax
    mov eax, 12
    movd xmm11, eax
    mov eax, 13
    movd xmm12, eax
    mov eax, 14
    movd xmm13, eax
    mov eax, 15
    movd xmm14, eax
    mov eax, 16
    movd xmm15, eax
    fld1
    fldz
    cpuid
    rdtsc
    jmp .next           ; a direct exit: the dispatcher links it
.next:
    mov rax, [0x31000]
    hlt

times 0x480 - ($ - $$) db 0xcc
invlpg_remap:
    mov rax, cr3                ; PML4[0] -> PDPT[1] -> PD of the 2nd GiB
    and rax, -4096
    mov rax, [rax]
    and rax, -4096
    mov rbx, [rax + 8]
    and rbx, -4096
    mov qword [0x50000], 0x60003 ; PD[0] -> page table at 0x50000
    mov qword [0x50008], 0x61003
    mov qword [rbx], 0x50003
    mov qword [0x60000], 0x1111
    mov qword [0x61000], 0x2222
    mov qword [0x62000], 0x3333
    invlpg [0x40000000]
    mov rcx, [0x40000000]
    mov rdx, [0x40001000]
    mov qword [0x50000], 0x62003
    invlpg [0x40000000]
    mov r8, [0x40000000]
    mov r9, [0x40001000]
    mov qword [0x30000], 0x4444
    mov qword [rbx + 8], 0x83   ; PD[1]: 2 MiB page at 0
    invlpg [0x40200000]
    mov r10, [0x40230000]
    mov qword [rbx + 8], 0      ; gone
    invlpg [0x40200000]
    mov r11, [0x40230000]       ; #PF
    hlt

; rcx, r8..r15 = 0x1111, 0x8888..0xffff: the values check_kept_regs
; (test_bt.c) expects after kicks.
%macro KEPT_REGS 0
    mov rcx, 0x1111
    mov r8, 0x8888
    mov r9, 0x9999
    mov r10, 0xaaaa
    mov r11, 0xbbbb
    mov r12, 0xcccc
    mov r13, 0xdddd
    mov r14, 0xeeee
    mov r15, 0xffff
%endmacro

times 0x600 - ($ - $$) db 0xcc
self_loop_mem:                  ; self loops whose scratch registers stay
    KEPT_REGS                   ; borrowed around the back edge: every
                                ; register the glue may take holds a value
                                ; the test checks after kicks and the end
    mov rdi, 0x30000
    mov qword [rdi], 0
    mov edx, 100000
.count:                         ; counted: ends through the fall-through
    add qword [rdi], 3
    dec edx
    jnz .count
    mov rsi, [rdi]
.spin:                          ; endless: only kicks leave it
    add qword [rdi + 8], 1
    jmp .spin

times 0x680 - ($ - $$) db 0xcc
warm_spin:                      ; two blocks jumping to each other, both
    KEPT_REGS                   ; keeping rcx, r10, r11 borrowed across the
                                ; links (warm entries): kicks leave through
                                ; a link's stub, which gives them back
    xor edx, edx
    mov esi, 300000
    mov rdi, 0x30000
.a: add qword [rdi + 16], 1
    jmp .b
.b: add qword [rdi + 24], 1
    jmp .a

times 0x700 - ($ - $$) db 0xcc
many_ints:
    ; Gates 0x30..0x7f at 0x40000 + 16 * n, to the stubs below.
    mov edi, 0x40000 + 16 * 0x30
    lea rsi, [rel int_stubs]
    mov ecx, 80
    mov dx, cs
.gate:
    mov rax, rsi
    mov [rdi], ax               ; offset 15:0
    mov [rdi + 2], dx           ; selector
    mov word [rdi + 4], 0x8e00  ; present, DPL 0, interrupt gate
    shr rax, 16
    mov [rdi + 6], ax           ; offset 31:16
    shr rax, 16
    mov [rdi + 8], eax          ; offset 63:32
    mov dword [rdi + 12], 0
    add rdi, 16
    add rsi, 8
    dec ecx
    jnz .gate
    lidt [rel many_idtr]
    mov edi, 0x31000
    mov r8d, 2
.pass:
%assign v 0x30
%rep 80
    int v
    mov [rdi + (v - 0x30) * 8], rbx
%assign v v + 1
%endrep
    add rdi, 640
    dec r8d
    jnz .pass
    hlt

align 8
int_stubs:
%assign v 0x30
%rep 80
    mov ebx, v                  ; 5 bytes
    iretq                       ; 2
    nop                         ; 1: stubs 8 bytes apart
%assign v v + 1
%endrep

align 8
many_idtr:
    dw 16 * 256 - 1
    dq 0x40000

times 0xd00 - ($ - $$) db 0xcc
dirty_once:
    mov rbx, 0x200000
    mov rsi, 0x30000
    xor edx, edx
.wait:
    mov rax, [rsi]
    cmp rax, rdx
    je .wait
    mov rdx, rax
    add rax, 0                  ; writes every flag: the store's lookup
    mov [rbx], rax              ; runs before it (hoisted)
    jmp .wait

times 0xe00 - ($ - $$) db 0xcc
region_spin:                    ; loops of three TUs each (loop regions,
    KEPT_REGS                   ; docs/bt.md): no instruction of them names
                                ; rcx or r8..r15, so their fragments keep
                                ; the first four of those borrowed across
                                ; the links between them; kicks leave
                                ; through a link's stub, which gives them
                                ; back
    mov rdi, 0x30000
    mov qword [rdi + 32], 0
    mov qword [rdi + 40], 0
    mov edx, 100000
    xor esi, esi
.count:                         ; counted: ends through a fall-through
    mov rax, [rdi + 32]
    add rax, 3
    mov [rdi + 32], rax
    mov rbx, rax
    shl rbx, 1
    add rbx, rax
    sub rbx, rax
    shr rbx, 1
    mov rbp, rbx
    xor rbp, rax
    or rbp, rbx
    add rsi, 3                  ; TU 2 starts around here
    test rbp, rbp
    jz .never                   ; forward jcc leaving the loop: never taken
    mov rax, [rdi + 32]
    add rax, rbp
    sub rax, rbp
    mov [rdi + 32], rax
    mov rbx, rax
    and rbx, 1
    add rbx, rax
    sub rbx, rax
    xor rbx, rbx                ; TU 3 starts around here
    add [rdi + 32], rbx
    dec edx
    jnz .count
.spin:                          ; endless (at 0xea4): only kicks leave it
    mov rax, [rdi + 40]
    add rax, 1
    mov [rdi + 40], rax
    mov rbx, rax
    shl rbx, 2
    sub rbx, rax
    sub rbx, rax
    sub rbx, rax
    sub rbx, rax
    mov rbp, rbx                ; 0
    add rbp, rax
    add rbp, [rdi + 40]
    sub rbp, rax
    add rbp, rax
    add rbp, rbx
    mov [rdi + 48], rbp         ; twice [rdi + 40]
    xor ebx, ebx
    xor ebp, ebp
    xor eax, eax
    add rax, [rdi + 40]
    sub rax, [rdi + 40]
    add [rdi + 40], rax
    jmp .spin
.never:
    hlt

times 0xf00 - ($ - $$) db 0xcc
region_smc:
    mov r9, 0x9999
    mov rcx, 0x1111
    mov rdi, 0x30000
    mov edx, 1000
    xor ebx, ebx                ; 0: skip the cold block
.top:                           ; names neither rcx nor r8..r11: they are
    mov rax, [rdi]              ; the region's set, r9 among them
    add rax, rdx
    mov [rdi], rax
    mov rsi, [rdi + 8]
    add rsi, 3
    mov [rdi + 8], rsi
    test ebx, ebx
    jz .skip                    ; forward, inside the loop
.cold:
    db 0x0f, 0x1f, 0x44, 0x00, 0x00 ; nop, patched into mov r9, r9; nop; nop
    add qword [rdi + 16], 1
.skip:
    add rbp, [rdi + 24]
    mov r12, [rdi]
    xor r12, rdx
    mov [rdi + 32], r12
    add r13, r12
    mov [rdi + 40], r13
    dec edx
    jnz .top
    test ebx, ebx
    jnz .done
    mov dword [rel .cold], 0x90c9894d
    mov byte [rel .cold + 4], 0x90
    mov ebx, 1
    mov edx, 1000
    jmp .top
.done:
    hlt
