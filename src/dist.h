// dist.h: ranks: who this process is among the ranks of a run, the TCP rendezvous that shares the
// NCCL unique id and checks that every rank has the same plan, the watchdog that ends every rank
// when one fails, the local launcher of `lwb run --np N`, and the NCCL communicator.
//
// Defines:
//   struct lwb_rank_env, dist_rank_from_env (the launchers' variables: OpenMPI, PMI/PMIx, Slurm,
//     RANK/WORLD_SIZE/LOCAL_RANK), dist_master_from_env (MASTER_ADDR, MASTER_PORT);
//   struct dist_server, dist_server_start / dist_server_join (gathers every rank's hello, checks
//     world size, ranks and plans, answers with the NCCL id or one error, then watches every
//     connection until each rank says goodbye: a connection that closes without one is a dead
//     rank, and every other rank is told to abort);
//   dist_join (a rank's side: connect, hello, answer; then a watchdog thread on the connection),
//     dist_finish (goodbye), dist_activity (what this rank is doing, for messages);
//   dist_launch (`--np N`: fork N ranks on this host, serve their rendezvous, forward their output
//     line by line, end the others when one fails);
//   struct lwb_comm, comm_init (ncclCommInitRank, watched), comm_allgather, comm_reduce_scatter,
//     comm_allreduce, comm_alltoallv (grouped send/recv), comm_abort.
//
// Wire format (TCP, one connection per rank to the server for the whole run): frames of
// {u32 magic, u32 type, u32 length} and a JSON payload. HELLO (rank -> server: rank, world size,
// local rank, host, pid, plan), REPLY (server -> rank: ok and the NCCL id, or an error), BYE
// (rank -> server: finished), ABORT (server -> rank: which rank failed and how).
//
// NOTES:
// - The server runs in rank 0 (a thread) under an external launcher and in the parent under
//   --np; it makes the NCCL id itself (ncclGetUniqueId), after the ranks were forked, so no rank
//   inherits NCCL state across fork.
// - Every wait has a deadline: the rendezvous (--rendezvous-timeout, default 120 s), blocking NCCL
//   calls and stream waits with collectives in flight (--comm-timeout, default 300 s). A rank that
//   dies closes its connection; the server sees it at once and tells the others, whose watchdogs
//   abort their communicators and exit within a second or two.
// - LWB_TEST_FAULT=RANK:POINT makes one rank fail on purpose (tests and the multi-GPU scripts):
//   POINT is `plan` (a user error before the rendezvous), `absent` (never joins the rendezvous),
//   `exit` (exits 1 after the rendezvous), `kill` (SIGKILL itself in the first timed iteration)
//   or `hang` (stops in the first timed iteration without finishing its collectives).
//
// Does not: know layers or collectives' meaning (families call comm_*), or link MPI.
// Tested by test/test_dist.c (variables, rendezvous, plan checks, launcher, faults) and
// test/cli_ranks.sh; on GPUs by test/gpu/run_ranks.sh.
#pragma once
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define DIST_DEFAULT_PORT 29500
#define DIST_MAGIC 0x3142574cu // "LWB1"
enum { DIST_HELLO = 1, DIST_REPLY = 2, DIST_BYE = 3, DIST_ABORT = 4 };

// ---------------------------------------------------------------------------------------------
// Who am I: the launcher's variables

struct lwb_rank_env {
    bool found;         // a launcher's rank variable was set
    int rank, world_size;
    int local_rank;     // -1: the launcher gave none
    char source[48];    // which family of variables ("OMPI_COMM_WORLD_*")
};

typedef const char *(*dist_getenv_fn)(const char *name, void *ctx);
static const char *dist_getenv_process(const char *name, void *ctx) {
    (void)ctx;
    return getenv(name);
}

// A non-negative integer variable; -1 when unset. A set but malformed value is a user error.
static long long dist_env_int(dist_getenv_fn get, void *ctx, const char *name) {
    const char *v = get(name, ctx);
    if (!v) return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < 0 || x > 1000000)
        lwb_user_error("environment: %s is \"%.40s\"; a launcher sets it to a rank or a count (0 .. 1000000); "
                       "unset it or fix the launcher",
                       name, v);
    return x;
}

