#include "virtio_vsock.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmdline.h"
#include "console.h"
#include "io.h"
#include "pci.h"
#include "scenarios.h"
#include "scratch.h"
#include "string.h"
#include "timer.h"
#include "virtio.h"

#define RXQ 0
#define TXQ 1
#define EVQ 2
#define QUEUES 3
#define HDR_LEN 44
#define BUF_LEN (HDR_LEN + VSOCK_BUF_PAYLOAD)
#define RX_BUFS 16
#define TX_BUFS 16
#define EV_BUFS 4
#define TYPE_STREAM 1
#define SHUTDOWN_RCV 1
#define SHUTDOWN_SEND 2
#define EVENT_TRANSPORT_RESET 0
/* Without progress for this long, a scenario that should end gives up. */
#define IDLE_TIMEOUT_US 30000000u
/* How long vsock-connect waits for the host's RST after closing. */
#define CLOSE_TIMEOUT_US 2000000u
#define TX_WAIT_US 5000000u
#define WHY_MAX 160
#define NO_BUF (-1)

enum op {
	OP_REQUEST = 1,
	OP_RESPONSE = 2,
	OP_RST = 3,
	OP_SHUTDOWN = 4,
	OP_RW = 5,
	OP_CREDIT_UPDATE = 6,
	OP_CREDIT_REQUEST = 7,
};

struct hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
} __attribute__((packed));

_Static_assert(sizeof(struct hdr) == HDR_LEN, "virtio_vsock_hdr is 44 bytes");

enum conn_state { CONN_FREE, CONN_CONNECTING, CONN_OPEN };

struct conn {
	enum conn_state state;
	uint32_t local_port; /* the guest's side */
	uint32_t peer_port;  /* the host's side */
	uint32_t tx_cnt;     /* payload bytes sent */
	uint32_t fwd_cnt;    /* payload bytes received and consumed */
	uint32_t peer_buf_alloc;
	uint32_t peer_fwd_cnt;
	bool peer_closed; /* the host sends no more */
	uint64_t bytes;   /* payload bytes received */
	/* vsock-echo: bytes received, not yet sent back (fwd_cnt counts them only when sent). */
	uint32_t pending;
	uint32_t pending_head;
	/* vsock-connect: the reply line. */
	char line[VSOCK_REPLY_MAX + 1];
	uint32_t line_len;
	bool line_done;
};

struct vsock {
	struct virtio_dev dev;
	struct virtq q[QUEUES];
	uint64_t cid;
	bool echo; /* vsock-echo: accept REQUESTs in [listen_first, listen_first + listen_count) */
	uint32_t listen_first;
	uint32_t listen_count;
	bool tx_busy[TX_BUFS];
	int tx_buf_of[VIRTQ_MAX_SIZE];
	int rx_buf_of[VIRTQ_MAX_SIZE];
	int ev_buf_of[VIRTQ_MAX_SIZE];
	struct conn conns[VSOCK_MAX_CONNS];
	uint32_t completed;
	uint64_t completed_bytes;
	bool progress;
	bool failed;
	char why[WHY_MAX];
};

static struct virtq_mem rings[QUEUES];
static uint8_t rx_bufs[RX_BUFS][BUF_LEN] __attribute__((aligned(64)));
static uint8_t tx_bufs[TX_BUFS][BUF_LEN] __attribute__((aligned(64)));
static uint32_t ev_bufs[EV_BUFS];
/*
 * The echo's per-connection ring of unsent bytes, as large as the credit the guest grants: in
 * scratch memory (512 KiB would push the image past its first 2 MiB).
 */
static uint8_t (*echo_rings)[VSOCK_GUEST_BUF_ALLOC];
static struct vsock vs;

static bool fail(struct vsock *v, const char *why)
{
	if (!v->failed) {
		v->failed = true;
		ksnprintf(v->why, sizeof(v->why), "%s", why);
	}
	return false;
}

static bool post_rx(struct vsock *v, int buf)
{
	struct virtq_buf b = {rx_bufs[buf], BUF_LEN, true};
	int head = virtq_add(&v->q[RXQ], &b, 1);
	if (head < 0)
		return fail(v, "no free rx descriptor");
	v->rx_buf_of[head] = buf;
	return true;
}

static bool post_event(struct vsock *v, int buf)
{
	struct virtq_buf b = {&ev_bufs[buf], sizeof(ev_bufs[buf]), true};
	int head = virtq_add(&v->q[EVQ], &b, 1);
	if (head < 0)
		return fail(v, "no free event descriptor");
	v->ev_buf_of[head] = buf;
	return true;
}

