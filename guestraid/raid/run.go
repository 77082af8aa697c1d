package raid

import (
	"context"
	"time"

	"github.com/mhcodi/mhcodi/guestraid/channel"
)

// RunOptions tunes Run.
type RunOptions struct {
	// Poll is how often md sysfs is read; default 1 s.
	Poll time.Duration
	// Incoming delivers host messages (*channel.Host, *channel.Check); nil
	// for none. Run keeps going when it closes.
	Incoming <-chan any
	// AfterStep, if set, runs after every step (sd_notify READY and the
	// watchdog: the watchdog is fed only while the loop turns).
	AfterStep func()
}

// Run watches until ctx ends: a step every Poll, and one at once after a
// host message.
func (s *Service) Run(ctx context.Context, o RunOptions) error {
	poll := o.Poll
	if poll <= 0 {
		poll = time.Second
	}
	in := o.Incoming
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		s.Step(ctx)
		if o.AfterStep != nil {
			o.AfterStep()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case m, ok := <-in:
			if !ok {
				in = nil
				continue
			}
			s.handle(m)
		}
	}
}

func (s *Service) handle(m any) {
	switch m := m.(type) {
	case *channel.Host:
		s.ApplyHost(m)
	case *channel.Check:
		if !s.W.RequestCheck(m.Disk) {
			s.Emit(channel.Event{Type: channel.TypeEvent, Time: channel.Timestamp(s.now()), Disk: m.Disk,
				Event: channel.EventError, Detail: "check requested for an unknown disk"})
		}
	}
}
