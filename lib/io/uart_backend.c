/*
 * 16550A UART backends: terminal, file, Unix socket, callback. See
 * include/libvmm/uart16550.h and docs/devices.md.
 *
 * Output to a terminal, a file or a callback is synchronous, on the vCPU
 * thread that wrote THR. Terminal input and everything about sockets runs
 * on the VM's loop with uv_poll on descriptors this file owns, so that:
 *   - the caller's descriptors never change mode under it: input is read
 *     through a private open of the same terminal or pipe, and where that
 *     is impossible (sockets) the original flags are put back on destroy;
 *   - writes to sockets use MSG_NOSIGNAL and writes to pipes keep SIGPIPE
 *     blocked and consumed, so a vanished peer never kills the host.
 *
 * The backend state lives until its last uv handle is closed, which can
 * be after the UART itself is gone; it never touches the UART after
 * close (be->u is cleared then).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "uart.h"

enum out_kind { OUT_PLAIN, OUT_PIPE, OUT_SOCKET };

struct uart_be {
  struct uart *u; /* NULL once closed */
  vmm_loop *loop;

  /* Synchronous output (terminal, file). */
  int out_fd;
  bool own_out_fd;
  enum out_kind out_kind;

  /* Terminal input. */
  int in_fd;        /* private, owned */
  int shared_in_fd; /* caller's fd whose flags we changed, or -1 */
  int shared_flags; /* to restore on it */
  int tty_fd;       /* caller's terminal put in raw mode, or -1 */
  struct termios saved_termios;

  /* Socket. */
  int listen_fd;
  bool unlink_path;
  int conn_fd;

  /* Polls; allocated so they can outlive this struct's users. */
  uv_poll_t *in_poll, *listen_poll, *conn_poll;
  unsigned handles; /* open uv handles; freed at 0 once closed */
  bool closed;

  /* Input read but not yet taken by the UART, and output being sent. */
  uint8_t rbuf[1024];
  size_t rpos, rlen;
  uint8_t wbuf[4096];
  size_t wpos, wlen;

  struct vmm__work tx_work, rx_work;
};

#define BE_OF(w, member)                                                       \
  ((struct uart_be *)((char *)(w)-offsetof(struct uart_be, member)))

bool vmm__uart_be_async(const struct uart *u) {
  return u->outq != NULL;
}

/* ------------------------------------------------------------------------ */
/* Synchronous output                                                       */

/* write() to a pipe without letting SIGPIPE reach the process. */
static ssize_t write_pipe(int fd, const void *buf, size_t len) {
  sigset_t pipe_set, old, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigpending(&pending);
  bool was_pending = sigismember(&pending, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  ssize_t n = write(fd, buf, len);
  int err = errno;
  if (n < 0 && err == EPIPE && !was_pending) {
    struct timespec zero = {0, 0};
    sigtimedwait(&pipe_set, NULL, &zero); /* consume ours only */
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = err;
  return n;
}

static void write_out(struct uart *u, struct uart_be *be, const uint8_t *buf,
                      size_t len) {
  while (len > 0) {
    ssize_t n;
    switch (be->out_kind) {
    case OUT_SOCKET: n = send(be->out_fd, buf, len, MSG_NOSIGNAL); break;
    case OUT_PIPE: n = write_pipe(be->out_fd, buf, len); break;
    default: n = write(be->out_fd, buf, len); break;
    }
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN) {
      /* Someone made the descriptor non-blocking: wait a little. */
      struct pollfd p = {.fd = be->out_fd, .events = POLLOUT};
      if (poll(&p, 1, 100) > 0)
        continue;
    }
    vmm__uart_tx_dropped(u, len);
    return;
  }
}

void vmm__uart_be_write(struct uart *u, const uint8_t *buf, size_t len) {
  switch (u->cfg.backend) {
  case VMM_UART_CALLBACK:
    u->cfg.write_fn(u->dev, buf, len, u->cfg.write_opaque);
    break;
  case VMM_UART_TERMINAL:
  case VMM_UART_FILE:
    if (u->be != NULL && u->be->out_fd >= 0)
      write_out(u, u->be, buf, len);
    break;
  default: break; /* NONE discards */
  }
}

static enum out_kind out_kind_of(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0)
    return OUT_PLAIN;
  if (S_ISSOCK(st.st_mode))
    return OUT_SOCKET;
  if (S_ISFIFO(st.st_mode))
    return OUT_PIPE;
  return OUT_PLAIN;
}