// The first family of variables whose rank is set decides; its size (or, for PMIx, which exports
// no size, the first size any other family gives) must be set too. Order: OpenMPI, PMI (MPICH,
// Intel MPI), PMIx, Slurm (srun), then torchrun's / the reference run.sh's RANK and WORLD_SIZE.
static void dist_rank_from_env(dist_getenv_fn get, void *ctx, struct lwb_rank_env *out) {
    static const struct {
        const char *source, *rank, *size, *local;
    } fam[] = {
        {"OMPI_COMM_WORLD_*", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
        {"PMI_*", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"},
        {"PMIX_RANK", "PMIX_RANK", NULL, "PMIX_LOCAL_RANK"},
        {"SLURM_*", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
        {"RANK/WORLD_SIZE", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
    };
    *out = (struct lwb_rank_env){.rank = 0, .world_size = 1, .local_rank = -1};
    for (size_t i = 0; i < LWB_ARRAY_LEN(fam); i++) {
        long long r = dist_env_int(get, ctx, fam[i].rank);
        if (r < 0) continue;
        long long n = fam[i].size ? dist_env_int(get, ctx, fam[i].size) : -1;
        const char *size_name = fam[i].size;
        for (size_t j = 0; n < 0 && !fam[i].size && j < LWB_ARRAY_LEN(fam); j++)
            if (fam[j].size && (n = dist_env_int(get, ctx, fam[j].size)) >= 0) size_name = fam[j].size;
        if (n < 0)
            lwb_user_error("environment: %s is set but no world size is (%s); launch with mpirun, srun or "
                           "lwb run --np N, or set WORLD_SIZE",
                           fam[i].rank, fam[i].size ? fam[i].size : "PMI_SIZE, SLURM_NTASKS or WORLD_SIZE");
        if (n < 1 || r >= n)
            lwb_user_error("environment: %s is %lld but %s is %lld; a rank must be below the world size",
                           fam[i].rank, r, size_name, n);
        long long l = dist_env_int(get, ctx, fam[i].local);
        if (l < 0 && !strcmp(fam[i].local, "PMIX_LOCAL_RANK")) l = dist_env_int(get, ctx, "SLURM_LOCALID");
        *out = (struct lwb_rank_env){true, (int)r, (int)n, (int)l};
        snprintf(out->source, sizeof out->source, "%s", fam[i].source);
        return;
    }
}

struct lwb_master {
    char addr[256];
    int port;
};

// MASTER_ADDR (default 127.0.0.1: one host) and MASTER_PORT (default 29500).
static struct lwb_master dist_master_from_env(dist_getenv_fn get, void *ctx) {
    struct lwb_master m = {"127.0.0.1", DIST_DEFAULT_PORT};
    const char *a = get("MASTER_ADDR", ctx);
    if (a && *a) {
        if (strlen(a) >= sizeof m.addr || strpbrk(a, " \t\n/"))
            lwb_user_error("environment: MASTER_ADDR \"%.60s\" is not a host name or address", a);
        snprintf(m.addr, sizeof m.addr, "%s", a);
    }
    long long p = dist_env_int(get, ctx, "MASTER_PORT");
    if (p == 0 || p > 65535)
        lwb_user_error("environment: MASTER_PORT is %lld; give a TCP port from 1 to 65535", p);
    if (p > 0) m.port = (int)p;
    return m;
}

// LWB_TEST_FAULT=RANK:POINT: true when this rank should fail at `point`.
static bool dist_fault(int rank, const char *point) {
    const char *f = getenv("LWB_TEST_FAULT");
    if (!f) return false;
    char *end;
    long r = strtol(f, &end, 10);
    return end != f && *end == ':' && r == rank && !strcmp(end + 1, point);
}

// ---------------------------------------------------------------------------------------------
// Sockets and frames

struct dist_frame {
    uint32_t type;
    char *data; // NUL-terminated payload (JSON), owned
    uint32_t len;
};

// Write all of `n` bytes; -1 on error (the peer is gone).
static int dist_send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w, n -= (size_t)w;
    }
    return 0;
}

static int dist_send_frame(int fd, uint32_t type, const char *payload) {
    uint32_t len = payload ? (uint32_t)strlen(payload) : 0;
    uint32_t h[3] = {htonl(DIST_MAGIC), htonl(type), htonl(len)};
    if (dist_send_all(fd, h, sizeof h) != 0) return -1;
    return len ? dist_send_all(fd, payload, len) : 0;
}

// Read exactly n bytes before `deadline` (lwb_now seconds; 0: none). 1 done, 0 closed, -1 error
// or timeout (errno ETIMEDOUT).
static int dist_recv_all(int fd, void *p, size_t n, double deadline) {
    char *c = p;
    while (n) {
        if (deadline > 0) {
            double left = deadline - lwb_now();
            if (left <= 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            struct pollfd pf = {fd, POLLIN, 0};
            int r = poll(&pf, 1, (int)LWB_MIN(left * 1000 + 1, 1000));
            if (r < 0 && errno != EINTR) return -1;
            if (r <= 0) continue;
        }
        ssize_t k = recv(fd, c, n, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k == 0) return 0;
        if (k < 0) return -1;
        c += k, n -= (size_t)k;
    }
    return 1;
}

// One frame; 1 read, 0 closed, -1 error, timeout or garbage (not an lwb peer).
static int dist_recv_frame(int fd, struct dist_frame *f, double deadline) {
    uint32_t h[3];
    int r = dist_recv_all(fd, h, sizeof h, deadline);
    if (r <= 0) return r;
    if (ntohl(h[0]) != DIST_MAGIC || ntohl(h[2]) > (16u << 20)) {
        errno = EPROTO;
        return -1;
    }
    f->type = ntohl(h[1]);
    f->len = ntohl(h[2]);
    f->data = xmalloc(f->len + 1);
    r = f->len ? dist_recv_all(fd, f->data, f->len, deadline) : 1;
    f->data[f->len] = 0;
    if (r <= 0) {
        free(f->data);
        f->data = NULL;
        return r < 0 ? -1 : 0;
    }
    return 1;
}

static int dist_resolve(const struct lwb_master *m, struct sockaddr_storage *sa, socklen_t *len) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", m->port);
    if (getaddrinfo(m->addr, port, &hints, &res) != 0 || !res) return -1;
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

// A listening socket at `m` (port 0: any free port, written back). Exits with one line.
static int dist_listen(struct lwb_master *m) {
    struct sockaddr_storage sa;
    socklen_t len;
    if (dist_resolve(m, &sa, &len) != 0)
        lwb_user_error("rendezvous: cannot resolve MASTER_ADDR \"%s\"; give this host's name or address", m->addr);
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) lwb_fatal("rendezvous: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, len) != 0)
        lwb_user_error("rendezvous: rank 0 cannot listen at %s:%d (%s); another job may hold the port: set "
                       "MASTER_PORT to a free one on every rank%s",
                       m->addr, m->port, strerror(errno),
                       errno == EADDRNOTAVAIL ? ", and MASTER_ADDR to rank 0's own host" : "");
    if (listen(fd, 1024) != 0) lwb_fatal("rendezvous: listen: %s", strerror(errno));
    if (m->port == 0) {
        struct sockaddr_storage got;
        socklen_t gl = sizeof got;
        getsockname(fd, (struct sockaddr *)&got, &gl);
        m->port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                  : ((struct sockaddr_in *)&got)->sin_port);
    }
    return fd;
}

// ---------------------------------------------------------------------------------------------
// The server

struct dist_peer {
    int fd;          // -1: not connected
    bool hello, bye, gone;
    int local_rank, pid;
    char host[64];
    json_t *plan;
};

struct dist_server {
    int listen_fd;
    int world_size;
    struct lwb_master at;       // for messages
    double timeout_s;           // rendezvous
    bool make_nccl_id;          // false: a dry run, no NCCL
    struct dist_peer *peers;    // (world_size)
    int *pending;               // accepted connections before their hello
    int npending;
    pthread_t thread;
    bool threaded;
    char error[1024];           // the rendezvous failed: what every rank is told
    int failed_rank;            // the first rank that died after the rendezvous (-1: none)
    int host_rank;              // the rank whose process runs this server (-1: the --np launcher);
                                // it hears of a failure last, since its watchdog then ends it
};

// Name the first key where two plans differ, with both values.
static bool dist_plan_diff(json_t *a, json_t *b, char *out, size_t n) {
    const char *key;
    json_t *va;
    json_object_foreach(a, key, va) {
        json_t *vb = json_object_get(b, key);
        if (vb && json_equal(va, vb)) continue;
        if (json_is_object(va) && json_is_object(vb) && dist_plan_diff(va, vb, out, n)) return true;
        char *ta = json_dumps(va, JSON_COMPACT | JSON_ENCODE_ANY), *tb = vb ? json_dumps(vb, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        snprintf(out, n, "'%s' is %.80s on rank 0 and %.80s", key, ta ? ta : "?", tb ? tb : "absent");
        free(ta), free(tb);
        return true;
    }
    json_object_foreach(b, key, va) {
        if (json_object_get(a, key)) continue;
        snprintf(out, n, "'%s' is absent on rank 0 and set", key);
        return true;
    }
    return false;
}

static void dist_server_fail(struct dist_server *s, const char *fmt, ...) LWB_PRINTF(2, 3);
static void dist_server_fail(struct dist_server *s, const char *fmt, ...) {
    if (s->error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
}

static void dist_server_accept(struct dist_server *s) {
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->pending = xrealloc(s->pending, sizeof(int) * (size_t)(s->npending + 1));
    s->pending[s->npending++] = fd;
}

// A hello on pending connection i: place it at its rank.
static void dist_server_hello(struct dist_server *s, int i) {
    int fd = s->pending[i];
    s->pending[i] = s->pending[--s->npending];
    struct dist_frame f;
    if (dist_recv_frame(fd, &f, lwb_now() + 10) <= 0 || f.type != DIST_HELLO) {
        if (f.data && f.type != DIST_HELLO) free(f.data);
        close(fd); // not an lwb rank (a port scanner, a stale client): ignore it
        return;
    }
    json_error_t je;
    json_t *h = json_loads(f.data, 0, &je);
    free(f.data);
    json_int_t rank = -1, world = -1, local = -1, pid = 0;
    const char *host = "?";
    json_t *plan = NULL;
    if (!h || json_unpack(h, "{s:I, s:I, s:I, s:I, s:s, s:o}", "rank", &rank, "world_size", &world, "local_rank",
                          &local, "pid", &pid, "host", &host, "plan", &plan) != 0) {
        json_decref(h);
        close(fd);
        return;
    }
    if (world != s->world_size)
        dist_server_fail(s, "rank %lld (host %s) runs with a world size of %lld but rank 0 with %d; every rank must "
                         "come from one launch",
                         (long long)rank, host, (long long)world, s->world_size);
    else if (rank < 0 || rank >= s->world_size)
        dist_server_fail(s, "a rank %lld joined a run of %d ranks", (long long)rank, s->world_size);
    else if (s->peers[rank].fd >= 0)
        dist_server_fail(s, "two processes claim rank %lld (hosts %s and %s); the launcher's rank variables are "
                         "wrong, or two runs share MASTER_ADDR:MASTER_PORT",
                         (long long)rank, s->peers[rank].host, host);
    if (rank >= 0 && rank < s->world_size && s->peers[rank].fd < 0) {
        struct dist_peer *p = &s->peers[rank];
        p->fd = fd, p->hello = true, p->local_rank = (int)local, p->pid = (int)pid;
        snprintf(p->host, sizeof p->host, "%s", host);
        p->plan = json_incref(plan);
    } else {
        dist_send_frame(fd, DIST_REPLY, "{\"ok\":false,\"error\":\"rejected\"}");
        close(fd);
    }
    json_decref(h);
}

// Every rank's hello, then the checks; true when the rendezvous succeeded (s->error otherwise).
static bool dist_server_gather(struct dist_server *s) {
    double deadline = lwb_now() + s->timeout_s;
    for (;;) {
        int have = 0;
        for (int r = 0; r < s->world_size; r++) have += s->peers[r].hello;
        if (have == s->world_size || s->error[0]) break;
        double left = deadline - lwb_now();
        if (left <= 0) {
            struct lwb_str miss = {0};
            int nmiss = 0;
            for (int r = 0; r < s->world_size; r++)
                if (!s->peers[r].hello && nmiss++ < 16) str_printf(&miss, "%s%d", miss.len ? ", " : "", r);
            if (nmiss > 16) str_printf(&miss, " and %d more", nmiss - 16);
            dist_server_fail(s, "rendezvous at %s:%d: rank%s %s did not join within %.0f s (--rendezvous-timeout); "
                             "check that every rank started and has the same MASTER_ADDR and MASTER_PORT",
                             s->at.addr, s->at.port, nmiss == 1 ? "" : "s", miss.s, s->timeout_s);
            str_free(&miss);
            break;
        }
        struct pollfd *pf = xcalloc((size_t)s->npending + 1, sizeof *pf);
        pf[0] = (struct pollfd){s->listen_fd, POLLIN, 0};
        for (int i = 0; i < s->npending; i++) pf[i + 1] = (struct pollfd){s->pending[i], POLLIN, 0};
        int n = poll(pf, (nfds_t)s->npending + 1, (int)LWB_MIN(left * 1000 + 1, 500));
        if (n > 0) {
            for (int i = s->npending - 1; i >= 0; i--)
                if (pf[i + 1].revents) dist_server_hello(s, i);
            if (pf[0].revents & POLLIN) dist_server_accept(s);
        }
        free(pf);
    }
    for (int r = 1; !s->error[0] && r < s->world_size; r++) {
        char diff[512];
        if (dist_plan_diff(s->peers[0].plan, s->peers[r].plan, diff, sizeof diff))
            dist_server_fail(s, "ranks 0 and %d disagree on the plan: %s on rank %d; start every rank with the same "
                             "config, flags, model and lwb",
                             r, diff, r);
    }
    return !s->error[0];
}

static void dist_hex(const unsigned char *p, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
}

static void dist_server_reply(struct dist_server *s) {
    json_t *reply;
    if (s->error[0]) {
        reply = json_pack("{s:b, s:s}", "ok", 0, "error", s->error);
    } else {
        char hex[2 * NCCL_UNIQUE_ID_BYTES + 1] = "";
        if (s->make_nccl_id) {
            ncclUniqueId id;
            nccl_load();
            NCCL_CHECK(lwb_nccl.ncclGetUniqueId(&id));
            dist_hex((const unsigned char *)id.internal, sizeof id.internal, hex);
        }
        reply = json_pack("{s:b, s:s}", "ok", 1, "nccl_id", hex);
    }
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    for (int r = 0; r < s->world_size; r++)
        if (s->peers[r].fd >= 0) dist_send_frame(s->peers[r].fd, DIST_REPLY, text);
    for (int i = 0; i < s->npending; i++) {
        dist_send_frame(s->pending[i], DIST_REPLY, text);
        close(s->pending[i]);
    }
    s->npending = 0;
    free(text);
}

// After the rendezvous: until every rank said goodbye or is gone. A connection closed without a
// goodbye is a failed rank: every other rank gets an ABORT naming it.
static void dist_server_watch(struct dist_server *s) {
    struct pollfd *pf = xcalloc((size_t)s->world_size, sizeof *pf);
    for (;;) {
        int open_n = 0;
        for (int r = 0; r < s->world_size; r++) {
            pf[r] = (struct pollfd){s->peers[r].fd, POLLIN, 0};
            open_n += s->peers[r].fd >= 0;
        }
        if (!open_n) break;
        if (poll(pf, (nfds_t)s->world_size, 1000) <= 0) continue;
        for (int r = 0; r < s->world_size; r++) {
            struct dist_peer *p = &s->peers[r];
            if (p->fd < 0 || !pf[r].revents) continue;
            struct dist_frame f = {0};
            int got = dist_recv_frame(p->fd, &f, lwb_now() + 5);
            if (got > 0 && f.type == DIST_BYE) {
                p->bye = true;
                free(f.data);
                continue;
            }
            free(f.data);
            if (got > 0) continue; // nothing else is sent by ranks; ignore it
            close(p->fd);
            p->fd = -1;
            if (p->bye) continue;
            p->gone = true;
            if (s->failed_rank < 0) s->failed_rank = r;
            json_t *a = json_pack("{s:i, s:s, s:i}", "rank", r, "host", p->host, "pid", p->pid);
            char *text = json_dumps(a, JSON_COMPACT);
            json_decref(a);
            // The hosting rank's watchdog ends the process (and this thread) on its ABORT: every
            // other rank is told first.
            for (int i = 0; i < s->world_size; i++) {
                int o = s->host_rank >= 0 ? (s->host_rank + 1 + i) % s->world_size : i;
                if (o != r && s->peers[o].fd >= 0 && !s->peers[o].bye) dist_send_frame(s->peers[o].fd, DIST_ABORT, text);
            }
            free(text);
        }
    }
    free(pf);
}

static void *dist_server_main(void *arg) {
    struct dist_server *s = arg;
    bool ok = dist_server_gather(s);
    dist_server_reply(s);
    if (ok) dist_server_watch(s);
    for (int r = 0; r < s->world_size; r++)
        if (s->peers[r].fd >= 0) close(s->peers[r].fd), s->peers[r].fd = -1;
    close(s->listen_fd);
    s->listen_fd = -1;
    return NULL;
}

static void dist_server_init(struct dist_server *s, int listen_fd, struct lwb_master at, int world_size,
                             double timeout_s, bool make_nccl_id) {
    *s = (struct dist_server){.listen_fd = listen_fd, .world_size = world_size, .at = at, .timeout_s = timeout_s,
                              .make_nccl_id = make_nccl_id, .failed_rank = -1, .host_rank = -1};
    s->peers = xcalloc((size_t)world_size, sizeof *s->peers);
    for (int r = 0; r < world_size; r++) s->peers[r].fd = -1;
}

static void dist_server_start(struct dist_server *s) {
    if (pthread_create(&s->thread, NULL, dist_server_main, s) != 0) lwb_fatal("rendezvous: cannot start a thread");
    s->threaded = true;
}

static void dist_server_join(struct dist_server *s) {
    if (s->threaded) pthread_join(s->thread, NULL);
    s->threaded = false;
}

// ---------------------------------------------------------------------------------------------
// A rank's side

struct lwb_dist {
    int rank, world_size, local_rank;
    bool launched;              // started by `lwb run --np` (the parent serves the rendezvous)
    struct lwb_master master;
    double rendezvous_timeout_s, comm_timeout_s;
    int fd;                     // connection to the server (-1: none, one rank)
    struct dist_server *server; // rank 0's server thread (external launchers)
    unsigned char nccl_id[NCCL_UNIQUE_ID_BYTES];
    bool have_nccl_id;
    pthread_t watchdog;
    bool watching;
    int finishing;              // set before the goodbye: a closed connection is then expected
    pthread_mutex_t mu;         // guards activity
    char activity[256];         // what this rank does now (messages)
    double activity_since;      // lwb_now() when it began; 0: no deadline applies
    double activity_limit_s;    // the deadline of a blocking call (comm init), 0: none
};

static struct lwb_dist *dist_current; // for the watchdog and the fatal hooks

// What this rank is doing, for the messages of a failure elsewhere. `limit_s` > 0 puts a deadline
// on it (a blocking call the watchdog ends when it does not return in time).
static void dist_activity(struct lwb_dist *d, const char *what, double limit_s) {
    if (!d) return;
    pthread_mutex_lock(&d->mu);
    snprintf(d->activity, sizeof d->activity, "%s", what ? what : "");
    d->activity_since = lwb_now();
    d->activity_limit_s = limit_s;
    pthread_mutex_unlock(&d->mu);
}

// End the process from the watchdog thread: message, NCCL abort (lwb_proc's fatal hook), exit.
__attribute__((noreturn)) static void dist_die(const char *fmt, ...) LWB_PRINTF(1, 2);
__attribute__((noreturn)) static void dist_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lwb_vmessage(fmt, ap);
    va_end(ap);
    fflush(stderr);
    alarm(20); // an abort that does not return in time must not keep the process alive
    lwb_run_fatal_hook();
    _exit(LWB_EXIT_FAILURE);
}

static void *dist_watchdog_main(void *arg) {
    struct lwb_dist *d = arg;
    for (;;) {
        struct pollfd pf = {d->fd, POLLIN, 0};
        int n = poll(&pf, 1, 500);
        if (__atomic_load_n(&d->finishing, __ATOMIC_ACQUIRE)) return NULL;
        char act[256];
        pthread_mutex_lock(&d->mu);
        snprintf(act, sizeof act, "%s", d->activity[0] ? d->activity : "starting");
        double since = d->activity_since, limit = d->activity_limit_s;
        pthread_mutex_unlock(&d->mu);
        if (limit > 0 && lwb_now() - since > limit)
            dist_die("on %s: %s did not finish within %.0f s (--comm-timeout); a peer rank is stuck or gone; "
                     "aborting",
                     lwb_proc.host, act, limit);
        if (n <= 0) continue;
        struct dist_frame f = {0};
        int got = dist_recv_frame(d->fd, &f, lwb_now() + 5);
        if (__atomic_load_n(&d->finishing, __ATOMIC_ACQUIRE)) {
            free(f.data);
            return NULL;
        }
        if (got > 0 && f.type == DIST_ABORT) {
            json_t *a = json_loads(f.data, 0, NULL);
            int r = (int)json_integer_value(json_object_get(a, "rank")), pid = (int)json_integer_value(json_object_get(a, "pid"));
            const char *host = json_string_value(json_object_get(a, "host"));
            char msg[512];
            snprintf(msg, sizeof msg, "rank %d (host %s, pid %d) ended without finishing while rank %d on %s was in %s; "
                     "aborting", r, host ? host : "?", pid, d->rank, lwb_proc.host, act);
            json_decref(a);
            free(f.data);
            dist_die("%s", msg);
        }
        free(f.data);
        if (got > 0) continue;
        dist_die("the rendezvous server (%s) closed the connection while rank %d on %s was in %s: it ended; "
                 "aborting",
                 d->launched ? "the lwb --np launcher" : "rank 0", d->rank, lwb_proc.host, act);
    }
}

// Connect to the server, retrying until the deadline.
static int dist_connect(const struct lwb_master *m, double deadline) {
    struct sockaddr_storage sa;
    socklen_t len;
    for (;;) {
        if (dist_resolve(m, &sa, &len) == 0) {
            int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, len) == 0) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                return fd;
            }
            if (fd >= 0) close(fd);
        }
        if (lwb_now() > deadline) return -1;
        usleep(50000);
    }
}

