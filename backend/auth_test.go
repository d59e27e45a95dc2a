package backend

import (
	"sync"
	"testing"
	"time"
)

func TestLockout_afterThresholdRefusesWithoutCheckingPassword(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 3
	cfg.LockoutDuration = 10 * time.Minute
	f.saveConfig(cfg)
	f.addUser("bob", "right", "")

	for i := 0; i < 3; i++ {
		if _, err := f.mint(TokenRequest{Username: "bob", Password: "wrong"}); errKind(err) != KindUnauthorized {
			t.Fatalf("failure %d: %v, want 401", i+1, err)
		}
	}
	_, err := f.mint(TokenRequest{Username: "bob", Password: "right"})
	e, ok := AsError(err)
	if !ok || e.Kind != KindLockedOut || e.RetryAfter != 10*time.Minute {
		t.Fatalf("right password while locked out: %v, want 429 with retry after 10m", err)
	}
	// After the lockout the right password works again.
	f.clock.Advance(10*time.Minute + time.Second)
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); err != nil {
		t.Fatalf("after the lockout: %v", err)
	}
}

func TestLockout_successResetsTheCount(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 3
	f.saveConfig(cfg)
	f.addUser("bob", "right", "")
	for round := 0; round < 3; round++ {
		for i := 0; i < 2; i++ {
			f.login("bob", "wrong", KindUnauthorized)
		}
		if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); err != nil {
			t.Fatalf("round %d: %v (two failures then a success must not lock out)", round, err)
		}
	}
}

func TestLockout_countResetsAfterDuration(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 2
	cfg.LockoutDuration = time.Minute
	f.saveConfig(cfg)
	f.addUser("bob", "right", "")
	f.login("bob", "wrong", KindUnauthorized)
	f.clock.Advance(2 * time.Minute)
	f.login("bob", "wrong", KindUnauthorized)
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); err != nil {
		t.Fatalf("failures further apart than lockout_duration locked out: %v", err)
	}
}

func TestLockout_passwordChangeUnlocks(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 1
	f.saveConfig(cfg)
	f.addUser("bob", "right", "")
	f.login("bob", "wrong", KindUnauthorized)
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); errKind(err) != KindLockedOut {
		t.Fatalf("want locked out, got %v", err)
	}
	f.addUser("bob", "new", "")
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "new"}); err != nil {
		t.Fatalf("after a password change: %v", err)
	}
}

func TestLockout_offDoesNotCount(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 0
	f.saveConfig(cfg)
	f.addUser("bob", "right", "")
	for i := 0; i < 10; i++ {
		f.login("bob", "wrong", KindUnauthorized)
	}
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); err != nil {
		t.Fatal(err)
	}
}

func TestCredentialCache_hitSkipsBcrypt(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "right", "repository:bob/*:*")
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); err != nil {
		t.Fatal(err)
	}
	runs := f.b.BcryptRuns()
	for i := 0; i < 5; i++ {
		if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.b.BcryptRuns(); got != runs {
		t.Errorf("cached credential still ran bcrypt %d times", got-runs)
	}
	// A wrong password always costs a full check and never hits the cache.
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "wrong"}); errKind(err) != KindUnauthorized {
		t.Fatalf("wrong password: %v", err)
	}
	if got := f.b.BcryptRuns(); got != runs+1 {
		t.Errorf("wrong password: bcrypt runs %d, want %d", got, runs+1)
	}
}

func TestCredentialCache_expiresAndDropsOnChange(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(f *fixture)
	}{
		{"ttl passes", func(f *fixture) { f.clock.Advance(5*time.Minute + time.Second) }},
		{"access changes", func(f *fixture) { f.addUser("bob", "right", "repository:other:pull") }},
		{"invalidated by another node", func(f *fixture) { f.b.Invalidate(f.ctx, "users/bob") }},
		{"config changes", func(f *fixture) { f.saveConfig(f.config()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.addUser("bob", "right", "repository:bob/*:*")
			f.login("bob", "right", 0)
			runs := f.b.BcryptRuns()
			tc.change(f)
			if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); err != nil {
				t.Fatal(err)
			}
			if f.b.BcryptRuns() != runs+1 {
				t.Error("the cached credential survived the change")
			}
		})
	}
}

func TestCredentialCache_passwordChangeRefusesOldPassword(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "old", "")
	f.login("bob", "old", 0)
	f.addUser("bob", "new", "")
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "old"}); errKind(err) != KindUnauthorized {
		t.Fatalf("old password after a change: %v, want 401", err)
	}
	if err := f.b.DeleteUser(f.ctx, f.s, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "new"}); errKind(err) != KindUnauthorized {
		t.Fatalf("deleted user: %v, want 401", err)
	}
}

func TestCredentialCache_offAlwaysChecks(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.CredentialCacheTTL = 0
	f.saveConfig(cfg)
	f.addUser("bob", "right", "")
	for i := 0; i < 3; i++ {
		f.login("bob", "right", 0)
	}
	if got := f.b.BcryptRuns(); got != 3 {
		t.Errorf("bcrypt runs = %d, want 3 with the cache off", got)
	}
}

