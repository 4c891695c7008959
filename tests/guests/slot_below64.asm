; An access that starts below a page and ends in it must not go through a
; lookup slot holding that page: a slot, unlike a TLB entry, is not chosen
; by the first byte's page, so its hit test must look at both ends (it
; looked at the last byte only at first: docs/bt.md "Lookup slots"), and
; the host address it would give,
; slot page's host page minus a few bytes, is not where the guest's first
; bytes live. 2-4 MiB linear maps physical 4 MiB (2 MiB page); 0-2 MiB is
; the identity map. `probe` (an 8-byte load and store, and a load after a
; flag writer, which BT hoists and checks with `cmp`) first runs on 2 MiB
; linear, which fills its slots with the page at 2 MiB (physical 4 MiB),
; then at 2 MiB - 4: its first four bytes are physical 0x1ffffc, not
; 0x3ffffc (which the slot's host address would give). Had physical
; 4 MiB been the first byte of a memory slot, that address would lie
; outside guest memory.
; 64-bit, CPL 0.
; mode: long64
; mem: 0x600000
; expect: r8=0x22222222 r9=0x11111111aaaaaaaa r11=0x1111111111111111
; expect-mem: 0x1ffff8 00 00 00 00 11 11 11 11
; expect-mem: 0x3ffff8 00 00 00 00 bb bb bb bb
; expect-mem: 0x400000 11 11 11 11 11 11 11 11
bits 64
%define ORG 0x10000
org ORG
%define SLOT_PROBE_HOISTED
%include "identity_pd.inc"
%include "slot_probe.inc"

start:
    mov dword [0x1ffffc], 0xaaaaaaaa
    mov dword [0x3ffffc], 0xbbbbbbbb
    mov dword [0x400000], 0x22222222
    slot_probe 0x400000, 0x200000, 0x200000 - 4
