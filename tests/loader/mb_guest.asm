; Multiboot v1 kernel with address fields (flags bit 16), loaded at 1 MiB.
; Entered in 32-bit protected mode by the loader; checks the Multiboot
; contract and reports what the information structure says on port 0xe9:
;   "mb magic=ok lower=<hex> upper=<hex> cmdline=<str> mods=<n>
;    mod0=<first 4 bytes> mmap=<entries> bss=<or of bss dwords>\n"
; then sets EDI = 0x600D and halts. test_loader.c checks the text and the
; final registers.
bits 32
org 0x100000

MB_MAGIC equ 0x1BADB002
MB_FLAGS equ (1 << 16) | (1 << 1) | (1 << 0)

header:
  dd MB_MAGIC
  dd MB_FLAGS
  dd -(MB_MAGIC + MB_FLAGS)
  dd header                     ; header_addr
  dd header                     ; load_addr
  dd load_end                   ; load_end_addr
  dd bss_end                    ; bss_end_addr
  dd start                      ; entry_addr

start:
  mov esp, stack_top
  mov ebp, ebx                  ; the information structure
  mov esi, s_magic
  call puts
  cmp eax, 0x2BADB002
  jne bad
  mov esi, s_ok
  call puts
  mov esi, s_lower
  call puts
  mov eax, [ebp + 4]
  call puthex
  mov esi, s_upper
  call puts
  mov eax, [ebp + 8]
  call puthex
  mov esi, s_cmdline
  call puts
  test dword [ebp], 1 << 2
  jz .nocmd
  mov esi, [ebp + 16]
  call puts
.nocmd:
  mov esi, s_mods
  call puts
  mov eax, [ebp + 20]
  call puthex
  test eax, eax
  jz .nomods
  mov esi, s_mod0
  call puts
  mov ebx, [ebp + 24]           ; first module: mod_start
  mov ebx, [ebx]
  mov ecx, 4
.modbyte:
  mov al, [ebx]
  out 0xe9, al
  inc ebx
  loop .modbyte
.nomods:
  mov esi, s_mmap
  call puts
  mov eax, [ebp + 44]           ; mmap_length / 24
  xor edx, edx
  mov ecx, 24
  div ecx
  call puthex
  mov esi, s_bss
  call puts
  xor eax, eax                  ; OR of every bss dword: 0 if zeroed
  mov ebx, bss_start
.bss:
  or eax, [ebx]
  add ebx, 4
  cmp ebx, stack                ; (the stack above is in use)
  jb .bss
  call puthex
  mov al, 10
  out 0xe9, al
  mov edi, 0x600D
  hlt
bad:
  mov esi, s_bad
  call puts
  mov edi, 0xBAD
  hlt

; print the NUL-terminated string at esi
puts:
  push eax
.l:
  lodsb
  test al, al
  jz .e
  out 0xe9, al
  jmp .l
.e:
  pop eax
  ret

; print eax as 8 hex digits
puthex:
  push eax
  push ecx
  push edx
  mov edx, eax
  mov ecx, 8
.d:
  rol edx, 4
  mov eax, edx
  and eax, 0xf
  mov al, [hexdigits + eax]
  out 0xe9, al
  loop .d
  pop edx
  pop ecx
  pop eax
  ret

hexdigits: db "0123456789abcdef"
s_magic:   db "mb magic=", 0
s_ok:      db "ok", 0
s_bad:     db "bad", 10, 0
s_lower:   db " lower=", 0
s_upper:   db " upper=", 0
s_cmdline: db " cmdline=", 0
s_mods:    db " mods=", 0
s_mod0:    db " mod0=", 0
s_mmap:    db " mmap=", 0
s_bss:     db " bss=", 0
align 4
load_end:

section .bss
bss_start:
  resb 256
stack:
  resb 1024
stack_top:
bss_end:
