package vm

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// RunT runs img for a test: it fails the test (with the console's last
// lines) unless the guest ran the job to its end, logs progress and
// timings, and returns the result for the test to check Status and
// Console. qemu is killed by PID when the test ends early (its context is
// cancelled) or the process is interrupted.
func RunT(t testing.TB, img Image, o Options) *Result {
	t.Helper()
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	res, err := Run(t.Context(), img, o)
	if err != nil {
		t.Fatal(err)
	}
	cached := "built"
	if res.ImageCached {
		cached = "cached"
	}
	t.Logf("vm %s: job exit status %d; image %s %s, boot %s, job %s, total %s",
		img.Name, res.Status, cached, res.Build.Round(time.Millisecond), res.Boot.Round(time.Millisecond),
		res.Job.Round(time.Millisecond), res.Total.Round(time.Millisecond))
	return res
}

// DiskFile makes a sparse file of size bytes for Options.Disks. It is
// removed when the test ends, and also when the process is interrupted
// (SIGINT, SIGTERM) before that, which t.TempDir cannot promise.
func DiskFile(t testing.TB, name string, size int64) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mhcodi-vm-disk-")
	if err != nil {
		t.Fatal(err)
	}
	release := guardSignals(func() { os.RemoveAll(dir) })
	t.Cleanup(func() {
		release()
		os.RemoveAll(dir)
	})
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}
