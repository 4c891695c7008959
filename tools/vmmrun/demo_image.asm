; The demo guest (guest/demo), linked into vmmrun so that the binary boots
; it with no arguments wherever it is installed. DEMO_IMAGE is the path of
; demo.elf, given by the build.
section .rodata align=16
global vmmrun_demo_image
global vmmrun_demo_image_end
vmmrun_demo_image:
    incbin DEMO_IMAGE
vmmrun_demo_image_end:

section .note.GNU-stack noalloc noexec nowrite progbits
