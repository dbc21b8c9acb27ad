/*
 * dbfloor: the floor of a database lookup behind a Wazuh-style socket.
 *
 * keygate answers a Wazuh request from a database in two hops (Wazuh ->
 * keygate -> the database) where mariadb-slap and pgbench make one. This
 * is the least any two-hop responder can do, written with the databases'
 * own client libraries (libmariadb, libpq, the ones the tools use): THREADS
 * plain threads, each with its own database connection and the query
 * prepared once, blocking in accept() on one Unix listener; then one
 * recv(), the prepared statement executed with the requested value bound,
 * its rows read, one send() of the JSON reply, close(). No async runtime,
 * no validation, no peer check, no log, no audit line, no JSON escaping:
 * a yardstick for bench.sh's mysql and postgres rows, never a server.
 *
 * Usage:
 *   dbfloor SOCKET THREADS mysql HOST PORT USER DATABASE [UNIX_SOCKET] -- BY_ID BY_IP
 *   dbfloor SOCKET THREADS postgres CONNINFO -- BY_ID BY_IP
 * BY_ID and BY_IP are the queries (one bind parameter: ? or $1), returning
 * id, name, ip, key. Built by bench.sh:
 *   gcc -O2 -pthread dbfloor.c $(mariadb_config --cflags --libs) -I$(pg_config --includedir) -lpq
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <mysql.h>

enum { FIELDS = 4, FIELD_MAX = 512, REQUEST_MAX = 1024, REPLY_MAX = 4096 };

static int listener;
static int is_mysql;
static char **conn_args;
static const char *by_id, *by_ip;

static void die(const char *what, const char *detail) {
    fprintf(stderr, "dbfloor: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

/* The reply for a row's four fields, or for no row. */
static int reply(char *out, char fields[FIELDS][FIELD_MAX], int found) {
    if (!found)
        return snprintf(out, REPLY_MAX, "{\"error\":1,\"message\":\"agent not found\"}");
    return snprintf(out, REPLY_MAX, "{\"error\":0,\"data\":{\"id\":\"%s\",\"name\":\"%s\",\"ip\":\"%s\",\"key\":\"%s\"}}",
                    fields[0], fields[1], fields[2], fields[3]);
}

/* One thread's MariaDB connection and its two prepared statements. */
struct my {
    MYSQL *db;
    MYSQL_STMT *stmt[2];
};

static MYSQL_STMT *my_prepare(MYSQL *db, const char *sql) {
    MYSQL_STMT *stmt = mysql_stmt_init(db);
    if (!stmt || mysql_stmt_prepare(stmt, sql, strlen(sql)))
        die("prepare", mysql_error(db));
    return stmt;
}

static void my_open(struct my *m) {
    unsigned port = (unsigned)atoi(conn_args[1]);
    const char *usock = conn_args[4] && strcmp(conn_args[4], "--") ? conn_args[4] : NULL;
    m->db = mysql_init(NULL);
    if (!m->db || !mysql_real_connect(m->db, conn_args[0], conn_args[2], NULL, conn_args[3], port, usock, 0))
        die("connect", m->db ? mysql_error(m->db) : "out of memory");
    m->stmt[0] = my_prepare(m->db, by_id);
    m->stmt[1] = my_prepare(m->db, by_ip);
}

/* Executes the statement with `value` bound; 1 and the fields if a row came. */
static int my_lookup(struct my *m, int by, const char *value, char fields[FIELDS][FIELD_MAX]) {
    MYSQL_STMT *stmt = m->stmt[by];
    unsigned long in_len = strlen(value), lens[FIELDS];
    my_bool nulls[FIELDS];
    MYSQL_BIND in, out[FIELDS];
    memset(&in, 0, sizeof in);
    in.buffer_type = MYSQL_TYPE_STRING;
    in.buffer = (void *)value;
    in.buffer_length = in_len;
    in.length = &in_len;
    memset(out, 0, sizeof out);
    for (int i = 0; i < FIELDS; i++) {
        out[i].buffer_type = MYSQL_TYPE_STRING;
        out[i].buffer = fields[i];
        out[i].buffer_length = FIELD_MAX - 1;
        out[i].length = &lens[i];
        out[i].is_null = &nulls[i];
    }
    if (mysql_stmt_bind_param(stmt, &in) || mysql_stmt_execute(stmt) || mysql_stmt_bind_result(stmt, out))
        die("execute", mysql_stmt_error(stmt));
    int found = 0, rc;
    /* Every row is read, as keygate reads a second one to refuse two. */
    while ((rc = mysql_stmt_fetch(stmt)) == 0 || rc == MYSQL_DATA_TRUNCATED) {
        for (int i = 0; i < FIELDS; i++)
            fields[i][nulls[i] ? 0 : (lens[i] < FIELD_MAX ? lens[i] : FIELD_MAX - 1)] = 0;
        found++;
    }
    if (rc != MYSQL_NO_DATA)
        die("fetch", mysql_stmt_error(stmt));
    return found == 1;
}

