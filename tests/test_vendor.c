/*  test_vendor — the vendors' wire formats (protocol/pl_vendor.c).

    Four tables, each row its own test:
    - request bodies: a GENERATE in, the body parsed back with cJSON and
      compared member by member (cJSON_Compare, both directions) with the
      body the vendor documents; escaping checked on the raw text too;
    - URL paths, with Gemini's model escaping and every too-small buffer;
    - streamed items per vendor, from the vendors' documented streams, and
      malformed ones that must give -PL_E_BAD_FRAME and an empty event;
      every item is handed over in a buffer of exactly its length (no NUL
      after it), so ASan sees any over-read;
    - error bodies → the short message.
    Then every prefix of every item, seeded random mutations and random
    bytes (no crash, only 0 or BAD_FRAME, invariants kept), and the names.
    LeakSanitizer checks that nothing leaks on any path. */
#include <setjmp.h> /* cmocka needs these three first */
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl_envelope.h"
#include "pl_err.h"
#include "pl_vendor.h"

/* hand-laid tables and payloads */
// clang-format off
#define OAI PL_VENDOR_OPENAI
#define GEM PL_VENDOR_GEMINI
#define OLL PL_VENDOR_OLLAMA
#define STOP PL_FINISH_STOP
#define LEN PL_FINISH_LENGTH
#define ERR PL_FINISH_ERROR
#define BAD (-PL_E_BAD_FRAME)

/* ---- request bodies ---- */

typedef struct {
    const char *role, *text;
} turn_t;

typedef struct {
    const char *name;
    pl_vendor_t v;
    const char *model;
    const char *system; /* NULL: absent */
    turn_t hist[8];     /* ends at the first role == NULL && text == NULL */
    bool temp_set;
    double temp;
    bool max_set;
    int64_t max;
    const char *expect; /* the body, as JSON */
} req_case_t;

#define UNI "He said \"hi\" \\ caf\xC3\xA9 \xF0\x9F\x98\x80\n\ttab \x01 </script>"
#define UNI_JSON "He said \\\"hi\\\" \\\\ caf\\u00e9 \\ud83d\\ude00\\n\\ttab \\u0001 </script>"
#define OAI_TAIL ",\"stream\":true,\"stream_options\":{\"include_usage\":true}"

static const req_case_t s_req[] = {
    {"req_openai_system_first", OAI, "gpt-4o-mini", "Be brief.", {{"user", "Hi"}}, false, 0, false, 0,
     "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
     "{\"role\":\"user\",\"content\":\"Hi\"}]" OAI_TAIL "}"},
    {"req_openai_params", OAI, "gpt-4o", NULL,
     {{"user", "2+2?"}, {"assistant", "4"}, {"user", "and 3+3?"}}, true, 0.7, true, 256,
     "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"2+2?\"},"
     "{\"role\":\"assistant\",\"content\":\"4\"},{\"role\":\"user\",\"content\":\"and 3+3?\"}]" OAI_TAIL
     ",\"temperature\":0.7,\"max_tokens\":256}"},
    {"req_openai_history_system_joined", OAI, "m", "Rule one.",
     {{"user", "a"}, {"system", "Rule two."}, {"assistant", "b"}, {"system", ""}, {"system", "Rule three."}},
     false, 0, false, 0,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Rule one.\\n\\nRule two.\\n\\nRule three.\"},"
     "{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}]" OAI_TAIL "}"},
    {"req_openai_history_system_only", OAI, "m", NULL, {{"system", "S"}, {"user", "u"}}, false, 0, false, 0,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"u\"}]"
     OAI_TAIL "}"},
    {"req_openai_unicode_quotes", OAI, "m\"x", UNI, {{"user", UNI}}, false, 0, false, 0,
     "{\"model\":\"m\\\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"" UNI_JSON "\"},"
     "{\"role\":\"user\",\"content\":\"" UNI_JSON "\"}]" OAI_TAIL "}"},
    {"req_openai_empty_and_odd_roles", OAI, NULL, "",
     {{"user", ""}, {"bot", "x"}, {NULL, "y"}, {"assistant", ""}, {"user", "z"}}, false, 0, false, 0,
     "{\"model\":\"\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"user\",\"content\":\"y\"},"
     "{\"role\":\"user\",\"content\":\"z\"}]" OAI_TAIL "}"},
    {"req_openai_zero_temp_kept_zero_max_dropped", OAI, "m", NULL, {{"user", "q"}}, true, 0, true, 0,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]" OAI_TAIL ",\"temperature\":0}"},
    {"req_openai_nan_temp_dropped", OAI, "m", NULL, {{"user", "q"}}, true, NAN, true, 1,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]" OAI_TAIL ",\"max_tokens\":1}"},
    {"req_gemini_system_and_roles", GEM, "gemini-2.0-flash", "You are a cat.",
     {{"user", "Hello"}, {"user", "Anyone?"}, {"assistant", "Meow"}, {"system", "Purr."}, {"user", "Why?"}},
     false, 0, false, 0,
     "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Hello\"}]},"
     "{\"role\":\"user\",\"parts\":[{\"text\":\"Anyone?\"}]},{\"role\":\"model\",\"parts\":[{\"text\":\"Meow\"}]},"
     "{\"role\":\"user\",\"parts\":[{\"text\":\"Why?\"}]}],"
     "\"systemInstruction\":{\"parts\":[{\"text\":\"You are a cat.\\n\\nPurr.\"}]}}"},
    {"req_gemini_params", GEM, "gemini-1.5-pro", NULL, {{"user", "q"}}, true, 1.5, true, 1000,
     "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"q\"}]}],"
     "\"generationConfig\":{\"temperature\":1.5,\"maxOutputTokens\":1000}}"},
    {"req_gemini_temperature_only", GEM, "g", NULL, {{"user", "q"}}, true, 0.2, false, 0,
     "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"q\"}]}],\"generationConfig\":{\"temperature\":0.2}}"},
    {"req_gemini_max_only", GEM, "g", NULL, {{"user", "q"}}, false, 0, true, 64,
     "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"q\"}]}],\"generationConfig\":{\"maxOutputTokens\":64}}"},
    {"req_gemini_unicode_quotes", GEM, "g", UNI, {{"assistant", UNI}}, false, 0, false, 0,
     "{\"contents\":[{\"role\":\"model\",\"parts\":[{\"text\":\"" UNI_JSON "\"}]}],"
     "\"systemInstruction\":{\"parts\":[{\"text\":\"" UNI_JSON "\"}]}}"},
    {"req_gemini_empty_history", GEM, "g", NULL, {{NULL, NULL}}, false, 0, false, 0, "{\"contents\":[]}"},
    {"req_ollama_basic", OLL, "llama3.2", "Answer in French.", {{"user", "Why is the sky blue?"}}, false, 0, false, 0,
     "{\"model\":\"llama3.2\",\"messages\":[{\"role\":\"system\",\"content\":\"Answer in French.\"},"
     "{\"role\":\"user\",\"content\":\"Why is the sky blue?\"}],\"stream\":true}"},
    {"req_ollama_options", OLL, "qwen2.5:0.5b", NULL, {{"user", "a"}, {"assistant", "b"}, {"user", "c"}},
     true, 0.3, true, 128,
     "{\"model\":\"qwen2.5:0.5b\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
     "{\"role\":\"assistant\",\"content\":\"b\"},{\"role\":\"user\",\"content\":\"c\"}],\"stream\":true,"
     "\"options\":{\"temperature\":0.3,\"num_predict\":128}}"},
    {"req_ollama_max_only", OLL, "m", NULL, {{"user", "a"}}, false, 0, true, 5,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"stream\":true,"
     "\"options\":{\"num_predict\":5}}"},
    {"req_ollama_unicode_quotes", OLL, "m", NULL, {{"user", UNI}, {"system", UNI}}, false, 0, false, 0,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"" UNI_JSON "\"},"
     "{\"role\":\"user\",\"content\":\"" UNI_JSON "\"}],\"stream\":true}"},
};
#define N_REQ (sizeof s_req / sizeof s_req[0])

