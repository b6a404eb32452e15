package notifications

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Webhook settings.
const (
	DefaultWebhookTimeout = 5 * time.Second
	// MaxWebhookTimeout leaves room in one attempt (handleTimeout) for the
	// users lookup before the delivery.
	MaxWebhookTimeout = 15 * time.Second

	// WebhookType names the payload's shape and version, as Standard
	// Webhooks recommends; a change of shape is a new type.
	WebhookType = "blueprint.notification.v1"

	// A whsec_ secret is the Standard Webhooks form: base64 of the key,
	// which the specification wants 24 to 64 bytes long.
	webhookSecretPrefix = "whsec_"
	minWebhookKeyBytes  = 24
	maxWebhookKeyBytes  = 64
	// A secret in any other form is used as typed. Such strings carry less
	// than a byte of randomness per character (hex, passphrases), hence
	// the longer minimum.
	minRawWebhookSecret = 32

	// maxWebhookResponseBytes is how much of an answer is read (and thrown
	// away) so the connection can serve the next delivery.
	maxWebhookResponseBytes = 64 << 10
)

// WebhookConfig configures a WebhookChannel.
type WebhookConfig struct {
	// URL receives a POST per notification; see CheckWebhookURL.
	URL string
	// Secret signs every request; see ParseWebhookSecret.
	Secret string
	// Timeout bounds one request, from dial to the last byte of the answer.
	Timeout time.Duration
	// AllowLinkLocal permits link-local receivers (169.254.0.0/16,
	// fe80::/10). Cloud metadata endpoints stay refused regardless.
	AllowLinkLocal bool
	// UserAgent identifies the sender to the receiver.
	UserAgent string

	Logger     *slog.Logger
	Tracer     trace.TracerProvider
	Meter      metric.MeterProvider
	Propagator propagation.TextMapPropagator
	Now        func() time.Time
}

// WebhookChannel delivers a notification by POSTing it, signed the Standard
// Webhooks way (https://www.standardwebhooks.com), to one URL. The receiver
// decides the outcome with its status: 2xx delivered; 408, 425, 429, 5xx,
// a timeout or no connection are worth a retry; any other answer is
// ErrUndeliverable.
type WebhookChannel struct {
	url       string
	key       []byte
	timeout   time.Duration
	userAgent string
	client    *http.Client
	transport *http.Transport
	logger    *slog.Logger
	now       func() time.Time
}

// NewWebhookChannel checks the URL and the secret and returns the channel.
func NewWebhookChannel(cfg WebhookConfig) (*WebhookChannel, error) {
	u, err := CheckWebhookURL(cfg.URL, cfg.AllowLinkLocal)
	if err != nil {
		return nil, fmt.Errorf("webhook URL: %w", err)
	}
	key, err := ParseWebhookSecret(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultWebhookTimeout
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "blueprint"
	}
	transport := &http.Transport{
		// No proxy: the address check below must see the receiver itself.
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   cfg.Timeout,
			KeepAlive: 30 * time.Second,
			// The URL was checked at start, but its name may resolve to
			// anything later (DNS rebinding): check the address dialled.
			Control: func(_, address string, _ syscall.RawConn) error {
				return checkDialAddress(address, cfg.AllowLinkLocal)
			},
		}).DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	return &WebhookChannel{
		url:       u.String(),
		key:       key,
		timeout:   cfg.Timeout,
		userAgent: cfg.UserAgent,
		transport: transport,
		client: &http.Client{
			Transport: otelhttp.NewTransport(transport,
				otelhttp.WithTracerProvider(cfg.Tracer),
				otelhttp.WithMeterProvider(cfg.Meter),
				otelhttp.WithPropagators(cfg.Propagator),
				otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
					return r.Method + " webhook"
				}),
			),
			// A redirect is an answer, not an instruction: following it would
			// send the signed body somewhere never configured.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		logger: cfg.Logger,
		now:    cfg.Now,
	}, nil
}

// Name implements Channel.
func (*WebhookChannel) Name() string { return "webhook" }

// Close releases idle connections.
func (c *WebhookChannel) Close() error {
	c.transport.CloseIdleConnections()
	return nil
}

// webhookPayload is the JSON body, in the Standard Webhooks shape: a type,
// when the event happened, and the data.
type webhookPayload struct {
	Type      string      `json:"type"`
	Timestamp time.Time   `json:"timestamp"`
	Data      webhookData `json:"data"`
}

type webhookData struct {
	// EventID is also the webhook-id and Idempotency-Key headers.
	EventID string `json:"eventId"`
	OrderID string `json:"orderId"`
	UserID  string `json:"userId"`
	To      string `json:"to"`
	Subject string `json:"subject"`
	Body    string `json:"body"`
}

