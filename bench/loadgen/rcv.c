/* rcv: the benchmark's UDP receiver. It stands in for the transceiver (or the TURN peer): it reads with
 * recvmmsg, takes the payload written by gen at OFFSET bytes into each datagram, and measures one-way
 * latency as receive time minus the payload's CLOCK_MONOTONIC timestamp (same host, same clock).
 *
 * usage: rcv HOST PORT OFFSET TIMEOUT_S
 *   OFFSET     bytes to skip before gen's payload (12 for the edge relay's IPv4 backbone frame header)
 *   TIMEOUT_S  give up this long after start, or 1 s after the last packet, if no end marker comes
 * It prints "PORT <n>" once bound (PORT 0 picks one), then, after the first end marker (seq = UINT64_MAX)
 * or the timeout, one JSON line: received, other (datagrams without gen's payload, e.g. the relay's STUN
 * Binding), max_seq, first_ns/last_ns (receive times of the first and last payload), lat_p50_us, lat_p90_us,
 * lat_p99_us, lat_max_us, rxq_ovfl (datagrams the kernel dropped at this socket, SO_RXQ_OVFL), end_marker.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define MAX_PACKET 2048
#define RCVBUF (8 << 20)
#define END_SEQ UINT64_MAX

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array, in µs. */
static double pct_us(const uint64_t *v, size_t n, double p) {
    if (n == 0) return -1;
    size_t rank = (size_t)(p * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    return (double)v[rank - 1] / 1000.0;
}

static unsigned char bufs[BATCH][MAX_PACKET];
static char ctrl[BATCH][CMSG_SPACE(sizeof(uint32_t))];
static struct mmsghdr msgs[BATCH];
static struct iovec iovs[BATCH];

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: rcv HOST PORT OFFSET TIMEOUT_S\n");
        return 2;
    }
    size_t offset = (size_t)atol(argv[3]);
    double timeout = atof(argv[4]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int size = RCVBUF, one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
    struct timeval tick = {0, 100000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("rcv: bind");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("PORT %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    size_t cap = 1 << 20, n = 0;
    uint64_t *lat = malloc(cap * sizeof *lat);
    uint64_t other = 0, max_seq = 0, first = 0, last = 0;
    uint32_t ovfl = 0;
    int end_marker = 0;
    uint64_t deadline = now_ns() + (uint64_t)(timeout * 1e9);
    while (!end_marker) {
        for (int i = 0; i < BATCH; i++) {
            iovs[i].iov_base = bufs[i];
            iovs[i].iov_len = MAX_PACKET;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctrl[i];
            msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i];
        }
        int r = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        uint64_t t = now_ns();
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                perror("rcv: recvmmsg");
                return 1;
            }
            if (t > deadline || (last && t - last > 1000000000ull)) break;
            continue;
        }
        for (int i = 0; i < r; i++) {
            struct msghdr *h = &msgs[i].msg_hdr;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) memcpy(&ovfl, CMSG_DATA(c), 4);
            const unsigned char *p = bufs[i] + offset;
            if (msgs[i].msg_len < offset + 20 || memcmp(p + 16, "VMBN", 4) != 0) {
                other++;
                continue;
            }
            uint64_t seq, ts;
            memcpy(&seq, p, 8);
            memcpy(&ts, p + 8, 8);
            if (seq == END_SEQ) {
                end_marker = 1;
                break;
            }
            if (n == cap) {
                cap *= 2;
                lat = realloc(lat, cap * sizeof *lat);
            }
            lat[n++] = t > ts ? t - ts : 0;
            if (seq > max_seq) max_seq = seq;
            if (!first) first = t;
            last = t;
        }
        if (t > deadline) break;
    }
    qsort(lat, n, sizeof *lat, cmp_u64);
    printf("{\"received\": %zu, \"other\": %llu, \"max_seq\": %llu, \"first_ns\": %llu, \"last_ns\": %llu, "
           "\"lat_p50_us\": %.1f, \"lat_p90_us\": %.1f, \"lat_p99_us\": %.1f, \"lat_max_us\": %.1f, "
           "\"rxq_ovfl\": %u, \"end_marker\": %s}\n",
           n, (unsigned long long)other, (unsigned long long)max_seq, (unsigned long long)first,
           (unsigned long long)last, pct_us(lat, n, 0.50), pct_us(lat, n, 0.90), pct_us(lat, n, 0.99),
           n ? (double)lat[n - 1] / 1000.0 : -1.0, ovfl, end_marker ? "true" : "false");
    return 0;
}
