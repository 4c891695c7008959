#!/usr/bin/env python3
"""Write the seed corpus of fuzz_bt_code (fuzz/corpus/fuzz_bt_code/).

Each seed is the target's input format (see fuzz_bt_code.c): a selector
byte (mode = byte % 3, bit 2 CPL 3, bit 3 exception exits, bit 4 devices,
bit 7 no instruction limit: warm entries, self loops, loop regions),
16 bytes of register seeds (rax; rcx/rdx), then guest code. The code is
small programs, assembled with nasm, that reach the engine's harder paths:
string ops with rep, MMIO and port I/O, paging and control registers,
self-modifying code, jumps into instructions, interrupts and system
instructions, x87 and SSE, and the instructions invalid in 64-bit mode that
16/32-bit guests need emulated. The output is committed; rerun this after
changing it:  python3 fuzz/make_bt_corpus.py
Files named crash-* are inputs fuzzing found to break the engine, kept
as seeds (replayed by the test suite) once fixed; this script leaves them.
"""
import os
import struct
import subprocess
import tempfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus",
                   "fuzz_bt_code")

REAL, PROT32, LONG64 = 0, 1, 2
CPL3, EXC, DEV, FREE = 4, 8, 16, 0x80


def sel(mode, flags=0):
    """The smallest selector byte with this mode and these option bits."""
    for b in range(256):
        if b % 3 == mode and (b & 0x9C) == flags:
            return b
    raise ValueError((mode, flags))


def asm(bits, text):
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "s.asm"), os.path.join(d, "s.bin")
        with open(src, "w") as f:
            f.write("bits %d\n%s\n" % (bits, text))
        subprocess.run(["nasm", "-f", "bin", "-o", out, src], check=True)
        with open(out, "rb") as f:
            return f.read()


def seed(mode, flags, rax, rcx, rdx, text):
    bits = {REAL: 16, PROT32: 32, LONG64: 64}[mode]
    regs = struct.pack("<QQ", rax, (rdx << 32) | (rcx & 0xFFFFFF))
    return bytes([sel(mode, flags)]) + regs + asm(bits, text)


# A loop of 20 instructions (several TUs, forward jccs inside it, an
# emulated cpuid, which writes rax..rdx): a loop region in every mode
# (docs/bt.md).
region = """
        mov esi, 300
    l:  mov {a}, [{b}]
        add {a}, {d}
        mov [{b}], {a}
        test {d}, 1
        jz s
        add {w} [{b} + 8], 3
    s:  mov {bp}, [{b} + 16]
        add {bp}, {a}
        mov [{b} + 16], {bp}
        xor {bp}, {d}
        add [{b} + 24], {bp}
        mov {a}, [{b} + 32]
        imul {a}, {d}
        mov [{b} + 32], {a}
        test {d}, 4
        jz t
        cpuid
    t:  sub {a}, [{b} + 24]
        dec esi
        jnz l
        hlt"""