/* ---- paths ---- */

typedef struct {
    const char *name;
    pl_vendor_t v;
    const char *model;
    size_t size;
    int rc;
    const char *expect;
} path_case_t;

#define GEM_PATH(m) "/v1beta/models/" m ":streamGenerateContent?alt=sse"

static const path_case_t s_path[] = {
    {"path_openai", OAI, "gpt-4o", 64, 0, "/chat/completions"},
    {"path_openai_exact_fit", OAI, "x", 18, 0, "/chat/completions"},
    {"path_openai_one_short", OAI, "x", 17, -PL_E_TOO_LARGE, ""},
    {"path_ollama", OLL, "llama3.2", 64, 0, "/api/chat"},
    {"path_ollama_size_zero", OLL, "m", 0, -PL_E_TOO_LARGE, NULL},
    {"path_gemini", GEM, "gemini-2.0-flash", 256, 0, GEM_PATH("gemini-2.0-flash")},
    {"path_gemini_resource_name", GEM, "models/gemini-1.5-pro-002", 256, 0, GEM_PATH("gemini-1.5-pro-002")},
    {"path_gemini_escaped", GEM, "a b/c?d#e%f&g=h:\xC3\xA9~_.", 256, 0,
     GEM_PATH("a%20b%2Fc%3Fd%23e%25f%26g%3Dh%3A%C3%A9~_.")},
    {"path_gemini_null_model", GEM, NULL, 256, 0, GEM_PATH("")},
    {"path_gemini_exact_fit", GEM, "g", sizeof GEM_PATH("g"), 0, GEM_PATH("g")},
    {"path_gemini_one_short", GEM, "g", sizeof GEM_PATH("g") - 1, -PL_E_TOO_LARGE, ""},
    {"path_gemini_escape_too_long", GEM, "//", sizeof GEM_PATH("%2F%2F") - 1, -PL_E_TOO_LARGE, ""},
    {"path_unknown_vendor", PL_VENDOR_COUNT_, "m", 64, -PL_E_INTERNAL, ""},
};
#define N_PATH (sizeof s_path / sizeof s_path[0])

/* ---- streamed items ---- */

typedef struct {
    const char *name;
    pl_vendor_t v;
    const char *in;
    size_t len;
    int rc;
    const char *text; /* NULL: none */
    int finish;
    bool done, has_usage;
    int64_t ptok, ctok;
    const char *error; /* NULL: none */
} parse_case_t;

#define IN(s) s, sizeof(s) - 1
/* text, finish, done, usage, prompt, completion, error */
#define NOTHING NULL, -1, false, false, 0, 0, NULL
#define TEXT(t) t, -1, false, false, 0, 0, NULL
#define MALFORMED(name, v, s) {name, v, IN(s), BAD, NOTHING}