static bool setup(struct vsock *v, const struct pci_device *pci)
{
	bool ok = virtio_open(&v->dev, pci) && virtio_negotiate(&v->dev, 0);
	for (uint16_t i = 0; ok && i < QUEUES; i++)
		ok = virtq_init(&v->dev, &v->q[i], i, &rings[i]);
	ok = ok && virtio_config_read(&v->dev, 0, 8, &v->cid);
	if (!ok)
		return fail(v, v->dev.error);
	v->cid &= 0xFFFFFFFFu; /* the upper half is reserved */
	virtio_driver_ok(&v->dev);
	for (int i = 0; i < RX_BUFS; i++) {
		if (!post_rx(v, i))
			return false;
	}
	for (int i = 0; i < EV_BUFS; i++) {
		if (!post_event(v, i))
			return false;
	}
	virtq_kick(&v->q[RXQ]);
	virtq_kick(&v->q[EVQ]);
	return true;
}

/* Frees the tx buffers the device is done with. */
static void reap_tx(struct vsock *v)
{
	struct virtq_completion done;
	enum virtq_poll r;
	while ((r = virtq_take_used(&v->dev, &v->q[TXQ], &done)) == VIRTQ_USED) {
		int buf = v->tx_buf_of[done.head];
		if (buf >= 0)
			v->tx_busy[buf] = false;
		v->tx_buf_of[done.head] = NO_BUF;
	}
	if (r == VIRTQ_BAD)
		fail(v, v->dev.error);
}

static int tx_alloc(struct vsock *v)
{
	struct deadline d;
	deadline_start(&d, TX_WAIT_US);
	for (;;) {
		for (int i = 0; i < TX_BUFS; i++) {
			if (!v->tx_busy[i])
				return i;
		}
		reap_tx(v);
		if (v->failed || deadline_expired(&d)) {
			fail(v, "the device returns no tx buffers");
			return NO_BUF;
		}
	}
}

/* Sends one packet on connection c's ports; RW payload counts against the host's credit. */
static bool send_packet(struct vsock *v, struct conn *c, enum op op, uint32_t flags,
			const void *data, uint32_t len)
{
	int buf = tx_alloc(v);
	if (buf == NO_BUF)
		return false;
	struct hdr h = {
		.src_cid = v->cid,
		.dst_cid = VSOCK_HOST_CID,
		.src_port = c->local_port,
		.dst_port = c->peer_port,
		.len = len,
		.type = TYPE_STREAM,
		.op = (uint16_t)op,
		.flags = flags,
		.buf_alloc = VSOCK_GUEST_BUF_ALLOC,
		.fwd_cnt = c->fwd_cnt,
	};
	memcpy(tx_bufs[buf], &h, HDR_LEN);
	if (len > 0)
		memcpy(tx_bufs[buf] + HDR_LEN, data, len);
	struct virtq_buf b = {tx_bufs[buf], HDR_LEN + len, false};
	int head = virtq_add(&v->q[TXQ], &b, 1);
	if (head < 0)
		return fail(v, "no free tx descriptor");
	v->tx_buf_of[head] = buf;
	v->tx_busy[buf] = true;
	virtq_kick(&v->q[TXQ]);
	if (op == OP_RW)
		c->tx_cnt += len;
	v->progress = true;
	return true;
}

/* Answers a packet for no connection with RST (never an RST with an RST). */
static void refuse(struct vsock *v, const struct hdr *h)
{
	if (h->op == OP_RST)
		return;
	struct conn reply = {.local_port = h->dst_port, .peer_port = h->src_port};
	send_packet(v, &reply, OP_RST, 0, 0, 0);
}

static struct conn *find_conn(struct vsock *v, uint32_t local_port, uint32_t peer_port)
{
	for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct conn *c = &v->conns[i];
		if (c->state != CONN_FREE && c->local_port == local_port && c->peer_port == peer_port)
			return c;
	}
	return NULL;
}

static struct conn *new_conn(struct vsock *v, uint32_t local_port, uint32_t peer_port)
{
	for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct conn *c = &v->conns[i];
		if (c->state == CONN_FREE) {
			*c = (struct conn){.local_port = local_port, .peer_port = peer_port};
			return c;
		}
	}
	return NULL;
}

/* The echo ends a connection: its bytes are counted. */
static void finish_conn(struct vsock *v, struct conn *c)
{
	if (v->echo && c->state == CONN_OPEN) {
		kprintf("oxguest: vsock-echo connection port=%u bytes=%llu\n", c->local_port,
			(unsigned long long)c->bytes);
		v->completed++;
		v->completed_bytes += c->bytes;
	}
	c->state = CONN_FREE;
}

