; Multiboot v1 kernel as an ELF32 file without address fields: the loader
; must take the PT_LOAD segment (linked at 0xC0200000, loaded at physical
; 0x200000) and translate the entry point. Prints "mb-elf ok cmdline=<str>"
; on port 0xe9, sets EDI = 0x600D and halts.
bits 32
VBASE equ 0xC0200000
PBASE equ 0x200000
%define PHYS(x) ((x) - VBASE + PBASE)
org VBASE

ehdr:
  db 0x7f, "ELF", 1, 1, 1, 0      ; ELFCLASS32, LSB, version 1
  times 8 db 0
  dw 2                            ; e_type ET_EXEC
  dw 3                            ; e_machine EM_386
  dd 1                            ; e_version
  dd start                        ; e_entry (virtual)
  dd phdr - ehdr                  ; e_phoff
  dd 0                            ; e_shoff
  dd 0                            ; e_flags
  dw 52                           ; e_ehsize
  dw 32                           ; e_phentsize
  dw 1                            ; e_phnum
  dw 0, 0, 0                      ; e_shentsize, e_shnum, e_shstrndx
phdr:
  dd 1                            ; PT_LOAD
  dd 0                            ; p_offset
  dd VBASE                        ; p_vaddr
  dd PBASE                        ; p_paddr
  dd file_end - ehdr              ; p_filesz
  dd mem_end - ehdr               ; p_memsz
  dd 7                            ; p_flags RWX
  dd 0x1000                       ; p_align

align 4
MB_MAGIC equ 0x1BADB002
MB_FLAGS equ (1 << 1)
mbheader:
  dd MB_MAGIC
  dd MB_FLAGS
  dd -(MB_MAGIC + MB_FLAGS)

start:
  mov esp, PHYS(stack_top)
  cmp eax, 0x2BADB002
  jne .bad
  mov esi, PHYS(s_ok)
  call puts
  mov esi, [ebx + 16]
  call puts
  mov al, 10
  out 0xe9, al
  mov edi, 0x600D
  hlt
.bad:
  mov edi, 0xBAD
  hlt

puts:
  lodsb
  test al, al
  jz .e
  out 0xe9, al
  jmp puts
.e:
  ret

s_ok: db "mb-elf ok cmdline=", 0
file_end:
  times 512 db 0                  ; (bss, not in the file)
stack_top:
mem_end:
