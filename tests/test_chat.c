/*
 * test_chat.c: chat templates end to end: where a template comes from
 * (GGUF tokenizer.chat_template and named variants, tokenizer_config.json
 * as a string or a list of named templates, chat_template.jinja,
 * --chat-template FILE) and `qeval template` printing the render byte for
 * byte, with exit 2 and the message on a template error.
 *
 * The binary is $QEVAL_BIN (set by `make test`), else ./qeval.  A GGUF
 * with a chat template is made here from stories260K.gguf with the
 * project's GGUF writer.
 */
#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness/chat/chat.h"
#include "../harness/eval/lm.h"
#include "../harness/eval/task.h"
#include "../harness/model/gguf.h"
#include "test.h"

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Mistral-7B-Instruct-v0.1's template (also Mixtral's): raises when the
 * roles do not alternate. */
static const char MISTRAL[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ "
    "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' "
    "%}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and "
    "assistant roles are supported!') }}{% endif %}{% endfor %}";

static const char TOOL_TPL[] = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}";

static char tmpdir[256];

static const char *tmp(const char *name)
{
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, name);
    return b;
}

static int make_fixtures(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qeval-test-chat-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    qe_err err = {0};
    qe_gguf *g = qe_gguf_open(test_asset("models/stories260K/stories260K.gguf"), &err);
    if (!g)
        return -1;
    qe_gguf_builder *b = qe_gguf_builder_from(g, &err);
    int rc = !b || qe_gguf_builder_set_str(b, "tokenizer.chat_template", MISTRAL, &err) ||
             qe_gguf_builder_set_str(b, "tokenizer.chat_template.tool_use", TOOL_TPL, &err) ||
             qe_gguf_builder_write(b, tmp("chat.gguf"), &err);
    qe_gguf_builder_free(b);
    qe_gguf_close(g);
    if (rc) {
        printf("  fixture: %s\n", err.msg);
        return -1;
    }
    write_text(tmp("ctx.json"), "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                                "{\"role\": \"assistant\", \"content\": \"Hello!\"}, "
                                "{\"role\": \"user\", \"content\": \"2+2?\"}]}");
    write_text(tmp("bad.json"), "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                                "{\"role\": \"user\", \"content\": \"b\"}]}");
    write_text(tmp("tpl.jinja"), "{% for m in messages %}{{ m.role|upper }}: {{ m.content }}\n"
                                 "{% endfor %}");
    mkdir(tmp("hf"), 0755);
    cJSON *cfg = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(cfg, "chat_template");
    cJSON *e1 = cJSON_CreateObject(), *e2 = cJSON_CreateObject();
    cJSON_AddStringToObject(e1, "name", "default");
    cJSON_AddStringToObject(e1, "template", MISTRAL);
    cJSON_AddStringToObject(e2, "name", "tool_use");
    cJSON_AddStringToObject(e2, "template", TOOL_TPL);
    cJSON_AddItemToArray(list, e1);
    cJSON_AddItemToArray(list, e2);
    cJSON *bos = cJSON_AddObjectToObject(cfg, "bos_token");
    cJSON_AddStringToObject(bos, "content", "<s>");
    cJSON_AddStringToObject(cfg, "eos_token", "</s>");
    char *js = cJSON_Print(cfg);
    write_text(tmp("hf/tokenizer_config.json"), js);
    free(js);
    cJSON_Delete(cfg);
    return 0;
}

static void cleanup(void)
{
    const char *files[] = {"chat.gguf", "ctx.json", "bad.json", "tpl.jinja",
                           "hf/tokenizer_config.json", "hf"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        remove(tmp(files[i]));
    rmdir(tmpdir);
}

static const char WANT_MISTRAL[] = "<s>[INST] Hi [/INST]Hello!</s> [INST] 2+2? [/INST]";

TEST(template_from_gguf)
{
    char cmd[1400], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s template %s --context %s", test_qeval_bin(), tmp("chat.gguf"),
             tmp("ctx.json"));
    int rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 0 && strcmp(out, WANT_MISTRAL) == 0, "rc=%d out=[%s]", rc, out);
    free(out);
    /* a named variant, with add_generation_prompt */
    snprintf(cmd, sizeof cmd,
             "%s template %s --template-name tool_use --add-generation-prompt --context %s",
             test_qeval_bin(), tmp("chat.gguf"), tmp("ctx.json"));
    rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 0 && strcmp(out, "<user>Hi<assistant>Hello!<user>2+2?<assistant>") == 0,
           "rc=%d out=[%s]", rc, out);
    free(out);
    /* an unknown name lists the ones there are */
    snprintf(cmd, sizeof cmd, "%s template %s --template-name nope 2>&1", test_qeval_bin(),
             tmp("chat.gguf"));
    rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 2 && strstr(out, "tokenizer.chat_template.nope") && strstr(out, "tool_use"),
           "rc=%d out=%s", rc, out);
    free(out);
}

