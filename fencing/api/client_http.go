package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Timeouts of the HTTP client. Fencing must never hang on a dead host: a
// host that does not accept a connection within DialTimeout is down as far
// as an operation is concerned, and a request without a deadline of its
// own gets RequestTimeout.
const (
	DialTimeout      = time.Second
	HandshakeTimeout = 2 * time.Second
	RequestTimeout   = 5 * time.Second
	// StartTimeout bounds a start: qemu daemonizes and answers QMP within
	// seconds, but the leg bridges log in first.
	StartTimeout = 60 * time.Second
)

// StatusError is a fenced's refusal: the HTTP status and the server's
// message. Callers test the status with errors.As or StatusOf.
type StatusError struct {
	Node    string
	Method  string
	Path    string
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("fenced %s: %s %s: %d %s: %s", e.Node, e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Message)
}

// StatusOf is the HTTP status of a fenced's refusal in err's chain, 0 when
// err is not one (a transport error: the node did not answer).
func StatusOf(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// ErrorBody is the body of every non-2xx answer of fenced.
type ErrorBody struct {
	Error string `json:"error"`
}

// httpClient implements Client over HTTP(S) or a unix socket.
type httpClient struct {
	node string
	base string
	c    *http.Client
}

// NewHTTPClient returns a client of node's fenced at baseURL
// ("https://198.51.100.11:7440"), authenticating with tlsConfig (the
// cluster's certificates: certs.ClientTLS).
func NewHTTPClient(node, baseURL string, tlsConfig *tls.Config) Client {
	d := &net.Dialer{Timeout: DialTimeout, KeepAlive: 15 * time.Second}
	tr := &http.Transport{
		DialContext:           d.DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   HandshakeTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
	}
	return NewClientWithTransport(node, baseURL, tr)
}

// NewUnixClient returns a client of the local fenced's root-only socket.
func NewUnixClient(node, socketPath string) Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: DialTimeout}
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
	}
	return NewClientWithTransport(node, "http://fenced", tr)
}

// NewClientWithTransport returns a client that sends its requests through
// rt (fenced's in-process loopback to itself, tests).
func NewClientWithTransport(node, baseURL string, rt http.RoundTripper) Client {
	// No http.Client.Timeout: an operation's NDJSON stream may last
	// minutes; every other call bounds itself (withTimeout).
	return &httpClient{node: node, base: strings.TrimRight(baseURL, "/"), c: &http.Client{Transport: rt}}
}

func (c *httpClient) Node() string { return c.node }

// withTimeout gives ctx a deadline d unless it has one already.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// do sends one request and decodes a 2xx answer into out (nil: discard).
func (c *httpClient) do(ctx context.Context, method, path string, body, out any, timeout time.Duration) error {
	ctx, cancel := withTimeout(ctx, timeout)
	defer cancel()
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("fenced %s: %s %s: decoding the answer: %w", c.node, method, path, err)
	}
	return nil
}

// send sends a request and returns a 2xx response, or the refusal as a
// *StatusError.
func (c *httpClient) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("fenced %s: %s %s: %w", c.node, method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("fenced %s: %s %s: %w", c.node, method, path, err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fenced %s: %s %s: %w", c.node, method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := strings.TrimSpace(string(b))
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	}
	return nil, &StatusError{Node: c.node, Method: method, Path: path, Status: resp.StatusCode, Message: msg}
}

func guestPath(pattern, guest string) string {
	return strings.Replace(pattern, "{guest}", url.PathEscape(guest), 1)
}

func (c *httpClient) NodeStatus(ctx context.Context) (NodeStatus, error) {
	var out NodeStatus
	return out, c.do(ctx, http.MethodGet, PathNode, nil, &out, RequestTimeout)
}

func (c *httpClient) Ledger(ctx context.Context) (LedgerResponse, error) {
	var out LedgerResponse
	return out, c.do(ctx, http.MethodGet, PathLedger, nil, &out, RequestTimeout)
}

func (c *httpClient) Fence(ctx context.Context, r FenceRequest) error {
	return c.do(ctx, http.MethodPost, PathFence, r, nil, RequestTimeout)
}

func (c *httpClient) Start(ctx context.Context, guest string, r StartRequest) error {
	return c.do(ctx, http.MethodPost, guestPath(PathStart, guest), r, nil, StartTimeout)
}

func (c *httpClient) Stop(ctx context.Context, guest string, r StopRequest) error {
	// The server waits up to r.Timeout (its default when 0) for the
	// guest to power off, then destroys it.
	t := r.Timeout
	if t <= 0 {
		t = 2 * time.Minute
	}
	return c.do(ctx, http.MethodPost, guestPath(PathStop, guest), r, nil, t+15*time.Second)
}

func (c *httpClient) Destroy(ctx context.Context, guest string) error {
	return c.do(ctx, http.MethodPost, guestPath(PathDestroy, guest), struct{}{}, nil, 20*time.Second)
}

func (c *httpClient) Join(ctx context.Context, r JoinRequest) (JoinResponse, error) {
	var out JoinResponse
	return out, c.do(ctx, http.MethodPost, PathJoin, r, &out, 30*time.Second)
}

// Cluster fetches the cluster's view the node gathers (local socket).
func (c *httpClient) Cluster(ctx context.Context) (ClusterView, error) {
	var out ClusterView
	// The node asks every other node (3 s each, at once) first.
	return out, c.do(ctx, http.MethodGet, PathCluster, nil, &out, 15*time.Second)
}

// Config fetches the digest of the node's cluster file.
func (c *httpClient) Config(ctx context.Context) (ConfigInfo, error) {
	var out ConfigInfo
	return out, c.do(ctx, http.MethodGet, PathConfig, nil, &out, RequestTimeout)
}

var (
	_ ClusterClient = (*httpClient)(nil)
	_ ConfigClient  = (*httpClient)(nil)
)

// Op streams the operation's progress; it has no timeout of its own (an
// evacuation may take minutes): the caller's ctx bounds it.
func (c *httpClient) Op(ctx context.Context, r OpRequest, progress func(Progress)) error {
	resp, err := c.send(ctx, http.MethodPost, PathOp, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var p Progress
		if err := json.Unmarshal(line, &p); err != nil {
			return fmt.Errorf("fenced %s: operation %s: bad progress line %q: %w", c.node, r.Op, line, err)
		}
		if progress != nil {
			progress(p)
		}
		if p.Done {
			if p.Err != "" {
				return &OpError{Op: r.Op, Message: p.Err, Hint: p.Hint}
			}
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("fenced %s: operation %s: %w", c.node, r.Op, err)
	}
	return fmt.Errorf("fenced %s: operation %s: the stream ended before the operation did", c.node, r.Op)
}

// OpError is an operation's failure or refusal as its last progress line
// told it.
type OpError struct {
	Op      string
	Message string
	Hint    string
}

func (e *OpError) Error() string {
	if e.Hint != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Op, e.Message, e.Hint)
	}
	return fmt.Sprintf("%s: %s", e.Op, e.Message)
}
