; 32-bit paging built by the guest: a 4 MiB PSE identity page for the low
; memory and a 4 KiB page mapping 0x400000 to 0x30000; the guest turns
; paging on, writes through the alias and reads back through identity.
; mode: prot32
; expect: rax=0xcafebabe rbx=0x80000033 cr3=0x40000
; expect-mem: 0x30010 be ba fe ca
; kvm-host-limit: shutdown "this host's KVM (PVM) has no paging outside long mode: setting CR0.PG in 32-bit mode shuts the guest down (raw-ioctl repro in tests/kvm_host_probe.c)"
bits 32
org 0x10000
    mov dword [0x40000], 0x00000083     ; PDE 0: 4 MiB page at 0
    mov dword [0x40004], 0x00041003     ; PDE 1: table 0x41000
    mov dword [0x41000], 0x00030003     ; PTE 0: 0x400000 -> 0x30000
    mov eax, 0x40000
    mov cr3, eax
    mov eax, cr4
    or eax, 0x10                        ; PSE
    mov cr4, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    mov ebx, cr0
    mov dword [0x400010], 0xcafebabe
    mov eax, [0x30010]
    hlt
