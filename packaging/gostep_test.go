package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const repo = ".."

// goEnv is `go env NAME` of the go running the tests.
func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}

// pathWithoutGo is PATH less every directory that holds a go binary.
func pathWithoutGo() string {
	var keep []string
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if _, err := os.Stat(filepath.Join(dir, "go")); err == nil {
			continue
		}
		keep = append(keep, dir)
	}
	return strings.Join(keep, string(filepath.ListSeparator))
}

// TestGoStep is a machine without Go: scripts/deps.sh --go runs with PATH
// stripped of every go and none of the usual places looked at, with a
// throw-away cache and module cache, so it downloads Debian's golang-1.23
// (bookworm-backports) and has it fetch go.mod's Go from the module proxy.
// Then the project is built with what it got. Module downloads for the
// build come from this machine's module cache (as a file proxy), and the
// build cache is this machine's, so the build takes seconds.
func TestGoStep(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads about 120 MB (-short)")
	}
	if _, err := os.Stat("/etc/debian_version"); err != nil {
		t.Skip("not Debian")
	}
	tmp := t.TempDir()
	cache, modcache, home := filepath.Join(tmp, "cache"), filepath.Join(tmp, "modcache"), filepath.Join(tmp, "home")
	require.NoError(t, os.MkdirAll(home, 0o755))
	defer exec.Command("chmod", "-R", "u+w", modcache).Run() // the module cache is read-only
	base := []string{"HOME=" + home, "PATH=" + pathWithoutGo(), "GOMODCACHE=" + modcache}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "http_proxy=") || strings.HasPrefix(kv, "https_proxy=") || strings.HasPrefix(kv, "GOPROXY=") {
			base = append(base, kv)
		}
	}

	start := time.Now()
	cmd := exec.Command("bash", "scripts/deps.sh", "--go")
	cmd.Dir = repo
	cmd.Env = append(base, "MHCODI_CACHE="+cache, "MHCODI_GO_CANDIDATES=")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "deps.sh --go:\n%s", out)
	t.Logf("deps.sh --go without Go: %.1f s\n%s", time.Since(start).Seconds(), out)
	assert.Contains(t, string(out), "downloading Debian's golang-1.23")
	assert.Contains(t, string(out), "installed: go ")

	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	require.NoError(t, err)
	want := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(gomod)
	require.NotNil(t, want)
	gobin := filepath.Join(cache, "go", "bin", "go")
	v, err := exec.Command(gobin, "env", "GOVERSION").Output()
	require.NoError(t, err)
	assert.Equal(t, "go"+string(want[1]), strings.TrimSpace(string(v)))

	// Again: nothing to do.
	cmd = exec.Command("bash", "scripts/deps.sh", "--go")
	cmd.Dir = repo
	cmd.Env = append(base, "MHCODI_CACHE="+cache, "MHCODI_GO_CANDIDATES=")
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "deps.sh --go again:\n%s", out)
	assert.Contains(t, string(out), "present: go ")

	// Build the binaries with it, the way make build does.
	start = time.Now()
	bin := filepath.Join(tmp, "bin")
	cmd = exec.Command(gobin, "build", "-trimpath", "-o", bin+string(filepath.Separator), "./cmd/...")
	cmd.Dir = repo
	cmd.Env = append(base, "CGO_ENABLED=0", "GOAMD64=v1", "GOTOOLCHAIN=local", "GOFLAGS=-mod=readonly",
		"GOCACHE="+goEnv(t, "GOCACHE"),
		"GOPROXY=file://"+filepath.Join(goEnv(t, "GOMODCACHE"), "cache", "download"))
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "go build with the fetched Go:\n%s", out)
	t.Logf("go build ./cmd/... with it: %.1f s", time.Since(start).Seconds())
	out, err = exec.Command(filepath.Join(bin, "mhcodi"), "--version").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "(go"+string(want[1])+")")
}