TEST(raise_exception_exits_2)
{
    char cmd[1400], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s template %s --context %s 2>&1", test_qeval_bin(), tmp("chat.gguf"),
             tmp("bad.json"));
    int rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 2 && strstr(out, "raise_exception: Conversation roles must alternate "
                                  "user/assistant/user/assistant/...") &&
               strstr(out, "line 1, column"),
           "rc=%d out=%s", rc, out);
    free(out);
}

TEST(template_from_hf_config)
{
    char cmd[1400], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s template %s --context %s", test_qeval_bin(), tmp("hf"), tmp("ctx.json"));
    int rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 0 && strcmp(out, WANT_MISTRAL) == 0, "list default: rc=%d out=[%s]", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s template %s --template-name tool_use --context %s", test_qeval_bin(),
             tmp("hf/tokenizer_config.json"), tmp("ctx.json"));
    rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 0 && strcmp(out, "<user>Hi<assistant>Hello!<user>2+2?") == 0,
           "list named: rc=%d out=[%s]", rc, out);
    free(out);
    /* --chat-template overrides; the model still supplies bos/eos */
    snprintf(cmd, sizeof cmd, "%s template %s --chat-template %s --context %s", test_qeval_bin(), tmp("hf"),
             tmp("tpl.jinja"), tmp("ctx.json"));
    rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 0 && strcmp(out, "USER: Hi\nASSISTANT: Hello!\nUSER: 2+2?\n") == 0,
           "override: rc=%d out=[%s]", rc, out);
    free(out);
    /* a real tokenizer_config.json (Llama 3), rendered as Python Jinja2 does */
    const char *llama3 = test_asset("tokenizers/hf-llama3");
    if (access(llama3, R_OK) != 0) {
        printf("  skipped: %s not found\n", llama3);
        return;
    }
    snprintf(cmd, sizeof cmd, "%s template %s --context %s --add-generation-prompt", test_qeval_bin(),
             llama3, tmp("ctx.json"));
    rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 0 && strcmp(out, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                                  "Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
                                  "Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                                  "2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
                                  "\n\n") == 0,
           "llama3: rc=%d out=[%s]", rc, out);
    free(out);
}

TEST(missing_template_is_a_clear_error)
{
    char cmd[1400], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s template %s 2>&1", test_qeval_bin(),
             test_asset("models/stories260K/stories260K.gguf"));
    int rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 2 && strstr(out, "has no chat template") && strstr(out, "--chat-template"),
           "rc=%d out=%s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s template %s --context /nonexistent.json 2>&1", test_qeval_bin(),
             tmp("chat.gguf"));
    rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 2 && strstr(out, "/nonexistent.json"), "rc=%d out=%s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s template --help", test_qeval_bin());
    rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 0 && strstr(out, "--chat-template"), "rc=%d", rc);
    free(out);
}

