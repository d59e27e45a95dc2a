package backend

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/bcrypt"
)

// The tests of issue 12's findings: each failed on the code before the fix.

// 30 concurrent wrong guesses at threshold 5: at most 5 password checks
// conclude (401), the rest are refused (429); the right password queued
// behind them is refused too, and grants nothing. Run with -race.
func TestLockout_concurrentGuessesConcludeAtMostThreshold(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.BcryptCost = 6 // long enough that the guesses overlap
	cfg.LockoutThreshold = 5
	f.saveConfig(cfg)
	f.addUser("bob", "right", "repository:bob/*:*")

	const guesses = 30
	var wg sync.WaitGroup
	kinds := make([]Kind, guesses)
	start := make(chan struct{})
	for i := range guesses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := f.mint(TokenRequest{Username: "bob", Password: fmt.Sprintf("wrong%d", i)})
			kinds[i] = errKind(err)
		}()
	}
	close(start)
	// The right password comes once the guesses hold every check the
	// threshold allows: failures counted plus checks in flight. (The
	// guesses may conclude before this loop runs again: then bob is
	// locked out, and the answer must be the same.)
	for held := 0; held < cfg.LockoutThreshold; {
		runtime.Gosched()
		u, err := f.b.ReadUser(f.ctx, f.s, "bob")
		if err != nil {
			t.Fatal(err)
		}
		held = u.Lockout.Failures
		if f.b.lockout(cfg, u.Lockout).locked {
			held = cfg.LockoutThreshold
		}
		f.b.checks.mu.Lock()
		if p := f.b.checks.inFlight["bob"]; p != nil {
			held += p.n
		}
		f.b.checks.mu.Unlock()
	}
	tok, err := f.mint(TokenRequest{Username: "bob", Password: "right", Scopes: []string{"repository:bob/app:push"}})
	wg.Wait()

	not429 := 0
	for i, k := range kinds {
		switch k {
		case KindUnauthorized:
			not429++
		case KindLockedOut, KindBusy:
		default:
			t.Errorf("guess %d: kind %d, want 401 or 429", i, k)
		}
	}
	t.Logf("MEASURE lockout concurrent_guesses=%d threshold=%d not_429=%d", guesses, cfg.LockoutThreshold, not429)
	if not429 > cfg.LockoutThreshold {
		t.Errorf("%d of %d concurrent wrong guesses were checked (401); at most %d may be", not429, guesses, cfg.LockoutThreshold)
	}
	// Locked out, or (on a busy machine) refused as busy before its check:
	// both are a 429 that grants nothing; what must never happen is a token.
	if k := errKind(err); (k != KindLockedOut && k != KindBusy) || tok != nil {
		t.Fatalf("right password queued behind the guesses: %v (token %v), want 429", err, tok != nil)
	}
}

// A right password whose check concludes after the lockout began is
// refused: the lockout is looked at again when the check ends.
func TestLockout_successConcludedAfterLockoutBeganIs429(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 2
	f.saveConfig(cfg)
	f.addUser("bob", "right", "repository:bob/*:*")
	u, err := f.b.ReadUser(f.ctx, f.s, "bob")
	if err != nil {
		t.Fatal(err)
	}
	// The check of the right password has passed; meanwhile two failures
	// (from another node, say) lock bob out.
	f.login("bob", "wrong", KindUnauthorized)
	f.login("bob", "wrong", KindUnauthorized)
	lg, _, err := f.b.concludeCheck(f.ctx, f.s, cfg, "bob", u, true, nil)
	if errKind(err) != KindLockedOut || lg != nil {
		t.Fatalf("success concluded after the lockout began: %v, %+v; want 429 granting nothing", err, lg)
	}
}

// An unknown name gets the same answers, in the same order, with the same
// texts and the same bcrypt work as a user with a wrong password.
func TestLockout_unknownNameAnswersAsAUserDoes(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 3
	f.saveConfig(cfg)
	f.addUser("bob", "right", "")
	answers := func(name string) (out []string, runs int64) {
		before := f.b.BcryptRuns()
		for range 6 {
			_, err := f.mint(TokenRequest{Username: name, Password: "wrong"})
			e, _ := AsError(err)
			if e == nil {
				t.Fatalf("%s: %v", name, err)
			}
			out = append(out, fmt.Sprintf("%d %s %s", e.Kind, e.RetryAfter, strings.ReplaceAll(e.Msg, quote(name), "NAME")))
		}
		return out, f.b.BcryptRuns() - before
	}
	known, knownRuns := answers("bob")
	unknown, unknownRuns := answers("nobody")
	if strings.Join(known, "\n") != strings.Join(unknown, "\n") || knownRuns != unknownRuns {
		t.Errorf("a user and an unknown name differ:\nuser (%d bcrypt runs):\n%s\nunknown (%d bcrypt runs):\n%s",
			knownRuns, strings.Join(known, "\n"), unknownRuns, strings.Join(unknown, "\n"))
	}
	if !strings.HasPrefix(unknown[5], fmt.Sprint(KindLockedOut)) {
		t.Errorf("unknown name after %d failures: %s, want locked out", cfg.LockoutThreshold, unknown[5])
	}
	// Both unlock after lockout_duration.
	f.clock.Advance(cfg.LockoutDuration + time.Second)
	f.login("bob", "wrong", KindUnauthorized)
	f.login("nobody", "wrong", KindUnauthorized)
}