static void dist_unhex(const char *hex, unsigned char *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
}

// Join the run: (rank 0 of an external launch: start the server), hello with `plan`, wait for the
// answer. Exits with one line on a failed rendezvous. Starts the watchdog.
static void dist_join(struct lwb_dist *d, json_t *plan, bool dry) {
    pthread_mutex_init(&d->mu, NULL);
    dist_current = d;
    if (dist_fault(d->rank, "absent")) {
        sleep((unsigned)(d->rendezvous_timeout_s + 30)); // never joins; the others time out
        _exit(LWB_EXIT_FAILURE);
    }
    if (d->rank == 0 && !d->launched) {
        struct lwb_master at = d->master;
        int lfd = dist_listen(&at);
        d->server = xcalloc(1, sizeof *d->server);
        dist_server_init(d->server, lfd, at, d->world_size, d->rendezvous_timeout_s, !dry);
        d->server->host_rank = d->rank;
        dist_server_start(d->server);
    }
    double deadline = lwb_now() + d->rendezvous_timeout_s;
    d->fd = dist_connect(&d->master, deadline);
    if (d->fd < 0)
        lwb_user_error("rendezvous: rank %d cannot reach %s:%d within %.0f s (--rendezvous-timeout); rank 0 serves it: "
                       "is rank 0 running, and are MASTER_ADDR and MASTER_PORT the same on every rank?",
                       d->rank, d->master.addr, d->master.port, d->rendezvous_timeout_s);
    json_t *h = json_pack("{s:i, s:i, s:i, s:i, s:s, s:O}", "rank", d->rank, "world_size", d->world_size, "local_rank",
                          d->local_rank, "pid", (int)getpid(), "host", lwb_proc.host, "plan", plan);
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (dist_send_frame(d->fd, DIST_HELLO, text) != 0)
        lwb_user_error("rendezvous: rank %d lost the connection to %s:%d", d->rank, d->master.addr, d->master.port);
    free(text);
    struct dist_frame f = {0};
    int got = dist_recv_frame(d->fd, &f, deadline + 15);
    if (got <= 0 || f.type != DIST_REPLY)
        lwb_user_error("rendezvous: rank %d got no answer from %s:%d within %.0f s (--rendezvous-timeout)%s", d->rank,
                       d->master.addr, d->master.port, d->rendezvous_timeout_s,
                       got == 0 ? ": the server closed the connection" : "");
    json_t *rep = json_loads(f.data, 0, NULL);
    free(f.data);
    if (!rep || !json_is_true(json_object_get(rep, "ok"))) {
        const char *e = rep ? json_string_value(json_object_get(rep, "error")) : NULL;
        if (d->server) dist_server_join(d->server); // every other rank gets the answer before rank 0 exits
        lwb_user_error("%s", e ? e : "rendezvous: a malformed answer");
    }
    const char *hex = json_string_value(json_object_get(rep, "nccl_id"));
    if (hex && strlen(hex) == 2 * NCCL_UNIQUE_ID_BYTES) {
        dist_unhex(hex, d->nccl_id, NCCL_UNIQUE_ID_BYTES);
        d->have_nccl_id = true;
    }
    json_decref(rep);
    if (pthread_create(&d->watchdog, NULL, dist_watchdog_main, d) != 0) lwb_fatal("cannot start the watchdog thread");
    d->watching = true;
}