// Deliver implements Channel. Every attempt is signed afresh, with its own
// webhook-timestamp, so a receiver can refuse stale replays; the id stays
// the event id, so it can also drop a repeat it already handled.
func (c *WebhookChannel) Deliver(ctx context.Context, m Message) error {
	body, err := json.Marshal(webhookPayload{
		Type:      WebhookType,
		Timestamp: m.OccurredAt.UTC(),
		Data: webhookData{
			EventID: m.EventID, OrderID: m.OrderID, UserID: m.UserID,
			To: m.To, Subject: m.Subject, Body: m.Body,
		},
	})
	if err != nil {
		return fmt.Errorf("encode webhook: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	ts := c.now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Idempotency-Key", m.EventID)
	req.Header.Set("webhook-id", m.EventID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", signWebhook(c.key, m.EventID, ts, body))

	resp, err := c.client.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may hold a token in its query:
		// keep it out of logs and dead-letter reasons.
		if uerr, ok := errors.AsType[*url.Error](err); ok {
			err = uerr.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("webhook did not answer within %v: %w", c.timeout, err)
		}
		return fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxWebhookResponseBytes))
	if err := webhookStatusError(resp.StatusCode); err != nil {
		return err
	}
	c.logger.InfoContext(ctx, "notification delivered",
		"channel", "webhook", "event_id", m.EventID, "order_id", m.OrderID, "user_id", m.UserID,
		"to", maskEmail(m.To), "subject", m.Subject, "status", resp.StatusCode)
	return nil
}

// webhookStatusError classifies the receiver's answer: nil when delivered,
// ErrUndeliverable when asking again cannot help, a plain error otherwise.
func webhookStatusError(status int) error {
	switch {
	case status >= 200 && status < 300:
		return nil
	case status >= 500, status == http.StatusRequestTimeout, status == http.StatusTooEarly,
		status == http.StatusTooManyRequests:
		return fmt.Errorf("webhook answered %d %s", status, http.StatusText(status))
	default:
		return fmt.Errorf("%w: webhook answered %d %s", ErrUndeliverable, status, http.StatusText(status))
	}
}

// signWebhook is the Standard Webhooks signature: the base64 HMAC-SHA256 of
// "id.timestamp.body", labelled v1.
func signWebhook(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", id, timestamp)
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ParseWebhookSecret returns the signing key of a secret: either
// "whsec_<base64>" (the Standard Webhooks form, 24 to 64 bytes once
// decoded), or any other string of at least 32 bytes, used as it is.
// Errors never repeat the secret.
func ParseWebhookSecret(secret string) ([]byte, error) {
	if encoded, ok := strings.CutPrefix(secret, webhookSecretPrefix); ok {
		key, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil {
			return nil, errors.New("a whsec_ secret must be base64 after the prefix")
		}
		if len(key) < minWebhookKeyBytes || len(key) > maxWebhookKeyBytes {
			return nil, fmt.Errorf("a whsec_ secret must decode to %d to %d bytes, not %d",
				minWebhookKeyBytes, maxWebhookKeyBytes, len(key))
		}
		return key, nil
	}
	if len(secret) < minRawWebhookSecret {
		return nil, fmt.Errorf("%d bytes is too short; use at least %d, or whsec_ and base64",
			len(secret), minRawWebhookSecret)
	}
	return []byte(secret), nil
}

// metadataHosts are names of cloud instance metadata services. Whatever
// they resolve to is also refused at dial time; naming them here makes the
// mistake fail at start.
var metadataHosts = []string{
	"metadata.google.internal", "metadata.goog", "instance-data.ec2.internal", "metadata.tencentyun.com",
}

// metadataAddrs are the cloud metadata endpoints: AWS, Azure, GCP, Oracle
// and others on 169.254.169.254 (ECS task metadata on 169.254.170.2), AWS
// over IPv6 on fd00:ec2::254, Alibaba on 100.100.100.200. A receiver never
// lives there, and a request that reaches one can leak credentials.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),
	netip.MustParseAddr("169.254.170.2"),
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("100.100.100.200"),
}

// CheckWebhookURL parses a receiver URL and refuses the ones a webhook must
// not reach: a scheme other than http or https, no host, a cloud metadata
// endpoint, an unspecified, broadcast or multicast address, and a
// link-local one unless allowLinkLocal. Loopback and private addresses are
// allowed: a local sink or an in-cluster receiver is the normal case.
// Names are not resolved here (the receiver may not be up yet); the
// addresses they resolve to are checked on every dial.
func CheckWebhookURL(raw string, allowLinkLocal bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("scheme %q is not http or https", u.Scheme)
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return nil, errors.New("no host")
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if reason := refusedAddr(addr, allowLinkLocal); reason != "" {
			return nil, fmt.Errorf("host %s is %s", addr, reason)
		}
	}
	if slices.Contains(metadataHosts, host) {
		return nil, fmt.Errorf("host %s is a cloud metadata endpoint", host)
	}
	return u, nil
}

// checkDialAddress refuses to connect to an address CheckWebhookURL would
// refuse. The receiver's name resolving there will not change on a retry
// soon, so the failure is ErrUndeliverable.
func checkDialAddress(address string, allowLinkLocal bool) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: dial address %q: %w", ErrUndeliverable, address, err)
	}
	if reason := refusedAddr(ap.Addr(), allowLinkLocal); reason != "" {
		return fmt.Errorf("%w: webhook host resolved to %s, %s", ErrUndeliverable, ap.Addr(), reason)
	}
	return nil
}

// refusedAddr says why a webhook may not reach addr, or "" if it may.
func refusedAddr(addr netip.Addr, allowLinkLocal bool) string {
	addr = addr.Unmap().WithZone("")
	switch {
	case slices.Contains(metadataAddrs, addr):
		return "a cloud metadata endpoint"
	case addr.IsUnspecified(), addr.Is4() && addr.As4()[0] == 0:
		return "an unspecified address"
	case addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	case addr.IsMulticast():
		return "a multicast address"
	case addr.IsLinkLocalUnicast() && !allowLinkLocal:
		return "a link-local address"
	}
	return ""
}
