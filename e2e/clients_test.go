//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ClientKind names a registry client.
type ClientKind string

const (
	Crane  ClientKind = "crane"
	Oras   ClientKind = "oras"
	Regctl ClientKind = "regctl"
	Skopeo ClientKind = "skopeo"
)

var clientKinds = []ClientKind{Crane, Oras, Regctl, Skopeo}

// Client runs one registry client with a home of its own (credentials,
// config), so nothing leaks between users or tests.
type Client struct {
	Kind ClientKind
	Home string
	// Env holds more variables for every run (COSIGN_REPOSITORY, a PATH
	// with the credential helper); a later one wins over the defaults.
	Env []string

	bin string
	t   testing.TB
}

// NewClient returns a client with an empty home: no credentials.
func NewClient(t testing.TB, kind ClientKind) *Client {
	t.Helper()
	c := &Client{Kind: kind, Home: t.TempDir(), bin: tool(t, string(kind)), t: t}
	if kind == Skopeo {
		mustWrite(t, c.path("policy.json"), []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`))
	}
	return c
}

func (c *Client) path(name string) string { return filepath.Join(c.Home, name) }

func (c *Client) env() []string {
	return append(append(baseEnv(c.Home),
		"DOCKER_CONFIG="+c.path(".docker"),
		"XDG_CONFIG_HOME="+c.path(".config"),
		"XDG_RUNTIME_DIR="+c.path("run"),
		"REGISTRY_AUTH_FILE="+c.path("auth.json"),
	), c.Env...)
}

// Run runs the client with args (and stdin) in dir, if not empty.
func (c *Client) Run(stdin, dir string, args ...string) Result {
	c.t.Helper()
	r := RunCommand(c.t, c.env(), dir, stdin, c.bin, args...)
	r.Args[0] = string(c.Kind)
	return r
}

// prepare does what the client needs before talking to a plain-HTTP
// registry at all.
func (c *Client) prepare(reg *Registry) {
	c.t.Helper()
	if c.Kind == Regctl {
		// --skip-check: without credentials the check would fail with 401.
		if r := c.Run("", "", "registry", "set", "--skip-check", "--tls", "disabled", reg.Host); !r.OK() {
			c.t.Fatalf("%v", r)
		}
	}
}

// Login stores credentials for reg. crane stores them without checking;
// oras and skopeo check them first; regctl checks them and stores them even
// when they are wrong.
func (c *Client) Login(reg *Registry, user, password string) Result {
	c.t.Helper()
	c.prepare(reg)
	switch c.Kind {
	case Crane:
		return c.Run(password, "", "auth", "login", reg.Host, "-u", user, "--password-stdin")
	case Oras:
		return c.Run(password, "", "login", "--plain-http", "-u", user, "--password-stdin", reg.Host)
	case Regctl:
		return c.Run(password, "", "registry", "login", "-u", user, "--pass-stdin", reg.Host)
	case Skopeo:
		return c.Run(password, "", "login", "--tls-verify=false", "--authfile", c.path("auth.json"),
			"-u", user, "--password-stdin", reg.Host)
	}
	panic("unknown client " + c.Kind)
}

// LoginChecksCredentials tells whether Login itself fails on bad credentials.
func (c *Client) LoginChecksCredentials() bool { return c.Kind != Crane }

// Push pushes img to reg as repoTag ("repo:tag").
func (c *Client) Push(reg *Registry, repoTag string, img *TestImage) Result {
	c.t.Helper()
	c.prepare(reg)
	ref := reg.Ref(repoTag)
	switch c.Kind {
	case Crane:
		return c.Run("", "", "push", img.Layout, ref)
	case Oras:
		return c.Run("", filepath.Dir(img.PayloadFile), "push", "--plain-http", ref, payloadName+":"+payloadMediaType)
	case Regctl:
		return c.Run("", "", "image", "copy", "ocidir://"+img.Layout+":"+layoutTag, ref)
	case Skopeo:
		return c.Run("", "", "--policy", c.path("policy.json"), "copy", "--dest-tls-verify=false",
			"--authfile", c.path("auth.json"), "oci:"+img.Layout+":"+layoutTag, "docker://"+ref)
	}
	panic("unknown client " + c.Kind)
}

// Pull pulls repoTag from reg and returns the bytes that should equal what
// was pushed: the layer blob for images, the file for oras.
func (c *Client) Pull(reg *Registry, repoTag string, img *TestImage) (Result, []byte) {
	c.t.Helper()
	c.prepare(reg)
	ref := reg.Ref(repoTag)
	out := filepath.Join(c.t.TempDir(), "pulled")
	var r Result
	switch c.Kind {
	case Crane:
		r = c.Run("", "", "pull", "--format=oci", ref, out)
	case Oras:
		r = c.Run("", "", "pull", "--plain-http", "-o", out, ref)
	case Regctl:
		r = c.Run("", "", "image", "copy", ref, "ocidir://"+out+":"+layoutTag)
	case Skopeo:
		r = c.Run("", "", "--policy", c.path("policy.json"), "copy", "--src-tls-verify=false",
			"--authfile", c.path("auth.json"), "docker://"+ref, "oci:"+out+":"+layoutTag)
	}
	if !r.OK() {
		return r, nil
	}
	var got []byte
	var err error
	if c.Kind == Oras {
		got, err = os.ReadFile(filepath.Join(out, payloadName))
	} else {
		got, err = img.LayerIn(out)
	}
	if err != nil {
		c.t.Errorf("%s pulled %s but the content is missing: %v", c.Kind, ref, err)
	}
	return r, got
}

// Want is what Pull must return for img.
func (c *Client) Want(img *TestImage) []byte {
	if c.Kind == Oras {
		return img.Payload
	}
	return img.Layer
}

// Catalog lists the repositories of reg. skopeo has no such command.
func (c *Client) Catalog(reg *Registry) (Result, []string) {
	c.t.Helper()
	c.prepare(reg)
	var r Result
	switch c.Kind {
	case Crane:
		r = c.Run("", "", "catalog", reg.Host)
	case Oras:
		r = c.Run("", "", "repo", "ls", "--plain-http", reg.Host)
	case Regctl:
		r = c.Run("", "", "repo", "ls", reg.Host)
	default:
		c.t.Fatalf("%s cannot list a catalog", c.Kind)
	}
	return r, strings.Fields(r.Stdout)
}

// Tags lists the tags of repo in reg.
func (c *Client) Tags(reg *Registry, repo string) (Result, []string) {
	c.t.Helper()
	c.prepare(reg)
	ref := reg.Ref(repo)
	var r Result
	switch c.Kind {
	case Crane:
		r = c.Run("", "", "ls", ref)
	case Oras:
		r = c.Run("", "", "repo", "tags", "--plain-http", ref)
	case Regctl:
		r = c.Run("", "", "tag", "ls", ref)
	case Skopeo:
		r = c.Run("", "", "list-tags", "--tls-verify=false", "--authfile", c.path("auth.json"), "docker://"+ref)
		if r.OK() {
			return r, skopeoTags(r.Stdout)
		}
		return r, nil
	}
	return r, strings.Fields(r.Stdout)
}

// skopeoTags reads `skopeo list-tags` JSON output ({"Repository":…,"Tags":[…]}).
func skopeoTags(out string) []string {
	var listing struct{ Tags []string }
	if err := json.Unmarshal([]byte(out), &listing); err != nil {
		return nil
	}
	return listing.Tags
}
