/*
 * reflector: the kernel-path floor for bench/compare.
 *
 * A minimal NTP responder of the classic recvmmsg/sendmmsg design: one thread,
 * one blocking UDP socket, a batch of datagrams per recvmmsg (MSG_WAITFORONE),
 * and the batch's replies in one sendmmsg. Each mode 3 request gets a mode 4
 * reply of 48 bytes: LI 0, the request's version, stratum 1, the request's
 * poll, refid LOCL, origin = the request's transmit timestamp (copied byte for
 * byte), receive (T2) = the kernel's software RX timestamp (SO_TIMESTAMPING,
 * SCM_TIMESTAMPING ts[0]) and transmit (T3) = CLOCK_REALTIME read once per
 * batch, just before sendmmsg. Anything else is dropped. No access control,
 * no rate limiting, no statistics: it is what an NTP server cannot beat with
 * the same kernel path.
 *
 *   gcc -O2 -Wall -Wextra -o reflector bench/reflector.c
 *   reflector ADDRESS PORT [SECONDS]
 *
 * ADDRESS is a literal IPv4 address. It exits by itself after SECONDS
 * (default 3600) and on SIGTERM/SIGINT. It never touches the clock.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define PKT 1024 /* room for requests with extension fields; only 48 bytes are answered */
#define NTP_LEN 48
#define NTP_UNIX_OFFSET 2208988800ULL
#define RCVBUF (1 << 20) /* what tachyond asks for (rcvbuf), so both see the same queue */

static unsigned char rx_buf[BATCH][PKT];
static unsigned char tx_buf[BATCH][NTP_LEN];
static char rx_ctl[BATCH][256];
static struct sockaddr_in rx_addr[BATCH];
static struct mmsghdr rx_msgs[BATCH], tx_msgs[BATCH];
static struct iovec rx_iov[BATCH], tx_iov[BATCH];

static void put_ntp(unsigned char *p, const struct timespec *ts)
{
    uint64_t secs = (uint64_t)ts->tv_sec + NTP_UNIX_OFFSET;
    uint64_t frac = ((uint64_t)ts->tv_nsec << 32) / 1000000000ULL;
    uint32_t s = htonl((uint32_t)secs), f = htonl((uint32_t)frac);
    memcpy(p, &s, 4);
    memcpy(p + 4, &f, 4);
}

/* The software RX stamp of a received datagram, or 0 when it has none. */
static int rx_stamp(struct msghdr *m, struct timespec *out)
{
    struct cmsghdr *c;
    for (c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPING) {
            struct scm_timestamping ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            if (ts.ts[0].tv_sec || ts.ts[0].tv_nsec) {
                *out = ts.ts[0];
                return 1;
            }
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s ADDRESS PORT [SECONDS]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &local.sin_addr) != 1) {
        fprintf(stderr, "reflector: not an IPv4 address: %s\n", argv[1]);
        return 2;
    }
    unsigned seconds = argc == 4 ? (unsigned)atoi(argv[3]) : 3600;
    alarm(seconds ? seconds : 3600); /* SIGALRM ends it: every run is bounded */

    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("reflector: socket");
        return 1;
    }
    int one = 1, rcvbuf = RCVBUF;
    int flags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof flags) < 0) {
        perror("reflector: SO_TIMESTAMPING");
        return 1;
    }
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) {
        perror("reflector: bind");
        return 1;
    }

    for (int i = 0; i < BATCH; i++) {
        rx_iov[i] = (struct iovec){.iov_base = rx_buf[i], .iov_len = PKT};
        tx_iov[i] = (struct iovec){.iov_base = tx_buf[i], .iov_len = NTP_LEN};
    }
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            struct msghdr *m = &rx_msgs[i].msg_hdr;
            m->msg_name = &rx_addr[i];
            m->msg_namelen = sizeof rx_addr[i];
            m->msg_iov = &rx_iov[i];
            m->msg_iovlen = 1;
            m->msg_control = rx_ctl[i];
            m->msg_controllen = sizeof rx_ctl[i];
            m->msg_flags = 0;
        }
        int n = recvmmsg(fd, rx_msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("reflector: recvmmsg");
            return 1;
        }
        int out = 0;
        for (int i = 0; i < n; i++) {
            const unsigned char *q = rx_buf[i];
            unsigned version = (q[0] >> 3) & 7;
            struct timespec t2;
            if (rx_msgs[i].msg_len < NTP_LEN || (q[0] & 7) != 3 || version < 1 || version > 4)
                continue;
            if (!rx_stamp(&rx_msgs[i].msg_hdr, &t2))
                clock_gettime(CLOCK_REALTIME, &t2);
            unsigned char *r = tx_buf[out];
            memset(r, 0, NTP_LEN);
            r[0] = (unsigned char)((version << 3) | 4); /* LI 0, VN, mode 4 */
            r[1] = 1;                                  /* stratum */
            r[2] = q[2];                               /* poll */
            r[3] = (unsigned char)-20;                 /* precision ~1 us */
            memcpy(r + 12, "LOCL", 4);                 /* refid */
            put_ntp(r + 16, &t2);                      /* reference time */
            memcpy(r + 24, q + 40, 8);                 /* origin = request's transmit */
            put_ntp(r + 32, &t2);                      /* receive (T2) */
            struct msghdr *m = &tx_msgs[out].msg_hdr;
            memset(m, 0, sizeof *m);
            m->msg_name = &rx_addr[i];
            m->msg_namelen = rx_msgs[i].msg_hdr.msg_namelen;
            m->msg_iov = &tx_iov[out];
            m->msg_iovlen = 1;
            out++;
        }
        if (out == 0)
            continue;
        struct timespec t3;
        clock_gettime(CLOCK_REALTIME, &t3);
        for (int i = 0; i < out; i++)
            put_ntp(tx_buf[i] + 40, &t3); /* transmit (T3) */
        int sent = 0;
        while (sent < out) {
            int k = sendmmsg(fd, tx_msgs + sent, (unsigned)(out - sent), 0);
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                break; /* a full queue or an unreachable peer: drop the rest */
            }
            sent += k;
        }
    }
}
