package plugintest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// TokenPeriod is the period, in seconds, of the server's operator token:
// auth/token/lookup-self and renew-self answer it.
const TokenPeriod = 3600

// Server is the part of Vault's HTTP API a client of the plugin uses, on
// loopback: mounts of the real plugin over in-memory storage, each called
// as Vault calls it (Call), its unauthenticated paths open and the others
// behind a live token; sys/health; Vault's tokens, identity store and
// leases as the plugin sees them (tokens.go): the operator token and those
// AddToken or a Login makes, each with its entity, its lookup-self,
// renew-self and revoke-self. It records every request and its answer. A
// Hook sees each request first, to inject a fault (a refusal, a 5xx, a
// delay, a path missing) or to serve a path of Vault the plugin does not
// have.
type Server struct {
	// URL is the server's address, as VAULT_ADDR.
	URL string
	// Token is the token the plugin's paths and lookup-self take.
	Token string

	t      testing.TB
	srv    *httptest.Server
	mounts map[string]*Mount
	tokens *tokens

	mu    sync.Mutex
	calls []*Request
	hook  Hook
}

// Mount is one mount of the plugin: its backend and storage.
type Mount struct {
	Path    string // without a slash: "registry"
	Backend logical.Backend
	Storage logical.Storage
}

// Request is one request the server received.
type Request struct {
	Method string
	Path   string // without /v1/
	// Mount is the plugin mount the path is under ("" for none), Rest
	// the path inside it ("token", "token/batch", "ca/pem").
	Mount, Rest string
	Token       string // X-Vault-Token
	Body        []byte
	// RequestID is the request_id of the answer, when the plugin gave one
	// in Vault's envelope.
	RequestID string
	// Status and Answer are the answer's, once it is written (by the
	// server or the hook).
	Status int
	Answer []byte
}

// Hook sees each request before the server. It answers instead of the
// server by returning true; returning false lets the server answer, after
// whatever the hook did (waited, counted). r's body can be read again:
// the server keeps a copy (req.Body).
type Hook func(w http.ResponseWriter, r *http.Request, req *Request) bool

// NewServer starts a server whose operator token is token (no entity, a
// TTL of TokenPeriod), with one mount of the plugin (made by factory, as
// Vault makes it) at each of mounts. Each mount is set up with the
// server's identity store as its system view, initialized (its trust
// anchor made) and has bcrypt_cost 4, for fast tests; the server stops
// when the test ends.
func NewServer(t testing.TB, factory logical.Factory, token string, mounts ...string) *Server {
	t.Helper()
	s := &Server{Token: token, t: t, mounts: map[string]*Mount{}, tokens: newTokens()}
	s.AddToken(token, Token{TTL: TokenPeriod})
	for _, m := range mounts {
		conf := logical.TestBackendConfig()
		conf.Logger = hclog.NewNullLogger()
		conf.StorageView = &logical.InmemStorage{}
		conf.System = identityView{SystemView: conf.System, ts: s.tokens}
		b, err := factory(context.Background(), conf)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Initialize(context.Background(), &logical.InitializationRequest{Storage: conf.StorageView}); err != nil {
			t.Fatal(err)
		}
		s.mounts[m] = &Mount{Path: m, Backend: b, Storage: conf.StorageView}
		s.MustCall(m, logical.UpdateOperation, "config", map[string]any{"bcrypt_cost": 4})
	}
	s.srv = httptest.NewServer(s)
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// Close stops the server: connections are refused from then on.
func (s *Server) Close() { s.srv.Close() }

// Mount is the plugin mounted at path, or nil.
func (s *Server) Mount(path string) *Mount { return s.mounts[path] }

// SetHook makes h see every request from now on; nil removes it.
func (s *Server) SetHook(h Hook) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = h
}

// Call runs one request on the plugin at mount directly, as Vault does
// (Call), and returns Vault's HTTP status, the response and the error a
// client would see.
func (s *Server) Call(mount string, op logical.Operation, path string, data map[string]any) (int, *logical.Response, string) {
	m := s.mounts[mount]
	if m == nil {
		s.t.Fatalf("no plugin mounted at %s", mount)
	}
	req := &logical.Request{Operation: op, Path: path, Data: data, Storage: m.Storage, MountPoint: mount + "/"}
	return Call(context.Background(), m.Backend, req)
}

// MustCall is Call that fails the test unless the plugin succeeds.
func (s *Server) MustCall(mount string, op logical.Operation, path string, data map[string]any) *logical.Response {
	s.t.Helper()
	code, resp, msg := s.Call(mount, op, path, data)
	if code >= 400 {
		s.t.Fatalf("%s %s/%s: %d %s", op, mount, path, code, msg)
	}
	return resp
}

// Requests returns the requests received so far, in order: copies, as
// they are now (a request in flight has no Status yet).
func (s *Server) Requests() []*Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Request, len(s.calls))
	for i, r := range s.calls {
		c := *r
		out[i] = &c
	}
	return out
}

// Last is the last request received on a mount's path rest (a copy), or
// nil.
func (s *Server) Last(rest string) *Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.calls) - 1; i >= 0; i-- {
		if s.calls[i].Mount != "" && s.calls[i].Rest == rest {
			c := *s.calls[i]
			return &c
		}
	}
	return nil
}

type requestKey struct{}

