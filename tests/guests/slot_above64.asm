; The other end of slot_below64: an access that starts in a page and
; crosses into the next must not go through a lookup slot holding the
; first page. A slot's test of the first byte's offset alone would pass
; it, and its host address would run on past the host page: to the
; physical page after it, not the one the guest maps next, and past the
; end of guest RAM when the page is its last (as here). Sizes that are
; powers of two are tested for alignment instead (docs/bt.md "Lookup
; slots"); the hoisted form compares the offset with 4096 - size.
; 2-4 MiB linear maps physical 4 MiB (a 2 MiB page), so the page at
; linear 0x3ff000 is the last of the 6 MiB of RAM, and 4-6 MiB is the
; identity map. `probe` (an 8-byte load and store, and a load after a
; flag writer, which BT hoists) runs at 0x3ff000, filling its slots with
; that page, then at 0x3ffffc: its last four bytes are physical 4 MiB.
; 64-bit, CPL 0.
; mode: long64
; mem: 0x600000
; expect: r8=0x33333333 r9=0x22222222cccccccc r11=0x1111111111111111
; expect-mem: 0x5ff000 11 11 11 11 11 11 11 11
; expect-mem: 0x5ffff8 00 00 00 00 11 11 11 11
; expect-mem: 0x400000 11 11 11 11 00 00 00 00
bits 64
%define ORG 0x10000
org ORG
%define SLOT_PROBE_HOISTED
%include "identity_pd.inc"
%include "slot_probe.inc"

start:
    mov dword [0x5ff000], 0x33333333
    mov dword [0x5ffffc], 0xcccccccc
    mov dword [0x400000], 0x22222222
    slot_probe 0x400000, 0x3ff000, 0x3ffffc
