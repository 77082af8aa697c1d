package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// PathConsole is a guest's serial console: a GET that upgrades the
// connection (Upgrade: ConsoleProtocol) to the console's byte stream. The
// node that runs the guest serves it; the local fenced of any other node
// relays it there for its CLI.
const PathConsole = "/v1/guests/{guest}/console"

// ConsoleProtocol is the Upgrade token of PathConsole.
const ConsoleProtocol = "mhcodi-console"

// ConsoleClient is a Client that can attach a guest's console.
type ConsoleClient interface {
	// Console returns the console's byte stream; closing it detaches.
	Console(ctx context.Context, guest string) (io.ReadWriteCloser, error)
}

var _ ConsoleClient = (*httpClient)(nil)

// Console implements ConsoleClient. ctx bounds the request only, not the
// stream it returns.
func (c *httpClient) Console(ctx context.Context, guest string) (io.ReadWriteCloser, error) {
	path := guestPath(PathConsole, guest)
	ctx, cancel := withTimeout(ctx, RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("fenced %s: GET %s: %w", c.node, path, err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", ConsoleProtocol)
	type result struct {
		resp *http.Response
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		resp, err := c.c.Do(req)
		ch <- result{resp, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.resp != nil {
				r.resp.Body.Close()
			}
		}()
		return nil, fmt.Errorf("fenced %s: GET %s: %w", c.node, path, ctx.Err())
	}
	if r.err != nil {
		return nil, fmt.Errorf("fenced %s: GET %s: %w", c.node, path, r.err)
	}
	if r.resp.StatusCode == http.StatusSwitchingProtocols {
		if rwc, ok := r.resp.Body.(io.ReadWriteCloser); ok {
			return rwc, nil
		}
		r.resp.Body.Close()
		return nil, fmt.Errorf("fenced %s: GET %s: the upgraded connection is not writable", c.node, path)
	}
	defer r.resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(r.resp.Body, 64<<10))
	msg := strings.TrimSpace(string(b))
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	}
	return nil, &StatusError{Node: c.node, Method: http.MethodGet, Path: path, Status: r.resp.StatusCode, Message: msg}
}
