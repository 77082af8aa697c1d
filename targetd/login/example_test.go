package login_test

import (
	"fmt"

	"github.com/mhcodi/mhcodi/iscsi/text"
	"github.com/mhcodi/mhcodi/targetd/login"
)

// Example shows how a session engine drives a login: one Step per Login
// Request PDU, send every Response, close the connection on error, and
// take the Result once Done.
func Example() {
	l := login.New(login.Config{
		Authorize: func(initiator, target string, discovery bool) (login.Decision, error) {
			// ACL lookup goes here.
			return login.Decision{Allowed: true}, nil
		},
	})
	// The engine decodes each Login Request PDU into a Request.
	req := login.Request{
		Transit: true, CSG: text.StageOperational, NSG: text.StageFullFeature,
		Data: text.EncodeText([]text.KV{
			{Key: "InitiatorName", Value: "iqn.2004-10.com.ubuntu:01:abc"},
			{Key: "TargetName", Value: "iqn.2026-11.org.mhcodi:prod.node-b.web1.root"},
			{Key: "MaxRecvDataSegmentLength", Value: "65536"},
		}),
	}
	resp, err := l.Step(req)
	if err != nil {
		// Send resp (a reject), then close the connection.
		fmt.Println("rejected:", err)
		return
	}
	// Send resp; on the final response of a leading login the engine puts
	// the TSIH it allocated.
	kvs, _ := text.ParseText(resp.Data)
	fmt.Println(resp.Transit, resp.NSG, kvs)
	if l.Done() {
		p := l.Result().Params
		fmt.Println("send at most", p.InitiatorMaxRecvDataSegmentLength, "receive at most", p.TargetMaxRecvDataSegmentLength)
	}
	// Output:
	// true 3 [{TargetPortalGroupTag 1} {MaxRecvDataSegmentLength 262144}]
	// send at most 65536 receive at most 262144
}
