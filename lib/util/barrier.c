/*
 * Asymmetric fences (membarrier(2)): a thread on a hot path orders a store
 * before a later load with a compiler barrier alone, and the rare thread
 * that needs that order makes every thread of the process run a full
 * fence instead. Used by the I/O buses' readers (docs/io.md) and by the BT
 * engine's write-protect shootdowns (docs/bt.md).
 */
#include <errno.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../internal.h"

static long membarrier(int cmd) {
  return syscall(SYS_membarrier, cmd, 0, 0);
}

/* Registration is per process, idempotent and permanent (until exec), so
   asking again for each user is harmless. */
bool vmm__membarrier_usable(void) {
  long cmds = membarrier(MEMBARRIER_CMD_QUERY);
  if (cmds < 0 || !(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED))
    return false;
  return membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
}

/* The call can fail only on a transient shortage (ENOMEM, EINTR) or, in a
   child after fork() without exec, if the registration was not inherited:
   retried, after registering again for the latter. */
void vmm__membarrier(void) {
  while (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) {
    if (errno == EPERM)
      membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
    sched_yield();
  }
}
