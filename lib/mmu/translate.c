/*
 * Public guest-virtual translation and virtual memory copies for a vCPU,
 * built on the walker.
 */
#include "../cpu/x86.h"
#include "../internal.h"

int vmm__vcpu_paging(vmm_vcpu *vcpu, struct vmm__paging *pg) {
  const struct vmm__engine_ops *ops = vcpu->vm->ops;
  struct vmm_sregs s;
  struct vmm_regs r;
  int err;

  if ((err = ops->get_sregs(vcpu, &s)) < 0 || (err = ops->get_regs(vcpu, &r)) < 0)
    return err;
  pg->cr0 = s.cr0;
  pg->cr3 = s.cr3;
  pg->cr4 = s.cr4;
  pg->efer = s.efer;
  pg->ac = (r.rflags & X86_RFLAGS_AC) != 0;
  const struct vmm_cpuid_entry *e =
      vmm__cpuid_find(vcpu->cpuid, vcpu->ncpuid, 0x80000008, 0);
  pg->maxphyaddr = e != NULL ? (e->eax & 0xff) : 36;
  e = vmm__cpuid_find(vcpu->cpuid, vcpu->ncpuid, 0x80000001, 0);
  pg->gbpages = e != NULL && (e->edx & (1u << 26));
  return 0;
}

int vmm_vcpu_translate(vmm_vcpu *vcpu, vmm_gva_t gva, unsigned access,
                       struct vmm_translation *out) {
  if (vcpu == NULL || out == NULL)
    return VMM_EINVAL;
  if (access & ~(unsigned)(VMM_ACCESS_WRITE | VMM_ACCESS_EXEC |
                           VMM_ACCESS_USER | VMM_ACCESS_SET_AD))
    return VMM_EINVAL;
  if ((access & VMM_ACCESS_WRITE) && (access & VMM_ACCESS_EXEC))
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;
  struct vmm__paging pg;
  int err = vmm__vcpu_paging(vcpu, &pg);
  if (err < 0)
    return err;
  return vmm__mmu_walk(&vcpu->vm->mem, &pg, gva, access, out);
}

/*
 * Host copies through the vCPU's page tables, with debugger semantics:
 * permissions are ignored (a breakpoint can be written into read-only code,
 * user memory read under SMAP), only unmapped pages fail. Every page is
 * translated before anything is copied, so a failure copies nothing.
 */
static int virt_copy(vmm_vcpu *vcpu, vmm_gva_t gva, void *buf, size_t len,
                     bool write) {
  if (vcpu == NULL || (buf == NULL && len != 0))
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;
  struct vmm__paging pg;
  int err = vmm__vcpu_paging(vcpu, &pg);
  if (err < 0)
    return err;
  for (int pass = 0; pass < 2; pass++) {
    uint8_t *p = buf;
    vmm_gva_t va = gva;
    for (size_t left = len; left > 0;) {
      struct vmm_translation t;
      err = vmm__mmu_walk(&vcpu->vm->mem, &pg, va, VMM__ACCESS_HOST, &t);
      if (err < 0)
        return err;
      size_t n = VMM_PAGE_SIZE - (va & (VMM_PAGE_SIZE - 1));
      if (n > left)
        n = left;
      if (pass == 0) {
        void *hva;
        if (vmm_mem_gpa_to_hva(vcpu->vm, t.gpa, n, &hva) < 0)
          return VMM_ENOMAP;
      } else if ((err = write ? vmm_mem_write(vcpu->vm, t.gpa, p, n)
                              : vmm_mem_read(vcpu->vm, t.gpa, p, n)) < 0) {
        return err;
      }
      p += n;
      va += n;
      left -= n;
    }
  }
  return 0;
}

int vmm_vcpu_read_virt(vmm_vcpu *vcpu, vmm_gva_t gva, void *buf, size_t len) {
  return virt_copy(vcpu, gva, buf, len, false);
}

int vmm_vcpu_write_virt(vmm_vcpu *vcpu, vmm_gva_t gva, const void *buf,
                        size_t len) {
  return virt_copy(vcpu, gva, (void *)buf, len, true);
}
