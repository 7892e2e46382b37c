/* gen: the benchmark's load generator. It blasts (or paces) 200-byte payloads on an already
 * connected UDP (or TCP) socket that it inherits by fd number, with sendmmsg batches, then sends end markers.
 *
 * usage: gen FD RATE DURATION_S PAYLOAD_BYTES CHANNEL
 *   FD        an inherited, connected UDP socket (the driver did the relay's handshake on it)
 *   RATE      packets/s; 0 = as fast as possible (batches of 64)
 *   CHANNEL   0 = send the payload as is; 0x4000..0x7FFF = wrap it in TURN ChannelData (RFC 8656 section 12.4);
 *             1 = prefix it with its RFC 4571 length (ICE-TCP framing, on an inherited connected TCP socket)
 * Payload: seq u64 | CLOCK_MONOTONIC ns u64 | magic "VMBN" | zero padding (native byte order, same host).
 * At a fixed rate it sends bursts of RATE/1000 packets every 1 ms on an absolute clock_nanosleep schedule.
 * After DURATION_S it sends END_MARKERS packets with seq = UINT64_MAX, 1 ms apart, and prints one JSON line:
 * {"sent": packets, "seconds": wall seconds of the load, "errors": failed sendmmsg calls}.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define MAX_PACKET 2048
#define END_MARKERS 50
#define END_SEQ UINT64_MAX

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static unsigned char packets[BATCH][MAX_PACKET];
static struct mmsghdr msgs[BATCH];
static struct iovec iovs[BATCH];
static size_t offset; /* where the payload starts: 0, or 4 after a ChannelData header */

static void stamp(int n, uint64_t *seq, uint64_t ts) {
    for (int i = 0; i < n; i++) {
        uint64_t s = seq ? (*seq)++ : END_SEQ;
        memcpy(packets[i] + offset, &s, 8);
        memcpy(packets[i] + offset + 8, &ts, 8);
    }
}

/* Send n prepared packets; returns how many the kernel took. */
static int send_batch(int fd, int n, uint64_t *errors) {
    int done = 0;
    while (done < n) {
        int r = sendmmsg(fd, msgs + done, n - done, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            (*errors)++; /* e.g. ECONNREFUSED from an earlier ICMP, or ENOBUFS: the packets count as not sent */
            break;
        }
        done += r;
    }
    return done;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: gen FD RATE DURATION_S PAYLOAD_BYTES CHANNEL\n");
        return 2;
    }
    int fd = atoi(argv[1]);
    long rate = atol(argv[2]);
    double duration = atof(argv[3]);
    size_t payload = (size_t)atol(argv[4]);
    long channel = strtol(argv[5], NULL, 0);
    offset = channel == 1 ? 2 : channel ? 4 : 0;
    if (payload < 20 || payload + offset > MAX_PACKET || rate < 0 || duration <= 0) {
        fprintf(stderr, "gen: payload must be 20..%d bytes, rate >= 0, duration > 0\n", MAX_PACKET - 4);
        return 2;
    }
    for (int i = 0; i < BATCH; i++) {
        memset(packets[i], 0, MAX_PACKET);
        if (channel == 1) {
            packets[i][0] = (unsigned char)(payload >> 8);
            packets[i][1] = (unsigned char)payload;
        } else if (channel) {
            packets[i][0] = (unsigned char)(channel >> 8);
            packets[i][1] = (unsigned char)channel;
            packets[i][2] = (unsigned char)(payload >> 8);
            packets[i][3] = (unsigned char)payload;
        }
        memcpy(packets[i] + offset + 16, "VMBN", 4);
        iovs[i].iov_base = packets[i];
        iovs[i].iov_len = offset + payload;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    uint64_t seq = 0, sent = 0, errors = 0;
    uint64_t start = now_ns();
    uint64_t end = start + (uint64_t)(duration * 1e9);
    if (rate == 0) {
        for (uint64_t t = start; t < end; t = now_ns()) {
            stamp(BATCH, &seq, t);
            sent += send_batch(fd, BATCH, &errors);
        }
    } else {
        long per_tick = rate / 1000 > 0 ? rate / 1000 : 1;
        uint64_t tick_ns = rate >= 1000 ? 1000000ull : 1000000000ull / (uint64_t)rate;
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        for (uint64_t t = start; t < end; t = now_ns()) {
            long left = per_tick;
            while (left > 0) {
                int n = left > BATCH ? BATCH : (int)left;
                stamp(n, &seq, now_ns());
                sent += send_batch(fd, n, &errors);
                left -= n;
            }
            next.tv_nsec += (long)tick_ns;
            while (next.tv_nsec >= 1000000000L) {
                next.tv_nsec -= 1000000000L;
                next.tv_sec++;
            }
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
            }
        }
    }
    double seconds = (double)(now_ns() - start) / 1e9;

    struct timespec gap = {0, 1000000};
    for (int i = 0; i < END_MARKERS; i++) {
        stamp(1, NULL, now_ns());
        send_batch(fd, 1, &errors);
        nanosleep(&gap, NULL);
    }
    printf("{\"sent\": %llu, \"seconds\": %.6f, \"errors\": %llu}\n", (unsigned long long)sent, seconds,
           (unsigned long long)errors);
    return 0;
}
