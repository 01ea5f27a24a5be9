/* mdb_serial.c — the serial backend of the MDB transport: termios set-up,
 * the two byte framings of the 9th bit (pair, parity), the cutting of the
 * byte stream into frames, and reopening a port that went away. Reading and
 * writing never block the daemon's loop for more than a short write. */
#include "mdb_serial.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define WRITE_WAIT_MS 100 /* a full output buffer is waited for this long */

/* ---- unframer ---- */

void kp_mdb_unframer_init(kp_mdb_unframer *u, kp_mdb_framing framing)
{
	memset(u, 0, sizeof(*u));
	u->framing = framing;
}

void kp_mdb_unframer_reset(kp_mdb_unframer *u)
{
	u->state = 0;
	u->held = 0;
}

void kp_mdb_unframer_feed(kp_mdb_unframer *u, const uint8_t *bytes, size_t len, uint16_t *out, size_t cap,
			  size_t *n, uint64_t *dropped)
{
	size_t k = 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t b = bytes[i];
		if (u->framing == KP_MDB_FRAMING_PAIR) {
			if (u->state == 0) {
				if (b == 0x00 || b == 0x01 || b == 0x80) {
					u->held = b;
					u->state = 1;
				} else {
					(*dropped)++; /* out of step: this cannot be a flags byte */
				}
				continue;
			}
			u->state = 0;
			if (k == cap)
				continue;
			if (u->held == 0x80)
				out[k++] = KP_MDB_WORD_BUS_RESET;
			else
				out[k++] = (uint16_t)((u->held ? KP_MDB_MODE : 0) | b);
			continue;
		}
		/* parity framing, read in space parity with PARMRK: a word with the
		 * mode bit is a parity error and arrives as FF 00 b; a data FF as FF FF */
		switch (u->state) {
		case 0:
			if (b == 0xFF)
				u->state = 1;
			else if (k < cap)
				out[k++] = b;
			break;
		case 1:
			if (b == 0x00) {
				u->state = 2;
			} else {
				u->state = 0;
				if (k < cap)
					out[k++] = 0xFF;
				if (b != 0xFF && k < cap)
					out[k++] = b; /* not PARMRK's doing: keep both */
			}
			break;
		default:
			u->state = 0;
			if (k < cap)
				out[k++] = (uint16_t)(KP_MDB_MODE | b);
			break;
		}
	}
	*n = k;
}

size_t kp_mdb_frame_bytes(kp_mdb_framing framing, const uint16_t *words, size_t n, uint8_t *bytes, size_t cap)
{
	if (framing == KP_MDB_FRAMING_PAIR) {
		if (n > cap / 2)
			return 0;
		for (size_t i = 0; i < n; i++) {
			bytes[2 * i] = (words[i] & KP_MDB_MODE) ? 0x01 : 0x00;
			bytes[2 * i + 1] = (uint8_t)words[i];
		}
		return 2 * n;
	}
	if (n > cap)
		return 0;
	for (size_t i = 0; i < n; i++)
		bytes[i] = (uint8_t)words[i];
	return n;
}

/* ---- frame assembler ---- */

void kp_mdb_asm_init(kp_mdb_asm *a, kp_mdb_role role, int gap_ms)
{
	memset(a, 0, sizeof(*a));
	a->role = role;
	a->gap_ms = gap_ms;
}

static void asm_queue(kp_mdb_asm *a, const uint16_t *w, size_t n)
{
	if (a->qn == KP_MDB_ASM_QUEUE) {
		/* nobody reads: keep the newest, the bus has moved on anyway */
		memmove(&a->q[0], &a->q[1], (KP_MDB_ASM_QUEUE - 1) * sizeof(a->q[0]));
		a->qn--;
		a->lost++;
	}
	memcpy(a->q[a->qn].w, w, n * sizeof(w[0]));
	a->q[a->qn].n = n;
	a->qn++;
}