// Spraying unknown names grows neither storage nor memory past the cap.
func TestLockout_unknownNamesAreBounded(t *testing.T) {
	f := newFixture(t)
	const tracked = 50
	f.b.checks = newCheckState(tracked)
	f.addUser("bob", "right", "")
	keysBefore, _ := logical.CollectKeys(f.ctx, f.s)
	for i := range 3 * tracked {
		f.login(fmt.Sprintf("spray%d", i), "wrong", KindUnauthorized)
	}
	keysAfter, _ := logical.CollectKeys(f.ctx, f.s)
	if len(keysAfter) > len(keysBefore)+1 { // the one decoy record
		t.Errorf("storage grew from %d to %d keys while spraying unknown names", len(keysBefore), len(keysAfter))
	}
	if n := f.b.checks.unknown.Len(); n != tracked {
		t.Errorf("%d unknown names tracked, want the cap %d", n, tracked)
	}
	if n := len(f.b.checks.inFlight); n != 0 {
		t.Errorf("%d names left in flight after every check ended", n)
	}
}

// A password change while users log in with offline_token leaves no
// refresh token that still works: 0 survivors in 1,000 rounds. The
// password flips between two imported hashes, so the change itself is
// instant; a first login caches the credential, so the concurrent logins
// are quick and the change lands anywhere among them. Run with -race.
func TestRefresh_noTokenSurvivesAPasswordChange(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold = 0 // logins that miss the change count no failures
	f.saveConfig(cfg)
	passwords := []string{"pw-a", "pw-b"}
	var hashes []string
	for _, p := range passwords {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, string(h))
	}
	if _, err := f.b.WriteUser(f.ctx, f.s, "bob", UserUpdate{PasswordHash: &hashes[0]}); err != nil {
		t.Fatal(err)
	}
	const rounds, logins = 1000, 8
	issued, survivors := 0, 0
	for round := range rounds {
		old, next := passwords[round%2], hashes[(round+1)%2]
		f.login("bob", old, 0)
		var wg sync.WaitGroup
		var started atomic.Int32
		tokens := make([]string, logins)
		for i := range logins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				started.Add(1)
				tok, err := f.mint(TokenRequest{Username: "bob", Password: old, ClientID: "docker", Offline: true})
				if err == nil {
					tokens[i] = tok.RefreshToken
				} else if k := errKind(err); k != KindUnauthorized && k != KindBusy {
					t.Error(err)
				}
			}()
		}
		// The change lands at a different point of the logins each round.
		for started.Load() <= int32(round%logins) {
			runtime.Gosched()
		}
		if _, err := f.b.WriteUser(f.ctx, f.s, "bob", UserUpdate{PasswordHash: &next}); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		for _, rt := range tokens {
			if rt == "" {
				continue
			}
			issued++
			if _, err := f.refresh(rt, "docker"); err == nil {
				survivors++
			} else if errKind(err) != KindInvalidGrant {
				t.Fatal(err)
			}
		}
	}
	t.Logf("MEASURE refresh rounds=%d issued=%d survivors=%d", rounds, issued, survivors)
	if survivors != 0 {
		t.Errorf("%d of %d refresh tokens issued around a password change still work", survivors, issued)
	}
}

