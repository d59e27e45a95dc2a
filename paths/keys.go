package paths

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
)

func keyPaths(b *backend.Backend) []*framework.Path {
	h := &keyHandler{b: b}
	return []*framework.Path{
		{
			Pattern: "keys$",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: h.read, Summary: "List the signing keys: id, state, created, expires."},
			},
			HelpSynopsis:    keysHelpSynopsis,
			HelpDescription: keysHelpDescription,
		},
		{
			Pattern: "keys/rotate$",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: h.rotate, Summary: "Rotate the signing key now."},
			},
			HelpSynopsis:    rotateHelpSynopsis,
			HelpDescription: rotateHelpDescription,
		},
	}
}

type keyHandler struct{ b *backend.Backend }

func (h *keyHandler) read(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ring, err := h.b.Keys(ctx, req.Storage)
	if err != nil {
		return respond(err)
	}
	return keysResponse(ring), nil
}

func (h *keyHandler) rotate(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ring, err := h.b.RotateKeys(ctx, req.Storage)
	if err != nil {
		return respond(err)
	}
	return keysResponse(ring), nil
}

func keysResponse(ring *backend.KeyRing) *logical.Response {
	keys := make([]map[string]any, 0, len(ring.Keys()))
	for _, k := range ring.Keys() {
		expires := k.NotAfter
		if k.State == backend.StateRetired {
			expires = k.Retires
		}
		keys = append(keys, map[string]any{
			"id":        k.ID,
			"state":     k.State,
			"algorithm": k.Algorithm(),
			"created":   timestamp(k.Created),
			"expires":   timestamp(expires),
		})
	}
	return &logical.Response{Data: map[string]any{
		"keys":        keys,
		"current_key": ring.Current().ID,
	}}
}

const keysHelpSynopsis = "The signing keys and their states."

const keysHelpDescription = `
Each key is "next" (published, not yet signing), "current" (signs new tokens)
or "retired" (still published until the last token it signed has expired,
plus 60s of registry leeway; then gone). "expires" is a retired key's removal
time, else its certificate's end. Private keys are never returned.
`

const rotateHelpSynopsis = "Rotate the signing key: next becomes current, current is retired, a new next is made."

const rotateHelpDescription = `
Registries need no change: tokens carry the signing certificate (x5c), issued
by the trust anchor they already trust, and the jwks path published the new
key before it signed. Tokens signed by the retired key stay valid until they
expire. config rotation_period rotates automatically. When a CA is staged
(ca/generate stage=true), keys/rotate activates it instead. An imported trust
anchor signs tokens itself and cannot be rotated, except into a staged CA.
`