#define OAI_HEAD "{\"id\":\"chatcmpl-A1b2C3\",\"object\":\"chat.completion.chunk\",\"created\":1725000000,"   \
                 "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":" \
                 "[{\"index\":0,\"delta\":"
#define OAI_NEXT ",\"logprobs\":null,\"finish_reason\":"
#define OAI_USAGE(p, c) "{\"id\":\"chatcmpl-A1b2C3\",\"object\":\"chat.completion.chunk\",\"created\":1725000000," \
                        "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":" p   \
                        ",\"completion_tokens\":" c ",\"total_tokens\":12,\"prompt_tokens_details\":"          \
                        "{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}"
#define GEM_HEAD "{\"candidates\": [{\"content\": {\"parts\": ["
#define GEM_USAGE(p, c) "\"usageMetadata\": {\"promptTokenCount\": " p ",\"candidatesTokenCount\": " c \
                        ",\"totalTokenCount\": 9},\"modelVersion\": \"gemini-2.0-flash\"}"
#define SAFETY_RATINGS "\"safetyRatings\": [{\"category\": \"HARM_CATEGORY_HARASSMENT\",\"probability\": \"HIGH\"}]"
#define OC(body) "{\"model\":\"llama3.2\",\"created_at\":\"2024-11-02T10:00:01.1Z\",\"message\":" body
#define OC_DONE(reason, counts) OC("{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"" reason         \
                                   "\",\"done\":true,\"total_duration\":4883583458,\"load_duration\":1336334," \
                                   counts "\"eval_duration\":4535599000}")

static const parse_case_t s_parse[] = {
    /* OpenAI chat.completions stream (stream_options.include_usage) */
    {"oai_first_chunk_role", OAI, IN(OAI_HEAD "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}" OAI_NEXT
                                     "null}],\"usage\":null}"), 0, NOTHING},
    {"oai_content", OAI, IN(OAI_HEAD "{\"content\":\"Hel\"}" OAI_NEXT "null}],\"usage\":null}"), 0, TEXT("Hel")},
    {"oai_content_escapes", OAI, IN(OAI_HEAD "{\"content\":\"lo \\u00e9\\n\\\"q\\\" \\ud83d\\ude00\"}" OAI_NEXT
                                    "null}]}"), 0, TEXT("lo \xC3\xA9\n\"q\" \xF0\x9F\x98\x80")},
    {"oai_content_null", OAI, IN(OAI_HEAD "{\"content\":null}" OAI_NEXT "null}]}"), 0, NOTHING},
    {"oai_finish_stop", OAI, IN(OAI_HEAD "{}" OAI_NEXT "\"stop\"}],\"usage\":null}"), 0,
     NULL, STOP, false, false, 0, 0, NULL},
    {"oai_finish_length", OAI, IN(OAI_HEAD "{}" OAI_NEXT "\"length\"}]}"), 0, NULL, LEN, false, false, 0, 0, NULL},
    {"oai_finish_content_filter", OAI, IN(OAI_HEAD "{}" OAI_NEXT "\"content_filter\"}]}"), 0,
     NULL, STOP, false, false, 0, 0, NULL},
    {"oai_finish_with_text", OAI, IN(OAI_HEAD "{\"content\":\"!\"}" OAI_NEXT "\"stop\"}]}"), 0,
     "!", STOP, false, false, 0, 0, NULL},
    {"oai_usage_chunk", OAI, IN(OAI_USAGE("9", "3")), 0, NULL, -1, false, true, 9, 3, NULL},
    {"oai_usage_large", OAI, IN(OAI_USAGE("9007199254740992", "0")), 0,
     NULL, -1, false, true, 9007199254740992LL, 0, NULL},
    {"oai_done", OAI, IN("[DONE]"), 0, NULL, -1, true, false, 0, 0, NULL},
    {"oai_done_spaced", OAI, IN(" [DONE]\r\n"), 0, NULL, -1, true, false, 0, 0, NULL},
    {"oai_azure_prompt_filter", OAI, IN("{\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
                                        "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":"
                                        "{\"hate\":{\"filtered\":false,\"severity\":\"safe\"}}}]}"), 0, NOTHING},
    {"oai_error_event", OAI, IN("{\"error\":{\"message\":\"The server had an error while processing your request. "
                                "Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}"), 0,
     NULL, ERR, true, false, 0, 0, "The server had an error while processing your request. Sorry about that!"},
    {"oai_error_event_no_message", OAI, IN("{\"error\":{\"type\":\"server_error\"}}"), 0,
     NULL, ERR, true, false, 0, 0, "the model failed"},
    {"oai_error_null_is_no_error", OAI, IN("{\"error\":null,\"choices\":[]}"), 0, NOTHING},
    MALFORMED("oai_bad_not_json", OAI, "data: hello"),
    MALFORMED("oai_bad_empty", OAI, ""),
    MALFORMED("oai_bad_truncated", OAI, "{\"choices\":[{\"delta\":{\"content\":\"Hel"),
    MALFORMED("oai_bad_trailing", OAI, "{\"choices\":[]} {}"),
    MALFORMED("oai_bad_done_suffix", OAI, "[DONE]x"),
    MALFORMED("oai_bad_array", OAI, "[{\"choices\":[]}]"),
    MALFORMED("oai_bad_string", OAI, "\"[DONE]\""),
    MALFORMED("oai_bad_number", OAI, "42"),
    MALFORMED("oai_bad_missing_choices", OAI, "{\"id\":\"x\",\"object\":\"chat.completion.chunk\"}"),
    MALFORMED("oai_bad_choices_object", OAI, "{\"choices\":{\"delta\":{}}}"),
    MALFORMED("oai_bad_choice_number", OAI, "{\"choices\":[1]}"),
    MALFORMED("oai_bad_delta_array", OAI, "{\"choices\":[{\"delta\":[]}]}"),
    MALFORMED("oai_bad_content_number", OAI, "{\"choices\":[{\"delta\":{\"content\":5}}]}"),
    MALFORMED("oai_bad_content_object", OAI, "{\"choices\":[{\"delta\":{\"content\":{\"text\":\"a\"}}}]}"),
    MALFORMED("oai_bad_finish_number", OAI, "{\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":1}]}"),
    MALFORMED("oai_bad_usage_array", OAI, "{\"choices\":[],\"usage\":[9,3]}"),
    MALFORMED("oai_bad_usage_string", OAI, OAI_USAGE("\"9\"", "3")),
    MALFORMED("oai_bad_usage_negative", OAI, OAI_USAGE("-1", "3")),
    MALFORMED("oai_bad_usage_fraction", OAI, OAI_USAGE("9", "3.5")),
    MALFORMED("oai_bad_usage_huge", OAI, OAI_USAGE("9007199254740994", "3")),
    MALFORMED("oai_bad_usage_inf", OAI, OAI_USAGE("1e400", "3")),
    MALFORMED("oai_bad_error_number", OAI, "{\"error\":500}"),
    MALFORMED("oai_bad_error_message_type", OAI, "{\"error\":{\"message\":[\"a\"]}}"),
    MALFORMED("oai_bad_nul_byte", OAI, "{\"choices\":[]}\0"),
    MALFORMED("oai_bad_lone_surrogate", OAI, "{\"choices\":[{\"delta\":{\"content\":\"\\ud800\"}}]}"),
    MALFORMED("oai_bad_bad_escape", OAI, "{\"choices\":[{\"delta\":{\"content\":\"\\x41\"}}]}"),

    /* Gemini streamGenerateContent?alt=sse */
    {"gem_text_first_usage", GEM, IN(GEM_HEAD "{\"text\": \"Hello\"}],\"role\": \"model\"},\"index\": 0}],"
                                     "\"usageMetadata\": {\"promptTokenCount\": 4,\"totalTokenCount\": 4},"
                                     "\"modelVersion\": \"gemini-2.0-flash\"}"), 0,
     "Hello", -1, false, true, 4, 0, NULL},
    {"gem_text_stop_usage", GEM, IN(GEM_HEAD "{\"text\": \" there, \\\"friend\\\"\"}],\"role\": \"model\"},"
                                    "\"finishReason\": \"STOP\",\"index\": 0}]," GEM_USAGE("4", "5")), 0,
     " there, \"friend\"", STOP, true, true, 4, 5, NULL},
    {"gem_parts_concatenated", GEM, IN(GEM_HEAD "{\"text\": \"Hel\"},{\"text\": \"lo\"},{\"inlineData\": {}},"
                                       "{\"text\": \"\"},{\"text\": \" w\\u00f6rld\"}],\"role\": \"model\"}}]}"), 0,
     TEXT("Hello w\xC3\xB6rld")},
    {"gem_thought_skipped", GEM, IN(GEM_HEAD "{\"text\": \"thinking...\",\"thought\": true},{\"text\": \"Answer\","
                                    "\"thought\": false}],\"role\": \"model\"}}]}"), 0, TEXT("Answer")},
    {"gem_no_parts", GEM, IN("{\"candidates\": [{\"content\": {\"role\": \"model\"},\"index\": 0}]}"), 0, NOTHING},
    {"gem_usage_only", GEM, IN("{" GEM_USAGE("7", "11")), 0, NULL, -1, false, true, 7, 11, NULL},
    {"gem_max_tokens", GEM, IN(GEM_HEAD "{\"text\": \"cut\"}],\"role\": \"model\"},\"finishReason\": "
                               "\"MAX_TOKENS\",\"index\": 0}]," GEM_USAGE("4", "16")), 0,
     "cut", LEN, true, true, 4, 16, NULL},
    {"gem_safety", GEM, IN("{\"candidates\": [{\"finishReason\": \"SAFETY\",\"index\": 0," SAFETY_RATINGS "}],"
                           GEM_USAGE("4", "0")), 0,
     NULL, ERR, true, true, 4, 0, "the model stopped: SAFETY"},
    {"gem_recitation", GEM, IN(GEM_HEAD "{\"text\": \"It was the best\"}],\"role\": \"model\"},\"finishReason\": "
                               "\"RECITATION\",\"index\": 0}]}"), 0,
     "It was the best", ERR, true, false, 0, 0, "the model stopped: RECITATION"},
    {"gem_other_reason", GEM, IN("{\"candidates\": [{\"finishReason\": \"BLOCKLIST\"}]}"), 0,
     NULL, ERR, true, false, 0, 0, "the model stopped: BLOCKLIST"},
    {"gem_prompt_blocked", GEM, IN("{\"promptFeedback\": {\"blockReason\": \"SAFETY\"," SAFETY_RATINGS "},"
                                   "\"usageMetadata\": {\"promptTokenCount\": 8,\"totalTokenCount\": 8}}"), 0,
     NULL, ERR, true, true, 8, 0, "the prompt was blocked: SAFETY"},
    {"gem_prompt_feedback_no_block", GEM, IN("{\"promptFeedback\": {" SAFETY_RATINGS "}}"), 0, NOTHING},
    {"gem_error_event", GEM, IN("{\"error\": {\"code\": 503,\"message\": \"The model is overloaded. Please try "
                                "again later.\",\"status\": \"UNAVAILABLE\"}}"), 0,
     NULL, ERR, true, false, 0, 0, "UNAVAILABLE: The model is overloaded. Please try again later."},
    MALFORMED("gem_bad_empty_object", GEM, "{}"),
    MALFORMED("gem_bad_only_model_version", GEM, "{\"modelVersion\": \"gemini-2.0-flash\"}"),
    MALFORMED("gem_bad_candidates_object", GEM, "{\"candidates\": {\"content\": {}}}"),
    MALFORMED("gem_bad_candidate_string", GEM, "{\"candidates\": [\"Hello\"]}"),
    MALFORMED("gem_bad_content_array", GEM, "{\"candidates\": [{\"content\": []}]}"),
    MALFORMED("gem_bad_parts_object", GEM, "{\"candidates\": [{\"content\": {\"parts\": {\"text\": \"a\"}}}]}"),
    MALFORMED("gem_bad_part_string", GEM, GEM_HEAD "\"a\"]}}]}"),
    MALFORMED("gem_bad_text_number", GEM, GEM_HEAD "{\"text\": 5}]}}]}"),
    MALFORMED("gem_bad_thought_string", GEM, GEM_HEAD "{\"text\": \"a\",\"thought\": \"yes\"}]}}]}"),
    MALFORMED("gem_bad_finish_number", GEM, "{\"candidates\": [{\"finishReason\": 1}]}"),
    MALFORMED("gem_bad_usage_string", GEM, "{" GEM_USAGE("\"4\"", "5")),
    MALFORMED("gem_bad_usage_huge", GEM, "{" GEM_USAGE("4", "1e300")),
    MALFORMED("gem_bad_usage_array", GEM, "{\"usageMetadata\": [4, 5]}"),
    MALFORMED("gem_bad_block_reason_number", GEM, "{\"promptFeedback\": {\"blockReason\": 2}}"),
    MALFORMED("gem_bad_error_status_number", GEM, "{\"error\": {\"message\": \"m\",\"status\": 503}}"),
    MALFORMED("gem_bad_array_framing", GEM, "[" GEM_HEAD "{\"text\": \"a\"}]}}]}]"),
    MALFORMED("gem_bad_done_sentinel", GEM, "[DONE]"),

    /* Ollama /api/chat NDJSON */
    {"oll_content", OLL, IN(OC("{\"role\":\"assistant\",\"content\":\"The\"},\"done\":false}")), 0, TEXT("The")},
    {"oll_content_escapes", OLL, IN(OC("{\"role\":\"assistant\",\"content\":\" sky\\n\\\"\\u00e9\\\"\"},"
                                       "\"done\":false}")), 0, TEXT(" sky\n\"\xC3\xA9\"")},
    {"oll_empty_content", OLL, IN(OC("{\"role\":\"assistant\",\"content\":\"\"},\"done\":false}")), 0, NOTHING},
    {"oll_thinking_not_text", OLL, IN(OC("{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"Hmm\"},"
                                         "\"done\":false}")), 0, NOTHING},
    {"oll_done_stop", OLL, IN(OC_DONE("stop", "\"prompt_eval_count\":26,\"prompt_eval_duration\":342546000,"
                                              "\"eval_count\":298,")), 0, NULL, STOP, true, true, 26, 298, NULL},
    {"oll_done_length", OLL, IN(OC_DONE("length", "\"prompt_eval_count\":10,\"eval_count\":64,")), 0,
     NULL, LEN, true, true, 10, 64, NULL},
    {"oll_done_cached_prompt", OLL, IN(OC_DONE("stop", "\"eval_count\":2,")), 0, NULL, STOP, true, true, 0, 2, NULL},
    {"oll_done_load", OLL, IN("{\"model\":\"llama3.2\",\"created_at\":\"2024-11-02T10:00:01Z\",\"message\":"
                              "{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"load\",\"done\":true}"), 0,
     NULL, STOP, true, true, 0, 0, NULL},
    {"oll_done_no_reason_with_text", OLL, IN("{\"message\":{\"role\":\"assistant\",\"content\":\"end\"},"
                                             "\"done\":true}"), 0, "end", STOP, true, true, 0, 0, NULL},
    {"oll_error_line", OLL, IN("{\"error\":\"model \\\"llama9\\\" not found, try pulling it first\"}"), 0,
     NULL, ERR, true, false, 0, 0, "model \"llama9\" not found, try pulling it first"},
    {"oll_error_cleaned", OLL, IN("{\"error\":\"line one\\nline\\u0007 two\\t \"}"), 0,
     NULL, ERR, true, false, 0, 0, "line one line two"},
    {"oll_error_empty", OLL, IN("{\"error\":\"\"}"), 0, NULL, ERR, true, false, 0, 0, "the model failed"},
    MALFORMED("oll_bad_not_json", OLL, "not json"),
    MALFORMED("oll_bad_missing_done", OLL, "{\"model\":\"llama3.2\",\"message\":{\"content\":\"a\"}}"),
    MALFORMED("oll_bad_done_string", OLL, "{\"message\":{\"content\":\"a\"},\"done\":\"false\"}"),
    MALFORMED("oll_bad_done_number", OLL, "{\"done\":0}"),
    MALFORMED("oll_bad_message_string", OLL, "{\"message\":\"a\",\"done\":false}"),
    MALFORMED("oll_bad_content_array", OLL, "{\"message\":{\"content\":[\"a\"]},\"done\":false}"),
    MALFORMED("oll_bad_reason_number", OLL, "{\"done\":true,\"done_reason\":1}"),
    MALFORMED("oll_bad_count_negative", OLL, "{\"done\":true,\"eval_count\":-3}"),
    MALFORMED("oll_bad_count_huge", OLL, "{\"done\":true,\"prompt_eval_count\":1e19}"),
    MALFORMED("oll_bad_count_string", OLL, "{\"done\":true,\"eval_count\":\"3\"}"),
    MALFORMED("oll_bad_error_array", OLL, "{\"error\":[\"x\"]}"),
    MALFORMED("oll_bad_array", OLL, "[{\"done\":true}]"),
    MALFORMED("oll_bad_two_lines", OLL, "{\"done\":false}\n{\"done\":true}"),
};
#define N_PARSE (sizeof s_parse / sizeof s_parse[0])

