package backend

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestRobots_cannotBeLockedOutAndCostNoBcrypt(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold, cfg.LockoutDuration = 2, time.Hour
	f.saveConfig(cfg)
	c := f.robot()
	for range 5 {
		// As for an unknown name: 401, then 429 past the threshold.
		if _, err := f.mint(TokenRequest{Username: c.Name, Password: "guess"}); errKind(err) != KindUnauthorized && errKind(err) != KindLockedOut {
			t.Fatalf("wrong robot secret: %v, want 401 or 429", err)
		}
	}
	runs := f.b.BcryptRuns()
	for range 3 {
		if _, err := f.mint(TokenRequest{Username: c.Name, Password: c.Password}); err != nil {
			t.Fatalf("robot after guesses of its name: %v", err)
		}
	}
	if got := f.b.BcryptRuns(); got != runs {
		t.Errorf("robot logins ran bcrypt %d times", got-runs)
	}
	// A wrong secret costs what an unknown user's costs: one decoy check.
	if _, err := f.mint(TokenRequest{Username: c.Name, Password: "guess"}); err == nil {
		t.Fatal("a wrong robot secret was accepted")
	}
	if got := f.b.BcryptRuns(); got != runs+1 {
		t.Errorf("a wrong robot secret ran bcrypt %d times, an unknown user's 1", got-runs)
	}
}

func TestRobots_secretIsStoredOnlyAsItsHMAC(t *testing.T) {
	f := newFixture(t)
	c := f.robot()
	keys, _ := f.s.List(f.ctx, "")
	for _, dir := range keys {
		sub, _ := f.s.List(f.ctx, dir)
		for _, k := range append(sub, "") {
			e, _ := f.s.Get(f.ctx, dir+k)
			if e != nil && len(c.Password) > 0 && contains(e.Value, c.Password) {
				t.Errorf("storage %s holds the robot's secret", dir+k)
			}
		}
	}
}

// robot makes the role ci (pull on team/*) and a robot of it, live for an hour.
func (f *fixture) robot() *RobotCreds {
	f.t.Helper()
	if _, err := f.b.WriteRole(f.ctx, f.s, "ci", RoleUpdate{Access: ptr("repository:team/*:pull")}, LeaseLimits{}); err != nil {
		f.t.Fatal(err)
	}
	c, err := f.b.IssueRobot(f.ctx, f.s, "ci", time.Hour)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func ptr[T any](v T) *T { return &v }

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

// deleteFails is storage whose deletes under prefix fail.
type deleteFails struct {
	logical.Storage
	prefix string
}

func (s *deleteFails) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, s.prefix) {
		return errors.New("storage unavailable")
	}
	return s.Storage.Delete(ctx, key)
}

func TestRobots_revokeFailingHalfwayLeavesTheRobotRefusedAndIsRetried(t *testing.T) {
	f := newFixture(t)
	c := f.robot()
	tok, err := f.mint(TokenRequest{Username: c.Name, Password: c.Password, Offline: true})
	if err != nil || tok.RefreshToken == "" {
		t.Fatalf("robot login: %v", err)
	}
	broken := &deleteFails{Storage: f.s, prefix: refreshPrefix}
	if err := f.b.RevokeRobot(f.ctx, broken, c.Name, "ci"); err == nil {
		t.Fatal("a revoke whose refresh-token deletes failed reported success: Vault would not retry it")
	}
	if _, err := f.mint(TokenRequest{Username: c.Name, Password: c.Password}); errKind(err) != KindUnauthorized {
		t.Errorf("robot after a failed revoke: %v, want 401", err)
	}
	if _, err := f.b.TokenForRefreshToken(f.ctx, f.s, RefreshRequest{RefreshToken: tok.RefreshToken}); errKind(err) != KindInvalidGrant {
		t.Errorf("refresh after a failed revoke: %v, want invalid grant", err)
	}
	// Vault retries: the retry finishes the job, and a third is a no-op.
	for range 2 {
		if err := f.b.RevokeRobot(f.ctx, f.s, c.Name, "ci"); err != nil {
			t.Fatal(err)
		}
	}
	for _, prefix := range []string{robotPrefix, robotIndexPrefix, refreshPrefix, refreshIndexPrefix} {
		if keys, _ := logical.CollectKeysWithPrefix(f.ctx, f.s, prefix); len(keys) != 0 {
			t.Errorf("left under %s: %v", prefix, keys)
		}
	}
}

// slowDeletes is storage whose deletes take a while and which counts the
// most running at once.
type slowDeletes struct {
	logical.Storage
	running, most atomic.Int32
}

func (s *slowDeletes) Delete(ctx context.Context, key string) error {
	n := s.running.Add(1)
	defer s.running.Add(-1)
	for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
	}
	time.Sleep(2 * time.Millisecond)
	return s.Storage.Delete(ctx, key)
}

// TestRobots_revocationsGoAFewAtATime: many revocations at once (a mass
// expiry) run robotRevokesAtOnce at a time, all of them to the end; one
// that cannot get a turn before its context ends fails, for Vault to retry.
func TestRobots_revocationsGoAFewAtATime(t *testing.T) {
	f := newFixture(t)
	var robots []*RobotCreds
	for range 20 {
		robots = append(robots, f.robot())
	}
	slow := &slowDeletes{Storage: f.s}
	var wg sync.WaitGroup
	for _, c := range robots {
		wg.Go(func() {
			if err := f.b.RevokeRobot(f.ctx, slow, c.Name, "ci"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if m := slow.most.Load(); m < 1 || m > robotRevokesAtOnce {
		t.Errorf("%d deletes ran at once, want 1 to %d (one revocation deletes one key at a time)", m, robotRevokesAtOnce)
	}
	for _, prefix := range []string{robotPrefix, robotIndexPrefix} {
		if keys, _ := logical.CollectKeysWithPrefix(f.ctx, f.s, prefix); len(keys) != 0 {
			t.Errorf("left under %s: %v", prefix, keys)
		}
	}

	c := f.robot()
	for range robotRevokesAtOnce {
		f.b.revokes <- struct{}{} // every turn taken
	}
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Millisecond)
	defer cancel()
	if err := f.b.RevokeRobot(ctx, f.s, c.Name, "ci"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("revoke without a turn: %v, want the context's deadline", err)
	}
	for range robotRevokesAtOnce {
		<-f.b.revokes
	}
	if err := f.b.RevokeRobot(f.ctx, f.s, c.Name, "ci"); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if _, err := f.mint(TokenRequest{Username: c.Name, Password: c.Password}); errKind(err) != KindUnauthorized {
		t.Errorf("robot after its revocation: %v, want 401", err)
	}
}