// A refresh token a delete missed (as a racing login could leave) is
// refused once the name is a user again: the new user has a new credential
// generation.
func TestRefresh_deletedAndRecreatedUserRefusesOldToken(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "repository:bob/*:*")
	rt := f.offlineLogin("bob", "pw", "docker")
	hash := refreshTokenHash(rt)
	saved := map[string]*logical.StorageEntry{}
	for _, k := range []string{refreshPrefix + hash, refreshIndexPrefix + "bob/" + hash} {
		e, err := f.s.Get(f.ctx, k)
		if err != nil || e == nil {
			t.Fatalf("%s: %v %v", k, e, err)
		}
		saved[k] = e
	}
	if err := f.b.DeleteUser(f.ctx, f.s, "bob"); err != nil {
		t.Fatal(err)
	}
	f.addUser("bob", "other", "repository:**:*")
	for _, e := range saved {
		if err := f.s.Put(f.ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if tok, err := f.refresh(rt, "docker", "repository:bob/app:pull"); errKind(err) != KindInvalidGrant {
		t.Fatalf("old refresh token after delete and re-create: %v (token %v), want invalid_grant", err, tok != nil)
	}
	if list, _ := f.b.ListRefreshTokens(f.ctx, f.s, UserSubject("bob")); len(list) != 0 {
		t.Errorf("the old token is listed as the new user's: %+v", list)
	}
	if n, err := f.b.PruneRefreshTokens(f.ctx, f.s); n != 1 || err != nil {
		t.Errorf("prune removed %d, %v; want the old token", n, err)
	}
}

// A successful login stores the password at the configured cost when the
// stored hash has another (a raised bcrypt_cost, an imported hash); its
// refresh tokens stay good, the operator sees the cost.
func TestLogin_rehashesAtTheConfiguredCost(t *testing.T) {
	f := newFixture(t) // users stored at cost 4
	f.addUser("bob", "pw", "")
	imported, err := bcrypt.GenerateFromPassword([]byte("imported-pw"), 6)
	if err != nil {
		t.Fatal(err)
	}
	h := string(imported)
	if _, err := f.b.WriteUser(f.ctx, f.s, "ann", UserUpdate{PasswordHash: &h}); err != nil {
		t.Fatal(err)
	}
	rt := f.offlineLogin("bob", "pw", "docker")
	cfg := f.config()
	cfg.BcryptCost = 5
	f.saveConfig(cfg)
	cost := func(name string) int {
		u, err := f.b.ReadUser(f.ctx, f.s, name)
		if err != nil || u == nil {
			t.Fatalf("%s: %v", name, err)
		}
		return u.BcryptCost()
	}
	if cost("bob") != 4 || cost("ann") != 6 {
		t.Fatalf("before login: bob %d, ann %d", cost("bob"), cost("ann"))
	}
	f.login("bob", "wrong", KindUnauthorized)
	if cost("bob") != 4 {
		t.Errorf("a wrong password rehashed bob's hash")
	}
	f.login("bob", "pw", 0)
	f.login("ann", "imported-pw", 0)
	t.Logf("MEASURE bcrypt_cost after login: bob %d, ann %d (configured %d)", cost("bob"), cost("ann"), cfg.BcryptCost)
	if cost("bob") != 5 || cost("ann") != 5 {
		t.Errorf("after login: bob at cost %d, ann at %d; want %d", cost("bob"), cost("ann"), cfg.BcryptCost)
	}
	f.login("bob", "pw", 0)
	f.login("ann", "imported-pw", 0)
	if _, err := f.refresh(rt, "docker"); err != nil {
		t.Errorf("a rehash ended the refresh token: %v", err)
	}
}

// A user holds at most refresh_tokens_per_user live refresh tokens: a new
// one past the cap revokes the oldest.
func TestRefresh_perUserCapRevokesTheOldest(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.RefreshTokensPerUser = 3
	f.saveConfig(cfg)
	f.addUser("bob", "pw", "")
	var rts []string
	for i := range 5 {
		rts = append(rts, f.offlineLogin("bob", "pw", fmt.Sprintf("client%d", i)))
		f.clock.Advance(time.Minute)
	}
	list, err := f.b.ListRefreshTokens(f.ctx, f.s, UserSubject("bob"))
	if err != nil || len(list) != 3 {
		t.Fatalf("listed %d tokens, %v; want 3", len(list), err)
	}
	for i, rt := range rts {
		_, err := f.refresh(rt, "docker")
		if live := err == nil; live != (i >= 2) {
			t.Errorf("token %d: live %v (%v); want only the 3 newest live", i, live, err)
		}
	}
}

// The periodic prune reads a bounded number of tokens per pass and goes on
// where it stopped.
func TestRefresh_pruneDoesBoundedWorkPerPass(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.RefreshTokensPerUser = maxRefreshTokensPerUser
	f.saveConfig(cfg)
	const users, perUser = 5, 500 // 2,500 tokens: three passes
	for u := range users {
		name := fmt.Sprintf("user%d", u)
		f.addUser(name, "pw", "")
		stored, err := f.b.ReadUser(f.ctx, f.s, name)
		if err != nil {
			t.Fatal(err)
		}
		for range perUser {
			if _, err := f.b.issueRefreshToken(f.ctx, f.s, cfg, refreshGrant{Subject: UserSubject(name), Generation: stored.Generation, ClientID: "docker", TTL: cfg.RefreshTokenTTL}); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.clock.Advance(cfg.RefreshTokenTTL + time.Second)
	var passes []int
	for total := 0; total < users*perUser && len(passes) < 10; {
		n, err := f.b.PruneRefreshTokens(f.ctx, f.s)
		if err != nil {
			t.Fatal(err)
		}
		passes = append(passes, n)
		total += n
	}
	t.Logf("MEASURE prune passes=%v budget=%d", passes, pruneBudget)
	if fmt.Sprint(passes) != fmt.Sprint([]int{pruneBudget, pruneBudget, users*perUser - 2*pruneBudget}) {
		t.Errorf("pruned per pass %v; want %d, %d, then the rest", passes, pruneBudget, pruneBudget)
	}
	keys, _ := logical.CollectKeysWithPrefix(f.ctx, f.s, refreshPrefix)
	if len(keys) != 0 {
		t.Errorf("%d refresh tokens left", len(keys))
	}
}
