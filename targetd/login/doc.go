// Package login is targetd's iSCSI login: the login stage machine (RFC 7143
// §6.3, §11.12, §11.13), operational key negotiation (§13) and CHAP
// authentication (§12.1.3, RFC 1994). The text key=value codec, key names,
// status codes and the CHAP response it uses are package iscsi/text, shared
// with the initiator. It is a pure state machine: it takes the relevant fields of
// Login Request PDUs as plain values and returns the fields of the Login
// Response to send; it does no I/O and knows nothing of sockets or PDUs.
//
// # How the session engine drives a login
//
// One Login per TCP connection, created with New when the first Login
// Request arrives. For every Login Request PDU the engine calls Step with
// the header fields and the data segment (without padding or digest) and
// sends back a Login Response built from the returned Response:
//
//   - The engine owns everything that is not negotiation: ITT, CmdSN,
//     ExpStatSN/StatSN/MaxCmdSN, and the TSIH. For a leading login
//     (Request.TSIH == 0, Result.Leading) it allocates a TSIH and puts it in
//     the final response (the one where Done becomes true); on every other
//     response it echoes the request's TSIH. Whether a non-leading login
//     (TSIH != 0) names an existing session, and session reinstatement for a
//     reused ISID, are the engine's to decide: it may refuse with
//     RejectResponse(text.StatusSessionDoesNotExist) and so on, without calling
//     Step. Checks that need the initiator's name (session reinstatement
//     for the same InitiatorName and ISID, a session limit) are made when
//     Done becomes true: the final response is not sent yet, so the engine
//     may send RejectResponse(text.StatusOutOfResources), for instance, instead.
//   - Version-max and Version-active of every response are 0x00
//     (Response.VersionMax, Response.VersionActive).
//   - Continue (the C bit) is handled here, both ways. A request with C=1 is
//     accumulated and answered with an empty response; the engine just sends
//     it. A response that does not fit in one PDU comes back with
//     Continue=true; the initiator answers it with an empty request, which
//     the engine passes to Step as usual to get the next piece.
//   - Step returns a non-nil error exactly when the response carries a
//     non-zero Status-Class (a login reject). The engine must send that
//     response and then close the connection (RFC 7143 §11.13.5); the error
//     (an *Error) says why, for the log. After an error, or after Done,
//     further Step calls fail.
//   - When Done reports true, the connection is in full feature phase;
//     Result holds the negotiated Params and the names. In full feature
//     phase, Text Requests are answered with NegotiateText and, for the
//     SendTargets key, SendTargets; text.SplitData cuts a long Text Response into
//     PDUs no larger than the initiator's MaxRecvDataSegmentLength.
package login