// The goodbye: a closed connection is expected from here on. Rank 0 waits for the server to see
// every other rank's goodbye (bounded), so none of them sees rank 0 vanish while it finishes.
static void dist_finish(struct lwb_dist *d) {
    if (!d || d->fd < 0) return;
    __atomic_store_n(&d->finishing, 1, __ATOMIC_RELEASE);
    dist_send_frame(d->fd, DIST_BYE, NULL);
    if (d->watching) pthread_join(d->watchdog, NULL);
    d->watching = false;
    if (d->server) {
        double t0 = lwb_now();
        while (lwb_now() - t0 < d->comm_timeout_s) {
            bool all = true;
            for (int r = 0; r < d->world_size; r++) all &= d->server->peers[r].fd < 0;
            if (all) break;
            usleep(20000);
        }
    }
    close(d->fd);
    d->fd = -1;
    if (d->server) dist_server_join(d->server);
}

// ---------------------------------------------------------------------------------------------
// `lwb run --np N`: the local launcher

struct dist_child {
    pid_t pid;
    int out_fd, err_fd;            // read ends of the rank's stdout and stderr
    struct lwb_str out_buf, err_buf; // partial lines (and, when ordered, held output)
    char last_err[512];            // its last stderr line
    bool done;
    int status;                    // waitpid status
};

