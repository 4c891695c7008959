; 4-level paging built by the guest: new tables with a 2 MiB identity page
; for the low memory, a 4 KiB page mapping 0x40000000 to 0x30000 and a
; 2 MiB page mapping 0x40200000 to 0; the guest switches CR3 to them,
; writes through both aliases and reads the data back through identity.
; (No 1 GiB page: this host's KVM does not offer them in CPUID.) The
; processor sets accessed and dirty in the identity PDE it wrote through.
; mode: long64
; expect: rax=0xcafebabe rbx=0x11 rcx=0x5a cr3=0x40000
; expect-mem: 0x30010 be ba fe ca
; expect-mem: 0x30020 11
; expect-mem: 0x42000 e3 00 00 00
bits 64
org 0x10000
    ; PML4 0x40000 -> PDPT 0x41000
    mov dword [0x40000], 0x41003
    ; PDPT[0] -> PD 0x42000; PDPT[1] -> PD 0x43000
    mov dword [0x41000], 0x42003
    mov dword [0x41008], 0x43003
    ; PD[0]: 2 MiB identity page; second PD: [0] -> PT 0x44000, [1]: 2 MiB
    ; page at 0
    mov dword [0x42000], 0x83
    mov dword [0x43000], 0x44003
    mov dword [0x43008], 0x83
    ; PT[0]: 0x40000000 -> 0x30000
    mov dword [0x44000], 0x30003
    mov eax, 0x40000
    mov cr3, rax
    mov ecx, 0x40000000
    mov dword [rcx + 0x10], 0xcafebabe
    mov eax, [0x30010]
    mov edx, 0x40200000
    mov byte [rdx + 0x30020], 0x11
    movzx ebx, byte [0x30020]
    mov byte [0x30030], 0x5a
    movzx ecx, byte [rdx + 0x30030]
    hlt
