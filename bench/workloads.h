/*
 * Compute kernels shared by the guest benchmark kernel (bench/kernel) and
 * the native side of the benchmarks, so guest and host run the same C.
 * Freestanding: no libc. Each returns a checksum that must agree everywhere.
 */
#ifndef LIBVMM_BENCH_WORKLOADS_H
#define LIBVMM_BENCH_WORKLOADS_H

#include <stddef.h>
#include <stdint.h>

/* n iterations of `dec rcx; jnz`. Returns 0. */
uint64_t wl_loop(uint64_t n);
/* Sieve of Eratosthenes below n using buf[n]; returns the prime count. */
uint64_t wl_sieve(uint8_t *buf, uint64_t n);
/* SHA-256 of n bytes of a fixed pattern written into buf[n]; returns the
   first 8 bytes of the digest. */
uint64_t wl_sha256(uint8_t *buf, uint64_t n);
/* Sort n pseudo-random 32-bit integers in a[n]; returns a checksum of the
   sorted order (0 if the result is not sorted). */
uint64_t wl_sort(uint32_t *a, uint64_t n);

#endif
