/* The receive-and-frame loop in C: recvmmsg a batch, validate VXLAN, check the outer source,
 * recover orig_len, frame each packet as a pcapng EPB (or a pcap record) into one bytes object
 * per VNI.
 *
 * Byte-for-byte the same output as receiver.PyReceiver.recv_batch, whose framing is
 * pcapng.epb_header / pcapng.pcap_record_header (a test holds the two to it); this exists because
 * Python spends ~3 us per datagram on recvmsg + parsing + framing, and the agent has to keep up
 * with a mirror target's line rate on one core.
 *
 * All state lives in the Receiver object, so two receivers on two threads never share a buffer
 * (the GIL is released around recvmmsg).
 *
 * Receiver(fd, pcapng, snaplen, keep, hold)
 *   .recv_batch(max) ->
 *     (groups: {vni: (bytes, packets, wire_bytes, first_ts, last_ts)},
 *      rejected: (short_header, bad_flags, short_frame, receive_truncated, spoofed),
 *      kept: [(ts, datagram, (host, port), reason index)], datagrams, kernel_drops, held_full)
 *   .take_held() -> groups: every VNI's held records (hold only), the table emptied.
 *   .set_hold([vni, ...]): hold only these VNIs (sessions that have their files to themselves);
 *     others go out batch by batch.
 *   .set_sources({vni: [ipv4 address as 4 bytes, ...]}): a VNI in the map accepts datagrams
 *     only from those outer source addresses; the rest count as spoofed.
 *
 * Two passes over the batch: the first classifies each datagram and sizes each VNI's output,
 * the second frames straight into one exactly sized bytes object per VNI, so each frame is
 * copied once (receive buffer -> the bytes the writer hands to writev).
 *
 * hold: a VNI's records are framed into a buffer of HOLD_BYTES that outlives the batch and is
 * handed out only when the next batch's records no longer fit (at most one group per VNI per
 * batch, records in order), or by take_held(). At a few packets per VNI per batch (100 sessions
 * at a mirror target's rates), the writer's per-group work, not the per-packet work, was most of
 * the agent's user time; held, it is paid once per HOLD_BYTES. At most HOLD_VNIS VNIs are held
 * (HOLD_VNIS * HOLD_BYTES of memory); a VNI beyond that is handed out batch by batch, and
 * held_full tells the caller to take_held() so the table starts again.
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
#define GROUP_SLOTS 512 /* a power of two, at least twice MAX_BATCH: every VNI of a batch fits */
#define HOLD_BYTES (64 * 1024)
#define HOLD_VNIS 256
#define HOLD_SLOTS 512 /* a power of two, twice HOLD_VNIS */
#define EPB_OVERHEAD 32
#define PCAP_RECORD_HEADER_LEN 16
#define BT_EPB 6
#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif
#ifndef SCM_TIMESTAMPNS
#define SCM_TIMESTAMPNS 35
#endif

/* Indexes into vxlan.RECEIVE_REASONS, which names them: the order of the rejected tuple, and a
 * kept datagram's reason. */
enum { R_SHORT_HEADER, R_BAD_FLAGS, R_SHORT_FRAME, R_RECEIVE_TRUNCATED, R_SPOOFED, N_REASONS };

typedef struct {
    uint32_t vni;
    int used; /* == the receiver's batch generation when the slot belongs to this batch */
    size_t len;
    long long packets, wire;
    uint64_t first_ts, last_ts;
    uint8_t *out;
} group_t;

typedef struct {
    uint32_t vni;        /* per datagram: its VNI */
    int reason;          /* -1 accepted, else the rejection */
    uint64_t ts;
    uint32_t caplen, orig;
    group_t *g;
} meta_t;

typedef struct {
    uint32_t vni;
    int used;         /* the slot belongs to a VNI (until take_held empties the table) */
    PyObject *buf;    /* bytes of capacity cap, or NULL while nothing is held */
    size_t len, cap;
    long long packets, wire;
    uint64_t first_ts, last_ts;
} held_t;

/* An open-addressing set of 64-bit keys (0 is free: stored keys have bit 63 set). */
typedef struct {
    uint64_t *keys;
    size_t cap; /* a power of two, or 0 */
} set64_t;

