package backend

import (
	"context"
	"testing"
	"time"
)

// holdCheck takes a password-check slot, as a running bcrypt check does,
// until f.b.passwordChecks.release().
func holdCheck(b *Backend) {
	if err := b.passwordChecks.acquire(context.Background(), time.Now().Add(time.Hour), false); err != nil {
		panic(err)
	}
}

// A locked-out user's right password, sent while every password check is
// taken (a flood), is refused as locked out at once, never as busy: the
// relay forgets a credential on any refusal but busy (issue 20, point 1),
// and a batch must not wait for a decoy check.
func TestLockout_refusalNeverTurnsBusy(t *testing.T) {
	f := newFixture(t)
	f.b = New(Options{Now: f.clock.Now, PasswordChecks: 1})
	cfg := f.config()
	cfg.LockoutThreshold = 2
	cfg.BcryptCost = 4
	f.saveConfig(cfg)
	f.addUser("mallory", "right", "repository:mallory/*:*")
	f.login("mallory", "right", 0)
	f.login("mallory", "wrong-1", KindUnauthorized)
	f.login("mallory", "wrong-2", KindUnauthorized)

	holdCheck(f.b)
	defer f.b.passwordChecks.release()
	runs := f.b.BcryptRuns()
	start := time.Now()
	if _, err := f.mint(TokenRequest{Username: "mallory", Password: "right"}); errKind(err) != KindLockedOut || time.Since(start) >= passwordCheckWait {
		t.Errorf("locked-out user, every check taken: %v after %s, want locked out at once", err, time.Since(start))
	}
	start = time.Now()
	_, err := f.b.TokenForLogin(WithinBatch(f.ctx), f.s, TokenRequest{Service: "registry", Username: "mallory", Password: "right"})
	if took := time.Since(start); errKind(err) != KindLockedOut || took >= batchCheckWait {
		t.Errorf("locked-out user within a batch, every check taken: %v after %s, want locked out at once", err, took)
	}
	if n := f.b.BcryptRuns() - runs; n != 0 {
		t.Errorf("%d bcrypt runs without a free slot", n)
	}
}

// Within a batch, a password check waits batchCheckWait at most (the
// batch answers when its slowest request does), and goes before the
// single requests that wait (a cached user's check after an election
// must not wait behind a flood of wrong passwords).
func TestCheckSlots_batchRequestsWaitLessAndGoFirst(t *testing.T) {
	f := newFixture(t)
	f.b = New(Options{Now: f.clock.Now, PasswordChecks: 1})
	cfg := f.config()
	cfg.BcryptCost = 4
	f.saveConfig(cfg)
	f.addUser("gina", "right", "repository:gina/*:*")

	holdCheck(f.b)
	start := time.Now()
	_, err := f.b.TokenForLogin(WithinBatch(f.ctx), f.s, TokenRequest{Service: "registry", Username: "gina", Password: "right"})
	if took := time.Since(start); errKind(err) != KindBusy || took >= passwordCheckWait {
		t.Errorf("batch request, every check taken: %v after %s, want busy after about %s", err, took, batchCheckWait)
	}

	// A single request queues first, then a batch request: the slot goes
	// to the batch request.
	order := make(chan string, 2)
	go func() {
		if _, err := f.mint(TokenRequest{Username: "nobody", Password: "guess"}); errKind(err) != KindUnauthorized {
			t.Errorf("single request: %v", err)
		}
		order <- "single"
	}()
	waitQueued(t, f.b, 1, 1)
	go func() {
		if _, err := f.b.TokenForLogin(WithinBatch(f.ctx), f.s, TokenRequest{Service: "registry", Username: "gina", Password: "right"}); err != nil {
			t.Errorf("batch request: %v", err)
		}
		order <- "batch"
	}()
	waitQueued(t, f.b, 0, 1)
	// release hands the slot over at once; the order in which the two
	// requests finish says nothing (the batch request still signs a token,
	// with the first signing key made then, after its check).
	f.b.passwordChecks.release()
	f.b.passwordChecks.mu.Lock()
	batchWaiting, singleWaiting := len(f.b.passwordChecks.queues[0]), len(f.b.passwordChecks.queues[1])
	f.b.passwordChecks.mu.Unlock()
	if batchWaiting != 0 || singleWaiting != 1 {
		t.Errorf("after one slot came free: %d batch and %d single requests wait, want 0 and 1 (the batch request first)", batchWaiting, singleWaiting)
	}
	<-order
	<-order
}

// waitQueued waits until queue q of the password checks holds n waiters.
func waitQueued(t *testing.T, b *Backend, q, n int) {
	t.Helper()
	for range 500 {
		b.passwordChecks.mu.Lock()
		got := len(b.passwordChecks.queues[q])
		b.passwordChecks.mu.Unlock()
		if got == n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("queue %d never held %d waiters", q, n)
}

// A waiter whose time runs out leaves the queue; a slot given back with
// nobody waiting is free again.
func TestCheckSlots_timeoutLeavesTheQueue(t *testing.T) {
	c := newCheckSlots(1)
	ctx := context.Background()
	if err := c.acquire(ctx, time.Now(), false); err != nil {
		t.Fatal(err)
	}
	if err := c.acquire(ctx, time.Now().Add(20*time.Millisecond), true); err != errBusy {
		t.Fatalf("no free slot: %v, want busy", err)
	}
	if len(c.queues[0])+len(c.queues[1]) != 0 {
		t.Fatal("a waiter that gave up is still queued")
	}
	c.release()
	if !c.tryAcquire() {
		t.Fatal("the slot given back is not free")
	}
}
