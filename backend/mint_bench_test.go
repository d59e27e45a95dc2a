package backend

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
)

func BenchmarkSign(b *testing.B) {
	for _, keyType := range []string{KeyTypeEC, KeyTypeRSA, KeyTypeEd25519} {
		b.Run(keyType, func(b *testing.B) {
			be, s, ctx := New(Options{}), &logical.InmemStorage{}, context.Background()
			cfg := DefaultConfig()
			cfg.KeyType = keyType
			if err := be.SaveConfig(ctx, s, cfg); err != nil {
				b.Fatal(err)
			}
			grants := []access.Grant{{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}}
			if _, err := be.sign(ctx, s, cfg, "registry", "alice", grants, 0); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := be.sign(ctx, s, cfg, "registry", "alice", grants, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMint_warm is the whole token request with a cached credential:
// scope parsing, one storage read, the cache check, the grant, the
// signature.
func BenchmarkMint_warm(b *testing.B) {
	for _, entries := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("entries=%d", entries), func(b *testing.B) {
			be, s, ctx := New(Options{}), &logical.InmemStorage{}, context.Background()
			cfg := DefaultConfig()
			cfg.BcryptCost = 4
			be.SaveConfig(ctx, s, cfg)
			parts := make([]string, entries)
			for i := range parts {
				parts[i] = fmt.Sprintf("repository:team%d/app-%d/*:pull,push", i, i)
			}
			pw, access := "pw", strings.Join(parts, ";")
			if _, err := be.WriteUser(ctx, s, "alice", UserUpdate{Password: &pw, Access: &access}); err != nil {
				b.Fatal(err)
			}
			req := TokenRequest{Service: "registry", Username: "alice", Password: pw,
				Scopes: []string{fmt.Sprintf("repository:team%d/app-%d/x:pull,push", entries-1, entries-1)}}
			if tok, err := be.Mint(ctx, s, req); err != nil || len(tok.Access) != 1 {
				b.Fatalf("%v %v", tok, err)
			}
			runs := be.BcryptRuns()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := be.Mint(ctx, s, req); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if be.BcryptRuns() != runs {
				b.Fatal("the warm path ran bcrypt")
			}
		})
	}
}
