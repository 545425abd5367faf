/* What a kernel library says of its own build, for subpixel_cli.kernels to read through each
 * library's features(): whether OpenMP shares its rows among threads (without it they run on one
 * thread, and the int8 path is not the fast one) and whether the compiler targets AVX-512 BF16. */
#ifdef _OPENMP
#define BUILT_OPENMP 1
#else
#define BUILT_OPENMP 0
#endif
#ifdef __AVX512BF16__
#define BUILT_BF16 1
#else
#define BUILT_BF16 0
#endif
