package backend

import (
	"fmt"
	"sync"
	"testing"
)

// Tokens minted while users are written, deleted and their access changed,
// and while the keys are rotated and the CA regenerated: every token
// verifies, none carries access its user never had, and no write is lost.
// Run with -race.
func TestConcurrency_mintWhileUsersAndKeysChange(t *testing.T) {
	f := newFixture(t)
	f.addUser("bob", "pw", "repository:a:pull")
	const writers = 20
	var wg sync.WaitGroup
	stop := make(chan struct{})

	// Operators: bob's access flips between a and b; other users come and go.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			access := []string{"repository:a:pull", "repository:b:pull"}[i%2]
			if _, err := f.b.WriteUser(f.ctx, f.s, "bob", UserUpdate{Access: &access}); err != nil {
				t.Error(err)
				return
			}
			if i%2 == 0 {
				f.addUser("eve", "pw", "repository:c:pull")
			} else if err := f.b.DeleteUser(f.ctx, f.s, "eve"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// Writers of distinct users: each write must survive.
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				f.addUser(fmt.Sprintf("user%d", w), "pw", fmt.Sprintf("repository:w%d/v%d:pull", w, i))
			}
		}(w)
	}
	// Key changes.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 5; i++ {
			if _, err := f.b.RotateKeys(f.ctx, f.s); err != nil {
				t.Error(err)
			}
			if _, err := f.b.GenerateCA(f.ctx, f.s, "", false); err != nil {
				t.Error(err)
			}
		}
	}()

	scopes := []string{"repository:a:pull", "repository:b:pull", "repository:c:pull"}
	var tokens []string
	for i := 0; i < 300; i++ {
		tok, err := f.mint(TokenRequest{Username: "bob", Password: "pw", Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		if len(tok.Access) != 1 || tok.Access[0].Name == "c" {
			t.Fatalf("torn grant: %+v", tok.Access)
		}
		tokens = append(tokens, tok.JWT)
		// eve exists or not; when she gets a token it carries only her access.
		// While she does not exist her name is counted as unknown and may be
		// locked out, as a user would be.
		if tok, err := f.mint(TokenRequest{Username: "eve", Password: "pw", Scopes: scopes}); err == nil {
			if len(tok.Access) != 1 || tok.Access[0].Name != "c" {
				t.Fatalf("eve's grant: %+v", tok.Access)
			}
		} else if k := errKind(err); k != KindUnauthorized && k != KindLockedOut {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()

	ring, err := f.b.Keys(f.ctx, f.s)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		verifyToken(t, tok, ring.Bundle(), f.clock.Now())
	}
	for w := 0; w < writers; w++ {
		u, err := f.b.ReadUser(f.ctx, f.s, fmt.Sprintf("user%d", w))
		if err != nil || u == nil || u.Access != fmt.Sprintf("repository:w%d/v4:pull", w) {
			t.Fatalf("user%d lost a write: %+v %v", w, u, err)
		}
	}
}