/* ------------------------------------------------------------------------ */
/* Loop side                                                                */

static void on_closed(uv_handle_t *h) {
  struct uart_be *be = h->data;
  free(h);
  if (--be->handles == 0 && be->closed)
    free(be);
}

static uv_poll_t *poll_open(struct uart_be *be, int fd) {
  uv_poll_t *p = malloc(sizeof(*p));
  if (p == NULL)
    return NULL;
  if (uv_poll_init(vmm_loop_uv(be->loop), p, fd) < 0) {
    free(p);
    return NULL;
  }
  p->data = be;
  /* Backends never keep the host's loop alive by themselves. */
  uv_unref((uv_handle_t *)p);
  be->handles++;
  return p;
}

static void poll_close(uv_poll_t **p) {
  if (*p != NULL)
    uv_close((uv_handle_t *)*p, on_closed);
  *p = NULL;
}

static void on_io_event(uv_poll_t *p, int status, int events);

/* Watch the stream for what is needed now: input unless the UART is full,
   writability while output is waiting. */
static void stream_watch(struct uart_be *be) {
  uv_poll_t *p = be->conn_poll != NULL ? be->conn_poll : be->in_poll;
  if (p == NULL)
    return;
  int events = 0;
  if (be->rpos == be->rlen)
    events |= UV_READABLE;
  if (p == be->conn_poll && be->wpos < be->wlen)
    events |= UV_WRITABLE;
  if (events != 0)
    uv_poll_start(p, events, on_io_event);
  else
    uv_poll_stop(p);
}

static void conn_close(struct uart_be *be) {
  poll_close(&be->conn_poll);
  if (be->conn_fd >= 0)
    close(be->conn_fd);
  be->conn_fd = -1;
  be->rpos = be->rlen = 0;
  if (be->wpos < be->wlen && be->u != NULL)
    vmm__uart_tx_dropped(be->u, be->wlen - be->wpos);
  be->wpos = be->wlen = 0;
}

/* Hand buffered input to the UART; what it cannot take waits here. */
static void deliver(struct uart_be *be) {
  if (be->u != NULL && be->rpos < be->rlen)
    be->rpos +=
        vmm__uart_rx_offer(be->u, be->rbuf + be->rpos, be->rlen - be->rpos);
}

static void send_output(struct uart_be *be) {
  struct uart *u = be->u;
  if (u == NULL)
    return;
  for (;;) {
    if (be->wpos == be->wlen) {
      be->wpos = 0;
      be->wlen = vmm__uart_tx_take(u, be->wbuf, sizeof(be->wbuf));
      if (be->wlen == 0)
        return;
    }
    if (be->conn_fd < 0) {
      /* Nobody listening: the bytes are gone, as on an unplugged line. */
      vmm__uart_tx_dropped(u, be->wlen - be->wpos);
      be->wpos = be->wlen;
      continue;
    }
    ssize_t n = send(be->conn_fd, be->wbuf + be->wpos, be->wlen - be->wpos,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      be->wpos += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return; /* stream_watch waits for writability */
    } else {
      conn_close(be);
      return;
    }
  }
}

static void on_io_event(uv_poll_t *p, int status, int events) {
  struct uart_be *be = p->data;
  bool conn = p == be->conn_poll;
  int fd = conn ? be->conn_fd : be->in_fd;
  if (status < 0) {
    if (conn)
      conn_close(be);
    else
      uv_poll_stop(p);
    return;
  }
  if ((events & UV_READABLE) && be->rpos == be->rlen) {
    ssize_t n = read(fd, be->rbuf, sizeof(be->rbuf));
    if (n > 0) {
      be->rpos = 0;
      be->rlen = (size_t)n;
      deliver(be);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      /* End of input (or an error): stop listening to it. */
      if (conn) {
        conn_close(be);
        return;
      }
      uv_poll_stop(p);
      return;
    }
  }
  if (conn && (events & UV_WRITABLE))
    send_output(be);
  if (be->conn_poll == p || be->in_poll == p)
    stream_watch(be);
}

