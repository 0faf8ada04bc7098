/* The receive-and-frame loop in C: recvmmsg a batch, validate VXLAN, recover orig_len, frame
 * each packet as a pcapng EPB (or a pcap record) into one buffer per VNI.
 *
 * Byte-for-byte the same output as receiver.Receiver.recv_batch (a test holds the two to it);
 * this exists because Python spends ~3 us per datagram on recvmsg + parsing + framing, and the
 * agent has to keep up with a mirror target's line rate on one core.
 *
 * recv_batch(fd, max, pcapng, snaplen, keep) ->
 *   (groups: {vni: (bytes, packets, wire_bytes, first_ts, last_ts)},
 *    malformed: (short_header, bad_flags, short_frame, receive_truncated),
 *    kept: [(ts, datagram, (host, port), reason)], datagrams, kernel_drops)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_BATCH 256
#define DGRAM_MAX 65536
#define MAX_GROUPS 64
#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif
#ifndef SCM_TIMESTAMPNS
#define SCM_TIMESTAMPNS 35
#endif

static uint8_t *g_bufs;
static struct mmsghdr g_msgs[MAX_BATCH];
static struct iovec g_iov[MAX_BATCH];
static struct sockaddr_storage g_addr[MAX_BATCH];
static char g_ctrl[MAX_BATCH][CMSG_SPACE(sizeof(struct timespec)) + CMSG_SPACE(sizeof(uint32_t))];

typedef struct {
    uint32_t vni;
    uint8_t *buf;
    size_t len, cap;
    long long packets, wire;
    uint64_t first_ts, last_ts;
} group_t;

static group_t g_groups[MAX_GROUPS];

static int grow(group_t *g, size_t need) {
    if (g->len + need <= g->cap) return 0;
    size_t cap = g->cap ? g->cap : 65536;
    while (cap < g->len + need) cap *= 2;
    uint8_t *nb = realloc(g->buf, cap);
    if (!nb) return -1;
    g->buf = nb;
    g->cap = cap;
    return 0;
}

static inline uint32_t orig_length(const uint8_t *f, uint32_t caplen) {
    uint32_t p = 12;
    uint32_t et = 0;
    int tags;
    for (tags = 0; tags < 3; tags++) {
        if (p + 2 > caplen) return caplen;
        et = ((uint32_t)f[p] << 8) | f[p + 1];
        if (et != 0x8100 && et != 0x88A8 && et != 0x9100) break;
        p += 4;
    }
    if (tags == 3) return caplen;
    uint32_t l3 = p + 2, ip_len;
    if (et == 0x0800) {
        if (l3 + 4 > caplen || (f[l3] >> 4) != 4) return caplen;
        ip_len = ((uint32_t)f[l3 + 2] << 8) | f[l3 + 3];
        if (ip_len < 20) return caplen;
    } else if (et == 0x86DD) {
        if (l3 + 6 > caplen || (f[l3] >> 4) != 6) return caplen;
        uint32_t payload = ((uint32_t)f[l3 + 4] << 8) | f[l3 + 5];
        if (payload == 0) return caplen;
        ip_len = 40 + payload;
    } else {
        return caplen;
    }
    uint32_t wire = l3 + ip_len;
    return wire > caplen ? wire : caplen;
}

static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); } /* little-endian hosts only */

static PyObject *addr_tuple(const struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
    }
    return Py_BuildValue("(si)", host, port);
}