/* ---- error bodies ---- */

typedef struct {
    const char *name;
    pl_vendor_t v;
    int status;
    const char *body;
    size_t len;
    const char *expect;
} err_case_t;

#define X40 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define X199 X40 X40 X40 X40 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

static const err_case_t s_err[] = {
    {"err_openai_invalid_key", OAI, 401,
     IN("{\n    \"error\": {\n        \"message\": \"Incorrect API key provided: sk-proj-abc1********************wxyz. "
        "You can find your API key at https://platform.openai.com/account/api-keys.\",\n        \"type\": "
        "\"invalid_request_error\",\n        \"param\": null,\n        \"code\": \"invalid_api_key\"\n    }\n}\n"),
     "Incorrect API key provided: [redacted] You can find your API key at "
     "https://platform.openai.com/account/api-keys."},
    {"err_openai_rate_limit", OAI, 429,
     IN("{\"error\":{\"message\":\"Rate limit reached for gpt-4o-mini in organization org-abc on requests per min "
        "(RPM): Limit 3, Used 3, Requested 1.\",\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}"),
     "Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): Limit 3, Used 3, "
     "Requested 1."},
    {"err_openai_task_word_kept", OAI, 400, IN("{\"error\":{\"message\":\"task-based: ask-me\"}}"),
     "task-based: ask-me"},
    {"err_gemini_invalid_key", GEM, 400,
     IN("{\n  \"error\": {\n    \"code\": 400,\n    \"message\": \"API key not valid. Please pass a valid API key.\",\n"
        "    \"status\": \"INVALID_ARGUMENT\",\n    \"details\": [\n      {\n        \"@type\": "
        "\"type.googleapis.com/google.rpc.ErrorInfo\",\n        \"reason\": \"API_KEY_INVALID\",\n        \"domain\": "
        "\"googleapis.com\",\n        \"metadata\": {\n          \"service\": \"generativelanguage.googleapis.com\"\n"
        "        }\n      }\n    ]\n  }\n}\n"),
     "INVALID_ARGUMENT: API key not valid. Please pass a valid API key."},
    {"err_gemini_array_form", GEM, 429,
     IN("[{\"error\": {\"code\": 429,\"message\": \"Resource has been exhausted (e.g. check quota).\","
        "\"status\": \"RESOURCE_EXHAUSTED\"}}]"),
     "RESOURCE_EXHAUSTED: Resource has been exhausted (e.g. check quota)."},
    {"err_gemini_key_in_message", GEM, 403,
     IN("{\"error\":{\"message\":\"Key AIzaSyD-abc_123 was revoked\",\"status\":\"PERMISSION_DENIED\"}}"),
     "PERMISSION_DENIED: Key [redacted] was revoked"},
    {"err_gemini_status_only", GEM, 404, IN("{\"error\":{\"code\":404,\"status\":\"NOT_FOUND\"}}"), "NOT_FOUND"},
    {"err_ollama_not_found", OLL, 404, IN("{\"error\":\"model \\\"llama9\\\" not found, try pulling it first\"}"),
     "model \"llama9\" not found, try pulling it first"},
    {"err_control_chars", OLL, 500, IN("{\"error\":\"\\u001b[31mred\\u001b[0m\\r\\n\\tnext\\u0000cut\"}"),
     "[31mred[0m next"},
    {"err_c1_and_del_removed", OLL, 500, IN("{\"error\":\"a\\u0085b\\u007fc\\u00a0d\"}"), "abc\xC2\xA0" "d"},
    {"err_invalid_utf8_removed", OLL, 500, IN("{\"error\":\"a\xff\xfe" "b\xC3(c\xED\xA0\x80" "d\xF0\x9F\x98\"}"),
     "ab(cd"},
    {"err_truncated_200", OAI, 500, IN("{\"error\":{\"message\":\"" X199 "yzzz\"}}"), X199 "y"},
    {"err_truncated_utf8_boundary", OAI, 500, IN("{\"error\":{\"message\":\"" X199 "\\u00e9zz\"}}"), X199},
    {"err_truncated_space_dropped", OAI, 500, IN("{\"error\":{\"message\":\"" X199 " abc\"}}"), X199},
    {"err_html_body", OAI, 502, IN("<html><head><title>502 Bad Gateway</title></head></html>"), "HTTP 502"},
    {"err_empty_body", GEM, 503, NULL, 0, "HTTP 503"},
    {"err_json_no_error", OLL, 500, IN("{\"message\":\"x\"}"), "HTTP 500"},
    {"err_error_number", OAI, 400, IN("{\"error\":5}"), "HTTP 400"},
    {"err_empty_message", OAI, 400, IN("{\"error\":{\"message\":\"  \\n \"}}"), "HTTP 400"},
    {"err_wrong_message_type", GEM, 400, IN("{\"error\":{\"message\":{\"a\":1},\"status\":\"X\"}}"), "HTTP 400"},
    {"err_only_key", OAI, 401, IN("{\"error\":{\"message\":\"sk-live-0123456789abcdef\"}}"), "[redacted]"},
    /* found by fuzz/vendor: a dropped byte inside a key must not unmask it */
    {"err_key_split_by_invalid_byte", GEM, 400, IN("{\"error\":{\"message\":\"key. A\xb6IzaSyA-1234 x\"}}"),
     "key. [redacted] x"},
    {"err_key_split_by_control", OAI, 401, IN("{\"error\":{\"message\":\"s\\u0001k-abc\\u0007def ok\"}}"),
     "[redacted] ok"},
    {"err_key_control_inside_redacted", OAI, 401, IN("{\"error\":{\"message\":\"sk-abc\\u0001def\"}}"),
     "[redacted]"},
    {"err_key_redaction_does_not_fit", OAI, 401, IN("{\"error\":{\"message\":\"" X40 X40 X40 X40 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx sk-abc\"}}"),
     X40 X40 X40 X40 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},
    {"err_nul_in_body", OAI, 500, IN("{\"error\":{\"message\":\"a\"}}\0"), "HTTP 500"},
    {"err_negative_status", OAI, -1, IN("garbage"), "HTTP -1"},
};
#define N_ERR (sizeof s_err / sizeof s_err[0])
// clang-format on

