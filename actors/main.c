/*  parleyd — main: configuration, the runtime, the edge, and signals.

    main owns the signals: SIGINT/SIGTERM/SIGPIPE are blocked in every thread
    (threads inherit the mask) and main waits for them with sigwait(). On a
    stop signal the edge closes every client with 1001, then the actors get
    TERM and their workers are joined; the process exits 0. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../protocol/pl_version.h"
#include "../transport/pl_log.h"
#include "../transport/pl_runtime.h"
#include "edge.h"
#include "pl_actors.h"
#include "pl_config.h"

/* Raises the soft open-file limit to the hard one: every connection is a
   file, and the hard limit (20,000 here) is what the operator allows. */
static void
s_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static pl_log_level_t
s_level(const char *name)
{
    if (strcmp(name, "error") == 0)
        return PL_LOG_ERROR;
    if (strcmp(name, "warn") == 0)
        return PL_LOG_WARN;
    if (strcmp(name, "debug") == 0)
        return PL_LOG_DEBUG;
    return PL_LOG_INFO;
}

int
main(int argc, char **argv)
{
    pl_config_t cfg;
    int rc = pl_config_load(&cfg, argc, argv, stderr);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    pl_log_init(strcmp(cfg.log_format, "json") == 0 ? PL_LOG_JSON : PL_LOG_TEXT, s_level(cfg.log_level));
    if (pl_config_load_models(&cfg, stderr) != 0)
        return 2;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) { /* before any thread */
        pl_models_free(&cfg.models_table);
        return 1;
    }

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned workers = cfg.workers > 0 ? (unsigned) cfg.workers : (unsigned) (cores > 0 ? cores : 1);
    unsigned shards = cfg.shards > 0 ? (unsigned) cfg.shards : workers;
    s_raise_nofile();

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    pl_log_info("start", "name=%s version=%s workers=%u shards=%u", PL_NAME, PL_VERSION, workers, shards);
    pl_config_log(&cfg);
    for (size_t i = 0; i < cfg.models_table.n; i++) {
        const pl_model_t *m = &cfg.models_table.v[i];
        pl_log_info("model", "name=%s backend=%s model=%s key_env=%s key_set=%s", m->name, m->backend, m->model,
                    m->api_key_env[0] ? m->api_key_env : "-",
                    m->api_key_env[0] && getenv(m->api_key_env) ? "yes" : "no");
    }
    if (!pl_models_find(&cfg.models_table, cfg.model))
        pl_log_info("model", "name=%s backend=echo note=default_model_not_in_table", cfg.model);

    int status = 1;
    pl_edge_t *edge = NULL;
    pl_runtime_t *rt = pl_runtime_new(workers, shards, (int) cfg.mailbox_hwm);
    if (!rt) {
        pl_log_error("start", "error=runtime");
        curl_global_cleanup();
        pl_models_free(&cfg.models_table);
        return 1;
    }
    pl_runtime_register(rt, PL_KIND_CONN, &pl_conn_actor, &cfg);
    pl_runtime_register(rt, PL_KIND_SESSION, &pl_session_actor, &cfg);
    pl_runtime_register(rt, PL_KIND_MODEL, &pl_model_actor, &cfg);
    pl_runtime_register_own(rt, PL_KIND_STORE, &pl_store_actor, &cfg);
    edge = pl_edge_new(&cfg, rt); /* before start: it installs the doorbell */
    if (!edge || pl_runtime_start(rt) != 0 || pl_edge_start(edge) != 0)
        goto out;
    pl_log_info("ready", "port=%ld model=%s", cfg.port, cfg.model);

    int sig = 0;
    do {
        if (sigwait(&sigs, &sig) != 0)
            break;
    } while (sig == SIGPIPE);
    pl_log_info("signal", "name=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = 0;
out:
    if (edge)
        pl_edge_stop(edge);
    pl_runtime_stop(rt);
    pl_edge_destroy(&edge);
    pl_runtime_destroy(&rt);
    curl_global_cleanup();
    pl_models_free(&cfg.models_table);
    pl_log_info("exit", "status=%d", status);
    return status;
}