static void on_listen(uv_poll_t *p, int status, int events) {
  struct uart_be *be = p->data;
  (void)events;
  if (status < 0)
    return;
  int fd = accept4(be->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0)
    return;
  if (be->conn_fd >= 0) {
    close(fd); /* one peer at a time */
    return;
  }
  be->conn_fd = fd;
  be->conn_poll = poll_open(be, fd);
  if (be->conn_poll == NULL) {
    close(fd);
    be->conn_fd = -1;
    return;
  }
  send_output(be);
  stream_watch(be);
}

static void tx_work(struct vmm__work *w) {
  struct uart_be *be = BE_OF(w, tx_work);
  send_output(be);
  stream_watch(be);
}

static void rx_work(struct vmm__work *w) {
  struct uart_be *be = BE_OF(w, rx_work);
  deliver(be);
  stream_watch(be);
}

void vmm__uart_be_kick_tx(struct uart *u) {
  if (u->be != NULL && u->be->loop != NULL)
    vmm__loop_post(u->be->loop, &u->be->tx_work);
}

void vmm__uart_be_kick_rx(struct uart *u) {
  if (u->be != NULL && u->be->loop != NULL)
    vmm__loop_post(u->be->loop, &u->be->rx_work);
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                  */

/*
 * A descriptor for reading in_fd without changing the caller's file
 * description: the terminal or pipe opened anew; for what cannot be
 * reopened (sockets) a duplicate whose shared flags are restored later.
 */
static int private_reader(struct uart_be *be, int fd) {
  char path[64];
  int r = -1;
  if (isatty(fd) && ttyname_r(fd, path, sizeof(path)) == 0)
    r = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (r < 0) {
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    r = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  }
  if (r >= 0)
    return r;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || (r = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)
    return -errno;
  be->shared_in_fd = fd;
  be->shared_flags = flags;
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  return r;
}

static int raw_mode(struct uart_be *be, int fd, bool keep_signals) {
  struct termios t;
  if (tcgetattr(fd, &t) < 0)
    return -errno;
  be->saved_termios = t;
  t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR |
                           ICRNL | IXON);
  t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | IEXTEN);
  if (!keep_signals)
    t.c_lflag &= ~(tcflag_t)ISIG;
  t.c_cflag = (t.c_cflag & ~(tcflag_t)(CSIZE | PARENB)) | CS8;
  /* Output post-processing stays: a guest's bare "\n" still starts a line. */
  t.c_cc[VMIN] = 1;
  t.c_cc[VTIME] = 0;
  if (tcsetattr(fd, TCSANOW, &t) < 0)
    return -errno;
  be->tty_fd = fd;
  return 0;
}

static int open_terminal(struct uart *u, struct uart_be *be) {
  int err;
  if (u->cfg.out_fd >= 0) {
    be->out_fd = u->cfg.out_fd;
    be->out_kind = out_kind_of(be->out_fd);
  }
  if (u->cfg.in_fd < 0)
    return 0;
  if (u->cfg.raw && isatty(u->cfg.in_fd) &&
      (err = raw_mode(be, u->cfg.in_fd, u->cfg.keep_signals)) < 0)
    return err;
  if ((be->in_fd = private_reader(be, u->cfg.in_fd)) < 0)
    return be->in_fd;
  be->in_poll = poll_open(be, be->in_fd);
  if (be->in_poll == NULL) {
    /* epoll cannot watch regular files: such input is not supported. */
    vmm__log(u->vm, VMM_LOG_WARN,
             "uart %s: input descriptor %d cannot be watched; no input",
             vmm_dev_name(u->dev), u->cfg.in_fd);
    return 0;
  }
  stream_watch(be);
  return 0;
}