static void take_data(struct vsock *v, struct conn *c, const uint8_t *data, uint32_t len)
{
	c->bytes += len;
	if (v->echo) {
		if (len > VSOCK_GUEST_BUF_ALLOC - c->pending) {
			/* The host exceeded the credit the guest granted. */
			finish_conn(v, c);
			fail(v, "the host sent more than its credit");
			return;
		}
		for (uint32_t i = 0; i < len; i++) {
			uint32_t at = (c->pending_head + c->pending + i) % VSOCK_GUEST_BUF_ALLOC;
			echo_rings[c - v->conns][at] = data[i];
		}
		c->pending += len;
		return;
	}
	c->fwd_cnt += len;
	for (uint32_t i = 0; i < len && !c->line_done; i++) {
		char ch = (char)data[i];
		if (ch == '\n') {
			c->line_done = true;
		} else if (c->line_len < VSOCK_REPLY_MAX) {
			c->line[c->line_len++] = (ch >= 0x20 && ch < 0x7F) ? ch : '?';
		}
	}
	c->line[c->line_len] = '\0';
}

static void request(struct vsock *v, const struct hdr *h)
{
	bool listening = v->echo && h->dst_port >= v->listen_first &&
			 h->dst_port - v->listen_first < v->listen_count;
	struct conn *c = listening && find_conn(v, h->dst_port, h->src_port) == NULL
				 ? new_conn(v, h->dst_port, h->src_port)
				 : NULL;
	if (c == NULL) {
		refuse(v, h);
		return;
	}
	c->state = CONN_OPEN;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	send_packet(v, c, OP_RESPONSE, 0, 0, 0);
}

/* One packet from the device. */
static void dispatch(struct vsock *v, const struct hdr *h, const uint8_t *payload)
{
	if (h->dst_cid != v->cid || h->src_cid != VSOCK_HOST_CID || h->type != TYPE_STREAM)
		return;
	struct conn *c = find_conn(v, h->dst_port, h->src_port);
	if (c == NULL) {
		if (h->op == OP_REQUEST)
			request(v, h);
		else
			refuse(v, h);
		return;
	}
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case OP_RESPONSE:
		if (c->state == CONN_CONNECTING)
			c->state = CONN_OPEN;
		break;
	case OP_RST:
		finish_conn(v, c);
		break;
	case OP_SHUTDOWN:
		if (h->flags & SHUTDOWN_SEND)
			c->peer_closed = true;
		break;
	case OP_RW:
		if (c->state == CONN_OPEN)
			take_data(v, c, payload, h->len);
		break;
	case OP_CREDIT_REQUEST:
		send_packet(v, c, OP_CREDIT_UPDATE, 0, 0, 0);
		break;
	default:
		break;
	}
}

static void poll_rx(struct vsock *v)
{
	struct virtq_completion done;
	enum virtq_poll r;
	bool posted = false;
	while ((r = virtq_take_used(&v->dev, &v->q[RXQ], &done)) == VIRTQ_USED) {
		int buf = v->rx_buf_of[done.head];
		v->progress = true;
		if (buf < 0)
			continue;
		/* The device wrote the buffer behind the compiler's back. */
		compiler_barrier();
		struct hdr h;
		memcpy(&h, rx_bufs[buf], HDR_LEN);
		if (done.len >= HDR_LEN && h.len <= done.len - HDR_LEN)
			dispatch(v, &h, rx_bufs[buf] + HDR_LEN);
		posted = post_rx(v, buf);
	}
	if (r == VIRTQ_BAD)
		fail(v, v->dev.error);
	if (posted)
		virtq_kick(&v->q[RXQ]);
}

static void poll_events(struct vsock *v)
{
	struct virtq_completion done;
	bool posted = false;
	while (virtq_take_used(&v->dev, &v->q[EVQ], &done) == VIRTQ_USED) {
		int buf = v->ev_buf_of[done.head];
		if (buf < 0)
			continue;
		compiler_barrier();
		if (done.len >= sizeof(uint32_t) && ev_bufs[buf] == EVENT_TRANSPORT_RESET) {
			kprintf("oxguest: vsock transport reset\n");
			/* Every connection belonged to the transport that is gone. */
			for (int i = 0; i < VSOCK_MAX_CONNS; i++)
				v->conns[i].state = CONN_FREE;
			v->progress = true;
		}
		posted = post_event(v, buf);
	}
	if (posted)
		virtq_kick(&v->q[EVQ]);
}

