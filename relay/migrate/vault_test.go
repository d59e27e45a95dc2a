package migrate

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/plugin"
	"github.com/vault-registry/vault-plugin-registry/plugin/plugintest"
)

const testToken = "test-operator-token"

// fakeVault is the part of Vault's HTTP API the migration uses, on
// loopback: a mount of the real plugin over in-memory storage
// (plugintest.Server), and beside it godoauth's KV version 1 mount and the
// mount lookup, served by the server's hook. The server records every
// request.
type fakeVault struct {
	t   *testing.T
	srv *plugintest.Server

	kvMount     string
	pluginMount string

	mu sync.Mutex
	kv map[string]map[string]any // key under kvMount → data
	// intercept answers a request instead of Vault when it returns true.
	intercept func(w http.ResponseWriter, r *http.Request, path string) bool
}

func newFakeVault(t *testing.T, kvMount, pluginMount string) *fakeVault {
	t.Helper()
	f := &fakeVault{
		t:           t,
		srv:         plugintest.NewServer(t, plugin.Factory, testToken, pluginMount),
		kvMount:     kvMount,
		pluginMount: pluginMount,
		kv:          map[string]map[string]any{},
	}
	f.srv.SetHook(f.serve)
	return f
}

// putKV writes a godoauth user as `vault write <kv>/<name> password=… access=…` does.
func (f *fakeVault) putKV(name string, data map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kv[name] = data
}

// serve answers what is not the plugin's (the KV mount, the mount lookup)
// and the faults of intercept; the plugin's paths go on to the server.
func (f *fakeVault) serve(w http.ResponseWriter, r *http.Request, req *plugintest.Request) bool {
	path := req.Path
	f.mu.Lock()
	intercept := f.intercept
	f.mu.Unlock()
	if req.Token != testToken {
		writeVault(w, http.StatusForbidden, nil, "permission denied")
		return true
	}
	if intercept != nil && intercept(w, r, path) {
		return true
	}
	list := r.Method == "LIST" || (r.Method == http.MethodGet && r.URL.Query().Get("list") == "true")
	switch {
	case strings.HasPrefix(path, "sys/internal/ui/mounts/"):
		f.serveMountInfo(w, strings.TrimPrefix(path, "sys/internal/ui/mounts/"))
	case path == f.kvMount || strings.HasPrefix(path, f.kvMount+"/"):
		f.serveKV(w, r, strings.TrimPrefix(strings.TrimPrefix(path, f.kvMount), "/"), list)
	default:
		return false
	}
	return true
}

func (f *fakeVault) serveMountInfo(w http.ResponseWriter, path string) {
	path = strings.Trim(path, "/")
	switch {
	case path == f.kvMount || strings.HasPrefix(path, f.kvMount+"/"):
		writeVault(w, http.StatusOK, map[string]any{"path": f.kvMount + "/", "type": "kv", "options": map[string]any{"version": "1"}}, "")
	case path == f.pluginMount || strings.HasPrefix(path, f.pluginMount+"/"):
		writeVault(w, http.StatusOK, map[string]any{"path": f.pluginMount + "/", "type": "vault-plugin-registry", "options": nil}, "")
	default:
		writeVault(w, http.StatusBadRequest, nil, fmt.Sprintf("preflight capability check returned 403, please ensure client's policies grant access to path %q", path+"/"))
	}
}

func (f *fakeVault) serveKV(w http.ResponseWriter, r *http.Request, key string, list bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case list:
		if key != "" && !strings.HasSuffix(key, "/") {
			key += "/" // as Vault's KV lists a folder
		}
		seen := map[string]bool{}
		var keys []any
		for k := range f.kv {
			rest, ok := strings.CutPrefix(k, key)
			if !ok || rest == "" {
				continue
			}
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				rest = rest[:i+1]
			}
			if !seen[rest] {
				seen[rest] = true
				keys = append(keys, rest)
			}
		}
		if len(keys) == 0 {
			writeVault(w, http.StatusNotFound, nil, "")
			return
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i].(string) < keys[j].(string) })
		writeVault(w, http.StatusOK, map[string]any{"keys": keys}, "")
	case r.Method == http.MethodGet:
		data, ok := f.kv[key]
		if !ok {
			writeVault(w, http.StatusNotFound, nil, "")
			return
		}
		writeVault(w, http.StatusOK, data, "")
	default:
		writeVault(w, http.StatusMethodNotAllowed, nil, "the migration must not write to godoauth's mount")
	}
}

// pluginCall runs one request on the plugin the way Vault does and returns
// Vault's HTTP status, the response and the error a client would see.
func (f *fakeVault) pluginCall(op logical.Operation, path string, data map[string]any) (int, *logical.Response, string) {
	return f.srv.Call(f.pluginMount, op, path, data)
}

// pluginOK runs a request on the plugin directly and fails the test unless
// it succeeds.
func (f *fakeVault) pluginOK(op logical.Operation, path string, data map[string]any) *logical.Response {
	f.t.Helper()
	return f.srv.MustCall(f.pluginMount, op, path, data)
}

// writes returns the recorded requests that could change something.
func (f *fakeVault) writes() []string {
	var out []string
	for _, r := range f.srv.Requests() {
		if r.Method != http.MethodGet && r.Method != "LIST" {
			out = append(out, r.Method+" "+r.Path)
		}
	}
	return out
}

func (f *fakeVault) countRequests(req string) int {
	n := 0
	for _, r := range f.srv.Requests() {
		if r.Method+" "+r.Path == req {
			n++
		}
	}
	return n
}

func writeVault(w http.ResponseWriter, code int, data map[string]any, errMsg string) {
	if data != nil {
		plugintest.WriteJSON(w, code, map[string]any{"data": data})
		return
	}
	plugintest.WriteError(w, code, errMsg)
}

// writeConfig writes godoauth's YAML pointing at the fake Vault with the
// operator's token, plus extra lines for the token section.
func (f *fakeVault) writeConfig(t *testing.T, token string, tokenSection string) string {
	t.Helper()
	u, err := url.Parse(f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("storage:\n  vault:\n    proto: http\n    host: %s\n    port: %s\n    auth_token: %s\n"+
		"http:\n  addr: :5002\ntoken:\n  expiration: 800\n%s", u.Hostname(), u.Port(), token, tokenSection)
	path := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// migrateCmd runs the command as `godoauth-relay migrate args…` with env as
// the whole environment.
func migrateCmd(env map[string]string, args ...string) result {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, func(k string) string { return env[k] })
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// rawStatus is the status of a raw answer.
func rawStatus(resp *logical.Response) (int, bool) {
	if resp == nil {
		return 0, false
	}
	s, ok := resp.Data[logical.HTTPStatusCode].(int)
	return s, ok
}
