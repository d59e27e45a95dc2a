package relay

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

const (
	// maxVaultCalls bounds the Vault calls in flight; more requests wait
	// for a slot until their deadline.
	maxVaultCalls = 128
	// downFor is how long the relay answers 503 at once after Vault was
	// unreachable or timed out, instead of piling up requests that wait.
	downFor = time.Second
)

var (
	errVaultDown = errors.New("vault was unreachable a moment ago")
	errSlotsBusy = errors.New("every Vault call slot busy until the request's deadline")
)

// admission decides whether a request may call Vault now: a bounded
// number of calls in flight, and none for a moment after Vault failed to
// answer, so that a burst during an outage costs nothing.
type admission struct {
	slots     chan struct{}
	downUntil atomic.Int64 // unix nanoseconds
}

func newAdmission() *admission {
	return &admission{slots: make(chan struct{}, maxVaultCalls)}
}

// enter takes a slot for one Vault call, waiting for one until ctx is
// done; release gives it back.
func (a *admission) enter(ctx context.Context) (release func(), err error) {
	if time.Now().UnixNano() < a.downUntil.Load() {
		return nil, errVaultDown
	}
	release = func() { <-a.slots }
	select {
	case a.slots <- struct{}{}:
		return release, nil
	default:
	}
	select {
	case a.slots <- struct{}{}:
		return release, nil
	case <-ctx.Done():
		return nil, errSlotsBusy
	}
}

// markDown refuses every call for downFor.
func (a *admission) markDown() {
	a.downUntil.Store(time.Now().Add(downFor).UnixNano())
}
