package backend

import (
	"context"
	"slices"
	"sync"
	"time"
)

// checkSlots bounds the bcrypt comparisons running at once. Those waiting
// for a slot are served in order of arrival, with one exception: a check
// for a request of a batch (WithinBatch) goes before the others. The relay
// batches only credentials that got a token lately, whose check is
// usually cached; one that needs bcrypt (a cold cache after an election)
// would otherwise wait behind a flood of wrong passwords, each with the
// full passwordCheckWait, while a batch entry has only batchCheckWait.
type checkSlots struct {
	size   int // slots in all
	mu     sync.Mutex
	free   int
	queues [2][]*checkWaiter // [0]: batch entries; [1]: the others
}

type checkWaiter struct {
	granted chan struct{} // closed when a slot is handed to this waiter
}

func newCheckSlots(n int) *checkSlots { return &checkSlots{size: n, free: n} }

// acquire takes a slot, waiting until waitUntil at most (then errBusy) or
// until ctx is done.
func (c *checkSlots) acquire(ctx context.Context, waitUntil time.Time, first bool) error {
	q := 1
	if first {
		q = 0
	}
	c.mu.Lock()
	if c.free > 0 && len(c.queues[0]) == 0 && (first || len(c.queues[1]) == 0) {
		c.free--
		c.mu.Unlock()
		return nil
	}
	w := &checkWaiter{granted: make(chan struct{})}
	c.queues[q] = append(c.queues[q], w)
	c.mu.Unlock()

	t := time.NewTimer(time.Until(waitUntil))
	defer t.Stop()
	var err error
	select {
	case <-w.granted:
		return nil
	case <-t.C:
		err = errBusy
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-w.granted:
		return nil // handed over while the wait ended: it is ours
	default:
	}
	c.queues[q] = slices.DeleteFunc(c.queues[q], func(o *checkWaiter) bool { return o == w })
	return err
}

// tryAcquire takes a slot only if one is free now and nobody waits.
func (c *checkSlots) tryAcquire() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.free == 0 || len(c.queues[0])+len(c.queues[1]) > 0 {
		return false
	}
	c.free--
	return true
}

// release gives a slot back: to the first waiter, batch entries first.
func (c *checkSlots) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q := range c.queues {
		if len(c.queues[q]) > 0 {
			w := c.queues[q][0]
			c.queues[q] = slices.Delete(c.queues[q], 0, 1)
			close(w.granted)
			return
		}
	}
	c.free++
}

// batchKey marks the context of a request of a token batch.
type batchKey struct{}

// WithinBatch marks ctx as a request of a token batch (paths/token_batch.go):
// its waits for a password check have their own, shorter budget
// (batchCheckWait) and go first, so that one request cannot hold the
// answers of the others for long.
func WithinBatch(ctx context.Context) context.Context {
	return context.WithValue(ctx, batchKey{}, true)
}

func withinBatch(ctx context.Context) bool {
	b, _ := ctx.Value(batchKey{}).(bool)
	return b
}
