/* drain: the floor for receiving VXLAN in user space. The same socket options as the agent
 * (SO_TIMESTAMPNS, SO_RXQ_OVFL, a large SO_RCVBUF) and the same wake-up policy as the agent's
 * worker: poll, then up to 64 recvmmsg batches of 256; a short batch that is not empty means
 * traffic is flowing but we are ahead of it, so sleep 1 ms, let the next batch accumulate and
 * read again; an empty batch ends the round (back to poll).
 * It touches nothing and writes nothing, so whatever the agent does on top costs more.
 * -w FILE: also write each batch's datagrams to FILE with one writev (no framing, no split): the
 * floor for receiving *and* writing the bytes, i.e. what is left of the agent's cost once the
 * file system's share is taken out.
 * Exits after -n datagrams or -t seconds of silence; prints "received=<n> drops=<d> wakeups=<w>".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define B 256        /* batch.MAX_BATCH */
#define ROUNDS 64    /* agent.worker_main: batches before looking at anything else */
#define COALESCE_NS 1000000L /* agent.COALESCE_S */
#define SZ 65536

int main(int argc, char **argv) {
    int port = 4789, opt;
    long want = 0;
    int idle_ms = 3000, out = -1;
    while ((opt = getopt(argc, argv, "p:n:t:w:")) != -1) {
        if (opt == 'w') {
            out = open(optarg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (out < 0) { perror("open"); return 1; }
        } else if (opt == 'p') port = atoi(optarg);
        else if (opt == 'n') want = atol(optarg);
        else if (opt == 't') idle_ms = atoi(optarg) * 1000;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0), one = 1, rcv = 64 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    setsockopt(fd, SOL_SOCKET, 35 /* SO_TIMESTAMPNS */, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, 40 /* SO_RXQ_OVFL */, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a)) { perror("bind"); return 1; }
    printf("ready\n");
    fflush(stdout);
    static struct mmsghdr m[B];
    static struct iovec iov[B];
    static char ctrl[B][64];
    static struct iovec wv[B];
    char *buf = malloc((size_t)B * SZ);
    long got = 0, wakeups = 0;
    uint32_t drops = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    const struct timespec coalesce = {0, COALESCE_NS};
    while (!want || got < want) {
        if (poll(&p, 1, idle_ms) == 0 && got) break;
        wakeups++;
        for (int round = 0; round < ROUNDS; round++) {
            for (int i = 0; i < B; i++) {
                iov[i].iov_base = buf + (size_t)i * SZ;
                iov[i].iov_len = SZ;
                memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
                m[i].msg_hdr.msg_iov = &iov[i];
                m[i].msg_hdr.msg_iovlen = 1;
                m[i].msg_hdr.msg_control = ctrl[i];
                m[i].msg_hdr.msg_controllen = sizeof ctrl[i];
            }
            int n = recvmmsg(fd, m, B, MSG_DONTWAIT, NULL);
            if (n <= 0) break;
            if (n > 0) {
                got += n;
                if (out >= 0) {
                    for (int i = 0; i < n; i++) {
                        wv[i].iov_base = iov[i].iov_base;
                        wv[i].iov_len = m[i].msg_len;
                    }
                    if (writev(out, wv, n) < 0) { perror("writev"); return 1; }
                }
                struct msghdr *h = &m[n - 1].msg_hdr;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c))
                    if (c->cmsg_type == 40) memcpy(&drops, CMSG_DATA(c), 4);
            }
            if (n < B) nanosleep(&coalesce, NULL);
        }
    }
    printf("received=%ld drops=%u wakeups=%ld\n", got, drops, wakeups);
    return 0;
}
