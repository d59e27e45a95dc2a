package relay

import (
	"context"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

const (
	// mountTTL is how long the answer of a mount probe is remembered.
	mountTTL = time.Minute
	// maxMounts bounds the remembered probe answers.
	maxMounts = 4096
)

// mountCache remembers which services name a mount of this plugin, so
// that no request can steer the relay to another Vault path. One probe
// runs per service at a time; every request for it waits for that one.
type mountCache struct {
	answers *ttlMap[string, bool]
	probes  singleflight.Group
	timeout time.Duration // of one probe
}

func newMountCache(timeout time.Duration) *mountCache {
	return &mountCache{answers: newTTLMap[string, bool](mountTTL, maxMounts), timeout: timeout}
}

// check makes sure service names a plugin mount, asking probe when the
// answer is not remembered. A Vault outage is not remembered: it is a 503.
func (c *mountCache) check(ctx context.Context, service string,
	probe func(ctx context.Context, service string) (bool, *failure)) *failure {
	exists, ok := c.answers.get(service)
	if !ok {
		ch := c.probes.DoChan(service, func() (any, error) {
			// Not the caller's context: the probe serves every waiter.
			pctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			defer cancel()
			exists, f := probe(pctx, service)
			if f != nil {
				return nil, f
			}
			// A flood of made-up names must not push out the real
			// mounts: a "no" is remembered only while there is room.
			c.answers.put(service, exists, exists)
			return exists, nil
		})
		select {
		case r := <-ch:
			if r.Err != nil {
				return r.Err.(*failure)
			}
			exists = r.Val.(bool)
		case <-ctx.Done():
			return errUnavailable
		}
	}
	if !exists {
		return unknownService(service)
	}
	return nil
}

// forget drops what is remembered of service (Vault said it has no such
// mount any more).
func (c *mountCache) forget(service string) { c.answers.delete(service) }

const (
	// maxProbeBytes bounds the PEM bundle read from <service>/ca/pem.
	maxProbeBytes = 64 << 10
	// pemContentType is what the plugin's ca/pem answers with (Vault's own
	// PKI engine answers application/pem-file, so its mounts don't pass).
	pemContentType = "application/x-pem-file"
)

// checkMount makes sure service names a mount of this plugin.
func (v *vault) checkMount(ctx context.Context, service string) *failure {
	return v.mounts.check(ctx, service, v.probe)
}

// probe reads <service>/ca/pem without a token: a plugin mount answers a
// PEM bundle.
func (v *vault) probe(ctx context.Context, service string) (bool, *failure) {
	release, f := v.enter(ctx)
	if f != nil {
		return false, f
	}
	defer release()
	path := service + "/" + tokenapi.PathCAPEM
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.probeBase+path, nil)
	if err != nil {
		return false, unknownService(service)
	}
	for k, vs := range v.probeHeader {
		req.Header[k] = vs
	}
	resp, err := v.http.Do(req)
	if err != nil {
		return false, v.noAnswer(ctx, err, path, false)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBytes))
	if err != nil {
		return false, v.noAnswer(ctx, err, path, false)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBytes)) // so the connection is reused
	switch {
	case resp.StatusCode == http.StatusOK:
		ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		exists := ct == pemContentType && strings.HasPrefix(strings.TrimSpace(string(body)), "-----BEGIN ")
		if !exists && v.log.IsDebug() {
			v.log.Debug("mount is not a registry plugin mount", "service", service, "content_type", ct)
		}
		return exists, nil
	case resp.StatusCode == http.StatusServiceUnavailable:
		return false, v.unavailable("sealed", "vault is sealed or unavailable (503)", "path", path)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return false, v.unavailable("server_error", "vault answered an error", "path", path,
			"status", resp.StatusCode)
	default:
		if v.log.IsDebug() {
			v.log.Debug("no registry plugin mount", "service", service, "status", resp.StatusCode)
		}
		return false, nil
	}
}