static void asm_emit(kp_mdb_asm *a)
{
	if (a->n > 0)
		asm_queue(a, a->w, a->n);
	a->n = 0;
}

void kp_mdb_asm_push(kp_mdb_asm *a, uint16_t word, int64_t now_ms)
{
	if (word == KP_MDB_WORD_BUS_RESET) {
		if (a->role == KP_MDB_ROLE_PERIPHERAL) {
			/* all devices to their power-up state: the same as RESET for us */
			static const uint16_t reset[] = {KP_MDB_MODE | 0x10, 0x10};
			asm_emit(a);
			a->discard = false;
			asm_queue(a, reset, 2);
		}
		return;
	}
	word &= 0x1FF;
	bool mode = (word & KP_MDB_MODE) != 0;
	a->last_ms = now_ms;
	if (a->role == KP_MDB_ROLE_PERIPHERAL) {
		if (mode) {
			asm_emit(a); /* a new block: what came before was all there was */
			a->discard = false;
		} else if (a->discard) {
			return;
		} else if (a->n == 0) {
			a->w[0] = word; /* a lone ACK/RET/NAK (or a stray byte) */
			a->n = 1;
			asm_emit(a);
			return;
		}
		if (a->n == KP_MDB_BLOCK_MAX) {
			asm_emit(a); /* longer than any block: cut, drop the rest */
			a->discard = true;
			return;
		}
		a->w[a->n++] = word;
		int len = kp_mdb_block_len(a->w, a->n);
		if (len > 0 && a->n >= (size_t)len)
			asm_emit(a);
		return;
	}
	/* VMC role: a peripheral's frame ends with the word that has the mode bit */
	if (a->discard) {
		if (mode)
			a->discard = false;
		return;
	}
	if (a->n == KP_MDB_BLOCK_MAX) {
		asm_emit(a);
		a->discard = !mode;
		return;
	}
	a->w[a->n++] = word;
	if (mode)
		asm_emit(a);
}

void kp_mdb_asm_gap(kp_mdb_asm *a, int64_t now_ms)
{
	if (now_ms - a->last_ms < a->gap_ms)
		return;
	if (a->n > 0) {
		a->cut_by_gap++;
		asm_emit(a);
	}
	a->discard = false;
}

bool kp_mdb_asm_pop(kp_mdb_asm *a, kp_mdb_frame *out)
{
	if (a->qn == 0)
		return false;
	*out = a->q[0];
	memmove(&a->q[0], &a->q[1], (a->qn - 1) * sizeof(a->q[0]));
	a->qn--;
	return true;
}

int64_t kp_mdb_asm_deadline(const kp_mdb_asm *a)
{
	return (a->n > 0 || a->discard) ? a->last_ms + a->gap_ms : 0;
}

/* ---- names ---- */

kp_err kp_mdb_framing_from_string(const char *text, kp_mdb_framing *out)
{
	if (!text || !out)
		return KP_ERR_INVALID;
	if (strcmp(text, "pair") == 0)
		*out = KP_MDB_FRAMING_PAIR;
	else if (strcmp(text, "parity") == 0)
		*out = KP_MDB_FRAMING_PARITY;
	else
		return KP_ERR_INVALID;
	return KP_OK;
}

const char *kp_mdb_framing_name(kp_mdb_framing f)
{
	return f == KP_MDB_FRAMING_PARITY ? "parity" : f == KP_MDB_FRAMING_PAIR ? "pair" : "?";
}

/* ---- the backend ---- */

struct serial {
	const kp_env *env;
	kp_mdb_serial_config cfg;
	char path[256];
	bool reopen;           /* opened by path: try again after a hang-up */
	int fd;
	bool tty;
	struct termios tio_space, tio_mark; /* parity framing: read/data, and mode-bit words */
	kp_mdb_unframer u;
	kp_mdb_asm a;
	int64_t last_byte_ms;
	int64_t reopen_at;
	int open_errno;        /* the last open failure logged, to log changes only */
	kp_mdb_serial_stats st;
};