static PGconn *pg_open(void) {
    PGconn *pg = PQconnectdb(conn_args[0]);
    if (PQstatus(pg) != CONNECTION_OK)
        die("connect", PQerrorMessage(pg));
    const char *names[2] = {"by_id", "by_ip"}, *sql[2] = {by_id, by_ip};
    for (int i = 0; i < 2; i++) {
        PGresult *r = PQprepare(pg, names[i], sql[i], 1, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die("prepare", PQerrorMessage(pg));
        PQclear(r);
    }
    return pg;
}

static int pg_lookup(PGconn *pg, int by, const char *value, char fields[FIELDS][FIELD_MAX]) {
    const char *values[1] = {value};
    PGresult *r = PQexecPrepared(pg, by ? "by_ip" : "by_id", 1, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("execute", PQerrorMessage(pg));
    int found = PQntuples(r);
    if (found == 1)
        for (int i = 0; i < FIELDS; i++)
            snprintf(fields[i], FIELD_MAX, "%s", PQgetvalue(r, 0, i));
    PQclear(r);
    return found == 1;
}

static void *serve(void *unused) {
    (void)unused;
    struct my m = {0};
    PGconn *pg = NULL;
    if (is_mysql) {
        mysql_thread_init();
        my_open(&m);
    } else {
        pg = pg_open();
    }
    char request[REQUEST_MAX + 1], out[REPLY_MAX], fields[FIELDS][FIELD_MAX];
    for (;;) {
        int c = accept(listener, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            die("accept", strerror(errno));
        }
        ssize_t n = recv(c, request, REQUEST_MAX, 0);
        int len;
        if (n > 3 && request[2] == ':' && (!memcmp(request, "id", 2) || !memcmp(request, "ip", 2))) {
            request[n] = 0;
            int by = request[1] == 'p';
            int found = is_mysql ? my_lookup(&m, by, request + 3, fields) : pg_lookup(pg, by, request + 3, fields);
            len = reply(out, fields, found);
        } else {
            len = snprintf(out, REPLY_MAX, "{\"error\":1,\"message\":\"bad request\"}");
        }
        if (send(c, out, (size_t)len, MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET)
            die("send", strerror(errno));
        close(c);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 8)
        die("usage: dbfloor SOCKET THREADS mysql HOST PORT USER DATABASE [UNIX_SOCKET] -- BY_ID BY_IP"
            " | dbfloor SOCKET THREADS postgres CONNINFO -- BY_ID BY_IP", NULL);
    int threads = atoi(argv[2]);
    is_mysql = !strcmp(argv[3], "mysql");
    if (!is_mysql && strcmp(argv[3], "postgres"))
        die("unknown database", argv[3]);
    conn_args = argv + 4;
    int sep = 4;
    while (sep < argc && strcmp(argv[sep], "--"))
        sep++;
    int conn_ok = is_mysql ? (sep == 8 || sep == 9) : sep == 5;
    if (!conn_ok || argc != sep + 3 || threads < 1)
        die("bad arguments (see the usage at the top of dbfloor.c)", NULL);
    by_id = argv[sep + 1];
    by_ip = argv[sep + 2];
    if (is_mysql && mysql_library_init(0, NULL, NULL))
        die("mysql_library_init", NULL);

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof addr.sun_path)
        die("socket path too long", argv[1]);
    strcpy(addr.sun_path, argv[1]);
    listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1024))
        die("listen", strerror(errno));
    pthread_t t;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t, NULL, serve, NULL))
            die("pthread_create", NULL);
    pause();
    return 0;
}
