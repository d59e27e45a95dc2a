package relay

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

func TestMain_pprofServesProfilesOnLoopback(t *testing.T) {
	code, _, stderr := runMain([]string{"-pprof", "127.0.0.1:0", "-version"}, nil)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	m := regexp.MustCompile(`profiles on (http://\S+/debug/pprof/)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no profile address in %q", stderr)
	}
	// The goroutine dump shows this process's own listener.
	resp, err := http.Get(m[1] + "goroutine?debug=2")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "relay.pprofFlag") {
		t.Errorf("GET %sgoroutine: %d %.300q", m[1], resp.StatusCode, body)
	}
}

func TestMain_pprofRefusesOtherAddresses(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:6060", "example.com:6060", "127.0.0.1"} {
		code, _, stderr := runMain([]string{"-pprof", addr, "-version"}, nil)
		if code != 2 || !strings.Contains(stderr, "-pprof") {
			t.Errorf("-pprof %s: exit %d, %q; want 2 naming -pprof", addr, code, stderr)
		}
		if strings.Contains(stderr, "profiles on") {
			t.Errorf("-pprof %s: a listener started: %q", addr, stderr)
		}
	}
}

func TestMain_pprofOffByDefault(t *testing.T) {
	code, _, stderr := runMain([]string{"-version"}, nil)
	if code != 0 || strings.Contains(stderr, "profiles on") {
		t.Errorf("exit %d, %q: no profile listener without -pprof", code, stderr)
	}
}