TEST(library_sources)
{
    qe_err err = {0};
    qe_chat_template *ct = qe_chat_template_load(tmp("chat.gguf"), NULL, NULL, &err);
    REQUIRE(ct, "%s", err.msg);
    CHECKF(ct->bos_token && strcmp(ct->bos_token, "<s>") == 0, "bos %s", ct->bos_token);
    CHECKF(ct->eos_token && strcmp(ct->eos_token, "</s>") == 0, "eos %s", ct->eos_token);
    CHECK(strlen(ct->sha256) == 64 && strstr(ct->origin, "tokenizer.chat_template"));
    cJSON *ctx = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}");
    qe_chat_set_var(ctx, "enable_thinking=false", &err);
    qe_chat_set_var(ctx, "who=world", &err);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(ctx, "enable_thinking")));
    CHECK(cJSON_IsString(cJSON_GetObjectItem(ctx, "who")));
    char *out = NULL;
    size_t n = 0;
    CHECK(qe_chat_render(ct, ctx, &out, &n, &err) == 0 && strcmp(out, "<s>[INST] x [/INST]") == 0);
    free(out);
    cJSON_Delete(ctx);
    qe_chat_template_free(ct);
}


/* ------------------------------------------- --chat through the evaluator */

/* Fake LM: bytes are tokens except "<s>" (id 1) when special tokens are
 * parsed; records the last loglik context and continuation as text. */
static char last_ctx[4096], last_cont[256];
static int fk_tok(qe_lm *lm, const char *s, size_t n, int32_t **ids, size_t *nn, qe_err *err)
{
    (void)err;
    *ids = malloc((n ? n : 1) * sizeof **ids);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (lm->parse_special && i + 3 <= n && memcmp(s + i, "<s>", 3) == 0) {
            (*ids)[k++] = 1;
            i += 2;
        } else {
            (*ids)[k++] = (unsigned char)s[i];
        }
    }
    *nn = k;
    return 0;
}
static void ids_text(const int32_t *ids, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < cap; i++) {
        if (ids[i] == 1)
            o += (size_t)snprintf(out + o, cap - o, "|BOS|");
        else
            out[o++] = (char)ids[i];
    }
    out[o] = 0;
}
static int fk_ll(qe_lm *lm, const int32_t *c, size_t nc, const int32_t *k, size_t nk, double *ll,
                 bool *g, qe_err *err)
{
    (void)lm;
    (void)err;
    ids_text(c, nc, last_ctx, sizeof last_ctx);
    ids_text(k, nk, last_cont, sizeof last_cont);
    *ll = -(double)nk;
    if (g)
        *g = false;
    return 0;
}
static const qe_lm_ops fk_ops = {fk_tok, NULL, fk_ll, NULL, NULL};

TEST(chat_eval_multiturn_fake_lm)
{
    /* tiny_mc with one few-shot example (first_n), through a template that
     * writes the BOS itself */
    char spec[2048];
    snprintf(spec, sizeof spec, "%s",
             "{\"name\": \"tiny_mc_chat\", \"version\": 1, \"family\": \"general\", "
             "\"language\": \"en\", \"data\": {\"path\": \"tests/data/tiny_mc.tsv\", "
             "\"format\": \"tsv\", \"columns\": [\"q\", \"a\", \"b\", \"label\"]}, "
             "\"output_type\": \"multiple_choice\", \"prompt\": \"Q: {{q}}\\nA:\", "
             "\"choices\": [\"{{a}}\", \"{{b}}\"], \"label\": \"{{label}}\", "
             "\"fewshot\": {\"n\": 1, \"sampler\": \"first_n\"}, "
             "\"metrics\": [\"acc\", \"acc_norm\"]}");
    write_text(tmp("tiny_mc_chat.json"), spec);
    write_text(tmp("bos.jinja"), "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}"
                                 "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}");
    qe_err e = {0};
    qe_chat_template *ct = qe_chat_template_load(tmp("chat.gguf"), tmp("bos.jinja"), NULL, &e);
    REQUIRE(ct, "%s", e.msg);
    qe_task *t = qe_task_load(tmp("tiny_mc_chat.json"), ".", &e);
    REQUIRE(t, "%s", e.msg);
    qe_lm lm = {.ops = &fk_ops, .bos = 1, .add_bos = true, .n_ctx = 4096};
    cJSON *vars = cJSON_Parse("{\"enable_thinking\": false}");
    qe_eval_opts o = {.limit = 2, .chat = ct, .chat_system = "Be brief.", .chat_vars = vars};
    qe_task_result r;
    int rc = qe_eval_task(&lm, t, &o, &r, &e);
    REQUIRE(rc == 0, "%s", e.msg);
    /* doc 1 ("Two plus two?"), last choice "3": one BOS (the template's), the
     * system turn, the first doc as a user/assistant example with its gold
     * answer, the prompt, the generation prompt; the choice starts the
     * assistant turn with no delimiter */
    CHECKF(strcmp(last_ctx, "|BOS|<system>Be brief.<user>Q: Sky color?\nA:<assistant>blue"
                            "<user>Q: Two plus two?\nA:<assistant>") == 0,
           "ctx [%s]", last_ctx);
    CHECKF(strcmp(last_cont, "3") == 0, "cont [%s]", last_cont);
    CHECK(r.items[1].head_ids[0] == 1 && r.items[1].head_ids[1] == '<');
    CHECKF(strstr(r.protocol, "chat template") != NULL, "%s", r.protocol);
    CHECK(lm.parse_special == false); /* restored */
    /* the prompt hash differs from the plain run's */
    qe_task_result plain;
    qe_eval_opts o2 = {.limit = 2};
    REQUIRE(qe_eval_task(&lm, t, &o2, &plain, &e) == 0, "%s", e.msg);
    CHECK(strcmp(plain.items[0].prompt_sha, r.items[0].prompt_sha) != 0);
    CHECKF(strcmp(last_cont, " 3") == 0, "plain cont [%s]", last_cont);
    qe_task_result_free(&plain);
    qe_task_result_free(&r);
    qe_task_free(t);
    cJSON_Delete(vars);
    qe_chat_template_free(ct);
    remove(tmp("tiny_mc_chat.json"));
    remove(tmp("bos.jinja"));
}

