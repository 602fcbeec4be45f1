/* Test runner: one Check suite per module, found by file name (tests/check_<mod>.c
 * exports Suite *<mod>_suite(void)); the Makefile writes the list to suites.def.
 * Exits non-zero when any test failed. CK_RUN_SUITE / CK_RUN_CASE select tests. */
#include <check.h>
#include <stdlib.h>

#define SUITE(name) Suite *name##_suite(void);
#include "suites.def"
#undef SUITE

int main(void)
{
    SRunner *sr = srunner_create(NULL);
#define SUITE(name) srunner_add_suite(sr, name##_suite());
#include "suites.def"
#undef SUITE
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