// Forward complete lines of `buf` to `f` (and everything at EOF). Returns nothing.
static void dist_forward_lines(struct lwb_str *buf, FILE *f, bool eof, char *last, size_t nlast) {
    size_t start = 0;
    for (size_t i = 0; i < buf->len; i++) {
        if (buf->s[i] != '\n') continue;
        fwrite(buf->s + start, 1, i + 1 - start, f);
        if (last && i > start) snprintf(last, nlast, "%.*s", (int)LWB_MIN(i - start, nlast - 1), buf->s + start);
        start = i + 1;
    }
    if (eof && start < buf->len) {
        fwrite(buf->s + start, 1, buf->len - start, f);
        fputc('\n', f);
        if (last) snprintf(last, nlast, "%.*s", (int)LWB_MIN(buf->len - start, nlast - 1), buf->s + start);
        start = buf->len;
    }
    fflush(f);
    memmove(buf->s ? buf->s : "", buf->s ? buf->s + start : "", buf->len - start);
    buf->len -= start;
    if (buf->s) buf->s[buf->len] = 0;
}

// A forked rank dies with its launcher (a killed `lwb run --np` leaves no rank behind).
static void prctl_set_parent_death(void) { prctl(PR_SET_PDEATHSIG, SIGKILL); }

static void dist_describe_end(int status, char *out, size_t n) {
    if (WIFEXITED(status)) snprintf(out, n, "exited with code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, n, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else snprintf(out, n, "ended (status %d)", status);
}

// Fork `np` ranks. Returns in each child (with *d filled: rank, world, the master to join); the
// parent serves the rendezvous, forwards the ranks' output (stdout in rank order when `ordered`),
// ends every rank when one fails, and exits with the first failure's code.
static void dist_launch(struct lwb_dist *d, int np, bool dry, bool ordered) {
    struct lwb_master at = {"127.0.0.1", 0};
    int lfd = dist_listen(&at);
    struct dist_child *ch = xcalloc((size_t)np, sizeof *ch);
    fflush(stdout), fflush(stderr);
    for (int r = 0; r < np; r++) {
        int po[2], pe[2];
        if (pipe(po) != 0 || pipe(pe) != 0) lwb_fatal("--np: pipe: %s", strerror(errno));
        pid_t pid = fork();
        if (pid < 0) lwb_fatal("--np: cannot start rank %d: %s", r, strerror(errno));
        if (pid == 0) {
            dup2(po[1], 1), dup2(pe[1], 2);
            close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
            close(lfd);
            for (int o = 0; o < r; o++) close(ch[o].out_fd), close(ch[o].err_fd);
            setvbuf(stdout, NULL, _IOLBF, 0);
            prctl_set_parent_death();
            d->rank = r, d->world_size = np, d->local_rank = r, d->launched = true;
            d->master = at;
            return;
        }
        close(po[1]), close(pe[1]);
        ch[r] = (struct dist_child){.pid = pid, .out_fd = po[0], .err_fd = pe[0]};
    }
    // The parent: rendezvous server (a thread), output, and the ranks' ends.
    struct dist_server srv;
    dist_server_init(&srv, lfd, at, np, d->rendezvous_timeout_s, !dry);
    dist_server_start(&srv);
    signal(SIGPIPE, SIG_IGN);
    int first_bad = -1, running = np;
    double term_at = 0;
    struct pollfd *pf = xcalloc(2 * (size_t)np, sizeof *pf);
    int shown = 0; // ordered: ranks below this one have printed everything
    while (running > 0) {
        for (int r = 0; r < np; r++) {
            pf[2 * r] = (struct pollfd){ch[r].out_fd, POLLIN, 0};
            pf[2 * r + 1] = (struct pollfd){ch[r].err_fd, POLLIN, 0};
        }
        poll(pf, 2 * (nfds_t)np, 100);
        for (int r = 0; r < np; r++)
            for (int k = 0; k < 2; k++) {
                int *fd = k ? &ch[r].err_fd : &ch[r].out_fd;
                if (*fd < 0 || !pf[2 * r + k].revents) continue;
                char buf[65536];
                ssize_t n = read(*fd, buf, sizeof buf);
                struct lwb_str *b = k ? &ch[r].err_buf : &ch[r].out_buf;
                if (n > 0) str_append(b, buf, (size_t)n);
                bool eof = n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN);
                if (eof) close(*fd), *fd = -1;
                if (k) dist_forward_lines(b, stderr, eof, ch[r].last_err, sizeof ch[r].last_err);
                else if (!ordered || r == shown) dist_forward_lines(b, stdout, eof, NULL, 0);
            }
        while (ordered && shown < np && ch[shown].out_fd < 0) {
            shown++;
            if (shown < np) dist_forward_lines(&ch[shown].out_buf, stdout, ch[shown].out_fd < 0, NULL, 0);
        }
        for (int r = 0; r < np; r++) {
            if (ch[r].done) continue;
            int st;
            if (waitpid(ch[r].pid, &st, WNOHANG) != ch[r].pid) continue;
            ch[r].done = true, ch[r].status = st;
            running--;
            bool bad = !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            if (bad && first_bad < 0) {
                first_bad = r;
                for (int o = 0; o < np; o++)
                    if (!ch[o].done) kill(ch[o].pid, SIGTERM);
                term_at = lwb_now();
            }
        }
        if (term_at > 0 && lwb_now() - term_at > 10) {
            for (int o = 0; o < np; o++)
                if (!ch[o].done) kill(ch[o].pid, SIGKILL);
            term_at = lwb_now() + 1e9;
        }
    }
    // Drain what is left (a rank's last lines may follow its exit).
    for (int r = 0; r < np; r++) {
        for (int k = 0; k < 2; k++) {
            int fd = k ? ch[r].err_fd : ch[r].out_fd;
            struct lwb_str *b = k ? &ch[r].err_buf : &ch[r].out_buf;
            char buf[65536];
            ssize_t n;
            while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0) str_append(b, buf, (size_t)n);
            if (fd >= 0) close(fd);
            if (k) dist_forward_lines(b, stderr, true, ch[r].last_err, sizeof ch[r].last_err);
            else dist_forward_lines(b, stdout, true, NULL, 0);
        }
    }
    if (first_bad < 0) {
        // Every rank succeeded: the server thread ends once their connections closed.
        dist_server_join(&srv);
        exit(LWB_EXIT_OK);
    }
    char how[128];
    dist_describe_end(ch[first_bad].status, how, sizeof how);
    int code = WIFEXITED(ch[first_bad].status) ? WEXITSTATUS(ch[first_bad].status) : LWB_EXIT_FAILURE;
    fprintf(stderr, "lwb: rank %d of %d %s%s%s; the other ranks were ended\n", first_bad, np, how,
            ch[first_bad].last_err[0] ? "; its last error: " : "", ch[first_bad].last_err);
    fflush(stderr);
    _exit(code ? code : LWB_EXIT_FAILURE); // the server thread may still wait on dead ranks
}