SEEDS = {
    # Long mode.
    "l64-loop": (LONG64, 0, 0, 0, 0, """
        mov ecx, 100
    l:  add eax, ecx
        dec ecx
        jnz l
        hlt"""),
    "l64-rep-movsb": (LONG64, 0, 0, 0xFFFFFF, 0, "rep movsb\nrep stosq\nhlt"),
    "l64-rep-back": (LONG64, 0, 0x41, 0x1234, 0, """
        std
        rep stosb
        cld
        repe cmpsb
        repne scasw
        hlt"""),
    "l64-wild-rep": (LONG64, DEV, 0, 0x800000, 0, """
        mov rdi, 0xfee00000
        rep stosd
        mov rsi, 0x7ffffff000
        lodsq
        hlt"""),
    "l64-mmio": (LONG64, DEV, 5, 0, 0, """
        mov rbx, 0xd0000000
        add [rbx], eax
        mov rax, [rbx + 8]
        movdqu xmm0, [rbx]
        lock xadd [rbx], ecx
        hlt"""),
    "l64-io": (LONG64, DEV, 0, 8, 0x60, """
        in al, dx
        out 0x80, al
        rep insb
        rep outsw
        in eax, 0x71
        hlt"""),
    "l64-cpuid-tsc": (LONG64, 0, 7, 0, 0, "cpuid\nrdtsc\nrdtscp\nxgetbv\nhlt"),
    "l64-cr3-wild": (LONG64, EXC, 0xFFFFF000, 0, 0, """
        mov cr3, rax
        mov rbx, 0x123456789
        mov rbx, [rbx]
        hlt"""),
    "l64-cr-toggle": (LONG64, 0, 0, 0, 0, """
        mov rax, cr4
        xor eax, 0x20
        mov cr4, rax
        mov rax, cr0
        and eax, 0x7fffffff
        mov cr0, rax
        hlt"""),
    "l64-smc": (LONG64, 0, 0, 0, 0, """
        lea rdi, [rel p + 1]
        mov byte [rdi], 0x42
    p:  mov al, 0x11
        mov dword [rel q], 0x90909090
    q:  int3
        int3
        int3
        int3
        jmp p"""),
    "l64-mid-insn": (LONG64, EXC, 0, 0, 0, """
        jmp short m + 1
    m:  mov eax, 0x0b0f0b0f
        hlt"""),
    "l64-indirect": (LONG64, EXC, 0x10000, 0, 0, """
        lea rbx, [rel t]
        call rbx
        push rax
        ret
    t:  jmp [rsp]"""),
    "l64-int-sys": (LONG64, EXC, 0, 0, 0, """
        int 0x80
        syscall
        sysret
        swapgs
        iretq"""),
    "l64-cpl3-priv": (LONG64, CPL3, 0, 0, 0, """
        cli
        sti
        pushfq
        popfq
        in al, 0x60
        hlt"""),
    "l64-msr": (LONG64, EXC, 0, 0xC0000080, 0, """
        rdmsr
        xor eax, 0x800
        wrmsr
        mov ecx, 0xc0000101
        wrmsr
        swapgs
        invlpg [rbx]
        hlt"""),
    "l64-tables": (LONG64, EXC, 0, 0, 0, """
        lidt [rbx]
        lgdt [rbx]
        mov ax, 0x28
        ltr ax
        lldt ax
        mov ds, ax
        ud2"""),
    "l64-div": (LONG64, EXC, 0x8000000000000000, 0, 0xFFFFFFFF, """
        mov rcx, -1
        idiv rcx
        xor ecx, ecx
        div rcx"""),
    "l64-fpu-sse": (LONG64, 0, 0, 0, 0, """
        fld1
        fadd st0, st0
        fistp dword [rbx]
        movdqu xmm0, [rbx]
        pshufb xmm0, xmm0
        pcmpistri xmm0, [rsi], 0x0c
        crc32 eax, byte [rdi]
        sqrtsd xmm1, [rbx]
        cvttsd2si eax, xmm1
        hlt"""),
    "l64-bitops": (LONG64, 0, 0x7FFFFFFFFFFF, 0, 0, """
        bts [rbx], rax
        btr qword [rbx], 63
        bsf rcx, rax
        popcnt rdx, rax
        cmpxchg16b [rbx]
        enter 16, 2
        leave
        hlt"""),
    # 32-bit protected mode.
    "p32-loop": (PROT32, 0, 0, 0, 0, """
        mov ecx, 50
    l:  inc eax
        loop l
        pusha
        popa
        daa
        aaa
        hlt"""),
    "p32-segments": (PROT32, EXC, 0, 0, 0, """
        mov ax, 0x10
        mov es, ax
        push ds
        pop fs
        les eax, [ebx]
        bound eax, [ebx]
        jmp 0x08:0x10000"""),
    "p32-paging": (PROT32, 0, 0, 0, 0, """
        mov eax, cr4
        or eax, 0x20
        mov cr4, eax
        mov eax, 0x100000
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        hlt"""),
    "p32-cpl3": (PROT32, CPL3 | EXC, 0, 0x100, 0, """
        rep movsd
        int 0x30
        into
        sysenter
        hlt"""),
    # Loops spanning several TUs, run without an instruction limit (bit 7):
    # loop regions, whose look-ahead decodes the guest's bytes.
    "l64-free-region": (LONG64, FREE, 0, 0, 0, region.format(
        a="rax", b="rdi", d="rsi", w="qword", bp="rbp")),
    "p32-free-region": (PROT32, FREE, 0, 0, 0, region.format(
        a="eax", b="edi", d="esi", w="dword", bp="ebp")),
    "r16-free-region": (REAL, FREE, 0, 0, 0, region.format(
        a="ax", b="di", d="si", w="word", bp="bp")),
    # Loops whose first instruction accesses memory, with the back edge's
    # cmp flags read right after it: flags entries (docs/bt.md, "Flags at
    # a loop head"), in a self loop and in a region that also reaches MMIO
    # at its head.
    "l64-free-head-self": (LONG64, FREE, 0, 0, 0, """
        mov ecx, 200
        xor edi, edi
    l:  mov eax, [rbx + rdi * 4]
        setc dl
        add [rbx + 0x800], edx
        inc edi
        cmp edi, ecx
        jb l
        hlt"""),
    "p32-free-head-region": (PROT32, FREE | DEV, 0, 0, 0, """
        mov ecx, 200
        xor edi, edi
        mov esi, ebx
    l:  add eax, [esi]
        setc dl
        add [ebx + 0x800], edx
        test edi, 7
        jnz m
        add dword [ebx + 0x804], 1
    m:  lea esi, [ebx + edi * 4]
        test edi, 15
        jnz n
        mov esi, 0xd0000000
    n:  inc edi
        cmp edi, ecx
        jb l
        hlt"""),
    # syscall and sysretq (inline without a limit): LSTAR is the entry plus
    # rax >> 52 modulo the code's length (4: the sysretq), FMASK rax's low
    # half.
    "l64-free-syscall": (LONG64, CPL3 | FREE, (4 << 52) | 0x40701, 0, 0, """
    l:  syscall
        jmp l
        o64 sysret"""),
    "l64-free-calls": (LONG64, FREE, 0, 0, 0, """
        mov ecx, 200
    l:  call f
        dec ecx
        jnz l
        hlt
    f:  add [rbx], rcx
        ret"""),
    # Real mode.
    "r16-ivt": (REAL, 0, 0, 0, 0, """
        mov word [0x80], 0x1100
        mov word [0x82], 0
        int 0x20
        iret"""),
    "r16-protect": (REAL, 0, 0, 0, 0, """
        lgdt [bx]
        mov eax, cr0
        or al, 1
        mov cr0, eax
        jmp 0x08:0x1020
        hlt"""),
    "r16-strings": (REAL, DEV, 0x1234, 0x3000, 0x3f8, """
        push cs
        pop es
        rep stosw
        rep outsb
        div cl
        hlt"""),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (mode, flags, rax, rcx, rdx, text) in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(seed(mode, flags, rax, rcx, rdx, text))


if __name__ == "__main__":
    main()
