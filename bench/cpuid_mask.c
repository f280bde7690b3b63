/* Preloaded into a process (LD_PRELOAD), makes its CPUID instruction answer as an older x86-64 CPU, the kind
 * XMODAL_BENCH_CPU names: "avx2" (the default: AMD Zen 2/3, Intel Haswell to Comet Lake; AVX-512, AVX-VNNI and
 * AMX cleared) or "avx512" (Intel Skylake-SP: AVX-512 F, CD, BW, DQ and VL kept; VNNI, BF16, AVX-VNNI, AMX and
 * the later AVX-512 extensions cleared). Built and used by bench/as_cpu.py; see there for why.
 *
 * Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID 0; cpuinfo flag cpuid_fault) makes each CPUID raise
 * SIGSEGV; the handler runs the real one with faulting briefly off, masks it and steps over the instruction.
 * The setting is kept by threads and forks and dropped at exec, where the preload sets it again. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static struct sigaction previous;
static int keep_avx512; /* the "avx512" kind */

static void allow_cpuid(int allowed) { syscall(SYS_arch_prctl, ARCH_SET_CPUID, allowed); }

static void mask(uint32_t leaf, uint32_t subleaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
    if (leaf == 7 && subleaf == 0) {
        if (keep_avx512) /* AVX512 IFMA PF ER */
            *b &= ~((1u << 21) | (1u << 26) | (1u << 27));
        else /* AVX512 F DQ IFMA PF ER CD BW VL */
            *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
        /* AVX512 VBMI VBMI2 VNNI BITALG VPOPCNTDQ */
        *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* AVX512 4VNNIW 4FMAPS VP2INTERSECT FP16; AMX BF16 TILE INT8 */
        *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && subleaf == 1) {
        *a &= ~((1u << 4) | (1u << 5)); /* AVX-VNNI, AVX512_BF16 */
    }
}

static void on_segv(int signal, siginfo_t *info, void *context) {
    greg_t *registers = ((ucontext_t *)context)->uc_mcontext.gregs;
    const uint8_t *instruction = (const uint8_t *)registers[REG_RIP];
    (void)signal;
    (void)info;
    if (instruction[0] == 0x0f && instruction[1] == 0xa2) {
        uint32_t leaf = registers[REG_RAX], subleaf = registers[REG_RCX], a, b, c, d;
        allow_cpuid(1);
        __cpuid_count(leaf, subleaf, a, b, c, d);
        allow_cpuid(0);
        mask(leaf, subleaf, &a, &b, &c, &d);
        registers[REG_RAX] = a;
        registers[REG_RBX] = b;
        registers[REG_RCX] = c;
        registers[REG_RDX] = d;
        registers[REG_RIP] += 2;
        return;
    }
    sigaction(SIGSEGV, &previous, NULL); /* a real fault: it happens again, as it would have */
}

__attribute__((constructor)) static void start(void) {
    const char *kind = getenv("XMODAL_BENCH_CPU");
    struct sigaction action;
    keep_avx512 = kind != NULL && strcmp(kind, "avx512") == 0;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &action, &previous);
    allow_cpuid(0);
}
