; x87 control state and save areas at CPL 3, where BT emulates fldcw,
; fnstcw, fninit, fnsave and fxsave on its saved image (the cases
; difftest found, docs/difftest.md):
;  - the control word holds only the bits the x87 unit has: fldcw of
;    0xffff reads back 0x1f7f, of 0 reads back 0x0040;
;  - fxsave leaves bytes 416-511 of its area (software-available and
;    reserved) as they were;
;  - fninit and fnsave keep the registers' contents (tagged empty), so
;    with TOP back at 0 a later fxsave shows R6 and R7 as ST6 and ST7.
; mode: long64-cpl3
; expect-mem: 0x30002 7f 1f 40 00
; expect-mem: 0x30200 7f 03 00 00 00
; expect-mem: 0x30290 00 00 00 00 00 00 00 80 ff 3f
; expect-mem: 0x303a0 aa aa aa aa
; expect-mem: 0x303fc aa aa aa aa
; expect-mem: 0x30404 00 30 ff ff ff 0f
; expect-mem: 0x3041c 35 c2 68 21 a2 da 0f c9 00 40 00 00 00 00 00 00 00 80 ff 3f
; expect-mem: 0x30600 7f 03 00 00 00
; expect-mem: 0x30680 35 c2 68 21 a2 da 0f c9 00 40
; expect-mem: 0x30690 00 00 00 00 00 00 00 80 ff 3f
bits 64
org 0x10000
    cld
    finit
    mov word [0x30000], 0xffff
    fldcw [0x30000]
    fnstcw [0x30002]                ; 0x1f7f
    mov word [0x30000], 0
    fldcw [0x30000]
    fnstcw [0x30004]                ; 0x0040
    mov word [0x30000], 0x37f
    fldcw [0x30000]

    mov rdi, 0x30200                ; the fxsave area, filled with 0xaa
    mov ecx, 64
    mov rax, 0xaaaaaaaaaaaaaaaa
    rep stosq
    fld1                            ; R7 = 1.0
    fldz                            ; R6 = 0
    fninit                          ; TOP = 0, all empty, contents kept
    fxsave [0x30200]                ; ST7 (R7) = 1.0; bytes 416-511 kept

    fld1                            ; R7 = 1.0
    fldpi                           ; R6 = pi, TOP = 6
    fnsave [0x30400]                ; FSW TOP 6, tags 0x0fff, ST0 pi, ST1 1.0
    fxsave [0x30600]                ; after the reinitialization: ST6 pi
    ; The image's x87 pointers (FIP, FCS, FOP, FDP, FDS at 12-27) are the
    ; last x87 instruction's on the processor, 0 on BT (docs/bt.md, known
    ; gaps): cleared so that the engines' RAM compares.
    xor eax, eax
    mov [0x3040c], rax
    mov [0x30414], rax
    ; The fxsave images' MXCSR_MASK is the processor model's (the host's
    ; has AMD's misaligned-SSE bit, BT's not): made the same.
    mov dword [0x3021c], 0xffff
    mov dword [0x3061c], 0xffff
    out 0xeb, al
