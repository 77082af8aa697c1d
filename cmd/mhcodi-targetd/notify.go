package main

import (
	"log/slog"
)

// notifier tells systemd about readiness (sd_notify).
type notifier struct{ log *slog.Logger }

func newNotifier(log *slog.Logger) *notifier { return &notifier{log: log} }
func (n *notifier) ready()                   {}
func (n *notifier) reloading()               {}
func (n *notifier) stopping()                {}
