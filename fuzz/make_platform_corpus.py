#!/usr/bin/env python3
"""Write fuzz_platform's seed corpus to fuzz/corpus/fuzz_platform/.

Each seed is an operation stream in the format of tests/plat_harness.h:
an opcode byte (low 4 bits: the operation; bits 4-5: access size 1/2/4/8;
bit 6: register-aligned MMIO; bit 7: a flag), an argument byte (for MMIO
and INTA: bit 7 set = not a CPU's access, bit 6 = CPU 1), then operands.
The output is committed; rerun after changing it:
python3 fuzz/make_platform_corpus.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus",
                   "fuzz_platform")
PORTS = [0x1F, 0x20, 0x21, 0x22, 0x9F, 0xA0, 0xA1, 0xA2, 0x3F, 0x40, 0x41,
         0x42, 0x43, 0x44, 0x60, 0x61, 0x62, 0x4CF, 0x4D0, 0x4D1, 0x4D2, 0x3FF]


def outb(port, v):
    return bytes([0x00, PORTS.index(port)]) + struct.pack("<I", v)


def inb(port):
    return bytes([0x01, PORTS.index(port)]) + struct.pack("<I", 0)


def apic_w(off, v, cpu=0):
    return bytes([0x62, cpu << 6]) + struct.pack("<HIH", off, v, 0)


def apic_r(off, cpu=0):
    return bytes([0x63, cpu << 6]) + struct.pack("<HIH", off, 0, 0)


def ioapic_w(off, v):
    return bytes([0x64, 0x80]) + struct.pack("<HIH", off, v, 0)


def line(gsi, level):
    return bytes([0x86 if level else 0x06, gsi])


def time(ns):
    shift = 0
    while ns > 0xFFFF:
        ns >>= 1
        shift += 1
    return bytes([0x07 | shift << 4, 0]) + struct.pack("<H", ns)


def inta(cpu=0, eoi=True):
    return bytes([0x88 if eoi else 0x08, cpu << 6])


def pic_init():
    s = b""
    for p, v in ((0x20, 0x11), (0xA0, 0x11), (0x21, 0x20), (0xA1, 0x28),
                 (0x21, 0x04), (0xA1, 0x02), (0x21, 0x01), (0xA1, 0x01),
                 (0x21, 0x00), (0xA1, 0x00)):
        s += outb(p, v)
    return s


SEEDS = {
    "pic-pit-ticks": pic_init() + outb(0x43, 0x34) + outb(0x40, 0xA9)
    + outb(0x40, 0x04) + (time(1000000) + inta() + outb(0x20, 0x20)) * 4
    + time(5000000) + inta() + inta() + outb(0x20, 0x0B) + inb(0x20),
    "pic-level-elcr-poll": pic_init() + outb(0x4D0, 0x20) + line(5, 1)
    + inta() + outb(0x20, 0x20) + inta(eoi=False) + outb(0x20, 0x0C)
    + inb(0x20) + line(5, 0) + outb(0x20, 0xA0) + outb(0x20, 0xC3),
    "pit-counter2-port61": outb(0x61, 0x01) + outb(0x43, 0xB0)
    + outb(0x42, 0xFF) + outb(0x42, 0xFF) + time(20000) + inb(0x61)
    + outb(0x43, 0x80) + inb(0x42) + inb(0x42) + outb(0x43, 0xEA)
    + inb(0x42) + outb(0x43, 0xB7) + outb(0x42, 0x99) + outb(0x42, 0x99)
    + time(60000000) + inb(0x61),
    "lapic-timer": apic_w(0xF0, 0x1FF) + apic_w(0x3E0, 0xB)
    + apic_w(0x320, 0x20040) + apic_w(0x380, 200000)
    + (time(200000) + inta()) * 3 + time(2000000) + inta() + inta()
    + apic_r(0x390) + apic_w(0x320, 0x40040)
    + bytes([0x8B, 0]) + struct.pack("<Q", 1000000) + time(5000000) + inta(),
    "ipi-init-sipi": apic_w(0xF0, 0x1FF) + apic_w(0xF0, 0x1FF, 1)
    + apic_w(0x310, 1 << 24) + apic_w(0x300, 0x4500) + apic_w(0x300, 0x8500)
    + apic_w(0x300, 0x4608) + apic_w(0x300, 0xC4031) + inta(1) + inta(0)
    + apic_w(0x300, 0x4400) + bytes([0x09, 0]) + apic_w(0x300, 0x4005)
    + apic_w(0x280, 0) + apic_r(0x280),
    "ioapic-level-routing": apic_w(0xF0, 0x1FF) + ioapic_w(0x00, 0x12)
    + ioapic_w(0x10, 0x8031) + line(1, 1) + inta() + inta()
    + ioapic_w(0x40, 0x31) + line(1, 0) + inta() + ioapic_w(0x00, 0x13)
    + ioapic_w(0x10, 0x01000000) + ioapic_w(0x00, 0x40)
    + ioapic_w(0x10, 0xFFFFFFFF) + bytes([0x65, 0x80]) + bytes(8),
    "extint-virtual-wire": pic_init() + line(0, 1) + inta() + outb(0x20, 0x20)
    + apic_w(0xF0, 0x1FF) + apic_w(0x350, 0x10700) + line(0, 0) + line(0, 1)
    + apic_w(0x350, 0x700) + inta() + bytes([0x0A, 0x0B]),
    "state-mutations": bytes([0x0C, 20, 0x80, 1, 3, 1]) + bytes(16)
    + bytes([0x4C, 20, 0x80, 0, 0x80, 2, 5, 0]) + bytes(14)
    + bytes([0x8C, 20, 2, 3]) + bytes(16)
    + bytes([0xCC, 20, 0x80, 0, 0x80, 1, 9, 6]) + bytes(14)
    + bytes([0x0D, 0, 0x0D, 1, 0x0D, 2, 0x0D, 3, 0x0E, 3]),
    "mptable": bytes([0x0F, 0x44]) + struct.pack("<I", 0xF000)
    + bytes([0x0F, 0x07]) + struct.pack("<I", 0xFFFFFF),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
