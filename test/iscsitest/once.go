package iscsitest

import (
	"fmt"
	"os"
	"sync"
)

// onceErr runs a stop function once and hands its error to every caller,
// so Stop is idempotent and safe from a t.Cleanup and a signal at once.
type onceErr struct {
	once sync.Once
	err  error
}

func (o *onceErr) do(fn func() error) error {
	o.once.Do(func() { o.err = fn() })
	return o.err
}

// removeDir removes a temp dir this package made.
func removeDir(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove temp dir: %w", err)
	}
	return nil
}