static int open_socket(struct uart *u, struct uart_be *be) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(u->cfg.path) >= sizeof(sa.sun_path))
    return VMM_EINVAL;
  strcpy(sa.sun_path, u->cfg.path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (u->cfg.client) {
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
      int err = -errno;
      close(fd);
      return err;
    }
    be->conn_fd = fd;
    if ((be->conn_poll = poll_open(be, fd)) == NULL)
      return VMM_ENOMEM;
    stream_watch(be);
    return 0;
  }
  /* An existing path is an error: we remove only what we created. */
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  be->listen_fd = fd;
  be->unlink_path = true;
  if (listen(fd, 1) < 0 ||
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
    return -errno;
  if ((be->listen_poll = poll_open(be, fd)) == NULL)
    return VMM_ENOMEM;
  uv_poll_start(be->listen_poll, UV_READABLE, on_listen);
  return 0;
}

static void close_on_loop(vmm_loop *loop, void *opaque) {
  struct uart_be *be = opaque;
  struct uart *u = be->u;
  vmm__loop_cancel(loop, &be->tx_work);
  vmm__loop_cancel(loop, &be->rx_work);
  conn_close(be);
  poll_close(&be->in_poll);
  poll_close(&be->listen_poll);
  if (be->in_fd >= 0)
    close(be->in_fd);
  if (be->listen_fd >= 0)
    close(be->listen_fd);
  if (be->unlink_path)
    unlink(u->cfg.path);
  if (be->shared_in_fd >= 0)
    fcntl(be->shared_in_fd, F_SETFL, be->shared_flags);
  if (be->tty_fd >= 0)
    tcsetattr(be->tty_fd, TCSANOW, &be->saved_termios);
  be->u = NULL;
  be->closed = true;
  if (be->handles == 0)
    free(be);
}

struct open_call {
  struct uart *u;
  int err;
};

static void open_on_loop(vmm_loop *loop, void *opaque) {
  struct open_call *c = opaque;
  struct uart *u = c->u;
  struct uart_be *be = u->be;
  (void)loop;
  c->err = u->cfg.backend == VMM_UART_SOCKET ? open_socket(u, be)
                                             : open_terminal(u, be);
  if (c->err < 0) {
    u->be = NULL;
    close_on_loop(loop, be);
  }
}

int vmm__uart_be_open(struct uart *u) {
  if (u->cfg.backend == VMM_UART_NONE || u->cfg.backend == VMM_UART_CALLBACK)
    return 0;
  struct uart_be *be = calloc(1, sizeof(*be));
  if (be == NULL)
    return VMM_ENOMEM;
  be->u = u;
  be->out_fd = be->in_fd = be->listen_fd = be->conn_fd = -1;
  be->shared_in_fd = be->tty_fd = -1;
  vmm__work_init(&be->tx_work, tx_work);
  vmm__work_init(&be->rx_work, rx_work);

  if (u->cfg.backend == VMM_UART_FILE) {
    if (u->cfg.path != NULL) {
      be->out_fd =
          open(u->cfg.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (be->out_fd < 0) {
        int err = -errno;
        free(be);
        return err;
      }
      be->own_out_fd = true;
    } else {
      be->out_fd = u->cfg.fd;
    }
    be->out_kind = out_kind_of(be->out_fd);
    be->closed = true; /* no uv handles: freed directly on close */
    u->be = be;
    return 0;
  }

  int err = vmm_vm_get_loop(u->vm, &be->loop);
  if (err < 0) {
    free(be);
    return err;
  }
  u->be = be;
  struct open_call c = {u, 0};
  vmm_loop_call(be->loop, open_on_loop, &c);
  return c.err;
}

void vmm__uart_be_close(struct uart *u) {
  struct uart_be *be = u->be;
  if (be == NULL)
    return;
  u->be = NULL;
  if (be->loop == NULL) {
    if (be->own_out_fd)
      close(be->out_fd);
    free(be);
    return;
  }
  vmm_loop_call(be->loop, close_on_loop, be);
}