/* ---- helpers ---- */

/* A copy of `len` bytes with nothing after it (ASan catches over-reads). */
static char *
s_exact(const char *s, size_t len)
{
    char *p = malloc(len ? len : 1);
    assert_non_null(p);
    if (len)
        memcpy(p, s, len);
    return p;
}

static bool
s_utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *) s;
    while (*p) {
        size_t n = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        if (n == 0)
            return false;
        for (size_t i = 1; i < n; i++)
            if ((p[i] & 0xC0) != 0x80)
                return false;
        p += n;
    }
    return true;
}

/* What every message we hand on must be: short, UTF-8, no control bytes. */
static void
s_check_message(const char *m)
{
    assert_non_null(m);
    assert_true(strlen(m) > 0);
    assert_true(strlen(m) <= PL_VENDOR_ERROR_MAX);
    assert_true(s_utf8_ok(m));
    for (const unsigned char *p = (const unsigned char *) m; *p; p++)
        assert_true(*p >= 0x20 && *p != 0x7F);
    assert_true(m[0] != ' ' && m[strlen(m) - 1] != ' ');
}

/* What every successful parse must look like. */
static void
s_check_event(const pl_vendor_event_t *ev)
{
    assert_true(!ev->text || ev->text[0]);
    assert_true(ev->finish >= -1 && ev->finish < PL_FINISH_COUNT_ && ev->finish != PL_FINISH_CANCELLED);
    assert_true(ev->prompt_tokens >= 0 && ev->completion_tokens >= 0);
    if (ev->error) {
        s_check_message(ev->error);
        assert_int_equal(ev->finish, PL_FINISH_ERROR);
        assert_true(ev->done);
    }
}

