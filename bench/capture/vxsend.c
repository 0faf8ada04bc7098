/* vxsend: send a pool of UDP payloads (VXLAN datagrams) with sendmmsg, at a fixed rate.
 *
 *   vxsend -d 10.99.0.2 -p 4789 -s 10.99.0.1 -f pool.bin -n 2000000 [-r pps] [-b batch]
 *          [-w pid -q max_queue_bytes]
 *
 * The pool file is a sequence of records: u32 length (host order), then that many bytes. The
 * records are sent in order, cycling, until -n datagrams went out. -r paces to a rate (0: as
 * fast as possible). -w/-q is flow control for the tests: before each batch, wait while the
 * receive queue of the UDP socket on the destination port in process <pid>'s network namespace
 * (/proc/<pid>/net/udp, rx_queue) holds more than -q bytes, so a slow receiver never drops.
 * Prints "sent=<n> seconds=<t> pps=<r>" when done.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 1024

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long rx_queue(int pid, int port) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/net/udp", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long best = 0;
    if (!fgets(line, sizeof line, f)) { fclose(f); return -1; }
    while (fgets(line, sizeof line, f)) {
        unsigned lport = 0;
        unsigned long tx = 0, rx = 0;
        char *colon = strchr(line, ':');
        if (!colon) continue;
        /* "  sl  local_address rem_address   st tx_queue:rx_queue ..." */
        if (sscanf(colon + 1, " %*x:%x %*x:%*x %*x %lx:%lx", &lport, &tx, &rx) == 3 && (int)lport == port)
            if ((long)rx > best) best = (long)rx;
    }
    fclose(f);
    return best;
}

int main(int argc, char **argv) {
    const char *dst = "127.0.0.1", *src = NULL, *pool_path = NULL;
    int port = 4789, batch = 64, watch_pid = 0, opt;
    long count = 1000000, max_queue = 1 << 20;
    double rate = 0;
    while ((opt = getopt(argc, argv, "d:p:s:f:n:r:b:w:q:")) != -1) {
        switch (opt) {
        case 'd': dst = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': src = optarg; break;
        case 'f': pool_path = optarg; break;
        case 'n': count = atol(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 'w': watch_pid = atoi(optarg); break;
        case 'q': max_queue = atol(optarg); break;
        default: fprintf(stderr, "usage: see the comment at the top of vxsend.c\n"); return 2;
        }
    }
    if (!pool_path || batch < 1 || batch > MAX_BATCH) { fprintf(stderr, "need -f pool, 1<=-b<=%d\n", MAX_BATCH); return 2; }

    FILE *pf = fopen(pool_path, "rb");
    if (!pf) { perror(pool_path); return 1; }
    size_t cap = 1024, n_pool = 0;
    struct iovec *pool = malloc(cap * sizeof *pool);
    uint32_t len;
    while (fread(&len, 4, 1, pf) == 1) {
        if (n_pool == cap) { cap *= 2; pool = realloc(pool, cap * sizeof *pool); }
        void *buf = malloc(len ? len : 1);
        if (len && fread(buf, 1, len, pf) != len) { fprintf(stderr, "truncated pool\n"); return 1; }
        pool[n_pool].iov_base = buf;
        pool[n_pool].iov_len = len;
        n_pool++;
    }
    fclose(pf);
    if (!n_pool) { fprintf(stderr, "empty pool\n"); return 1; }

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int sndbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (src) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        inet_pton(AF_INET, src, &sa.sin_addr);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa)) { perror("bind"); return 1; }
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, dst, &to.sin_addr);
    if (connect(fd, (struct sockaddr *)&to, sizeof to)) { perror("connect"); return 1; }

    struct mmsghdr msgs[MAX_BATCH];
    memset(msgs, 0, sizeof msgs);
    long sent = 0;
    size_t next = 0;
    double t0 = now();
    while (sent < count) {
        int k = batch;
        if (count - sent < k) k = (int)(count - sent);
        if (rate > 0) {
            /* Sleep, never spin, until the batch is due: a benchmark subtracts the sender's
             * CPU, so pacing must cost (almost) nothing. Being late is caught up on by the
             * next batches, since due times count from the start. */
            double due = t0 + (sent + k) / rate;
            if (now() < due) {
                struct timespec ts = {(time_t)due, (long)((due - (double)(time_t)due) * 1e9)};
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
            }
        }
        if (watch_pid) {
            long q;
            while ((q = rx_queue(watch_pid, port)) > max_queue) usleep(200);
        }
        for (int i = 0; i < k; i++) {
            msgs[i].msg_hdr.msg_iov = &pool[next];
            msgs[i].msg_hdr.msg_iovlen = 1;
            next = (next + 1) % n_pool;
        }
        int done = 0;
        while (done < k) {
            int r = sendmmsg(fd, msgs + done, k - done, 0);
            if (r < 0) {
                if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN) { usleep(50); continue; }
                if (errno == ECONNREFUSED) continue; /* an ICMP port unreachable from a restart */
                perror("sendmmsg");
                return 1;
            }
            done += r;
        }
        sent += k;
    }
    double dt = now() - t0;
    printf("sent=%ld seconds=%.3f pps=%.0f\n", sent, dt, sent / (dt > 0 ? dt : 1));
    return 0;
}
