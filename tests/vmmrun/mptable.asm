; A Multiboot kernel (header address fields, no ELF) that checks the MP
; table vmmrun writes on KVM: it finds the floating pointer in the BIOS
; area, verifies both checksums, the local APIC address, one bootstrap
; processor, the IOAPIC at 0xfec00000 and the 15 ISA interrupt entries, and
; writes the number of enabled processors to the exit port. On failure it
; writes 0x40 (no table) or 0x41.. (the check that failed).
bits 32
org 0x100000

MB_MAGIC equ 0x1BADB002
MB_FLAGS equ 0x00010000         ; address fields below

header:
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
    dd header                   ; header_addr
    dd 0x100000                 ; load_addr
    dd 0                        ; load_end_addr: the whole file
    dd 0                        ; bss_end_addr: none
    dd start                    ; entry_addr

start:
    mov esp, 0x90000
    mov esi, 0xf0000
.scan:
    cmp dword [esi], 0x5f504d5f ; "_MP_"
    je .found
    add esi, 16
    cmp esi, 0x100000
    jb .scan
    mov al, 0x40
    jmp .exit
.found:
    mov ecx, 16
    call sum
    mov ah, 0x41
    test al, al
    jnz .fail
    mov ebx, [esi + 4]          ; the configuration table
    mov ah, 0x42
    cmp dword [ebx], 0x504d4350 ; "PCMP"
    jne .fail
    mov esi, ebx
    movzx ecx, word [ebx + 4]
    call sum
    mov ah, 0x43
    test al, al
    jnz .fail
    mov ah, 0x44
    cmp dword [ebx + 36], 0xfee00000
    jne .fail

    movzx ecx, word [ebx + 34]  ; entries
    lea esi, [ebx + 44]
    xor edx, edx                ; dl: enabled CPUs, dh: bootstrap CPUs
    xor edi, edi                ; ISA interrupt entries
    xor ebp, ebp                ; IOAPIC seen
.walk:
    mov al, [esi]
    cmp al, 0
    jne .not_cpu
    test byte [esi + 3], 1
    jz .cpu_done
    inc dl
.cpu_done:
    test byte [esi + 3], 2
    jz .cpu_next
    inc dh
.cpu_next:
    add esi, 20
    jmp .next
.not_cpu:
    cmp al, 2
    jne .not_ioapic
    cmp dword [esi + 4], 0xfec00000
    jne .skip8
    mov ebp, 1
    jmp .skip8
.not_ioapic:
    cmp al, 3
    jne .not_int
    inc edi
    jmp .skip8
.not_int:
    mov ah, 0x45
    cmp al, 4
    ja .fail                    ; an unknown entry type
.skip8:
    add esi, 8
.next:
    dec ecx
    jnz .walk

    mov ah, 0x46
    cmp dh, 1
    jne .fail
    mov ah, 0x47
    test ebp, ebp
    jz .fail
    mov ah, 0x48
    cmp edi, 15
    jne .fail
    mov al, dl
    jmp .exit
.fail:
    mov al, ah
.exit:
    out 0xf4, al
.halt:
    hlt
    jmp .halt

; al = sum of ecx bytes at esi (esi, ecx kept)
sum:
    push esi
    push ecx
    xor eax, eax
.add:
    add al, [esi]
    inc esi
    dec ecx
    jnz .add
    pop ecx
    pop esi
    ret