static void
s_check_empty(const pl_vendor_event_t *ev)
{
    assert_null(ev->text);
    assert_null(ev->error);
    assert_int_equal(ev->finish, -1);
    assert_false(ev->done);
    assert_false(ev->has_usage);
    assert_int_equal(ev->prompt_tokens, 0);
    assert_int_equal(ev->completion_tokens, 0);
}

/* Parses `len` bytes in an exact buffer; checks the invariants; returns rc. */
static int
s_parse_any(pl_vendor_t v, const char *s, size_t len)
{
    char *buf = s_exact(s, len);
    pl_vendor_event_t ev;
    memset(&ev, 0xA5, sizeof ev); /* uninitialised on entry */
    int rc = pl_vendor_parse(v, buf, len, &ev);
    assert_true(rc == 0 || rc == BAD);
    if (rc == 0)
        s_check_event(&ev);
    else
        s_check_empty(&ev);
    pl_vendor_event_reset(&ev);
    free(buf);
    return rc;
}

/* ---- tests ---- */

static void
test_request(void **state)
{
    const req_case_t *c = *state;
    pl_env_t gen;
    pl_env_init(&gen, PL_MSG_GENERATE);
    pl_env_set_str(&gen, PL_F_SESSION, "s1");
    pl_env_set_str(&gen, PL_F_RESPID, "r1");
    if (c->system)
        assert_int_equal(pl_env_set_str(&gen, PL_F_SYSTEM, c->system), 0);
    for (size_t i = 0; i < 8 && (c->hist[i].role || c->hist[i].text); i++) {
        pl_histent_t e = {"m1", (char *) c->hist[i].role, (char *) c->hist[i].text, "c1", 1.0};
        assert_int_equal(pl_env_hist_add(&gen, &e), 0);
        if (!c->hist[i].role) { /* a copy of NULL is "": make it NULL again */
            free(gen.hist.v[gen.hist.n - 1].role);
            gen.hist.v[gen.hist.n - 1].role = NULL;
        }
    }
    if (c->temp_set)
        pl_env_set_f64(&gen, PL_F_TEMP, c->temp);
    if (c->max_set)
        pl_env_set_i64(&gen, PL_F_MAXTOK, c->max);

    size_t len = 0;
    char *body = pl_vendor_request(c->v, &gen, c->model, &len);
    assert_non_null(body);
    assert_int_equal(len, strlen(body));
    cJSON *got = cJSON_ParseWithLengthOpts(body, len + 1, NULL, 1); /* one value, then the NUL */
    cJSON *want = cJSON_Parse(c->expect);
    assert_non_null(want); /* the table itself is valid JSON */
    assert_non_null(got);
    if (!cJSON_Compare(got, want, 1)) {
        char *w = cJSON_PrintUnformatted(want);
        fprintf(stderr, "got  %s\nwant %s\n", body, w);
        cJSON_free(w);
        fail();
    }
    /* escaping, on the raw text: quotes and control bytes escaped, UTF-8 as is */
    if (strstr(c->expect, "He said")) {
        assert_non_null(strstr(body, "He said \\\"hi\\\" \\\\ caf\xC3\xA9 \xF0\x9F\x98\x80\\n\\ttab \\u0001"));
        assert_null(memchr(body, '\n', len));
    }
    /* the same again without len */
    char *again = pl_vendor_request(c->v, &gen, c->model, NULL);
    assert_string_equal(again, body);
    free(again);
    cJSON_Delete(got);
    cJSON_Delete(want);
    free(body);
    pl_env_reset(&gen);
}

