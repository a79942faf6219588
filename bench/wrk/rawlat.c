/*
 * rawlat: a closed-loop HTTP/1.1 load client that records the latency of every
 * request, with no coordinated-omission correction (wrk applies one).
 *
 *   rawlat HOST PORT PATH BODY_FILE CONNECTIONS DURATION_S
 *
 * One thread, epoll, keep-alive connections; each connection POSTs BODY_FILE
 * (Content-Type: application/json), waits for the whole response, records the
 * time from the first byte written to the last byte read, and sends again until
 * DURATION_S have passed. Prints one JSON object on stdout: requests, errors,
 * duration_s, rps, and p50/p90/p99/max latency in microseconds.
 *
 * Responses must carry Content-Length or be chunked; a closed connection is
 * counted as an error and reopened. Only for 127.0.0.1 benchmarks.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (1 << 16)

typedef struct {
    int fd;
    size_t got;
    double start_us;
    char buf[BUF_SIZE];
} conn_t;

static char *request;
static size_t request_len;
static struct sockaddr_in addr;
static double *lat;
static size_t n_lat, cap_lat;
static long errors;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int send_request(conn_t *c) {
    c->got = 0;
    c->start_us = now_us();
    for (size_t sent = 0; sent < request_len;) {
        ssize_t w = write(c->fd, request + sent, request_len - sent);
        if (w <= 0) return -1;
        sent += (size_t)w;
    }
    return 0;
}

static int open_conn(int ep, conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    c->fd = fd;
    return send_request(c);
}

static void close_conn(int ep, conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

/* 1: a whole response is in the buffer (*status set); 0: need more; -1: bad. */
static int response_done(conn_t *c, int *status) {
    c->buf[c->got] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (end == NULL) return 0;
    if (sscanf(c->buf, "HTTP/1.%*d %d", status) != 1) return -1;
    size_t head = (size_t)(end - c->buf) + 4;
    for (char *line = strstr(c->buf, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "content-length:", 15) == 0) {
            size_t len = strtoul(line + 17, NULL, 10);
            return c->got >= head + len ? 1 : 0;
        }
        if (strncasecmp(line + 2, "transfer-encoding:", 18) == 0) {
            return strstr(end, "\r\n0\r\n\r\n") != NULL ? 1 : 0;
        }
    }
    return -1;
}

static void record(double us) {
    if (n_lat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 1 << 16;
        lat = realloc(lat, cap_lat * sizeof *lat);
    }
    lat[n_lat++] = us;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double p) {
    if (n_lat == 0) return 0;
    size_t i = (size_t)(p / 100.0 * (double)n_lat);
    return lat[i >= n_lat ? n_lat - 1 : i];
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: rawlat HOST PORT PATH BODY_FILE CONNECTIONS DURATION_S\n");
        return 2;
    }
    FILE *f = fopen(argv[4], "rb");
    if (f == NULL) { perror(argv[4]); return 2; }
    char body[BUF_SIZE];
    size_t body_len = fread(body, 1, sizeof body, f);
    fclose(f);
    request = malloc(body_len + 512);
    request_len = (size_t)sprintf(request,
        "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
        "Content-Length: %zu\r\n\r\n", argv[3], argv[1], argv[2], body_len);
    memcpy(request + request_len, body, body_len);
    request_len += body_len;

    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    int n = atoi(argv[5]);
    double duration_us = atof(argv[6]) * 1e6;

    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)n, sizeof *conns);
    for (int i = 0; i < n; i++) {
        if (open_conn(ep, &conns[i]) < 0) { perror("connect"); return 1; }
    }
    struct epoll_event events[256];
    double t0 = now_us(), deadline = t0 + duration_us;
    int open = n;
    while (open > 0) {
        double t = now_us();
        int timeout_ms = t >= deadline ? 10 : (int)((deadline - t) / 1000) + 1;
        int k = epoll_wait(ep, events, 256, timeout_ms);
        if (now_us() >= deadline + 5e6) break; /* stragglers: give up */
        for (int e = 0; e < k; e++) {
            conn_t *c = events[e].data.ptr;
            ssize_t r = read(c->fd, c->buf + c->got, BUF_SIZE - 1 - c->got);
            if (r <= 0) {
                errors++;
                close_conn(ep, c);
                if (now_us() >= deadline || open_conn(ep, c) < 0) open--;
                continue;
            }
            c->got += (size_t)r;
            int status = 0, done = response_done(c, &status);
            if (done == 0 && c->got < BUF_SIZE - 1) continue;
            double end = now_us();
            if (done == 1 && status >= 200 && status < 300) record(end - c->start_us);
            else errors++;
            if (end >= deadline || send_request(c) < 0) {
                close_conn(ep, c);
                open--;
            }
        }
    }
    double elapsed_s = (now_us() - t0) / 1e6;
    qsort(lat, n_lat, sizeof *lat, cmp);
    printf("{\"requests\": %zu, \"errors\": %ld, \"duration_s\": %.3f, \"rps\": %.1f, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f}\n",
           n_lat, errors, elapsed_s, (double)n_lat / elapsed_s, pct(50), pct(90), pct(99),
           n_lat ? lat[n_lat - 1] : 0.0);
    return 0;
}