func TestPasswordChecks_areBounded(t *testing.T) {
	f := newFixture(t)
	f.b = New(Options{Now: f.clock.Now, PasswordChecks: 1})
	cfg := DefaultConfig()
	cfg.BcryptCost = 12 // long enough that checks overlap
	f.saveConfig(cfg)
	f.addUser("bob", "right", "")
	f.login("bob", "right", 0)

	// Hold the only slot: password checks queue, a cached login does not.
	holdCheck(f.b)
	done := make(chan error, 1)
	go func() {
		_, err := f.mint(TokenRequest{Username: "bob", Password: "wrong"})
		done <- err
	}()
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); err != nil {
		t.Fatalf("cached login while checks are full: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("a password check ran while no slot was free: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	f.b.passwordChecks.release()
	if err := <-done; errKind(err) != KindUnauthorized {
		t.Fatalf("queued check: %v", err)
	}
}

func TestPasswordChecks_floodIsRefusedAsBusy(t *testing.T) {
	f := newFixture(t)
	f.b = New(Options{Now: f.clock.Now, PasswordChecks: 1})
	cfg := DefaultConfig()
	cfg.BcryptCost = 4
	f.saveConfig(cfg)
	holdCheck(f.b) // the slot stays taken
	_, err := f.mint(TokenRequest{Username: "nobody", Password: "x"})
	if e, ok := AsError(err); !ok || e.Kind != KindBusy || e.RetryAfter <= 0 {
		t.Fatalf("no free check for %s: %v, want busy", passwordCheckWait, err)
	}
}

func TestAuthenticate_concurrentWritesNeverGrantAccessNeverHeld(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "repository:a:pull")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		accesses := []string{"repository:a:pull", "repository:b:pull"}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f.addUser("bob", "pw", accesses[i%2])
		}
	}()
	for i := 0; i < 200; i++ {
		tok, err := f.mint(TokenRequest{Username: "bob", Password: "pw", Scopes: []string{"repository:a:pull", "repository:b:pull", "repository:c:pull"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(tok.Access) != 1 || tok.Access[0].Name == "c" {
			t.Fatalf("torn grant: %+v", tok.Access)
		}
	}
	close(stop)
	wg.Wait()
}

func TestLockout_samePasswordWriteUnlocks(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 1
	f.saveConfig(cfg)
	f.addUser("bob", "right", "")
	f.login("bob", "wrong", KindUnauthorized)
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); errKind(err) != KindLockedOut {
		t.Fatalf("want locked out, got %v", err)
	}
	f.addUser("bob", "right", "") // the operator sets the same password again
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); err != nil {
		t.Fatalf("after the operator rewrote the password: %v", err)
	}
}

func TestLockout_lateFailureDoesNotLiftIt(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 2
	f.saveConfig(cfg)
	f.addUser("bob", "right", "")
	f.login("bob", "wrong", KindUnauthorized)
	f.login("bob", "wrong", KindUnauthorized)
	// A wrong password checked concurrently, before the lockout began,
	// is recorded after it.
	if _, _, err := f.b.concludeCheck(f.ctx, f.s, cfg, "bob", nil, false, nil); errKind(err) != KindUnauthorized {
		t.Fatal(err)
	}
	if _, err := f.mint(TokenRequest{Username: "bob", Password: "right"}); errKind(err) != KindLockedOut {
		t.Fatalf("after a late failure: %v, want still locked out", err)
	}
}

// Requests that queued for a password check with a cold cache, for a
// password another check has just verified, share that check's work: no
// bcrypt of their own. Each is still judged as its own login.
func TestCredentialCache_queuedChecksShareAVerifiedPassword(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 3
	f.saveConfig(cfg)
	f.addUser("bob", "right", "repository:bob/*:*")
	// Every password-check slot taken: the logins below queue.
	for range f.b.passwordChecks.size {
		holdCheck(f.b)
	}
	const n = 3 // no more than the lockout threshold: each is reserved at once
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := f.mint(TokenRequest{Username: "bob", Password: "right"})
			errs <- err
		}()
	}
	time.Sleep(200 * time.Millisecond) // they pass the cache (cold) and queue for a slot
	// Another check verified the password meanwhile (as on a new leader).
	u, err := f.b.ReadUser(f.ctx, f.s, "bob")
	if err != nil || u == nil {
		t.Fatal(u, err)
	}
	cu := f.b.cachedUser(u)
	f.b.users.Store("bob", &cachedUser{version: u.Version, access: cu.access,
		credential: f.b.credentialMAC("bob", u.Version, "right"), credentialExpires: f.clock.Now().Add(time.Minute)})
	runs := f.b.BcryptRuns()
	for range f.b.passwordChecks.size {
		f.b.passwordChecks.release()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("queued login: %v", err)
		}
	}
	if got := f.b.BcryptRuns() - runs; got != 0 {
		t.Errorf("queued logins of a verified password ran bcrypt %d times, want 0", got)
	}
	// A wrong password never shares: each one is checked and counted.
	f.login("bob", "wrong", KindUnauthorized)
	if got := f.b.BcryptRuns() - runs; got != 1 {
		t.Errorf("wrong password: %d bcrypt runs, want 1", got)
	}
}