static void poll_all(struct vsock *v)
{
	poll_rx(v);
	reap_tx(v);
	poll_events(v);
}

static uint32_t peer_free(const struct conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
	return in_flight > c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* Sends back what a connection received, within the host's credit. */
static void echo_pending(struct vsock *v, struct conn *c)
{
	static uint8_t chunk[VSOCK_BUF_PAYLOAD];
	while (c->state == CONN_OPEN && c->pending > 0 && !v->failed) {
		uint32_t len = c->pending;
		if (len > VSOCK_BUF_PAYLOAD)
			len = VSOCK_BUF_PAYLOAD;
		if (len > peer_free(c))
			len = peer_free(c);
		if (len == 0)
			return; /* the host's next packet carries its credit */
		for (uint32_t i = 0; i < len; i++)
			chunk[i] = echo_rings[c - v->conns][(c->pending_head + i) % VSOCK_GUEST_BUF_ALLOC];
		c->pending_head = (c->pending_head + len) % VSOCK_GUEST_BUF_ALLOC;
		c->pending -= len;
		/* Consumed now: the RW below tells the host its credit is back. */
		c->fwd_cnt += len;
		send_packet(v, c, OP_RW, 0, chunk, len);
	}
}

static bool option(const char *name, const char *cmdline, const char *key, uint64_t min,
		   uint64_t max, uint64_t fallback, uint64_t *value)
{
	char why[WHY_MAX];
	const char *text = NULL;
	switch (cmdline_u64(cmdline, key, max, value, &text)) {
	case OPTION_ABSENT:
		*value = fallback;
		return true;
	case OPTION_SET:
		if (*value >= min)
			return true;
		break;
	case OPTION_INVALID:
		break;
	}
	ksnprintf(why, sizeof(why), "bad %s= value (decimal, %llu to %llu)", key,
		  (unsigned long long)min, (unsigned long long)max);
	scenario_fail(name, why);
	return false;
}

/* Options and device, shared by both scenarios; prints the device line. */
static bool start(struct vsock *v, const char *name, const char *cmdline, unsigned pci_flags)
{
	uint64_t port;
	uint64_t ports;
	if (!option(name, cmdline, "vsock-port", 1, 0xFFFFFFFFull - VSOCK_MAX_PORTS,
		    VSOCK_DEFAULT_PORT, &port) ||
	    !option(name, cmdline, "vsock-ports", 1, VSOCK_MAX_PORTS, 1, &ports))
		return false;
	memset(v, 0, sizeof(*v));
	for (int i = 0; i < VIRTQ_MAX_SIZE; i++) {
		v->tx_buf_of[i] = NO_BUF;
		v->rx_buf_of[i] = NO_BUF;
		v->ev_buf_of[i] = NO_BUF;
	}
	v->listen_first = (uint32_t)port;
	v->listen_count = (uint32_t)ports;
	const struct pci_device *pci = scenario_virtio_device(name, pci_flags, VIRTIO_ID_VSOCK, "virtio-vsock");
	if (pci == NULL)
		return false;
	if (!setup(v, pci)) {
		scenario_fail(name, v->why);
		return false;
	}
	char bdf[8];
	pci_format_bdf(pci->bdf, bdf);
	kprintf("oxguest: virtio-vsock %s features=0x%llx queue_size=%u cid=%llu\n", bdf,
		(unsigned long long)v->dev.features, v->q[RXQ].size, (unsigned long long)v->cid);
	return true;
}

void run_vsock_echo(const char *name, const struct boot_info *info, unsigned pci_flags)
{
	struct vsock *v = &vs;
	const char *cmdline = info->cmdline;
	uint64_t conns;
	uint64_t rings;
	char why[WHY_MAX];
	if (!scratch_region(info, (uint64_t)VSOCK_MAX_CONNS * VSOCK_GUEST_BUF_ALLOC, &rings, why,
			    sizeof(why))) {
		char reason[WHY_MAX + 40];
		ksnprintf(reason, sizeof(reason), "no memory for the echo buffers: %s", why);
		scenario_fail(name, reason);
		return;
	}
	echo_rings = (uint8_t (*)[VSOCK_GUEST_BUF_ALLOC])(uintptr_t)rings;
	if (!option(name, cmdline, "vsock-conns", 0, 1000, 1, &conns) ||
	    !start(v, name, cmdline, pci_flags))
		return;
	v->echo = true;
	kprintf("oxguest: vsock-echo listening on ports %u-%u\n", v->listen_first,
		v->listen_first + v->listen_count - 1);
	struct deadline idle;
	deadline_start(&idle, IDLE_TIMEOUT_US);
	while (!v->failed && (conns == 0 || v->completed < conns)) {
		v->progress = false;
		poll_all(v);
		for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
			struct conn *c = &v->conns[i];
			echo_pending(v, c);
			if (c->state == CONN_OPEN && c->peer_closed && c->pending == 0) {
				send_packet(v, c, OP_RST, 0, 0, 0);
				finish_conn(v, c);
			}
		}
		if (conns == 0)
			continue;
		if (v->progress) {
			deadline_start(&idle, IDLE_TIMEOUT_US);
		} else if (deadline_expired(&idle)) {
			ksnprintf(v->why, sizeof(v->why), "timeout: %u of %llu connections ended",
				  v->completed, (unsigned long long)conns);
			v->failed = true;
		}
	}
	virtio_reset(&v->dev);
	if (v->failed) {
		scenario_fail(name, v->why);
		return;
	}
	char details[64];
	ksnprintf(details, sizeof(details), "connections=%u bytes=%llu", v->completed,
		  (unsigned long long)v->completed_bytes);
	scenario_pass(name, details);
}