static void
test_request_bad_args(void **state)
{
    (void) state;
    pl_env_t gen;
    pl_env_init(&gen, PL_MSG_GENERATE);
    assert_null(pl_vendor_request(PL_VENDOR_COUNT_, &gen, "m", NULL));
    assert_null(pl_vendor_request((pl_vendor_t) -1, &gen, "m", NULL));
    assert_null(pl_vendor_request(OAI, NULL, "m", NULL));
    pl_env_reset(&gen);
}

static void
test_path(void **state)
{
    const path_case_t *c = *state;
    char out[300];
    memset(out, 'Z', sizeof out);
    assert_true(c->size <= sizeof out);
    int rc = pl_vendor_path(c->v, c->model, c->size ? out : NULL, c->size);
    assert_int_equal(rc, c->rc);
    if (c->expect)
        assert_string_equal(out, c->expect);
    for (size_t i = c->size; i < sizeof out; i++)
        assert_int_equal(out[i], 'Z'); /* nothing written past size */
}

static void
test_parse(void **state)
{
    const parse_case_t *c = *state;
    char *buf = s_exact(c->in, c->len);
    pl_vendor_event_t ev;
    memset(&ev, 0x5A, sizeof ev);
    int rc = pl_vendor_parse(c->v, buf, c->len, &ev);
    free(buf);
    assert_int_equal(rc, c->rc);
    if (rc != 0) {
        s_check_empty(&ev);
        pl_vendor_event_reset(&ev);
        return;
    }
    s_check_event(&ev);
    if (c->text)
        assert_string_equal(ev.text, c->text);
    else
        assert_null(ev.text);
    assert_int_equal(ev.finish, c->finish);
    assert_int_equal(ev.done, c->done);
    assert_int_equal(ev.has_usage, c->has_usage);
    assert_int_equal(ev.prompt_tokens, c->ptok);
    assert_int_equal(ev.completion_tokens, c->ctok);
    if (c->error)
        assert_string_equal(ev.error, c->error);
    else
        assert_null(ev.error);
    pl_vendor_event_reset(&ev);
    s_check_empty(&ev);
    pl_vendor_event_reset(&ev); /* idempotent */
}

static void
test_error_message(void **state)
{
    const err_case_t *c = *state;
    char *body = c->body ? s_exact(c->body, c->len) : NULL;
    char *m = pl_vendor_error_message(c->v, c->status, body, c->len);
    free(body);
    assert_non_null(m);
    assert_string_equal(m, c->expect);
    s_check_message(m);
    free(m);
}

/* Every prefix of every item: 0 or BAD_FRAME, invariants, no leak. */
static void
test_prefixes(void **state)
{
    (void) state;
    for (size_t i = 0; i < N_PARSE; i++)
        for (size_t n = 0; n <= s_parse[i].len; n++)
            (void) s_parse_any(s_parse[i].v, s_parse[i].in, n);
}

