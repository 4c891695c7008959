; Raw flat binary for real mode, position independent within its segment
; (org 0): loaded at 0x20000 the loader starts it at CS:IP = 2000:0000.
; Prints "raw ok cs=<hex>" on port 0xe9, sets DI = 0x600D and halts.
bits 16
org 0
start:
  mov ax, cs
  mov ds, ax
  mov si, msg
.l:
  lodsb
  test al, al
  jz .done
  out 0xe9, al
  jmp .l
.done:
  mov bx, cs
  mov cx, 4
.d:
  rol bx, 4
  mov al, bl
  and al, 0xf
  add al, '0'
  cmp al, '9'
  jbe .p
  add al, 'a' - '0' - 10
.p:
  out 0xe9, al
  loop .d
  mov al, 10
  out 0xe9, al
  mov di, 0x600D
  hlt
msg: db "raw ok cs=", 0