/* Polls until done(c) or the deadline; false (v->why says) on timeout or failure. */
static bool wait_for(struct vsock *v, struct conn *c, bool (*done)(const struct conn *),
		     uint32_t timeout_us, const char *what)
{
	struct deadline d;
	deadline_start(&d, timeout_us);
	while (!done(c)) {
		poll_all(v);
		if (v->failed)
			return false;
		if (deadline_expired(&d)) {
			char why[WHY_MAX];
			ksnprintf(why, sizeof(why), "port %u: no %s within %u ms", c->peer_port, what,
				  timeout_us / 1000);
			return fail(v, why);
		}
	}
	return true;
}

static bool not_connecting(const struct conn *c)
{
	return c->state != CONN_CONNECTING;
}

static bool has_reply(const struct conn *c)
{
	return c->state != CONN_OPEN || c->line_done || c->peer_closed;
}

static bool closed(const struct conn *c)
{
	return c->state == CONN_FREE;
}

/* One connection of vsock-connect: line out, line back, close. */
static bool connect_once(struct vsock *v, uint32_t local_port, uint32_t peer_port)
{
	char why[WHY_MAX];
	char hello[80];
	struct conn *c = new_conn(v, local_port, peer_port);
	if (c == NULL)
		return fail(v, "no free connection slot");
	c->state = CONN_CONNECTING;
	if (!send_packet(v, c, OP_REQUEST, 0, 0, 0) ||
	    !wait_for(v, c, not_connecting, IDLE_TIMEOUT_US, "answer to REQUEST"))
		return false;
	if (c->state != CONN_OPEN) {
		ksnprintf(why, sizeof(why), "host port %u refused the connection", peer_port);
		return fail(v, why);
	}
	int len = ksnprintf(hello, sizeof(hello), "hello from cid %llu port %u to host port %u\n",
			    (unsigned long long)v->cid, local_port, peer_port);
	if (!send_packet(v, c, OP_RW, 0, hello, (uint32_t)len) ||
	    !wait_for(v, c, has_reply, IDLE_TIMEOUT_US, "reply line"))
		return false;
	if (!c->line_done) {
		ksnprintf(why, sizeof(why), "port %u: the host closed before a whole line (\"%s\")",
			  peer_port, c->line);
		return fail(v, why);
	}
	kprintf("oxguest: vsock-connect port=%u reply=%s\n", peer_port, c->line);
	send_packet(v, c, OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND, 0, 0);
	if (!wait_for(v, c, closed, CLOSE_TIMEOUT_US, "RST after SHUTDOWN")) {
		/* The host may forget to answer; the connection is over for the guest anyway. */
		v->failed = false;
		v->why[0] = '\0';
		c->state = CONN_FREE;
	}
	return true;
}

void run_vsock_connect(const char *name, const char *cmdline, unsigned pci_flags)
{
	struct vsock *v = &vs;
	if (!start(v, name, cmdline, pci_flags))
		return;
	bool ok = true;
	for (uint32_t i = 0; ok && i < v->listen_count; i++)
		ok = connect_once(v, VSOCK_CONNECT_LOCAL_PORT + i, v->listen_first + i);
	virtio_reset(&v->dev);
	if (!ok) {
		scenario_fail(name, v->why);
		return;
	}
	char details[32];
	ksnprintf(details, sizeof(details), "connections=%u", v->listen_count);
	scenario_pass(name, details);
}
