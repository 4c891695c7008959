#!/usr/bin/env python3
"""Write the loader fuzz targets' seed corpora to fuzz/corpus/<target>/.

Seeds are valid and near-valid images (truncated, one field off) of each
format, each prefixed by the 4 option bytes fuzz_loader.h describes. The
output is committed; rerun this after changing it:  python3 fuzz/make_corpus.py
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def opts(b0=0, b1=0, b2=0, b3=0):
    return bytes([b0, b1, b2, b3])


def elf(is64, entry, segs, size=0x3000, fill=True):
    b = bytearray(size)
    if fill:
        for i in range(0x1000, size):
            b[i] = (i * 7) & 0xFF
    b[0:4] = b"\x7fELF"
    b[4] = 2 if is64 else 1
    b[5] = 1
    b[6] = 1
    struct.pack_into("<HHI", b, 16, 2, 62 if is64 else 3, 1)
    if is64:
        struct.pack_into("<QQQIHHHH", b, 24, entry, 64, 0, 0, 64, 56, len(segs), 0)
        for i, (t, off, va, pa, fs, ms) in enumerate(segs):
            struct.pack_into("<IIQQQQQQ", b, 64 + i * 56, t, 7, off, va, pa, fs, ms, 0x1000)
    else:
        struct.pack_into("<IIIIHHHH", b, 24, entry, 52, 0, 0, 52, 32, len(segs), 0)
        for i, (t, off, va, pa, fs, ms) in enumerate(segs):
            struct.pack_into("<IIIIIIII", b, 52 + i * 32, t, off, va, pa, fs, ms, 7, 0x1000)
    return b


STD_SEGS = [(1, 0x1000, 0x400000, 0x400000, 0x100, 0x100),
            (1, 0x2000, 0x600000, 0x600000, 0x10, 0x1000)]


def mb_header(flags, addr=None):
    magic = 0x1BADB002
    h = struct.pack("<III", magic, flags, (-(magic + flags)) & 0xFFFFFFFF)
    if addr:
        h += struct.pack("<IIIII", *addr)
    return h


def mb_addr_image(size=0x2000, hoff=0x40, fields=None, flags=(1 << 16) | 3):
    b = bytearray((i * 5) & 0xFF for i in range(size))
    fields = fields or (0x100040, 0x100000, 0x101800, 0x103000, 0x100080)
    h = mb_header(flags, fields)
    b[hoff:hoff + len(h)] = h
    return b


def bz(version=0x20F, setup_sects=3, syssize=0x100, loadflags=1, xlf=0x7F,
       cmdline_size=255, initrd_max=0x7FFFFFFF, kalign=0x200000, reloc=1,
       min_align=21, pref=0x1000000, init_size=0x400000, jump=0x6A, extra=64):
    size = (setup_sects or 4) * 512 + 512 + syssize * 16 + extra
    b = bytearray((i * 13 + 1) & 0xFF for i in range(size))
    b[0x1F0:0x270] = bytes(0x80)
    b[0x1F1] = setup_sects
    struct.pack_into("<I", b, 0x1F4, syssize)
    struct.pack_into("<H", b, 0x1FA, 0xFFFF)
    struct.pack_into("<H", b, 0x1FE, 0xAA55)
    b[0x200] = 0xEB
    b[0x201] = jump
    b[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", b, 0x206, version)
    b[0x211] = loadflags
    struct.pack_into("<I", b, 0x214, 0x100000)
    struct.pack_into("<I", b, 0x22C, initrd_max)
    struct.pack_into("<I", b, 0x230, kalign)
    b[0x234] = reloc
    b[0x235] = min_align
    struct.pack_into("<H", b, 0x236, xlf)
    struct.pack_into("<I", b, 0x238, cmdline_size)
    struct.pack_into("<Q", b, 0x258, pref)
    struct.pack_into("<I", b, 0x260, init_size)
    return b


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


def main():
    e64 = elf(True, 0x400010, STD_SEGS)
    e32 = elf(False, 0x400010, STD_SEGS)
    hi = [(1, 0x1000, 0xFFFF800000400000, 0x400000, 0x100, 0x100), STD_SEGS[1]]
    e64hi = elf(True, 0xFFFF800000400010, hi)
    overlap = elf(True, 0x400010, [STD_SEGS[0], (1, 0x2000, 0x400080, 0x400080, 0x10, 0x100)])
    elf_seeds = {
        "elf64": opts() + e64,
        "elf32": opts() + e32,
        "elf64-higher-half": opts() + e64hi,
        "elf64-vaddr": opts(0x80) + e64hi,
        "elf64-truncated-phdr": opts() + e64[:100],
        "elf64-truncated-segment": opts() + e64[:0x1080],
        "elf64-overlap": opts() + overlap,
        "elf64-on-tables": opts() + elf(True, 0x9010, [(1, 0x1000, 0x9000, 0x9000, 0x100, 0x100)]),
        "elf32-bss-only": opts() + elf(False, 0x500000, [(1, 0, 0x500000, 0x500000, 0, 0x4000)]),
        "elf32-tables-moved": opts(0, 0, 0x40, 6) + e32,
    }
    for k, v in elf_seeds.items():
        write("fuzz_loader_elf", k, v)

    mbelf = bytearray(e32)
    mbelf[0x200:0x20C] = mb_header(2)
    mb_seeds = {
        "address-fields": opts(1) + mb_addr_image(),
        "address-fields-modules": opts(0x11, 2, 3) + mb_addr_image(),
        "whole-file": opts(1) + mb_addr_image(fields=(0x100040, 0x100000, 0, 0, 0x100080)),
        "elf32": opts(2) + mbelf,
        "elf32-modules-at": opts(0x31, 1, 2, 10) + mbelf,
        "video": opts() + mb_addr_image(flags=(1 << 16) | 7),
        "truncated-fields": opts() + mb_addr_image()[:0x50],
        "e820-override": opts(0x41) + mb_addr_image(),
        "info-moved": opts(1, 0, 0x30, 5) + mb_addr_image(),
    }
    for k, v in mb_seeds.items():
        write("fuzz_loader_multiboot", k, v)

    bz_seeds = {
        "bzimage": opts(1) + bz(),
        "initrd": opts(5, 3) + bz(),
        "initrd-at": opts(0xD, 3, 0, 10) + bz(),
        "kernel-at": opts(0x21, 0, 0, 11) + bz(),
        "setup-sects-0": opts() + bz(setup_sects=0),
        "protocol-206": opts() + bz(version=0x206, jump=0x3A),
        "no-kernel-64": opts() + bz(xlf=0),
        "cmdline-limit": opts(2) + bz(cmdline_size=16),
        "initrd-max": opts(4, 40) + bz(initrd_max=0x1FFFFF),
        "not-relocatable": opts() + bz(reloc=0, pref=0x100000),
        "truncated": opts() + bz()[:0x300],
        "e820-override": opts(0x45, 1) + bz(),
        "zero-page-moved": opts(1, 0, 0x10, 4) + bz(),
    }
    for k, v in bz_seeds.items():
        write("fuzz_loader_bzimage", k, v)

    raw = bytes([0xF4] * 64)
    auto_seeds = {
        "raw-real": opts() + raw,
        "raw-prot32": opts(0, 0, 4) + raw,
        "raw-long64-at": opts(0x20, 0, 8, 8) + raw,
        "elf64": opts() + e64,
        "multiboot": opts(1) + mb_addr_image(),
        "multiboot-elf": opts(1) + mbelf,
        "bzimage": opts(5, 1) + bz(),
    }
    for k, v in auto_seeds.items():
        write("fuzz_loader_auto", k, v)


if __name__ == "__main__":
    main()
