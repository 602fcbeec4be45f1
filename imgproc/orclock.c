/* orclock — one lock around orc's code memory, for every libvips call in the process.
 *
 * libvips compiles small SIMD programs with orc when a resize (reducev, reduceh) or a
 * convolution is built, and frees them when it is disposed. Debian 12's orc 0.4.33 takes a
 * free code chunk under its lock but splits it and marks it used after dropping the lock
 * (orc_code_allocate_codemem), and frees and merges chunks with no lock at all
 * (orc_code_chunk_free). Two workers that build or dispose a resize at the same moment
 * corrupt the chunk list: the server died of SIGSEGV in orc_code_allocate_codemem in the
 * load harness, and a plain 4-thread vips_thumbnail loop dies in orc_code_free or in
 * glibc's "double free" within a minute or two.
 *
 * libvips reaches that list only through orc_program_compile (allocates code) and
 * orc_program_free (frees it). The executable defines both: the dynamic linker binds
 * libvips' calls to the executable's definitions before liborc's, and these take one
 * process-wide mutex around liborc's own (dlsym RTLD_NEXT). Running an orc program takes
 * no lock. Turning orc off instead (vips_vector_set_enabled) made libvips' resizes 30%
 * slower on large outputs (README, "Dependencies and why"). No header: only libvips calls
 * these. */
#include <dlfcn.h>
#include <orc/orc.h>
#include <pthread.h>

/* recursive: liborc may call its own public entry points while one of these runs */
static pthread_mutex_t orc_mu = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static pthread_once_t orc_once = PTHREAD_ONCE_INIT;
static OrcCompileResult (*orc_compile_real)(OrcProgram *);
static void (*orc_free_real)(OrcProgram *);

static void orc_resolve(void)
{
    orc_compile_real = (OrcCompileResult(*)(OrcProgram *))dlsym(RTLD_NEXT, "orc_program_compile");
    orc_free_real = (void (*)(OrcProgram *))dlsym(RTLD_NEXT, "orc_program_free");
}

OrcCompileResult orc_program_compile(OrcProgram *p)
{
    pthread_once(&orc_once, orc_resolve);
    if (orc_compile_real == NULL) /* no liborc: libvips then runs its plain C paths */
        return ORC_COMPILE_RESULT_UNKNOWN_COMPILE;
    pthread_mutex_lock(&orc_mu);
    OrcCompileResult r = orc_compile_real(p);
    pthread_mutex_unlock(&orc_mu);
    return r;
}

void orc_program_free(OrcProgram *p)
{
    pthread_once(&orc_once, orc_resolve);
    if (orc_free_real == NULL)
        return;
    pthread_mutex_lock(&orc_mu);
    orc_free_real(p);
    pthread_mutex_unlock(&orc_mu);
}
