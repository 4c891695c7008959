#!/usr/bin/env python3
"""Write the seed corpus of fuzz_virtio_mmio (fuzz/corpus/fuzz_virtio_mmio/).

Each seed is a short, valid conversation with the balloon in the target's
input format (see the comment at the top of fuzz_virtio_mmio.c), so the
fuzzer starts from inputs that reach the queues and mutates from there.
Run from anywhere: python3 fuzz/make_virtio_corpus.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus",
                   "fuzz_virtio_mmio")

# Indices into the target's table of interesting addresses.
A_0x1000, A_FRAMES, A_QUEUES, A_ROM, A_ANON = 1, 2, 4, 7, 9
STATS, DOOM, REPORTING = 1 << 1, 1 << 2, 1 << 5
WRITE, NEXT, INDIRECT = 2, 1, 4


def cfg(legacy=False, stats=True, doom=True, report=True, hook=True):
    return bytes([(1 if legacy else 0) | (2 if stats else 0) |
                  (4 if doom else 0) | (8 if report else 0) |
                  (0x10 if hook else 0)])


def setup(accept):
    return bytes([7, accept])


def desc(q, idx, addr_sel, length, flags=0, nxt=0):
    return bytes([4, q, idx, addr_sel]) + struct.pack("<IHH", length, flags,
                                                      nxt)


def publish(q, head, bump=1):
    return bytes([5, q]) + struct.pack("<H", head) + bytes([bump])


def notify(q):
    return bytes([6, q])


def host(what, value=0):
    return bytes([8, what]) + struct.pack("<I", value)


def frames(sels):
    return bytes([9, len(sels)]) + bytes(sels)


def write32(reg, value):
    return bytes([0, reg // 4]) + struct.pack("<I", value)


ALL = STATS | DOOM | REPORTING
seeds = {
    "inflate-deflate": cfg() + setup(ALL) + frames([A_0x1000, A_ANON, A_ROM])
    + desc(0, 0, A_FRAMES, 12) + publish(0, 0) + notify(0)
    + desc(1, 0, A_FRAMES, 12) + publish(1, 0) + notify(1) + host(3),
    "inflate-chain": cfg() + setup(ALL) + frames([A_0x1000] * 8)
    + desc(0, 0, A_FRAMES, 16, NEXT, 1) + desc(0, 1, A_FRAMES, 16)
    + publish(0, 0) + notify(0) + host(4),
    "stats": cfg() + setup(ALL) + desc(2, 0, A_FRAMES, 20) + publish(2, 0)
    + notify(2) + host(2) + desc(2, 0, A_FRAMES, 30) + publish(2, 0)
    + notify(2) + host(4),
    "report": cfg() + setup(ALL) + desc(3, 0, A_0x1000, 0x2000, WRITE, 1)
    + desc(3, 1, A_ANON, 0x1000, WRITE) + publish(3, 0) + notify(3),
    "report-as-queue2": cfg(stats=False) + setup(REPORTING)
    + desc(2, 0, A_0x1000, 0x3000, WRITE) + publish(2, 0) + notify(2),
    "legacy": cfg(legacy=True) + setup(ALL) + frames([A_0x1000])
    + desc(0, 0, A_FRAMES, 4) + publish(0, 0) + notify(0) + host(2),
    "loop": cfg() + setup(ALL) + desc(0, 3, A_FRAMES, 4, NEXT, 3)
    + publish(0, 3) + notify(0) + write32(0x70, 0) + setup(ALL)
    + desc(0, 0, A_FRAMES, 4) + publish(0, 0) + notify(0),
    "indirect": cfg() + setup(ALL) + desc(0, 0, A_FRAMES, 16, INDIRECT)
    + publish(0, 0) + notify(0),
    "target": cfg(hook=False) + setup(ALL) + host(0, 1234) + host(1, 4097)
    + write32(0x104, 77) + host(3) + write32(0x64, 3),
    "registers": cfg() + write32(0x70, 1) + write32(0x70, 3)
    + write32(0x24, 1) + write32(0x20, 1) + write32(0x70, 11)
    + write32(0x30, 0) + write32(0x38, 16) + write32(0x44, 1)
    + write32(0x70, 15) + write32(0x50, 7),
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {OUT}")
