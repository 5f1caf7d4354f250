/*  session_http — the session actor's answers to the edge's HTTP
    requests: create, list, get (with history, newest 8 MiB), clear, delete. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "session_int.h"

static void
s_info(const s_session_t *s, pl_sessinfo_t *info)
{
    *info = (pl_sessinfo_t){(char *) s->id, s->model, s->kind, s->name, s->nmessages,
                            (int64_t) s->nmembers, s->created};
}

static void
s_reply(self_t *self, pl_env_t *reply, const pl_env_t *req, int status)
{
    reply->type = PL_MSG_HTTP_REPLY;
    pl_env_set_u64(reply, PL_F_REQ, req->req);
    pl_env_set_i64(reply, PL_F_CODE, status);
    session_to_edge(self, reply);
    pl_env_reset(reply);
}

static void
s_delete(self_t *self, s_session_t *s)
{
    if (s->running)
        session_cancel_turn(self, s, PL_FINISH_CANCELLED);
    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_DELETED);
    session_broadcast(self, s, &ev);
    pl_env_init(&ev, PL_MSG_ST_DELETE);
    pl_env_set_str(&ev, PL_F_SESSION, s->id);
    session_to_store(self, &ev);
    pl_env_reset(&ev);
    for (size_t i = 0; i < s->nmembers; i++)
        session_member_gone(self, s->members[i].conn, s->id);
    self->stats[PL_STAT_SESSIONS_MEMBERS] -= (int64_t) s->nmembers;
    self->stats[PL_STAT_SESSIONS_ACTIVE]--;
    session_free(pl_map_take(self->sessions, s->id));
}

void
session_handle_http(self_t *self, pl_env_t *env)
{
    pl_env_t reply;
    pl_env_init(&reply, PL_MSG_HTTP_REPLY);
    pl_sessinfo_t info;
    if (env->type == PL_MSG_HTTP_LIST) {
        reply.present |= 1ull << PL_F_SESSV;
        pl_map_iter_t it = {0};
        void *v;
        while (pl_map_next(self->sessions, &it, &v)) {
            s_info(v, &info);
            pl_env_sessv_add(&reply, &info);
        }
        s_reply(self, &reply, env, 200);
        return;
    }
    if (env->type == PL_MSG_HTTP_CREATE) {
        int code = 0;
        const char *why = NULL;
        s_session_t *s = session_create(self, env, &code, &why);
        if (!s) {
            pl_env_set_str(&reply, PL_F_TEXT, why);
            s_reply(self, &reply, env, code == PL_E_NOT_FOUND ? 400 : 503);
            return;
        }
        s_info(s, &info);
        pl_env_sessv_add(&reply, &info);
        s_reply(self, &reply, env, 201);
        return;
    }
    s_session_t *s = pl_map_get(self->sessions, env->session);
    if (!s && session_park(self, env)) {
        pl_env_reset(&reply);
        return;
    }
    if (!s) {
        pl_env_set_str(&reply, PL_F_TEXT, "session not found");
        s_reply(self, &reply, env, 404);
        return;
    }
    if (env->type == PL_MSG_HTTP_GET) {
        s_info(s, &info);
        pl_env_sessv_add(&reply, &info);
        session_hist_newest(s, &reply);
    } else if (env->type == PL_MSG_HTTP_CLEAR) {
        for (size_t i = 0; i < s->nhist; i++)
            session_hist_free(&s->hist[i]);
        s->nhist = 0;
        s->nmessages = 0;
        pl_env_t ev;
        pl_env_init(&ev, PL_MSG_ST_CLEAR);
        pl_env_set_str(&ev, PL_F_SESSION, s->id);
        session_to_store(self, &ev);
        pl_env_reset(&ev);
        pl_env_init(&ev, PL_MSG_EV_CLEARED);
        session_broadcast(self, s, &ev);
        s_info(s, &info);
        pl_env_sessv_add(&reply, &info);
    } else { /* HTTP_DELETE */
        pl_env_set_str(&reply, PL_F_SESSION, s->id);
        s_delete(self, s);
    }
    s_reply(self, &reply, env, 200);
}