// ---------------------------------------------------------------------------------------------
// The NCCL communicator

// One collective of a forward, for the message when it does not complete.
struct comm_op {
    CUevent done;      // recorded after the op (eager forwards only)
    char what[96];     // "layer 5 MoE: all-gather of routed tokens"
};

struct lwb_comm {
    ncclComm_t comm;
    int rank, world_size;
    double timeout_s;
    struct lwb_dist *dist;
    struct comm_op *ops;      // ring of the latest eager ops
    int nops, next_op;
    char last[96];            // the latest op enqueued (also inside graph capture)
};

static struct lwb_comm *comm_current; // for the fatal hook and the wait hook

static void comm_abort_hook(void *arg) {
    struct lwb_comm *c = arg;
    if (c && c->comm) lwb_nccl.ncclCommAbort(c->comm);
    if (c) c->comm = NULL;
}

// The first op recorded but not complete, or the latest enqueued.
static const char *comm_stuck_op(struct lwb_comm *c) {
    for (int i = 0; i < c->nops; i++) {
        struct comm_op *o = &c->ops[(c->next_op + i) % c->nops];
        if (o->what[0] && lwb_cu.cuEventQuery(o->done) == CUDA_ERROR_NOT_READY) return o->what;
    }
    return c->last[0] ? c->last : "a collective";
}