static int64_t now_ms(const struct serial *s)
{
	return kp_now_mono(s->env);
}

static bool baud_speed(unsigned baud, speed_t *out)
{
	static const struct {
		unsigned baud;
		speed_t speed;
	} tab[] = {{9600, B9600}, {19200, B19200}, {38400, B38400}, {57600, B57600}, {115200, B115200}};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (tab[i].baud == baud) {
			*out = tab[i].speed;
			return true;
		}
	}
	return false;
}

/* Raw 8-bit mode; parity framing: sticky parity, space for reading (a mode
 * bit shows as a marked parity error), mark for sending a mode-bit word. */
static kp_err setup_tty(struct serial *s)
{
	struct termios t;
	speed_t speed;
	if (!baud_speed(s->cfg.baud, &speed))
		return KP_ERR_INVALID;
	if (tcgetattr(s->fd, &t) != 0)
		return KP_ERR_IO;
	cfmakeraw(&t);
	t.c_cflag |= CLOCAL | CREAD | CS8;
	t.c_cflag &= ~(CRTSCTS | CSTOPB);
	/* MIN 1 with O_NONBLOCK: no data is EAGAIN, so that 0 means hung up
	 * (MIN 0 would return 0 for both) */
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (cfsetispeed(&t, speed) != 0 || cfsetospeed(&t, speed) != 0)
		return KP_ERR_IO;
	if (s->cfg.framing == KP_MDB_FRAMING_PARITY) {
		t.c_cflag |= PARENB | CMSPAR;
		t.c_cflag &= ~PARODD;
		t.c_iflag |= INPCK | PARMRK;
		t.c_iflag &= ~(IGNPAR | ISTRIP);
	}
	s->tio_space = t;
	s->tio_mark = t;
	s->tio_mark.c_cflag |= PARODD;
	if (tcsetattr(s->fd, TCSANOW, &t) != 0)
		return KP_ERR_IO;
	tcflush(s->fd, TCIOFLUSH);
	return KP_OK;
}

/* Take fd as the port: set it up; on failure fd is closed. */
static kp_err adopt_fd(struct serial *s, int fd)
{
	s->fd = fd;
	s->tty = isatty(fd);
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
		goto fail;
	if (s->tty && setup_tty(s) != KP_OK)
		goto fail;
	if (!s->tty && s->cfg.framing == KP_MDB_FRAMING_PARITY)
		goto fail; /* parity needs a real UART */
	kp_mdb_unframer_init(&s->u, s->cfg.framing);
	kp_mdb_asm_init(&s->a, s->cfg.role, s->cfg.gap_ms);
	s->st.opens++;
	return KP_OK;
fail:
	close(fd);
	s->fd = -1;
	return KP_ERR_IO;
}