static inline size_t mix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k;
}

static int set_has(const set64_t *s, uint64_t key) {
    if (!s->cap) return 0;
    key |= 1ULL << 63;
    for (size_t i = mix64(key) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->keys[i] == key) return 1;
        if (!s->keys[i]) return 0;
    }
}

static void set_add(set64_t *s, uint64_t key) {
    key |= 1ULL << 63;
    for (size_t i = mix64(key) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->keys[i] == key) return;
        if (!s->keys[i]) { s->keys[i] = key; return; }
    }
}

typedef struct {
    PyObject_HEAD
    int fd, pcapng, keep, hold;
    uint32_t snaplen;
    int generation;
    uint8_t *bufs;
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    struct sockaddr_storage addr[MAX_BATCH];
    char ctrl[MAX_BATCH][CMSG_SPACE(sizeof(struct timespec)) + CMSG_SPACE(sizeof(uint32_t))];
    meta_t meta[MAX_BATCH];
    group_t groups[GROUP_SLOTS];
    group_t *order[MAX_BATCH]; /* the batch's groups in order of first appearance */
    set64_t checked;           /* VNIs with a source check */
    set64_t allowed;           /* (vni << 32 | ipv4) pairs */
    Py_ssize_t nchecked;       /* VNIs in checked: without any (and without keep) the kernel
                                  need not copy each datagram's source address out */
    set64_t holdable;          /* the VNIs hold applies to */
    held_t held[HOLD_SLOTS];
    int nheld;                 /* slots in use */
} Receiver;

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

/* The outer source as an IPv4 address (IPv4-mapped IPv6 too), or -1 when it has none. */
static int64_t source_v4(const struct sockaddr_storage *ss) {
    if (ss->ss_family == AF_INET) return ntohl(((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr);
    if (ss->ss_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr.s6_addr;
        static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (!memcmp(a, prefix, 12)) return ((uint32_t)a[12] << 24) | ((uint32_t)a[13] << 16) | ((uint32_t)a[14] << 8) | a[15];
    }
    return -1;
}

static group_t *group_for(Receiver *self, uint32_t vni, int *ngroups) {
    for (size_t i = mix64(vni) & (GROUP_SLOTS - 1);; i = (i + 1) & (GROUP_SLOTS - 1)) {
        group_t *g = &self->groups[i];
        if (g->used != self->generation) {
            g->used = self->generation;
            g->vni = vni;
            g->len = 0;
            g->packets = g->wire = 0;
            g->first_ts = g->last_ts = 0;
            g->out = NULL;
            self->order[(*ngroups)++] = g;
            return g;
        }
        if (g->vni == vni) return g;
    }
}

static int Receiver_init(Receiver *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "pcapng", "snaplen", "keep", "hold", NULL};
    int fd, pcapng = 1, keep = 0, hold = 0;
    unsigned int snaplen = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|pIpp", kwlist, &fd, &pcapng, &snaplen, &keep, &hold)) return -1;
    self->fd = fd;
    self->pcapng = pcapng;
    self->keep = keep;
    self->hold = hold;
    self->snaplen = snaplen ? snaplen : DGRAM_MAX;
    if (!self->bufs) {
        self->bufs = malloc((size_t)MAX_BATCH * DGRAM_MAX);
        if (!self->bufs) { PyErr_NoMemory(); return -1; }
    }
    return 0;
}

static void Receiver_dealloc(Receiver *self) {
    for (int k = 0; k < HOLD_SLOTS; k++) Py_CLEAR(self->held[k].buf);
    free(self->bufs);
    free(self->checked.keys);
    free(self->allowed.keys);
    free(self->holdable.keys);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static PyObject *Receiver_set_sources(Receiver *self, PyObject *arg) {
    if (!PyDict_Check(arg)) { PyErr_SetString(PyExc_TypeError, "set_sources: a dict {vni: [4-byte address]}"); return NULL; }
    Py_ssize_t npairs = 0, pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(arg, &pos, &k, &v)) {
        Py_ssize_t n = PySequence_Size(v);
        if (n < 0) return NULL;
        npairs += n;
    }
    set64_t checked = {calloc(pow2_at_least(2 * (size_t)PyDict_Size(arg) + 1), 8), pow2_at_least(2 * (size_t)PyDict_Size(arg) + 1)};
    set64_t allowed = {calloc(pow2_at_least(2 * (size_t)npairs + 1), 8), pow2_at_least(2 * (size_t)npairs + 1)};
    if (!checked.keys || !allowed.keys) { free(checked.keys); free(allowed.keys); return PyErr_NoMemory(); }
    pos = 0;
    while (PyDict_Next(arg, &pos, &k, &v)) {
        unsigned long vni = PyLong_AsUnsignedLong(k);
        if (PyErr_Occurred()) goto fail;
        set_add(&checked, vni);
        PyObject *seq = PySequence_Fast(v, "set_sources: addresses must be a sequence");
        if (!seq) goto fail;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            PyObject *a = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyBytes_Check(a) || PyBytes_GET_SIZE(a) != 4) {
                Py_DECREF(seq);
                PyErr_SetString(PyExc_ValueError, "set_sources: an address is 4 bytes (IPv4, network order)");
                goto fail;
            }
            const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(a);
            uint32_t ip = ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
            set_add(&allowed, ((uint64_t)vni << 32) | ip);
        }
        Py_DECREF(seq);
    }
    free(self->checked.keys);
    free(self->allowed.keys);
    self->checked = checked;
    self->nchecked = PyDict_Size(arg);
    self->allowed = allowed;
    Py_RETURN_NONE;