// Called by stream_wait while it polls: NCCL's asynchronous errors, and the comm timeout.
static void comm_wait_hook(double waited_s, const char *what) {
    struct lwb_comm *c = comm_current;
    if (!c || !c->comm) return;
    ncclResult_t async = ncclSuccess;
    lwb_nccl.ncclCommGetAsyncError(c->comm, &async);
    if (async != ncclSuccess && async != ncclInProgress)
        lwb_fatal("on %s, device %d: NCCL reported %s during %s (in %s); aborting", lwb_proc.host, lwb_proc.device,
                  nccl_errstr(async), what, comm_stuck_op(c));
    if (waited_s > c->timeout_s)
        lwb_fatal("on %s, device %d: %s did not finish within %.0f s (--comm-timeout), waiting in %s; a peer rank is "
                  "stuck or gone; aborting",
                  lwb_proc.host, lwb_proc.device, what, c->timeout_s, comm_stuck_op(c));
}

// The communicator of the run (every rank calls it; NCCL's own wait is watched by the watchdog).
static void comm_init(struct lwb_comm *c, struct lwb_dist *d) {
    *c = (struct lwb_comm){.rank = d->rank, .world_size = d->world_size, .timeout_s = d->comm_timeout_s, .dist = d};
    if (!d->have_nccl_id) LWB_BUG("comm_init without an NCCL id");
    nccl_load();
    ncclUniqueId id;
    memcpy(id.internal, d->nccl_id, sizeof id.internal);
    dist_activity(d, "creating the NCCL communicator (ncclCommInitRank)", d->comm_timeout_s);
    NCCL_CHECK(lwb_nccl.ncclCommInitRank(&c->comm, d->world_size, id, d->rank));
    dist_activity(d, "setting up", 0);
    c->nops = 16;
    c->ops = xcalloc((size_t)c->nops, sizeof *c->ops);
    for (int i = 0; i < c->nops; i++) CU_CHECK(lwb_cu.cuEventCreate(&c->ops[i].done, CU_EVENT_DISABLE_TIMING));
    comm_current = c;
    lwb_proc.on_fatal = comm_abort_hook;
    lwb_proc.on_fatal_arg = c;
    lwb_proc.wait_hook = comm_wait_hook;
    lwb_proc.wait_floor_s = c->timeout_s;
}

