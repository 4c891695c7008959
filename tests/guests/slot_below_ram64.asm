; The host side of slot_below64: 2-4 MiB linear maps physical 0, the first
; byte of guest RAM, and `probe` (an 8-byte load and store) runs on 2 MiB,
; then on 2 MiB - 4. Through the slots that hold the page at 2 MiB, the
; second run's load and store would reach the 4 bytes below the host
; mapping of guest RAM: host memory, not the guest's (a crash, or a
; read and write of whatever lies there). Architecturally the first four
; bytes are physical 0x1ffffc.
; 64-bit, CPL 0.
; mode: long64
; mem: 0x600000
; expect: r8=0x5a5a5a5a r9=0x111111115555aaaa
; expect-mem: 0x1ffff8 00 00 00 00 11 11 11 11
; expect-mem: 0x0 11 11 11 11 11 11 11 11
bits 64
%define ORG 0x10000
org ORG
%include "identity_pd.inc"
%include "slot_probe.inc"

start:
    mov dword [0x1ffffc], 0x5555aaaa
    mov dword [0], 0x5a5a5a5a
    slot_probe 0x000000, 0x200000, 0x200000 - 4