fail:
    free(checked.keys);
    free(allowed.keys);
    return NULL;
}

/* The held slot of a VNI, or NULL when the table holds HOLD_VNIS others. */
static held_t *held_for(Receiver *self, uint32_t vni) {
    for (size_t i = mix64(vni) & (HOLD_SLOTS - 1);; i = (i + 1) & (HOLD_SLOTS - 1)) {
        held_t *h = &self->held[i];
        if (!h->used) {
            if (self->nheld >= HOLD_VNIS) return NULL;
            memset(h, 0, sizeof *h);
            h->used = 1;
            h->vni = vni;
            self->nheld++;
            return h;
        }
        if (h->vni == vni) return h;
    }
}

/* Hand a held buffer out as groups[vni] (cut to its length); the slot holds nothing after. */
static int emit_held(held_t *h, PyObject *groups) {
    PyObject *buf = h->buf;
    h->buf = NULL;
    if (_PyBytes_Resize(&buf, (Py_ssize_t)h->len) < 0) return -1;
    PyObject *v = Py_BuildValue("(NLLKK)", buf, h->packets, h->wire, (unsigned long long)h->first_ts,
                                (unsigned long long)h->last_ts);
    PyObject *key = PyLong_FromUnsignedLong(h->vni);
    int rc = (!v || !key) ? -1 : PyDict_SetItem(groups, key, v);
    Py_XDECREF(v);
    Py_XDECREF(key);
    h->len = h->cap = 0;
    h->packets = h->wire = 0;
    h->first_ts = h->last_ts = 0;
    return rc;
}

static PyObject *Receiver_set_hold(Receiver *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "set_hold: a list of VNIs");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    size_t cap = pow2_at_least(2 * (size_t)n + 1);
    set64_t s = {calloc(cap, 8), cap};
    if (!s.keys) { Py_DECREF(seq); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long vni = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred()) { Py_DECREF(seq); free(s.keys); return NULL; }
        set_add(&s, vni);
    }
    Py_DECREF(seq);
    free(self->holdable.keys);
    self->holdable = s;
    Py_RETURN_NONE;
}

static PyObject *Receiver_take_held(Receiver *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *groups = PyDict_New();
    if (!groups) return NULL;
    int rc = 0;
    for (int k = 0; k < HOLD_SLOTS; k++) {
        held_t *h = &self->held[k];
        if (h->used && h->buf && rc == 0) rc = emit_held(h, groups);
        Py_CLEAR(h->buf);
        h->used = 0;
    }
    self->nheld = 0;
    if (rc < 0) { Py_DECREF(groups); return NULL; }
    return groups;
}

