/*  test_util — ids, hashing and the UTF-8 scrubber. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pl_util.h"

static const struct {
    const char *in, *out;
    size_t replaced;
} s_scrub[] = {
    {"", "", 0},
    {"plain ascii", "plain ascii", 0},
    {"\xc3\xa9t\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80", "\xc3\xa9t\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80", 0},
    {"lone \x80 continuation", "lone ? continuation", 1},
    {"cut \xc3", "cut ?", 1},
    {"cut \xe6\x97", "cut ??", 2},
    {"overlong \xc0\xaf", "overlong ??", 2},
    {"overlong \xe0\x80\xaf", "overlong ???", 3},
    {"surrogate \xed\xa0\x80", "surrogate ???", 3},
    {"too big \xf4\x90\x80\x80", "too big ????", 4},
    {"\xff\xfe", "??", 2},
    {"\xf0\x9f\x98", "???", 3},
};

static void
test_utf8_scrub(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_scrub / sizeof s_scrub[0]; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s", s_scrub[i].in);
        size_t n = pl_utf8_scrub(buf);
        if (strcmp(buf, s_scrub[i].out) != 0 || n != s_scrub[i].replaced)
            fail_msg("row %zu: got \"%s\" (%zu replaced)", i, buf, n);
    }
}

static void
test_utf8_valid(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_scrub / sizeof s_scrub[0]; i++) {
        const char *in = s_scrub[i].in;
        if (pl_utf8_valid(in, strlen(in)) != (s_scrub[i].replaced == 0))
            fail_msg("row %zu: \"%s\"", i, in);
    }
    assert_true(pl_utf8_valid(NULL, 0));
    assert_true(pl_utf8_valid("a\0b", 3));
    /* a sequence cut by the length is invalid, whatever follows in memory */
    assert_false(pl_utf8_valid("\xc3\xa9", 1));
    assert_false(pl_utf8_valid("\xe2\x82\xac", 2));
    assert_false(pl_utf8_valid("\xf0\x9f\x98\x80", 3));
    assert_true(pl_utf8_valid("\xf0\x9f\x98\x80", 4));
}

static void
test_ids(void **state)
{
    (void) state;
    char a[24], b[24];
    pl_id_new('s', a, sizeof a);
    pl_id_new('s', b, sizeof b);
    assert_int_equal(strlen(a), 17);
    assert_int_equal(a[0], 's');
    assert_string_not_equal(a, b);
    assert_true(pl_id_valid(a));
    assert_false(pl_id_valid(""));
    assert_false(pl_id_valid("a b"));
    char long_id[80];
    memset(long_id, 'x', 65);
    long_id[65] = '\0';
    assert_false(pl_id_valid(long_id));
    long_id[64] = '\0';
    assert_true(pl_id_valid(long_id));
    assert_int_equal(pl_hash("abc"), pl_hash("abc"));
    assert_int_not_equal(pl_hash("abc"), pl_hash("abd"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_scrub),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
