; ELF64 executable with two PT_LOAD segments: text at 0x400000 and data at
; 0x600000 whose p_memsz exceeds p_filesz (a bss). Entered in 64-bit long
; mode by the loader; checks the data word, that the bss is zero, and
; prints "elf64 ok data=<hex> bss=<hex>" on port 0xe9, then sets
; RDI = 0x600D and halts.
bits 64
TEXT_OFF equ 0x1000
DATA_OFF equ 0x2000
TEXT_VA equ 0x400000
DATA_VA equ 0x600000

section .head start=0 vstart=0
ehdr:
  db 0x7f, "ELF", 2, 1, 1, 0      ; ELFCLASS64, LSB, version 1
  times 8 db 0
  dw 2                            ; ET_EXEC
  dw 62                           ; EM_X86_64
  dd 1
  dq start                        ; e_entry
  dq phdrs - ehdr                 ; e_phoff
  dq 0                            ; e_shoff
  dd 0                            ; e_flags
  dw 64, 56, 2                    ; e_ehsize, e_phentsize, e_phnum
  dw 0, 0, 0
phdrs:
  dd 1, 5                         ; PT_LOAD, R+X
  dq TEXT_OFF, TEXT_VA, TEXT_VA   ; p_offset, p_vaddr, p_paddr
  dq text_size, text_size, 0x1000
  dd 1, 6                         ; PT_LOAD, R+W
  dq DATA_OFF, DATA_VA, DATA_VA
  dq data_size, data_size + 0x800, 0x1000
  times TEXT_OFF - ($ - $$) db 0

section .text start=TEXT_OFF vstart=TEXT_VA
text_start:
start:
  mov rsp, DATA_VA + 0x1000       ; top of the bss
  lea rsi, [rel s_ok]
  call puts
  mov rax, [rel data_word]
  call puthex
  lea rsi, [rel s_bss]
  call puts
  xor eax, eax                    ; OR of the first 0x400 bss bytes
  mov rbx, bss_start
  mov ecx, 0x400 / 8
.bss:
  or rax, [rbx]
  add rbx, 8
  loop .bss
  call puthex
  mov al, 10
  out 0xe9, al
  mov edi, 0x600D
  hlt

puts:
  lodsb
  test al, al
  jz .e
  out 0xe9, al
  jmp puts
.e:
  ret

puthex:                           ; low 32 bits of rax, 8 digits
  mov edx, eax
  mov ecx, 8
.d:
  rol edx, 4
  mov eax, edx
  and eax, 0xf
  lea rbx, [rel hexdigits]
  mov al, [rbx + rax]
  out 0xe9, al
  loop .d
  ret

hexdigits: db "0123456789abcdef"
s_ok: db "elf64 ok data=", 0
s_bss: db " bss=", 0
text_size equ $ - text_start
  times DATA_OFF - TEXT_OFF - ($ - text_start) db 0

section .data start=DATA_OFF vstart=DATA_VA
data_start:
data_word: dq 0x12345678
data_size equ $ - data_start
bss_start equ DATA_VA + data_size
