/*  vendor — the model APIs' streamed items and error bodies
    (protocol/pl_vendor.h).

    Input: 1 byte of vendor (openai, gemini, ollama), 2 bytes of HTTP
    status, then the item. pl_vendor_parse reads the item as that vendor's
    streamed item (an SSE event's data, an NDJSON line): 0 with an event
    within its promises, or a refusal with the event empty. Then
    pl_vendor_error_message reads it as a non-2xx response body: always a
    message of at most PL_VENDOR_ERROR_MAX bytes of valid UTF-8 with no
    control characters (C0, DEL, C1) and no key-shaped word left. The same
    holds for an in-stream error. */
#include <string.h>

#include "fuzz.h"
#include "pl_err.h"
#include "pl_vendor.h"

static bool
s_alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* The promises of a sanitised message. */
static void
s_check_message(const char *msg)
{
    FUZZ_CHECK(msg != NULL);
    size_t n = strlen(msg);
    FUZZ_CHECK(n > 0 && n <= PL_VENDOR_ERROR_MAX);
    const unsigned char *p = (const unsigned char *) msg;
    for (size_t i = 0; i < n;) {
        size_t len = fuzz_utf8_len(p + i, n - i);
        FUZZ_CHECK(len > 0);
        FUZZ_CHECK(p[i] >= 0x20 && p[i] != 0x7F);
        FUZZ_CHECK(!(p[i] == 0xC2 && p[i + 1] < 0xA0)); /* C1 */
        bool word = i == 0 || !s_alnum(p[i - 1]);
        FUZZ_CHECK(!(word && (strncmp(msg + i, "sk-", 3) == 0 || strncmp(msg + i, "AIza", 4) == 0)));
        i += len;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    pl_vendor_t v = (pl_vendor_t) (fuzz_u8(&in) % PL_VENDOR_COUNT_);
    int status = fuzz_u16(&in);

    /* a copy of exactly the item, so reading past it is caught */
    char *item = fuzz_dup(in.p, in.n);
    pl_vendor_event_t ev;
    int rc = pl_vendor_parse(v, item, in.n, &ev);
    if (rc == 0) {
        FUZZ_CHECK(ev.finish >= -1 && ev.finish < PL_FINISH_COUNT_);
        FUZZ_CHECK(ev.text == NULL || ev.text[0] != '\0');
        if (ev.error) {
            FUZZ_CHECK(ev.done && ev.finish == PL_FINISH_ERROR);
            s_check_message(ev.error);
        }
        FUZZ_CHECK(!ev.has_usage || (ev.prompt_tokens >= 0 && ev.completion_tokens >= 0));
    } else {
        FUZZ_CHECK(rc == -PL_E_BAD_FRAME);
        FUZZ_CHECK(!ev.text && !ev.error && !ev.done && !ev.has_usage && ev.finish == -1);
    }
    pl_vendor_event_reset(&ev);

    char *msg = pl_vendor_error_message(v, status, item, in.n);
    s_check_message(msg);
    free(msg);
    free(item);
    return 0;
}
