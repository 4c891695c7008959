/*
 * The control socket (--control PATH): a Unix stream socket served on the
 * machine's loop. Each line a client sends is one JSON object, {"cmd":
 * "...", ...}; each gets one line back, {"ok": true, ...} or {"ok": false,
 * "error": "..."}, with the request's "id" echoed when it had one.
 * Commands: stats, info, pause, resume, stop, serial, balloon
 * (docs/vmmrun.md).
 *
 * Clients are untrusted: lines are bounded (64 KiB), malformed JSON and
 * unknown commands get an error reply, and a client that sends an
 * over-long line is answered and disconnected.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "vmmrun.h"

#define LINE_MAX_BYTES (64 * 1024)

struct client {
  uv_pipe_t pipe;
  struct vmmrun_control *c;
  struct client *next;
  char *buf;
  size_t len;
  bool closing;
};

struct vmmrun_control {
  uv_pipe_t server;
  struct vmmrun *run;
  char *path;
  struct client *clients;
  bool closing;
};

struct write_req {
  uv_write_t req;
  char *data;
};

static void client_closed(uv_handle_t *h) {
  struct client *cl = h->data;
  free(cl->buf);
  free(cl);
}

static void client_close(struct client *cl) {
  if (cl->closing)
    return;
  cl->closing = true;
  struct client **p = &cl->c->clients;
  while (*p != NULL && *p != cl)
    p = &(*p)->next;
  if (*p == cl)
    *p = cl->next;
  uv_close((uv_handle_t *)&cl->pipe, client_closed);
}

static void write_done(uv_write_t *req, int status) {
  struct write_req *w = (struct write_req *)req;
  (void)status; /* a client that went away: its read side closes it */
  free(w->data);
  free(w);
}

static void reply(struct client *cl, json_t *msg, const json_t *id) {
  if (id != NULL)
    json_object_set(msg, "id", (json_t *)id);
  char *text = json_dumps(msg, JSON_COMPACT);
  json_decref(msg);
  if (text == NULL)
    return;
  size_t n = strlen(text);
  struct write_req *w = malloc(sizeof(*w));
  char *line = realloc(text, n + 2);
  if (w == NULL || line == NULL) {
    free(w);
    free(line ? line : text);
    return;
  }
  line[n] = '\n';
  line[n + 1] = 0;
  w->data = line;
  uv_buf_t b = uv_buf_init(line, (unsigned)(n + 1));
  if (uv_write(&w->req, (uv_stream_t *)&cl->pipe, &b, 1, write_done) < 0) {
    free(line);
    free(w);
  }
}

static json_t *error_msg(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static json_t *error_msg(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return json_pack("{s:b,s:s}", "ok", 0, "error", msg);
}

static json_t *ok_msg(void) {
  return json_pack("{s:b}", "ok", 1);
}

/* Handle one line; the reply goes out before anything it triggers. */
static void handle_line(struct client *cl, const char *line, size_t len) {
  struct vmmrun *r = cl->c->run;
  json_error_t je;
  json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
  if (req == NULL || !json_is_object(req)) {
    reply(cl,
          req == NULL
              ? error_msg("not JSON: %s (column %d)", je.text, je.column)
              : error_msg("expected a JSON object like "
                          "{\"cmd\": \"stats\"}"),
          NULL);
    json_decref(req);
    return;
  }
  const json_t *id = json_object_get(req, "id");
  const char *cmd = json_string_value(json_object_get(req, "cmd"));
  char err[256];
  bool stop = false;
  if (cmd == NULL) {
    reply(cl,
          error_msg("cmd: expected a string (stats, info, pause, resume, "
                    "stop, serial, balloon)"),
          id);
  } else if (strcmp(cmd, "stats") == 0) {
    json_t *m = ok_msg();
    json_object_set_new(m, "stats", vmmrun_stats_json(r));
    reply(cl, m, id);
  } else if (strcmp(cmd, "info") == 0) {
    json_t *m = ok_msg();
    json_object_set_new(m, "info", vmmrun_info_json(r));
    reply(cl, m, id);
  } else if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0) {
    bool pause = cmd[0] == 'p';
    if (vmmrun_pause(r, pause, err, sizeof(err)) < 0) {
      reply(cl, error_msg("%s", err), id);
    } else {
      json_t *m = ok_msg();
      json_object_set_new(m, "state",
                          json_string(pause ? "paused" : "running"));
      reply(cl, m, id);
    }
  } else if (strcmp(cmd, "stop") == 0) {
    reply(cl, ok_msg(), id);
    stop = true;
  } else if (strcmp(cmd, "balloon") == 0) {
    json_t *b =
        vmmrun_balloon(r, json_object_get(req, "target"), err, sizeof(err));
    json_t *m = b != NULL ? ok_msg() : error_msg("%s", err);
    if (b != NULL)
      json_object_set_new(m, "balloon", b);
    reply(cl, m, id);
  } else if (strcmp(cmd, "serial") == 0) {
    const json_t *d = json_object_get(req, "data");
    if (!json_is_string(d)) {
      reply(cl, error_msg("serial: data: expected a string"), id);
    } else {
      long n =
          vmmrun_serial_input(r, json_string_value(d), json_string_length(d));
      json_t *m =
          n < 0 ? error_msg("serial: the guest has no serial port") : ok_msg();
      if (n >= 0)
        json_object_set_new(m, "queued", json_integer(n));
      reply(cl, m, id);
    }
  } else {
    reply(cl,
          error_msg("unknown command \"%.64s\" (stats, info, pause, resume, "
                    "stop, serial, balloon)",
                    cmd),
          id);
  }
  json_decref(req);
  if (stop)
    vmmrun_finish(r, VMMRUN_EXIT_STOPPED, "stopped through the control socket");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char scratch[16384]; /* the loop is single-threaded */
  *buf = uv_buf_init(scratch, sizeof(scratch));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct client *cl = s->data;
  if (n < 0) {
    client_close(cl);
    return;
  }
  for (ssize_t i = 0; i < n && !cl->closing; i++) {
    char ch = buf->base[i];
    if (ch == '\n') {
      /* Tolerate CRLF. */
      size_t len = cl->len;
      if (len > 0 && cl->buf[len - 1] == '\r')
        len--;
      if (len > 0)
        handle_line(cl, cl->buf, len);
      cl->len = 0;
      continue;
    }
    if (cl->len == LINE_MAX_BYTES) {
      reply(cl, error_msg("line longer than %d bytes: closing", LINE_MAX_BYTES),
            NULL);
      uv_read_stop(s);
      client_close(cl);
      return;
    }
    if (cl->buf == NULL && (cl->buf = malloc(LINE_MAX_BYTES)) == NULL) {
      client_close(cl);
      return;
    }
    cl->buf[cl->len++] = ch;
  }
}

