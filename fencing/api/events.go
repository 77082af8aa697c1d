package api

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/mhcodi/mhcodi/fencing/events"
)

// PathEvents is GET: the cluster's event log (EventsResponse). Query:
// guest, since (RFC 3339), and scope=node for the answering node's own
// journal only (what a fenced asks its peers); without it the answering
// fenced merges its own with every peer's that answers.
const PathEvents = "/v1/events"

// EventsResponse is PathEvents' answer.
type EventsResponse struct {
	Events []events.Event `json:"events"`
	// Missing are the nodes whose journals could not be read (down), with
	// why.
	Missing map[string]string `json:"missing,omitempty"`
}

// EventsQuery is what to ask PathEvents for.
type EventsQuery struct {
	Guest string
	Since time.Time
	// NodeOnly asks for the answering node's journal alone.
	NodeOnly bool
}

// Encode is the query string.
func (q EventsQuery) Encode() string {
	v := url.Values{}
	if q.Guest != "" {
		v.Set("guest", q.Guest)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if q.NodeOnly {
		v.Set("scope", "node")
	}
	return v.Encode()
}

// ParseEventsQuery reads a query string (the server's side of Encode).
func ParseEventsQuery(v url.Values) (EventsQuery, error) {
	q := EventsQuery{Guest: v.Get("guest"), NodeOnly: v.Get("scope") == "node"}
	if s := v.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return q, err
		}
		q.Since = t
	}
	return q, nil
}

// EventsClient reads a fenced's event log.
type EventsClient interface {
	Events(ctx context.Context, q EventsQuery) (EventsResponse, error)
}

func (c *httpClient) Events(ctx context.Context, q EventsQuery) (EventsResponse, error) {
	var out EventsResponse
	path := PathEvents
	if qs := q.Encode(); qs != "" {
		path += "?" + qs
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out, RequestTimeout)
}

var _ EventsClient = (*httpClient)(nil)