static uint64_t
s_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Seeded mutations of the table's items (bytes flipped, JSON tokens
   spliced in, cut) and plain random bytes, fed to every vendor, and to
   the error-message path: never a crash, a leak or a bad message. */
static void
test_random(void **state)
{
    (void) state;
    static const char *const tokens[] = {"{",        "}",        "[",         "]",       ",",       ":",
                                         "\"",       "\\",       "null",      "true",    "1e999",   "-0",
                                         "\"text\"", "\"done\"", "\"error\"", "\\u0000", "\\ud800", "\xff"};
    uint64_t x = 0x9E3779B97F4A7C15ull;
    char buf[2048];
    int ok = 0;
    for (int iter = 0; iter < 30000; iter++) {
        size_t len;
        if (iter % 5 == 4) {
            len = s_rand(&x) % 64;
            for (size_t i = 0; i < len; i++)
                buf[i] = (char) s_rand(&x);
        } else {
            const parse_case_t *c = &s_parse[s_rand(&x) % N_PARSE];
            len = c->len;
            memcpy(buf, c->in, len);
            for (int k = (int) (s_rand(&x) % 4); k >= 0; k--) {
                size_t at = len ? s_rand(&x) % len : 0;
                const char *t = tokens[s_rand(&x) % (sizeof tokens / sizeof tokens[0])];
                size_t tl = strlen(t);
                if (s_rand(&x) % 2 && len)
                    buf[at] = (char) s_rand(&x);
                else if (len + tl < sizeof buf) {
                    memmove(buf + at + tl, buf + at, len - at);
                    memcpy(buf + at, t, tl);
                    len += tl;
                }
            }
            if (s_rand(&x) % 4 == 0 && len)
                len = s_rand(&x) % len;
        }
        for (int v = 0; v < PL_VENDOR_COUNT_; v++)
            ok += s_parse_any((pl_vendor_t) v, buf, len) == 0;
        char *body = s_exact(buf, len);
        char *m = pl_vendor_error_message((pl_vendor_t) (iter % 3), 500, body, len);
        s_check_message(m);
        free(m);
        free(body);
    }
    assert_true(ok > 100); /* the mutations do not only make garbage */
}

/* A deeply nested item is refused, not recursed into without bound. */
static void
test_deep_nesting(void **state)
{
    (void) state;
    enum { DEPTH = 100000 };
    char *s = malloc(2 * DEPTH);
    assert_non_null(s);
    memset(s, '[', DEPTH);
    memset(s + DEPTH, ']', DEPTH);
    for (int v = 0; v < PL_VENDOR_COUNT_; v++)
        assert_int_equal(s_parse_any((pl_vendor_t) v, s, 2 * DEPTH), BAD);
    char *m = pl_vendor_error_message(GEM, 500, s, 2 * DEPTH);
    assert_string_equal(m, "HTTP 500");
    free(m);
    free(s);
}

static void
test_parse_bad_args(void **state)
{
    (void) state;
    pl_vendor_event_t ev;
    assert_int_equal(pl_vendor_parse(OAI, NULL, 0, &ev), BAD);
    s_check_empty(&ev);
    assert_int_equal(pl_vendor_parse(PL_VENDOR_COUNT_, "{}", 2, &ev), -PL_E_INTERNAL);
    s_check_empty(&ev);
    pl_vendor_event_reset(NULL);
}

static void
test_names(void **state)
{
    (void) state;
    assert_int_equal(pl_vendor_from_name("openai"), PL_VENDOR_OPENAI);
    assert_int_equal(pl_vendor_from_name("gemini"), PL_VENDOR_GEMINI);
    assert_int_equal(pl_vendor_from_name("ollama"), PL_VENDOR_OLLAMA);
    assert_int_equal(pl_vendor_from_name("echo"), -1);
    assert_int_equal(pl_vendor_from_name("OpenAI"), -1);
    assert_int_equal(pl_vendor_from_name(""), -1);
    assert_int_equal(pl_vendor_from_name(NULL), -1);
    for (int v = 0; v < PL_VENDOR_COUNT_; v++)
        assert_int_equal(pl_vendor_from_name(pl_vendor_name((pl_vendor_t) v)), v);
    assert_string_equal(pl_vendor_name(PL_VENDOR_COUNT_), "?");
}

int
main(void)
{
    enum { N_EXTRA = 6 };
    static struct CMUnitTest tests[N_REQ + N_PATH + N_PARSE + N_ERR + N_EXTRA];
    size_t n = 0;
    for (size_t i = 0; i < N_REQ; i++)
        tests[n++] =
            (struct CMUnitTest){.name = s_req[i].name, .test_func = test_request, .initial_state = (void *) &s_req[i]};
    for (size_t i = 0; i < N_PATH; i++)
        tests[n++] =
            (struct CMUnitTest){.name = s_path[i].name, .test_func = test_path, .initial_state = (void *) &s_path[i]};
    for (size_t i = 0; i < N_PARSE; i++)
        tests[n++] = (struct CMUnitTest){
            .name = s_parse[i].name, .test_func = test_parse, .initial_state = (void *) &s_parse[i]};
    for (size_t i = 0; i < N_ERR; i++)
        tests[n++] = (struct CMUnitTest){
            .name = s_err[i].name, .test_func = test_error_message, .initial_state = (void *) &s_err[i]};
    tests[n++] = (struct CMUnitTest) cmocka_unit_test(test_request_bad_args);
    tests[n++] = (struct CMUnitTest) cmocka_unit_test(test_parse_bad_args);
    tests[n++] = (struct CMUnitTest) cmocka_unit_test(test_prefixes);
    tests[n++] = (struct CMUnitTest) cmocka_unit_test(test_random);
    tests[n++] = (struct CMUnitTest) cmocka_unit_test(test_deep_nesting);
    tests[n++] = (struct CMUnitTest) cmocka_unit_test(test_names);
    return _cmocka_run_group_tests("vendor", tests, n, NULL, NULL);
}