static PyObject *Receiver_recv_batch(Receiver *self, PyObject *args) {
    int maxn = MAX_BATCH;
    if (!PyArg_ParseTuple(args, "|i", &maxn)) return NULL;
    if (maxn < 1 || maxn > MAX_BATCH) maxn = MAX_BATCH;
    int names = self->nchecked > 0 || self->keep;
    for (int i = 0; i < maxn; i++) {
        self->iov[i].iov_base = self->bufs + (size_t)i * DGRAM_MAX;
        self->iov[i].iov_len = DGRAM_MAX;
        memset(&self->msgs[i].msg_hdr, 0, sizeof self->msgs[i].msg_hdr);
        self->msgs[i].msg_hdr.msg_iov = &self->iov[i];
        self->msgs[i].msg_hdr.msg_iovlen = 1;
        self->msgs[i].msg_hdr.msg_name = names ? &self->addr[i] : NULL;
        self->msgs[i].msg_hdr.msg_namelen = names ? sizeof self->addr[i] : 0;
        self->msgs[i].msg_hdr.msg_control = self->ctrl[i];
        self->msgs[i].msg_hdr.msg_controllen = sizeof self->ctrl[i];
    }
    int n;
    /* Another thread must not use this receiver meanwhile: it is one socket's state. */
    Py_BEGIN_ALLOW_THREADS
    n = recvmmsg(self->fd, self->msgs, (unsigned)maxn, MSG_DONTWAIT, NULL);
    Py_END_ALLOW_THREADS
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) n = 0;
        else return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (++self->generation == 0) { /* wrapped: forget every slot */
        for (int k = 0; k < GROUP_SLOTS; k++) self->groups[k].used = 0;
        self->generation = 1;
    }

    int ngroups = 0;
    long long bad[N_REASONS] = {0};
    long long drops = 0; /* the kernel attaches SO_RXQ_OVFL only once the counter is non-zero */
    int pcapng = self->pcapng;
    uint32_t snap = self->snaplen;

    /* Pass 1: classify, size. */
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &self->msgs[i].msg_hdr;
        const uint8_t *d = self->iov[i].iov_base;
        uint32_t len = self->msgs[i].msg_len;
        meta_t *m = &self->meta[i];
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
        m->ts = ts;
        m->g = NULL;
        /* The source is checked before the frame's length: the kernel filter cuts a forged
         * datagram to its headers, and it must still count as spoofed. */
        int reason = -1;
        if (h->msg_flags & MSG_TRUNC) reason = R_RECEIVE_TRUNCATED;
        else if (len < 8) reason = R_SHORT_HEADER;
        else if (!(d[0] & 0x08)) reason = R_BAD_FLAGS;
        if (reason < 0) {
            uint32_t vni = ((uint32_t)d[4] << 16) | ((uint32_t)d[5] << 8) | d[6];
            m->vni = vni;
            if (set_has(&self->checked, vni)) {
                int64_t src = source_v4(&self->addr[i]);
                if (src < 0 || !set_has(&self->allowed, ((uint64_t)vni << 32) | (uint64_t)src)) reason = R_SPOOFED;
            }
            if (reason < 0 && len - 8 < 14) reason = R_SHORT_FRAME;
        }
        m->reason = reason;
        if (reason >= 0) {
            bad[reason]++;
            continue;
        }
        uint32_t caplen = len - 8;
        m->orig = orig_length(d + 8, caplen);
        if (caplen > snap) caplen = snap;
        m->caplen = caplen;
        group_t *g = group_for(self, m->vni, &ngroups);
        if (!g->packets) g->first_ts = ts;
        g->len += pcapng ? EPB_OVERHEAD + ((caplen + 3) & ~3u) : PCAP_RECORD_HEADER_LEN + caplen;
        g->packets++;
        g->wire += m->orig;
        g->last_ts = ts;
        m->g = g;
    }

    /* Pass 2: one bytes object per VNI, framed in place: this batch's own, or the VNI's held
     * buffer (handed out first when this batch's records do not fit in it). */
    PyObject *groups = PyDict_New(), *kept = PyList_New(0);
    PyObject **outs = NULL;
    held_t **holds = NULL;
    if (!groups || !kept) goto fail;
    outs = calloc((size_t)(ngroups ? ngroups : 1), sizeof *outs);
    holds = calloc((size_t)(ngroups ? ngroups : 1), sizeof *holds);
    if (!outs || !holds) { PyErr_NoMemory(); goto fail; }
    for (int k = 0; k < ngroups; k++) {
        group_t *g = self->order[k];
        held_t *h = self->hold && set_has(&self->holdable, g->vni) ? held_for(self, g->vni) : NULL;
        if (h) {
            if (h->buf && h->len + g->len > h->cap && emit_held(h, groups) < 0) goto fail;
            if (!h->buf) {
                h->cap = g->len > HOLD_BYTES ? g->len : HOLD_BYTES;
                h->buf = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)h->cap);
                if (!h->buf) goto fail;
                h->first_ts = g->first_ts;
            }
            holds[k] = h;
            g->out = (uint8_t *)PyBytes_AS_STRING(h->buf) + h->len;
        } else {
            outs[k] = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)g->len);
            if (!outs[k]) goto fail;
            g->out = (uint8_t *)PyBytes_AS_STRING(outs[k]);
        }
        g->len = 0;
    }
    for (int i = 0; i < n; i++) {
        meta_t *m = &self->meta[i];
        const uint8_t *d = self->iov[i].iov_base;
        if (m->reason >= 0) {
            if (self->keep) {
                uint32_t len = self->msgs[i].msg_len;
                PyObject *item = Py_BuildValue("(Ky#Ni)", (unsigned long long)m->ts, (const char *)d,
                                               (Py_ssize_t)(len > DGRAM_MAX ? DGRAM_MAX : len),
                                               addr_tuple(&self->addr[i]), m->reason);
                if (!item || PyList_Append(kept, item) < 0) { Py_XDECREF(item); goto fail; }
                Py_DECREF(item);
            }
            continue;
        }
        group_t *g = m->g;
        uint8_t *o = g->out + g->len;
        uint32_t caplen = m->caplen;
        uint64_t ts = m->ts;
        if (pcapng) {
            uint32_t padded = (caplen + 3) & ~3u, total = EPB_OVERHEAD + padded;
            put32(o, BT_EPB); put32(o + 4, total); put32(o + 8, 0);
            put32(o + 12, (uint32_t)(ts >> 32)); put32(o + 16, (uint32_t)ts);
            put32(o + 20, caplen); put32(o + 24, m->orig);
            memcpy(o + 28, d + 8, caplen);
            memset(o + 28 + caplen, 0, padded - caplen);
            put32(o + 28 + padded, total);
            g->len += total;
        } else {
            put32(o, (uint32_t)(ts / 1000000000ull)); put32(o + 4, (uint32_t)(ts % 1000000000ull));
            put32(o + 8, caplen); put32(o + 12, m->orig);
            memcpy(o + 16, d + 8, caplen);
            g->len += PCAP_RECORD_HEADER_LEN + caplen;
        }
    }
    for (int k = 0; k < ngroups; k++) {
        group_t *g = self->order[k];
        held_t *h = holds[k];
        if (h) {
            h->len += g->len;
            h->packets += g->packets;
            h->wire += g->wire;
            h->last_ts = g->last_ts;
            continue;
        }
        PyObject *v = Py_BuildValue("(OLLKK)", outs[k], g->packets, g->wire, (unsigned long long)g->first_ts,
                                    (unsigned long long)g->last_ts);
        PyObject *key = PyLong_FromUnsignedLong(g->vni);
        if (!v || !key || PyDict_SetItem(groups, key, v) < 0) { Py_XDECREF(v); Py_XDECREF(key); goto fail; }
        Py_DECREF(v);
        Py_DECREF(key);
    }
    for (int k = 0; k < ngroups; k++) Py_XDECREF(outs[k]);
    free(outs);
    free(holds);
    return Py_BuildValue("(N(LLLLL)NiLi)", groups, bad[0], bad[1], bad[2], bad[3], bad[4], kept, n, drops,
                         self->nheld >= HOLD_VNIS);
