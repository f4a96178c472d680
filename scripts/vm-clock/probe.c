/*
 * probe: the guest side of scripts/vm-clock-test. Runs only inside the KVM
 * guest, whose kernel clock is the one under test; never on the host.
 *
 *   probe serve ADDRESS PORT   answer time queries with the guest's kernel state
 *   probe shift SECONDS        step CLOCK_REALTIME by SECONDS (ADJ_SETOFFSET)
 *   probe tick USEC            set the kernel tick (10000 is nominal at USER_HZ 100)
 *   probe state                print the kernel state once (the same text as serve)
 *
 * serve: a mode 3 request gets a mode 4 reply whose 48-byte header carries
 * receive (T2) = the kernel's RX timestamp (SO_TIMESTAMPNS) and transmit (T3) =
 * CLOCK_REALTIME just before sending, so the host measures the guest's clock
 * whatever the daemon under test is doing (stopped, unsynchronized, killed).
 * After the header comes one line of text read right after T3: the three clocks
 * (realtime, monotonic, monotonic raw, ns) and adjtimex (tick, freq, status,
 * maxerror, esterror, tai, state). realtime - monotonic changes only on a step or a
 * leap second; realtime - raw is the sum of every frequency correction and
 * step. Build: gcc -O2 -static -o probe probe.c
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
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

#define NTP_LEN 48
#define NTP_UNIX_OFFSET 2208988800ULL

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void put_ntp(unsigned char *p, const struct timespec *ts)
{
    uint32_t sec = (uint32_t)((uint64_t)ts->tv_sec + NTP_UNIX_OFFSET);
    uint32_t frac = (uint32_t)(((uint64_t)ts->tv_nsec << 32) / 1000000000ULL);
    sec = htonl(sec);
    frac = htonl(frac);
    memcpy(p, &sec, 4);
    memcpy(p + 4, &frac, 4);
}

/* One line: clocks first (read back to back), then the kernel's NTP state. */
static int state_line(char *out, size_t len)
{
    struct timex tx;
    /* Emulated clock reads take microseconds, and the vCPU may be
     * descheduled between two: bracket realtime so that all three values
     * refer to the same instant, and keep the tightest of a few tries. */
    int64_t real = 0, mono = 0, raw = 0, best = INT64_MAX;
    for (int i = 0; i < 5; i++) {
        int64_t raw1 = clock_ns(CLOCK_MONOTONIC_RAW);
        int64_t mono1 = clock_ns(CLOCK_MONOTONIC);
        int64_t r = clock_ns(CLOCK_REALTIME);
        int64_t mono2 = clock_ns(CLOCK_MONOTONIC);
        int64_t raw2 = clock_ns(CLOCK_MONOTONIC_RAW);
        if (raw2 - raw1 < best) {
            best = raw2 - raw1;
            real = r;
            mono = mono1 + (mono2 - mono1) / 2;
            raw = raw1 + (raw2 - raw1) / 2;
        }
    }
    memset(&tx, 0, sizeof tx);
    int state = adjtimex(&tx);
    return snprintf(out, len,
                    "real=%lld mono=%lld raw=%lld tick=%ld freq=%ld status=%d maxerror=%ld "
                    "esterror=%ld tai=%d state=%d\n",
                    (long long)real, (long long)mono, (long long)raw, (long)tx.tick,
                    (long)tx.freq, tx.status, (long)tx.maxerror, (long)tx.esterror, tx.tai,
                    state);
}

static int serve(const char *address, int port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int on = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0 || inet_pton(AF_INET, address, &sa.sin_addr) != 1 ||
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("probe serve");
        return 1;
    }
    for (;;) {
        unsigned char req[512], reply[NTP_LEN + 256];
        char control[256];
        struct sockaddr_in peer;
        struct iovec iov = {.iov_base = req, .iov_len = sizeof req};
        struct msghdr msg = {.msg_name = &peer,
                             .msg_namelen = sizeof peer,
                             .msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = control,
                             .msg_controllen = sizeof control};
        ssize_t n = recvmsg(fd, &msg, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("probe recvmsg");
            return 1;
        }
        if (n < NTP_LEN || (req[0] & 7) != 3)
            continue;
        struct timespec rx = {0, 0};
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS)
                memcpy(&rx, CMSG_DATA(c), sizeof rx);
        if (rx.tv_sec == 0)
            clock_gettime(CLOCK_REALTIME, &rx);
        memset(reply, 0, NTP_LEN);
        reply[0] = (unsigned char)((req[0] & 0x38) | 4); /* LI 0, request's version, mode 4 */
        reply[1] = 1;
        reply[3] = (unsigned char)-20;
        memcpy(reply + 12, "PRBE", 4);
        memcpy(reply + 24, req + 40, 8); /* origin = the request's transmit */
        put_ntp(reply + 32, &rx);
        struct timespec tx;
        clock_gettime(CLOCK_REALTIME, &tx);
        put_ntp(reply + 40, &tx);
        int text = state_line((char *)reply + NTP_LEN, sizeof reply - NTP_LEN);
        sendto(fd, reply, NTP_LEN + (size_t)text, 0, (struct sockaddr *)&peer, sizeof peer);
    }
}

static int adjust(struct timex *tx, const char *what)
{
    if (adjtimex(tx) < 0) {
        perror(what);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "serve") == 0)
        return serve(argv[2], atoi(argv[3]));
    if (argc == 3 && strcmp(argv[1], "shift") == 0) {
        /* Nanosecond steps: tv_usec holds ns and must be in 0..1e9. */
        double seconds = strtod(argv[2], NULL);
        int64_t total = (int64_t)(seconds * 1e9 + (seconds < 0 ? -0.5 : 0.5));
        struct timex tx = {.modes = ADJ_SETOFFSET | ADJ_NANO};
        tx.time.tv_sec = total / 1000000000LL;
        tx.time.tv_usec = total % 1000000000LL;
        if (tx.time.tv_usec < 0) {
            tx.time.tv_sec -= 1;
            tx.time.tv_usec += 1000000000LL;
        }
        return adjust(&tx, "probe shift");
    }
    if (argc == 3 && strcmp(argv[1], "tick") == 0) {
        struct timex tx = {.modes = ADJ_TICK, .tick = atol(argv[2])};
        return adjust(&tx, "probe tick");
    }
    if (argc == 2 && strcmp(argv[1], "state") == 0) {
        char line[256];
        state_line(line, sizeof line);
        fputs(line, stdout);
        return 0;
    }
    fprintf(stderr, "usage: probe serve ADDRESS PORT | shift SECONDS | tick USEC | state\n");
    return 2;
}