static void on_connection(uv_stream_t *server, int status) {
  struct vmmrun_control *c = server->data;
  if (status < 0 || c->closing)
    return;
  struct client *cl = calloc(1, sizeof(*cl));
  if (cl == NULL)
    return;
  cl->c = c;
  uv_pipe_init(server->loop, &cl->pipe, 0);
  cl->pipe.data = cl;
  if (uv_accept(server, (uv_stream_t *)&cl->pipe) < 0 ||
      uv_read_start((uv_stream_t *)&cl->pipe, on_alloc, on_read) < 0) {
    uv_close((uv_handle_t *)&cl->pipe, client_closed);
    return;
  }
  cl->next = c->clients;
  c->clients = cl;
}

static void server_closed(uv_handle_t *h);

int vmmrun_control_start(struct vmmrun *r, const char *path,
                         vmmrun_control **out, char *err, size_t errlen) {
  *out = NULL;
  struct stat st;
  if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    snprintf(err, errlen, "--control: %s: longer than a socket path may be",
             path);
    return -1;
  }
  /* A socket left by an earlier run is replaced; anything else is not. */
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      snprintf(err, errlen, "--control: %s exists and is not a socket", path);
      return -1;
    }
    unlink(path);
  }
  struct vmmrun_control *c = calloc(1, sizeof(*c));
  if (c == NULL || (c->path = strdup(path)) == NULL) {
    free(c);
    snprintf(err, errlen, "--control: out of memory");
    return -1;
  }
  c->run = r;
  uv_pipe_init(vmmrun_uv(r), &c->server, 0);
  c->server.data = c;
  int rc = uv_pipe_bind(&c->server, path);
  /* Whoever can connect can stop the guest: the owner only. */
  if (rc == 0 && chmod(path, 0600) < 0)
    rc = -errno;
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&c->server, 8, on_connection);
  if (rc < 0) {
    snprintf(err, errlen, "--control: %s: %s", path, uv_strerror(rc));
    /* Freed when the loop next runs (at the latest when it is destroyed). */
    c->closing = true;
    uv_close((uv_handle_t *)&c->server, server_closed);
    return -1;
  }
  *out = c;
  return 0;
}

static void server_closed(uv_handle_t *h) {
  struct vmmrun_control *c = h->data;
  free(c->path);
  free(c);
}

static void shutdown_done(uv_shutdown_t *req, int status) {
  (void)status;
  struct client *cl = req->data;
  free(req);
  uv_close((uv_handle_t *)&cl->pipe, client_closed);
}

void vmmrun_control_close(vmmrun_control *c) {
  if (c == NULL)
    return;
  if (!c->closing) {
    c->closing = true;
    unlink(c->path);
    uv_close((uv_handle_t *)&c->server, server_closed);
  }
  /* Clients: flush pending replies (the "stop" one), then close. */
  while (c->clients != NULL) {
    struct client *cl = c->clients;
    c->clients = cl->next;
    cl->closing = true;
    uv_read_stop((uv_stream_t *)&cl->pipe);
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (req != NULL) {
      req->data = cl;
      if (uv_shutdown(req, (uv_stream_t *)&cl->pipe, shutdown_done) == 0)
        continue;
      free(req);
    }
    uv_close((uv_handle_t *)&cl->pipe, client_closed);
  }
}