/* The acceptance run: gsm8k through the GGUF's own template; --verbose
 * shows the rendered prompt's ids, with the template's BOS not doubled. */
TEST(eval_chat_end_to_end)
{
    char cmd[1400], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s eval %s --tasks gsm8k --chat --limit 5 --verbose 2>&1", test_qeval_bin(),
             tmp("chat.gguf"));
    int rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 0, "rc=%d out=%s", rc, out);
    CHECKF(strstr(out, "chat template: ") && strstr(out, "tokenizer.chat_template (sha256 "),
           "%s", out);
    int n_docs = 0;
    for (const char *p = out; (p = strstr(p, "gsm8k doc=")); p++) {
        n_docs++;
        const char *ids = strstr(p, "ids=[");
        CHECKF(ids && strncmp(ids, "ids=[1,", 7) == 0 && strncmp(ids, "ids=[1,1,", 9) != 0,
               "BOS once: %.80s", ids ? ids : p);
    }
    CHECKF(n_docs == 5, "%d prompts logged", n_docs);
    CHECK(strstr(out, "chat template ") != NULL && strstr(out, "exact_match,strict") != NULL);
    free(out);
    /* --chat on a model without a template: a clear error */
    snprintf(cmd, sizeof cmd, "%s eval %s --tasks gsm8k --chat --limit 1 2>&1", test_qeval_bin(),
             test_asset("models/stories260K/stories260K.gguf"));
    rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 2 && strstr(out, "has no chat template"), "rc=%d out=%s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s eval %s --tasks gsm8k --system hi 2>&1", test_qeval_bin(),
             tmp("chat.gguf"));
    rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 2 && strstr(out, "need --chat"), "rc=%d out=%s", rc, out);
    free(out);
}


/* qeval run --chat: the template's sha256 is part of the run key, so a run
 * through another template (or none) is another run, never mixed. */
