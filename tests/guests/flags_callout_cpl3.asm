; 64-bit user mode: the guest's arithmetic flags and DF survive entries
; into translated code and callouts that resume it (the glue loads them
; without popf: cld/std, an overflowing add for OF, sahf for the rest).
; All of them set (popfq, emulated, leaves the translation unit), then
; cpuid (a callout that resumes), then read natively (seto, lahf) and
; through pushfq; then all of them clear the same way.
; mode: long64-cpl3
; expect: r8=1 r9=0xd7 r10=0xcd5 r11=0 r12=0x2 r13=0
bits 64
org 0x10000
    mov rax, 0xcd5              ; OF DF SF ZF AF PF CF
    push rax
    popfq
    mov eax, 0
    cpuid                       ; flags untouched
    seto r8b                    ; 1
    lahf                        ; ah = SF ZF AF PF 1 CF = 0xd7
    movzx ecx, ah
    mov r9d, ecx
    pushfq
    pop r10
    and r10d, 0xcd5
    movzx r8d, r8b
    xor eax, eax
    push rax
    popfq
    mov eax, 0
    cpuid
    seto r11b
    lahf
    movzx ecx, ah               ; only the fixed bit 1
    mov r12d, ecx
    pushfq
    pop r13
    and r13d, 0xcd5
    movzx r11d, r11b
    mov eax, 0                  ; cpuid's values differ between engines
    mov ebx, 0
    mov ecx, 0
    mov edx, 0
    mov qword [rsp - 8], 0      ; IF and IOPL there differ between engines
    out 0xeb, al