static void comm_destroy(struct lwb_comm *c) {
    if (!c->comm) return;
    comm_current = NULL;
    lwb_proc.on_fatal = NULL;
    lwb_proc.wait_hook = NULL;
    NCCL_CHECK(lwb_nccl.ncclCommDestroy(c->comm));
    c->comm = NULL;
    for (int i = 0; i < c->nops; i++) lwb_cu.cuEventDestroy(c->ops[i].done);
    free(c->ops);
}

// After an op: remember it (and outside graph capture, when it completes).
static void comm_note(struct lwb_comm *c, CUstream s, const char *what) {
    snprintf(c->last, sizeof c->last, "%s", what);
    CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;
    CU_CHECK(lwb_cu.cuStreamIsCapturing(s, &st));
    if (st != CU_STREAM_CAPTURE_STATUS_NONE) return;
    struct comm_op *o = &c->ops[c->next_op];
    c->next_op = (c->next_op + 1) % c->nops;
    snprintf(o->what, sizeof o->what, "%s", what);
    CU_CHECK(lwb_cu.cuEventRecord(o->done, s));
}

// Each rank's `count` elements of `send` gathered in rank order into `recv` (world x count).
static void comm_allgather(struct lwb_comm *c, CUdeviceptr send, CUdeviceptr recv, size_t count,
                           ncclDataType_t t, CUstream s, const char *what) {
    NCCL_CHECK(lwb_nccl.ncclAllGather((const void *)send, (void *)recv, count, t, c->comm, (cudaStream_t)s));
    comm_note(c, s, what);
}

// Several all-gathers as one group (one launch).
struct comm_gather {
    CUdeviceptr send, recv;
    size_t count;
    ncclDataType_t type;
};
static void comm_allgather_group(struct lwb_comm *c, const struct comm_gather *g, int n, CUstream s,
                                 const char *what) {
    NCCL_CHECK(lwb_nccl.ncclGroupStart());
    for (int i = 0; i < n; i++)
        NCCL_CHECK(lwb_nccl.ncclAllGather((const void *)g[i].send, (void *)g[i].recv, g[i].count, g[i].type, c->comm,
                                          (cudaStream_t)s));
    NCCL_CHECK(lwb_nccl.ncclGroupEnd());
    comm_note(c, s, what);
}

// recv (count) = sum over ranks of block `rank` of send (world x count).
static void comm_reduce_scatter(struct lwb_comm *c, CUdeviceptr send, CUdeviceptr recv, size_t count,
                                ncclDataType_t t, CUstream s, const char *what) {
    NCCL_CHECK(lwb_nccl.ncclReduceScatter((const void *)send, (void *)recv, count, t, ncclSum, c->comm,
                                          (cudaStream_t)s));
    comm_note(c, s, what);
}

static void comm_allreduce(struct lwb_comm *c, CUdeviceptr buf, size_t count, ncclDataType_t t, CUstream s,
                           const char *what) {
    NCCL_CHECK(lwb_nccl.ncclAllReduce((const void *)buf, (void *)buf, count, t, ncclSum, c->comm, (cudaStream_t)s));
    comm_note(c, s, what);
}

// One buffer of an all-to-all: rows of `row_bytes`.
struct comm_part {
    CUdeviceptr send, recv;
    size_t row_bytes;
};

// Rows to and from every rank, for each part: send_rows[j] rows from row send_off[j] go to rank j,
// recv_rows[j] rows from rank j land at row recv_off[j] (grouped send/recv, one launch).
static void comm_alltoallv(struct lwb_comm *c, const struct comm_part *parts, int nparts, const int *send_rows,
                           const int *send_off, const int *recv_rows, const int *recv_off, CUstream s,
                           const char *what) {
    NCCL_CHECK(lwb_nccl.ncclGroupStart());
    for (int j = 0; j < c->world_size; j++)
        for (int k = 0; k < nparts; k++) {
            const struct comm_part *p = &parts[k];
            if (send_rows[j])
                NCCL_CHECK(lwb_nccl.ncclSend((const void *)(p->send + (size_t)send_off[j] * p->row_bytes),
                                             (size_t)send_rows[j] * p->row_bytes, ncclInt8, j, c->comm,
                                             (cudaStream_t)s));
            if (recv_rows[j])
                NCCL_CHECK(lwb_nccl.ncclRecv((void *)(p->recv + (size_t)recv_off[j] * p->row_bytes),
                                             (size_t)recv_rows[j] * p->row_bytes, ncclInt8, j, c->comm,
                                             (cudaStream_t)s));
        }
    NCCL_CHECK(lwb_nccl.ncclGroupEnd());
    comm_note(c, s, what);
}
