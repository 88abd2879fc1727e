# Sourced by run_all.sh and run_mtp.sh: the OpenBLAS settings for CPU training.
# OpenBLAS picks its kernels from CPUID and, on virtual machines it does not recognise, falls
# back to the generic SSE3 ones ("Prescott"): matrix products 3-4x slower.  Name the kernel
# family from the CPU flags unless the caller chose one.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ]; then
    if grep -qw avx512f /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo; then
        export OPENBLAS_CORETYPE=SkylakeX
    elif grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
        export OPENBLAS_CORETYPE=Haswell
    fi
fi
# one thread per training process: at this size two threads gain nothing even on idle cores,
# and lose several-fold when other work shares them
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
