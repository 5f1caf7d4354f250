/*  test_models — the models table: valid files, every refusal, defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pl_err.h"
#include "pl_models.h"

#define J(s) s, sizeof(s) - 1

static void
test_no_file_gives_echo(void **state)
{
    (void) state;
    pl_models_t m;
    char err[160] = "";
    assert_int_equal(pl_models_parse(NULL, 0, &m, err, sizeof err), 0);
    assert_int_equal(m.n, 1);
    const pl_model_t *echo = pl_models_find(&m, "echo");
    assert_non_null(echo);
    assert_string_equal(echo->backend, "echo");
    assert_null(pl_models_find(&m, "gpt"));
    assert_null(pl_models_find(&m, NULL));
    pl_models_free(&m);
}

static void
test_full_file(void **state)
{
    (void) state;
    static const char json[] =
        "[{\"name\":\"gpt-4o-mini\",\"backend\":\"openai\",\"base_url\":\"https://api.openai.com/v1/\","
        "\"model\":\"gpt-4o-mini-2024\",\"api_key_env\":\"OPENAI_API_KEY\",\"price_in\":0.15,\"price_out\":0.6},"
        " {\"name\":\"flash\",\"backend\":\"gemini\",\"base_url\":\"https://generativelanguage.googleapis.com\","
        "\"api_key_env\":\"GEMINI_API_KEY\"},"
        " {\"name\":\"llama\",\"backend\":\"ollama\",\"base_url\":\"http://127.0.0.1:11434\",\"model\":\"llama3.2\"}]";
    pl_models_t m;
    char err[160] = "";
    assert_int_equal(pl_models_parse(J(json), &m, err, sizeof err), 0);
    assert_int_equal(m.n, 4); /* echo added */
    const pl_model_t *g = pl_models_find(&m, "gpt-4o-mini");
    assert_non_null(g);
    assert_string_equal(g->backend, "openai");
    assert_string_equal(g->base_url, "https://api.openai.com/v1"); /* trailing slash trimmed */
    assert_string_equal(g->model, "gpt-4o-mini-2024");
    assert_string_equal(g->api_key_env, "OPENAI_API_KEY");
    assert_true(g->price_in == 0.15 && g->price_out == 0.6);
    const pl_model_t *f = pl_models_find(&m, "flash");
    assert_string_equal(f->model, "flash"); /* model defaults to name */
    assert_true(f->price_in == 0 && f->price_out == 0);
    const pl_model_t *l = pl_models_find(&m, "llama");
    assert_string_equal(l->api_key_env, "");
    assert_non_null(pl_models_find(&m, "echo"));
    pl_models_free(&m);
}

static void
test_echo_named_in_file_is_not_duplicated(void **state)
{
    (void) state;
    pl_models_t m;
    char err[160];
    assert_int_equal(pl_models_parse(J("[{\"name\":\"echo\",\"backend\":\"echo\"}]"), &m, err, sizeof err), 0);
    assert_int_equal(m.n, 1);
    pl_models_free(&m);
    assert_int_equal(pl_models_parse(J("[]"), &m, err, sizeof err), 0);
    assert_int_equal(m.n, 1);
    pl_models_free(&m);
}

static const struct {
    const char *what;
    const char *json;
    size_t len;
    const char *says; /* a word the error must contain */
} s_bad[] = {
    {"not JSON", J("[{"), "JSON"},
    {"not an array", J("{\"name\":\"x\"}"), "array"},
    {"entry not an object", J("[1]"), "object"},
    {"no name", J("[{\"backend\":\"echo\"}]"), "name"},
    {"bad name", J("[{\"name\":\"a b\",\"backend\":\"echo\"}]"), "name"},
    {"name not a string", J("[{\"name\":5,\"backend\":\"echo\"}]"), "name"},
    {"no backend", J("[{\"name\":\"x\"}]"), "backend"},
    {"unknown backend", J("[{\"name\":\"x\",\"backend\":\"bard\"}]"), "backend"},
    {"remote without base_url", J("[{\"name\":\"x\",\"backend\":\"openai\"}]"), "base_url"},
    {"base_url not http", J("[{\"name\":\"x\",\"backend\":\"openai\",\"base_url\":\"ftp://h\"}]"), "http"},
    /* were trimmed to "https:" and accepted (found by fuzz/models) */
    {"base_url scheme only", J("[{\"name\":\"x\",\"backend\":\"openai\",\"base_url\":\"https://\"}]"), "host"},
    {"base_url no host", J("[{\"name\":\"x\",\"backend\":\"ollama\",\"base_url\":\"http:///v1\"}]"), "host"},
    {"empty model", J("[{\"name\":\"x\",\"backend\":\"echo\",\"model\":\"\"}]"), "model"},
    {"key env lower case", J("[{\"name\":\"x\",\"backend\":\"echo\",\"api_key_env\":\"key\"}]"), "api_key_env"},
    {"key env with =", J("[{\"name\":\"x\",\"backend\":\"echo\",\"api_key_env\":\"A=B\"}]"), "api_key_env"},
    {"negative price", J("[{\"name\":\"x\",\"backend\":\"echo\",\"price_in\":-1}]"), "prices"},
    {"price a string", J("[{\"name\":\"x\",\"backend\":\"echo\",\"price_out\":\"1\"}]"), "prices"},
    {"duplicate", J("[{\"name\":\"x\",\"backend\":\"echo\"},{\"name\":\"x\",\"backend\":\"echo\"}]"), "twice"},
};

static void
test_bad_files(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_bad / sizeof s_bad[0]; i++) {
        pl_models_t m;
        char err[160] = "";
        int rc = pl_models_parse(s_bad[i].json, s_bad[i].len, &m, err, sizeof err);
        if (rc != -PL_E_BAD_FRAME)
            fail_msg("%s: rc %d", s_bad[i].what, rc);
        if (!strstr(err, s_bad[i].says))
            fail_msg("%s: error \"%s\" does not mention %s", s_bad[i].what, err, s_bad[i].says);
        assert_null(m.v);
        assert_int_equal(m.n, 0);
    }
}

static void
test_too_many_models(void **state)
{
    (void) state;
    static char json[300 * 40];
    size_t pos = 0;
    json[pos++] = '[';
    for (int i = 0; i < 300; i++)
        pos += (size_t) snprintf(json + pos, sizeof json - pos, "%s{\"name\":\"m%d\",\"backend\":\"echo\"}",
                                 i ? "," : "", i);
    json[pos++] = ']';
    pl_models_t m;
    char err[160];
    assert_int_equal(pl_models_parse(json, pos, &m, err, sizeof err), -PL_E_BAD_FRAME);
    assert_non_null(strstr(err, "at most"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_file_gives_echo),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_echo_named_in_file_is_not_duplicated),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_too_many_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
