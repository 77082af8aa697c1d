package api

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHTTPClientStatusError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, "/v1/guests/web/start", r.URL.Path)
		var req StartRequest
		require.NoError(t, json.NewDecoder(r.Body).Decode(&req))
		assert.EqualValues(t, 7, req.Epoch)
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(ErrorBody{Error: "the ledger is at epoch 8"})
	}))
	defer srv.Close()
	c := NewHTTPClient("node-a", srv.URL, nil)
	err := c.Start(context.Background(), "web", StartRequest{Epoch: 7})
	require.Error(t, err)
	assert.Equal(t, http.StatusConflict, StatusOf(err))
	var se *StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "the ledger is at epoch 8", se.Message)
	assert.Equal(t, "node-a", se.Node)
}

// A host that accepts the connection and then says nothing (hung) must
// not hang the caller: the default request timeout ends it.
func TestHTTPClientTimesOutOnHungNode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c := NewHTTPClient("node-b", "http://"+ln.Addr().String(), nil)
	t0 := time.Now()
	_, err = c.NodeStatus(context.Background())
	require.Error(t, err)
	assert.Zero(t, StatusOf(err))
	assert.Less(t, time.Since(t0), RequestTimeout+2*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 = time.Now()
	_, err = c.Ledger(ctx)
	require.Error(t, err)
	assert.Less(t, time.Since(t0), 2*time.Second, "the caller's deadline wins")
}

func TestUnixClientOpStream(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "f.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathOp, func(w http.ResponseWriter, r *http.Request) {
		enc := json.NewEncoder(w)
		_ = enc.Encode(Progress{Step: "ledger", Message: "epoch 4"})
		w.(http.Flusher).Flush()
		_ = enc.Encode(Progress{Step: "done", Done: true, Err: "refused", Hint: "use --force"})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()

	c := NewUnixClient("node-a", sock)
	var got []Progress
	err = c.Op(context.Background(), OpRequest{Op: OpFailover, Guest: "web"}, func(p Progress) { got = append(got, p) })
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "use --force", oe.Hint)
	assert.Len(t, got, 2)
}