// ServeHTTP records the request, shows it to the hook, then answers it
// as Vault would (Answer) unless the hook did, and records the answer.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.expireTokens()
	body, _ := io.ReadAll(r.Body)
	req := &Request{Method: r.Method, Path: strings.TrimPrefix(r.URL.Path, "/v1/"), Token: r.Header.Get("X-Vault-Token"), Body: body}
	for m := range s.mounts {
		if rest, ok := strings.CutPrefix(req.Path, m+"/"); ok {
			req.Mount, req.Rest = m, rest
		}
	}
	s.mu.Lock()
	s.calls = append(s.calls, req)
	hook := s.hook
	s.mu.Unlock()
	r = r.WithContext(context.WithValue(r.Context(), requestKey{}, req))
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := &answerRecorder{ResponseWriter: w}
	defer func() {
		s.mu.Lock()
		req.Status, req.Answer = rec.status, rec.body.Bytes()
		s.mu.Unlock()
	}()
	if hook != nil && hook(rec, r, req) {
		return
	}
	s.Answer(rec, r)
}

// answerRecorder keeps a copy of the answer it passes on.
type answerRecorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (a *answerRecorder) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *answerRecorder) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	a.body.Write(b)
	return a.ResponseWriter.Write(b)
}

// Flush lets a hook stream (a slow answer) through the recorder.
func (a *answerRecorder) Flush() {
	if f, ok := a.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack lets a hook cut the connection (a transport failure).
func (a *answerRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(a.ResponseWriter).Hijack()
}

// Answer answers r as Vault with the plugin mounted would, whatever the
// hook: a hook that answers only some requests passes the others here.
func (s *Server) Answer(w http.ResponseWriter, r *http.Request) {
	req, _ := r.Context().Value(requestKey{}).(*Request)
	if req == nil {
		s.ServeHTTP(w, r)
		return
	}
	switch {
	case req.Path == "sys/health":
		WriteJSON(w, http.StatusOK, map[string]any{"initialized": true, "sealed": false, "standby": false})
	case req.Path == "auth/token/lookup-self" || req.Path == "auth/token/renew-self" || req.Path == "auth/token/revoke-self":
		s.serveTokenSelf(w, req)
	case strings.HasPrefix(req.Path, "auth/") && s.serveLogin(w, req, jsonBody(req.Body)):
	case req.Mount != "":
		s.servePlugin(w, r, req)
	default:
		WriteError(w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", req.Path))
	}
}

func (s *Server) servePlugin(w http.ResponseWriter, r *http.Request, req *Request) {
	m := s.mounts[req.Mount]
	list := r.Method == "LIST" || (r.Method == http.MethodGet && r.URL.Query().Get("list") == "true")
	var op logical.Operation
	switch {
	case list:
		op = logical.ListOperation
	case r.Method == http.MethodGet:
		op = logical.ReadOperation
	case r.Method == http.MethodPut || r.Method == http.MethodPost:
		op = logical.UpdateOperation
	case r.Method == http.MethodDelete:
		op = logical.DeleteOperation
	default:
		WriteError(w, http.StatusMethodNotAllowed, "unsupported method")
		return
	}
	open := false
	if sp := m.Backend.SpecialPaths(); sp != nil {
		open = slices.Contains(sp.Unauthenticated, req.Rest)
	}
	var caller *tokenEntry
	if !open {
		if caller = s.caller(w, req); caller == nil {
			return
		}
	}
	var data map[string]any
	if len(req.Body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(req.Body))
		dec.UseNumber() // as Vault's HTTP layer reads a body
		if err := dec.Decode(&data); err != nil {
			WriteError(w, http.StatusBadRequest, "failed to parse JSON input: "+err.Error())
			return
		}
	}
	lr := &logical.Request{Operation: op, Path: req.Rest, Data: data, Storage: m.Storage, MountPoint: req.Mount + "/"}
	if caller != nil {
		// As Vault sets them from the request's token.
		lr.ClientToken, lr.EntityID, lr.ClientTokenAccessor = req.Token, caller.EntityID, caller.accessor
	}
	code, resp, msg := Call(r.Context(), m.Backend, lr)
	switch {
	case resp != nil && resp.Data[logical.HTTPRawBody] != nil:
		// A raw answer (ca/pem, a token path's refusal) goes out as it is.
		if ct, ok := resp.Data[logical.HTTPContentType].(string); ok {
			w.Header().Set("Content-Type", ct)
		}
		w.WriteHeader(code)
		switch b := resp.Data[logical.HTTPRawBody].(type) {
		case string:
			_, _ = io.WriteString(w, b)
		case []byte:
			_, _ = w.Write(b)
		}
	case code >= 400:
		WriteError(w, code, msg)
	case resp == nil:
		w.WriteHeader(code)
	default:
		id := newRequestID()
		s.mu.Lock()
		req.RequestID = id
		s.mu.Unlock()
		answer := map[string]any{"request_id": id, "data": resp.Data}
		if resp.Auth != nil {
			answer["auth"] = resp.Auth
		}
		if resp.Secret != nil && caller != nil {
			// A lease of the caller's token: Vault revokes it with the token.
			answer["lease_id"] = s.keepLease(caller, req.Mount, req.Rest, resp.Secret, resp.Data)
			answer["lease_duration"], answer["renewable"] = int(resp.Secret.TTL.Seconds()), resp.Secret.Renewable
		}
		if len(resp.Warnings) > 0 {
			answer["warnings"] = resp.Warnings
		}
		WriteJSON(w, code, answer)
	}
}

// jsonBody is a request's JSON object, nil for none.
func jsonBody(body []byte) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return m
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// InvalidToken is Vault 1.21's error for a call with a revoked, expired
// or unknown token: its multierror, as one string.
const InvalidToken = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"

// WriteJSON answers status with body as JSON.
func WriteJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// WriteError answers as Vault itself refuses: a status and an error list
// (empty when msg is).
func WriteError(w http.ResponseWriter, status int, msg string) {
	errs := []string{}
	if msg != "" {
		errs = append(errs, msg)
	}
	WriteJSON(w, status, map[string]any{"errors": errs})
}
