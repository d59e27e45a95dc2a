package relay

import (
	"context"
	"time"

	"golang.org/x/sync/singleflight"
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
