/* uring_echo: the hand-written C io_uring echo server that stands for the floor.
 * One thread, one ring (SINGLE_ISSUER | DEFER_TASKRUN), multishot accept, multishot recv
 * with a provided-buffer ring (32 KiB buffers: larger than a 16 KiB message), a send per
 * received chunk straight from the provided buffer (returned to the ring when the send
 * completes), and every SQE of a reap batch submitted with one io_uring_submit_and_wait.
 *   uring_echo PORT
 */
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BGID 1
#define NBUFS 512
#define BUFSZ (32 * 1024)

enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3 };

static struct io_uring ring;
static struct io_uring_buf_ring* br;
static char* bufs;

/* user_data: op (4 bits) | fd (16) | buffer id (12) | offset (16) | length (16) */
static inline unsigned long long ud(int op, int fd, int bid, int off, int len) {
  return ((unsigned long long)op << 60) | ((unsigned long long)(unsigned)fd << 44) |
         ((unsigned long long)(unsigned)bid << 32) | ((unsigned long long)(unsigned)off << 16) |
         (unsigned long long)(unsigned)len;
}

static struct io_uring_sqe* sqe_get(void) {
  struct io_uring_sqe* s = io_uring_get_sqe(&ring);
  while (!s) {
    io_uring_submit(&ring);
    s = io_uring_get_sqe(&ring);
  }
  return s;
}

static void arm_recv(int fd) {
  struct io_uring_sqe* s = sqe_get();
  io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = BGID;
  io_uring_sqe_set_data64(s, ud(OP_RECV, fd, 0, 0, 0));
}

static void send_chunk(int fd, int bid, int off, int len) {
  struct io_uring_sqe* s = sqe_get();
  io_uring_prep_send(s, fd, bufs + (size_t)bid * BUFSZ + off, (size_t)len, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, ud(OP_SEND, fd, bid, off, len));
}

static void recycle(int bid) {
  io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, (unsigned short)bid, io_uring_buf_ring_mask(NBUFS), 0);
  io_uring_buf_ring_advance(br, 1);
}

int main(int argc, char** argv) {
  int port = argc > 1 ? atoi(argv[1]) : 7001;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(1024, &ring, &p) < 0) {
    memset(&p, 0, sizeof p);
    if (io_uring_queue_init_params(1024, &ring, &p) < 0) {
      perror("io_uring_queue_init");
      return 1;
    }
  }
  if (posix_memalign((void**)&br, 4096, NBUFS * sizeof(struct io_uring_buf)) != 0 ||
      posix_memalign((void**)&bufs, 4096, (size_t)NBUFS * BUFSZ) != 0) {
    return 1;
  }
  io_uring_buf_ring_init(br);
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (unsigned long)br;
  reg.ring_entries = NBUFS;
  reg.bgid = BGID;
  if (io_uring_register_buf_ring(&ring, &reg, 0) != 0) {
    fprintf(stderr, "register_buf_ring failed\n");
    return 1;
  }
  for (int i = 0; i < NBUFS; ++i) {
    io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, (unsigned short)i, io_uring_buf_ring_mask(NBUFS), i);
  }
  io_uring_buf_ring_advance(br, NBUFS);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr*)&a, sizeof a) != 0 || listen(lfd, 1024) != 0) {
    perror("bind/listen");
    return 1;
  }
  struct io_uring_sqe* s = sqe_get();
  io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, ud(OP_ACCEPT, lfd, 0, 0, 0));
  printf("uring_echo listening on 127.0.0.1:%d\n", port);
  fflush(stdout);

  for (;;) {
    io_uring_submit_and_wait(&ring, 1);
    struct io_uring_cqe* cqe;
    unsigned head, count = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++count;
      unsigned long long d = cqe->user_data;
      int op = (int)(d >> 60), fd = (int)((d >> 44) & 0xffff), bid = (int)((d >> 32) & 0xfff),
          off = (int)((d >> 16) & 0xffff), len = (int)(d & 0xffff);
      int res = cqe->res;
      if (op == OP_ACCEPT) {
        if (res >= 0) {
          setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          arm_recv(res);
        }
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
          s = sqe_get();
          io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
          io_uring_sqe_set_data64(s, ud(OP_ACCEPT, lfd, 0, 0, 0));
        }
      } else if (op == OP_RECV) {
        if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
          int b = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
          send_chunk(fd, b, 0, res);
        } else if (res <= 0 && res != -ENOBUFS) {
          close(fd);
          continue;
        }
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
          arm_recv(fd);  /* ENOBUFS or a terminated multishot: re-arm */
        }
      } else if (op == OP_SEND) {
        if (res > 0 && res < len) {
          send_chunk(fd, bid, off + res, len - res); /* short send: the rest */
        } else {
          recycle(bid);
        }
      }
    }
    io_uring_cq_advance(&ring, count);
  }
}