TEST(run_chat_key)
{
    qe_err e = {0};
    qe_chat_template *ct = qe_chat_template_load(tmp("chat.gguf"), NULL, NULL, &e);
    REQUIRE(ct, "%s", e.msg);
    char want[64], cmd[1600], *out = NULL;
    snprintf(want, sizeof want, "chat=%.16s", ct->sha256);
    qe_chat_template_free(ct);
    snprintf(cmd, sizeof cmd,
             "%s run %s --quants Q8_0 --tasks tinystories-cloze --chat --limit 2 --db %s 2>&1",
             test_qeval_bin(), tmp("chat.gguf"), tmp("run.db"));
    int rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 0 && strstr(out, want) && strstr(out, "run: 1,"), "rc=%d out=%s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "%s run %s --quants Q8_0 --tasks tinystories-cloze --limit 2 --db %s 2>&1", test_qeval_bin(),
             tmp("chat.gguf"), tmp("run.db"));
    rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 0 && !strstr(out, want) && strstr(out, "run: 2,"), "rc=%d out=%s", rc, out);
    free(out);
    /* every sample of the chat run points at a task row naming the template */
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(tmp("run.db"), &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        char q[400];
        snprintf(q, sizeof q,
                 "SELECT sum(t.protocol LIKE '%% %s'), sum(t.protocol NOT LIKE '%%chat=%%'), "
                 "count(*) FROM samples s JOIN tasks t ON t.id = s.task_id "
                 "WHERE t.name = 'tinystories-cloze'", want);
        sqlite3_stmt *st = NULL;
        long long with = -1, without = -1, all = -1;
        if (sqlite3_prepare_v2(db, q, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
            with = sqlite3_column_int64(st, 0);
            without = sqlite3_column_int64(st, 1);
            all = sqlite3_column_int64(st, 2);
        }
        sqlite3_finalize(st);
        CHECKF(with > 0 && without > 0 && with + without == all,
               "samples: %lld with the template, %lld without, %lld in all", with, without, all);
    }
    sqlite3_close(db);
    const char *db_files[] = {"run.db", "run.db-wal", "run.db-shm"};
    for (int i = 0; i < 3; i++)
        remove(tmp(db_files[i]));
}

/* "chat": true in a task spec (and a suite) is read and checked. */
TEST(task_chat_key)
{
    write_text(tmp("chat_task.json"),
               "{\"name\": \"c\", \"version\": 1, \"family\": \"general\", \"data\": {\"path\": "
               "\"x.tsv\", \"format\": \"tsv\", \"columns\": [\"q\", \"a\", \"b\", \"label\"]}, "
               "\"output_type\": \"multiple_choice\", \"prompt\": \"{{q}}\", \"choices\": "
               "[\"{{a}}\", \"{{b}}\"], \"label\": \"{{label}}\", \"metrics\": [\"acc\"], "
               "\"chat\": true}");
    qe_err e = {0};
    qe_task *t = qe_task_load(tmp("chat_task.json"), tmpdir, &e);
    CHECKF(t && t->chat, "%s", e.msg);
    qe_task_free(t);
    write_text(tmp("chat_task.json"),
               "{\"name\": \"c\", \"version\": 1, \"family\": \"general\", \"data\": {\"path\": "
               "\"x.tsv\", \"format\": \"tsv\", \"columns\": [\"q\", \"a\", \"b\", \"label\"]}, "
               "\"output_type\": \"multiple_choice\", \"prompt\": \"{{q}}\", \"choices\": "
               "[\"{{a}}\", \"{{b}}\"], \"label\": \"{{label}}\", \"metrics\": [\"acc\"], "
               "\"chat\": \"yes\"}");
    t = qe_task_load(tmp("chat_task.json"), tmpdir, &e);
    CHECKF(!t && strstr(e.msg, "chat: expected true or false"), "%s", e.msg);
    qe_task_free(t);
    write_text(tmp("chat_suite.json"), "{\"name\": \"s\", \"tasks\": [\"gsm8k\"], \"chat\": true}");
    qe_suite *s = qe_suite_load(tmp("chat_suite.json"), &e);
    CHECKF(s && s->chat, "%s", e.msg);
    qe_suite_free(s);
    remove(tmp("chat_task.json"));
    remove(tmp("chat_suite.json"));
}

int main(void)
{
    if (access(test_asset("models/stories260K/stories260K.gguf"), R_OK) != 0 ||
        make_fixtures() != 0) {
        printf("  skipped: stories260K.gguf not available or fixtures failed\n");
        return test_finish();
    }
    RUN(template_from_gguf);
    RUN(raise_exception_exits_2);
    RUN(template_from_hf_config);
    RUN(missing_template_is_a_clear_error);
    RUN(library_sources);
    RUN(chat_eval_multiturn_fake_lm);
    RUN(eval_chat_end_to_end);
    RUN(run_chat_key);
    RUN(task_chat_key);
    cleanup();
    return test_finish();
}