fail:
    if (outs) {
        for (int k = 0; k < ngroups; k++) Py_XDECREF(outs[k]);
        free(outs);
    }
    free(holds);
    Py_XDECREF(groups);
    Py_XDECREF(kept);
    return NULL;
}

static PyMethodDef Receiver_methods[] = {
    {"recv_batch", (PyCFunction)Receiver_recv_batch, METH_VARARGS,
     "Receive, check, decapsulate and frame one batch of VXLAN datagrams."},
    {"set_hold", (PyCFunction)Receiver_set_hold, METH_O, "Hold only these VNIs' records (hold only)."},
    {"take_held", (PyCFunction)Receiver_take_held, METH_NOARGS,
     "Hand out every VNI's held records and empty the table (hold only)."},
    {"set_sources", (PyCFunction)Receiver_set_sources, METH_O,
     "Accept a VNI's datagrams only from these outer IPv4 source addresses."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "trafficmirror.capture._fastrecv.Receiver",
    .tp_basicsize = sizeof(Receiver),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One socket's receive state: buffers, per-batch groups, the source check.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Receiver_init,
    .tp_dealloc = (destructor)Receiver_dealloc,
    .tp_methods = Receiver_methods,
};

/* split_pods(buf, pcapng, index, per_pod) -> (runs, filtered, filtered_bytes): demux.split in C,
 * output for output the same (a test holds the two to it). ``buf`` holds one VNI's framed records;
 * ``index`` maps an inner IPv4/IPv6 address (4 or 16 bytes) to its pod's index. ``runs`` is a list
 * of (pod, extra, bytes, packets, wire_bytes, first_ts, last_ts), each pod's runs in order: a run
 * is consecutive records of one pod's file that are all the packet's own copy, or all extra ones
 * (the destination pod's copy of a packet between two selected pods). per_pod 0: one stream
 * (pod 0) with every packet that matches any pod, once. */
typedef struct {
    Py_ssize_t start, end;
    long pod;
    int extra;
    uint64_t ts;
    uint32_t orig;
} entry_t;

static long pod_of(PyObject *index, const uint8_t *addr, Py_ssize_t len, int *err) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)addr, len);
    if (!key) { *err = 1; return -1; }
    PyObject *v = PyDict_GetItemWithError(index, key);
    Py_DECREF(key);
    if (!v) {
        if (PyErr_Occurred()) *err = 1;
        return -1;
    }
    long pod = PyLong_AsLong(v);
    if (pod < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "pod indexes are not negative");
        *err = 1;
        return -1;
    }
    return pod;
}