static void try_open(struct serial *s)
{
	int fd = open(s->path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	int e = errno;
	if (fd >= 0 && adopt_fd(s, fd) == KP_OK) {
		kp_log_info(s->env, "mdb: %s open (%s framing)", s->path, kp_mdb_framing_name(s->cfg.framing));
		s->open_errno = 0;
		return;
	}
	if (fd >= 0)
		e = EINVAL; /* opened, but not usable as the framing needs */
	if (e != s->open_errno)
		kp_log_warn(s->env, "mdb: %s: %s; trying again every %d ms", s->path,
			    e == EINVAL ? "cannot set it up (not a tty, or no sticky parity)" : strerror(e),
			    KP_MDB_SERIAL_REOPEN_MS);
	s->open_errno = e;
	s->reopen_at = now_ms(s) + KP_MDB_SERIAL_REOPEN_MS;
}

static void hang_up(struct serial *s, const char *why)
{
	kp_log_warn(s->env, "mdb: %s: %s%s", s->reopen ? s->path : "port", why,
		    s->reopen ? "; reopening" : "");
	close(s->fd);
	s->fd = -1;
	s->st.hangups++;
	s->a.n = 0;
	s->a.discard = false;
	s->open_errno = 0;
	s->reopen_at = now_ms(s) + KP_MDB_SERIAL_REOPEN_MS;
}

static void read_input(struct serial *s, int64_t now)
{
	uint8_t buf[256];
	uint16_t words[256 + 1]; /* see kp_mdb_unframer_feed */
	for (;;) {
		ssize_t r = read(s->fd, buf, sizeof(buf));
		if (r > 0) {
			if (now - s->last_byte_ms >= s->a.gap_ms)
				kp_mdb_unframer_reset(&s->u); /* a half word from long ago */
			s->last_byte_ms = now;
			size_t n = 0;
			kp_mdb_unframer_feed(&s->u, buf, (size_t)r, words, sizeof(words) / sizeof(words[0]), &n,
					     &s->st.bytes_dropped);
			for (size_t i = 0; i < n; i++) {
				if (words[i] == KP_MDB_WORD_BUS_RESET)
					s->st.bus_resets++;
				kp_mdb_asm_push(&s->a, words[i], now);
			}
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		hang_up(s, r == 0 ? "end of file" : strerror(errno));
		return;
	}
}

static kp_err serial_recv(void *impl, uint16_t *words, size_t cap, size_t *n)
{
	struct serial *s = impl;
	int64_t now = now_ms(s);
	if (s->fd < 0 && s->reopen && now >= s->reopen_at)
		try_open(s);
	if (s->fd >= 0)
		read_input(s, now);
	kp_mdb_asm_gap(&s->a, now);
	kp_mdb_frame f;
	if (kp_mdb_asm_pop(&s->a, &f)) {
		if (f.n > cap)
			return KP_ERR_TOO_BIG;
		memcpy(words, f.w, f.n * sizeof(words[0]));
		*n = f.n;
		s->st.frames_in++;
		s->st.cut_by_gap = s->a.cut_by_gap;
		return KP_OK;
	}
	s->st.cut_by_gap = s->a.cut_by_gap;
	if (s->fd < 0 && !s->reopen)
		return KP_ERR_IO;
	return KP_ERR_TIMEOUT;
}

static kp_err write_all(struct serial *s, const uint8_t *b, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(s->fd, b + off, len - off);
		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd p = {.fd = s->fd, .events = POLLOUT};
			if (poll(&p, 1, WRITE_WAIT_MS) <= 0)
				return KP_ERR_TIMEOUT;
			continue;
		}
		hang_up(s, strerror(errno));
		return KP_ERR_IO;
	}
	return KP_OK;
}

/* Parity framing: each run of words with the same mode bit goes out with
 * the parity switched to match (after the previous run has left the UART);
 * reading continues in space parity. */
static kp_err send_parity(struct serial *s, const uint16_t *words, size_t n)
{
	uint8_t b[KP_MDB_BLOCK_MAX];
	size_t i = 0;
	kp_err err = KP_OK;
	while (i < n && err == KP_OK) {
		bool mode = (words[i] & KP_MDB_MODE) != 0;
		size_t j = i;
		while (j < n && ((words[j] & KP_MDB_MODE) != 0) == mode) {
			b[j - i] = (uint8_t)words[j];
			j++;
		}
		if (tcsetattr(s->fd, TCSADRAIN, mode ? &s->tio_mark : &s->tio_space) != 0)
			err = KP_ERR_IO;
		else
			err = write_all(s, b, j - i);
		i = j;
	}
	if (s->fd >= 0 && tcsetattr(s->fd, TCSADRAIN, &s->tio_space) != 0 && err == KP_OK)
		err = KP_ERR_IO;
	return err;
}

static kp_err serial_send(void *impl, const uint16_t *words, size_t n)
{
	struct serial *s = impl;
	if (n == 0 || n > KP_MDB_BLOCK_MAX || !words)
		return KP_ERR_INVALID;
	if (s->fd < 0)
		return KP_ERR_IO;
	if (s->cfg.framing == KP_MDB_FRAMING_PARITY && s->tty)
		return send_parity(s, words, n);
	uint8_t b[2 * KP_MDB_BLOCK_MAX];
	size_t len = kp_mdb_frame_bytes(s->cfg.framing, words, n, b, sizeof(b));
	return write_all(s, b, len);
}

