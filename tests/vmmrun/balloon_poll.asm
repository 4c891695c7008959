; A flat 32-bit guest (loaded at 0x10000) that finds vmmrun's virtio-balloon
; at 0xd0000000 (magic "virt", device 5), waits until the balloon's target
; (num_pages in its configuration space) is no longer the 4 MiB vmmrun was
; started with (--balloon 4M) and writes the new target in MiB to the exit
; port; 0x7f if the device is not there. It compares with the known start
; value, not with its own first read: the host may change the target
; before the guest's first instruction runs.
bits 32
org 0x10000

BALLOON equ 0xd0000000

    cmp dword [BALLOON], 0x74726976 ; "virt"
    jne fail
    cmp dword [BALLOON + 8], 5      ; DeviceID: balloon
    jne fail
    mov ebx, 4 << 8                 ; num_pages at start: 4 MiB
.wait:
    mov eax, [BALLOON + 0x100]
    cmp eax, ebx
    je .wait
    shr eax, 8                      ; 4 KiB pages to MiB
    out 0xf4, al
    hlt
fail:
    mov al, 0x7f
    out 0xf4, al
    hlt
