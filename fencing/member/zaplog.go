package member

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogCore sends etcd's zap logging to the daemon's slog logger, so one
// journal holds both, and watches for the one message that matters to
// fenced: that this member was removed from the cluster.
type slogCore struct {
	log     *slog.Logger
	min     zapcore.Level
	attrs   []any
	removed func() // called when etcd says this member was removed
	// quiet, when set, turns everything into debug: the member is being
	// stopped and etcd's errors about closed listeners are expected.
	quiet *atomic.Bool
}

// ZapLogger returns a zap logger writing to log at min and above (etcd's
// client takes one too).
func ZapLogger(log *slog.Logger, min zapcore.Level) *zap.Logger {
	return zap.New(&slogCore{log: log, min: min, removed: func() {}})
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.min || l >= zapcore.WarnLevel }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	n := *c
	n.attrs = append(append([]any(nil), c.attrs...), fieldAttrs(fields)...)
	return &n
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	attrs := fieldAttrs(fields)
	// "server error" + "permanently removed" is how etcd (rafthttp's
	// errMemberRemoved, and the apply of a conf change that removes this
	// member) says so before the server stops itself; there is no API for
	// it.
	for _, a := range attrs {
		if s, ok := a.(slog.Attr); ok && strings.Contains(s.Value.String(), "permanently removed") {
			c.removed()
		}
	}
	if e.Level < c.min {
		// Warnings below the chosen level are only inspected, not logged.
		return nil
	}
	lvl := slog.LevelInfo
	switch {
	case c.quiet != nil && c.quiet.Load():
		lvl = slog.LevelDebug
	case e.Level >= zapcore.ErrorLevel:
		lvl = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		lvl = slog.LevelWarn
	case e.Level <= zapcore.DebugLevel:
		lvl = slog.LevelDebug
	}
	args := append(append([]any(nil), c.attrs...), attrs...)
	if e.LoggerName != "" {
		args = append(args, slog.String("logger", e.LoggerName))
	}
	c.log.Log(context.Background(), lvl, e.Message, args...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func fieldAttrs(fields []zapcore.Field) []any {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]any, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, slog.Any(k, v))
	}
	return out
}