static int serial_fd(void *impl)
{
	const struct serial *s = impl;
	return s->fd;
}

static int64_t serial_deadline(void *impl)
{
	const struct serial *s = impl;
	if (s->fd < 0)
		return s->reopen ? s->reopen_at : 0;
	int64_t d = kp_mdb_asm_deadline(&s->a);
	return (d == 0 && s->a.qn > 0) ? now_ms(s) : d;
}

static void serial_close(void *impl)
{
	struct serial *s = impl;
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s);
}

static const kp_mdb_transport_ops serial_ops = {
	.name = "serial",
	.recv = serial_recv,
	.send = serial_send,
	.fd = serial_fd,
	.deadline = serial_deadline,
	.close = serial_close,
};

static kp_err serial_new(struct serial **out, const kp_mdb_serial_config *cfg, const kp_env *env)
{
	speed_t speed;
	if (!cfg || !env || (cfg->framing != KP_MDB_FRAMING_PAIR && cfg->framing != KP_MDB_FRAMING_PARITY) ||
	    (cfg->role != KP_MDB_ROLE_PERIPHERAL && cfg->role != KP_MDB_ROLE_VMC) || cfg->gap_ms < 0)
		return KP_ERR_INVALID;
	struct serial *s = calloc(1, sizeof(*s));
	if (!s)
		return KP_ERR_NOMEM;
	s->env = env;
	s->cfg = *cfg;
	s->cfg.path = NULL;
	if (s->cfg.baud == 0)
		s->cfg.baud = 9600;
	if (s->cfg.gap_ms == 0)
		s->cfg.gap_ms = cfg->framing == KP_MDB_FRAMING_PAIR ? KP_MDB_SERIAL_GAP_PAIR_MS
								 : KP_MDB_SERIAL_GAP_PARITY_MS;
	if (!baud_speed(s->cfg.baud, &speed)) {
		free(s);
		return KP_ERR_INVALID;
	}
	s->fd = -1;
	kp_mdb_unframer_init(&s->u, s->cfg.framing);
	kp_mdb_asm_init(&s->a, s->cfg.role, s->cfg.gap_ms);
	*out = s;
	return KP_OK;
}

kp_err kp_mdb_serial_open(kp_mdb_transport *t, const kp_mdb_serial_config *cfg, const kp_env *env)
{
	struct serial *s = NULL;
	if (!t || !cfg || !cfg->path || !cfg->path[0] || strlen(cfg->path) >= sizeof(s->path))
		return KP_ERR_INVALID;
	kp_err err = serial_new(&s, cfg, env);
	if (err != KP_OK)
		return err;
	snprintf(s->path, sizeof(s->path), "%s", cfg->path);
	s->reopen = true;
	try_open(s);
	t->ops = &serial_ops;
	t->impl = s;
	return KP_OK;
}

kp_err kp_mdb_serial_open_fd(kp_mdb_transport *t, int fd, const kp_mdb_serial_config *cfg, const kp_env *env)
{
	struct serial *s = NULL;
	if (!t || fd < 0) {
		if (fd >= 0)
			close(fd);
		return KP_ERR_INVALID;
	}
	kp_err err = serial_new(&s, cfg, env);
	if (err != KP_OK) {
		close(fd);
		return err;
	}
	err = adopt_fd(s, fd);
	if (err != KP_OK) {
		free(s);
		return err;
	}
	t->ops = &serial_ops;
	t->impl = s;
	return KP_OK;
}

bool kp_mdb_serial_stats_get(const kp_mdb_transport *t, kp_mdb_serial_stats *out)
{
	if (!t || t->ops != &serial_ops)
		return false;
	const struct serial *s = t->impl;
	*out = s->st;
	return true;
}