static int cmp_entry(const void *a, const void *b) {
    const entry_t *x = a, *y = b;
    if (x->pod != y->pod) return x->pod < y->pod ? -1 : 1;
    return x->start < y->start ? -1 : (x->start > y->start ? 1 : 0);
}

static PyObject *split_pods(PyObject *self, PyObject *args) {
    Py_buffer view;
    int pcapng, per_pod;
    PyObject *index;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*pO!p", &view, &pcapng, &PyDict_Type, &index, &per_pod)) return NULL;
    const uint8_t *b = view.buf;
    Py_ssize_t n = view.len, pos = 0, count = 0;
    long long filtered = 0, filtered_bytes = 0;
    Py_ssize_t cap = 2 * (n / PCAP_RECORD_HEADER_LEN + 1);
    entry_t *entries = PyMem_Malloc(sizeof(entry_t) * (size_t)cap);
    PyObject *runs = NULL;
    int err = 0;
    if (!entries) { PyBuffer_Release(&view); return PyErr_NoMemory(); }
    while (pos < n) {
        Py_ssize_t frame, end;
        uint32_t caplen, orig;
        uint64_t ts;
        if (pcapng) {
            if (pos + 28 > n) break;
            uint32_t total, hi, lo;
            memcpy(&total, b + pos + 4, 4);
            memcpy(&hi, b + pos + 12, 4);
            memcpy(&lo, b + pos + 16, 4);
            memcpy(&caplen, b + pos + 20, 4);
            memcpy(&orig, b + pos + 24, 4);
            ts = ((uint64_t)hi << 32) | lo;
            frame = pos + 28;
            end = pos + (Py_ssize_t)total;
        } else {
            if (pos + 16 > n) break;
            uint32_t sec, nsec;
            memcpy(&sec, b + pos, 4);
            memcpy(&nsec, b + pos + 4, 4);
            memcpy(&caplen, b + pos + 8, 4);
            memcpy(&orig, b + pos + 12, 4);
            ts = (uint64_t)sec * 1000000000ULL + nsec;
            frame = pos + 16;
            end = frame + (Py_ssize_t)caplen;
        }
        if (end <= pos || end > n || frame + (Py_ssize_t)caplen > n) {
            PyErr_SetString(PyExc_ValueError, "a framed record runs past the buffer");
            err = 1;
            break;
        }
        /* The inner addresses, after up to two VLAN tags. */
        Py_ssize_t et = frame + 12, fend = frame + caplen;
        long src = -1, dst = -1;
        for (int tags = 0; tags < 3 && et + 2 <= fend; tags++) {
            uint16_t type = (uint16_t)(b[et] << 8 | b[et + 1]);
            if (tags < 2 && (type == 0x8100 || type == 0x88a8 || type == 0x9100)) { et += 4; continue; }
            Py_ssize_t l3 = et + 2;
            if (type == 0x0800 && l3 + 20 <= fend) {
                src = pod_of(index, b + l3 + 12, 4, &err);
                if (!err) dst = pod_of(index, b + l3 + 16, 4, &err);
            } else if (type == 0x86dd && l3 + 40 <= fend) {
                src = pod_of(index, b + l3 + 8, 16, &err);
                if (!err) dst = pod_of(index, b + l3 + 24, 16, &err);
            }
            break;
        }
        if (err) break;
        if (src < 0 && dst < 0) {
            filtered++;
            filtered_bytes += orig;
            pos = end;
            continue;
        }
        entry_t e = {pos, end, 0, 0, ts, orig};
        if (!per_pod) {
            entries[count++] = e;
        } else if (src >= 0) {
            e.pod = src;
            entries[count++] = e;
            if (dst >= 0 && dst != src) {
                e.pod = dst;
                e.extra = 1;
                entries[count++] = e;
            }
        } else {
            e.pod = dst;
            entries[count++] = e;
        }
        pos = end;
    }
    if (!err) {
        qsort(entries, (size_t)count, sizeof(entry_t), cmp_entry); /* by pod, then record order */
        runs = PyList_New(0);
        if (!runs) err = 1;
    }
    for (Py_ssize_t i = 0; !err && i < count;) {
        Py_ssize_t j = i, size = 0;
        long long wire = 0;
        while (j < count && entries[j].pod == entries[i].pod && entries[j].extra == entries[i].extra) {
            size += entries[j].end - entries[j].start;
            wire += entries[j].orig;
            j++;
        }
        PyObject *out = PyBytes_FromStringAndSize(NULL, size);
        if (!out) { err = 1; break; }
        char *w = PyBytes_AS_STRING(out);
        for (Py_ssize_t k = i; k < j; k++) {
            memcpy(w, b + entries[k].start, (size_t)(entries[k].end - entries[k].start));
            w += entries[k].end - entries[k].start;
        }
        PyObject *run = Py_BuildValue("(liNnLKK)", entries[i].pod, entries[i].extra, out, j - i, wire,
                                      (unsigned long long)entries[i].ts, (unsigned long long)entries[j - 1].ts);
        if (!run || PyList_Append(runs, run) < 0) { Py_XDECREF(run); err = 1; break; }
        Py_DECREF(run);
        i = j;
    }
    PyMem_Free(entries);
    PyBuffer_Release(&view);
    if (err) { Py_XDECREF(runs); return NULL; }
    return Py_BuildValue("(NLL)", runs, filtered, filtered_bytes);
}

static PyMethodDef module_methods[] = {
    {"split_pods", split_pods, METH_VARARGS, "Split one VNI's framed records by pod (demux.split)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_fastrecv", .m_size = -1, .m_methods = module_methods};

PyMODINIT_FUNC PyInit__fastrecv(void) {
    if (PyType_Ready(&ReceiverType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ReceiverType);
    if (PyModule_AddObject(m, "Receiver", (PyObject *)&ReceiverType) < 0) {
        Py_DECREF(&ReceiverType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