static PyObject *recv_batch(PyObject *self, PyObject *args) {
    int fd, maxn, pcapng, keep;
    unsigned int snaplen;
    if (!PyArg_ParseTuple(args, "iipIp", &fd, &maxn, &pcapng, &snaplen, &keep)) return NULL;
    if (maxn < 1 || maxn > MAX_BATCH) maxn = MAX_BATCH;
    if (!snaplen) snaplen = DGRAM_MAX;
    if (!g_bufs) {
        g_bufs = malloc((size_t)MAX_BATCH * DGRAM_MAX);
        if (!g_bufs) return PyErr_NoMemory();
    }
    for (int i = 0; i < maxn; i++) {
        g_iov[i].iov_base = g_bufs + (size_t)i * DGRAM_MAX;
        g_iov[i].iov_len = DGRAM_MAX;
        memset(&g_msgs[i].msg_hdr, 0, sizeof g_msgs[i].msg_hdr);
        g_msgs[i].msg_hdr.msg_iov = &g_iov[i];
        g_msgs[i].msg_hdr.msg_iovlen = 1;
        g_msgs[i].msg_hdr.msg_name = &g_addr[i];
        g_msgs[i].msg_hdr.msg_namelen = sizeof g_addr[i];
        g_msgs[i].msg_hdr.msg_control = g_ctrl[i];
        g_msgs[i].msg_hdr.msg_controllen = sizeof g_ctrl[i];
    }
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = recvmmsg(fd, g_msgs, (unsigned)maxn, MSG_DONTWAIT, NULL);
    Py_END_ALLOW_THREADS
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) n = 0;
        else return PyErr_SetFromErrno(PyExc_OSError);
    }

    int ngroups = 0;
    long long bad[4] = {0, 0, 0, 0};
    long long drops = 0; /* the kernel attaches SO_RXQ_OVFL only once the counter is non-zero */
    PyObject *kept = PyList_New(0);
    if (!kept) return NULL;
    static const char *reasons[4] = {"short_header", "bad_flags", "short_frame", "receive_truncated"};

    for (int i = 0; i < n; i++) {
        struct msghdr *h = &g_msgs[i].msg_hdr;
        const uint8_t *d = g_iov[i].iov_base;
        uint32_t len = g_msgs[i].msg_len;
        uint64_t ts = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
            if (c->cmsg_level != SOL_SOCKET) continue;
            if (c->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec t;
                memcpy(&t, CMSG_DATA(c), sizeof t);
                ts = (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
            } else if (c->cmsg_type == SO_RXQ_OVFL) {
                uint32_t v;
                memcpy(&v, CMSG_DATA(c), 4);
                drops = v;
            }
        }
        if (!ts) {
            struct timespec t;
            clock_gettime(CLOCK_REALTIME, &t);
            ts = (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
        }
        int reason = -1;
        if (h->msg_flags & MSG_TRUNC) reason = 3;
        else if (len < 8) reason = 0;
        else if (!(d[0] & 0x08)) reason = 1;
        else if (len - 8 < 14) reason = 2;
        if (reason >= 0) {
            bad[reason]++;
            if (keep) {
                PyObject *item = Py_BuildValue("(Ky#Ns)", (unsigned long long)ts, (const char *)d,
                                               (Py_ssize_t)(len > DGRAM_MAX ? DGRAM_MAX : len),
                                               addr_tuple(&g_addr[i]), reasons[reason]);
                if (!item || PyList_Append(kept, item) < 0) { Py_XDECREF(item); Py_DECREF(kept); return NULL; }
                Py_DECREF(item);
            }
            continue;
        }
        uint32_t vni = ((uint32_t)d[4] << 16) | ((uint32_t)d[5] << 8) | d[6];
        const uint8_t *frame = d + 8;
        uint32_t caplen = len - 8;
        uint32_t orig = orig_length(frame, caplen);
        if (caplen > snaplen) caplen = snaplen;
        group_t *g = NULL;
        for (int k = 0; k < ngroups; k++)
            if (g_groups[k].vni == vni) { g = &g_groups[k]; break; }
        if (!g) {
            if (ngroups == MAX_GROUPS) { /* absurdly many VNIs in one batch: stop the batch here */
                n = i;
                break;
            }
            g = &g_groups[ngroups++];
            g->vni = vni;
            g->len = 0;
            g->packets = g->wire = 0;
            g->first_ts = ts;
        }
        size_t need = pcapng ? 32 + ((caplen + 3) & ~3u) : 16 + caplen;
        if (grow(g, need) < 0) { Py_DECREF(kept); return PyErr_NoMemory(); }
        uint8_t *o = g->buf + g->len;
        if (pcapng) {
            uint32_t total = (uint32_t)need;
            put32(o, 6); put32(o + 4, total); put32(o + 8, 0);
            put32(o + 12, (uint32_t)(ts >> 32)); put32(o + 16, (uint32_t)ts);
            put32(o + 20, caplen); put32(o + 24, orig);
            memcpy(o + 28, frame, caplen);
            memset(o + 28 + caplen, 0, ((caplen + 3) & ~3u) - caplen);
            put32(o + need - 4, total);
        } else {
            put32(o, (uint32_t)(ts / 1000000000ull)); put32(o + 4, (uint32_t)(ts % 1000000000ull));
            put32(o + 8, caplen); put32(o + 12, orig);
            memcpy(o + 16, frame, caplen);
        }
        g->len += need;
        g->packets++;
        g->wire += orig;
        g->last_ts = ts;
    }

    PyObject *groups = PyDict_New();
    if (!groups) { Py_DECREF(kept); return NULL; }
    for (int k = 0; k < ngroups; k++) {
        group_t *g = &g_groups[k];
        PyObject *v = Py_BuildValue("(y#LLKK)", (const char *)g->buf, (Py_ssize_t)g->len, g->packets, g->wire,
                                    (unsigned long long)g->first_ts, (unsigned long long)g->last_ts);
        PyObject *key = PyLong_FromUnsignedLong(g->vni);
        if (!v || !key || PyDict_SetItem(groups, key, v) < 0) {
            Py_XDECREF(v); Py_XDECREF(key); Py_DECREF(groups); Py_DECREF(kept);
            return NULL;
        }
        Py_DECREF(v);
        Py_DECREF(key);
        if (g->cap > (4u << 20)) { free(g->buf); g->buf = NULL; g->cap = 0; } /* don't hoard a burst's memory */
    }
    return Py_BuildValue("(N(LLLL)NiL)", groups, bad[0], bad[1], bad[2], bad[3], kept, n, drops);
}

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS, "Receive, decapsulate and frame one batch of VXLAN datagrams."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastrecv", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastrecv(void) { return PyModule_Create(&module); }
