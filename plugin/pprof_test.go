package plugin

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// pprofLog runs servePprof with PprofEnv set to addr ("" unsets it) and
// returns what it logged.
func pprofLog(t *testing.T, addr string) string {
	t.Helper()
	t.Setenv(PprofEnv, addr)
	var buf bytes.Buffer
	servePprof(hclog.New(&hclog.LoggerOptions{Output: &buf}))
	return buf.String()
}

func TestServePprof_loopbackAddressServesProfiles(t *testing.T) {
	log := pprofLog(t, "127.0.0.1:0")
	m := regexp.MustCompile(`(http://\S+/debug/pprof/)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no profile address logged: %q", log)
	}
	resp, err := http.Get(m[1] + "goroutine?debug=2")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "plugin.servePprof") {
		t.Errorf("GET %sgoroutine: %d %.300q", m[1], resp.StatusCode, body)
	}
}

func TestServePprof_otherAddressesRefused(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:6061", "example.com:6061", "127.0.0.1"} {
		log := pprofLog(t, addr)
		if !strings.Contains(log, "no profile listener") || strings.Contains(log, "serving profiles") {
			t.Errorf("%s=%s: %q; want a refusal and no listener", PprofEnv, addr, log)
		}
	}
}

func TestServePprof_offWhenUnset(t *testing.T) {
	if log := pprofLog(t, ""); log != "" {
		t.Errorf("%s unset: logged %q; want nothing", PprofEnv, log)
	}
}
