package relay

import (
	"context"
	"math/rand/v2"
	"time"
)

// jitter spreads a retry wait over [d, 1.25d), so that a fleet of relays
// that failed together does not retry in step.
func jitter(d time.Duration) time.Duration {
	return d + rand.N(d/4+1)
}

// sleep waits d or until ctx is done; false when ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// timeLeft is the time until ctx's deadline; an hour when it has none.
func timeLeft(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return time.Until(d)
	}
	return time.Hour
}
